from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from raysync.config import load_config
from raysync.exceptions import ConfigError
from raysync.queueing import ClosedNetwork

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny.toml"
MU = [1.0, 2.0, 4.0, 0.5]
P = [0.4, 0.3, 0.2, 0.1]


def test_valid_network_is_frozen_and_read_only() -> None:
    net = ClosedNetwork(mu=MU, p=P, concurrency=6)
    assert net.n_clients == 4
    assert net.mu.dtype == np.float64 and net.p.dtype == np.float64
    np.testing.assert_allclose(net.rho, [0.4, 0.15, 0.05, 0.2])
    with pytest.raises(dataclasses.FrozenInstanceError):
        net.concurrency = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        net.mu[0] = 5.0
    assert net.bottleneck_throughput == pytest.approx(2.5)
    assert not net.has_extensions


def test_input_arrays_are_copied() -> None:
    mu = np.array(MU)
    net = ClosedNetwork(mu=mu, p=P, concurrency=2)
    mu[0] = 100.0
    assert net.mu[0] == 1.0


def test_keyword_only() -> None:
    with pytest.raises(TypeError):
        ClosedNetwork(MU, P, 6)  # type: ignore[misc]


def test_equality_and_hash() -> None:
    a = ClosedNetwork(mu=MU, p=P, concurrency=6)
    b = ClosedNetwork(mu=np.array(MU), p=tuple(P), concurrency=np.int64(6))
    assert a == b and hash(a) == hash(b)
    assert a != a.with_concurrency(5)
    assert a.with_concurrency(5).concurrency == 5
    assert a != ClosedNetwork(mu=MU, p=P, concurrency=6, server_rate=3.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            dict(p=[0.2, 0.2, 0.2, 0.2, 0.17], mu=[1] * 5),
            r"routing p must sum to 1, got sum=0\.97 for 5 clients",
        ),
        (dict(mu=[1.0, 2.0, -1.0, 3.0]), r"mu\[2\] must be > 0, got -1\.0"),
        (dict(mu=[1.0, 0.0, 1.0, 1.0]), r"mu\[1\] must be > 0, got 0\.0"),
        (dict(p=[0.5, 0.5, 0.0, 0.0]), r"p\[2\] must be >= 1e-300 .*got 0\.0"),
        (dict(p=[0.6, 0.6, -0.1, -0.1]), r"p\[2\] must be >= 1e-300 .*got -0\.1"),
        # subnormal: the staleness of that client came out 20 % off
        (dict(p=[5e-324, 0.5, 0.25, 0.25]), r"p\[0\] must be >= 1e-300 .*got 5e-324"),
        (
            dict(mu=[1.0, 2.0, 3.0]),
            r"p must have one entry per client: len\(mu\)=3, got len\(p\)=4",
        ),
        (dict(mu=[1.0, math.nan, 1.0, 1.0]), r"mu\[1\] must be finite, got nan"),
        (dict(mu=[1.0, math.inf, 1.0, 1.0]), r"mu\[1\] must be finite, got inf"),
        (dict(p=[0.4, 0.3, math.nan, 0.1]), r"p\[2\] must be finite"),
        (dict(mu=[]), r"mu must have at least one entry"),
        (dict(mu=[[1.0, 2.0], [3.0, 4.0]]), r"mu must be one-dimensional, got shape \(2, 2\)"),
        (dict(mu="1,2,3,4"), r"mu must be a sequence of numbers"),
        (dict(mu=[1, "a", 2, 3]), r"mu must be a sequence of numbers"),
        (dict(concurrency=0), r"concurrency must be an integer >= 1, got 0"),
        (dict(concurrency=-3), r"concurrency must be an integer >= 1, got -3"),
        (dict(concurrency=2.5), r"concurrency must be an integer >= 1, got 2\.5"),
        (dict(concurrency=6.0), r"concurrency must be an integer >= 1, got 6\.0"),
        (dict(concurrency=True), r"concurrency must be an integer >= 1, got True"),
        (dict(concurrency="6"), r"concurrency must be an integer >= 1, got '6'"),
        (dict(latency=-1.0), r"latency must be >= 0, got -1\.0"),
        (dict(latency=math.nan), r"latency must be finite, got nan"),
        (dict(client_latency=[0.1, 0.2]), r"client_latency must have one entry per client"),
        (
            dict(client_latency=[0.1, -0.2, 0.0, 0.0]),
            r"client_latency\[1\] must be >= 0, got -0\.2",
        ),
        (dict(server_rate=0.0), r"server_rate must be > 0, got 0\.0"),
        (dict(server_rate=math.inf), r"server_rate must be finite, got inf"),
    ],
)
def test_bad_inputs_are_rejected(kwargs: dict[str, object], match: str) -> None:
    values: dict[str, object] = dict(mu=MU, p=P, concurrency=6)
    values.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        ClosedNetwork(**values)  # type: ignore[arg-type]


def test_config_error_is_value_error() -> None:
    with pytest.raises(ValueError):
        ClosedNetwork(mu=MU, p=P, concurrency=0)


def test_sum_tolerance_is_relative_1e9() -> None:
    ClosedNetwork(mu=[1.0, 1.0], p=[0.5, 0.5 + 5e-10], concurrency=1)
    with pytest.raises(ConfigError, match="must sum to 1"):
        ClosedNetwork(mu=[1.0, 1.0], p=[0.5, 0.5 + 5e-9], concurrency=1)


def test_extensions_and_total_latency() -> None:
    net = ClosedNetwork(
        mu=MU, p=P, concurrency=3, latency=0.5, client_latency=[0.0, 1.0, 0.0, 2.0], server_rate=2.0
    )
    assert net.has_extensions
    np.testing.assert_allclose(net.total_latency, [0.5, 1.5, 0.5, 2.5])
    assert net.bottleneck_throughput == pytest.approx(2.0)
    assert (
        ClosedNetwork(mu=MU, p=P, concurrency=3, client_latency=[0.0] * 4).has_extensions is False
    )


def test_from_config() -> None:
    config = load_config(EXAMPLE)
    net = ClosedNetwork.from_config(config, server_rate=3.0)
    np.testing.assert_allclose(net.mu, MU)
    np.testing.assert_allclose(net.p, P)
    assert net.concurrency == 6 and net.server_rate == 3.0


def test_from_config_rejects_return_to_sender() -> None:
    config = load_config(EXAMPLE)
    from raysync.config import AlgorithmConfig, RoutingConfig

    rts = config.replace(
        routing=RoutingConfig(kind="return_to_sender"),
        algorithm=AlgorithmConfig(name="asyncsgd"),
        concurrency=4,
    )
    with pytest.raises(ConfigError, match="return_to_sender"):
        ClosedNetwork.from_config(rts)


def test_routing_probabilities_above_one_are_refused_before_summing() -> None:
    # math.fsum overflows on entries near the float limit: the rule is checked first.
    with pytest.raises(ConfigError, match=r"p\[0\] must be a probability in \(0, 1\], got 1e\+308"):
        ClosedNetwork(mu=np.array([1.0, 1.0]), p=np.array([1e308, 1e308]), concurrency=2)
    with pytest.raises(ConfigError, match=r"p\[1\] must be a probability in \(0, 1\], got 1\.5"):
        ClosedNetwork(mu=np.array([1.0, 1.0]), p=np.array([0.5, 1.5]), concurrency=2)
