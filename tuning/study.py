"""The tuning driver: an Optuna study over ``(C, p)`` that the driver owns (ask/tell).

:func:`run_study` creates (or resumes) a study in a storage, enqueues warm starts, and
runs trials until the study holds ``settings.trials`` finished trials:

* ``bound`` trials are evaluated inline (about a millisecond each).
* ``simulated`` and ``live`` trials run in the driver process when ``parallel == 1``
  (pruning by a trial-side sink: every evaluation is ``trial.report``-ed and
  ``trial.should_prune()`` is asked at once), and otherwise as Ray tasks, at most
  ``parallel`` at a time and never more than the cluster's resources hold. Each task's
  reporting sink sends its intermediate values to a small broker actor and *waits* for the
  driver's answer; the driver, woken by ``ray.wait`` on the tasks and on the broker,
  calls ``trial.report`` / ``trial.should_prune`` and sends the decision back. The
  semantics are exactly those of a sequential study: a trial is pruned at the first
  evaluation where the pruner says so.

Storage (:func:`make_storage`): an embedded Optuna ``JournalStorage`` file (no server) by
default, any SQLAlchemy URL (``sqlite:///study.db``, ``postgresql://...``) for studies
shared on a cluster. A study is resumed with ``load_if_exists=True``; trials a killed driver
left ``RUNNING`` are failed (:func:`recover_stale_trials`: at once when the recorded driver
process is gone from this host, or after the heartbeat grace period on RDB storages, where
the driver records heartbeats for its running trials) and re-enqueued with the same
parameters, so no completed trial is lost and no interrupted one is skipped.

Warm start (:func:`warm_start_points`): the analytical optimum of the bound
(:func:`raysync.objectives.optimize_joint`) and the usual defaults (uniform ``p`` with
``C = n``; ``p ∝ mu`` with ``C = n``, AsyncSGD's empirical routing) are enqueued as the
first trials with ``study.enqueue_trial``, encoded with the search space's parameters.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from raysync.config import SystemConfig
from raysync.exceptions import ConfigError
from tuning.objectives import (
    BoundTrialObjective,
    TrialOutcome,
    TrialSpec,
    directions_for,
    metric_names_for,
    run_trial,
    trial_config,
    trial_hparams,
)
from tuning.search_space import Candidate, SearchSpace, make_search_space

if TYPE_CHECKING:
    import optuna

    from raysync.objectives import OptimizationResult, ProblemConstants

__all__ = [
    "PRUNERS",
    "analytical_optimum",
    "StudyReport",
    "TuneSettings",
    "count_finished",
    "create_or_load_study",
    "make_storage",
    "recover_stale_trials",
    "run_study",
    "summarize_study",
    "warm_start_points",
]

logger = logging.getLogger(__name__)

#: Pruner names (``raysync tune --pruner``).
PRUNERS: tuple[str, ...] = ("median", "none")

JOURNAL_NAME = "study.journal"
JOURNAL_LOCK_GRACE = 5
_DRIVER_ATTR = "driver"
_STALE_ATTR = "stale"
_RETRY_ATTR = "retry_of"
_WARM_ATTR = "warm_start"

ProgressFn = Callable[[int, int, "optuna.trial.FrozenTrial | None"], None]


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True, kw_only=True)
class TuneSettings:
    """How to tune (every field has a CLI flag in ``raysync tune``).

    Attributes:
        objective: ``bound``, ``simulated`` or ``live``.
        trials: Finished trials (complete, pruned or failed) the study should hold; a
            resumed study only runs the missing ones.
        storage: Optuna storage URL; None is the embedded journal file
            ``out/study.journal``. A path ending in ``.journal`` is a journal file too.
        study_name: Study name inside the storage.
        family: Search-space family: ``simplex``, ``power`` or ``tiers``.
        parameterization: For ``simplex``: ``exponential`` (``-log u``) or ``logits``.
        max_concurrency: Largest ``C``; default ``max(2 n, config.concurrency)``.
        budget: Time budget ``T`` in the config's time unit (virtual seconds for
            ``simulated``; ``T * time_scale`` wall seconds for ``live``); default the
            config's ``run.time_budget``.
        budget_range: ``(low, high)`` of the tuned budget for ``multi_objective="budget"``
            (default ``(T / 8, T)``).
        multi_objective: None, ``staleness`` or ``budget``.
        parallel: Trials in flight at once (Ray tasks when > 1; bound trials are always
            inline).
        num_evals: Evaluations (pruning points) per measured trial.
        pruner: ``median`` or ``none`` (multi-objective studies never prune).
        warm_start: Enqueue the analytical optimum and the defaults first.
        constants: Bound constants; estimated from a pilot run on the config when None
            (and stored in the study, so a resume reuses them).
        eta: Step of the bound: ``"optimal"`` or a number.
        seed: Sampler seed.
        out: Output directory (journal file, TensorBoard runs, plots).
        tensorboard: Write one TensorBoard run directory per trial.
        min_p: Optional constraint ``min_i p_i >= min_p`` (``trial.set_constraint``).
        heartbeat_interval: Seconds between heartbeats on RDB storages.
        address: Ray address for parallel trials (None: join or start a local instance).
        cpus_per_trial: CPUs a simulated trial's Ray task reserves.
        torch_threads: Torch threads of a simulated trial.
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
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 1:
            raise ConfigError(f"trials must be an integer >= 1, got {self.trials!r}")
        if self.parallel < 1:
            raise ConfigError(f"parallel must be >= 1, got {self.parallel!r}")
        if self.num_evals < 1:
            raise ConfigError(f"num_evals must be >= 1, got {self.num_evals!r}")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"pruner must be one of {', '.join(PRUNERS)}, got {self.pruner!r}")
        if self.budget is not None and not (math.isfinite(self.budget) and self.budget > 0):
            raise ConfigError(f"budget must be > 0, got {self.budget!r}")
        if self.min_p is not None and not 0 < self.min_p < 1:
            raise ConfigError(f"min_p must be in (0, 1), got {self.min_p!r}")
        if not self.study_name:
            raise ConfigError("study_name must be a non-empty string")
        object.__setattr__(self, "out", Path(self.out))


@dataclass(frozen=True, kw_only=True)
class StudyReport:
    """The outcome of a study, for printing and JSON.

    Attributes:
        study_name: Name in the storage.
        storage: Storage URL (or journal path).
        objective: Objective name.
        directions: Study directions.
        metric_names: Names of the values.
        budget: Time budget ``T`` used.
        counts: Trials per state (``COMPLETE``, ``PRUNED``, ``FAIL``, ...).
        best: Best trials (one for single-objective; the Pareto set otherwise): number,
            values, ``C``, ``p`` and user attributes.
        references: Analytical optimum and defaults by label: ``C``, ``p``, the bound's
            value, and the measured values of the trial that evaluated it (if any).
        constants: Bound constants used.
        wall_time: Seconds this call of :func:`run_study` took.
    """

    study_name: str
    storage: str
    objective: str
    directions: list[str]
    metric_names: list[str]
    budget: float
    counts: dict[str, int]
    best: list[dict[str, Any]]
    references: dict[str, dict[str, Any]]
    constants: dict[str, float] | None
    wall_time: float
    extras: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe mapping."""
        return _json_safe(
            {
                "study_name": self.study_name,
                "storage": self.storage,
                "objective": self.objective,
                "directions": self.directions,
                "metric_names": self.metric_names,
                "budget": self.budget,
                "counts": self.counts,
                "best": self.best,
                "references": self.references,
                "constants": self.constants,
                "wall_time": self.wall_time,
                "extras": self.extras,
            }
        )


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        v = float(value)
        return v if math.isfinite(v) else None
    return value


# --------------------------------------------------------------------------- storage
def make_storage(url: str | None, out: Path, *, heartbeat_interval: int = 30) -> Any:
    """Build the Optuna storage for a URL.

    Args:
        url: None (embedded journal ``out/study.journal``), a path ending in ``.journal``
            or ``.log`` (journal file there), or an SQLAlchemy URL (``sqlite:///...``,
            ``postgresql://user:pw@host/db``, ``mysql://...``), opened as an
            :class:`optuna.storages.RDBStorage` with heartbeats.
        out: Output directory (for the default journal).
        heartbeat_interval: Seconds between heartbeats (RDB); the grace period is four
            intervals.

    Returns:
        The storage object.
    """
    import optuna
    from optuna.storages.journal import (
        JournalFileBackend,
        JournalFileSymlinkLock,
        JournalStorage,
    )

    if url is None or url.endswith((".journal", ".log")) or url.startswith("journal:"):
        if url is None:
            path = Path(out) / JOURNAL_NAME
        else:
            path = Path(url.removeprefix("journal://").removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        # A driver killed while appending leaves the lock file behind. An append holds
        # the lock for milliseconds, so a lock unchanged for JOURNAL_LOCK_GRACE seconds is
        # stale and is released (Optuna's default waits 30 s).
        lock = JournalFileSymlinkLock(str(path), grace_period=JOURNAL_LOCK_GRACE)
        return JournalStorage(JournalFileBackend(str(path), lock_obj=lock))
    if "://" not in url:
        raise ConfigError(
            f"storage must be an SQLAlchemy URL (sqlite:///study.db, postgresql://...) or a "
            f"path ending in .journal, got {url!r}"
        )
    if heartbeat_interval < 1:
        raise ConfigError(f"heartbeat_interval must be >= 1, got {heartbeat_interval!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=heartbeat_interval, grace_period=4 * heartbeat_interval
            )
    except ImportError as exc:
        raise ConfigError(
            f"storage {url.split('://')[0]}:// needs its database driver: {exc} "
            "(e.g. pip install psycopg2-binary for postgresql://)"
        ) from exc


def storage_label(storage: Any, url: str | None, out: Path) -> str:
    """A printable name for a storage (the URL, or the journal path)."""
    if url is not None:
        return url
    return str(Path(out) / JOURNAL_NAME)


def _heartbeat_enabled(storage: Any) -> bool:
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return bool(is_heartbeat_enabled(storage))


def create_or_load_study(
    *,
    storage: Any,
    study_name: str,
    directions: Sequence[str],
    metric_names: Sequence[str],
    seed: int = 0,
    pruner: str = "median",
    n_startup_trials: int = 10,
    pruner_startup: int = 4,
) -> optuna.Study:
    """Create the study, or load it (``load_if_exists=True``) with a fresh sampler.

    Args:
        storage: Storage object or URL.
        study_name: Name.
        directions: ``minimize`` / ``maximize`` per value.
        metric_names: Value names.
        seed: TPE sampler seed.
        pruner: ``median`` or ``none``; multi-objective studies never prune.
        n_startup_trials: Random trials before TPE starts modelling.
        pruner_startup: Trials finished before the median pruner acts.

    Returns:
        The study.

    Raises:
        ConfigError: An existing study with the same name has other directions.
    """
    import optuna

    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
    multi = len(directions) > 1
    chosen: optuna.pruners.BasePruner
    if pruner == "median" and not multi:
        chosen = optuna.pruners.MedianPruner(n_startup_trials=pruner_startup, n_warmup_steps=1)
    else:
        chosen = optuna.pruners.NopPruner()
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        sampler=sampler,
        pruner=chosen,
        directions=[optuna.study.StudyDirection[d.upper()] for d in directions],
        load_if_exists=True,
    )
    wanted = [optuna.study.StudyDirection[d.upper()] for d in directions]
    if list(study.directions) != wanted:
        raise ConfigError(
            f"study {study_name!r} exists with directions "
            f"{[d.name.lower() for d in study.directions]}, not {list(directions)}; "
            "choose another --study name"
        )
    if not study.metric_names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(metric_names))
    return study


# --------------------------------------------------------------------------- recovery
def _driver_stamp() -> dict[str, Any]:
    stamp: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
    try:
        import psutil

        stamp["created"] = psutil.Process(os.getpid()).create_time()
    except Exception:  # noqa: BLE001 - psutil is optional
        pass
    return stamp


def _driver_alive(stamp: Mapping[str, Any] | None) -> bool | None:
    """True/False when the recorded driver is (not) running on this host; None: unknown."""
    if not isinstance(stamp, Mapping) or stamp.get("host") != socket.gethostname():
        return None
    pid = int(stamp.get("pid", -1))
    if pid == os.getpid():
        return True
    try:
        import psutil

        proc = psutil.Process(pid)
        created = stamp.get("created")
        if created is not None and abs(proc.create_time() - float(created)) > 1.0:
            return False  # pid reused
        return proc.status() != psutil.STATUS_ZOMBIE
    except ImportError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    except Exception:  # noqa: BLE001 - psutil.NoSuchProcess and friends
        return False


def recover_stale_trials(study: optuna.Study) -> list[int]:
    """Fail the trials a killed driver left RUNNING and re-enqueue their parameters.

    A RUNNING trial is stale when the driver that asked for it (its ``driver`` user
    attribute: host, pid, process start time) is no longer running on this host, when it
    has no driver stamp at all, or, on storages with heartbeats (RDB), when its heartbeat
    is older than the grace period (:func:`optuna.storages.fail_stale_trials`). RUNNING
    trials of live drivers, or of drivers on other hosts without heartbeats, are left
    alone. Each failed trial is enqueued again with its parameters and the user attribute
    ``retry_of`` (its number), so it is re-run.

    Args:
        study: The study.

    Returns:
        Numbers of the trials failed now.
    """
    import optuna
    from optuna.trial import TrialState

    storage = study._storage
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    failed: list[int] = []
    for trial in running:
        alive = _driver_alive(trial.user_attrs.get(_DRIVER_ATTR))
        if alive is False or (alive is None and _DRIVER_ATTR not in trial.user_attrs):
            try:
                storage.set_trial_user_attr(trial._trial_id, _STALE_ATTR, True)
                if storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                    failed.append(trial.number)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass
    if _heartbeat_enabled(storage):
        before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        after = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        failed.extend(sorted(before - after))
    if failed:
        retried = {
            t.user_attrs.get(_RETRY_ATTR) for t in study.get_trials(deepcopy=False)
        } - {None}
        by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
        for number in failed:
            trial = by_number[number]
            if number in retried or not trial.params:
                continue
            attrs = {_RETRY_ATTR: number}
            if _WARM_ATTR in trial.user_attrs:
                attrs[_WARM_ATTR] = trial.user_attrs[_WARM_ATTR]
            study.enqueue_trial(dict(trial.params), user_attrs=attrs)
        logger.warning("failed %d stale trial(s) %s and enqueued them again", len(failed), failed)
    return failed


def count_finished(study: optuna.Study) -> int:
    """Finished trials that count towards ``trials``.

    Complete and pruned trials, and failed ones that were not re-enqueued as stale.
    """
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(_RETRY_ATTR) for t in trials} - {None}
    count = 0
    for t in trials:
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            count += 1
        elif t.state == TrialState.FAIL and t.number not in retried:
            count += 1
    return count


class _Heartbeat:
    """Records heartbeats for the driver's running trials in a background thread (RDB)."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage
        self.enabled = _heartbeat_enabled(storage)
        self.trial_ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.enabled:
            interval = float(storage.get_heartbeat_interval() or 30)
            self._thread = threading.Thread(
                target=self._loop, args=(interval,), name="raysync-heartbeat", daemon=True
            )
            self._thread.start()

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.beat()

    def beat(self) -> None:
        if not self.enabled:
            return
        with self._lock:
            ids = list(self.trial_ids)
        for trial_id in ids:
            with contextlib.suppress(Exception):
                self.storage.record_heartbeat(trial_id)

    def add(self, trial_id: int) -> None:
        with self._lock:
            self.trial_ids.add(trial_id)
        if self.enabled:
            with contextlib.suppress(Exception):
                self.storage.record_heartbeat(trial_id)

    def remove(self, trial_id: int) -> None:
        with self._lock:
            self.trial_ids.discard(trial_id)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


# --------------------------------------------------------------------------- warm start
def analytical_optimum(
    config: SystemConfig,
    constants: ProblemConstants,
    *,
    budget: float,
    max_concurrency: int,
    eta: float | str = "optimal",
) -> OptimizationResult:
    """The bound's joint optimum over ``(p, C in 1..max_concurrency)`` (objectives module)."""
    from raysync.objectives import BoundObjective, optimize_joint

    objective = BoundObjective(
        mu=np.asarray(config.service_rates),
        constants=constants,
        criterion="wall-clock",
        eta=eta,
        time_budget=float(budget),
    )
    return optimize_joint(objective, max_concurrency=max_concurrency)


def warm_start_points(
    config: SystemConfig, optimum: OptimizationResult | None
) -> list[tuple[str, Candidate]]:
    """The analytical optimum and the usual defaults, labelled.

    ``analytical`` (the bound's optimum, when given), ``uniform`` (``p_i = 1/n``,
    ``C = n``), ``proportional`` (``p ∝ mu``, ``C = n``: AsyncSGD's throughput-maximal
    routing with its concurrency), and ``config`` (the config's own random routing and
    ``C``, when it has one and differs from the others).
    """
    n = config.num_clients
    mu = np.asarray(config.service_rates, dtype=np.float64)
    points: list[tuple[str, Candidate]] = []
    if optimum is not None:
        best = Candidate(p=np.asarray(optimum.p), concurrency=optimum.concurrency)
        points.append(("analytical", best))
    points.append(("uniform", Candidate(p=np.full(n, 1.0 / n), concurrency=n)))
    points.append(("proportional", Candidate(p=mu / mu.sum(), concurrency=n)))
    own = config.routing_probabilities
    if own is not None:
        cand = Candidate(p=np.asarray(own, dtype=np.float64), concurrency=config.concurrency)
        if not any(
            c.concurrency == cand.concurrency and np.allclose(c.p, cand.p) for _, c in points
        ):
            points.append(("config", cand))
    return points


def _enqueue_warm_starts(
    study: optuna.Study,
    space: SearchSpace,
    points: Sequence[tuple[str, Candidate]],
    *,
    extra_params: Mapping[str, Any],
) -> list[str]:
    """Enqueue each point once (skipped when a trial with the same parameters exists)."""
    done = {t.user_attrs.get(_WARM_ATTR) for t in study.get_trials(deepcopy=False)}
    enqueued = []
    seen: list[dict[str, Any]] = []
    for label, cand in points:
        if label in done:
            continue
        params = {**space.params_for(cand.p, cand.concurrency), **extra_params}
        if params in seen:
            continue
        seen.append(params)
        study.enqueue_trial(params, user_attrs={_WARM_ATTR: label}, skip_if_exists=True)
        enqueued.append(label)
    return enqueued


# --------------------------------------------------------------------------- helpers
def _resolve_budget(config: SystemConfig, settings: TuneSettings) -> float:
    budget = settings.budget if settings.budget is not None else config.run.time_budget
    if budget is None:
        raise ConfigError(
            "a time budget is required: pass --budget S or set run.time_budget in the config"
        )
    return float(budget)


def _resolve_constants(
    config: SystemConfig,
    settings: TuneSettings,
    study: optuna.Study,
    say: Callable[[str], None],
) -> ProblemConstants:
    from raysync.objectives import ProblemConstants, estimate_constants_for_config

    if settings.constants is not None:
        return settings.constants
    stored = study.user_attrs.get("constants")
    if isinstance(stored, Mapping):
        return ProblemConstants(**{k: float(stored[k]) for k in ("L", "sigma2", "M2", "A")})
    say("estimating the bound's constants (L, sigma2, M2, A) from a pilot run")
    estimate = estimate_constants_for_config(config)
    c = estimate.constants
    say(f"constants: L={c.L:.4g} sigma2={c.sigma2:.4g} M2={c.M2:.4g} A={c.A:.4g}")
    return c


def _check_study_attrs(study: optuna.Study, attrs: Mapping[str, Any]) -> None:
    """Store the study's identity on creation; refuse to resume with different settings."""
    existing = study.user_attrs
    for key, value in attrs.items():
        if key in existing and existing[key] != value:
            raise ConfigError(
                f"study {study.study_name!r} was created with {key}={existing[key]!r}, not "
                f"{value!r}; resume it with the same settings or choose another --study name"
            )
    for key, value in attrs.items():
        if key not in existing:
            study.set_user_attr(key, value)


def _tell(
    study: optuna.Study,
    trial: optuna.Trial,
    outcome: TrialOutcome,
    heartbeat: _Heartbeat,
    *,
    reported: bool,
) -> optuna.trial.FrozenTrial:
    from optuna.trial import TrialState

    for key, value in _json_safe(dict(outcome.attrs)).items():
        if key == "traceback":
            value = str(value)[-2000:]
        trial.set_user_attr(key, value)
    if outcome.intermediate:
        trial.set_user_attr("intermediate", [list(v) for v in outcome.intermediate])
    if not reported and len(study.directions) == 1:
        for step, value in outcome.intermediate:
            with contextlib.suppress(Exception):
                trial.report(value, step)
    heartbeat.remove(trial._trial_id)
    if outcome.state == "complete":
        values = [float(v) for v in outcome.values]
        if any(not math.isfinite(v) for v in values):
            trial.set_user_attr("error", "non-finite objective value")
            return study.tell(trial, state=TrialState.FAIL)
        return study.tell(trial, values if len(values) > 1 else values[0])
    if outcome.state == "pruned":
        return study.tell(trial, state=TrialState.PRUNED)
    return study.tell(trial, state=TrialState.FAIL)


@contextlib.contextmanager
def _quiet_heartbeat_warning() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        yield


class _Driver:
    """Asks, runs and tells trials; one instance per :func:`run_study` call."""

    def __init__(
        self,
        study: optuna.Study,
        config: SystemConfig,
        space: SearchSpace,
        settings: TuneSettings,
        budget: float,
        bound: BoundTrialObjective | None,
        progress: ProgressFn | None,
    ) -> None:
        self.study = study
        self.config = config
        self.space = space
        self.settings = settings
        self.budget = budget
        self.bound = bound
        self.progress = progress
        self.heartbeat = _Heartbeat(study._storage)
        self.stamp = _driver_stamp()
        self.multi = settings.multi_objective
        self.logdir = str(settings.out / "tensorboard") if settings.tensorboard else None
        self.budget_range = settings.budget_range or (budget / 8.0, budget)
        self.finished = count_finished(study)

    # -------------------------------------------------------------- ask
    def ask(self) -> tuple[optuna.Trial, Candidate, float]:
        with _quiet_heartbeat_warning():
            trial = self.study.ask()
        trial.set_user_attr(_DRIVER_ATTR, self.stamp)
        self.heartbeat.add(trial._trial_id)
        candidate, budget = self._suggest(trial)
        return trial, candidate, budget

    def _suggest(self, trial: optuna.Trial) -> tuple[Candidate, float]:
        candidate = self.space.suggest(trial)
        budget = self.budget
        if self.multi == "budget":
            low, high = self.budget_range
            budget = trial.suggest_float("budget", low, high, log=True)
        if self.settings.min_p is not None:
            trial.set_constraint("min_p", self.settings.min_p - float(candidate.p.min()))
        trial.set_user_attr("concurrency", candidate.concurrency)
        trial.set_user_attr("p", [float(v) for v in candidate.p])
        return candidate, budget

    def spec(self, trial: optuna.Trial, candidate: Candidate, budget: float) -> TrialSpec:
        cfg = trial_config(
            self.config, candidate, budget=budget, num_evals=self.settings.num_evals
        )
        return TrialSpec(
            number=trial.number,
            kind=self.settings.objective,
            config=cfg,
            candidate=candidate,
            budget=budget,
            multi=self.multi,
            logdir=self.logdir,
            run_name=f"trial_{trial.number:05d}",
            hparams=trial_hparams(
                trial.number, candidate, trial.params, objective=self.settings.objective
            ),
            torch_threads=self.settings.torch_threads,
        )

    def remaining(self, in_flight: int = 0) -> int:
        return self.settings.trials - self.finished - in_flight

    def _progress(self, frozen: optuna.trial.FrozenTrial | None) -> None:
        self.finished += 1
        if self.progress is not None:
            self.progress(self.finished, self.settings.trials, frozen)

    # -------------------------------------------------------------- bound (inline)
    def _bound_outcome(self, candidate: Candidate, budget: float) -> TrialOutcome:
        assert self.bound is not None
        try:
            return self.bound.evaluate(candidate, budget=budget, multi=self.multi)
        except Exception as exc:  # noqa: BLE001 - a failing point fails one trial
            return TrialOutcome(state="fail", attrs={"error": str(exc)}, message=str(exc))

    def run_bound(self, batch_size: int = 64) -> None:
        """Evaluate bound trials inline.

        Enqueued (warm-start) trials are asked from the study itself. The others are
        asked from an in-memory mirror of the study (same sampler, the study's finished
        trials as history) in batches, and each finished batch is committed with
        ``study.add_trials``: one storage write per trial instead of one per parameter
        and attribute (a journal file syncs every write). A killed driver loses at most
        the uncommitted batch; every trial in the storage is complete.
        """
        import optuna
        from optuna.trial import TrialState

        writer_root = Path(self.logdir) if self.logdir is not None else None
        while self.remaining() > 0 and self.study.get_trials(
            deepcopy=False, states=(TrialState.WAITING,)
        ):
            trial, candidate, budget = self.ask()
            outcome = self._bound_outcome(candidate, budget)
            frozen = _tell(self.study, trial, outcome, self.heartbeat, reported=True)
            if writer_root is not None:
                _log_bound_trial(writer_root, frozen, candidate, outcome)
            self._progress(frozen)
        if self.remaining() <= 0:
            return
        mirror = optuna.create_study(
            directions=list(self.study.directions),
            sampler=optuna.samplers.TPESampler(
                seed=self.settings.seed + self.finished, n_startup_trials=10
            ),
        )
        mirror.add_trials(
            self.study.get_trials(
                deepcopy=True, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
            )
        )
        while self.remaining() > 0:
            todo = min(batch_size, self.remaining())
            done: list[tuple[optuna.trial.FrozenTrial, Candidate, TrialOutcome]] = []
            for _ in range(todo):
                trial = mirror.ask()
                candidate, budget = self._suggest(trial)
                outcome = self._bound_outcome(candidate, budget)
                frozen = _tell(mirror, trial, outcome, self.heartbeat, reported=True)
                done.append((frozen, candidate, outcome))
            first = len(self.study.get_trials(deepcopy=False))
            self.study.add_trials([frozen for frozen, _, _ in done])
            for j, (frozen, candidate, outcome) in enumerate(done):
                stored = replace_number(frozen, first + j)
                if writer_root is not None:
                    _log_bound_trial(writer_root, stored, candidate, outcome)
                self._progress(stored)

    # -------------------------------------------------------------- local
    def run_local(self, workload: Any) -> None:
        import optuna

        single = len(self.study.directions) == 1
        while self.remaining() > 0:
            trial, candidate, budget = self.ask()
            spec = self.spec(trial, candidate, budget)
            reporter = _LocalReporter(trial) if single else None
            outcome = run_trial(spec, reporter, workload)
            frozen = _tell(self.study, trial, outcome, self.heartbeat, reported=True)
            if frozen.state == optuna.trial.TrialState.FAIL:
                logger.warning("trial %d failed: %s", trial.number, outcome.message)
            self._progress(frozen)

    # -------------------------------------------------------------- ray
    def run_ray(self, workload: Any, parallel: int) -> None:
        import ray

        single = len(self.study.directions) == 1
        broker = _broker_class().options(num_cpus=0).remote() if single else None
        workload_ref = ray.put(workload) if workload is not None else None
        remote = ray.remote(_remote_trial)
        kind = self.settings.objective
        num_cpus = self.settings.cpus_per_trial if kind == "simulated" else 0.0
        pending: dict[Any, optuna.Trial] = {}
        by_number: dict[int, optuna.Trial] = {}
        wait_ref = broker.wait_reports.remote() if broker is not None else None
        try:
            while True:
                while len(pending) < parallel and self.remaining(len(pending)) > 0:
                    trial, candidate, budget = self.ask()
                    spec = self.spec(trial, candidate, budget)
                    ref = remote.options(num_cpus=num_cpus, max_retries=0).remote(
                        spec, broker, workload_ref
                    )
                    pending[ref] = trial
                    by_number[trial.number] = trial
                if not pending:
                    break
                waiting = [*pending, *([wait_ref] if wait_ref is not None else [])]
                ready, _ = ray.wait(waiting, num_returns=1, timeout=5.0)
                if wait_ref is not None and wait_ref in ready:
                    decisions = []
                    for number, step, value in ray.get(wait_ref):
                        running = by_number.get(number)
                        prune = False
                        if running is not None:
                            running.report(value, step)
                            prune = running.should_prune()
                        decisions.append((number, step, prune))
                    assert broker is not None
                    broker.decide.remote(decisions)
                    wait_ref = broker.wait_reports.remote()
                for ref in ready:
                    if ref not in pending:
                        continue
                    trial = pending.pop(ref)
                    by_number.pop(trial.number, None)
                    try:
                        outcome = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - a task crash fails one trial
                        outcome = TrialOutcome(
                            state="fail", attrs={"error": str(exc)[:2000]},
                            message=str(exc).splitlines()[0] if str(exc) else "task failed",
                        )
                    frozen = _tell(self.study, trial, outcome, self.heartbeat, reported=True)
                    self._progress(frozen)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            if broker is not None:
                ray.kill(broker)

    def close(self) -> None:
        self.heartbeat.stop()


class _LocalReporter:
    """Reports to an Optuna trial in the driver process and asks the pruner at once."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def report(self, step: int, value: float) -> bool:
        self.trial.report(value, step)
        return bool(self.trial.should_prune())


class _BrokerReporter:
    """Reports to the driver through the broker actor and waits for its decision."""

    def __init__(self, broker: Any, number: int) -> None:
        self.broker = broker
        self.number = number

    def report(self, step: int, value: float) -> bool:
        import ray

        return bool(ray.get(self.broker.report.remote(self.number, step, value)))


def replace_number(trial: optuna.trial.FrozenTrial, number: int) -> optuna.trial.FrozenTrial:
    """A copy of a frozen trial with another number (the one the storage gave it)."""
    import copy

    out = copy.copy(trial)
    out.number = number
    return out


def _remote_trial(spec: TrialSpec, broker: Any, workload: Any) -> TrialOutcome:
    """Body of a trial's Ray task."""
    reporter = _BrokerReporter(broker, spec.number) if broker is not None else None
    return run_trial(spec, reporter, workload)


class _PruneBrokerImpl:
    """Async actor between trial tasks (which report and wait) and the driver (decides)."""

    def __init__(self) -> None:
        import asyncio

        self._reports: list[tuple[int, int, float]] = []
        self._waiting: dict[tuple[int, int], Any] = {}
        self._new = asyncio.Event()

    async def report(self, number: int, step: int, value: float) -> bool:
        import asyncio

        future = asyncio.get_running_loop().create_future()
        self._waiting[(number, step)] = future
        self._reports.append((number, step, value))
        self._new.set()
        return bool(await future)

    async def wait_reports(self) -> list[tuple[int, int, float]]:
        while not self._reports:
            self._new.clear()
            await self._new.wait()
        out, self._reports = self._reports, []
        return out

    async def decide(self, decisions: list[tuple[int, int, bool]]) -> None:
        for number, step, prune in decisions:
            future = self._waiting.pop((number, step), None)
            if future is not None and not future.done():
                future.set_result(prune)


def _broker_class() -> Any:
    import ray

    return ray.remote(_PruneBrokerImpl)


def _log_bound_trial(
    root: Path, frozen: optuna.trial.FrozenTrial, candidate: Candidate, outcome: TrialOutcome
) -> None:
    """One TensorBoard run directory per bound trial: its terms and ``add_hparams``."""
    from raysync.monitoring.tensorboard import TensorBoardSink

    sink = TensorBoardSink(root, run_name=f"trial_{frozen.number:05d}", flush_secs=120)
    try:
        terms = outcome.attrs.get("bound", {})
        metrics = {
            f"tune/{k}": float(v)
            for k, v in terms.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        if outcome.values:
            metrics["tune/value"] = float(outcome.values[0])
        hparams = trial_hparams(frozen.number, candidate, frozen.params, objective="bound")
        hparams["state"] = frozen.state.name.lower()
        sink.log_hparams(hparams, metrics)
    finally:
        sink.close()


def _max_parallel_live(config: SystemConfig, requested: int) -> int:
    """How many live runs the cluster can hold at once (all client actors alive)."""
    import ray

    from raysync.runtime import client_request

    demand: dict[str, float] = {}
    for spec in config.clients:
        for key, amount in client_request(spec).items():
            demand[key] = demand.get(key, 0.0) + amount
    totals = ray.cluster_resources()
    fits = requested
    for key, amount in demand.items():
        if amount > 0:
            fits = min(fits, int(totals.get(key, 0.0) // amount))
    return max(1, fits)


def _max_parallel_simulated(cpus_per_trial: float, requested: int) -> int:
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    if cpus_per_trial <= 0:
        return requested
    return max(1, min(requested, int(cpus // cpus_per_trial)))


# --------------------------------------------------------------------------- main entry
def run_study(
    config: SystemConfig,
    settings: TuneSettings,
    *,
    progress: ProgressFn | None = None,
    on_event: Callable[[str], None] | None = None,
) -> StudyReport:
    """Create or resume the study, run it to ``settings.trials`` finished trials, report.

    Args:
        config: The fleet and training set-up (its routing and ``C`` are replaced per
            trial).
        settings: How to tune.
        progress: Called after each finished trial as ``progress(done, total, trial)``.
        on_event: Called with one-line messages (resume, warm starts, parallelism).

    Returns:
        The :class:`StudyReport` (best trials, analytical optimum and defaults).
    """
    start = time.perf_counter()
    say = on_event or (lambda message: logger.info("%s", message))
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    budget = _resolve_budget(config, settings)
    space = make_search_space(
        config,
        family=settings.family,
        max_concurrency=settings.max_concurrency,
        parameterization=settings.parameterization,
    )
    directions = directions_for(settings.objective, settings.multi_objective)
    storage = make_storage(settings.storage, out, heartbeat_interval=settings.heartbeat_interval)
    study = create_or_load_study(
        storage=storage,
        study_name=settings.study_name,
        directions=directions,
        metric_names=metric_names_for(settings.objective, settings.multi_objective),
        seed=settings.seed,
        pruner=settings.pruner,
        pruner_startup=max(4, settings.parallel),
    )
    _check_study_attrs(
        study,
        {
            "objective": settings.objective,
            "family": settings.family,
            "parameterization": settings.parameterization if settings.family == "simplex" else "",
            "max_concurrency": space.max_concurrency,
            "budget": budget,
            "multi_objective": settings.multi_objective or "",
            "num_clients": config.num_clients,
        },
    )
    existing = len(study.trials)
    if existing:
        failed = recover_stale_trials(study)
        say(
            f"resuming study {settings.study_name!r}: {count_finished(study)} finished trials"
            + (f", {len(failed)} stale trial(s) failed and re-enqueued" if failed else "")
        )
    need_constants = settings.objective == "bound" or settings.warm_start
    constants = _resolve_constants(config, settings, study, say) if need_constants else None
    if constants is not None and "constants" not in study.user_attrs:
        study.set_user_attr("constants", constants.to_dict())
    optimum = None
    if constants is not None:
        optimum = analytical_optimum(
            config, constants, budget=budget, max_concurrency=space.max_concurrency,
            eta=settings.eta,
        )
    references = warm_start_points(config, optimum)
    if settings.warm_start:
        extra = {"budget": budget} if settings.multi_objective == "budget" else {}
        enqueued = _enqueue_warm_starts(study, space, references, extra_params=extra)
        if enqueued:
            say(f"warm start: enqueued {', '.join(enqueued)}")

    bound = (
        BoundTrialObjective(config.service_rates, constants, eta=settings.eta)
        if constants is not None
        else None
    )
    driver = _Driver(study, config, space, settings, budget, bound, progress)
    started_ray = False
    try:
        if settings.objective == "bound":
            driver.run_bound()
        else:
            workload = _build_workload(config)
            parallel = settings.parallel
            if parallel > 1 or settings.objective == "live":
                started_ray = _ensure_ray(settings.address)
            if parallel > 1:
                if settings.objective == "live":
                    fits = _max_parallel_live(config, parallel)
                else:
                    fits = _max_parallel_simulated(settings.cpus_per_trial, parallel)
                if fits < parallel:
                    say(
                        f"parallel={parallel} reduced to {fits}: the cluster's resources hold "
                        f"{fits} {settings.objective} trial(s) at once"
                    )
                parallel = fits
            if parallel > 1:
                say(f"running up to {parallel} trials at once on Ray")
                driver.run_ray(workload, parallel)
            else:
                driver.run_local(workload)
    finally:
        driver.close()
        if started_ray:
            import ray

            ray.shutdown()
    report = summarize_study(
        study,
        space=space,
        references=references,
        bound=bound,
        budget=budget,
        objective=settings.objective,
        storage=storage_label(storage, settings.storage, out),
        constants=constants,
        wall_time=time.perf_counter() - start,
    )
    (out / "study.json").write_text(json.dumps(report.to_dict(), indent=2))
    return report


def _build_workload(config: SystemConfig) -> Any:
    from raysync.workload import build_workload

    return build_workload(config)


def _ensure_ray(address: str | None) -> bool:
    """Join ``address`` or an initialised session, or start a local instance (True)."""
    from raysync.runtime import connect

    return connect(address)


def _trial_record(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return {
        "number": trial.number,
        "values": list(trial.values) if trial.values is not None else None,
        "concurrency": trial.user_attrs.get("concurrency"),
        "p": trial.user_attrs.get("p"),
        "params": dict(trial.params),
        "user_attrs": {
            k: v for k, v in trial.user_attrs.items()
            if k not in ("traceback", "intermediate", _DRIVER_ATTR, "p")
        },
    }


def summarize_study(
    study: optuna.Study,
    *,
    space: SearchSpace,
    references: Sequence[tuple[str, Candidate]],
    bound: BoundTrialObjective | None,
    budget: float,
    objective: str,
    storage: str,
    constants: ProblemConstants | None,
    wall_time: float = 0.0,
) -> StudyReport:
    """Summarise a study: best trial(s), references with bound and measured values."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best: list[dict[str, Any]] = []
    if complete:
        best_trials = (
            [study.best_trial] if len(study.directions) == 1 else list(study.best_trials)
        )
        for t in best_trials:
            record = _trial_record(t)
            if bound is not None and t.user_attrs.get("p") is not None:
                cand = Candidate(
                    p=np.asarray(t.user_attrs["p"]), concurrency=int(t.user_attrs["concurrency"])
                )
                record["bound"] = bound.terms(cand, budget).value
            best.append(record)
    refs: dict[str, dict[str, Any]] = {}
    for label, cand in references:
        projected = space.project(cand.p, cand.concurrency)
        entry: dict[str, Any] = {
            "concurrency": cand.concurrency,
            "p": [float(v) for v in cand.p],
            "projection_error": float(np.abs(projected.p - cand.p).max()),
        }
        if bound is not None:
            entry["bound"] = bound.terms(cand, budget).value
        measured = [
            t for t in complete
            if t.user_attrs.get(_WARM_ATTR) == label
        ]
        if measured:
            entry["trial"] = measured[-1].number
            entry["values"] = list(measured[-1].values)
            entry["user_attrs"] = {
                k: v for k, v in measured[-1].user_attrs.items()
                if k in ("val_accuracy", "test_accuracy", "throughput", "mean_client_staleness")
            }
        refs[label] = entry
    return StudyReport(
        study_name=study.study_name,
        storage=storage,
        objective=objective,
        directions=[d.name.lower() for d in study.directions],
        metric_names=list(study.metric_names or []),
        budget=budget,
        counts=counts,
        best=best,
        references=refs,
        constants=constants.to_dict() if constants is not None else None,
        wall_time=wall_time,
    )


def with_overrides(settings: TuneSettings, **changes: Any) -> TuneSettings:
    """A copy of ``settings`` with some fields replaced (validated again)."""
    return replace(settings, **changes)
