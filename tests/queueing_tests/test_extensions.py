"""Latency (infinite-server) and server stations: checked against the brute-force chain
and a small discrete-event simulation written here.

The delay formula used by MVA/Buzen with extensions is
``E[D_i] = Q_i(C-1) / p_i + Z_i Lambda(C-1) + Q_server(C-1)``, ``Z_i`` the mean latency of a
task routed to ``i``. The brute force gets E[D_i] from a tagged-task absorbing chain instead.
"""

from __future__ import annotations

import heapq
from collections import deque

import numpy as np
import pytest

from raysync.queueing import ClosedNetwork, analyze

MU = [1.0, 2.0, 4.0, 0.5]
P = [0.4, 0.3, 0.2, 0.1]

CASES = {
    "latency": dict(latency=0.7),
    "client_latency": dict(client_latency=[0.3, 0.0, 1.2, 0.5]),
    "server": dict(server_rate=3.0),
    "all": dict(latency=0.4, client_latency=[0.3, 0.0, 1.2, 0.5], server_rate=3.0),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_extension_matches_bruteforce(name: str) -> None:
    net = ClosedNetwork(mu=MU, p=P, concurrency=4, **CASES[name])  # type: ignore[arg-type]
    mva = analyze(net, curve=True)
    brute = analyze(net, method="bruteforce", curve=True)
    assert mva.throughput == pytest.approx(brute.throughput, rel=1e-9)
    np.testing.assert_allclose(mva.mean_queue_length, brute.mean_queue_length, rtol=1e-9)
    np.testing.assert_allclose(mva.mean_relative_delay, brute.mean_relative_delay, rtol=1e-9)
    np.testing.assert_allclose(mva.mean_in_transit, brute.mean_in_transit, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(mva.relative_delay_curve, brute.relative_delay_curve, rtol=1e-9)
    assert mva.mean_staleness == pytest.approx(3.0, rel=1e-12)
    if net.server_rate is not None:
        assert mva.server_utilization == pytest.approx(brute.server_utilization, rel=1e-9)
        assert mva.server_queue_length == pytest.approx(brute.server_queue_length, rel=1e-9)


def test_delay_formula_decomposition() -> None:
    net = ClosedNetwork(mu=MU, p=P, concurrency=5, **CASES["all"])  # type: ignore[arg-type]
    r = analyze(net)
    prev = analyze(net.with_concurrency(4))
    assert prev.server_queue_length is not None
    expected = (
        prev.mean_queue_length / net.p
        + net.total_latency * prev.throughput
        + prev.server_queue_length
    )
    np.testing.assert_allclose(r.mean_relative_delay, expected, rtol=1e-13)


def test_global_latency_equals_equal_per_client_latency() -> None:
    a = analyze(ClosedNetwork(mu=MU, p=P, concurrency=4, latency=0.8), method="bruteforce")
    b = analyze(
        ClosedNetwork(mu=MU, p=P, concurrency=4, client_latency=[0.8] * 4), method="bruteforce"
    )
    assert a.throughput == pytest.approx(b.throughput, rel=1e-9)
    np.testing.assert_allclose(a.mean_relative_delay, b.mean_relative_delay, rtol=1e-9)
    np.testing.assert_allclose(a.mean_in_transit, b.mean_in_transit, rtol=1e-9)


def test_pure_latency_network() -> None:
    # very fast clients: each task spends ~latency in transit; Lambda ~ C / latency
    net = ClosedNetwork(mu=[1e6, 1e6], p=[0.5, 0.5], concurrency=3, latency=2.0)
    r = analyze(net)
    assert r.throughput == pytest.approx(1.5, rel=1e-5)


def test_extensions_lower_throughput() -> None:
    base = analyze(ClosedNetwork(mu=MU, p=P, concurrency=6))
    for kwargs in CASES.values():
        ext = analyze(ClosedNetwork(mu=MU, p=P, concurrency=6, **kwargs))  # type: ignore[arg-type]
        assert ext.throughput < base.throughput
        assert ext.mean_staleness == pytest.approx(5.0)


def _simulate(net: ClosedNetwork, updates: int, seed: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Event-driven simulation of the system of network.py's docstring.

    Cycle: dispatch -> latency -> client i (FIFO) -> client_latency[i] -> server (FIFO)
    -> update; the update dispatches one new task carrying the new version.
    Returns (updates per unit time, mean delay per client, standard error per client).
    """
    rng = np.random.default_rng(seed)
    n = net.n_clients
    mu, p = net.mu, net.p
    cl = net.client_latency if net.client_latency is not None else np.zeros(n)
    events: list[tuple[float, int, str, int]] = []  # (time, seq, kind, task)
    seq = 0
    queues = [deque() for _ in range(n)]
    server_queue: deque[int] = deque()
    dest = {}
    version_at_dispatch = {}
    version = 0
    delays: list[list[int]] = [[] for _ in range(n)]

    def push(t: float, kind: str, task: int) -> None:
        nonlocal seq
        heapq.heappush(events, (t, seq, kind, task))
        seq += 1

    def arrive_client(t: float, task: int) -> None:
        i = dest[task]
        queues[i].append(task)
        if len(queues[i]) == 1:
            push(t + rng.exponential(1 / mu[i]), "client", task)

    def arrive_server(t: float, task: int) -> None:
        if net.server_rate is None:
            update(t, task)
            return
        server_queue.append(task)
        if len(server_queue) == 1:
            push(t + rng.exponential(1 / net.server_rate), "server", task)

    def dispatch(t: float, task: int) -> None:
        dest[task] = int(rng.choice(n, p=p))
        version_at_dispatch[task] = version
        if net.latency > 0:
            push(t + rng.exponential(net.latency), "latency", task)
        else:
            arrive_client(t, task)

    done = 0
    warmup = updates // 10
    start_time = 0.0

    def update(t: float, task: int) -> None:
        nonlocal version, done, start_time
        i = dest[task]
        if done >= warmup:
            delays[i].append(version - version_at_dispatch[task])
        if done == warmup:
            start_time = t
        version += 1
        done += 1
        dispatch(t, task)

    for task in range(net.concurrency):
        dispatch(0.0, task)
    t = 0.0
    while done < updates + warmup:
        t, _, kind, task = heapq.heappop(events)
        if kind == "latency":
            arrive_client(t, task)
        elif kind == "client":
            i = dest[task]
            queues[i].popleft()
            if queues[i]:
                push(t + rng.exponential(1 / mu[i]), "client", queues[i][0])
            if cl[i] > 0:
                push(t + rng.exponential(cl[i]), "uplink", task)
            else:
                arrive_server(t, task)
        elif kind == "uplink":
            arrive_server(t, task)
        else:  # server
            server_queue.popleft()
            if server_queue:
                push(t + rng.exponential(1 / net.server_rate), "server", server_queue[0])
            update(t, task)
    means = np.array([np.mean(d) for d in delays])
    # batch means for the standard error (delays are correlated)
    errors = []
    for d in delays:
        batches = np.array_split(np.asarray(d, dtype=float), 20)
        errors.append(np.std([b.mean() for b in batches], ddof=1) / np.sqrt(20))
    return updates / (t - start_time), means, np.array(errors)


@pytest.mark.parametrize("name", ["all", "server"])
def test_extension_matches_simulation(name: str) -> None:
    net = ClosedNetwork(mu=MU, p=P, concurrency=4, **CASES[name])  # type: ignore[arg-type]
    theory = analyze(net)
    lam, means, errors = _simulate(net, updates=40_000, seed=7)
    assert lam == pytest.approx(theory.throughput, rel=0.03)
    z = np.abs(means - theory.mean_relative_delay) / errors
    assert np.all(z < 4.5), (means, theory.mean_relative_delay, errors)
