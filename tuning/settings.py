"""How to tune: :class:`TuneSettings`, built from ``raysync tune`` arguments in one place.

:func:`settings_from_args` is the only code that maps the tune command's flags to settings.

Every field is checked when the settings are built, so a bad flag is refused in one line
(``ConfigError``, exit code 2 in the CLI) before any storage is opened.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raysync._validation import check_int as _check_int
from raysync.exceptions import ConfigError
from tuning.objectives import directions_for
from tuning.search_space import FAMILIES, PARAMETERIZATIONS

if TYPE_CHECKING:
    from raysync.config import SystemConfig
    from raysync.objectives import ProblemConstants

__all__ = [
    "MAX_EVALS",
    "MAX_SEEDS",
    "MAX_TRIALS",
    "PRUNERS",
    "TuneSettings",
    "check_at_most",
    "check_int",
    "check_simulated_budget",
    "sampler_seed",
    "settings_from_args",
    "with_overrides",
]

#: Most trials a study (``tune``, ``recommend``, ``demo``) may be asked for: TPE's cost per
#: trial grows with the study, so a larger number would run for days, not finish.
MAX_TRIALS = 100_000
#: Most evaluations of one run (each is a pass over the validation and test sets).
MAX_EVALS = 10_000
#: Most seeds a recommend pilot or confirmation reruns each design on.
MAX_SEEDS = 100


def check_at_most(name: str, value: int, high: int, why: str) -> None:
    """Refuse an integer above ``high`` in one line (``name``, the rule, the value).

    Raises:
        ConfigError: ``value > high``.
    """
    if value > high:
        raise ConfigError(f"{name} must be at most {high:,} ({why}), got {value:,}")


def check_simulated_budget(flag: str, budget: float, config: SystemConfig) -> None:
    """Refuse a budget whose fastest designs the simulator cannot run, before any work.

    With every client busy (AsyncSGD, ``C = n``; the bound-optimal designs come close) the
    fleet completes ``sum_i mu_i`` tasks per time unit, so a run of ``budget`` needs about
    ``budget * sum_i mu_i`` completions; above the simulator's limit each such run would
    fail, after the pilot and trial by trial.

    Args:
        flag: The flag or field the budget came from (for the message).
        budget: Time budget in the config's time unit.
        config: The fleet.

    Raises:
        ConfigError: ``budget * sum_i mu_i`` exceeds the simulator's limit.
    """
    import numpy as np

    from raysync.simulation.engine import MAX_SIMULATED_COMPLETIONS

    lam_max = float(np.sum(config.service_rates))
    if budget * lam_max > MAX_SIMULATED_COMPLETIONS:
        raise ConfigError(
            f"{flag} {budget:g} s is too long to simulate: AsyncSGD (all "
            f"{config.num_clients} clients busy, {lam_max:.4g} updates/s) would need "
            f"{budget * lam_max:.3g} task completions, more than the simulator's limit of "
            f"{MAX_SIMULATED_COMPLETIONS:.0e}"
        )


def sampler_seed(seed: int) -> int:
    """The seed for Optuna's TPE sampler, in numpy's 32-bit range.

    Configs and ``--seed`` take any integer ``>= 0`` (numpy's generators do), but the
    sampler seeds a legacy ``RandomState``, which refuses seeds of ``2**32`` and more; they
    are folded modulo ``2**32`` (a seed below it is unchanged).
    """
    return int(seed) % 2**32

#: Pruner names (``raysync tune --pruner``).
PRUNERS: tuple[str, ...] = ("median", "none")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_int(name: str, value: Any, low: int) -> None:
    """Refuse anything but an integer ``>= low`` (``bool`` included) in one line.

    Raises:
        ConfigError: ``value`` is not an integer or is below ``low``.
    """
    _check_int(name, value, minimum=low)


def _check_positive(name: str, value: Any) -> None:
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class TuneSettings:
    """How to tune (every field has a CLI flag in ``raysync tune``).

    Attributes:
        objective: ``bound``, ``simulated`` or ``live``.
        trials: Evaluated trials (complete, pruned or failed while evaluated) the study
            should hold; a resumed study only runs the missing ones. Trials interrupted by
            a killed driver never count (see :mod:`tuning.recovery`).
        storage: Optuna storage URL; None is the embedded journal file
            ``out/study.journal``. A path ending in ``.journal`` or ``.log`` is a journal
            file too.
        study_name: Study name inside the storage.
        family: Search-space family: ``simplex``, ``power`` or ``tiers``.
        parameterization: For ``simplex``: ``exponential`` (``-log u``) or ``logits``.
        max_concurrency: Largest ``C`` (tasks in flight); default
            ``max(2 n, config.concurrency)``.
        budget: Time budget ``T`` in the config's time unit (virtual seconds for
            ``simulated``; ``T * time_scale`` wall seconds for ``live``); default the
            config's ``run.time_budget``.
        budget_range: ``(low, high)`` of the tuned budget for ``multi_objective="budget"``
            (default ``(T / 8, T)``), config time unit.
        multi_objective: None, ``staleness`` or ``budget``.
        parallel: Trials in flight at once (Ray tasks when > 1; bound trials are always
            inline).
        num_evals: Evaluations (pruning points) per measured trial.
        pruner: ``median`` or ``none`` (multi-objective studies never prune).
        warm_start: Enqueue the analytical optimum and the defaults first.
        constants: Bound constants; estimated from a pilot run on the config when None
            (and stored in the study, so a resume reuses them).
        eta: Step of the bound: ``"optimal"`` or a number > 0.
        seed: Sampler seed.
        out: Output directory (journal file, TensorBoard runs, plots).
        tensorboard: Write one TensorBoard run directory per trial.
        min_p: Optional constraint ``min_i p_i >= min_p`` (``trial.set_constraint``).
        heartbeat_interval: Seconds between heartbeats on RDB storages.
        address: Ray address for parallel trials (None: join or start a local instance).
        cpus_per_trial: CPUs a simulated trial's Ray task reserves.
        torch_threads: Torch threads of a simulated trial.

    Raises:
        ConfigError: A field has the wrong type or is out of range (one line naming the
            field, the rule and the value).
    """

    objective: str = "bound"
    trials: int = 100
    storage: str | None = None
    study_name: str = "raysync"
    family: str = "simplex"
    parameterization: str = "exponential"
    max_concurrency: int | None = None
    budget: float | None = None
    budget_range: tuple[float, float] | None = None
    multi_objective: str | None = None
    parallel: int = 1
    num_evals: int = 8
    pruner: str = "median"
    warm_start: bool = True
    constants: ProblemConstants | None = None
    eta: float | str = "optimal"
    seed: int = 0
    out: Path = Path("tune-out")
    tensorboard: bool = True
    min_p: float | None = None
    heartbeat_interval: int = 30
    address: str | None = None
    cpus_per_trial: float = 1.0
    torch_threads: int = 1

    def __post_init__(self) -> None:
        directions_for(self.objective, self.multi_objective)  # validates both
        check_int("trials", self.trials, 1)
        check_at_most("trials", self.trials, MAX_TRIALS, "a study's size")
        check_int("parallel", self.parallel, 1)
        check_int("num_evals", self.num_evals, 1)
        check_at_most("num_evals", self.num_evals, MAX_EVALS, "evaluations per run")
        check_int("heartbeat_interval", self.heartbeat_interval, 1)
        check_int("torch_threads", self.torch_threads, 1)
        if not _is_int(self.seed) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.max_concurrency is not None:
            check_int("max_concurrency", self.max_concurrency, 1)
        if self.pruner not in PRUNERS:
            raise ConfigError(f"pruner must be one of {', '.join(PRUNERS)}, got {self.pruner!r}")
        if self.family not in FAMILIES:
            raise ConfigError(f"family must be one of {', '.join(FAMILIES)}, got {self.family!r}")
        if self.parameterization not in PARAMETERIZATIONS:
            raise ConfigError(
                f"parameterization must be one of {', '.join(PARAMETERIZATIONS)}, "
                f"got {self.parameterization!r}"
            )
        if self.budget is not None:
            _check_positive("budget", self.budget)
        if self.budget_range is not None:
            low, high = self.budget_range
            _check_positive("budget_range low", low)
            _check_positive("budget_range high", high)
            if low >= high:
                raise ConfigError(f"budget_range must have low < high, got {self.budget_range!r}")
        if self.min_p is not None and not (_is_number(self.min_p) and 0 < self.min_p < 1):
            raise ConfigError(f"min_p must be in (0, 1), got {self.min_p!r}")
        if not isinstance(self.eta, str):
            _check_positive("eta", self.eta)
        elif self.eta != "optimal":
            raise ConfigError(f"eta must be 'optimal' or a number > 0, got {self.eta!r}")
        _check_positive("cpus_per_trial", self.cpus_per_trial)
        if self.address is not None:
            if not isinstance(self.address, str) or not self.address.strip():
                raise ConfigError(f"address must name a Ray cluster, got {self.address!r}")
            if self.parallel == 1 and self.objective != "live":
                # it was ignored: the user believed the trials ran on that cluster
                raise ConfigError(
                    f"address {self.address!r} is used only by trials on Ray (objective "
                    f"'live', or parallel > 1); with objective {self.objective!r} and "
                    "parallel 1 every trial runs in this process: drop it or raise parallel"
                )
        if not isinstance(self.study_name, str) or not self.study_name.strip():
            raise ConfigError(f"study_name must be a non-empty string, got {self.study_name!r}")
        if self.storage is not None and (not isinstance(self.storage, str) or not self.storage):
            raise ConfigError(f"storage must be a non-empty string, got {self.storage!r}")
        if not isinstance(self.out, str | Path) or not str(self.out):
            raise ConfigError(f"out must be a directory path, got {self.out!r}")
        object.__setattr__(self, "out", Path(self.out))


def check_search_size(cmax: int, n: int, *, name: str = "--max-concurrency") -> None:
    """Refuse up front a ``--max-concurrency`` whose analytical search cannot finish or fit.

    The same rule and message as ``raysync optimize`` (the size it needs, the flag to lower).

    Raises:
        ConfigError: ``cmax`` with ``n`` clients needs more memory or solver steps than allowed.
    """
    from raysync.objectives import check_search_size as check

    check(cmax, n, name=name)


def check_min_p(min_p: float | None, n: int) -> None:
    """Refuse a ``--min-p`` that no routing over ``n`` clients can meet (``min_p * n > 1``).

    Raises:
        ConfigError: ``min_p * n > 1``.
    """
    if min_p is not None and min_p * n > 1 + 1e-12:
        raise ConfigError(
            f"--min-p {min_p:g} leaves no feasible routing: needs min_p * n <= 1, "
            f"got {min_p:g} * {n} = {min_p * n:.3g}"
        )


def with_overrides(settings: TuneSettings, **changes: Any) -> TuneSettings:
    """A copy of ``settings`` with some fields replaced (validated again)."""
    return replace(settings, **changes)


def settings_from_args(
    args: argparse.Namespace, config: SystemConfig | None = None
) -> TuneSettings:
    """Build :class:`TuneSettings` from parsed ``raysync tune`` arguments.

    The only place that maps the tune command's flags to settings (the CLI, the cluster
    entry point and tests go through it).

    Args:
        args: The namespace of ``raysync tune`` (``config``, ``objective``, ``trials``, ...).
            Flags a caller's parser does not declare take the :class:`TuneSettings`
            defaults.
        config: The loaded config; when given, ``--min-p`` and ``--max-concurrency`` are
            checked against its fleet size before any work.

    Returns:
        The validated settings.

    Raises:
        ConfigError: A flag is out of range or ``--constants`` does not parse.
    """
    from raysync.objectives import ProblemConstants

    defaults = TuneSettings()

    def get(name: str, default: Any) -> Any:
        value = getattr(args, name, None)
        return default if value is None else value

    objective = get("objective", defaults.objective)
    # Given but blank: refused under the flag's name (empty fell back to the default study,
    # and settings named the field, not the flag).
    for flag, what in (("study", "a study name"), ("storage", "an Optuna storage URL or a "
                       "path ending in .journal")):  # fmt: skip
        value = getattr(args, flag, None)
        if value is not None and not str(value).strip():
            raise ConfigError(f"--{flag} must be {what}, got {value!r}")
    study = get("study", None) or f"{Path(str(args.config)).stem}-{objective}"
    out_arg = get("out", None)
    if out_arg is not None and not str(out_arg).strip():
        raise ConfigError(f"--out must be a directory path, got {out_arg!r}")
    out = Path(out_arg) if out_arg else Path("tune-out") / study
    constants_text = get("constants", None)
    if constants_text is not None and not str(constants_text).strip():
        # Not "absent": an empty value would silently start the pilot it was meant to skip.
        raise ConfigError(f"--constants must be 'L,sigma2,M2,A', got {constants_text!r}")
    constants = (
        ProblemConstants.parse(constants_text, flag="--constants")
        if constants_text is not None
        else None
    )
    settings = TuneSettings(
        objective=objective,
        trials=get("trials", defaults.trials),
        storage=get("storage", None),
        study_name=study,
        family=get("family", defaults.family),
        parameterization=get("parameterization", defaults.parameterization),
        max_concurrency=get("max_concurrency", None),
        budget=get("budget", None),
        multi_objective=get("multi_objective", None),
        parallel=get("parallel", defaults.parallel),
        num_evals=get("num_evals", defaults.num_evals),
        pruner=get("pruner", defaults.pruner),
        warm_start=not bool(getattr(args, "no_warm_start", False)),
        constants=constants,
        seed=get("seed", defaults.seed),
        out=out,
        tensorboard=not bool(getattr(args, "no_tensorboard", False)),
        min_p=get("min_p", None),
        address=get("address", None),
    )
    if config is not None:
        n = config.num_clients
        check_min_p(settings.min_p, n)
        from raysync.objectives import default_max_concurrency

        cmax, cmax_name = default_max_concurrency(settings.max_concurrency, n, config.concurrency)
        check_search_size(cmax, n, name=cmax_name)
        if settings.objective != "bound":  # trials run the simulator or the runtime
            if settings.budget is not None:
                check_simulated_budget("--budget", settings.budget, config)
            elif config.run.time_budget is not None:
                check_simulated_budget("run.time_budget", config.run.time_budget, config)
            if settings.budget_range is not None:
                check_simulated_budget("budget_range high", settings.budget_range[1], config)
    return settings
