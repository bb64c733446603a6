"""AdaptiveRouter: the BaseRouter contract, re-optimisation from estimates, safe swaps."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from raysync.config import RoutingConfig
from raysync.exceptions import ConfigError
from raysync.routing import AdaptiveRouter, BaseRouter, make_router
from raysync.testing.contracts import RouterContract
from tests.routing_tests._network import closed_network

MU = np.array([1.0, 1.0, 4.0, 4.0, 16.0])


class TestAdaptiveRouterContract(RouterContract):
    def make_router(self, num_clients: int) -> BaseRouter:
        return AdaptiveRouter(reoptimize_every=10)


class TestAdaptiveRouterSmallBlockContract(RouterContract):
    def make_router(self, num_clients: int) -> BaseRouter:
        return AdaptiveRouter(reoptimize_every=3, block_size=3)


def test_reoptimizes_towards_the_true_rates_and_logs_every_change() -> None:
    router = AdaptiveRouter(reoptimize_every=50, explore=0.0, min_change=0.0)
    router.bind(MU.size, np.random.default_rng(1))
    assert np.allclose(router.routing_probabilities(), 0.2)
    closed_network(router, MU, 2000, concurrency=5, seed=0)
    # Warm-up (default: n = 5 updates): the gap doubles from 5 (after 5, 10, 20, 40, 80:
    # gaps 5, 5, 10, 20, 40) until it reaches reoptimize_every = 50.
    expected = [5, 10, 20, 40, 80, *range(130, 2001, 50)]
    assert [c.update for c in router.changes] == expected
    assert len(router.changes) == router.routing_version
    p = router.routing_probabilities()
    assert p.sum() == pytest.approx(1.0)
    # The optimum for these rates routes more to faster clients (THEORY.md 5, 3b).
    assert p[4] > p[2] > p[0]
    from raysync.objectives import BoundObjective, ProblemConstants, optimize_routing

    oracle = optimize_routing(
        BoundObjective(mu=MU, constants=ProblemConstants(L=1, sigma2=1, M2=0, A=1),
                       time_budget=1000.0),
        concurrency=5,
    )  # fmt: skip
    assert np.abs(p - oracle.p).max() < 0.1
    last = router.changes[-1]
    assert last.update == 1980 and last.predicted_throughput > 0
    assert last.to_dict()["p"] == pytest.approx(p.tolist())


def test_seconds_trigger_and_min_change_skip() -> None:
    router = AdaptiveRouter(
        reoptimize_every=10**9, reoptimize_seconds=5.0, min_change=0.0, warmup=0
    )
    router.bind(MU.size, np.random.default_rng(2))
    now = closed_network(router, MU, 500, concurrency=3, seed=0)
    assert 0 < len(router.changes) <= now / 5.0 + 1
    lazy = AdaptiveRouter(reoptimize_every=20, min_change=1e9)  # no rate moves that much
    lazy.bind(MU.size, np.random.default_rng(2))
    closed_network(lazy, MU, 500, concurrency=3, seed=0)
    assert len(lazy.changes) == 1  # the first optimisation, then every one skipped


def test_swapping_p_keeps_in_flight_tasks_and_fifo_order() -> None:
    """Simulate FIFO queues by hand; every task dispatched is served, in order, after swaps."""
    router = AdaptiveRouter(reoptimize_every=37, min_change=0.0, warmup=0)
    n, c = MU.size, 12
    router.bind(n, np.random.default_rng(3))
    queues: list[deque[int]] = [deque() for _ in range(n)]
    task = 0
    for j in router.initial_clients(c):
        queues[j].append(task)
        task += 1
    served: list[list[int]] = [[] for _ in range(n)]
    rng = np.random.default_rng(4)
    for _ in range(3000):
        busy = [i for i in range(n) if queues[i]]
        i = int(rng.choice(busy))
        served[i].append(queues[i].popleft())
        router.observe(i, float(rng.exponential(1.0 / MU[i])), float(task))
        j = router.route(i)
        queues[j].append(task)
        task += 1
    assert router.routing_version == 3000 // 37
    assert sum(len(q) for q in queues) == c  # no task lost or created by a swap
    for i in range(n):
        done = served[i] + list(queues[i])
        assert done == sorted(done)  # per-client FIFO: dispatch order == service order
    everything = sorted(t for i in range(n) for t in served[i] + list(queues[i]))
    assert everything == list(range(task))


def test_availability_routes_only_to_present_clients() -> None:
    router = AdaptiveRouter(reoptimize_every=10**9)
    router.bind(4, np.random.default_rng(5))
    router.initial_clients(2)
    router.set_available(np.array([True, False, True, False]), now=1.0)
    p = router.routing_probabilities()
    assert p[1] == p[3] == 0.0 and p.sum() == pytest.approx(1.0)
    assert {router.route(0) for _ in range(2000)} == {0, 2}
    assert router.changes[-1].reason == "availability"
    with pytest.raises(ConfigError, match="at least one true"):
        router.set_available(np.zeros(4, dtype=bool), now=2.0)


def _chain(router: AdaptiveRouter, client: int, updates: int, seed: int) -> float:
    """Complete ``updates`` tasks one after another, each at the client the previous one
    was routed to (the other tasks in flight stay in service); return the clock."""
    rng = np.random.default_rng(seed)
    now = 10.0
    for _ in range(updates):
        d = float(rng.exponential(1.0 / MU[client]))
        now += d
        router.observe(client, d, now)
        client = router.route(client)
    return now


def test_state_round_trip_after_swaps() -> None:
    router = AdaptiveRouter(reoptimize_every=13, min_change=0.0)
    router.bind(MU.size, np.random.default_rng(6))
    closed_network(router, MU, 100, concurrency=4, seed=1)
    state = router.state_dict()
    assert sum(state["in_flight"]) == 4 and len(state["reference_counts"]) == MU.size
    fresh = AdaptiveRouter(reoptimize_every=13, min_change=0.0)
    fresh.bind(MU.size, np.random.default_rng(99))
    fresh.initial_clients(4)
    fresh.load_state_dict(state)
    assert np.array_equal(fresh.routing_probabilities(), router.routing_probabilities())
    assert np.array_equal(fresh.in_service_ages(11.0), router.in_service_ages(11.0))
    start = router.route(0)
    assert fresh.route(0) == start
    _chain(router, start, 60, seed=2)
    _chain(fresh, start, 60, seed=2)
    assert len(fresh.changes) > 0
    assert np.array_equal(fresh.routing_probabilities(), router.routing_probabilities())
    assert [c.update for c in fresh.changes] == [c.update for c in router.changes if c.update > 100]
    assert [router.route(0) for _ in range(50)] == [fresh.route(0) for _ in range(50)]


def test_config_builds_it() -> None:
    router = make_router(
        RoutingConfig(kind="adaptive", reoptimize_every=25, horizon=50.0, window=40)
    )
    assert isinstance(router, AdaptiveRouter)
    assert (router.reoptimize_every, router.horizon, router.window) == (25, 50.0, 40)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"kind": "adaptive", "reoptimize_every": 0}, r"routing\.reoptimize_every must be an "
         r"integer >= 1, got 0"),
        ({"kind": "adaptive", "reoptimize_seconds": -1.0}, r"reoptimize_seconds must be > 0"),
        ({"kind": "adaptive", "explore": 1.0}, r"routing\.explore must be in \[0, 1\)"),
        ({"kind": "adaptive", "constants": (1.0, -1.0, 0.0, 1.0)},
         r"routing\.constants\[1\] \(sigma2\) must be > 0"),
        ({"kind": "uniform", "reoptimize_every": 5}, r"only allowed with kind 'adaptive'"),
    ],
)  # fmt: skip
def test_nonsense_is_one_line(fields: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        make_router(RoutingConfig(**fields))  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_negative_observed_rate_refused() -> None:
    router = AdaptiveRouter()
    router.bind(2, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="finite time > 0, got -1.0"):
        router.observe(0, -1.0, 0.0)
