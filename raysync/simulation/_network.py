"""The simulator's event loop with communication delays and a server station (docs/network.md).

A task's life (docs/theory.md section 2, BCMP extensions)::

    dispatch (version v) -> downlink_j -> FIFO queue of client j -> service -> uplink_j
        -> FIFO queue of the server -> update time -> update applied (k -> k+1) -> dispatch

Without a ``[server] update_time`` the update is applied when the result arrives; without a
client's ``downlink``/``uplink`` that leg takes no time. Delays never queue (infinite-server
stations, so results may overtake each other on the uplink). The loop keeps the statistics
of :mod:`raysync.simulation.statistics` in the same row layout as the fast loops (client
queue lengths count only the tasks at the client, waiting or in service, as the theory's
``Q_i`` does), plus a trailing entry: the server's busy time so far, from which
:func:`server_utilization` measures the server station's load over the same window.

Random streams: the downlink, uplink and server times come from their own generators,
children ``(4, i)``, ``(5, i)`` and ``(6,)`` of ``SeedSequence(seed)``, so adding a delay
leaves every client's service times as they were.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from raysync.config import ServiceTimeSpec, SystemConfig
from raysync.simulation.statistics import Snapshots, service_stream

if TYPE_CHECKING:
    from raysync.routing._base import BaseRouter

__all__ = ["NetworkStreams", "has_network", "network_streams", "run_network", "server_utilization"]

_KEY_DOWNLINK = 4
_KEY_UPLINK = 5
_KEY_SERVER = 6

_DOWN, _SERVICE, _UP, _SERVER = 0, 1, 2, 3


@dataclass(frozen=True)
class NetworkStreams:
    """Endless duration streams of the delay and server stations (None: no such station).

    Attributes:
        downlink: One stream per client (None for a client without a downlink delay).
        uplink: One stream per client (None for a client without an uplink delay).
        server: The server's update times (None: updates are instantaneous).
    """

    downlink: tuple[Iterator[float] | None, ...]
    uplink: tuple[Iterator[float] | None, ...]
    server: Iterator[float] | None


def has_network(config: SystemConfig) -> bool:
    """Whether a config has any delay or a server update time."""
    if config.server is not None and config.server.update_time is not None:
        return True
    return any(c.downlink is not None or c.uplink is not None for c in config.clients)


def _stream(
    spec: ServiceTimeSpec | None, seed: int, key: tuple[int, ...], block: int, unit: float
) -> Iterator[float] | None:
    from raysync.simulation.service_times import make_service_time

    if spec is None:
        return None
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))
    stream = service_stream(make_service_time(spec), rng, block)
    if unit == 1.0:
        return stream
    return (x / unit for x in stream)  # exact: the unit is a power of two


def network_streams(
    config: SystemConfig, *, block_size: int, unit: float = 1.0
) -> NetworkStreams | None:
    """The streams of a config's stations, in the simulator's time unit; None without any."""
    if not has_network(config):
        return None
    seed = config.seed
    down = tuple(
        _stream(c.downlink, seed, (_KEY_DOWNLINK, i), block_size, unit)
        for i, c in enumerate(config.clients)
    )
    up = tuple(
        _stream(c.uplink, seed, (_KEY_UPLINK, i), block_size, unit)
        for i, c in enumerate(config.clients)
    )
    spec = None if config.server is None else config.server.update_time
    return NetworkStreams(
        downlink=down, uplink=up, server=_stream(spec, seed, (_KEY_SERVER,), block_size, unit)
    )


def server_utilization(
    rows: list[tuple[Any, ...]], final_row: tuple[Any, ...], start_completion: int
) -> float:
    """Busy fraction of the server station from the first row at or after the warm-up.

    Args:
        rows: The snapshot rows of :func:`run_network` (their last entry is the server's
            busy time so far).
        final_row: The final row.
        start_completion: First completion of the measurement window.

    Returns:
        The fraction in ``[0, 1]`` (NaN when the window has no duration).
    """
    first = next((r for r in rows if r[0] >= start_completion), rows[0])
    span = float(final_row[1]) - float(first[1])
    if span <= 0:
        return math.nan
    return min(1.0, max(0.0, (float(final_row[-1]) - float(first[-1])) / span))


def run_network(
    *,
    config: SystemConfig,
    router: BaseRouter,
    streams: list[Iterator[float]],
    snapshots: Snapshots,
    max_updates: float,
    budget: float,
    progress: Any,
    network: NetworkStreams,
    buffer_size: int = 1,
    trainer: Any = None,
) -> tuple[tuple[Any, ...], Any, dict[str, Any]]:
    """Run the system with its stations to the stop condition.

    Args:
        config: The system, in the simulator's time unit.
        router: The bound router.
        streams: Each client's service-time stream.
        snapshots: The statistics grid.
        max_updates: Stop after this many model versions.
        budget: Stop at this virtual time.
        progress: ``progress(updates, time)`` or None.
        network: The stations' streams.
        buffer_size: Completions per model version in queue-only mode (FedBuff's ``B``).
        trainer: The engine's training loop object (workload, strategy, evaluation) to
            train with; None runs queue-only.

    Returns:
        ``(final_row, curve, extra)`` as the engine's loops return them.
    """
    from raysync.simulation.engine import _Curve

    n = config.num_clients
    train = trainer is not None
    big = 1 if train else buffer_size
    down = [None if s is None else s.__next__ for s in network.downlink]
    up = [None if s is None else s.__next__ for s in network.uplink]
    server_next = None if network.server is None else network.server.__next__
    nexts = [s.__next__ for s in streams]

    if train:
        from raysync.client import run_client_work
        from raysync.strategies._base import ClientResult

        workload = trainer.workload
        strategy = trainer.strategy
        computer = workload.make_computer()
        work = strategy.client_work()
        data = [workload.client_data(i) for i in range(n)]
        stream = trainer.minibatch_rngs.task
        params = np.array(workload.initial_params, dtype=np.float32)
        params.setflags(write=False)
        every_updates = config.run.eval_every_updates
        every_seconds = config.run.eval_every_seconds
    else:
        params = None
        every_updates = None
        every_seconds = None
    next_eval_time = every_seconds if every_seconds is not None else math.inf

    # A task is [task_id, version, completions at dispatch, params, output, ordinal]; the
    # ordinal (its place among its client's tasks, in creation order as the runtime counts
    # it) picks its minibatch stream.
    queues: list[deque[list[Any]]] = [deque() for _ in range(n)]
    server_q: deque[tuple[int, list[Any]]] = deque()
    svc_end: list[float | None] = [None] * n
    heap: list[tuple[Any, ...]] = []
    seq = 0
    cnt = [0] * n
    created = [0] * n
    sd = [0] * n
    sd2 = [0] * n
    scd = [0] * n
    scd2 = [0] * n
    dep = [0.0] * n
    arr = [0.0] * n
    busy = [0.0] * n
    server_busy = 0.0
    server_end = -math.inf
    k = 0
    c = 0
    dmax = 0
    cmax = 0
    task_id = 0
    initial_left = config.concurrency
    transient_end = -1
    curve = _Curve([], [], [], [], [], [])
    last_eval: tuple[float, int] | None = None

    def row(now: float) -> tuple[Any, ...]:
        in_service = [(e, i) for i, e in enumerate(svc_end) if e is not None]
        server_net = server_busy - max(0.0, server_end - now)
        version = k if train else c // big
        return (
            c, now, version, cnt[:], sd[:], sd2[:], dep[:], arr[:],
            [len(q) for q in queues], busy[:], in_service, scd[:], scd2[:], server_net,
        )  # fmt: skip

    def start_service(i: int, now: float) -> None:
        nonlocal seq
        s = nexts[i]()
        busy[i] += s
        svc_end[i] = now + s
        heapq.heappush(heap, (now + s, seq, _SERVICE, i))
        seq += 1

    def arrive(j: int, task: list[Any], now: float) -> None:
        q = queues[j]
        q.append(task)
        arr[j] += now
        if len(q) == 1:
            start_service(j, now)

    def dispatch(j: int, task: list[Any], now: float) -> None:
        nonlocal seq
        sampler = down[j]
        if sampler is None:
            arrive(j, task, now)
        else:
            heapq.heappush(heap, (now + sampler(), seq, _DOWN, j, task))
            seq += 1

    def start_server(now: float) -> None:
        nonlocal seq, server_busy, server_end
        s = server_next()  # type: ignore[misc]
        server_busy += s
        server_end = now + s
        heapq.heappush(heap, (now + s, seq, _SERVER, -1))
        seq += 1

    def evaluate(now: float) -> None:
        nonlocal last_eval
        trainer._evaluate(computer, params, now, k)
        last_eval = (now, k)

    def apply_update(i: int, task: list[Any], now: float) -> bool:
        """Consume a result; dispatch its replacement. True when the run must stop."""
        nonlocal c, k, dmax, cmax, task_id, initial_left, transient_end, params
        _, version, dispatched, _, output, _ = task
        advanced = True
        if train:
            result = ClientResult(
                task_id=task[0],
                client_id=i,
                base_version=version,
                current_version=k,
                payload=output.payload,
                loss=float(output.loss),
                num_samples=int(output.num_samples),
            )
            d = k - version
            new_params = strategy.apply(params, result)
            advanced = new_params is not None
            if new_params is not None:
                new_params = np.asarray(new_params, dtype=np.float32)
                new_params.setflags(write=False)
                params = new_params
                k += 1
        else:
            d = c // big - dispatched // big
        dc = c - dispatched
        if not dispatched:
            initial_left -= 1
            if not initial_left:
                transient_end = c + 1
        c += 1
        cnt[i] += 1
        sd[i] += d
        sd2[i] += d * d
        scd[i] += dc
        scd2[i] += dc * dc
        dmax = max(dmax, d)
        cmax = max(cmax, dc)
        j = router.route(i)
        dispatch(j, [task_id, k if train else c // big, c, params, None, created[j]], now)
        created[j] += 1
        task_id += 1
        if train and advanced and every_updates is not None and k % every_updates == 0:
            evaluate(now)
        return (k if train else c / big) >= max_updates

    for j in router.initial_clients(config.concurrency):
        dispatch(j, [task_id, 0, 0, params, None, created[j]], 0.0)
        created[j] += 1
        task_id += 1
    if train:
        evaluate(0.0)
    next_snap = snapshots.take(row(0.0))
    end_time = 0.0
    while heap:
        event = heap[0]
        t = event[0]
        while next_eval_time <= t and next_eval_time <= budget:
            k_now = k
            trainer._evaluate(computer, params, next_eval_time, k_now)
            last_eval = (next_eval_time, k_now)
            next_eval_time += every_seconds  # type: ignore[operator]
        if t > budget:
            end_time = budget
            break
        heapq.heappop(heap)
        kind = event[2]
        end_time = t
        if kind == _DOWN:
            arrive(event[3], event[4], t)
            continue
        if kind == _SERVICE:
            i = event[3]
            q = queues[i]
            task = q.popleft()
            dep[i] += t
            svc_end[i] = None
            if q:
                start_service(i, t)
            if train:
                x, y = data[i]
                task[4] = run_client_work(computer, work, task[3], x, y, stream(i, task[5]))
                task[3] = None  # the version it carried is no longer needed by this task
            sampler = up[i]
            if sampler is not None:
                heapq.heappush(heap, (t + sampler(), seq, _UP, i, task))
                seq += 1
                continue
            kind, event = _UP, (t, seq, _UP, i, task)
        if kind == _UP:
            i, task = event[3], event[4]
            if server_next is None:
                stop = apply_update(i, task, t)
            else:
                server_q.append((i, task))
                if len(server_q) == 1:
                    start_server(t)
                continue
        else:  # _SERVER: the update at the head of the server's queue is applied
            i, task = server_q.popleft()
            if server_q:
                start_server(t)
            stop = apply_update(i, task, t)
        if stop:
            break
        if c >= next_snap:
            next_snap = snapshots.take(row(t))
            if not train:
                curve.times.append(t)
                curve.updates.append(c // big)
            if progress is not None:
                progress(k if train else c // big, t)
    final = row(end_time)
    if c > snapshots.rows[-1][0] and c % snapshots.interval == 0:
        snapshots.take(final)
    version = k if train else c // big
    if train:
        if last_eval != (end_time, k):
            evaluate(end_time)
        curve = trainer.curve
    else:
        curve.times.append(end_time)
        curve.updates.append(version)
        nan = [math.nan] * len(curve.times)
        curve.test_loss, curve.test_accuracy = nan, nan[:]
        curve.val_loss, curve.val_accuracy = nan[:], nan[:]
    if progress is not None:
        progress(version, end_time)
    return (
        final,
        curve,
        {
            "max_delay": dmax,
            "max_completion_delay": cmax,
            "transient_end": transient_end,
            "eval_seconds": trainer.eval_seconds if train else 0.0,
        },
    )
