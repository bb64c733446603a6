"""Ray-free pieces of the runtime: wire messages, tiers, the server's bookkeeping, the result.

Everything here is plain Python and numpy so it can be unit-tested without Ray and
pickled between the driver, the server actor and the executor actors.

* :class:`TaskSpec` / :class:`TaskReply`: what the server sends for one task and what an
  executor returns (one remote call per task; a re-issued task keeps its id).
* :class:`Tier` / :func:`client_tiers` (re-exported from :mod:`raysync.placement`):
  clients with identical resource requests form a tier; in ``pool`` mode each tier gets
  its own executor actors.
* :class:`ServiceDraws`: a logical client's service-time stream, drawn by the server
  (so a task's duration does not depend on the executor that serves it).
* :class:`ServerBook`: the server's statistics as running sums, snapshotted on a grid of
  completion counts in the simulator's exact row layout, so that the shared batch-means
  estimator (:func:`~raysync.simulation.statistics.batch_statistics`) turns them into the
  same :class:`~raysync.simulation.result.RunResult` fields.
* :class:`ServerOutcome`: what the server actor hands back at the end of a run.
* :func:`assemble_result`: turns an outcome into a :class:`RunResult` with
  ``backend="ray"``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from raysync.config import SystemConfig
from raysync.exceptions import RuntimeFailure

# Tiers and modes are placement planning (Ray-free); re-exported for the runtime.
from raysync.placement import Tier, client_request, client_tiers, resolve_mode
from raysync.simulation.result import RunResult
from raysync.simulation.statistics import (
    DEFAULT_BLOCK,
    Snapshots,
    batch_statistics,
    snapshot_capacity,
    snapshot_interval,
)

__all__ = [
    "COMM_ARRAYS",
    "COMM_TAGS",
    "INLINE_PARAMS_BYTES",
    "MAX_PER_CLIENT_SCALARS",
    "EvalPoint",
    "ExecutorNotReady",
    "FaultPlan",
    "ServerBook",
    "ServerOutcome",
    "ServiceDraws",
    "TaskReply",
    "TaskSpec",
    "Tier",
    "assemble_result",
    "client_request",
    "client_tiers",
    "communication_scalars",
    "describe_communication",
    "executor_device",
    "from_wire",
    "reply_from_wire",
    "resolve_mode",
    "service_block",
    "to_wire",
    "wall_seconds",
]

#: Model versions smaller than this travel inline in each task call; larger ones are put in
#: the object store once per version (Ray inlines arguments below ~100 KiB; measured: inline
#: is 2.5x faster than one ``ray.put`` per version for small models).
INLINE_PARAMS_BYTES = 100 * 1024

#: Live per-client scalars (``staleness/client_<i>``, ``queue/client_<i>``) are sent to
#: the sinks only for fleets up to this size; larger fleets get the aggregates.
MAX_PER_CLIENT_SCALARS = 64

#: Service times the server keeps pre-drawn in memory, over all clients together.
_MAX_BUFFERED_DRAWS = 262_144


def to_wire(vector: np.ndarray) -> bytes:
    """A flat float32 model or payload as it travels inline in a call or a reply.

    Ray packs ``bytes`` with msgpack and a numpy array with its pickle fallback;
    measured on 2.6 KB models (``benchmarks/bench_runtime.py --profile``), the bytes
    round trip costs the server and the executor a fraction of the array's.

    Args:
        vector: 1-D array (any memory layout); other float dtypes travel as float32.

    Returns:
        Its float32 values' bytes in C order (4 per entry).
    """
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def from_wire(value: bytes | np.ndarray | None) -> np.ndarray | None:
    """The flat float32 vector :func:`to_wire` made (read-only, no copy).

    Args:
        value: What :func:`to_wire` returned, or an array already (a model read from
            the object store arrives as one), or None.

    Returns:
        A 1-D float32 array viewing ``value``'s bytes, the array itself, or None.

    Raises:
        ValueError: ``value``'s length is not a multiple of 4 bytes.
    """
    if value is None or isinstance(value, np.ndarray):
        return value
    return np.frombuffer(value, dtype=np.float32)


def reply_from_wire(reply: Sequence[Any]) -> TaskReply:
    """An executor's reply list (:class:`TaskReply`'s fields) with its payload decoded."""
    return TaskReply._make((*reply[:4], from_wire(reply[4]), *reply[5:]))


def wall_seconds(config_seconds: float | None, time_scale: float) -> float:
    """Convert a duration in the config's time unit to wall-clock seconds.

    Service times, ``run.time_budget``, ``run.eval_every_seconds`` and
    ``run.task_timeout`` are stated in the config's unit; with emulation
    (``time_scale > 0``) one config second lasts ``time_scale`` wall seconds. Without
    emulation (``time_scale == 0``) durations are taken as wall-clock seconds.

    Args:
        config_seconds: Duration in config seconds (None or inf: no limit).
        time_scale: The run's ``time_scale``.

    Returns:
        The wall-clock duration (``math.inf`` for no limit).
    """
    if config_seconds is None or math.isinf(config_seconds):
        return math.inf
    return config_seconds * time_scale if time_scale > 0 else config_seconds


def service_block(num_clients: int) -> int:
    """Service times drawn at a time per client by the server (bounded memory).

    The values do not depend on the block size (numpy draws the distributions
    sequentially), so a run draws the same durations as the simulator with the same seed.
    """
    return max(8, min(DEFAULT_BLOCK, _MAX_BUFFERED_DRAWS // max(1, num_clients)))


def executor_device(
    num_gpus: float,
    gpu_ids: list[Any] | tuple[Any, ...],
    *,
    cuda_available: bool,
    cuda_visible_devices: str | None,
) -> str:
    """The torch device an executor computes on, from what Ray assigned to it.

    Ray gives an actor that requests ``num_gpus > 0`` (fractions included: several
    actors then share one GPU) the ids in ``ray.get_gpu_ids()`` and restricts
    ``CUDA_VISIBLE_DEVICES`` to them, so torch numbers the visible devices from 0: the
    first assigned id is found in the visible list and its position is the CUDA index.

    Args:
        num_gpus: GPUs the executor reserved.
        gpu_ids: ``ray.get_gpu_ids()`` in the executor (ids or id strings).
        cuda_available: ``torch.cuda.is_available()`` in the executor.
        cuda_visible_devices: The executor's ``CUDA_VISIBLE_DEVICES`` (None: unset).

    Returns:
        ``"cpu"`` for a CPU executor or when CUDA is absent (the caller warns about a
        GPU executor without CUDA), else ``"cuda:<index>"``.
    """
    if num_gpus <= 0 or not cuda_available:
        return "cpu"
    if not gpu_ids:
        return "cuda:0"
    first = str(gpu_ids[0])
    if cuda_visible_devices is None:
        return f"cuda:{first}" if first.isdigit() else "cuda:0"
    visible = [v.strip() for v in cuda_visible_devices.split(",") if v.strip()]
    return f"cuda:{visible.index(first)}" if first in visible else "cuda:0"


class ServiceDraws:
    """A logical client's service times, pre-drawn in blocks by the server.

    Args:
        service_time: The client's distribution.
        rng: Its generator (child ``(0, i)`` of the run's seed, as in the simulator).
        block: Draws taken at a time.
    """

    __slots__ = ("_block", "_buffer", "_pos", "_rng", "_service_time")

    def __init__(self, service_time: Any, rng: np.random.Generator, block: int) -> None:
        self._service_time = service_time
        self._rng = rng
        self._block = block
        self._buffer: list[float] = []
        self._pos = 0

    def next(self, now: float = 0.0) -> float:
        """The next duration (config seconds).

        ``now`` (config seconds since the start) picks the segment of a ``schedule`` law,
        whose durations are drawn one at a time.
        """
        if self._service_time.time_dependent:
            return float(self._service_time.sample_at(self._rng, now))
        if self._pos >= len(self._buffer):
            draws = self._service_time.sample(self._rng, size=self._block)
            self._buffer = np.asarray(draws, dtype=np.float64).tolist()
            self._pos = 0
        value = self._buffer[self._pos]
        self._pos += 1
        return value

    def state(self) -> dict[str, Any]:
        """The generator state and the unconsumed draws (JSON-safe)."""
        return {"rng": self._rng.bit_generator.state, "pending": self._buffer[self._pos :]}

    def load(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        self._rng.bit_generator.state = dict(state["rng"])
        self._buffer = [float(v) for v in state["pending"]]
        self._pos = 0


class TaskSpec(NamedTuple):
    """One task as sent to an executor (everything but the model).

    Attributes:
        task_id: Id of the task (kept by re-issues; the server applies each id once).
        client_id: Logical client that serves it.
        base_version: Model version the task carries.
        attempt: 0 for the first issue, then 1, 2, ... for re-issues.
        arrival: Wall-clock instant (``time.time()``) the task arrived at its client on
            the emulated clock (the emulated end of the task that triggered it).
        free_at: Wall-clock end of the client's previous task on the emulated clock.
        sample: The task's sampled service time in config seconds.
        ordinal: The client's task number (seeds the task's minibatch stream).
    """

    task_id: int
    client_id: int
    base_version: int
    attempt: int
    arrival: float
    free_at: float
    sample: float
    ordinal: int


class TaskReply(NamedTuple):
    """An executor's answer to one task.

    Attributes:
        task_id: Id of the task (the server consumes each id at most once).
        client_id: Logical client that served it.
        base_version: Model version the task carried.
        attempt: The attempt that produced this reply.
        payload: Flat float32 vector (gradient, parameters or delta); None in queue-only
            runs.
        loss: Training loss the client measured (NaN in queue-only runs).
        num_samples: Samples the client used.
        service_time: Measured wall-clock service time: ``max(compute, scaled sample)``.
        compute_time: Measured wall-clock time of the computation alone.
        started_at: Wall-clock instant the task's service started on the emulated clock.
        finished_at: Wall-clock instant (``time.time()`` on the executor's node) the task
            ended; with emulation, the replacement task is stamped as dispatched then.
        received_at: ``time.time()`` on the executor's node when its call began (the
            task reached the executor); NaN from an executor that does not stamp it.
        returned_at: ``time.time()`` on the executor's node when its call returned
            (after any emulated wait); ``returned_at - received_at`` is the executor's
            span, on one clock.
    """

    task_id: int
    client_id: int
    base_version: int
    attempt: int
    payload: np.ndarray | None
    loss: float
    num_samples: int
    service_time: float
    compute_time: float
    started_at: float
    finished_at: float
    received_at: float = math.nan
    returned_at: float = math.nan


class ExecutorNotReady(RuntimeFailure):
    """An executor got a training task before its data (it was restarted).

    The server hands it the data and re-issues the task.
    """


@dataclass(frozen=True)
class FaultPlan:
    """Faults injected into executors, for tests of the fault handling (never in real runs).

    Attributes:
        exit_on_tasks: Task ids whose first attempt makes the executor process exit
            (``os._exit``) as soon as it receives them (a crash mid-task).
        delay_tasks: Task id to extra wall seconds its first attempt stalls (a straggler).
        exit_on_ordinals: ``(client, k)`` pairs: the first attempt of the ``k``-th task
            of ``client`` makes its executor exit (kills a chosen client's executor).
    """

    exit_on_tasks: frozenset[int] = frozenset()
    delay_tasks: Mapping[int, float] = field(default_factory=dict)
    exit_on_ordinals: frozenset[tuple[int, int]] = frozenset()


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


#: Per-client running sums of :class:`ServerBook` (their order in a snapshot row).
_ROW_ARRAYS = ("count", "sum_delay", "sum_delay2", "departures", "arrivals", "lengths", "busy")

#: Per-client running sums of the real (measured, not emulated) communication times
#: (:meth:`ServerBook.communicated`): tasks measured, then seconds.
COMM_ARRAYS = ("comm_count", "comm_overhead", "comm_downlink", "comm_uplink")

#: Live TensorBoard tags of the fleet's mean real communication times (seconds).
COMM_TAGS = {
    "comm_overhead": "network/real_overhead_mean",
    "comm_downlink": "network/real_downlink_mean",
    "comm_uplink": "network/real_uplink_mean",
}


class ServerBook:
    """The server's bookkeeping: running sums and snapshots, as the simulator keeps them.

    Per client ``i`` (numpy arrays of length ``n``): completions, sums of relative delays
    ``D`` and ``D^2``, the sums of the departure and arrival instants (server clock) and
    the current number of tasks created for it and not yet consumed (its queue, as the
    server sees it), so that the time integral of the queue length is
    ``dep + len * t - arr``; the measured busy time (sum of the service times the client
    reported) and compute time; and the real communication times of
    :meth:`communicated` (running sums, never per-task lists).

    Args:
        num_clients: ``n``.
        num_updates: Planned run length (None: unknown), to size the snapshot grid.
    """

    def __init__(self, num_clients: int, num_updates: int | None) -> None:
        n = num_clients
        self.num_clients = n
        self.completions = 0
        self.version = 0
        self.count = np.zeros(n, dtype=np.int64)
        self.sum_delay = np.zeros(n, dtype=np.int64)
        self.sum_delay2 = np.zeros(n, dtype=np.int64)
        self.departures = np.zeros(n, dtype=np.float64)
        self.arrivals = np.zeros(n, dtype=np.float64)
        self.lengths = np.zeros(n, dtype=np.int64)
        self.busy = np.zeros(n, dtype=np.float64)
        self.compute = np.zeros(n, dtype=np.float64)
        self.comm_count = np.zeros(n, dtype=np.int64)
        self.comm_overhead = np.zeros(n, dtype=np.float64)
        self.comm_downlink = np.zeros(n, dtype=np.float64)
        self.comm_uplink = np.zeros(n, dtype=np.float64)
        self.max_delay = 0
        self.sum_loss = 0.0
        self.num_loss = 0
        capacity = snapshot_capacity(n)
        self.snapshots = Snapshots(snapshot_interval(num_updates, capacity), capacity)
        self._next_snapshot = self.snapshots.take(self.row(0.0))

    def row(self, now: float) -> tuple[Any, ...]:
        """A snapshot row in the simulator's layout (no in-service residuals)."""
        return (
            self.completions,
            now,
            self.version,
            *(getattr(self, name).copy() for name in _ROW_ARRAYS),
            [],
        )

    def dispatched(self, client: int, now: float) -> None:
        """Record a task created for ``client`` at ``now``."""
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

    def communicated(
        self, client: int, sent: float, arrived: float, received: float, returned: float
    ) -> None:
        """Record one task's real communication times (docs/network.md, "Real delays").

        ``sent`` and ``arrived`` are ``time.time()`` on the server (the remote call is
        issued; its reply reaches the server's loop), ``received`` and ``returned`` on
        the executor (its call begins; it returns). The emulated delays are waited out
        outside ``[sent, arrived]`` (downlink before the call, uplink and server station
        after the reply), so none of them is counted. Sums kept per client:

        * ``comm_overhead``: server round trip minus executor span,
          ``(arrived - sent) - (returned - received)``: downlink + uplink + Ray's call
          overhead; each difference is taken on one clock, so it holds across nodes.
        * ``comm_downlink`` (``received - sent``) and ``comm_uplink``
          (``arrived - returned``): the split, which mixes two clocks and is meaningful
          only when they are synchronised (always on one node); their sum is
          ``comm_overhead`` up to rounding.
        """
        self.comm_count[client] += 1
        self.comm_overhead[client] += (arrived - sent) - (returned - received)
        self.comm_downlink[client] += received - sent
        self.comm_uplink[client] += arrived - returned

    def communication(self) -> dict[str, Any]:
        """Means of the real communication times (seconds), per client and over the fleet.

        Returns:
            ``count`` (list of ``n`` ints: tasks measured per client), ``overhead_mean``,
            ``downlink_mean``, ``uplink_mean`` (lists of ``n`` floats, seconds; NaN for
            a client with no measured task) and ``fleet`` (the same four over all
            tasks: ``count`` and per-task means, NaN when none).
        """
        count = self.comm_count
        total = int(count.sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            out: dict[str, Any] = {"count": count.tolist()}
            fleet: dict[str, Any] = {"count": total}
            for name in COMM_ARRAYS[1:]:
                sums = getattr(self, name)
                key = name.removeprefix("comm_") + "_mean"
                out[key] = np.where(count > 0, sums / count, math.nan).tolist()
                fleet[key] = float(sums.sum()) / total if total else math.nan
        out["fleet"] = fleet
        return out

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
        the fleet's mean real communication times in seconds (:data:`COMM_TAGS`: round
        trip minus executor span, and its clock-dependent split; see
        :meth:`communicated`), and, for fleets of at most :data:`MAX_PER_CLIENT_SCALARS` clients,
        ``staleness/client_<i>`` (mean relative delay) and ``queue/client_<i>``
        (time-averaged tasks at the client).
        """
        out: dict[str, float] = {}
        if now <= 0:
            return out
        out["system/throughput"] = self.completions / now
        total = int(self.count.sum())
        if total:
            out["staleness/mean"] = float(self.sum_delay.sum()) / total
        measured = int(self.comm_count.sum())
        if measured:
            for name, tag in COMM_TAGS.items():
                out[tag] = float(getattr(self, name).sum()) / measured
        if self.num_clients <= MAX_PER_CLIENT_SCALARS:
            area = self.departures + self.lengths * now - self.arrivals
            for i in range(self.num_clients):
                if self.count[i]:
                    out[f"staleness/client_{i}"] = float(self.sum_delay[i] / self.count[i])
                out[f"queue/client_{i}"] = float(area[i] / now)
        return out

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict[str, Any]:
        """Everything needed to continue the statistics (arrays are copies)."""
        rows = self.snapshots.rows
        return {
            "completions": self.completions,
            "version": self.version,
            "max_delay": self.max_delay,
            "sum_loss": self.sum_loss,
            "num_loss": self.num_loss,
            "interval": self.snapshots.interval,
            "next_snapshot": self._next_snapshot,
            "compute": self.compute.copy(),
            **{name: getattr(self, name).copy() for name in (*_ROW_ARRAYS, *COMM_ARRAYS)},
            "rows_meta": np.array([[r[0], r[1], r[2]] for r in rows], dtype=np.float64),
            **{
                f"rows_{name}": np.stack([np.asarray(r[3 + j]) for r in rows])
                for j, name in enumerate(_ROW_ARRAYS)
            },
        }

    def load(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state` returned (shapes checked by the caller)."""
        self.completions = int(state["completions"])
        self.version = int(state["version"])
        self.max_delay = int(state["max_delay"])
        self.sum_loss = float(state["sum_loss"])
        self.num_loss = int(state["num_loss"])
        for name in (*_ROW_ARRAYS, "compute"):
            current = getattr(self, name)
            setattr(self, name, np.array(state[name], dtype=current.dtype))
        for name in COMM_ARRAYS:  # absent in checkpoints of schema < 3: start from zero
            if name in state:
                current = getattr(self, name)
                setattr(self, name, np.array(state[name], dtype=current.dtype))
        meta = np.asarray(state["rows_meta"], dtype=np.float64)
        columns = [np.asarray(state[f"rows_{name}"]) for name in _ROW_ARRAYS]
        dtypes = [getattr(self, name).dtype for name in _ROW_ARRAYS]
        self.snapshots.rows = [
            (
                int(meta[r, 0]),
                float(meta[r, 1]),
                int(meta[r, 2]),
                *(np.array(col[r], dtype=dt) for col, dt in zip(columns, dtypes, strict=True)),
                [],
            )
            for r in range(meta.shape[0])
        ]
        self.snapshots.interval = int(state["interval"])
        self._next_snapshot = int(state["next_snapshot"])


def communication_scalars(communication: Mapping[str, Any]) -> dict[str, float]:
    """The fleet means of ``extras["communication"]`` under :data:`COMM_TAGS` (seconds).

    Empty when no task was measured.
    """
    fleet = communication.get("fleet") or {}
    if not fleet.get("count"):
        return {}
    return {
        tag: float(fleet[name.removeprefix("comm_") + "_mean"]) for name, tag in COMM_TAGS.items()
    }


def describe_communication(communication: Mapping[str, Any]) -> str:
    """Two report lines on ``extras["communication"]``: fleet means, range over clients.

    The clients' spread is one min-max pair, so the block stays two lines at any fleet
    size.
    """
    fleet = communication.get("fleet") or {}
    count = int(fleet.get("count") or 0)
    if not count:
        return "real communication: no task measured"

    def ms(value: float) -> str:
        return f"{1e3 * value:.3g} ms"

    per_client = np.asarray(communication["overhead_mean"], dtype=np.float64)
    known = per_client[~np.isnan(per_client)]
    spread = f"; clients {ms(float(known.min()))} to {ms(float(known.max()))}" if known.size else ""
    clocks = (
        "one clock" if communication.get("one_clock") else "needs synchronised clocks across nodes"
    )
    return (
        f"real communication (measured, emulated delays excluded): round trip - executor span "
        f"{ms(fleet['overhead_mean'])} mean over {count} tasks{spread}\n"
        f"  split ({clocks}): dispatch->start {ms(fleet['downlink_mean'])}, "
        f"finish->arrival {ms(fleet['uplink_mean'])}"
    )


@dataclass
class ServerOutcome:
    """Everything the server actor reports at the end of a run.

    Attributes:
        rows: Statistics snapshots (simulator layout).
        final_row: The snapshot at the end of the run.
        end_time: Wall-clock seconds from the first dispatch to the end (continued across
            a resume: the time between the checkpoint and the resume is not counted).
        num_completions: Tasks consumed.
        num_updates: Final model version.
        max_delay: Largest relative delay observed.
        evals: Evaluations, in version order.
        busy: Measured busy (service) seconds per client.
        compute: Measured compute seconds per client.
        counters: Fault-tolerance counters: ``duplicates_dropped``, ``reissued_tasks``,
            ``timed_out_tasks``, ``actor_restarts`` (restarts Ray made, read from its actor
            table: every kill counts, noticed or not, and none without a restart),
            ``executors_dead`` (executors whose restarts ran out), ``checkpoints_written``;
            with emulated service times ``compute_bound_tasks`` (applied tasks whose
            computation outlasted their scaled service sample, so they ended later than
            the simulator's clock: the emulated timeline falls behind),
            ``compute_bound_past_budget`` (tasks such computation took past
            ``run.time_budget``, which the simulator applies),
            ``late_replies_applied`` (tasks that ended by ``run.time_budget`` and were
            applied after its instant, their replies still on the way) and
            ``late_replies_given_up`` (tasks that ended by it and were not applied:
            nothing came for ``DEADLINE_GRACE`` seconds).
        eval_seconds: Server seconds spent evaluating.
        final_params: The final model (None in queue-only runs).
        lag_mean: Mean seconds between a task's end at its executor and its consumption
            by the server (Ray's return trip plus any backlog at the server).
        lag_max: Largest such lag.
        next_task_id: Ids ``0 .. next_task_id - 1`` were created; all but ``pending_tasks``
            were applied, each exactly once.
        pending_tasks: Ids created but not applied when the run stopped.
        resumed_from_version: Version of the checkpoint the run resumed from (None: fresh).
        resumed_from_elapsed: The run's elapsed seconds at that checkpoint (0: fresh);
            ``end_time`` counts from the run's start, this session's share is the rest.
        communication: :meth:`ServerBook.communicated`'s means
            (:meth:`ServerBook.communication`; empty: not measured).
        server_node: Hex id of the Ray node the server actor ran on ("" if unknown).
        debug: Records kept only for tests (``applied_task_ids`` in application order,
            ``services``: ``(task_id, client, start, end)`` per applied task).
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
    counters: dict[str, int] = field(default_factory=dict)
    eval_seconds: float = 0.0
    final_params: np.ndarray | None = None
    lag_mean: float = math.nan
    lag_max: float = math.nan
    next_task_id: int = 0
    pending_tasks: list[int] = field(default_factory=list)
    resumed_from_version: int | None = None
    resumed_from_elapsed: float = 0.0
    communication: dict[str, Any] = field(default_factory=dict)
    server_node: str = ""
    debug: dict[str, Any] = field(default_factory=dict)


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

    ``extras["communication"]`` holds the real (measured) communication times, in
    seconds (docs/network.md, "Real delays"): per client (lists of ``n``; NaN for a
    client with no measured task) ``count``, ``overhead_mean`` (server round trip minus
    executor span: downlink + uplink + Ray's call overhead, valid across nodes),
    ``downlink_mean`` (dispatch to start) and ``uplink_mean`` (finish to arrival), the
    last two valid only with synchronised clocks; ``fleet`` (the same over all tasks);
    and ``one_clock`` (True when the server and every executor share a node, hence a
    clock, so the split is exact).
    """
    n = config.num_clients
    stats = batch_statistics(
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
        "duplicates_dropped": 0,
        "reissued_tasks": 0,
        "timed_out_tasks": 0,
        "actor_restarts": 0,
        "executors_dead": 0,
        "checkpoints_written": 0,
        "compute_bound_tasks": 0,
        "compute_bound_past_budget": 0,
        "late_replies_applied": 0,
        "late_replies_given_up": 0,
        **outcome.counters,
        "task_ids": {"next": outcome.next_task_id, "pending": list(outcome.pending_tasks)},
        "resumed_from_version": outcome.resumed_from_version,
        "resumed_from_elapsed": outcome.resumed_from_elapsed,
        "lag_mean": outcome.lag_mean,
        "lag_max": outcome.lag_max,
        "eval_seconds": outcome.eval_seconds,
        **extras,
    }
    if outcome.communication:
        nodes = extras.get("executor_nodes")
        one_clock = bool(outcome.server_node) and nodes is not None
        one_clock = one_clock and all(node == outcome.server_node for node in nodes or ())
        all_extras["communication"] = {**outcome.communication, "one_clock": one_clock}
    if outcome.debug:
        all_extras["debug"] = outcome.debug
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
