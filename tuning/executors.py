"""Executors: how trials are asked, run and told (bound inline, local, or Ray tasks).

:class:`TrialDriver` owns one :func:`tuning.study.run_study` call's trials:

* ``bound`` trials are evaluated inline (about a millisecond each): enqueued ones (warm
  starts, retries) are asked from the study; the others from an in-memory mirror of it and
  committed in batches with ``study.add_trials``, so a killed driver loses at most the
  uncommitted batch and never leaves a half-written trial.
* ``simulated`` and ``live`` trials run in the driver process when ``parallel == 1``
  (pruning by a trial-side sink: every evaluation is ``trial.report``-ed and
  ``trial.should_prune()`` is asked at once), and otherwise as Ray tasks, at most
  ``parallel`` at a time. Each task's reporting sink sends its intermediate values to a
  small broker actor and *waits* for the driver's answer; the driver, woken by ``ray.wait``
  on the tasks and on the broker, calls ``trial.report`` / ``trial.should_prune`` and sends
  the decision back. The semantics are exactly those of a sequential study: a trial is
  pruned at the first evaluation where the pruner says so.

Every asked trial is stamped with its driver, and marked ``params_complete`` once all its
parameters are recorded: the two facts the retry rule of :mod:`tuning.recovery` reads.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raysync.config import SystemConfig
from tuning.objectives import (
    BoundTrialObjective,
    TrialOutcome,
    TrialSpec,
    run_trial,
    trial_config,
    trial_hparams,
)
from tuning.recovery import DRIVER_ATTR, PARAMS_ATTR, Heartbeat, count_finished, driver_stamp
from tuning.report import json_safe
from tuning.search_space import Candidate, SearchSpace
from tuning.settings import TuneSettings, sampler_seed
from tuning.storage import process_alive

if TYPE_CHECKING:
    import optuna

__all__ = ["ProgressFn", "TrialDriver", "max_parallel_live", "max_parallel_simulated"]

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, "optuna.trial.FrozenTrial | None"], None]


def _tell(
    study: optuna.Study,
    trial: optuna.Trial,
    outcome: TrialOutcome,
    heartbeat: Heartbeat,
    *,
    reported: bool,
) -> optuna.trial.FrozenTrial:
    from optuna.trial import TrialState

    for key, value in json_safe(dict(outcome.attrs)).items():
        if key == "traceback":
            value = str(value)[-2000:]
        trial.set_user_attr(key, value)
    if outcome.intermediate:
        trial.set_user_attr("intermediate", [list(v) for v in outcome.intermediate])
    if not reported and len(study.directions) == 1:
        for step, value in outcome.intermediate:
            with contextlib.suppress(Exception):
                trial.report(value, step)
    heartbeat.remove(trial.number)
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


class TrialDriver:
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
        storage: Any,
        slot_lock: Callable[[], contextlib.AbstractContextManager[None]] | None = None,
    ) -> None:
        self.study = study
        # Held while counting the study's trials and asking one (several drivers may share
        # the storage: tuning.storage.trial_slot_lock).
        self.slot_lock = slot_lock or contextlib.nullcontext
        self.config = config
        self.space = space
        self.settings = settings
        self.budget = budget
        self.bound = bound
        self.progress = progress
        self.heartbeat = Heartbeat(storage, study)
        self.stamp = driver_stamp()
        self.multi = settings.multi_objective
        self.logdir = str(settings.out / "tensorboard") if settings.tensorboard else None
        self.budget_range = settings.budget_range or (budget / 8.0, budget)
        self.finished = count_finished(study)

    # -------------------------------------------------------------- ask
    def ask(self) -> tuple[optuna.Trial, Candidate, float]:
        """Ask a trial, stamp it with this driver, suggest every parameter, mark it complete."""
        with _quiet_heartbeat_warning():
            trial = self.study.ask()
        trial.set_user_attr(DRIVER_ATTR, self.stamp)
        self.heartbeat.add(trial.number)
        candidate, budget = self._suggest(trial)
        # Written last: a trial without it was interrupted mid-suggestion (retry rule).
        trial.set_user_attr(PARAMS_ATTR, True)
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
        """The picklable description of a measured trial."""
        cfg = trial_config(self.config, candidate, budget=budget, num_evals=self.settings.num_evals)
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

    def remaining(self) -> int:
        """Trials the study may still take: ``--trials`` less those that count or will.

        Read from the storage, so that every driver sharing it sees the others' trials:
        the evaluated ones (:func:`~tuning.recovery.count_finished`) and the ones running
        for a live driver, this one's included (Optuna's ``MaxTrialsCallback`` counts only
        finished trials, so concurrent workers overshoot by the trials in flight).
        """
        from optuna.trial import TrialState

        running = sum(
            1
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if process_alive(t.user_attrs.get(DRIVER_ATTR)) is not False
        )
        return self.settings.trials - count_finished(self.study) - running

    def claim(self) -> tuple[optuna.Trial, Candidate, float] | None:
        """Ask a trial if the study has room for one (None: ``--trials`` reached)."""
        with self.slot_lock():
            return self.ask() if self.remaining() > 0 else None

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
        while self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            claimed = self.claim()
            if claimed is None:
                return
            trial, candidate, budget = claimed
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
                seed=sampler_seed(self.settings.seed + self.finished), n_startup_trials=10
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
            with self.slot_lock():
                # Another driver may have committed trials meanwhile: keep what still fits.
                done = done[: max(self.remaining(), 0)]
                first = len(self.study.get_trials(deepcopy=False))
                self.study.add_trials([frozen for frozen, _, _ in done])
            for j, (frozen, candidate, outcome) in enumerate(done):
                stored = replace_number(frozen, first + j)
                if writer_root is not None:
                    _log_bound_trial(writer_root, stored, candidate, outcome)
                self._progress(stored)

    # -------------------------------------------------------------- local
    def run_local(self, workload: Any) -> None:
        """Run measured trials one by one in this process (pruning asked at once)."""
        import optuna

        single = len(self.study.directions) == 1
        while (claimed := self.claim()) is not None:
            trial, candidate, budget = claimed
            spec = self.spec(trial, candidate, budget)
            reporter = _LocalReporter(trial) if single else None
            outcome = run_trial(spec, reporter, workload)
            frozen = _tell(self.study, trial, outcome, self.heartbeat, reported=True)
            if frozen.state == optuna.trial.TrialState.FAIL:
                logger.warning("trial %d failed: %s", trial.number, outcome.message)
            self._progress(frozen)

    # -------------------------------------------------------------- ray
    def run_ray(self, workload: Any, parallel: int) -> None:
        """Run measured trials as Ray tasks, at most ``parallel`` at a time."""
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
                while len(pending) < parallel and (claimed := self.claim()) is not None:
                    trial, candidate, budget = claimed
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
                            state="fail",
                            attrs={"error": str(exc)[:2000]},
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
        """Stop the heartbeat thread."""
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


def max_parallel_live(config: SystemConfig, requested: int) -> int:
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


def max_parallel_simulated(cpus_per_trial: float, requested: int) -> int:
    """How many simulated trials the cluster's CPUs hold at once."""
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    if cpus_per_trial <= 0:
        return requested
    return max(1, min(requested, int(cpus // cpus_per_trial)))
