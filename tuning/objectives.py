"""What a tuning trial measures: the bound, simulated accuracy, or live accuracy.

Three objectives (``raysync tune --objective``):

* ``bound`` (:class:`BoundTrialObjective`): the analytical wall-clock bound (3b)
  ``J_T(p, C) = B_{Lambda(p, C) T}(p, C)`` of :mod:`raysync.objectives`, minimised. Costs
  about a millisecond per trial, so thousands of trials are cheap; evaluated inline by the
  driver.
* ``simulated`` (:func:`run_simulated_trial`): the validation accuracy reached within a
  fixed *virtual* time budget by the discrete-event simulator, maximised.
* ``live`` (:func:`run_live_trial`): the validation accuracy reached within a fixed
  *wall-clock* budget by the Ray runtime (:func:`raysync.run`), maximised.

Accuracy is always measured on the validation split (selection on test accuracy would
leak); the test accuracy is stored next to it in the trial's user attributes.

Multi-objective variants (``--multi-objective``): ``staleness`` adds the mean relative
delay of the average client, ``Dbar = (1/n) sum_i E[D_i]`` (docs/theory.md section 5; the
update-weighted mean ``sum_i p_i E[D_i]`` is always ``C - 1`` and says nothing about ``p``),
minimised; ``budget`` makes the time budget ``T`` a tuned parameter and adds it as a
second objective, minimised, so the Pareto front shows the best ``(C, p)`` at every budget;
``energy`` adds the joules spent over the budget (docs/network.md: the theory's mean power
times ``T`` for the bound, the measured utilisations' power times the run's duration for
simulated and live trials), minimised, so the Pareto front trades accuracy against energy.

A simulated or live trial is described by a picklable :class:`TrialSpec` and returns a
:class:`TrialOutcome`, so it runs the same in the driver process or in a Ray task.
Intermediate validation accuracies are sent, at every evaluation point after time 0, to a
:class:`Reporter` (``report(step, value) -> prune?``); a ``True`` answer stops the run at
once and the trial ends as pruned. Every trial writes one TensorBoard run directory
(scalars during the run, ``add_hparams`` once at the end).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from raysync.config import SystemConfig
from raysync.exceptions import ConfigError
from tuning.search_space import Candidate

if TYPE_CHECKING:
    from raysync.objectives import BoundTerms, ProblemConstants
    from raysync.workload import Workload

__all__ = [
    "MULTI_OBJECTIVES",
    "OBJECTIVES",
    "BoundTrialObjective",
    "Reporter",
    "TrialOutcome",
    "TrialSpec",
    "directions_for",
    "metric_names_for",
    "run_live_trial",
    "run_simulated_trial",
    "run_trial",
    "trial_config",
    "trial_hparams",
]

logger = logging.getLogger(__name__)

#: Objective names (``raysync tune --objective``).
OBJECTIVES: tuple[str, ...] = ("bound", "simulated", "live")
#: Second objectives of multi-objective studies (``--multi-objective``).
MULTI_OBJECTIVES: tuple[str, ...] = ("staleness", "budget", "energy")

_VAL_TAG = "val/accuracy"
_TEST_TAG = "test/accuracy"


def directions_for(objective: str, multi: str | None) -> list[str]:
    """Optuna study directions of an objective (and optional second objective).

    Args:
        objective: ``bound``, ``simulated`` or ``live``.
        multi: None, ``staleness``, ``budget`` or ``energy``.

    Returns:
        One direction per value: the bound is minimised, accuracy maximised; staleness,
        budget and energy are minimised.
    """
    _check_objective(objective, multi)
    first = "minimize" if objective == "bound" else "maximize"
    return [first] if multi is None else [first, "minimize"]


def metric_names_for(objective: str, multi: str | None) -> list[str]:
    """Names of the study's values (``study.set_metric_names``)."""
    _check_objective(objective, multi)
    first = "bound" if objective == "bound" else "val_accuracy"
    if multi is None:
        return [first]
    second = {"staleness": "mean_client_staleness", "budget": "budget", "energy": "energy_J"}
    return [first, second[multi]]


def _check_objective(objective: str, multi: str | None) -> None:
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if multi is not None and multi not in MULTI_OBJECTIVES:
        raise ConfigError(
            f"multi_objective must be one of {', '.join(MULTI_OBJECTIVES)}, got {multi!r}"
        )


# --------------------------------------------------------------------------- configs
def trial_config(
    base: SystemConfig, candidate: Candidate, *, budget: float, num_evals: int
) -> SystemConfig:
    """The config one trial runs: the base fleet with the candidate's ``(p, C)``.

    Routing becomes ``fixed`` with the candidate's ``p``; ``concurrency`` its ``C``; the
    run stops at the time budget (``run.num_updates`` dropped) and evaluates
    ``num_evals`` times, evenly spaced. Plain ``asyncsgd`` (return to sender, no random
    routing) becomes ``generalized_asyncsgd``, the rule the bound is proven for.

    Args:
        base: The fleet and everything else (algorithm, data, model, seed).
        candidate: ``(p, C)``.
        budget: Time budget in the config's time unit (virtual seconds in the simulator;
            ``budget * run.time_scale`` wall seconds in the runtime).
        num_evals: Evaluations within the budget (``>= 1``).

    Returns:
        The validated config.
    """
    if not (math.isfinite(budget) and budget > 0):
        raise ConfigError(f"budget must be > 0, got {budget!r}")
    if num_evals < 1:
        raise ConfigError(f"num_evals must be >= 1, got {num_evals!r}")
    run = dataclasses.replace(
        base.run,
        num_updates=None,
        time_budget=float(budget),
        eval_every_updates=None,
        eval_every_seconds=float(budget) / num_evals,
    )
    return base.with_random_routing(candidate.p, candidate.concurrency, run=run)


def _entropy_ratio(p: np.ndarray) -> float:
    n = p.size
    if n < 2:
        return 1.0
    return float(-(p * np.log(p)).sum() / math.log(n))


def trial_hparams(
    number: int, candidate: Candidate, params: Mapping[str, Any], *, objective: str
) -> dict[str, Any]:
    """Flat hyper-parameters of a trial for TensorBoard's ``add_hparams``.

    ``trial``, ``objective``, ``concurrency``, a summary of ``p`` (``p_min``, ``p_max``,
    ``p_entropy_ratio``), every ``p_<i>`` when ``n <= 32``, and the raw search-space
    parameters prefixed ``param/``.
    """
    p = np.asarray(candidate.p)
    out: dict[str, Any] = {
        "trial": int(number),
        "objective": objective,
        "concurrency": int(candidate.concurrency),
        "p_min": float(p.min()),
        "p_max": float(p.max()),
        "p_entropy_ratio": _entropy_ratio(p),
    }
    if p.size <= 32:
        out.update({f"p_{i}": float(v) for i, v in enumerate(p)})
    for key, value in params.items():
        if key != "concurrency":
            out[f"param/{key}"] = value
    return out


# --------------------------------------------------------------------------- bound
class BoundTrialObjective:
    """The analytical bound (3b) as a trial objective (evaluated inline, milliseconds).

    Args:
        mu: Service rates of the fleet (config time unit).
        constants: ``L``, ``sigma^2``, ``M^2``, ``A`` (estimated from a pilot run or given).
        eta: ``"optimal"`` (closed-form best step per ``(p, C)``) or a fixed step.
        config: The fleet's config: its delays and server update time become the bound's
            latency and server stations and its power figures give the ``energy``
            objective (docs/network.md). None: neither.
    """

    def __init__(
        self, mu: Sequence[float] | np.ndarray, constants: ProblemConstants,
        *, eta: float | str = "optimal", config: SystemConfig | None = None,
    ) -> None:
        self.mu = np.asarray(mu, dtype=np.float64)
        self.constants = constants
        self.eta = eta
        self._cache: dict[float, Any] = {}
        self._stations: dict[str, Any] = {}
        self._figures: Any = None
        if config is not None:
            from raysync.objectives.energy import power_figures
            from raysync.queueing.predict import station_parameters

            latency, rate = station_parameters(config)
            self._stations = {"client_latency": latency, "server_rate": rate}
            self._figures = power_figures(config)

    def objective(self, budget: float) -> Any:
        """The :class:`~raysync.objectives.BoundObjective` for a time budget ``T``."""
        from raysync.objectives import BoundObjective

        key = float(budget)
        if key not in self._cache:
            self._cache[key] = BoundObjective(
                mu=self.mu, constants=self.constants, criterion="wall-clock",
                eta=self.eta, time_budget=key, **self._stations,
            )
        return self._cache[key]

    def terms(self, candidate: Candidate, budget: float) -> BoundTerms:
        """The bound's terms at a candidate and budget."""
        terms: BoundTerms = self.objective(budget).evaluate(candidate.p, candidate.concurrency)
        return terms

    def energy(self, candidate: Candidate, budget: float, throughput: float) -> float:
        """Joules over the budget: the theory's mean power at ``(p, C)`` times ``T``."""
        from raysync.objectives.energy import power_at

        if self._figures is None:
            raise ConfigError(
                "multi_objective 'energy' needs the fleet's config (power figures) in the "
                "bound objective"
            )
        watts = power_at(
            self._figures, mu=self.mu, p=np.asarray(candidate.p, dtype=np.float64),
            throughput=throughput, server_rate=self._stations.get("server_rate"),
        )  # fmt: skip
        return watts * float(budget)

    def evaluate(
        self, candidate: Candidate, *, budget: float, multi: str | None = None
    ) -> TrialOutcome:
        """Evaluate the bound; returns the trial's values and the terms as attributes."""
        start = time.perf_counter()
        terms = self.terms(candidate, budget)
        attrs: dict[str, Any] = {
            "bound": {k: v for k, v in terms.to_dict().items() if k != "criterion"},
            "mean_client_staleness": terms.mean_delay,
            "throughput": terms.throughput,
        }
        values: tuple[float, ...] = (terms.value,)
        if multi == "staleness":
            values = (terms.value, terms.mean_delay)
        elif multi == "budget":
            values = (terms.value, float(budget))
        elif multi == "energy":
            energy = self.energy(candidate, budget, terms.throughput)
            attrs["energy_J"] = energy
            values = (terms.value, energy)
        attrs["bound"]["seconds"] = time.perf_counter() - start
        return TrialOutcome(values=values, state="complete", attrs=attrs)


# --------------------------------------------------------------------------- measured
class Reporter(Protocol):
    """Receives a trial's intermediate values; answers whether to prune it."""

    def report(self, step: int, value: float) -> bool:
        """Record ``value`` at ``step`` (1, 2, ...); return True to stop the trial."""


class _NeverPrune:
    def report(self, step: int, value: float) -> bool:
        return False


@dataclass(frozen=True, kw_only=True)
class TrialSpec:
    """Everything a worker needs to run one measured trial (picklable).

    Attributes:
        number: Optuna trial number.
        kind: ``simulated`` or ``live``.
        config: The trial's config (see :func:`trial_config`).
        candidate: Its ``(p, C)``.
        budget: Time budget in config time units.
        multi: Second objective or None.
        logdir: Parent directory of the TensorBoard run directories (None: no logging).
        run_name: The trial's run directory name.
        hparams: Hyper-parameters logged with ``add_hparams``.
        torch_threads: Torch intra-op threads of the simulator's training.
    """

    number: int
    kind: str
    config: SystemConfig
    candidate: Candidate
    budget: float
    multi: str | None = None
    logdir: str | None = None
    run_name: str = "trial"
    hparams: Mapping[str, Any] = field(default_factory=dict)
    torch_threads: int = 1


@dataclass(frozen=True, kw_only=True)
class TrialOutcome:
    """What one trial produced.

    Attributes:
        values: The objective values (empty unless ``state == "complete"``).
        state: ``complete``, ``pruned`` or ``fail``.
        intermediate: ``(step, value)`` pairs reported during the run.
        attrs: JSON-safe measurements stored as the trial's user attributes.
        message: Why the trial failed (first line) or was pruned.
    """

    values: tuple[float, ...] = ()
    state: str = "complete"
    intermediate: tuple[tuple[int, float], ...] = ()
    attrs: Mapping[str, Any] = field(default_factory=dict)
    message: str = ""


class _Pruned(Exception):
    """Raised inside a run's sink to stop it when the reporter says prune."""

    def __init__(self, step: int) -> None:
        super().__init__(f"pruned at step {step}")
        self.step = step


class _ReportingSink:
    """A metrics sink that forwards the validation accuracy to a :class:`Reporter`."""

    def __init__(self, reporter: Reporter, *, last_step: int | None = None) -> None:
        self.reporter = reporter
        # A pruning decision at the last evaluation saves nothing: the trial has run its
        # whole budget, so it completes (its value is known) whatever the pruner says.
        self.last_step = last_step
        self.history: list[tuple[int, float]] = []
        self._metric: str | None = None

    def log_scalars(self, step: int, scalars: Mapping[str, float], *, time: float) -> None:
        if time <= 0:
            return  # the initial model: identical for every trial
        if self._metric is None:
            val = scalars.get(_VAL_TAG)
            if val is not None and math.isfinite(float(val)):
                self._metric = _VAL_TAG
            elif _TEST_TAG in scalars:
                self._metric = _TEST_TAG
            else:
                return
        value = scalars.get(self._metric)
        if value is None or not math.isfinite(float(value)):
            return
        index = len(self.history) + 1
        self.history.append((index, float(value)))
        prune = self.reporter.report(index, float(value))
        if prune and (self.last_step is None or index < self.last_step):
            raise _Pruned(index)

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        return None

    def close(self) -> None:
        return None


class _HParamsSink:
    """Wraps a TensorBoard sink so the run's hyper-parameters are written exactly once.

    The runtime calls ``log_hparams`` itself at the end of a run; the wrapper keeps its
    metrics instead of writing them, and :meth:`finish` writes the run's and the trial's
    hyper-parameters together with all metrics.
    """

    def __init__(self, inner: Any, hparams: Mapping[str, Any]) -> None:
        self.inner = inner
        self.hparams = dict(hparams)
        self.runtime_metrics: dict[str, float] = {}

    def log_scalars(self, step: int, scalars: Mapping[str, float], *, time: float) -> None:
        self.inner.log_scalars(step, scalars, time=time)

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        self.runtime_metrics.update({k: float(v) for k, v in metrics.items()})

    def finish(
        self, config: SystemConfig, extra: Mapping[str, Any], metrics: Mapping[str, float]
    ) -> None:
        """Write ``add_hparams`` once (run + trial hyper-parameters) and close."""
        from raysync.monitoring.tensorboard import run_hparams

        try:
            self.inner.log_hparams(
                {**run_hparams(config), **self.hparams, **extra},
                {**self.runtime_metrics, **metrics},
            )
        finally:
            self.inner.close()

    def close(self) -> None:
        self.inner.close()


def _nanmean(values: np.ndarray) -> float:
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    return float(finite.mean()) if finite.size else math.nan


def _result_attrs(result: Any) -> dict[str, Any]:
    """JSON-safe measurements of a RunResult for the trial's user attributes."""

    def clean(v: float) -> float | None:
        return float(v) if math.isfinite(float(v)) else None

    return {
        "val_accuracy": clean(result.final_val_accuracy),
        "test_accuracy": clean(result.final_test_accuracy),
        "test_loss": clean(result.final_test_loss),
        "num_updates": int(result.num_updates),
        "throughput": clean(result.throughput),
        "mean_staleness": clean(result.mean_staleness),
        "mean_client_staleness": clean(_nanmean(result.mean_relative_delay)),
        "elapsed": clean(result.elapsed),
        "wall_time": clean(result.wall_time),
    }


def _accuracy(result: Any) -> tuple[float, str]:
    val = float(result.final_val_accuracy)
    if math.isfinite(val):
        return val, "val"
    return float(result.final_test_accuracy), "test"


def _values(spec: TrialSpec, result: Any) -> tuple[float, ...]:
    acc, _ = _accuracy(result)
    if spec.multi == "staleness":
        return (acc, _nanmean(result.mean_relative_delay))
    if spec.multi == "budget":
        return (acc, float(spec.budget))
    if spec.multi == "energy":
        from raysync.objectives.energy import measured_energy

        return (acc, measured_energy(spec.config, result).power * float(result.elapsed))
    return (acc,)


def _run_measured(
    spec: TrialSpec, runner: Any, reporter: Reporter | None, workload: Workload | None
) -> TrialOutcome:
    """Shared body of the simulated and live trials."""
    from raysync.monitoring.tensorboard import TensorBoardSink

    reporter = reporter if reporter is not None else _NeverPrune()
    run = spec.config.run
    last_step = None
    if run.time_budget is not None and run.eval_every_seconds:
        last_step = int(math.floor(run.time_budget / run.eval_every_seconds + 1e-9))
    reporting = _ReportingSink(reporter, last_step=last_step)
    tb: _HParamsSink | None = None
    if spec.logdir is not None:
        Path(spec.logdir).mkdir(parents=True, exist_ok=True)
        tb = _HParamsSink(TensorBoardSink(spec.logdir, run_name=spec.run_name), spec.hparams)
    sinks: list[Any] = [s for s in (tb, reporting) if s is not None]
    start = time.perf_counter()
    try:
        result = runner(spec.config, sinks, workload)
    except _Pruned as exc:
        last = reporting.history[-1][1] if reporting.history else math.nan
        if tb is not None:
            tb.finish(spec.config, {"state": "pruned"}, {"tune/val_accuracy": last})
        return TrialOutcome(
            state="pruned",
            intermediate=tuple(reporting.history),
            attrs={"pruned_at_step": exc.step, "wall_time": time.perf_counter() - start},
            message=str(exc),
        )
    except Exception as exc:  # noqa: BLE001 - a failed trial must not kill the study
        logger.warning("trial %d failed: %s", spec.number, exc)
        if tb is not None:
            tb.finish(spec.config, {"state": "fail"}, {})
        return TrialOutcome(
            state="fail",
            intermediate=tuple(reporting.history),
            attrs={"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()},
            message=f"{type(exc).__name__}: {exc}".splitlines()[0],
        )
    values = _values(spec, result)
    attrs = _result_attrs(result)
    _, split = _accuracy(result)
    attrs["accuracy_split"] = split
    if tb is not None:
        metrics = {
            "tune/value": float(values[0]),
            "tune/val_accuracy": float(result.final_val_accuracy),
            "tune/test_accuracy": float(result.final_test_accuracy),
            "tune/throughput": float(result.throughput),
            "tune/mean_client_staleness": float(_nanmean(result.mean_relative_delay)),
        }
        tb.finish(spec.config, {"state": "complete"}, metrics)
    return TrialOutcome(
        values=values, state="complete", intermediate=tuple(reporting.history), attrs=attrs
    )


def _simulate(config: SystemConfig, sinks: list[Any], workload: Workload | None) -> Any:
    from raysync.simulation import simulate

    return simulate(config, sinks=sinks, workload=workload)


def _live(config: SystemConfig, sinks: list[Any], workload: Workload | None) -> Any:
    import raysync

    return raysync.run(config, sinks=sinks, workload=workload)


def run_simulated_trial(
    spec: TrialSpec, reporter: Reporter | None = None, workload: Workload | None = None
) -> TrialOutcome:
    """Run one trial on the simulator (virtual time budget ``spec.budget``).

    Args:
        spec: The trial.
        reporter: Receives the validation accuracy at each evaluation; may prune.
        workload: Prebuilt data and model (built from the config when None).

    Returns:
        The outcome; exceptions become ``state="fail"`` outcomes.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, spec.torch_threads))
    try:
        return _run_measured(spec, _simulate, reporter, workload)
    finally:
        torch.set_num_threads(previous)


def run_live_trial(
    spec: TrialSpec, reporter: Reporter | None = None, workload: Workload | None = None
) -> TrialOutcome:
    """Run one trial on the Ray runtime (wall budget ``spec.budget * run.time_scale``).

    Joins the initialised Ray session (or starts a local one). Pruning stops the run at
    the next evaluation; its actors are killed by :func:`raysync.run`'s cleanup.

    Args:
        spec: The trial.
        reporter: Receives the validation accuracy at each evaluation; may prune.
        workload: Prebuilt data and model.

    Returns:
        The outcome; exceptions become ``state="fail"`` outcomes.
    """
    return _run_measured(spec, _live, reporter, workload)


def run_trial(
    spec: TrialSpec, reporter: Reporter | None = None, workload: Workload | None = None
) -> TrialOutcome:
    """Dispatch to :func:`run_simulated_trial` or :func:`run_live_trial` by ``spec.kind``."""
    if spec.kind == "simulated":
        return run_simulated_trial(spec, reporter, workload)
    if spec.kind == "live":
        return run_live_trial(spec, reporter, workload)
    raise ConfigError(f"trial kind must be 'simulated' or 'live', got {spec.kind!r}")
