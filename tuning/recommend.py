"""``recommend``: which update rule, routing, ``C`` and step to run, and why.

The pipeline (:func:`recommend`), for a config and a time budget ``T`` (virtual seconds,
the config's time unit):

1. **Pilot.** The constants ``L``, ``sigma^2``, ``M^2``, ``A`` and, for the bias term,
   ``zeta^2`` and the clients' gradient Gram matrices, from a short full-batch pilot on the
   config's data and model (:func:`raysync.objectives.estimate_constants`). With
   ``pool_bias`` (the default) or ``redraw_partition`` the Gram matrices and ``zeta^2`` are
   averaged over the config's draw of the data and each pilot seed's draw
   (:func:`raysync.objectives.pool_bias_over_draws`):
   fitted to one draw of a non-IID partition, the bias term lets the bound pick a mix
   ``r`` that leans on the clients whose gradients agree on that draw (on a Dirichlet 0.1
   cell of ``benchmarks/recommend.py`` such a weighted design scored 90.42 % on validation
   on the draw it was chosen on and 83.11 % on another; README, "Recommendation").
2. **Bound.** The bias-aware wall-clock bound of docs/theory.md section 6
   (:class:`raysync.objectives.BiasAwareBound`) is minimised over the SGD part of the
   design space (AsyncSGD; random routing ``p``, ``C`` and weight exponent ``beta``),
   every candidate at its own bound-optimal step (:func:`optimize_bias_aware`).
3. **Step, per arm.** Each warm-start arm (the analytical optimum, the unbiased
   wall-clock optimum (3b) of docs/theory.md section 4 (see :func:`_unbiased_optimum`)
   and every baseline: uniform ``C = n``, AsyncSGD, FedAsync, FedBuff) gets its own step
   from the grid
   ``lr_factors * lr``: the one with the best validation score averaged over
   ``pilot_seeds`` (>= 2) pilot seeds ``seed + 1, seed + 2, ...``, all distinct from the
   study's seed, each run for ``pilot_fraction * T``. One step for all arms, or a step
   chosen on a single seed, can put an arm at a step where it loses although it wins at
   its own (the speed-skew cell of ``benchmarks/recommend.py`` did exactly that). With
   ``redraw_partition``, a pilot seed also redraws the data (the training subsample, the
   partition over clients and the initial model: the workload built from the config with
   that seed), meant to make the choice hold for the kind of partition (e.g. Dirichlet
   0.5), not only for the one draw the config's seed gives; off (the default), every run
   shares the config's draw and the seeds vary the run's randomness only. On a
   pre-registered held-out test of ``benchmarks/recommend.py`` (12 cells, fresh seeds) the
   flag trailed the default by 0.65 +- 0.61 points and failed one cell, where its redrawn
   pilots chose steps of 0.3 (README, "Held-out test of ``--redraw-partition``").
4. **Study.** A short Optuna study (TPE) on the simulator over the whole design space
   (:class:`raysync.objectives.DesignSpace`: rule, ``lr``, ``C``, ``beta``, per-tier
   routing logits), measuring validation accuracy at ``T`` (or, with a target accuracy,
   the simulated time to reach it) on the study's seed. The (arm, step) pairs of step 3
   are its first trials (warm start, analytical optimum first). ``trials`` caps the
   study's trials, warm starts included.
5. **Choice.** Every design is scored by the mean of its score at ``T`` over the seeds
   it ran on (the pilot's seeds count when ``pilot_fraction == 1``, the default). While
   the leader ran on fewer seeds than the warm starts, it is rerun on the missing pilot
   seeds and the ranking redone, so a trial that was lucky on one seed cannot displace a
   design averaged over several. Then the **incumbent**, the bound's optimum (at its
   pilot step; if it is not searched or not feasible, the best warm start), is kept
   unless a challenger beats it by more than the runs' spread: when the leader is not the
   incumbent, the ``finalists`` leading designs and the incumbent are rerun on
   ``confirm_seeds`` fresh seeds (``seed + pilot_seeds + 1, ...``; they redraw the data
   with ``redraw_confirmation`` or ``redraw_partition``, see below), and a challenger
   qualifies when its paired mean gain over the incumbent **on the fresh seeds** exceeds
   ``overrule_margin`` (default 1) standard errors of those paired gains; 2.13 makes it a
   one-sided paired t test at the 5 % level on 5 fresh seeds (``t_{4, 0.95} = 2.132``).
   With a target, reaching it comes first: a challenger qualifies when it missed the
   target on fewer seeds (the first ones included) than the incumbent, or on no more and
   with a gain above the margin, and it never qualifies with more misses. Only the fresh seeds
   count for the gain: the finalists were picked as the best of dozens of designs on the
   first ``1 + pilot_seeds`` seeds, so their gains there are biased upwards (the winner's
   curse). The qualifier with the fewest misses, then the largest gain, is chosen, else
   the incumbent. A target that no design reached on every seed it ran on is an error
   before this check; when the fresh seeds show that no finalist reaches it every time,
   the choice stands and the table says on how many seeds it did. Three runs cannot
   resolve the differences that decide most cells: ``benchmarks/recommend.py`` measured
   single runs of two designs spread over 72-89 % on one cell (tiers 1:5:25, ``T = 5``,
   speed_skew) while their means differed by 0.2 points, and a choice made on three runs
   lost 5 points to AsyncSGD there (README, "Recommendation"). The choice is therefore not
   always the best mean validation score: a lead within the margin does not count. One SE
   admits a challenger with no real lead on 19 % of such checks (``P(t_4 > 1)``): the one
   cell ``recommend`` with ``redraw_confirmation`` lost by more than one SE of
   ``benchmarks/recommend.py`` was such a lead (1.1 SE; README, "Recommendation"), but a
   margin of 2.132 did worse on fresh seeds, where the leads it blocked were step
   corrections of the bound's design that generalised (README, "A stricter margin").
   ``rule_change_margin`` (default 2.132) sets the margin for a finalist whose update
   rule differs from the incumbent's alone: such a lead says the bound's bias-variance
   trade-off is wrong for this data, a claim one draw and five seeds rarely settle, while
   a step change only corrects the optimisation. With ``redraw_confirmation`` (the
   default, with ``rule_change_margin``, since their pre-registered held-out test) each
   fresh seed also redraws the data (as ``redraw_partition`` does for the pilot seeds), so
   a challenger must win across draws of the partition's kind, not on the one draw the
   choice was made on: on a Dirichlet 0.1 cell of ``benchmarks/recommend.py`` (tiers
   1:5:25, ``T = 60``) the unbiased (3b) design led the bound's choice on all five fresh
   seeds of the config's draw, on two seeds, and lost 12.9 and 3.5 points to it on other
   draws, where (3b)'s accuracy spans 76-90 %; on the config's own draw it stayed ahead
   (test accuracy over two further runs 87.95 against 86.61 and 89.87 against 89.11).
   Off, the confirmation judges on the config's own draw alone (new clients or a changing
   population are the reason to judge across draws). The steps stay chosen on the
   config's draw (redrawn pilots chose worse steps at short budgets).
6. **Result.** The chosen point, the config that runs it (the input config with
   ``concurrency``, ``[routing]`` and ``[algorithm]`` replaced) and a table: the bound's
   value and dominating term, simulated validation and test accuracy at ``T`` (means over
   the seeds each design ran on), throughput, staleness and time to target for the
   recommendation, the analytical optimum and each baseline.

**Energy** (docs/network.md; only with ``energy_budget`` or ``energy_weight``, which need
power figures in the config). The energy of a design is joules over the run, ``P T``, with
the theory's mean power ``P`` of :func:`raysync.objectives.energy.predict_energy` for the
design's config; where the theory has no closed form (AsyncSGD, i.e. return to sender,
with a server station) the simulated runs' measured power
(:func:`raysync.objectives.energy.measured_energy`, mean over the runs at ``T``) stands in.
Every step honours it:

* step 2 minimises ``B_T + W E`` subject to ``E <= E_max``
  (:func:`raysync.objectives.bias.optimize_bias_aware_with_energy`);
* step 4: with a budget, a design whose predicted energy exceeds it is an infeasible trial
  (``Trial.set_constraint("energy_J", E - E_max)``, the constraint TPE ranks below every
  feasible trial; Optuna 5 deprecates the sampler's ``constraints_func`` for it); a TPE
  proposal that is infeasible by the prediction is not simulated (it is told the worst
  score: accuracy 0, or ``2 T``); warm starts are simulated either way, for the table.
  With a weight ``W`` (bound units per joule), the score is penalised as the bound is:
  the energy term ``W E`` is the fraction ``W E / B*`` of ``B*``, the bias-aware bound at
  the analytical optimum, so the score is the measured error, ``1 - accuracy``, or the
  time to target, scaled by ``1 + W E / B*`` (the bound stands for the error, and, since
  ``B_T`` falls as ``1 / T``, a bound ``f`` times larger is ``f`` times the time to reach
  the same value);
* step 5 chooses only among designs within the budget (none: one-line ``ConfigError``),
  ranked by the penalised score;
* the table gives every arm's energy and whether it meets the budget.

Every simulator run is counted (``Recommendation.simulations``): step pilot, study trials
and the reruns of step 5. The constants pilot of step 1 is full-batch gradient descent,
not a simulator run, and is not counted. Test accuracy is only reported, never used to
choose anything.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raysync.config import SystemConfig, config_toml
from raysync.exceptions import ConfigError, RaySyncError
from raysync.objectives import (
    RULES,
    BiasAwareBound,
    BoundObjective,
    ConstantsEstimate,
    DesignPoint,
    DesignSpace,
    check_time_budget,
    estimate_constants,
    optimize_bias_aware,
    optimize_joint,
    pool_bias_over_draws,
)
from tuning.settings import (
    MAX_EVALS,
    MAX_SEEDS,
    MAX_TRIALS,
    check_at_most,
    check_int,
    check_simulated_budget,
    sampler_seed,
)

__all__ = [
    "ArmResult",
    "Recommendation",
    "RecommendSettings",
    "check_inputs",
    "checkpoint_dir_for",
    "checkpoint_note",
    "config_header",
    "config_text",
    "energy_lines",
    "format_table",
    "measure",
    "measurement_config",
    "predicted_energy",
    "recommend",
    "run_length_note",
    "written_config",
]

logger = logging.getLogger(__name__)

LogFn = Callable[[str], None]


@dataclass(frozen=True, kw_only=True)
class RecommendSettings:
    """How to recommend.

    Attributes:
        budget: Time budget ``T`` in the config's time unit (virtual seconds).
        target_accuracy: If set, minimise the simulated time to reach this validation
            accuracy (within ``T``) instead of maximising accuracy at ``T``.
        trials: Cap on the Optuna study's trials, warm starts included (``1..MAX_TRIALS``,
            100,000); warm starts beyond it are still scored from the step pilot.
        max_concurrency: Largest ``C``; default ``2 n``.
        rules: Update rules searched.
        bias_kind: ``"direct"`` (Gram matrices) or ``"cauchy-schwarz"`` (``zeta^2``).
        lr_factors: The step grid of the pilot, as multiples of the config's ``lr``.
        lr_range: Range of the step in the study; default the pilot grid's range widened
            by 3 each way.
        pilot_fraction: Length of the step pilot as a fraction of ``T``; at 1 (default)
            the pilot's runs also count towards the final choice.
        pilot_seeds: Seeds the step pilot averages over (``2..MAX_SEEDS``, 100).
        confirm_seeds: Fresh seeds the finalists and the bound's optimum are rerun on; a
            finalist overrules the optimum only by a paired gain on them above
            ``overrule_margin`` SEs (module docstring, step 5; 0 or ``2..MAX_SEEDS``; 0:
            the leader on ``1 + pilot_seeds`` seeds is chosen outright).
        overrule_margin: How many standard errors of the paired gains on the
            confirmation seeds a finalist's mean gain must exceed to overrule the bound's
            optimum (finite, ``>= 0``; 2.132 is a one-sided paired t test at 5 % on 5
            seeds).
        rule_change_margin: The same for a finalist whose update rule differs from the
            bound's optimum's (AsyncSGD against importance weights, say; finite, ``>= 0``;
            None: ``overrule_margin``). Default 2.132 (a one-sided paired t test at 5 % on
            5 seeds) with ``redraw_confirmation``, since both passed their pre-registered
            held-out test (``benchmarks/results/recommend_rule_change_preregistration.md``;
            README, "Held-out test of ``--rule-change-margin``"); module docstring, step
            5: a rule change bets that the bound's bias-variance trade-off is wrong for
            this data, a step change only corrects the optimisation.
        finalists: How many of the leading designs (``1..100``) are confirmed against the
            bound's optimum.
        redraw_partition: Each pilot seed also redraws the data (subsample, partition,
            initial model) instead of sharing the config's draw (module docstring, step 3);
            the confirmation seeds then redraw it too, and the bound's bias term averages
            the Gram matrices of the config's and the pilot seeds' draws (step 1).
        redraw_confirmation: Each confirmation seed redraws the data (module docstring,
            step 5), the pilot seeds keep the config's draw, so a finalist overrules the
            bound's optimum only by winning across draws. On (the default, with
            ``rule_change_margin``, since their held-out test); off judges on the
            config's own draw, as the benchmark's runs of record did.
        pool_bias: The bound's bias term averages the Gram matrices and ``zeta^2`` of the
            config's draw and each pilot seed's draw (module docstring, step 1), while
            every run (step pilot, study, confirmation) keeps the config's draw; implied
            by ``redraw_partition``. On (the default) since it passed both stages of its
            pre-registered held-out test
            (``benchmarks/results/recommend_pool_bias_preregistration.md``; README,
            "Held-out test of ``--pool-bias``"); off: the bias term of the config's draw
            alone, as in the benchmark's runs of record.
        num_evals: Evaluations per run (``1..MAX_EVALS``, 10,000; the time-to-target
            resolution is ``T / num_evals``).
        seed: Seed of the study's runs (the pilot uses ``seed + 1``) and of the sampler
            (``>= 0``; None: the config's; the sampler's folded modulo ``2**32``).
        pilot_steps: Gradient-descent steps of the constants pilot (``1..1,000,000``).
        energy_budget: Most joules the run may spend over ``T`` (``> 0``; None: no
            limit). Needs power figures in the config.
        energy_weight: Price of a joule in units of the bound (``>= 0``; 0: none): the
            bound stage minimises ``B_T + W E``, the study scales its score by
            ``1 + W E / B*`` (module docstring). Needs power figures in the config.
    """

    budget: float
    target_accuracy: float | None = None
    trials: int = 30
    max_concurrency: int | None = None
    rules: tuple[str, ...] = RULES
    bias_kind: str = "direct"
    lr_factors: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0)
    lr_range: tuple[float, float] | None = None
    pilot_fraction: float = 1.0
    pilot_seeds: int = 2
    confirm_seeds: int = 5
    finalists: int = 3
    overrule_margin: float = 1.0
    rule_change_margin: float | None = 2.132
    redraw_partition: bool = False
    redraw_confirmation: bool = True
    pool_bias: bool = True
    num_evals: int = 8
    seed: int | None = None
    pilot_steps: int = 50
    energy_budget: float | None = None
    energy_weight: float = 0.0

    def __post_init__(self) -> None:
        b = self.budget
        if isinstance(b, bool) or not isinstance(b, int | float) or not (
            math.isfinite(b) and b > 0
        ):
            raise ConfigError(f"--budget must be a number of seconds > 0, got {b!r}")
        t = self.target_accuracy
        if t is not None and not (isinstance(t, int | float) and 0 < t < 1):
            raise ConfigError(
                f"--target-accuracy must be an accuracy strictly between 0 and 1, got {t!r}"
            )
        check_int("--trials", self.trials, 1)
        check_at_most("--trials", self.trials, MAX_TRIALS, "a study's size")
        if not self.lr_factors or any(not (f > 0 and math.isfinite(f)) for f in self.lr_factors):
            raise ConfigError(f"lr_factors must be positive numbers, got {self.lr_factors!r}")
        if not 0 < self.pilot_fraction <= 1:
            raise ConfigError(f"pilot_fraction must be in (0, 1], got {self.pilot_fraction!r}")
        check_int("pilot_seeds", self.pilot_seeds, 2)
        check_at_most("pilot_seeds", self.pilot_seeds, MAX_SEEDS, "seeds per design")
        c = self.confirm_seeds
        # One fresh seed gives no spread to judge a lead against.
        if isinstance(c, bool) or not isinstance(c, int) or c < 0 or c == 1:
            raise ConfigError(f"--confirm-seeds must be 0 (no check) or an integer >= 2, got {c!r}")
        check_at_most("--confirm-seeds", c, MAX_SEEDS, "seeds per design")
        f = self.finalists
        check_int("finalists", f, 1)
        check_at_most("finalists", f, MAX_SEEDS, "designs confirmed")
        for flag, m in (("--overrule-margin", self.overrule_margin),
                        ("--rule-change-margin", self.rule_change_margin)):
            if m is None and flag == "--rule-change-margin":  # None: the overrule margin
                continue
            if isinstance(m, bool) or not isinstance(m, int | float) or not (
                math.isfinite(m) and m >= 0
            ):
                raise ConfigError(
                    f"{flag} must be a finite number of standard errors >= 0, got {m!r}"
                )
        for name in ("redraw_partition", "redraw_confirmation", "pool_bias"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name, high, why in (("num_evals", MAX_EVALS, "evaluations per run"),
                                ("pilot_steps", 1_000_000, "steps of the constants pilot")):
            check_int(name, getattr(self, name), 1)
            check_at_most(name, getattr(self, name), high, why)
        if self.seed is not None:
            check_int("seed", self.seed, 0)
        # The same rules and words as `raysync optimize`: 0 J admits no design, while a
        # weight of 0 is the default "no price".
        e = self.energy_budget
        if e is not None and (
            isinstance(e, bool) or not isinstance(e, int | float) or not (
                math.isfinite(e) and e > 0
            )
        ):
            raise ConfigError(
                f"--energy-budget must be a finite number of joules > 0, got {e!r}"
            )
        w = self.energy_weight
        if isinstance(w, bool) or not isinstance(w, int | float) or not (
            math.isfinite(w) and w >= 0
        ):
            raise ConfigError(f"--energy-weight must be a finite number >= 0, got {w!r}")

    @property
    def wants_energy(self) -> bool:
        """Whether an energy budget or price is set."""
        return self.energy_budget is not None or self.energy_weight > 0


@dataclass(frozen=True, kw_only=True)
class ArmResult:
    """One design point, predicted and simulated.

    Attributes:
        label: ``recommended``, ``analytical`` or a baseline name.
        point: The design point (with the step that ran).
        bound: The bias-aware bound at the point (None: FedAsync/FedBuff, not covered).
        dominant: The bound's dominating term (None when not covered).
        val_accuracy: Simulated validation accuracy at ``T`` (mean over ``seeds``).
        test_accuracy: Simulated test accuracy at ``T`` (mean; reported only).
        throughput: Simulated task completions per unit time (mean; FedBuff applies one
            update per ``buffer_size`` of them).
        staleness: Simulated mean relative delay in model versions (mean).
        time_to_target: Simulated time to reach the target validation accuracy, in the
            config's (virtual) seconds, mean over ``seeds`` (None: missed on some seed, or
            no target).
        reached: On how many of the ``seeds`` runs the target was reached (None: no
            target).
        trial: Optuna trial number that ran it (None if not run in the study).
        seeds: Seeds the simulated figures are means over (runs of length ``T``).
        bound_at_lr: The bound evaluated at the step that ran (``eta = lr``, usually far
            above the bound's admissible step): how the ranking changes with the step.
        dominant_at_lr: Its dominating term.
        energy: Joules over ``T`` (None: the config has no power figures): predicted,
            or simulated where the theory has no closed form (``energy_source``).
        energy_source: ``"predicted"`` or ``"simulated"`` (None without power figures).
        energy_simulated: Measured joules over ``T``, mean over ``seeds`` (None without
            power figures).
        meets_budget: Whether ``energy <= energy_budget`` (None without a budget).
    """

    label: str
    point: DesignPoint
    bound: float | None
    dominant: str | None
    val_accuracy: float
    test_accuracy: float
    throughput: float
    staleness: float
    time_to_target: float | None
    trial: int | None = None
    seeds: int = 1
    bound_at_lr: float | None = None
    dominant_at_lr: str | None = None
    energy: float | None = None
    energy_source: str | None = None
    energy_simulated: float | None = None
    meets_budget: bool | None = None
    reached: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe mapping."""
        out = dataclasses.asdict(self)
        out["point"] = self.point.to_dict()
        return out


@dataclass(frozen=True, kw_only=True)
class Recommendation:
    """The outcome of :func:`recommend`.

    Attributes:
        point: The recommended design point.
        config: The input config with ``concurrency``, ``[routing]``, ``[algorithm]``
            replaced by the recommendation.
        arms: Rows of the table: ``recommended``, ``analytical`` and every baseline.
        constants: The pilot's estimate.
        analytical: The bound's optimiser output (``BiasOptimum.to_dict()``).
        lr_choice: Step chosen per warm-start label, with the pilot's scores: per step
            (``"%.6g"`` keys) the mean over the pilot seeds (``pilot_scores``) and each
            seed's score in ``pilot_seeds`` order (``pilot_seed_scores``).
        trials: Trials the Optuna study ran (at most ``settings.trials``).
        simulations: Simulator runs spent in all: step pilot, study trials and reruns
            (runs shared by two arms counted once; the constants pilot is not a
            simulator run).
        objective: ``"accuracy"`` or ``"time-to-target"``.
        budget: ``T``.
        target_accuracy: The target (or None).
        history: One record per study trial.
        energy_budget: The energy budget in joules (None: none).
        energy_weight: The price of a joule in bound units (0: none).
        energy: The bound stage's energy choice
            (:class:`~raysync.objectives.bias.BiasEnergyChoice` as a mapping; None
            without an energy budget or price).
        has_power: Whether the config gives power figures (the table then shows energy).
        confirmation: The final check of step 5 (module docstring): the incumbent, the
            fresh seeds the check judged on (``seeds``) and the seeds the leader was
            picked on (``selection_seeds``), whether the fresh seeds trained on the
            config's draw of the data or their own (``data``: "shared" or "redrawn"),
            the incumbent's scores on the fresh seeds,
            per challenger its scores, its paired mean gain over the incumbent with its SE
            and whether it qualified, and the verdict (None when no check ran: the leader
            was the incumbent, or ``confirm_seeds == 0``).
    """

    point: DesignPoint
    config: SystemConfig
    arms: tuple[ArmResult, ...]
    constants: ConstantsEstimate
    analytical: dict[str, Any]
    lr_choice: dict[str, Any]
    trials: int
    simulations: int
    objective: str
    budget: float
    target_accuracy: float | None
    history: tuple[dict[str, Any], ...] = field(default=())
    energy_budget: float | None = None
    energy_weight: float = 0.0
    energy: dict[str, Any] | None = None
    has_power: bool = False
    confirmation: dict[str, Any] | None = None

    def arm(self, label: str) -> ArmResult:
        """The row with this label."""
        for row in self.arms:
            if row.label == label:
                return row
        raise KeyError(label)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe mapping (without the Gram matrices)."""
        consts = self.constants.to_dict()
        consts.pop("gram", None)
        return {
            "point": self.point.to_dict(),
            "arms": [a.to_dict() for a in self.arms],
            "constants": consts,
            "analytical": self.analytical,
            "lr_choice": self.lr_choice,
            "trials": self.trials,
            "simulations": self.simulations,
            "objective": self.objective,
            "budget": self.budget,
            "target_accuracy": self.target_accuracy,
            "history": list(self.history),
            "energy_budget": self.energy_budget,
            "energy_weight": self.energy_weight,
            "energy": self.energy,
            "confirmation": self.confirmation,
        }


# --------------------------------------------------------------------------- inputs
def check_inputs(config: SystemConfig, settings: RecommendSettings) -> None:
    """Reject a budget that allows no update on average, or more than the bound can hold.

    The largest update throughput of any design is ``sum_i mu_i`` (every client busy), or
    the server's update rate if lower, so ``T`` times it ``< 1`` means fewer than one
    expected update whatever is chosen; the
    bound's other budget rules (:func:`raysync.objectives.check_time_budget`) are checked
    here too, before the pilot run, and so is an energy budget or price on a config
    without power figures (every energy would be 0).

    Raises:
        ConfigError: The budget is too short, too long for the bound or for the simulator
            (AsyncSGD's ``T sum_i mu_i`` completions above its limit), an energy flag
            without power figures, or a target accuracy with the ``neg_loss`` metric.
    """
    if settings.wants_energy:
        from raysync.objectives.energy import power_figures

        if not power_figures(config).any:
            raise ConfigError(
                "--energy-budget/--energy-weight need power figures: set power = { busy = "
                "'20 W', idle = '2 W', transfer = '0.5 J' } on [[clients]] (and [server] power)"
            )
    if settings.target_accuracy is not None and config.model.resolved_metric == "neg_loss":
        # The metric is the loss negated (<= 0); a target in (0, 1) is never reached, which
        # only the last step after every simulation would find.
        raise ConfigError(
            f"--target-accuracy {settings.target_accuracy:g} cannot be reached: the config's "
            "model.metric is 'neg_loss' (the loss negated, never above 0); a target needs "
            "metric = 'accuracy' (or a metric of your own with values in (0, 1))"
        )
    from raysync.queueing.predict import station_parameters

    check_time_budget(
        settings.budget,
        config.service_rates,
        server_rate=station_parameters(config)[1],
        name="--budget",
    )
    # recommend always simulates AsyncSGD: refuse here what its first run would refuse.
    check_simulated_budget("--budget", settings.budget, config)


def _load_workload(config: SystemConfig, dataset: Any = None) -> Any:
    """The config's workload (on ``dataset`` when given); unloadable data is one line."""
    from raysync.workload import build_workload

    try:
        return build_workload(config, dataset=dataset)
    except RaySyncError:
        raise
    except (OSError, ValueError) as exc:
        raise ConfigError(f"the config's data (seed {config.seed}) cannot be loaded: {exc}") \
            from exc


# --------------------------------------------------------------------------- runs
def _above(value: float, threshold: float) -> bool:
    """``value > threshold`` where equal to rounding counts as not above."""
    return value > threshold and not math.isclose(value, threshold, rel_tol=1e-9,
                                                  abs_tol=1e-12)


def _learned(m: Mapping[str, Any]) -> bool:
    """Whether a :func:`measure` run ended above the initial model's validation score."""
    curve = m.get("val_curve") or []
    return "diverged" not in m and len(curve) > 1 and curve[-1] > curve[0]


def measurement_config(base: SystemConfig, point: DesignPoint, budget: float,
                       num_evals: int, seed: int) -> SystemConfig:
    """The config :func:`measure` runs, for another engine to run the same measurement.

    Returns ``base`` at ``point`` (its rule, ``C``, ``p`` and step) for ``budget`` virtual
    seconds (no update cap), evaluated every ``budget / num_evals`` seconds, with ``seed``
    (e.g. the benchmark's Ray cells run it on the Ray runtime).
    """
    run = dataclasses.replace(
        base.run, num_updates=None, time_budget=float(budget), eval_every_updates=None,
        eval_every_seconds=float(budget) / num_evals,
    )
    return point.to_config(base).replace(run=run, seed=seed)


def measure(
    base: SystemConfig, point: DesignPoint, *, budget: float, workload: Any, seed: int,
    num_evals: int = 8, target: float | None = None,
) -> dict[str, Any]:
    """Simulate one design point for ``budget`` and summarise it.

    Args:
        base: The config (fleet, data, model).
        point: The design point (with its step).
        budget: ``T``.
        workload: The prebuilt workload.
        seed: The run's seed.
        num_evals: Evaluations over the run.
        target: Target validation accuracy for the time to reach it.

    Returns:
        ``val_accuracy``, ``test_accuracy`` (at ``T``; NaN counts as 0), ``throughput``,
        ``staleness``, ``time_to_target`` (None if not reached), and the curves. A run
        that diverges (:class:`~raysync.exceptions.DivergenceError`, e.g. a grid step too
        large for the model) is a failed design, not an error: accuracies 0, no curves,
        throughput and staleness NaN (not measured), and ``diverged`` gives the reason.
    """
    from raysync.exceptions import DivergenceError
    from raysync.simulation import simulate

    config = measurement_config(base, point, budget, num_evals, seed)
    try:
        res = simulate(config, workload=workload)
    except DivergenceError as exc:
        return {"val_accuracy": 0.0, "test_accuracy": 0.0, "throughput": math.nan,
                "staleness": math.nan, "time_to_target": None, "times": [], "val_curve": [],
                "test_curve": [], "num_updates": 0, "energy_J": None, "diverged": str(exc)}
    energy = _measured_joules(config, res)
    val = [float(v) if math.isfinite(v) else 0.0 for v in res.val_accuracy]
    test = [float(v) if math.isfinite(v) else 0.0 for v in res.test_accuracy]
    times = [float(t) for t in res.times]
    hit = None
    if target is not None:
        hit = next((t for t, v in zip(times, val, strict=True) if v >= target), None)
    return {
        "val_accuracy": val[-1] if val else 0.0,
        "test_accuracy": test[-1] if test else 0.0,
        "throughput": float(res.throughput),
        "staleness": float(res.mean_staleness),
        "time_to_target": hit,
        "times": times,
        "val_curve": val,
        "test_curve": test,
        "num_updates": int(res.num_updates),
        "energy_J": energy,
    }


def _measured_joules(config: SystemConfig, res: Any) -> float | None:
    """Joules a run spent by its measured utilisations (None without power figures)."""
    from raysync.objectives.energy import measured_energy, power_at, power_figures

    figures = power_figures(config)
    if not figures.any:
        return None
    elapsed = float(res.elapsed)
    if res.throughput > 0:
        return measured_energy(config, res).energy_for_time(elapsed)
    # No update applied: every station idle (the energy per update is undefined, the
    # power is not).
    mu = np.asarray(config.service_rates, dtype=np.float64)
    return power_at(figures, mu=mu, p=np.full(mu.size, 1.0 / mu.size), throughput=0.0,
                    server_rate=None) * elapsed


def predicted_energy(config: SystemConfig, point: DesignPoint, budget: float) -> float | None:
    """Joules the design spends over ``budget`` seconds by the theory, ``P T``.

    Args:
        config: The config (fleet, stations, power figures).
        point: The design point.
        budget: ``T``.

    Returns:
        :func:`raysync.objectives.energy.predict_energy`'s mean power of the design's
        config times ``T``; None without power figures or where the theory has no closed
        form (return to sender with a server station).
    """
    from raysync.objectives.energy import power_figures, predict_energy
    from raysync.queueing.predict import station_parameters

    if not power_figures(config).any:
        return None
    if point.rule == "asyncsgd" and station_parameters(config)[1] is not None:
        return None
    return predict_energy(point.to_config(config)).energy_for_time(budget)


def _score(m: Mapping[str, Any], budget: float, target: float | None) -> float:
    """Study value: validation accuracy (maximised), or time to target (minimised).

    A run that misses the target scores ``T (2 - val / target)``: always above ``T``
    (worse than any hit) and lower the closer it came.
    """
    if target is None:
        return float(m["val_accuracy"])
    if m["time_to_target"] is not None:
        return float(m["time_to_target"])
    best = max(m["val_curve"]) if m["val_curve"] else 0.0
    return budget * (2.0 - min(best / target, 1.0))


def _better(a: float, b: float, target: float | None) -> bool:
    return a > b if target is None else a < b


MeasureFn = Callable[[DesignPoint, int, float], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class StepChoice:
    """A pilot's step choice (:func:`choose_lr`).

    Attributes:
        lr: The chosen step.
        scores: Mean pilot score per step (validation accuracy, or time to the target).
        seed_scores: Each pilot seed's score per step, in the pilot's seed order, so a rule
            that weighs the pilot's spread can be judged on a recorded run.
    """

    lr: float
    scores: dict[str, float]
    seed_scores: dict[str, list[float]]


def choose_lr(
    base: SystemConfig, point: DesignPoint, *, lrs: Sequence[float], budget: float,
    workload: Any, seeds: Sequence[int], num_evals: int, target: float | None,
    run: MeasureFn | None = None,
) -> StepChoice:
    """The step with the best pilot score (validation only), averaged over seeds.

    Args:
        base: The config (fleet, data, model).
        point: The design point (its ``lr`` is replaced by each grid step).
        lrs: The step grid.
        budget: Length of each pilot run.
        workload: The prebuilt workload.
        seeds: Pilot seeds; the score of a step is its mean over them (one seed can make
            a good step look bad, see the module docstring).
        num_evals: Evaluations per run.
        target: Target validation accuracy (time-to-target scores) or None (accuracy).
        run: ``run(point, seed, budget) -> measure(...)`` to use instead of
            :func:`measure` (e.g. to cache and count runs).

    Returns:
        The chosen step (ties go to the smaller step), the mean score per step and each
        seed's score per step (``seeds`` order); steps keyed as ``f"{lr:.6g}"``.

    Raises:
        ValueError: ``lrs`` or ``seeds`` is empty.
    """
    if not lrs or not seeds:
        raise ValueError(f"choose_lr needs steps and seeds, got lrs={lrs!r} seeds={seeds!r}")

    def default_run(pt: DesignPoint, seed: int, length: float) -> dict[str, Any]:
        return measure(base, pt, budget=length, workload=workload, seed=seed,
                       num_evals=num_evals, target=target)

    go = run or default_run
    scores: dict[str, float] = {}
    seed_scores: dict[str, list[float]] = {}
    best_lr, best = None, None
    for lr in sorted(lrs):
        pt = dataclasses.replace(point, lr=lr)
        per_seed = [float(_score(go(pt, sd, budget), budget, target)) for sd in seeds]
        s = float(np.mean(per_seed))
        scores[f"{lr:.6g}"], seed_scores[f"{lr:.6g}"] = s, per_seed
        if best is None or _better(s, best, target):
            best_lr, best = lr, s
    assert best_lr is not None
    return StepChoice(lr=float(best_lr), scores=scores, seed_scores=seed_scores)


# --------------------------------------------------------------------------- the study
def _suggest(trial: Any, space: DesignSpace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    rule = trial.suggest_categorical("rule", list(space.rules))
    params["rule"] = rule
    for par in space.active(rule):
        if par.name == "rule":
            continue
        if par.kind == "int":
            params[par.name] = trial.suggest_int(par.name, int(par.low), int(par.high))
        else:
            params[par.name] = trial.suggest_float(par.name, par.low, par.high, log=par.log)
    return params


#: Label of the warm start at the unbiased wall-clock optimum (3b).
UNBIASED_LABEL = "unbiased_3b"


def _unbiased_optimum(
    config: SystemConfig,
    constants: Any,
    mu: np.ndarray,
    budget: float,
    max_concurrency: int,
    latency: Any,
    server_rate: float | None,
) -> DesignPoint | None:
    """The minimiser of the unbiased wall-clock bound (3b) (docs/theory.md section 4).

    Generalized AsyncSGD (importance weights, ``beta = 1``) at the ``p`` and ``C`` of
    :func:`~raysync.objectives.optimize_joint`; the step is chosen later, as every warm
    start's. Why it is a warm start: at long budgets on skewed data the unweighted rule
    stalls at the biased optimum while the weighted one keeps improving, and the
    bias-aware bound, whose variance and staleness terms use constants measured at the
    initial model, can rank it below AsyncSGD although it measures better (Dirichlet 0.5,
    tiers 1:10:100, T = 60 in ``benchmarks/recommend.py``: +0.9 points over AsyncSGD on
    both seeds, and TPE did not reach it in 30 trials). None when it cannot be computed
    (one client, or the optimiser fails on the fleet).
    """
    if config.num_clients < 2:
        return None
    try:
        objective = BoundObjective(
            mu=mu, constants=constants, criterion="wall-clock", time_budget=budget,
            client_latency=latency, server_rate=server_rate,
        )
        result = optimize_joint(objective, max_concurrency=max_concurrency)
    except (ValueError, ArithmeticError) as exc:
        logger.info("no unbiased (3b) warm start: %s", exc)
        return None
    p = np.asarray(result.p, dtype=np.float64)
    if p.size != config.num_clients or not np.isfinite(p).all() or (p <= 0).any():
        return None
    return DesignPoint(rule="weighted", concurrency=int(result.concurrency),
                       p=tuple(float(v) for v in p / p.sum()), beta=1.0)


def recommend(
    config: SystemConfig,
    settings: RecommendSettings,
    *,
    workload: Any = None,
    estimate: ConstantsEstimate | None = None,
    log: LogFn | None = None,
    workload_for_seed: Callable[[int], Any] | None = None,
) -> Recommendation:
    """Run the whole pipeline (see the module docstring).

    Args:
        config: The input config.
        settings: Budget, target, trials and the pipeline's knobs.
        workload: A prebuilt workload (default: built from the config).
        workload_for_seed: The workload of a seed that redraws the data (a pilot seed
            with ``settings.redraw_partition``, a confirmation seed with either redraw
            setting; default: built from the config with that seed, on ``workload``'s
            dataset); called once per such seed. The study's seed keeps ``workload``.
        estimate: Pilot constants to reuse (default: estimated here).
        log: Progress lines (default: the module logger).

    Returns:
        The recommendation.

    Raises:
        ConfigError: The budget is too short for one update, the data cannot be loaded,
            no trial reaches the target accuracy within the budget, an energy flag comes
            without power figures, or no design meets the energy budget.
    """
    import optuna

    from raysync.objectives.energy import power_figures

    say = log or logger.info
    check_inputs(config, settings)
    if workload is None:
        workload = _load_workload(config)
    seed = config.seed if settings.seed is None else settings.seed
    budget = float(settings.budget)
    target = settings.target_accuracy
    n = config.num_clients
    mu = np.asarray(config.service_rates, dtype=np.float64)
    cmax = settings.max_concurrency or max(2 * n, config.concurrency)

    pilot_seeds = [seed + k for k in range(1, settings.pilot_seeds + 1)]
    confirm = [seed + settings.pilot_seeds + k for k in range(1, settings.confirm_seeds + 1)]
    # The seeds that train on their own draw of the data (built once, on first use); every
    # other run trains on the config's draw.
    redraw_confirm = settings.redraw_partition or settings.redraw_confirmation
    redrawn = set(pilot_seeds if settings.redraw_partition else ()) | set(
        confirm if redraw_confirm else ())
    workloads: dict[int, Any] = {int(seed): workload}

    def draw_of(run_seed: int) -> Any:
        if run_seed not in workloads:
            workloads[run_seed] = (
                workload_for_seed(run_seed) if workload_for_seed is not None
                else _load_workload(config.replace(seed=run_seed), workload.dataset)
            )
        return workloads[run_seed]

    def data_of(run_seed: int) -> Any:
        return draw_of(run_seed) if run_seed in redrawn else workload

    def pilot(data: Any, run_seed: int, like: ConstantsEstimate | None) -> ConstantsEstimate:
        clients = [data.client_data(i) for i in range(data.num_clients)]
        shape: dict[str, Any] = (
            {"batch_size": config.algorithm.batch_size, "fstar_steps": settings.pilot_steps}
            if like is None else
            {"batch_size": like.batch_size, "fstar_steps": like.pilot_steps,
             "num_points": like.num_points}
        )
        return estimate_constants(data.make_computer(), clients, data.initial_params,
                                  seed=run_seed, **shape)

    if estimate is None:
        say("pilot: estimating L, sigma^2, M^2, A, zeta^2 and the gradient Gram matrices")
        estimate = pilot(workload, seed, None)
    if (settings.redraw_partition or settings.pool_bias) and estimate.bias_draws == 1:
        # The Gram matrices of one draw let the bound fit r to that draw (module docstring,
        # step 1). With pool_bias alone the pilot seeds' draws serve only this average: the
        # runs keep the config's draw.
        say(f"pilot: the bias term's Gram matrices and zeta^2 on "
            f"{_counted(len(pilot_seeds), 'more draw')} of the data")
        estimate = pool_bias_over_draws(
            [estimate, *(pilot(draw_of(sd), sd, estimate) for sd in pilot_seeds)])
    c = estimate.constants
    say(f"constants: L={c.L:.4g} sigma2={c.sigma2:.4g} M2={c.M2:.4g} A={c.A:.4g} "
        f"zeta2={estimate.zeta2:.4g}")

    from raysync.queueing.predict import station_parameters

    latency, server_rate = station_parameters(config)  # links and server (docs/network.md)
    bound = BiasAwareBound.from_estimate(mu, estimate, time_budget=budget,
                                         bias_kind=settings.bias_kind,
                                         client_latency=latency, server_rate=server_rate)
    figures = power_figures(config)
    energy_budget = settings.energy_budget
    energy_weight = float(settings.energy_weight)
    energy_choice = None
    if settings.wants_energy:
        from raysync.objectives.bias import optimize_bias_aware_with_energy

        energy_choice = optimize_bias_aware_with_energy(
            bound, figures, max_concurrency=cmax, energy_budget=energy_budget,
            energy_weight=energy_weight,
        )
        optimum = energy_choice.optimum
        say(f"energy: the bound's optimum spends {energy_choice.energy:.4g} J over T "
            f"({energy_choice.power:.4g} W); without the energy term "
            f"{energy_choice.unconstrained.point.describe()}")
    else:
        optimum = optimize_bias_aware(bound, max_concurrency=cmax)
    # 12 significant digits: 0.1 x 0.1 is 0.010000000000000002, which REC.toml then showed.
    lrs = [float(f"{config.algorithm.lr * f:.12g}") for f in settings.lr_factors]
    lr_range = settings.lr_range or (min(lrs) / 3.0, max(lrs) * 3.0)
    space = DesignSpace.from_config(config, max_concurrency=cmax, lr_range=lr_range,
                                    rules=settings.rules)
    # The optimum itself, not its projection on the space: per-tier logits cannot express a
    # routing that splits a tier (the speed-skew optimum sends 76 % to 2 of the 6 fast
    # clients; the projection sent nothing to the fast tier and doubled the bound). Its
    # study trial is enqueued as the projection but measures this exact point.
    analytical = (
        dataclasses.replace(optimum.point, lr=float(np.clip(optimum.point.lr, *lr_range)))
        if optimum.point.rule in space.rules else None
    )
    say(f"bound optimum: {optimum.point.describe()} (bound {optimum.terms.value:.4g}, "
        f"dominated by {optimum.terms.dominant})")

    warm: dict[str, DesignPoint] = {}
    if analytical is not None:
        warm["analytical"] = analytical
    unbiased = _unbiased_optimum(config, c, mu, budget, cmax, latency, server_rate)
    # The same design as the analytical optimum (its step aside) would only repeat it.
    repeats = (unbiased is not None and analytical is not None
               and dataclasses.replace(unbiased, lr=analytical.lr) == analytical)
    if unbiased is not None and unbiased.rule in space.rules and not repeats:
        warm[UNBIASED_LABEL] = dataclasses.replace(
            unbiased, lr=float(np.clip(config.algorithm.lr, *lr_range))
        )
        say(f"unbiased (3b) optimum: {warm[UNBIASED_LABEL].describe()}")
    warm.update(space.baselines(config.algorithm.lr))

    # Every simulator run goes through here: cached on (point, seed, length) so a design
    # shared by two arms (e.g. the analytical optimum is AsyncSGD) runs once, and counted.
    runs: dict[tuple[DesignPoint, int, float], dict[str, Any]] = {}


    def run(point: DesignPoint, run_seed: int, length: float) -> dict[str, Any]:
        key = (point, int(run_seed), float(length))
        if key not in runs:
            runs[key] = measure(config, point, budget=length, workload=data_of(int(run_seed)),
                                seed=run_seed, num_evals=settings.num_evals, target=target)
        return runs[key]

    def projected_run(point: DesignPoint, run_seed: int, length: float) -> dict[str, Any]:
        return run(space.project(point), run_seed, length)

    # Energy of a design over T: the theory's where it has a closed form, else the mean of
    # its measured runs at T (AsyncSGD with a server station; module docstring).
    predicted: dict[DesignPoint, float | None] = {}

    def energy_of(point: DesignPoint) -> tuple[float | None, str | None]:
        if not figures.any:
            return None, None
        if point not in predicted:
            predicted[point] = predicted_energy(config, point, budget)
        if predicted[point] is not None:
            return predicted[point], "predicted"
        measured = [m.get("energy_J") for (q, _, length), m in runs.items()
                    if q == point and length == budget]
        values = [float(v) for v in measured if v is not None]
        return (float(np.mean(values)), "simulated") if values else (None, None)

    def feasible(point: DesignPoint) -> bool:
        if energy_budget is None:
            return True
        energy, _ = energy_of(point)
        return energy is not None and energy <= energy_budget

    reference = float(optimum.terms.value)  # B*: the energy price's unit (docstring)

    def penalised(point: DesignPoint, score: float) -> float:
        if energy_weight == 0:
            return score
        energy, _ = energy_of(point)
        factor = 1.0 + energy_weight * float(energy or 0.0) / reference
        return 1.0 - (1.0 - score) * factor if target is None else score * factor

    pilot_budget = budget * settings.pilot_fraction
    # The run count is known before the first run: a long budget says so up front (one
    # run of T = 1e5 s can take an hour), not after silence.
    steps_runs = len(warm) * len(lrs) * len(pilot_seeds)
    confirm_runs = ((1 + settings.finalists) * (1 + len(pilot_seeds) + len(confirm))
                    if settings.confirm_seeds > 0 else len(pilot_seeds))
    # Warm starts beyond the --trials cap still run once on the study's seed (for the
    # table), outside the study: counted apart, so the trials said are the trials run.
    beyond = max(0, len(warm) - settings.trials)
    planned = steps_runs + settings.trials + beyond + confirm_runs
    also = (f" and up to {_counted(beyond, 'warm start')} beyond --trials, run outside "
            "the study" if beyond else "")
    say(f"plan: at most {planned} simulated runs ({steps_runs} choosing steps: {len(warm)} "
        f"designs x {len(lrs)} steps x {len(pilot_seeds)} seeds of {pilot_budget:g} s; "
        f"{_counted(settings.trials, 'study trial')} (warm starts first){also}; "
        f"{confirm_runs} confirming, of {budget:g} s), each at "
        f"most {budget * float(np.sum(mu)):,.0f} updates (T sum_i mu_i)")
    lr_choice: dict[str, Any] = {}
    at_edge: dict[float, list[str]] = {}
    for label, point in list(warm.items()):
        exact = label in ("analytical", UNBIASED_LABEL)
        pilot_run = run if exact else projected_run
        step = choose_lr(config, point, lrs=lrs, budget=pilot_budget, workload=workload,
                         seeds=pilot_seeds, num_evals=settings.num_evals, target=target,
                         run=pilot_run)
        lr = step.lr
        chosen = dataclasses.replace(point, lr=lr)
        warm[label] = chosen if exact else space.project(chosen)
        lr_choice[label] = {"lr": warm[label].lr, "pilot_scores": step.scores,
                            "pilot_seed_scores": step.seed_scores,
                            "pilot_seeds": list(pilot_seeds), "pilot_budget": pilot_budget,
                            "pilot_data": "redrawn" if settings.redraw_partition else "shared"}
        say(f"step for {label}: lr={lr:.3g} (validation, mean over {len(pilot_seeds)} pilot "
            f"seeds of {pilot_budget:g} s)")
        if len(lrs) > 1 and lr in (min(lrs), max(lrs)):
            at_edge.setdefault(lr, []).append(label)
    for lr, labels in at_edge.items():
        # The grid is algorithm.lr x lr_factors: the best step may lie beyond its edge.
        side, fix = ("largest", "raise") if lr == max(lrs) else ("smallest", "lower")
        say(f"warning: the step of {', '.join(labels)} is the {side} one tried (lr={lr:.3g}, "
            f"{lr / config.algorithm.lr:g} x algorithm.lr); a step beyond it may score "
            f"better: {fix} algorithm.lr and run recommend again")
    if not any(m["num_updates"] > 0 or "diverged" in m for m in runs.values()):
        # Every design would be scored at the untrained model, a tie: refused, not chosen
        # among. The rate check above passes on mean rates; a fixed (or trace) service
        # time longer than the budget still completes nothing.
        raise ConfigError(
            f"--budget {budget:g} s: no design completed a task in any of the {len(runs)} "
            f"pilot runs of {pilot_budget:g} s (the clients' service times are longer); "
            "raise --budget"
        )
    if not any(_learned(m) for m in runs.values()):
        # No design at no step beat the initial model: a recommendation would be an
        # arbitrary pick among runs that diverged or stood still, and so would its config.
        diverged = sum("diverged" in m for m in runs.values())
        fix = ("lower algorithm.lr" if diverged else
               "raise algorithm.lr or --budget")
        raise ConfigError(
            f"algorithm.lr = {config.algorithm.lr:g}: no design beat the initial model's "
            f"validation {config.model.metric_label} in any of the {len(runs)} pilot runs of "
            f"{pilot_budget:g} s ({diverged} diverged), at every step tried "
            f"({min(lrs):.3g} to {max(lrs):.3g}, algorithm.lr x "
            f"{min(settings.lr_factors):g}..{max(settings.lr_factors):g}); {fix}"
        )

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    direction = (
        optuna.study.StudyDirection.MAXIMIZE if target is None
        else optuna.study.StudyDirection.MINIMIZE
    )
    sampler = optuna.samplers.TPESampler(
        seed=sampler_seed(seed), n_startup_trials=min(10, settings.trials)
    )
    worst = 0.0 if target is None else 2.0 * budget  # below/above every measured score
    study = optuna.create_study(direction=direction, sampler=sampler)
    unique: list[DesignPoint] = []
    for point in warm.values():
        if point not in unique:
            unique.append(point)
    for point in unique[:settings.trials]:
        study.enqueue_trial(space.encode(point))
    trial_of: dict[DesignPoint, int] = {}
    history: list[dict[str, Any]] = []
    for k in range(settings.trials):
        trial = study.ask()
        params = _suggest(trial, space)
        # Enqueued trials run first, in order; the warm point itself is measured (not its
        # logit round trip) so its study run joins its pilot runs.
        point = unique[k] if k < len(unique) else space.decode(params)
        energy, _ = energy_of(point)
        if (energy_budget is not None and energy is not None and energy > energy_budget
                and k >= len(unique)):
            # Infeasible by the theory: the constraint, not the value, ranks it for TPE.
            trial.set_constraint("energy_J", energy - energy_budget)
            study.tell(trial, worst)
            history.append({"trial": trial.number, "point": point.to_dict(), "value": None,
                            "val_accuracy": None, "energy_J": energy, "feasible": False})
            say(f"trial {k + 1}/{settings.trials}: {point.describe()}: predicted "
                f"{energy:.4g} J > --energy-budget {energy_budget:g} J, not simulated")
            continue
        m = run(point, seed, budget)
        value = penalised(point, _score(m, budget, target))
        record: dict[str, Any] = {"trial": trial.number, "point": point.to_dict(),
                                  "value": value, "val_accuracy": m["val_accuracy"]}
        if figures.any:
            energy, _ = energy_of(point)
            record["energy_J"] = energy
            if energy_budget is not None:
                over = math.inf if energy is None else energy - energy_budget
                trial.set_constraint("energy_J", over)
                record["feasible"] = over <= 0
        study.tell(trial, value)
        trial_of.setdefault(point, trial.number)
        history.append(record)
        say(f"trial {k + 1}/{settings.trials}: {point.describe()}: val {m['val_accuracy']:.4f}"
            + ("" if target is None else ", time to target " + (
                "not reached" if m["time_to_target"] is None else f"{m['time_to_target']:g} s"))
            + ("" if record.get("energy_J") is None else f", {record['energy_J']:.4g} J"))
    for point in unique[settings.trials:]:  # beyond the cap: scored without a study trial
        run(point, seed, budget)

    def seeds_at_budget(point: DesignPoint) -> list[int]:
        return [sd for (q, sd, length) in runs if q == point and length == budget]

    def summary(point: DesignPoint) -> dict[str, Any]:
        ms = [runs[(point, sd, budget)] for sd in seeds_at_budget(point)]
        hits = [m["time_to_target"] for m in ms]
        return {
            "score": penalised(point, float(np.mean([_score(m, budget, target) for m in ms]))),
            "val_accuracy": float(np.mean([m["val_accuracy"] for m in ms])),
            "test_accuracy": float(np.mean([m["test_accuracy"] for m in ms])),
            "throughput": float(np.nanmean([m["throughput"] for m in ms]))
            if any(math.isfinite(m["throughput"]) for m in ms) else math.nan,
            "staleness": float(np.nanmean([m["staleness"] for m in ms]))
            if any(math.isfinite(m["staleness"]) for m in ms) else math.nan,
            "time_to_target": None if any(h is None for h in hits) else float(np.mean(hits)),
            "reached": None if target is None else sum(h is not None for h in hits),
            "seeds": len(ms),
            "energy_J": None if any(m.get("energy_J") is None for m in ms)
            else float(np.mean([m["energy_J"] for m in ms])),
        }

    def rank(point: DesignPoint) -> tuple[bool, float]:
        s = summary(point)
        # With a target, designs that reached it on every seed they ran on come first.
        missed = target is not None and s["time_to_target"] is None
        return missed, (-s["score"] if target is None else s["score"])

    # Candidates in the order first run (warm starts' pilot runs first: they win ties).
    candidates = list(dict.fromkeys(q for (q, _, length) in runs if length == budget))
    all_seeds = [seed, *pilot_seeds]
    while True:
        allowed = [q for q in candidates if feasible(q)]
        if not allowed:
            tried = [(e, q) for q in candidates if (e := energy_of(q)[0]) is not None]
            least = ""
            if tried:
                joules, cheapest = min(tried, key=lambda item: item[0])
                least = (f"; the least energy over T = {budget:g} s was {joules:.6g} J "
                         f"({cheapest.describe()})")
            raise ConfigError(
                f"--energy-budget {energy_budget:g} J is met by none of the "
                f"{len(candidates)} designs tried{least}"
            )
        leader = min(allowed, key=rank)
        missing = [sd for sd in all_seeds if (leader, sd, budget) not in runs]
        if not missing:
            break
        say(f"rerunning the leader {leader.describe()} on seeds {missing} before choosing")
        for sd in missing:
            run(leader, sd, budget)
    # The leader ranks every design that missed the target on some seed last, so if it
    # missed, no design reached the target on every seed it ran on.
    if target is not None and summary(leader)["time_to_target"] is None:
        best_val = max(max(m["val_curve"]) if m["val_curve"] else 0.0 for m in runs.values())
        metric = config.model.metric_label
        raise ConfigError(
            f"--target-accuracy {target:g}: none of the {_counted(len(candidates), 'design')} "
            f"tried reached validation {metric} {target:g} within --budget {budget:g} s on "
            f"all its seeds (best validation {metric} reached by any run: {best_val:.4f}); "
            "lower --target-accuracy or raise --budget"
        )
    best_point, confirmation = leader, None
    incumbent = _incumbent(warm, feasible, rank)
    if settings.confirm_seeds > 0 and incumbent is not None and leader != incumbent[1]:
        challengers = sorted((q for q in allowed if q != incumbent[1]),
                             key=rank)[:settings.finalists]
        say(f"confirming: {len(challengers)} leading design(s) against the {incumbent[0]} "
            f"design {incumbent[1].describe()} on {len(confirm)} fresh seeds"
            + (" (each with its own draw of the data)" if redraw_confirm else ""))
        every_seed = [*all_seeds, *confirm]
        for point in (incumbent[1], *challengers):
            for sd in every_seed:
                run(point, sd, budget)

        def fresh_scores(point: DesignPoint) -> list[float]:
            return [penalised(point, _score(runs[(point, sd, budget)], budget, target))
                    for sd in confirm]

        best_point, confirmation = _confirm(
            incumbent, challengers, fresh_scores, target=target,
            margin=settings.overrule_margin, rule_change_margin=settings.rule_change_margin,
            misses=lambda q: 0 if target is None else sum(
                runs[(q, sd, budget)]["time_to_target"] is None for sd in every_seed),
        )
        confirmation.update(seeds=confirm, selection_seeds=all_seeds,
                            data="redrawn" if redraw_confirm else "shared")
        say(confirmation["verdict"])
        outcome = summary(best_point)
        if target is not None and outcome["time_to_target"] is None:
            # The leader reached the target on every selection seed; more seeds showed that
            # no finalist always does. The most reliable one is still the answer: the
            # table's t->target column says how often it reached the target.
            say(f"warning: the recommendation reached --target-accuracy {target:g} on "
                f"{outcome['reached']} of {outcome['seeds']} seeds; no design rerun on the "
                f"fresh seeds reached it on all of them")
    elif incumbent is not None and leader == incumbent[1]:
        say(f"the leader is the {incumbent[0]} design: nothing to confirm")

    def row(label: str, pt: DesignPoint) -> ArmResult:
        s = summary(pt)
        energy, source = energy_of(pt)
        terms = bound.evaluate(pt) if bound.covers(pt) else None
        at_lr = None
        if terms is not None:
            at_lr = dataclasses.replace(bound, eta=pt.lr).evaluate(pt)
        return ArmResult(
            label=label, point=pt,
            bound=None if terms is None else terms.value,
            dominant=None if terms is None else terms.dominant,
            val_accuracy=s["val_accuracy"], test_accuracy=s["test_accuracy"],
            throughput=s["throughput"], staleness=s["staleness"],
            time_to_target=s["time_to_target"], trial=trial_of.get(pt), seeds=s["seeds"],
            bound_at_lr=None if at_lr is None else at_lr.value,
            dominant_at_lr=None if at_lr is None else at_lr.dominant,
            energy=energy, energy_source=source, energy_simulated=s["energy_J"],
            meets_budget=None if energy_budget is None else feasible(pt),
            reached=s["reached"],
        )

    arms = [row("recommended", best_point)]
    arms += [row(label, point) for label, point in warm.items()]
    say(f"simulations spent: {len(runs)} ({_counted(len(history), 'study trial')})")
    return Recommendation(
        point=best_point, config=best_point.to_config(config), arms=tuple(arms),
        constants=estimate, analytical=optimum.to_dict(), lr_choice=lr_choice,
        trials=len(history), simulations=len(runs),
        objective="accuracy" if target is None else "time-to-target",
        budget=budget, target_accuracy=target, history=tuple(history),
        energy_budget=energy_budget, energy_weight=energy_weight,
        energy=None if energy_choice is None else energy_choice.to_dict(),
        has_power=figures.any, confirmation=confirmation,
    )


def _incumbent(
    warm: Mapping[str, DesignPoint],
    feasible: Callable[[DesignPoint], bool],
    rank: Callable[[DesignPoint], Any],
) -> tuple[str, DesignPoint] | None:
    """The design kept unless beaten by more than the runs' spread (module docstring, step 5).

    The bound's optimum when it is searched and feasible, else the best-ranked feasible warm
    start (None: no warm start is feasible).
    """
    if "analytical" in warm and feasible(warm["analytical"]):
        return "analytical", warm["analytical"]
    allowed = [(label, q) for label, q in warm.items() if feasible(q)]
    return min(allowed, key=lambda item: rank(item[1])) if allowed else None


def _confirm(
    incumbent: tuple[str, DesignPoint],
    challengers: Sequence[DesignPoint],
    scores: Callable[[DesignPoint], list[float]],
    *,
    target: float | None,
    misses: Callable[[DesignPoint], int],
    margin: float = 1.0,
    rule_change_margin: float | None = None,
) -> tuple[DesignPoint, dict[str, Any]]:
    """Keep the incumbent unless a challenger beats it by more than ``margin`` paired SEs.

    Args:
        incumbent: ``(label, point)`` of the design kept by default.
        challengers: The leading designs (leader first), run on the same seeds as the
            incumbent.
        scores: A design's scores (validation accuracy, or time to target) on the fresh
            seeds, in the same seed order for every design.
        target: The target accuracy (None: scores are maximised, else minimised).
        misses: On how many seeds (all of them, not only the fresh ones) a design missed
            the target (0 without a target).
        margin: Standard errors the paired mean gain must exceed (``>= 0``).
        rule_change_margin: The same for a challenger whose update rule differs from the
            incumbent's (``>= 0``; None: ``margin``).

    Returns:
        The chosen point and a JSON-safe record: the incumbent's scores and misses; per
        challenger its scores, misses, the paired mean gain over the incumbent (positive:
        better), its standard error ``sd(gain, ddof=1) / sqrt(seeds)`` (``inf`` on one
        seed) and whether it qualified: it missed the target on fewer seeds than the
        incumbent, or on no more and its gain is above ``margin`` SEs by more than float
        rounding (a gain equal to it in exact arithmetic does not qualify: e.g. at margin 1
        a challenger that differs from the incumbent on one seed only, whose mean gain is
        exactly its SE). The qualifier with the fewest misses, then the largest gain, is
        chosen. And a one-line verdict.
    """
    label, base = incumbent
    sign = 1.0 if target is None else -1.0
    base_scores = np.asarray(scores(base), dtype=np.float64)
    base_misses = misses(base)

    def missed_note(row: Mapping[str, Any]) -> str:
        if row["misses"] == base_misses == 0:
            return ""
        return (f"; it missed the target on {row['misses']} seed(s), the {label} design on "
                f"{base_misses}")

    rows: list[dict[str, Any]] = []
    for point in challengers:
        own = np.asarray(scores(point), dtype=np.float64)
        gain = sign * (own - base_scores)
        mean = float(np.mean(gain))
        se = float(np.std(gain, ddof=1) / math.sqrt(gain.size)) if gain.size > 1 else math.inf
        missed = misses(point)
        need = (margin if rule_change_margin is None or point.rule == base.rule
                else rule_change_margin)
        ok = missed < base_misses or (missed == base_misses and _above(mean, need * se))
        rows.append({"point": point.to_dict(), "design": point.describe(),
                     "scores": own.tolist(), "misses": missed, "gain": mean, "se": se,
                     "margin": need, "qualifies": bool(ok)})
    qualified = [k for k, row in enumerate(rows) if row["qualifies"]]
    lead = rows[0]
    if not qualified:
        chosen = base
        verdict = (f"kept the {label} design {base.describe()}: the leader "
                   f"{lead['design']} was ahead by {lead['gain']:+.4g} +- {lead['se']:.2g} "
                   f"(paired SE on the fresh seeds)"
                   + (f", not more than {lead['margin']:g} SE" if lead["misses"] <= base_misses
                      else missed_note(lead)))
    else:
        best = min(qualified, key=lambda k: (rows[k]["misses"], -rows[k]["gain"]))
        chosen = challengers[best]
        verdict = (f"overruled the {label} design {base.describe()}: {chosen.describe()} "
                   f"ahead by {rows[best]['gain']:+.4g} +- {rows[best]['se']:.2g} "
                   f"(paired SE on the fresh seeds){missed_note(rows[best])}")
    return chosen, {"incumbent": label, "incumbent_point": base.to_dict(),
                    "incumbent_scores": base_scores.tolist(), "incumbent_misses": base_misses,
                    "challengers": rows, "margin": margin,
                    **({} if rule_change_margin is None
                       else {"rule_change_margin": rule_change_margin}),
                    "kept_incumbent": chosen is base, "verdict": verdict}


# --------------------------------------------------------------------------- output
def config_text(config: SystemConfig, *, header: Sequence[str] = ()) -> str:
    """``config`` as TOML with ``header`` as comment lines above it (each ``# ``-prefixed).

    What ``raysync recommend --out`` writes: the recommended config that ``simulate`` and
    ``run`` accept unchanged.
    """
    return "".join(f"# {line}\n" for line in header) + config_toml(config)


def _counted(count: int, noun: str) -> str:
    """``count`` and ``noun``, plural unless one ("1 study trial", "4 study trials")."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def _to_target(arm: ArmResult) -> str:
    if arm.time_to_target is None and arm.reached:
        return f"{arm.reached}/{arm.seeds} hit"
    return _fmt(arm.time_to_target, ".3g")


def format_table(rec: Recommendation) -> str:
    """The recommendation table as aligned text (one row per arm).

    ``bound`` / ``dominant``: the bias-aware bound at the bound's own optimal step (the
    ranking the analytical optimum used); ``bound@lr`` / ``dominant@lr``: the same bound at
    the step that actually ran. Simulated figures are means over ``seeds`` runs of length
    ``T``: ``upd/s`` in task completions per second of the config's clock (FedBuff applies
    one update per ``buffer_size`` of them), ``stale`` in model versions (the staleness a
    strategy sees, as ``raysync run`` and ``simulate`` count it), ``t->target`` the mean
    time to the target in the config's seconds, or ``k/n hit`` when only ``k`` of the ``n``
    runs reached it. The last line counts every simulator run the recommendation spent.
    """
    lines = [
        f"{'arm':<12} {'design':<46} {'bound':>9} {'dominant':>12} {'bound@lr':>9} "
        f"{'dominant@lr':>12} {'val acc':>8} {'test acc':>8} {'seeds':>5} {'upd/s':>8} "
        f"{'stale':>7} {'t->target':>9}",
    ]
    for a in rec.arms:
        lines.append(
            f"{a.label:<12} {a.point.describe()[:46]:<46} {_fmt(a.bound, '.3g'):>9} "
            f"{a.dominant or '-':>12} {_fmt(a.bound_at_lr, '.3g'):>9} "
            f"{a.dominant_at_lr or '-':>12} {a.val_accuracy:>8.4f} {a.test_accuracy:>8.4f} "
            f"{a.seeds:>5d} {a.throughput:>8.4g} {_fmt(a.staleness, '.3g'):>7} "
            f"{_to_target(a):>9}"
        )
    lines += [
        "columns: bound, dominant: the bias-aware bound (lower is better) and its largest "
        "term at the bound's own step; @lr: the same at the step that ran;",
        "  val acc, test acc, upd/s (task completions per config s), stale (mean staleness, "
        "model versions): simulated, means over 'seeds' runs of T; t->target: mean time to "
        "the target in config s, 'k/n hit' when k of n runs reached it",
    ]
    lines.append(
        f"simulations spent: {rec.simulations} simulator runs "
        f"({_counted(rec.trials, 'Optuna trial')}, "
        f"the rest the per-arm step pilot and reruns of the leader and finalists)"
    )
    if rec.confirmation is not None:
        seeds = len(rec.confirmation["seeds"])
        redrawn = " (redrawn data)" if rec.confirmation.get("data") == "redrawn" else ""
        lines.append(f"choice on {seeds} fresh seeds{redrawn}: {rec.confirmation['verdict']}")
    if rec.has_power:
        lines += energy_lines(rec)
    return "\n".join(lines)


def config_header(rec: Recommendation, config: SystemConfig, *, path: str) -> list[str]:
    """REC.toml's header: the design, what it was chosen for, and how to reproduce the table.

    The written config (:func:`written_config`) keeps ``config``'s ``[run]`` (only the
    design is replaced) but its checkpoint directory, which the header then names; when
    the run length is not ``T`` the header says so and gives the ``simulate`` override
    (on ``path``, where REC.toml is written) that measures what the table reports. Energy
    lines follow with power figures.
    """
    arm = rec.arm("recommended")
    goal = (f"the best validation {config.model.metric_label} at T = {rec.budget:g} s"
            if rec.target_accuracy is None else
            f"the shortest time to validation {config.model.metric_label} "
            f"{rec.target_accuracy:g} within T = {rec.budget:g} s")
    lines = [
        f"raysync recommend: {rec.point.describe()}",
        f"chosen for {goal} (--budget); simulated: validation {arm.val_accuracy:.4f}, "
        f"test {arm.test_accuracy:.4f} (means over {arm.seeds} seeds)",
    ]
    note = run_length_note(rec, config, path)
    moved = checkpoint_note(config, path)
    return [*lines, *([] if moved is None else [moved]), *([] if note is None else [note]),
            *energy_lines(rec)]


def checkpoint_dir_for(checkpoint_dir: str, path: str) -> str:
    """REC.toml's ``run.checkpoint_dir``: a sibling of the input's named after REC.toml.

    ``"ck"`` and ``rec.toml`` give ``"ck-rec"``, ``"runs/ck"`` gives ``"runs/ck-rec"``: as
    relative (or absolute) as the input's, so both resolve against the same folder. A
    directory without a name of its own (``"."``, ``".."``, ``"/"``) gets a subdirectory
    ``checkpoint-rec`` instead.
    """
    where, stem = Path(checkpoint_dir), Path(path).stem
    if where.name in ("", ".", ".."):
        return str(where / f"checkpoint-{stem}")
    return str(where.with_name(f"{where.name}-{stem}"))


def written_config(rec: Recommendation, *, path: str) -> SystemConfig:
    """The config ``recommend --out path`` writes: ``rec.config``, checkpointing apart.

    The input's ``run.checkpoint_dir`` holds the input design's checkpoints, which
    ``raysync run`` refuses to overwrite with another design's run: REC.toml as written
    would not run. Its checkpoints go to :func:`checkpoint_dir_for` instead.
    """
    config = rec.config
    if config.run.checkpoint_dir is None:
        return config
    return config.replace(run=dataclasses.replace(
        config.run, checkpoint_dir=checkpoint_dir_for(config.run.checkpoint_dir, path)))


def checkpoint_note(config: SystemConfig, path: str) -> str | None:
    """The line saying where REC.toml checkpoints, and why not where the input did.

    None when ``config`` (the input) sets no ``run.checkpoint_dir``.
    """
    own = config.run.checkpoint_dir
    if own is None:
        return None
    return (f"run.checkpoint_dir: the input's {own!r} holds the input design's checkpoints, "
            f"so this design checkpoints to {checkpoint_dir_for(own, path)!r}")


def run_length_note(rec: Recommendation, config: SystemConfig, path: str) -> str | None:
    """How to measure the table's numbers when ``config``'s run length is not ``T``.

    Returns:
        One line naming the config's ``[run]`` length and the ``simulate`` command for a
        run of ``T`` (``path``: the written config), or None when the run already is one.
    """
    run = config.run
    if run.num_updates is None and run.time_budget == rec.budget:
        return None
    own = " and ".join(
        ([f"num_updates = {run.num_updates}"] if run.num_updates is not None else [])
        + ([f"time_budget = {run.time_budget:g} s"] if run.time_budget is not None else []))
    return (f"[run] is the input config's ({own}), not T: for the table's numbers run "
            f"'raysync simulate {path} --time-budget {rec.budget:g}'")


def energy_lines(rec: Recommendation) -> list[str]:
    """Every arm's energy over ``T`` and whether it meets the budget (also REC.toml's header).

    Returns:
        One line per arm, then the budget and price; empty without power figures.
    """
    if not rec.has_power:
        return []
    lines = [
        f"energy over T = {rec.budget:g} s (J; predicted by the theory from the config's "
        f"power figures, '(sim)' measured where it has no closed form; 'sim J' = measured "
        f"mean over the arm's runs)"
    ]
    for a in rec.arms:
        tag = " (sim)" if a.energy_source == "simulated" else ""
        verdict = ""
        if a.meets_budget is not None:
            verdict = "  meets the budget" if a.meets_budget else "  OVER the budget"
        lines.append(
            f"  {a.label:<12} {_fmt(a.energy, '.5g'):>10} J{tag}  sim J "
            f"{_fmt(a.energy_simulated, '.5g'):>10}{verdict}"
        )
    limits = []
    if rec.energy_budget is not None:
        limits.append(f"--energy-budget {rec.energy_budget:g} J")
    if rec.energy_weight > 0:
        limits.append(f"--energy-weight {rec.energy_weight:g} per J")
    lines.append("energy limits: " + (", ".join(limits) if limits else "none given"))
    return lines
