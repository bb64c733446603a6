"""Run statistics shared by the simulator and the Ray runtime: one code path for both.

* :func:`service_stream`: a client's endless stream of service times, drawn in blocks
  through its distribution (numpy draws these distributions sequentially, so the values do
  not depend on the block size).
* :class:`Snapshots`: cumulative per-client statistics recorded on a grid of completion
  counts, thinned by doubling so that memory stays bounded however long the run.
* :func:`batch_statistics`: point estimates and batch-means confidence intervals over the
  post-warm-up window of the snapshots (every :class:`~raysync.simulation.result.RunResult`
  statistic of both backends comes from here).

Snapshot rows have a fixed layout (both backends write it)::

    (completions, time, version, count, sum_delay, sum_delay2, departures, arrivals,
     lengths, busy_started, heap[, sum_cdelay, sum_cdelay2])

where the per-client entries are sequences of length ``n`` (lists or numpy arrays):
completions, sums of relative delays ``D`` and ``D^2`` counted in **model versions**
(``D = k - v``, what a strategy sees), sums of departure and arrival instants, queue
lengths, busy time started so far; ``heap`` lists in-service tasks as tuples whose first
entry is their end time and last entry their client (the simulator's event heap; empty for
the runtime, which only knows measured busy times). The optional trailing pair holds the
sums of the relative delays counted in **completions** (the unit of docs/theory.md section 2:
completions between a task's dispatch and its own); the simulator writes it, the runtime
does not. When it is absent and every row has ``version == completions`` (one version per
completion: the SGD rules), the two units coincide and the version sums stand for both.

Units. The queueing theory counts one update per completion. FedBuff applies one model
version per ``B`` completions, so its version delay is about ``1 / B`` of its completion
delay (exactly ``E[D_versions] = E[D_completions] / B`` in steady state; see
``docs/fedbuff.md``). Both are reported, each under its own name.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from raysync.simulation.result import batch_ratio_ci

if TYPE_CHECKING:
    from raysync.simulation.service_times import BaseServiceTime

__all__ = [
    "DEFAULT_BLOCK",
    "MAX_SNAPSHOT_VALUES",
    "TARGET_SNAPSHOTS",
    "SnapshotState",
    "Snapshots",
    "batch_statistics",
    "service_stream",
    "snapshot_capacity",
    "snapshot_interval",
    "snapshot_state",
]

#: Service times drawn per call of ``BaseServiceTime.sample`` (the simulator's default).
DEFAULT_BLOCK = 1024
#: Target number of statistics snapshots over a run of known length.
TARGET_SNAPSHOTS = 480
#: Bound on ``snapshots x clients`` per per-client quantity kept in memory: with many
#: clients fewer snapshots are kept (at least :data:`MIN_SNAPSHOTS`).
MAX_SNAPSHOT_VALUES = 1_000_000
#: Fewest snapshots kept before thinning (enough for 30 batches after a 10 % warm-up).
MIN_SNAPSHOTS = 80


def service_stream(
    service_time: BaseServiceTime, rng: np.random.Generator, block: int = DEFAULT_BLOCK
) -> Iterator[float]:
    """Endless stream of durations, drawn ``block`` at a time through the distribution.

    Args:
        service_time: The client's distribution.
        rng: The client's service-time generator (advanced ``block`` draws at a time).
        block: Draws per call of ``service_time.sample``.

    Yields:
        Durations in seconds.
    """
    while True:
        draws = np.asarray(service_time.sample(rng, size=block), dtype=np.float64)
        yield from draws.tolist()


def snapshot_capacity(num_clients: int) -> int:
    """Snapshots kept before the grid is thinned (``2 * TARGET_SNAPSHOTS`` for small fleets).

    Every snapshot copies each per-client quantity, so with many clients the capacity is
    lowered to keep about :data:`MAX_SNAPSHOT_VALUES` values per quantity (never below
    :data:`MIN_SNAPSHOTS`). Fleets of up to ~1,000 clients keep the full capacity.

    Args:
        num_clients: ``n``.

    Returns:
        An even number of snapshots.
    """
    cap = min(2 * TARGET_SNAPSHOTS, MAX_SNAPSHOT_VALUES // max(1, num_clients))
    return max(MIN_SNAPSHOTS, cap - cap % 2)


def snapshot_interval(num_updates: int | float | None, capacity: int) -> int:
    """Initial grid step: about ``capacity / 2`` snapshots over a run of known length."""
    if num_updates is None or not math.isfinite(num_updates):
        return 1
    return max(1, int(num_updates) // (capacity // 2))


class Snapshots:
    """Cumulative statistics on a grid of completion counts (merged by doubling).

    Each snapshot holds, at a completion instant: completions ``c``, time ``t``, model
    version, and per client the completions, the sums of ``D`` and ``D^2``, the sums of
    departure and arrival instants, the queue lengths, the busy time started so far and
    the in-service residuals (see the module docstring for the layout). Because every
    quantity is cumulative, dropping every other snapshot merges neighbouring intervals
    exactly.

    Args:
        interval: Initial grid step in completions.
        max_snapshots: Snapshots kept before the grid is thinned.
    """

    def __init__(self, interval: int, max_snapshots: int) -> None:
        self.interval = interval
        self.max_snapshots = max_snapshots
        self.rows: list[tuple[Any, ...]] = []

    def take(self, row: tuple[Any, ...]) -> int:
        """Store a snapshot; return the completion count of the next one."""
        self.rows.append(row)
        if len(self.rows) > self.max_snapshots:
            # Keep c = 0, 2m, 4m, ...: the grid becomes multiples of 2m.
            self.rows = self.rows[::2]
            self.interval *= 2
            last = self.rows[-1][0]
            return int(last + self.interval)
        return int(row[0] + self.interval)


@dataclass
class SnapshotState:
    """Cumulative state arrays at one instant, derived from a snapshot row.

    Attributes:
        completions: Tasks consumed.
        time: Clock at the snapshot.
        version: Model version.
        count: Completions per client.
        sum_delay: Sum of relative delays per client.
        sum_delay2: Sum of squared relative delays per client.
        area: Time integral of each client's queue length.
        busy: Busy time per client (in-service residuals removed).
        sum_cdelay: Sum of relative delays in completions per client (None: not recorded).
        sum_cdelay2: Sum of their squares (None: not recorded).
    """

    completions: int
    time: float
    version: int
    count: np.ndarray
    sum_delay: np.ndarray
    sum_delay2: np.ndarray
    area: np.ndarray
    busy: np.ndarray
    sum_cdelay: np.ndarray | None = None
    sum_cdelay2: np.ndarray | None = None


def snapshot_state(row: tuple[Any, ...], num_clients: int) -> SnapshotState:
    """Turn a snapshot row into cumulative arrays (queue areas and busy times exact)."""
    c, t, version, cnt, sd, sd2, dep, arr, lens, busy_started, heap = row[:11]
    residual = np.zeros(num_clients)
    for entry in heap:
        residual[entry[-1]] = entry[0] - t
    lens_a = np.asarray(lens, dtype=np.float64)
    extra = row[11:13]
    return SnapshotState(
        completions=int(c),
        time=float(t),
        version=int(version),
        count=np.asarray(cnt, dtype=np.float64),
        sum_delay=np.asarray(sd, dtype=np.float64),
        sum_delay2=np.asarray(sd2, dtype=np.float64),
        area=np.asarray(dep, dtype=np.float64) + lens_a * t - np.asarray(arr, dtype=np.float64),
        busy=np.asarray(busy_started, dtype=np.float64) - residual,
        sum_cdelay=np.asarray(extra[0], dtype=np.float64) if len(extra) == 2 else None,
        sum_cdelay2=np.asarray(extra[1], dtype=np.float64) if len(extra) == 2 else None,
    )


def batch_statistics(
    rows: list[tuple[Any, ...]],
    final_row: tuple[Any, ...],
    *,
    num_clients: int,
    warmup_fraction: float,
    num_batches: int,
    confidence: float,
    transient_end: int | None = None,
    servers: np.ndarray | None = None,
) -> dict[str, Any]:
    """Point estimates and batch-means intervals over the post-warm-up window.

    The first ``warmup_fraction`` of the completions is dropped; the rest of the grid is
    cut into ``num_batches`` batches of consecutive completions (fewer when the grid is
    short). Point estimates are ratios of totals; intervals come from
    :func:`~raysync.simulation.result.batch_ratio_ci`.

    A run too short to give steady-state numbers is not refused (its raw counts are still
    true) but says so in ``warnings``: no completion at all; a window too short for two
    batches (no confidence intervals); or a warm-up that ends before the start-up
    transient does (``transient_end``: the completion that consumed the last of the ``C``
    tasks present at time 0, or ``-1`` when some were never consumed).

    Args:
        rows: The snapshots (grid order).
        final_row: The snapshot at the end of the run.
        num_clients: ``n``.
        warmup_fraction: Fraction of the completions dropped before measuring.
        num_batches: Batches of the batch-means intervals.
        confidence: Level of the intervals.
        transient_end: See above; None when the backend does not track it.
        servers: Shape ``(num_clients,)``: how many clients each row pools (the flat
            path's tiers, whose busy times are tier totals); caps the utilisation
            interval's upper end. None: one client per row (cap 1).

    Returns:
        The statistics fields of :class:`~raysync.simulation.result.RunResult`, plus
        ``warnings`` (a tuple of one-line messages, empty for a sound run).
    """
    n = num_clients
    final = snapshot_state(final_row, n)
    total = final.completions
    warmup = math.ceil(warmup_fraction * total)
    warnings: list[str] = []
    grid = [r for r in rows if r[0] >= warmup]
    states: list[SnapshotState]
    if len(grid) >= 3:
        intervals = len(grid) - 1
        batches = min(num_batches, intervals)
        per_batch = intervals // batches
        start = len(grid) - 1 - batches * per_batch
        states = [snapshot_state(grid[start + b * per_batch], n) for b in range(batches + 1)]
    else:  # too short for batches: one window from the warm-up point to the end
        first = grid[0] if grid else rows[-1] if rows and rows[-1][0] < total else rows[0]
        states = [snapshot_state(first, n), final]
        batches = 0
    nb = len(states) - 1
    dt = np.array([states[b + 1].time - states[b].time for b in range(nb)])
    dc = np.array([states[b + 1].completions - states[b].completions for b in range(nb)], float)

    def diff(attr: str) -> np.ndarray:
        return np.stack(
            [getattr(states[b + 1], attr) - getattr(states[b], attr) for b in range(nb)]
        )

    count, sum_delay, sum_delay2 = diff("count"), diff("sum_delay"), diff("sum_delay2")
    area, busy = diff("area"), diff("busy")
    if all(st.sum_cdelay is not None for st in states):
        sum_cdelay, sum_cdelay2 = diff("sum_cdelay"), diff("sum_cdelay2")
    elif all(r[0] == r[2] for r in (*rows, final_row)):
        # One version per completion everywhere: the two units are the same count.
        sum_cdelay, sum_cdelay2 = sum_delay, sum_delay2
    else:  # buffered updates and no per-completion record: not measured
        sum_cdelay = np.full_like(sum_delay, np.nan)
        sum_cdelay2 = np.full_like(sum_delay2, np.nan)

    def ci(num: np.ndarray, den: np.ndarray) -> tuple[Any, Any, Any]:
        if batches >= 2:
            # Every ratio here is of non-negative sums (counts, delays, areas, busy
            # times), but the t-interval is symmetric: with heavy-tailed service (cv = 1e6)
            # its lower end fell below 0. The clipped interval keeps its coverage, since
            # the quantity itself is >= 0.
            est, lo, hi = batch_ratio_ci(num, den, confidence=confidence)
            return est, np.maximum(lo, 0.0), hi
        with np.errstate(invalid="ignore", divide="ignore"):
            est = num.sum(axis=0) / den.sum(axis=0)
        nan = np.full_like(np.asarray(est, dtype=float), np.nan)
        return est, nan, nan

    thr, thr_lo, thr_hi = ci(dc, dt)
    cthr, _, _ = ci(count, dt)
    delay, d_lo, d_hi = ci(sum_delay, count)
    qlen, q_lo, q_hi = ci(area, dt)
    util, u_lo, u_hi = ci(busy, dt)
    # A utilisation is a busy fraction in [0, 1] per server (a pooled tier of k clients
    # is k servers); the symmetric interval's upper end passed that for a saturated
    # client, and clipping keeps its coverage for the same reason.
    cap = 1.0 if servers is None else np.asarray(servers, dtype=np.float64)
    u_hi = np.minimum(u_hi, cap)
    # On Ray the busy times are wall-clock spans stamped by the executors and the window by
    # the server, so a saturated client measured 1.002; more than busy all the time is
    # clock skew, not load.
    util = np.minimum(util, cap)
    stale, s_lo, s_hi = ci(sum_delay.sum(axis=1), count.sum(axis=1))
    cdelay, cd_lo, cd_hi = ci(sum_cdelay, count)
    cstale, cs_lo, cs_hi = ci(sum_cdelay.sum(axis=1), count.sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        tot_cnt = count.sum(axis=0)
        second = sum_delay2.sum(axis=0) / tot_cnt
        std = np.sqrt(np.maximum(second - np.asarray(delay) ** 2, 0.0))
        csecond = sum_cdelay2.sum(axis=0) / tot_cnt
        cstd = np.sqrt(np.maximum(csecond - np.asarray(cdelay) ** 2, 0.0))
    window = int(dc.sum())
    start_c = int(states[0].completions)
    if total == 0:
        warnings.append(
            "no task completed: the run is too short to measure anything "
            "(every statistic is NaN); give it more updates or a longer time budget"
        )
    elif batches < 2 or window < num_batches:
        warnings.append(
            f"run too short to leave its warm-up: {total} completions, {start_c} dropped as "
            f"warm-up, {window} left in the measurement window, fewer than the "
            f"{num_batches} batches of the intervals (the numbers are not steady-state "
            f"estimates); run at least {math.ceil(num_batches / (1 - warmup_fraction)) + 1} "
            f"completions"
        )
    idle = np.flatnonzero(count.sum(axis=0) == 0) if total > 0 else np.zeros(0, dtype=int)
    if idle.size:
        named = ", ".join(str(int(i)) for i in idle[:5]) + (", ..." if idle.size > 5 else "")
        warnings.append(
            f"{idle.size} client(s) completed no task in the measurement window (clients "
            f"{named}): their delays are not measured (n/a in the table, NaN in the JSON), "
            "not zero; run longer"
        )
    if total > 0 and transient_end is not None and (transient_end < 0 or start_c < transient_end):
        when = (
            "were not all consumed by the end of the run"
            if transient_end < 0
            else f"were all consumed only at completion {transient_end}"
        )
        warnings.append(
            f"run too short to leave its warm-up: the warm-up ends at completion {start_c} "
            f"but the tasks present at the start {when}, so the statistics include the "
            f"start-up transient; run longer"
        )
    return {
        "throughput": float(thr),
        "throughput_ci": (float(thr_lo), float(thr_hi)),
        "client_throughput": np.asarray(cthr, dtype=np.float64),
        "utilization": np.asarray(util, dtype=np.float64),
        "utilization_ci": np.stack([u_lo, u_hi], axis=-1).astype(np.float64),
        "mean_queue_length": np.asarray(qlen, dtype=np.float64),
        "mean_queue_length_ci": np.stack([q_lo, q_hi], axis=-1).astype(np.float64),
        "mean_relative_delay": np.asarray(delay, dtype=np.float64),
        "relative_delay_std": np.asarray(std, dtype=np.float64),
        "relative_delay_ci": np.stack([d_lo, d_hi], axis=-1).astype(np.float64),
        "mean_staleness": float(stale),
        "mean_staleness_ci": (float(s_lo), float(s_hi)),
        "mean_completion_delay": np.asarray(cdelay, dtype=np.float64),
        "completion_delay_std": np.asarray(cstd, dtype=np.float64),
        "completion_delay_ci": np.stack([cd_lo, cd_hi], axis=-1).astype(np.float64),
        "mean_completion_staleness": float(cstale),
        "mean_completion_staleness_ci": (float(cs_lo), float(cs_hi)),
        "completed": final.count.astype(np.int64),
        "warmup_updates": start_c,
        "window_updates": window,
        "num_batches": int(batches if batches >= 2 else 0),
        "warnings": tuple(warnings),
    }
