"""Ray-free pieces of the runtime: wire messages, the server's bookkeeping, the result.

Everything here is plain Python and numpy so it can be unit-tested without Ray and
pickled between the driver, the server actor and the client actors.

* :class:`TaskReply`: what a client actor returns for one task (one remote call per task).
* :class:`ServerBook`: the server's statistics as running sums, snapshotted on a grid of
  completion counts in the simulator's exact row layout, so that the simulator's batch-means
  estimator turns them into the same :class:`~raysync.simulation.result.RunResult` fields.
* :class:`ServerOutcome`: what the server actor hands back at the end of a run.
* :func:`assemble_result`: turns an outcome into a :class:`RunResult` with
  ``backend="ray"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from raysync.config import SystemConfig
from raysync.simulation.engine import _Snapshots, _statistics
from raysync.simulation.result import RunResult

__all__ = [
    "INLINE_PARAMS_BYTES",
    "EvalPoint",
    "ServerBook",
    "ServerOutcome",
    "TaskReply",
    "assemble_result",
    "wall_seconds",
]

#: Model versions smaller than this travel inline in each task call; larger ones are put in
#: the object store once per version (Ray inlines arguments below ~100 KiB; measured: inline
#: is 2.5x faster than one ``ray.put`` per version for small models).
INLINE_PARAMS_BYTES = 100 * 1024

#: Target number of statistics snapshots (the simulator uses the same grid logic).
_TARGET_SNAPSHOTS = 480


def wall_seconds(config_seconds: float | None, time_scale: float) -> float:
    """Convert a duration in the config's time unit to wall-clock seconds.

    Service times, ``run.time_budget`` and ``run.eval_every_seconds`` are stated in the
    config's unit; with emulation (``time_scale > 0``) one config second lasts
    ``time_scale`` wall seconds. Without emulation (``time_scale == 0``) durations are
    taken as wall-clock seconds.

    Args:
        config_seconds: Duration in config seconds (None or inf: no limit).
        time_scale: The run's ``time_scale``.

    Returns:
        The wall-clock duration (``math.inf`` for no limit).
    """
    if config_seconds is None or math.isinf(config_seconds):
        return math.inf
    return config_seconds * time_scale if time_scale > 0 else config_seconds


class TaskReply(NamedTuple):
    """A client's answer to one task.

    Attributes:
        task_id: Id of the task (the server consumes each id at most once).
        client_id: Client that served it.
        base_version: Model version the task carried.
        payload: Flat float32 vector (gradient, parameters or delta); None in queue-only
            runs.
        loss: Training loss the client measured (NaN in queue-only runs).
        num_samples: Samples the client used.
        service_time: Measured wall-clock service time: ``max(compute, scaled sample)``.
        compute_time: Measured wall-clock time of the computation alone.
        finished_at: Wall-clock instant (``time.time()`` on the client's node) the task
            ended; with emulation, the replacement task is stamped as dispatched then.
    """

    task_id: int
    client_id: int
    base_version: int
    payload: np.ndarray | None
    loss: float
    num_samples: int
    service_time: float
    compute_time: float
    finished_at: float


@dataclass(frozen=True)
class EvalPoint:
    """One evaluation of the model.

    Attributes:
        time: Wall-clock seconds since the start of the run (the snapshot instant).
        version: Model version evaluated.
        test_loss: Test loss.
        test_accuracy: Test accuracy.
        val_loss: Validation loss (NaN without a validation split).
        val_accuracy: Validation accuracy.
    """

    time: float
    version: int
    test_loss: float
    test_accuracy: float
    val_loss: float
    val_accuracy: float

    def scalars(self) -> dict[str, float]:
        """The point as sink scalars under the simulator's tags."""
        return {
            "test/loss": self.test_loss,
            "test/accuracy": self.test_accuracy,
            "val/loss": self.val_loss,
            "val/accuracy": self.val_accuracy,
        }


class ServerBook:
    """The server's bookkeeping: running sums and snapshots, as the simulator keeps them.

    Per client ``i``: completions, sums of relative delays ``D`` and ``D^2``, the sums of
    the departure and arrival instants (server clock) and the current number of tasks
    dispatched to it and not yet returned (its queue, as the server sees it), so that the
    time integral of the queue length is ``dep + len * t - arr``; the measured busy time
    (sum of the service times the client reported) and compute time.

    Args:
        num_clients: ``n``.
        num_updates: Planned run length (None: unknown), to size the snapshot grid.
    """

    def __init__(self, num_clients: int, num_updates: int | None) -> None:
        n = num_clients
        self.num_clients = n
        self.completions = 0
        self.version = 0
        self.count = [0] * n
        self.sum_delay = [0] * n
        self.sum_delay2 = [0] * n
        self.departures = [0.0] * n
        self.arrivals = [0.0] * n
        self.lengths = [0] * n
        self.busy = [0.0] * n
        self.compute = [0.0] * n
        self.max_delay = 0
        self.sum_loss = 0.0
        self.num_loss = 0
        interval = max(1, num_updates // _TARGET_SNAPSHOTS) if num_updates else 1
        self.snapshots = _Snapshots(interval, 2 * _TARGET_SNAPSHOTS)
        self._next_snapshot = self.snapshots.take(self.row(0.0))

    def row(self, now: float) -> tuple[Any, ...]:
        """A snapshot row in the simulator's layout (no in-service residuals)."""
        return (
            self.completions,
            now,
            self.version,
            self.count[:],
            self.sum_delay[:],
            self.sum_delay2[:],
            self.departures[:],
            self.arrivals[:],
            self.lengths[:],
            self.busy[:],
            [],
        )

    def dispatched(self, client: int, now: float) -> None:
        """Record a task sent to ``client`` at ``now``."""
        self.lengths[client] += 1
        self.arrivals[client] += now

    def completed(self, reply: TaskReply, delay: int, now: float) -> None:
        """Record a task consumed at ``now`` with relative delay ``delay``."""
        i = reply.client_id
        self.completions += 1
        self.count[i] += 1
        self.sum_delay[i] += delay
        self.sum_delay2[i] += delay * delay
        self.departures[i] += now
        self.lengths[i] -= 1
        self.busy[i] += reply.service_time
        self.compute[i] += reply.compute_time
        if delay > self.max_delay:
            self.max_delay = delay
        if not math.isnan(reply.loss):
            self.sum_loss += reply.loss
            self.num_loss += 1

    def maybe_snapshot(self, now: float) -> None:
        """Snapshot after a completion when the grid says so (call after dispatch)."""
        if self.completions >= self._next_snapshot:
            self._next_snapshot = self.snapshots.take(self.row(now))

    def finish(self, now: float) -> tuple[Any, ...]:
        """The final row; also stored when it falls on the grid."""
        final = self.row(now)
        rows = self.snapshots.rows
        if self.completions % self.snapshots.interval == 0 and self.completions > rows[-1][0]:
            self.snapshots.take(final)
        return final

    def pop_train_loss(self) -> float:
        """Mean client training loss since the last call (NaN if none)."""
        value = self.sum_loss / self.num_loss if self.num_loss else math.nan
        self.sum_loss, self.num_loss = 0.0, 0
        return value

    def live_scalars(self, now: float) -> dict[str, float]:
        """Running measurements since the start, for sinks (cumulative, so they settle).

        Tags: ``system/throughput`` (completions per wall second), ``staleness/mean``,
        ``staleness/client_<i>`` (mean relative delay) and ``queue/client_<i>``
        (time-averaged tasks at the client).
        """
        out: dict[str, float] = {}
        if now <= 0:
            return out
        out["system/throughput"] = self.completions / now
        total = sum(self.count)
        if total:
            out["staleness/mean"] = sum(self.sum_delay) / total
        for i in range(self.num_clients):
            if self.count[i]:
                out[f"staleness/client_{i}"] = self.sum_delay[i] / self.count[i]
            area = self.departures[i] + self.lengths[i] * now - self.arrivals[i]
            out[f"queue/client_{i}"] = area / now
        return out


@dataclass
class ServerOutcome:
    """Everything the server actor reports at the end of a run.

    Attributes:
        rows: Statistics snapshots (simulator layout).
        final_row: The snapshot at the end of the run.
        end_time: Wall-clock seconds from the first dispatch to the end.
        num_completions: Tasks consumed.
        num_updates: Final model version.
        max_delay: Largest relative delay observed.
        evals: Evaluations, in version order.
        busy: Measured busy (service) seconds per client.
        compute: Measured compute seconds per client.
        duplicates: Replies dropped because their task id was already consumed.
        eval_seconds: Server seconds spent evaluating.
        final_params: The final model (None in queue-only runs).
        lag_mean: Mean seconds between a task's end at its client and its consumption
            by the server (Ray's return trip plus any backlog at the server).
        lag_max: Largest such lag.
    """

    rows: list[tuple[Any, ...]]
    final_row: tuple[Any, ...]
    end_time: float
    num_completions: int
    num_updates: int
    max_delay: int
    evals: list[EvalPoint] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)
    compute: list[float] = field(default_factory=list)
    duplicates: int = 0
    eval_seconds: float = 0.0
    final_params: np.ndarray | None = None
    lag_mean: float = math.nan
    lag_max: float = math.nan


def assemble_result(
    outcome: ServerOutcome,
    config: SystemConfig,
    *,
    train: bool,
    wall_time: float,
    warmup_fraction: float,
    num_batches: int,
    confidence: float,
    extras: dict[str, Any],
) -> RunResult:
    """Build the run's :class:`RunResult` (``backend="ray"``) from the server's outcome.

    Point estimates and batch-means intervals come from the simulator's own estimator, so
    the two backends report the same quantities computed the same way. Times are
    wall-clock seconds.
    """
    n = config.num_clients
    stats = _statistics(
        outcome.rows,
        outcome.final_row,
        num_clients=n,
        warmup_fraction=warmup_fraction,
        num_batches=num_batches,
        confidence=confidence,
    )
    evals = outcome.evals
    counts = np.asarray(outcome.final_row[3], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_service = np.asarray(outcome.busy, dtype=np.float64) / counts
        mean_compute = np.asarray(outcome.compute, dtype=np.float64) / counts
    all_extras = {
        "time_scale": config.run.time_scale,
        "throughput_config_units": (
            stats["throughput"] * config.run.time_scale
            if config.run.time_scale > 0
            else stats["throughput"]
        ),
        "service_time_mean": [float(v) for v in mean_service],
        "compute_time_mean": [float(v) for v in mean_compute],
        "duplicates_dropped": outcome.duplicates,
        "lag_mean": outcome.lag_mean,
        "lag_max": outcome.lag_max,
        "eval_seconds": outcome.eval_seconds,
        **extras,
    }
    last = evals[-1] if evals else None
    return RunResult(
        backend="ray",
        train=train,
        seed=config.seed,
        num_clients=n,
        concurrency=config.concurrency,
        num_updates=outcome.num_updates,
        num_completions=outcome.num_completions,
        elapsed=outcome.end_time,
        wall_time=wall_time,
        max_relative_delay=outcome.max_delay,
        times=np.asarray([e.time for e in evals], dtype=np.float64),
        updates=np.asarray([e.version for e in evals], dtype=np.int64),
        test_loss=np.asarray([e.test_loss for e in evals], dtype=np.float64),
        test_accuracy=np.asarray([e.test_accuracy for e in evals], dtype=np.float64),
        val_loss=np.asarray([e.val_loss for e in evals], dtype=np.float64),
        val_accuracy=np.asarray([e.val_accuracy for e in evals], dtype=np.float64),
        final_test_loss=last.test_loss if last else math.nan,
        final_test_accuracy=last.test_accuracy if last else math.nan,
        final_val_loss=last.val_loss if last else math.nan,
        final_val_accuracy=last.val_accuracy if last else math.nan,
        confidence=confidence,
        config=config.to_dict(),
        extras=all_extras,
        **stats,
    )
