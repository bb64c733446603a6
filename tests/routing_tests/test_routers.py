from __future__ import annotations

import pickle

import numpy as np
import pytest

from raysync.config import RoutingConfig
from raysync.exceptions import CheckpointError, ConfigError
from raysync.routing import (
    BaseRouter,
    FixedRouter,
    ReturnToSenderRouter,
    UniformRouter,
    make_router,
)
from raysync.testing.contracts import RouterContract

P5 = [0.4, 0.25, 0.2, 0.1, 0.05]


class TestFixedRouterContract(RouterContract):
    def make_router(self, num_clients: int) -> BaseRouter:
        assert num_clients == len(P5)
        return FixedRouter(p=P5)


class TestFixedRouterSmallBlockContract(RouterContract):
    """Blocks of 3 draws: state round trips cross block boundaries constantly."""

    def make_router(self, num_clients: int) -> BaseRouter:
        return FixedRouter(p=P5, block_size=3)


class TestUniformRouterContract(RouterContract):
    num_clients = 7

    def make_router(self, num_clients: int) -> BaseRouter:
        return UniformRouter()


class TestReturnToSenderContract(RouterContract):
    def make_router(self, num_clients: int) -> BaseRouter:
        return ReturnToSenderRouter()

    def concurrencies(self, num_clients: int) -> list[int]:
        return [num_clients]


# ------------------------------------------------------------------- FixedRouter


@pytest.mark.parametrize(
    ("p", "match"),
    [
        ([0.5, 0.47], r"routing p must sum to 1, got sum=0\.97 for 2 clients"),
        ([0.2, 0.2, 0.2, 0.2, 0.17], r"sum=0\.97 for 5 clients"),
        ([0.5, 0.5, 0.0], r"routing p\[2\] must be >= 1e-300 .*got 0\.0"),
        ([1.5, -0.5], r"routing p\[1\] must be >= 1e-300 .*got -0\.5"),
        ([0.5, float("nan"), 0.5], r"routing p\[1\] must be >= 1e-300"),
        ([5e-324, 1.0], r"routing p\[0\] must be >= 1e-300 \(.*normal float64\), got 5e-324"),
        ([], r"non-empty 1-D"),
        ([[0.5, 0.5]], r"non-empty 1-D .*shape \(1, 2\)"),
        (["a", "b"], r"sequence of numbers"),
    ],
)
def test_fixed_router_rejects_bad_p(p: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        FixedRouter(p=p)  # type: ignore[arg-type]


def test_fixed_router_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        FixedRouter([0.5, 0.5])  # type: ignore[misc]


@pytest.mark.parametrize("block_size", [0, -1, 2.5, True])
def test_fixed_router_rejects_bad_block_size(block_size: object) -> None:
    with pytest.raises(ConfigError, match="block_size must be an integer >= 1"):
        FixedRouter(p=[0.5, 0.5], block_size=block_size)  # type: ignore[arg-type]


def test_fixed_router_bind_checks_fleet_size() -> None:
    router = FixedRouter(p=P5)
    with pytest.raises(ConfigError, match=r"one entry per client \(n=4\), got 5 entries"):
        router.bind(4, np.random.default_rng(0))


def test_fixed_router_renormalises_within_tolerance() -> None:
    router = FixedRouter(p=[0.5, 0.5 + 1e-7])
    p = router.routing_probabilities()
    assert p.sum() == pytest.approx(1.0, abs=1e-15)
    p[0] = 99.0  # a copy: the router is unaffected
    assert router.routing_probabilities()[0] == pytest.approx(0.5, abs=1e-6)


def test_fixed_router_ignores_finished_client() -> None:
    a, b = FixedRouter(p=P5), FixedRouter(p=P5)
    a.bind(5, np.random.default_rng(3))
    b.bind(5, np.random.default_rng(3))
    assert [a.route(0) for _ in range(500)] == [b.route(i % 5) for i in range(500)]


def test_fixed_router_initial_clients_are_draws_from_p() -> None:
    router = FixedRouter(p=[0.9, 0.1])
    router.bind(2, np.random.default_rng(1))
    clients = router.initial_clients(20_000)
    assert np.mean(np.asarray(clients) == 0) == pytest.approx(0.9, abs=5 * (0.09 / 20_000) ** 0.5)


@pytest.mark.parametrize("concurrency", [0, -2, 1.5])
def test_random_router_rejects_bad_concurrency(concurrency: object) -> None:
    router = UniformRouter()
    router.bind(3, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="concurrency must be an integer >= 1"):
        router.initial_clients(concurrency)  # type: ignore[arg-type]


def test_block_size_does_not_change_the_distribution_only_the_stream() -> None:
    # Same generator, different block sizes: both streams are valid draws from p; a block
    # size of 1 reproduces sequential inverse-CDF sampling of rng.random().
    rng = np.random.default_rng(11)
    u = rng.random(50)
    expected = np.searchsorted(np.cumsum(P5), u, side="right").tolist()
    router = FixedRouter(p=P5, block_size=1)
    router.bind(5, np.random.default_rng(11))
    assert [router.route(0) for _ in range(50)] == expected


def test_state_dict_holds_pending_draws() -> None:
    router = FixedRouter(p=P5, block_size=10)
    router.bind(5, np.random.default_rng(0))
    router.route(0)
    state = router.state_dict()
    assert len(state["pending"]) == 9
    pickle.loads(pickle.dumps(state))


def test_load_state_dict_rejects_bad_state() -> None:
    router = FixedRouter(p=P5)
    router.bind(5, np.random.default_rng(0))
    with pytest.raises(CheckpointError, match="'rng' and 'pending'"):
        router.load_state_dict({"rng": router.rng.bit_generator.state})
    with pytest.raises(CheckpointError, match=r"outside \[0, 5\)"):
        router.load_state_dict({"rng": router.rng.bit_generator.state, "pending": [7]})


def test_rebinding_drops_pending_draws() -> None:
    router = FixedRouter(p=P5)
    router.bind(5, np.random.default_rng(5))
    first = [router.route(0) for _ in range(10)]
    router.bind(5, np.random.default_rng(5))
    assert [router.route(0) for _ in range(10)] == first


# ------------------------------------------------------------------- UniformRouter


def test_uniform_router_probabilities() -> None:
    router = UniformRouter()
    router.bind(4, np.random.default_rng(0))
    np.testing.assert_array_equal(router.routing_probabilities(), np.full(4, 0.25))
    assert repr(router) == "UniformRouter()"


# ------------------------------------------------------------ ReturnToSenderRouter


def test_return_to_sender() -> None:
    router = ReturnToSenderRouter()
    router.bind(3, np.random.default_rng(0))
    assert router.initial_clients(3) == [0, 1, 2]
    assert [router.route(i) for i in (2, 0, 1, 1)] == [2, 0, 1, 1]
    assert router.routing_probabilities() is None


def test_return_to_sender_gives_an_absent_clients_task_to_a_present_one() -> None:
    """Client 1 absent at the start: its task goes to the least-loaded present client
    (client 2, lowest id among those holding none); when client 1 joins, the next task
    finished at a client holding two goes to it, and from then on each returns home."""
    router = ReturnToSenderRouter()
    router.bind(4, np.random.default_rng(0))
    router.set_available(np.array([True, False, True, True]), 0.0)
    assert router.initial_clients(4) == [0, 2, 2, 3]
    assert router.route(0) == 0  # its only task: home, as without joins
    router.set_available(np.ones(4, dtype=bool), 10.0)
    assert router.route(3) == 3  # holds one: home
    assert router.route(2) == 1  # holds another: the joiner, which holds none, gets it
    assert [router.route(i) for i in (1, 2, 0, 3)] == [1, 2, 0, 3]


def test_return_to_sender_moves_a_leavers_task_and_back_on_rejoining() -> None:
    router = ReturnToSenderRouter()
    router.bind(3, np.random.default_rng(0))
    assert router.initial_clients(3) == [0, 1, 2]
    router.set_available(np.array([True, False, True]), 5.0)
    assert router.route(1) == 0  # left: to the least loaded present client
    assert router.route(2) == 2
    state = router.state_dict()
    router.set_available(np.ones(3, dtype=bool), 9.0)
    assert router.route(0) == 1  # client 0 holds another: the rejoined client gets this one
    restored = ReturnToSenderRouter()
    restored.bind(3, np.random.default_rng(0))
    restored.load_state_dict(state)  # a checkpoint keeps who holds what, and who is present
    assert restored.route(0) == 0  # client 1 still absent: home, holding two
    restored.set_available(np.ones(3, dtype=bool), 9.0)
    assert restored.route(0) == 1


@pytest.mark.parametrize("mask", [[True, True], [False, False, False]])
def test_return_to_sender_refuses_a_bad_availability_mask(mask: list[bool]) -> None:
    router = ReturnToSenderRouter()
    router.bind(3, np.random.default_rng(0))
    with pytest.raises(ConfigError, match=r"available must be 3 booleans with at least one"):
        router.set_available(np.array(mask), 0.0)


@pytest.mark.parametrize("concurrency", [2, 4])
def test_return_to_sender_needs_c_equal_n(concurrency: int) -> None:
    router = ReturnToSenderRouter()
    router.bind(3, np.random.default_rng(0))
    with pytest.raises(ConfigError, match=rf"\(n=3\) with return-to-sender .*got {concurrency}"):
        router.initial_clients(concurrency)


@pytest.mark.parametrize("client", [-1, 3])
def test_return_to_sender_rejects_unknown_client(client: int) -> None:
    router = ReturnToSenderRouter()
    router.bind(3, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"finished_client must be in \[0, 3\)"):
        router.route(client)


# ------------------------------------------------------------------------ factory


def test_make_router_maps_every_kind() -> None:
    fixed = make_router(RoutingConfig(kind="fixed", p=(0.7, 0.3)))
    assert isinstance(fixed, FixedRouter)
    np.testing.assert_allclose(fixed.routing_probabilities(), [0.7, 0.3])
    assert isinstance(make_router(RoutingConfig(kind="uniform")), UniformRouter)
    assert isinstance(make_router(RoutingConfig(kind="return_to_sender")), ReturnToSenderRouter)
    assert isinstance(make_router(RoutingConfig()), UniformRouter)
