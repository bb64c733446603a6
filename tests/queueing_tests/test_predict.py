from __future__ import annotations

import numpy as np
import pytest

from raysync.config import (
    AlgorithmConfig,
    ClientSpec,
    RoutingConfig,
    RunConfig,
    ServiceTimeSpec,
    SystemConfig,
)
from raysync.exceptions import ConfigError
from raysync.queueing import ClosedNetwork, analyze, analyze_independent_cycles, predict
from raysync.simulation import simulate

MU = (0.5, 1.0, 2.0, 5.0)


def _config(routing: RoutingConfig, *, updates: int = 1000) -> SystemConfig:
    algorithm = "asyncsgd" if routing.kind == "return_to_sender" else "generalized_asyncsgd"
    return SystemConfig(
        clients=tuple(ClientSpec(service_time=ServiceTimeSpec(rate=m)) for m in MU),
        concurrency=len(MU),
        routing=routing,
        algorithm=AlgorithmConfig(name=algorithm),
        run=RunConfig(num_updates=updates, train=False),
        seed=3,
    )


def test_independent_cycles_hand_computed() -> None:
    res = analyze_independent_cycles(MU)
    assert res.method == "independent_cycles"
    assert res.throughput == pytest.approx(8.5)
    # E[D_i] = (8.5 - mu_i) / mu_i
    np.testing.assert_allclose(res.mean_relative_delay, [16.0, 7.5, 3.25, 0.7])
    np.testing.assert_allclose(res.client_throughput, MU)
    # Update-weighted mean: sum_i (mu_i / 8.5) * (8.5 - mu_i) / mu_i = n - 1.
    assert res.mean_staleness == pytest.approx(len(MU) - 1)


def test_independent_cycles_agrees_with_the_simulator() -> None:
    # 400k updates: the slowest client completes ~24k tasks, so its batch-means 99% CI is a
    # few percent wide; the theory must fall inside every client's interval.
    config = _config(RoutingConfig(kind="return_to_sender"), updates=400_000)
    theory = predict(config)
    sim = simulate(config)
    low, high = sim.throughput_ci
    assert low <= theory.throughput <= high
    for i, expected in enumerate(theory.mean_relative_delay):
        lo, hi = sim.relative_delay_ci[i]
        assert lo <= expected <= hi, (i, expected, (lo, hi))


def test_predict_uses_the_closed_network_for_random_routing() -> None:
    p = (0.1, 0.2, 0.3, 0.4)
    config = _config(RoutingConfig(kind="fixed", p=p))
    direct = analyze(ClosedNetwork(mu=MU, p=p, concurrency=len(MU)))
    res = predict(config)
    assert res.method == "mva"
    assert res.throughput == direct.throughput
    np.testing.assert_array_equal(res.mean_relative_delay, direct.mean_relative_delay)


@pytest.mark.parametrize("bad", [(1.0, -2.0), (1.0, float("nan")), ()])
def test_independent_cycles_rejects_bad_rates(bad: tuple[float, ...]) -> None:
    with pytest.raises(ConfigError, match="mu"):
        analyze_independent_cycles(bad)
