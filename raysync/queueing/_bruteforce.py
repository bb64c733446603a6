"""Brute-force reference: the continuous-time Markov chain of the network, solved exactly.

Nothing here uses product form, MVA or the arrival theorem; it is the independent
reference the tests compare the analytic solvers with. Small networks only.

1. **Counts chain.** Every station (clients, latency stations, server) is modelled
   explicitly; the state is the number of tasks at each station (``sum = C``). FIFO
   stations (clients, server) serve at their rate when busy; an infinite-server station
   with ``k`` tasks completes at rate ``k / mean``. The global latency station sits before
   the clients and routes a leaving task to client ``j`` with probability ``p_j``
   (exact lumping: destinations are i.i.d. and independent of the delays); per-client
   latency stations sit after their client (uplink). The stationary distribution solves
   ``pi Q = 0, sum pi = 1`` (sparse LU). Throughput is the rate of updates, queue lengths
   and utilisations are moments of ``pi``.
2. **Tagged-task chain** for ``E[D_i]``. Right after an update, the pre-update state is
   distributed as ``pi(x) * rate of the update from x`` (normalised); a tagged task is then
   dispatched to client ``i``. The absorbing chain follows the other tasks' counts plus the
   tagged task's station and its FIFO position (tasks ahead of it); it is absorbed when the
   tagged task's own update happens. ``E[D_i]`` is the expected number of *other* updates
   before absorption: with transient generator ``Q_T`` and update rate ``r(s)``, the vector
   ``h = (-Q_T)^{-1} r`` gives it from every start state.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from raysync.queueing._common import assemble
from raysync.queueing.network import ClosedNetwork
from raysync.queueing.result import QueueingResult

__all__ = ["DEFAULT_MAX_STATES", "solve_bruteforce", "stationary_distribution"]

DEFAULT_MAX_STATES = 50_000
"""Largest state space (counts chain or tagged-task chain) the brute force accepts.

The sparse LU's fill-in makes the solve superlinear: a tagged-task chain of 35,420 states
(3 clients and a server station, C = 20) takes ~5 s, one of ~150,000 states (C = 30) ran
for more than 5 minutes, which to a user of ``analyze --method bruteforce`` is a hang
(found by the slow fuzz tier). Brute force is the small-network check of MVA and Buzen.
"""

#: Fill-reducing ordering for SuperLU: minimum degree on ``A^T + A`` fills these chains
#: 5-7x less than the default COLAMD (35,420 states: 5.6 s against 38.8 s, same residual).
_ORDERING = "MMD_AT_PLUS_A"

_UPDATE = -1

State = tuple[int, ...]
TaggedState = tuple[int, int, int, State]


@dataclass(frozen=True)
class _Layout:
    """Stations of the explicit Markov model.

    Attributes:
        n: Number of clients (stations ``0..n-1``).
        rates: Per-task rate of each station (``mu`` for FIFO, ``1 / mean`` for delays).
        fifo: Whether the station is single-server FIFO (else infinite-server).
        nxt: Deterministic next station, or ``_UPDATE`` (the task is consumed). Unused for
            the global latency station, which routes by ``p``.
        global_station: Index of the global latency station, or -1.
        server_station: Index of the server station, or -1.
        uplink: Index of client ``i``'s latency station, or -1.
        p: Routing probabilities.
    """

    n: int
    rates: tuple[float, ...]
    fifo: tuple[bool, ...]
    nxt: tuple[int, ...]
    global_station: int
    server_station: int
    uplink: tuple[int, ...]
    p: tuple[float, ...]

    @property
    def m(self) -> int:
        return len(self.rates)

    def dispatch(self) -> list[tuple[float, int]]:
        """Where a freshly dispatched task goes: (probability, station)."""
        if self.global_station >= 0:
            return [(1.0, self.global_station)]
        return [(pj, j) for j, pj in enumerate(self.p)]

    def leave(self, k: int) -> list[tuple[float, int, bool]]:
        """Where a (non-tagged) task leaving station ``k`` goes: (prob, station, update)."""
        if k == self.global_station:
            return [(pj, j, False) for j, pj in enumerate(self.p)]
        if self.nxt[k] == _UPDATE:
            return [(prob, s, True) for prob, s in self.dispatch()]
        return [(1.0, self.nxt[k], False)]

    def rate(self, k: int, count: int) -> float:
        """Total completion rate of station ``k`` holding ``count`` tasks."""
        if count == 0:
            return 0.0
        return self.rates[k] if self.fifo[k] else self.rates[k] * count


def _layout(network: ClosedNetwork) -> _Layout:
    n = network.n_clients
    rates = [float(v) for v in network.mu]
    fifo = [True] * n
    global_station = -1
    if network.latency > 0:
        global_station = len(rates)
        rates.append(1.0 / network.latency)
        fifo.append(False)
    uplink = [-1] * n
    if network.client_latency is not None:
        for i, mean in enumerate(network.client_latency):
            if mean > 0:
                uplink[i] = len(rates)
                rates.append(1.0 / float(mean))
                fifo.append(False)
    server_station = -1
    if network.server_rate is not None:
        server_station = len(rates)
        rates.append(float(network.server_rate))
        fifo.append(True)
    after_uplink = server_station if server_station >= 0 else _UPDATE
    nxt = [_UPDATE] * len(rates)
    for i in range(n):
        nxt[i] = uplink[i] if uplink[i] >= 0 else after_uplink
        if uplink[i] >= 0:
            nxt[uplink[i]] = after_uplink
    return _Layout(
        n=n,
        rates=tuple(rates),
        fifo=tuple(fifo),
        nxt=tuple(nxt),
        global_station=global_station,
        server_station=server_station,
        uplink=tuple(uplink),
        p=tuple(float(v) for v in network.p),
    )


def _compositions(total: int, parts: int) -> Iterator[State]:
    """All tuples of ``parts`` non-negative integers summing to ``total``."""
    for bars in itertools.combinations(range(total + parts - 1), parts - 1):
        previous = -1
        counts = []
        for bar in bars:
            counts.append(bar - previous - 1)
            previous = bar
        counts.append(total + parts - 1 - previous - 1)
        yield tuple(counts)


def _moved(x: State, src: int, dst: int) -> State:
    y = list(x)
    y[src] -= 1
    if dst >= 0:
        y[dst] += 1
    return tuple(y)


def _tagged_size_bound(layout: _Layout, c: int) -> int:
    """Number of states of the tagged-task chain (reachable ones are at most this many).

    Others' counts: ``N1`` compositions of ``C - 1``; times the tagged task's station, its
    position in a FIFO queue (``sum_x (x_k + 1) = N1 (1 + (C - 1) / m)``) or its
    destination while in the global latency station.
    """
    m = layout.m
    n1 = math.comb(c - 1 + m - 1, m - 1)
    bound = 0
    for k in range(m):
        per = n1 + (n1 * (c - 1)) // m if layout.fifo[k] else n1
        bound += per * (layout.n if k == layout.global_station else 1)
    return bound


def _count_text(size: int) -> str:
    """``size`` in digits, or ``~1.23e+456`` for a count too long to print.

    ``str`` of an int over 4300 digits raises (CPython's int-to-str limit), and a long
    exact count says no more than its order of magnitude.
    """
    if size < 10**15:
        return str(size)
    exponent = math.log10(size)  # exact enough for big ints, no conversion to str
    whole = math.floor(exponent)
    return f"~{10.0 ** (exponent - whole):.3g}e+{whole}"


def _check_size(size: int, what: str, network: ClosedNetwork, max_states: int) -> None:
    if size > max_states:
        raise ValueError(
            f"bruteforce {what} has {_count_text(size)} states for n={network.n_clients}, "
            f"C={network.concurrency}, more than max_states={max_states}; "
            "use method 'mva' or 'buzen' (method= in Python, --method on the command line)"
        )


def stationary_distribution(
    network: ClosedNetwork, *, max_states: int = DEFAULT_MAX_STATES
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Solve the counts chain of ``network`` for its stationary distribution.

    Stations are ordered clients first, then the global latency station (if
    ``latency > 0``), the per-client latency stations with a positive mean, and the server.

    Args:
        network: A small closed network.
        max_states: Refuse a state space larger than this.

    Returns:
        ``(states, pi)``: an integer array ``(S, stations)`` of task counts and their
        stationary probabilities ``(S,)``.

    Raises:
        ValueError: The state space would exceed ``max_states``.
    """
    states, pi, _ = _stationary(network, _layout(network), max_states)
    return np.array(states, dtype=np.int64), pi


def _stationary(
    network: ClosedNetwork, layout: _Layout, max_states: int
) -> tuple[list[State], NDArray[np.float64], dict[State, int]]:
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    c, m = network.concurrency, layout.m
    _check_size(math.comb(c + m - 1, m - 1), "counts chain", network, max_states)
    states = list(_compositions(c, m))
    index = {s: j for j, s in enumerate(states)}
    size = len(states)
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    out = np.zeros(size)
    for j, x in enumerate(states):
        for k in range(m):
            rate = layout.rate(k, x[k])
            if rate == 0.0:
                continue
            for prob, dst, _ in layout.leave(k):
                target = index[_moved(x, k, dst)]
                if target == j:
                    continue
                rows.append(j)
                cols.append(target)
                vals.append(rate * prob)
                out[j] += rate * prob
    # Solve Q^T pi = 0 with the last balance equation replaced by sum(pi) = 1.
    t_rows = np.array(cols + list(range(size)), dtype=np.int64)
    t_cols = np.array(rows + list(range(size)), dtype=np.int64)
    t_vals = np.concatenate([np.array(vals), -out])
    keep = t_rows != size - 1
    t_rows = np.concatenate([t_rows[keep], np.full(size, size - 1)])
    t_cols = np.concatenate([t_cols[keep], np.arange(size)])
    t_vals = np.concatenate([t_vals[keep], np.ones(size)])
    matrix = sp.csc_matrix((t_vals, (t_rows, t_cols)), shape=(size, size))
    rhs = np.zeros(size)
    rhs[-1] = 1.0
    pi = np.atleast_1d(spla.spsolve(matrix, rhs, permc_spec=_ORDERING))
    pi = np.clip(pi, 0.0, None)
    pi /= pi.sum()
    return states, pi, index


def _tagged_delays(
    network: ClosedNetwork,
    layout: _Layout,
    states: list[State],
    pi: NDArray[np.float64],
    max_states: int,
) -> NDArray[np.float64]:
    """``E[D_i]`` from the tagged-task absorbing chain (see the module docstring)."""
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    n, m = layout.n, layout.m
    index: dict[TaggedState, int] = {}
    order: list[TaggedState] = []

    def intern(s: TaggedState) -> int:
        j = index.get(s)
        if j is None:
            j = len(order)
            _check_size(j + 1, "tagged-task chain", network, max_states)
            index[s] = j
            order.append(s)
        return j

    # Initial distribution: pre-update state weighted by the update rate, then dispatch.
    initial: list[dict[int, float]] = [{} for _ in range(n)]
    for x, weight in zip(states, pi, strict=True):
        if weight <= 0.0:
            continue
        for k in range(m):
            if layout.nxt[k] != _UPDATE or k == layout.global_station:
                continue
            rate = layout.rate(k, x[k])
            if rate == 0.0:
                continue
            others = _moved(x, k, -1)
            for i in range(n):
                if layout.global_station >= 0:
                    start: TaggedState = (layout.global_station, i, 0, others)
                else:
                    start = (i, -1, others[i], others)
                j = intern(start)
                initial[i][j] = initial[i].get(j, 0.0) + float(weight) * rate

    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    out_rates: list[float] = []
    rewards: list[float] = []
    cursor = 0
    while cursor < len(order):
        loc, dest, ahead, x = order[cursor]
        j = cursor
        cursor += 1
        total = 0.0
        reward = 0.0
        for k in range(m):
            if x[k] == 0:
                continue
            new_ahead = ahead
            if layout.fifo[k] and k == loc:
                if ahead == 0:
                    continue  # the tagged task is in service; the others wait
                new_ahead = ahead - 1
            rate = layout.rate(k, x[k])
            total += rate
            for prob, dst, update in layout.leave(k):
                target = intern((loc, dest, new_ahead, _moved(x, k, dst)))
                rows.append(j)
                cols.append(target)
                vals.append(rate * prob)
                if update:
                    reward += rate * prob
        # the tagged task itself
        if not layout.fifo[loc] or ahead == 0:
            rate = layout.rates[loc]
            total += rate
            nxt = dest if loc == layout.global_station else layout.nxt[loc]
            if nxt != _UPDATE:
                new_ahead = x[nxt] if layout.fifo[nxt] else 0
                # the destination only matters while the task is in the global station
                target = intern((nxt, -1, new_ahead, x))
                rows.append(j)
                cols.append(target)
                vals.append(rate)
        out_rates.append(total)
        rewards.append(reward)

    size = len(order)
    off = sp.csc_matrix((np.array(vals), (np.array(rows), np.array(cols))), shape=(size, size))
    matrix = sp.diags(np.array(out_rates)).tocsc() - off
    h = np.atleast_1d(spla.spsolve(matrix, np.array(rewards), permc_spec=_ORDERING))
    delays = np.empty(n)
    for i in range(n):
        weights = np.array(list(initial[i].values()))
        where = np.array(list(initial[i].keys()), dtype=np.int64)
        delays[i] = float(np.dot(weights, h[where]) / weights.sum())
    return delays


@dataclass(frozen=True)
class _Solution:
    lam: float
    q: NDArray[np.float64]
    util: NDArray[np.float64]
    qs: float
    us: float | None
    in_transit: NDArray[np.float64]
    delay: NDArray[np.float64]


def _solve_one(network: ClosedNetwork, max_states: int) -> _Solution:
    layout = _layout(network)
    c, m = network.concurrency, layout.m
    _check_size(math.comb(c + m - 1, m - 1), "counts chain", network, max_states)
    _check_size(_tagged_size_bound(layout, c), "tagged-task chain", network, max_states)
    states, pi, _ = _stationary(network, layout, max_states)
    x = np.array(states, dtype=np.float64)
    n = layout.n
    update_rate = np.zeros(len(states))
    for k in range(layout.m):
        if layout.nxt[k] == _UPDATE and k != layout.global_station:
            counts = x[:, k]
            if layout.fifo[k]:
                update_rate += np.where(counts > 0, layout.rates[k], 0.0)
            else:
                update_rate += layout.rates[k] * counts
    lam = float(np.dot(pi, update_rate))
    mean = pi @ x
    busy = pi @ (x > 0)
    in_transit = np.zeros(n)
    for i in range(n):
        if layout.uplink[i] >= 0:
            in_transit[i] += mean[layout.uplink[i]]
    if layout.global_station >= 0:
        in_transit += network.p * mean[layout.global_station]
    s = layout.server_station
    delays = _tagged_delays(network, layout, states, pi, max_states)
    return _Solution(
        lam=lam,
        q=mean[:n].copy(),
        util=busy[:n].copy(),
        qs=float(mean[s]) if s >= 0 else 0.0,
        us=float(busy[s]) if s >= 0 else None,
        in_transit=in_transit,
        delay=delays,
    )


def solve_bruteforce(
    network: ClosedNetwork, *, curve: bool = False, max_states: int = DEFAULT_MAX_STATES
) -> QueueingResult:
    """Solve ``network`` exactly from its Markov chain (small networks only).

    Args:
        network: The closed network.
        curve: Also solve every population ``C' = 1..C`` (one chain each).
        max_states: Refuse a counts or tagged-task chain larger than this.

    Returns:
        The stationary performance, ``method="bruteforce"``.

    Raises:
        ValueError: A state space would exceed ``max_states``.
    """
    c, n = network.concurrency, network.n_clients
    final = _solve_one(network, max_states)
    lam_curve = q_curve = delay_curve = None
    if curve:
        lam_curve = np.empty(c)
        q_curve = np.empty((c, n))
        delay_curve = np.empty((c, n))
        for k in range(1, c + 1):
            sol = final if k == c else _solve_one(network.with_concurrency(k), max_states)
            lam_curve[k - 1] = sol.lam
            q_curve[k - 1] = sol.q
            delay_curve[k - 1] = sol.delay
    return assemble(
        network,
        method="bruteforce",
        lam=final.lam,
        q=final.q,
        qs=final.qs,
        delay=final.delay,
        utilization=final.util,
        server_utilization=final.us,
        mean_in_transit=final.in_transit,
        throughput_curve=lam_curve,
        queue_length_curve=q_curve,
        relative_delay_curve=delay_curve,
    )
