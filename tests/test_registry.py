"""One registry per extension point; the config's allowed names come from it."""

from __future__ import annotations

import numpy as np
import pytest

import raysync.config as config_module
from raysync._registry import Registry
from raysync.config import AlgorithmConfig, RoutingConfig, ServiceTimeSpec, load_config
from raysync.exceptions import ConfigError
from raysync.routing import BaseRouter, make_router
from raysync.routing import registry as routers
from raysync.simulation import make_service_time, simulate
from raysync.simulation import registry as service_times
from raysync.simulation.service_times import ExponentialServiceTime
from raysync.strategies import AsyncSGD, BaseStrategy, FedBuff, make_strategy
from raysync.strategies import registry as strategies


def test_registry_registers_in_order_and_rejects_bad_names() -> None:
    reg: Registry[int] = Registry("thing.kind")
    reg.register("one", lambda cfg: 1)

    @reg.register("two_2")
    def _two(cfg: object) -> int:
        return 2

    assert reg.names() == ("one", "two_2") and "one" in reg
    assert reg.build("two_2", None) == 2
    with pytest.raises(ValueError, match=r"thing.kind 'one' is already registered"):
        reg.register("one", lambda cfg: 3)
    with pytest.raises(ValueError, match=r"must match \[a-z\]\[a-z0-9_\]\*, got 'Bad-Name'"):
        reg.register("Bad-Name", lambda cfg: 3)
    with pytest.raises(ValueError, match="must be callable"):
        reg.register("three", 3)  # type: ignore[call-overload]
    with pytest.raises(ConfigError, match=r"thing.kind must be one of one, two_2, got 'x'"):
        reg.build("x", None)
    reg.unregister("one")
    assert reg.names() == ("two_2",)


def test_config_names_are_the_registries_names() -> None:
    assert config_module.ALGORITHMS == strategies.names() == (
        "asyncsgd", "generalized_asyncsgd", "fedasync", "fedbuff"
    )
    assert config_module.ROUTING_KINDS == routers.names() == (
        "fixed", "uniform", "return_to_sender", "adaptive"
    )
    assert config_module.SERVICE_KINDS == service_times.names() == (
        "exponential", "deterministic", "lognormal", "trace", "schedule"
    )
    with pytest.raises(ConfigError, match=r"algorithm.name must be one of asyncsgd, .*'nope'"):
        AlgorithmConfig(name="nope")


def test_factories_build_through_the_registries() -> None:
    assert isinstance(make_strategy(AlgorithmConfig(name="asyncsgd", lr=0.1)), AsyncSGD)
    buff = make_strategy(AlgorithmConfig(name="fedbuff", buffer_size=3))
    assert isinstance(buff, FedBuff)
    assert type(make_router(RoutingConfig(kind="uniform"))).__name__ == "UniformRouter"
    dist = make_service_time(ServiceTimeSpec(kind="exponential", rate=4.0))
    assert isinstance(dist, ExponentialServiceTime) and dist.mean == pytest.approx(0.25)


class _HalfStep(AsyncSGD):
    """AsyncSGD at half the configured step: a plugin strategy for the test."""


class _FirstClient(BaseRouter):
    """Sends every task to client 0: a plugin router for the test."""

    def initial_clients(self, concurrency: int) -> list[int]:
        return [0] * concurrency

    def route(self, finished_client: int) -> int:
        return 0


TINY = """
seed = 1
concurrency = 2
[routing]
kind = "first_client"
[algorithm]
name = "half_step"
lr = 0.2
[run]
train = false
num_updates = 200
[[clients]]
count = 3
service_time = { kind = "exponential", rate = 2.0 }
"""


@pytest.fixture
def plugins():
    strategies.register("half_step", lambda cfg: _HalfStep(lr=cfg.lr / 2, batch_size=8))
    routers.register("first_client", lambda cfg: _FirstClient())
    yield
    strategies.unregister("half_step")
    routers.unregister("first_client")


def test_a_registered_plugin_is_accepted_by_the_config_and_the_factories(
    tmp_path, plugins
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(TINY)
    config = load_config(path)
    assert config.algorithm.name == "half_step" and config.routing.kind == "first_client"
    strategy = make_strategy(config.algorithm)
    assert isinstance(strategy, _HalfStep) and isinstance(strategy, BaseStrategy)
    assert isinstance(make_router(config.routing), _FirstClient)


def test_unregistered_names_are_rejected_again_after_cleanup(tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(TINY)
    with pytest.raises(ConfigError, match=r"routing.kind must be one of .*'first_client'"):
        load_config(path)


def test_the_simulator_builds_a_registered_router_from_the_config(tmp_path, plugins) -> None:
    path = tmp_path / "c.toml"
    path.write_text(TINY)
    result = simulate(load_config(path), queue_only=True)
    assert result.num_updates == 200
    served = np.asarray(result.completed)
    assert served[0] == served.sum() > 0  # every task went to client 0
