"""predict(config) with communication delays and a server station (docs/network.md)."""

from __future__ import annotations

import numpy as np
import pytest

from raysync.config import (
    AlgorithmConfig,
    ClientSpec,
    RoutingConfig,
    RunConfig,
    ServerConfig,
    ServiceTimeSpec,
    SystemConfig,
)
from raysync.exceptions import ConfigError
from raysync.queueing import ClosedNetwork, analyze, predict
from raysync.queueing.predict import station_parameters


def _exp(rate: float) -> ServiceTimeSpec:
    return ServiceTimeSpec(kind="exponential", rate=rate)


def _config(
    *, routing: str = "fixed", server_rate: float | None = None, concurrency: int = 3
) -> SystemConfig:
    clients = (
        ClientSpec(service_time=_exp(1.0), downlink=_exp(4.0), uplink=_exp(2.0)),
        ClientSpec(
            service_time=_exp(2.0),
            downlink=ServiceTimeSpec(kind="deterministic", mean=0.5),
        ),
        ClientSpec(service_time=_exp(4.0)),
    )
    server = None if server_rate is None else ServerConfig(update_time=_exp(server_rate))
    rtr = routing == "return_to_sender"
    return SystemConfig(
        clients=clients,
        concurrency=3 if rtr else concurrency,
        routing=RoutingConfig(kind=routing, p=None if rtr else (0.5, 0.3, 0.2)),
        algorithm=AlgorithmConfig(name="asyncsgd" if rtr else "generalized_asyncsgd"),
        run=RunConfig(num_updates=100, train=False),
        server=server,
    )


def test_station_parameters_sum_the_mean_delays() -> None:
    latency, rate = station_parameters(_config(server_rate=8.0))
    np.testing.assert_allclose(latency, [0.25 + 0.5, 0.5, 0.0])
    assert rate == pytest.approx(8.0)
    plain = _config().replace(clients=(ClientSpec(),) * 3)
    assert station_parameters(plain) == (None, None)


def test_predict_solves_the_network_with_its_stations() -> None:
    config = _config(server_rate=8.0)
    direct = analyze(
        ClosedNetwork(
            mu=(1.0, 2.0, 4.0),
            p=(0.5, 0.3, 0.2),
            concurrency=3,
            client_latency=(0.75, 0.5, 0.0),
            server_rate=8.0,
        )
    )
    res = predict(config)
    assert res.throughput == pytest.approx(direct.throughput, rel=1e-12)
    np.testing.assert_allclose(res.mean_relative_delay, direct.mean_relative_delay, rtol=1e-12)
    assert res.server_utilization == pytest.approx(res.throughput / 8.0)
    # Every update waits its turn at the server: the staleness identity still holds.
    assert float(np.dot((0.5, 0.3, 0.2), res.mean_relative_delay)) == pytest.approx(2.0)


def test_delays_lower_the_throughput_of_a_single_task_by_hand() -> None:
    # C = 1: one task cycles; mean cycle = sum_i p_i (Z_i + 1/mu_i) + 1/server_rate.
    res = predict(_config(server_rate=8.0, concurrency=1))
    cycle = 0.5 * (0.75 + 1.0) + 0.3 * (0.5 + 0.5) + 0.2 * 0.25 + 1 / 8
    assert res.throughput == pytest.approx(1 / cycle, rel=1e-12)
    np.testing.assert_allclose(res.mean_relative_delay, 0.0)


def test_return_to_sender_cycles_with_latency_by_hand() -> None:
    res = predict(_config(routing="return_to_sender"))
    cycle = np.array([0.75 + 1.0, 0.5 + 0.5, 0.25])
    rate = 1.0 / cycle
    assert res.throughput == pytest.approx(rate.sum())
    np.testing.assert_allclose(res.mean_relative_delay, cycle * (rate.sum() - rate))
    np.testing.assert_allclose(res.utilization, rate / np.array([1.0, 2.0, 4.0]))


def test_return_to_sender_with_a_server_station_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match="return_to_sender.*server") as info:
        predict(_config(routing="return_to_sender", server_rate=8.0))
    assert "\n" not in str(info.value)
