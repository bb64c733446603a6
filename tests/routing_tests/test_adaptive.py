"""AdaptiveRouter: the BaseRouter contract, re-optimisation from estimates, safe swaps."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from raysync.config import RoutingConfig
from raysync.exceptions import ConfigError
from raysync.routing import AdaptiveRouter, BaseRouter, make_router
from raysync.testing.contracts import RouterContract

MU = np.array([1.0, 1.0, 4.0, 4.0, 16.0])


class TestAdaptiveRouterContract(RouterContract):
    def make_router(self, num_clients: int) -> BaseRouter:
        return AdaptiveRouter(reoptimize_every=10)


class TestAdaptiveRouterSmallBlockContract(RouterContract):
    def make_router(self, num_clients: int) -> BaseRouter:
        return AdaptiveRouter(reoptimize_every=3, block_size=3)


def _feed(router: AdaptiveRouter, mu: np.ndarray, updates: int, seed: int = 0) -> float:
    """Observe ``updates`` exponential service times at routed clients; return the clock."""
    rng = np.random.default_rng(seed)
    client, now = 0, 0.0
    for _ in range(updates):
        d = float(rng.exponential(1.0 / mu[client]))
        now += d
        router.observe(client, d, now)
        client = router.route(client)
    return now


def test_reoptimizes_towards_the_true_rates_and_logs_every_change() -> None:
    router = AdaptiveRouter(reoptimize_every=50, explore=0.0, min_change=0.0)
    router.bind(MU.size, np.random.default_rng(1))
    router.initial_clients(5)
    p0 = router.routing_probabilities()
    assert np.allclose(p0, 0.2)
    _feed(router, MU, 2000)
    assert len(router.changes) == 2000 // 50 == router.routing_version
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
    assert last.update == 2000 and last.predicted_throughput > 0
    assert last.to_dict()["p"] == pytest.approx(p.tolist())


def test_seconds_trigger_and_min_change_skip() -> None:
    router = AdaptiveRouter(reoptimize_every=10**9, reoptimize_seconds=5.0, min_change=0.0)
    router.bind(MU.size, np.random.default_rng(2))
    router.initial_clients(3)
    now = _feed(router, MU, 500)
    assert 0 < len(router.changes) <= now / 5.0 + 1
    lazy = AdaptiveRouter(reoptimize_every=20, min_change=1e9)  # no rate moves that much
    lazy.bind(MU.size, np.random.default_rng(2))
    lazy.initial_clients(3)
    _feed(lazy, MU, 500)
    assert len(lazy.changes) == 1  # the first optimisation, then every one skipped


def test_swapping_p_keeps_in_flight_tasks_and_fifo_order() -> None:
    """Simulate FIFO queues by hand; every task dispatched is served, in order, after swaps."""
    router = AdaptiveRouter(reoptimize_every=37, min_change=0.0)
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


def test_state_round_trip_after_swaps() -> None:
    router = AdaptiveRouter(reoptimize_every=13, min_change=0.0)
    router.bind(MU.size, np.random.default_rng(6))
    router.initial_clients(4)
    _feed(router, MU, 100, seed=1)
    state = router.state_dict()
    fresh = AdaptiveRouter(reoptimize_every=13, min_change=0.0)
    fresh.bind(MU.size, np.random.default_rng(99))
    fresh.initial_clients(4)
    fresh.load_state_dict(state)
    assert np.array_equal(fresh.routing_probabilities(), router.routing_probabilities())
    _feed(router, MU, 60, seed=2)
    _feed(fresh, MU, 60, seed=2)
    assert np.array_equal(fresh.routing_probabilities(), router.routing_probabilities())
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
        ({"kind": "adaptive", "constants": (1.0, -1.0, 0.0, 1.0)}, r"constants\.sigma2"),
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
