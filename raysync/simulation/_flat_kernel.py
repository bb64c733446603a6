"""The flat queue-only event loop compiled with numba (issue 17, "a million clients").

:func:`run_queue_only_flat` is a drop-in for the engine's pure-Python
``_run_queue_only_flat``: same events, same statistics, same snapshot grid, same stop
rules, same return value. The per-event work runs in :func:`_advance`, a numba-compiled
function that moves the simulation forward until the next snapshot, the end of the run, or
until its pre-drawn random numbers run low; the Python driver then takes the snapshot (or
refills the draws) and calls it again. All state lives in numpy arrays between calls.

What the kernel supports (:func:`unsupported` names the first thing it does not, and the
engine then runs the Python loop):

* routers whose destinations are i.i.d. draws from a fixed ``p`` (exactly
  :class:`~raysync.routing.FixedRouter` or :class:`~raysync.routing.UniformRouter`; a
  subclass may route adaptively) or return-to-sender;
* service times of the four built-in i.i.d. kinds (exponential, deterministic, log-normal,
  trace), which can be drawn ahead of time in chunks per tier;
* no network delays, no server update time, and no config field it does not know.

Random streams (same law as the Python loop, other values):

* service times of tier ``k``: child ``(3, k)`` of ``SeedSequence(config.seed)`` (the
  Python flat loop's streams), drawn in chunks of this module's size, not the engine's
  ``block_size``;
* routing destinations: child :data:`ROUTING_SPAWN_KEY` ``= (17,)`` of
  ``SeedSequence(config.seed)``. A destination is drawn in two steps: its tier with
  probability ``m_k p_k`` (all clients of a tier share ``p_k``), then a client of the tier
  uniformly, so client ``j`` is drawn with probability exactly ``p_j``;
* the ``C`` initial clients: ``router.initial_clients(C)``, as in the Python loop.

Given the same draws the kernel reproduces the Python loop bit for bit (same heap
algorithm as :mod:`heapq`, same order of floating-point sums); the tests check that.

Counters that are unbounded integers in Python (sums of delays and of their squares) are
kept exactly as two int64 words ``hi * 2**62 + lo``.
"""

from __future__ import annotations

import functools
import itertools
import math
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from raysync.config import SystemConfig
    from raysync.routing._base import BaseRouter
    from raysync.simulation.engine import ProgressCallback
    from raysync.simulation.service_times import BaseServiceTime
    from raysync.simulation.statistics import Snapshots

__all__ = ["ROUTING_SPAWN_KEY", "Draws", "kernel_draws", "run_queue_only_flat", "unsupported"]

#: SeedSequence spawn key of the kernel's routing draws (17: this issue; the engine's own
#: keys are 0..3).
ROUTING_SPAWN_KEY = (17,)
# The engine's key of the per-tier service streams (engine._KEY_TIER_SERVICE).
_KEY_TIER_SERVICE = 3

#: Most tiers the kernel takes (each holds a buffer of pre-drawn service times).
MAX_KERNEL_TIERS = 8192
# Pre-drawn service times kept in all, and per tier at least / at most.
_SERVICE_VALUES = 1 << 21
_MIN_CHUNK = 256
_MAX_CHUNK = 8192
# Pre-drawn routing destinations.
_ROUTE_CHUNK = 1 << 16

# Return codes of _advance.
_AT_CHECK = 0
_AT_BUDGET = 1
_NEED_DRAWS = 2

# Integer state slots of _advance.
_C = 0
_DMAX = 1
_VMAX = 2
_SEQ = 3
_INITIAL_LEFT = 4
_TRANSIENT_END = 5
_HEAP_SIZE = 6
_ROUTE_POS = 7
_LOW = 8
_N_ISTATE = 9
# Rows of the two-word accumulators: sums of D and D^2 in completions, then in versions.
_SD, _SD2, _SV, _SV2 = 0, 1, 2, 3

_BASE = 1 << 62  # low word of an accumulator stays below this
_SPLIT = 1 << 31  # d < _SPLIT: d * d < 2**62 fits the low word


# --------------------------------------------------------------------------- numba


@functools.cache
def _numba() -> Any:
    """The numba module, or None when it is not installed (the engine then runs Python)."""
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency; guard for odd installs
        return None
    return numba


def _jit(func: Callable[..., Any]) -> Any:
    numba = _numba()
    if numba is None:  # pragma: no cover
        return func
    try:
        return numba.njit(cache=True, nogil=True)(func)
    except RuntimeError:  # no writable cache location (read-only install, no home directory)
        return numba.njit(nogil=True)(func)


def _add_impl(lo: np.ndarray, hi: np.ndarray, row: int, k: int, x: int) -> None:
    """``(hi, lo)[row, k] += x`` for ``0 <= x < 2**62``, carrying into the high word."""
    v = lo[row, k] + x
    if v >= _BASE:
        v -= _BASE
        hi[row, k] += 1
    lo[row, k] = v


_add = _jit(_add_impl)


def _add_square_impl(lo: np.ndarray, hi: np.ndarray, row: int, k: int, d: int) -> None:
    """``(hi, lo)[row, k] += d * d`` exactly for ``0 <= d < 2**40``."""
    if d < _SPLIT:
        _add(lo, hi, row, k, d * d)
        return
    # d = dh 2^31 + dl:  d^2 = dh^2 2^62 + dh dl 2^32 + dl^2, each part below 2^62.
    dh = d >> 31
    dl = d & (_SPLIT - 1)
    cross = dh * dl
    hi[row, k] += dh * dh + (cross >> 30)
    _add(lo, hi, row, k, (cross & ((1 << 30) - 1)) << 32)
    _add(lo, hi, row, k, dl * dl)


_add_square = _jit(_add_square_impl)


def _sift_down_impl(ht: np.ndarray, hs: np.ndarray, hc: np.ndarray, start: int, pos: int) -> None:
    """:func:`heapq._siftdown` on the heap of ``(ht, hs, hc)`` rows ordered by ``(t, seq)``."""
    nt = ht[pos]
    ns = hs[pos]
    nc = hc[pos]
    while pos > start:
        parent = (pos - 1) >> 1
        pt = ht[parent]
        if nt < pt or (nt == pt and ns < hs[parent]):
            ht[pos] = pt
            hs[pos] = hs[parent]
            hc[pos] = hc[parent]
            pos = parent
            continue
        break
    ht[pos] = nt
    hs[pos] = ns
    hc[pos] = nc


_sift_down = _jit(_sift_down_impl)


def _sift_up_impl(ht: np.ndarray, hs: np.ndarray, hc: np.ndarray, size: int, pos: int) -> None:
    """:func:`heapq._siftup`: the same moves, so the array equals heapq's list."""
    start = pos
    nt = ht[pos]
    ns = hs[pos]
    nc = hc[pos]
    child = 2 * pos + 1
    while child < size:
        right = child + 1
        if right < size and not (
            ht[child] < ht[right] or (ht[child] == ht[right] and hs[child] < hs[right])
        ):
            child = right
        ht[pos] = ht[child]
        hs[pos] = hs[child]
        hc[pos] = hc[child]
        pos = child
        child = 2 * pos + 1
    ht[pos] = nt
    hs[pos] = ns
    hc[pos] = nc
    _sift_down(ht, hs, hc, start, pos)


_sift_up = _jit(_sift_up_impl)


def _heapify_impl(ht: np.ndarray, hs: np.ndarray, hc: np.ndarray, size: int) -> None:
    """:func:`heapq.heapify` on the first ``size`` rows (the same sift-ups, same result)."""
    for pos in range(size // 2 - 1, -1, -1):
        _sift_up(ht, hs, hc, size, pos)


_heapify = _jit(_heapify_impl)


def _advance_impl(
    tier_of: np.ndarray,
    head: np.ndarray,
    tail: np.ndarray,
    cnt: np.ndarray,
    slot_m: np.ndarray,
    slot_next: np.ndarray,
    lens: np.ndarray,
    arr: np.ndarray,
    tcnt: np.ndarray,
    acc_lo: np.ndarray,
    acc_hi: np.ndarray,
    dep: np.ndarray,
    busy: np.ndarray,
    ht: np.ndarray,
    hs: np.ndarray,
    hc: np.ndarray,
    sbuf: np.ndarray,
    spos: np.ndarray,
    route: np.ndarray,
    rts: bool,
    istate: np.ndarray,
    fstate: np.ndarray,
    check: float,
    budget: float,
    big: int,
) -> int:
    """Run events until ``c >= check``, the budget, or low pre-drawn numbers.

    The body is the engine's ``_run_queue_only_flat`` loop line for line, on arrays.

    Args:
        tier_of: Tier of each client, shape ``(n,)``.
        head: Slot of each client's first queued task + 1 (0: empty), shape ``(n,)``.
        tail: Slot of each client's last queued task + 1, shape ``(n,)``.
        cnt: Completions per client, shape ``(n,)``.
        slot_m: Completions at the dispatch of each slot's task, shape ``(C,)``.
        slot_next: Next slot in the same queue + 1 (0: none), shape ``(C,)``.
        lens: Queued tasks per tier, shape ``(T,)``.
        arr: Sum of arrival instants per tier, shape ``(T,)``.
        tcnt: Completions per tier, shape ``(T,)``.
        acc_lo: Low words of the delay sums, shape ``(4, T)`` (rows _SD, _SD2, _SV, _SV2).
        acc_hi: High words (units of 2**62), shape ``(4, T)``.
        dep: Sum of departure instants per tier, shape ``(T,)``.
        busy: Service time started per tier, shape ``(T,)``.
        ht: Heap: completion instants, shape ``(C,)`` (first ``istate[_HEAP_SIZE]`` used).
        hs: Heap: sequence numbers (ties in time go first-pushed first).
        hc: Heap: clients.
        sbuf: Pre-drawn service times per tier, shape ``(T, L)``.
        spos: Next unused column of each tier's row of ``sbuf``, shape ``(T,)``.
        route: Pre-drawn destinations (unused with return to sender).
        rts: Return to sender: the finished client gets the next task.
        istate: Integer state (slots ``_C`` ... ``_LOW``), updated in place.
        fstate: ``[t, end_time]``, updated in place.
        check: Return once this many completions are done.
        budget: Virtual-time budget.
        big: Completions per model version (FedBuff's ``B``; 1 otherwise).

    Returns:
        ``_AT_CHECK``, ``_AT_BUDGET`` or ``_NEED_DRAWS`` (nothing of the next event done).
    """
    width = sbuf.shape[1]
    nroute = route.shape[0]
    c = istate[_C]
    dmax = istate[_DMAX]
    vmax = istate[_VMAX]
    seq = istate[_SEQ]
    initial_left = istate[_INITIAL_LEFT]
    transient_end = istate[_TRANSIENT_END]
    size = istate[_HEAP_SIZE]
    rpos = istate[_ROUTE_POS]
    low = istate[_LOW]
    t = fstate[0]
    end_time = fstate[1]
    buffered = big > 1
    code = _AT_CHECK
    while True:
        if low != 0 or (not rts and rpos >= nroute):
            code = _NEED_DRAWS
            break
        t = ht[0]
        i = hc[0]
        if t > budget:
            end_time = budget
            code = _AT_BUDGET
            break
        slot1 = head[i]
        slot = slot1 - 1
        m = slot_m[slot]
        rest = slot_next[slot]
        head[i] = rest
        d = c - m
        k = tier_of[i]
        if buffered:
            dv = c // big - m // big
            _add(acc_lo, acc_hi, _SV, k, dv)
            _add_square(acc_lo, acc_hi, _SV2, k, dv)
            if dv > vmax:
                vmax = dv
        if m == 0:
            initial_left -= 1
            if initial_left == 0:
                transient_end = c + 1
        c += 1
        cnt[i] += 1
        tcnt[k] += 1
        _add(acc_lo, acc_hi, _SD, k, d)
        _add_square(acc_lo, acc_hi, _SD2, k, d)
        dep[k] += t
        lens[k] -= 1
        if d > dmax:
            dmax = d
        if rts:
            j = i
        else:
            j = route[rpos]
            rpos += 1
        kj = tier_of[j]
        slot_m[slot] = c  # the completed task's slot carries its replacement
        slot_next[slot] = 0
        arr[kj] += t
        lens[kj] += 1
        if head[j] != 0:
            slot_next[tail[j] - 1] = slot1
            tail[j] = slot1
            started = False
        else:
            head[j] = slot1
            tail[j] = slot1
            started = True
        if rest != 0:
            s = sbuf[k, spos[k]]
            spos[k] += 1
            if spos[k] >= width - 1:
                low = 1
            busy[k] += s
            ht[0] = t + s  # heapreplace
            hs[0] = seq
            hc[0] = i
            _sift_up(ht, hs, hc, size, 0)
            seq += 1
            if started:
                s = sbuf[kj, spos[kj]]
                spos[kj] += 1
                if spos[kj] >= width - 1:
                    low = 1
                busy[kj] += s
                ht[size] = t + s  # heappush
                hs[size] = seq
                hc[size] = j
                size += 1
                _sift_down(ht, hs, hc, 0, size - 1)
                seq += 1
        elif started:
            s = sbuf[kj, spos[kj]]
            spos[kj] += 1
            if spos[kj] >= width - 1:
                low = 1
            busy[kj] += s
            ht[0] = t + s
            hs[0] = seq
            hc[0] = j
            _sift_up(ht, hs, hc, size, 0)
            seq += 1
        else:
            size -= 1  # heappop
            if size > 0:
                ht[0] = ht[size]
                hs[0] = hs[size]
                hc[0] = hc[size]
                _sift_up(ht, hs, hc, size, 0)
        if c >= check:
            end_time = t
            code = _AT_CHECK
            break
    istate[_C] = c
    istate[_DMAX] = dmax
    istate[_VMAX] = vmax
    istate[_SEQ] = seq
    istate[_INITIAL_LEFT] = initial_left
    istate[_TRANSIENT_END] = transient_end
    istate[_HEAP_SIZE] = size
    istate[_ROUTE_POS] = rpos
    istate[_LOW] = low
    fstate[0] = t
    fstate[1] = end_time
    return code


_advance = _jit(_advance_impl)


def _fill_route_impl(
    cdf: np.ndarray,
    counts: np.ndarray,
    starts: np.ndarray,
    members: np.ndarray,
    uniforms: np.ndarray,
    out: np.ndarray,
) -> None:
    """Destinations from pairs of uniforms: a tier by its mass, then a client of it uniformly.

    Args:
        cdf: Cumulative tier masses ``sum_{l <= k} m_l p_l``, shape ``(T,)``, last 1.
        counts: Clients per tier ``m_k``, shape ``(T,)``.
        starts: Offset of each tier in ``members``, shape ``(T,)``.
        members: Clients sorted by tier, shape ``(n,)``.
        uniforms: Uniforms on ``[0, 1)``, shape ``(2 * size,)``.
        out: Destinations, shape ``(size,)``, written.
    """
    last = cdf.shape[0] - 1
    for r in range(out.shape[0]):
        u = uniforms[2 * r]
        lo = 0
        hi = last
        while lo < hi:  # first tier whose cdf exceeds u (searchsorted side="right")
            mid = (lo + hi) >> 1
            if cdf[mid] > u:
                hi = mid
            else:
                lo = mid + 1
        m = counts[lo]
        within = int(uniforms[2 * r + 1] * m)
        if within >= m:  # u * m rounds up to m only for u within an ulp of 1
            within = m - 1
        out[r] = members[starts[lo] + within]


_fill_route = _jit(_fill_route_impl)


# --------------------------------------------------------------------------- dispatch rule

# Fields of the config the kernel knows; any other field must hold its default.
_KNOWN_SYSTEM_FIELDS = frozenset(
    {"clients", "concurrency", "routing", "algorithm", "data", "model", "run", "runtime", "seed"}
)
_KNOWN_CLIENT_FIELDS = frozenset(
    {"service_time", "num_cpus", "num_gpus", "resources", "name", "power"}
)


def _default_of(f: Any) -> Any:
    from dataclasses import MISSING

    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def unsupported(
    config: SystemConfig, router: BaseRouter, service_times: Sequence[BaseServiceTime]
) -> str | None:
    """Why the compiled kernel cannot run this flat queue-only run, or None if it can.

    Args:
        config: The run's config (in the engine's time unit).
        router: The bound router.
        service_times: One distribution per tier.

    Returns:
        None, or one line naming the feature the kernel does not know (the engine then
        runs its Python loop).
    """
    from raysync.routing import FixedRouter, ReturnToSenderRouter, UniformRouter
    from raysync.simulation.service_times import (
        DeterministicServiceTime,
        ExponentialServiceTime,
        LogNormalServiceTime,
        TraceServiceTime,
    )

    if _numba() is None:
        return "numba is not installed"
    kind = type(router)
    if kind not in (FixedRouter, UniformRouter, ReturnToSenderRouter):
        return f"router {kind.__name__} is not a fixed-p or return-to-sender router"
    if kind is not ReturnToSenderRouter and router.routing_probabilities() is None:
        return f"router {kind.__name__} gives no routing probabilities"
    known = (
        ExponentialServiceTime,
        DeterministicServiceTime,
        LogNormalServiceTime,
        TraceServiceTime,
    )
    for st in service_times:
        if type(st) not in known:
            return f"service time {type(st).__name__} cannot be drawn ahead in chunks"
    if len(service_times) > MAX_KERNEL_TIERS:
        return f"{len(service_times)} tiers, more than the kernel's {MAX_KERNEL_TIERS}"
    for f in fields(config):
        if f.name not in _KNOWN_SYSTEM_FIELDS and getattr(config, f.name) != _default_of(f):
            return f"config field {f.name!r} is set (not known to the kernel)"
    # Clients of one table are one object, side by side: groupby(id) runs at C speed.
    for _, group in itertools.groupby(config.clients, key=id):
        client = next(group)
        for f in fields(client):
            if f.name not in _KNOWN_CLIENT_FIELDS and getattr(client, f.name) != _default_of(f):
                return f"client field {f.name!r} is set (not known to the kernel)"
    return None


# --------------------------------------------------------------------------- draws


@dataclass
class Draws:
    """Where the kernel's random numbers come from.

    Attributes:
        service: One callable per tier: ``service[k](size)`` returns the tier's next
            ``size`` service times (a float64 array), in stream order.
        route: ``route(size)`` returns the next ``size`` destinations (an int64 array), or
            None for return to sender.
    """

    service: list[Callable[[int], np.ndarray]]
    route: Callable[[int], np.ndarray] | None


def kernel_draws(
    config: SystemConfig,
    router: BaseRouter,
    tier_of: np.ndarray,
    service_times: Sequence[BaseServiceTime],
) -> Draws:
    """The kernel's production streams (see the module docstring for the keys and law).

    Args:
        config: The run's config (its ``seed``).
        router: The bound router (its ``routing_probabilities()``; None: return to sender).
        tier_of: Tier of each client, shape ``(n,)``.
        service_times: One distribution per tier.

    Returns:
        The draws.
    """
    seed = config.seed

    def service(k: int) -> Callable[[int], np.ndarray]:
        st = service_times[k]
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_KEY_TIER_SERVICE, k)))
        return lambda size: np.asarray(st.sample(rng, size=size), dtype=np.float64)

    p = router.routing_probabilities()
    if p is None:
        return Draws([service(k) for k in range(len(service_times))], None)
    tiers = len(service_times)
    counts = np.bincount(tier_of, minlength=tiers).astype(np.int64)
    members = np.argsort(tier_of, kind="stable").astype(np.int32)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    # Every client of a tier has the same p (tiers are built on it): the tier's mass.
    mass = counts * np.asarray(p, dtype=np.float64)[members[starts]]
    cdf = np.cumsum(mass)
    cdf /= cdf[-1]
    cdf[-1] = 1.0
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=ROUTING_SPAWN_KEY))

    def route(size: int) -> np.ndarray:
        out = np.empty(size, dtype=np.int64)
        _fill_route(cdf, counts, starts, members, rng.random(2 * size), out)
        return out

    return Draws([service(k) for k in range(tiers)], route)


# --------------------------------------------------------------------------- the driver


def run_queue_only_flat(
    *,
    config: SystemConfig,
    router: BaseRouter,
    tier_of: Any,
    service_times: Sequence[BaseServiceTime],
    snapshots: Snapshots,
    max_updates: float,
    budget: float,
    progress: ProgressCallback | None,
    buffer_size: int = 1,
    draws: Draws | None = None,
    compiled: bool = True,
) -> tuple[tuple[Any, ...], Any, dict[str, Any], array[int]]:
    """The engine's ``_run_queue_only_flat`` with the event loop compiled.

    Args:
        config: The run's config (in the engine's time unit).
        router: The bound router (fixed ``p`` or return to sender, see :func:`unsupported`).
        tier_of: Tier of each client (an ``array('i')`` or int32 array of length ``n``).
        service_times: One distribution per tier.
        snapshots: The snapshot grid to fill.
        max_updates: Model versions to run (``inf``: no limit).
        budget: Virtual-time budget (``inf``: no limit).
        progress: Called as ``progress(updates, time)`` at each snapshot and at the end.
        buffer_size: Completions per model version (FedBuff's ``B``).
        draws: Random numbers to use instead of :func:`kernel_draws` (tests).
        compiled: False runs the same kernel as plain Python (``py_func``; tests).

    Returns:
        ``(final_row, curve, extras, count)`` exactly as the engine's Python loop: rows
        with the tiers as "clients" and the per-client completion counts (``array('q')``
        of length ``n``).

    Raises:
        ConfigError: ``router.initial_clients`` refuses the concurrency.
    """
    from raysync.simulation.engine import _Curve

    n = config.num_clients
    concurrency = config.concurrency
    big = buffer_size
    tiers = len(service_times)
    tier_np = (
        np.frombuffer(tier_of, dtype=np.int32) if not isinstance(tier_of, np.ndarray) else tier_of
    )
    tier_np = np.ascontiguousarray(tier_np, dtype=np.int32)
    if draws is None:
        draws = kernel_draws(config, router, tier_np, service_times)
    advance = _advance if compiled else getattr(_advance, "py_func", _advance)

    width = max(_MIN_CHUNK, min(_MAX_CHUNK, _SERVICE_VALUES // max(1, tiers)))
    sbuf = np.empty((tiers, width), dtype=np.float64)
    spos = np.full(tiers, width, dtype=np.int64)  # empty until the first refill

    def refill_service(k: int) -> None:
        left = width - int(spos[k])
        sbuf[k, :left] = sbuf[k, width - left :]
        fresh = np.asarray(draws.service[k](width - left), dtype=np.float64)
        if fresh.shape != (width - left,):  # a broken test source, not a user error
            raise RuntimeError(f"service draws of tier {k} have shape {fresh.shape}")
        sbuf[k, left:] = fresh
        spos[k] = 0

    rts = draws.route is None
    route = np.zeros(0 if rts else _ROUTE_CHUNK, dtype=np.int64)

    def refill_route(pos: int) -> None:
        assert draws is not None and draws.route is not None
        left = len(route) - pos
        route[:left] = route[pos:]
        route[left:] = draws.route(len(route) - left)

    head = np.zeros(n, dtype=np.int64)
    tail = np.zeros(n, dtype=np.int64)
    cnt = np.zeros(n, dtype=np.int64)
    slot_m = np.zeros(concurrency, dtype=np.int64)  # every initial task: dispatched at c = 0
    slot_next = np.zeros(concurrency, dtype=np.int64)
    arr = np.zeros(tiers, dtype=np.float64)
    tcnt = np.zeros(tiers, dtype=np.int64)
    acc_lo = np.zeros((4, tiers), dtype=np.int64)
    acc_hi = np.zeros((4, tiers), dtype=np.int64)
    dep = np.zeros(tiers, dtype=np.float64)
    # The initial state of the Python loop, built with array operations (C = n = 10^6 with
    # return to sender): slot s holds the s-th initial task; a client's tasks are chained in
    # slot order; the first task of each client starts service, drawing from its tier's
    # stream in slot order; the heap is heapq's heapify of (end, seq, client), seq in
    # slot order.
    initial = np.asarray(router.initial_clients(concurrency), dtype=np.int64).reshape(-1)
    lens = np.bincount(tier_np[initial], minlength=tiers).astype(np.int64)
    order = np.argsort(initial, kind="stable")
    ranked = initial[order]
    same = ranked[1:] == ranked[:-1]
    slot_next[order[:-1][same]] = order[1:][same] + 1
    group_first = np.flatnonzero(np.concatenate(([True], ~same)))
    group_last = np.flatnonzero(np.concatenate((~same, [True])))
    head[ranked[group_first]] = order[group_first] + 1
    tail[ranked[group_first]] = order[group_last] + 1
    started = initial[np.sort(order[group_first])]  # clients in service, in slot order
    started_tier = tier_np[started]
    first_end = np.empty(started.size, dtype=np.float64)
    busy = np.zeros(tiers, dtype=np.float64)
    for k in np.unique(started_tier).tolist():
        where = np.flatnonzero(started_tier == k)
        # The tier's buffer is still empty: its first draws come straight from the source.
        durations = np.asarray(draws.service[k](where.size), dtype=np.float64)
        first_end[where] = durations
        busy[k] = np.cumsum(durations)[-1]  # left to right, as the Python loop adds them
    size = started.size
    ht = np.zeros(concurrency, dtype=np.float64)
    hs = np.zeros(concurrency, dtype=np.int64)
    hc = np.zeros(concurrency, dtype=np.int64)
    ht[:size] = first_end
    hs[:size] = np.arange(size)
    hc[:size] = started
    _heapify(ht, hs, hc, size)
    istate = np.zeros(_N_ISTATE, dtype=np.int64)
    istate[_SEQ] = size
    istate[_INITIAL_LEFT] = concurrency
    istate[_TRANSIENT_END] = -1
    istate[_HEAP_SIZE] = size
    istate[_ROUTE_POS] = len(route)
    istate[_LOW] = 1  # fill every tier's draws before the first call
    fstate = np.zeros(2, dtype=np.float64)
    buffered = big > 1
    curve = _Curve([], [], [], [], [], [])

    def exact(row_index: int) -> list[int]:
        return [
            int(h) * _BASE + int(lo)
            for h, lo in zip(acc_hi[row_index].tolist(), acc_lo[row_index].tolist(), strict=True)
        ]

    def row(done: int, now: float) -> tuple[Any, ...]:
        sd, sd2 = exact(_SD), exact(_SD2)
        vs, vs2 = (exact(_SV), exact(_SV2)) if buffered else (sd, sd2)
        size = int(istate[_HEAP_SIZE])
        adjusted = busy.copy()
        if size:
            who = tier_np[hc[:size]]
            adjusted -= np.bincount(who, weights=ht[:size] - now, minlength=tiers)
        return (
            done, now, done // big, tcnt.tolist(), vs, vs2, dep.tolist(), arr.tolist(),
            lens.tolist(), adjusted, [], sd, sd2,
        )  # fmt: skip

    next_snap = snapshots.take(row(0, 0.0))
    stop_at = max_updates * big
    check = min(next_snap, stop_at)
    end_time = 0.0
    while True:
        if int(istate[_LOW]) or (not rts and istate[_ROUTE_POS] >= len(route)):
            for k in np.flatnonzero(width - spos < width // 4).tolist():
                refill_service(k)
            istate[_LOW] = 0
            if not rts and len(route) - istate[_ROUTE_POS] < len(route) // 4:
                refill_route(int(istate[_ROUTE_POS]))
                istate[_ROUTE_POS] = 0
        code = advance(
            tier_np, head, tail, cnt, slot_m, slot_next, lens, arr, tcnt, acc_lo, acc_hi,
            dep, busy, ht, hs, hc, sbuf, spos, route, rts, istate, fstate, float(check),
            float(budget), big,
        )  # fmt: skip
        if code == _NEED_DRAWS:
            continue
        end_time = float(fstate[1])
        if code == _AT_BUDGET:
            break
        c = int(istate[_C])
        if c >= stop_at:
            break
        t = float(fstate[0])
        next_snap = snapshots.take(row(c, t))
        check = min(next_snap, stop_at)
        curve.times.append(t)
        curve.updates.append(c // big)
        if progress is not None:
            progress(c // big, t)
    c = int(istate[_C])
    final = row(c, end_time)
    if c > snapshots.rows[-1][0] and c % snapshots.interval == 0:
        snapshots.take(final)  # the end lies on the grid: it closes the last batch
    curve.times.append(end_time)
    curve.updates.append(c // big)
    nan = [math.nan] * len(curve.times)
    curve.test_loss, curve.test_accuracy = nan, nan[:]
    curve.val_loss, curve.val_accuracy = nan[:], nan[:]
    if progress is not None:
        progress(c // big, end_time)
    dmax = int(istate[_DMAX])
    extras = {
        "max_delay": int(istate[_VMAX]) if buffered else dmax,
        "max_completion_delay": dmax,
        "transient_end": int(istate[_TRANSIENT_END]),
    }
    return final, curve, extras, array("q", cnt.tobytes())
