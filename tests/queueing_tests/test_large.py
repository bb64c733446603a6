"""Large networks: finite values, no overflow, MVA agrees with log-space Buzen."""

from __future__ import annotations

import numpy as np
import pytest

from raysync.queueing import ClosedNetwork, analyze, log_normalizing_constants


def _large(seed: int, n: int, c: int, spread: float) -> ClosedNetwork:
    rng = np.random.default_rng(seed)
    mu = np.exp(rng.uniform(-spread, spread, n))
    p = rng.dirichlet(np.ones(n))
    p = (p + 1e-6) / (p + 1e-6).sum()
    return ClosedNetwork(mu=mu, p=p, concurrency=c)


@pytest.mark.parametrize("spread", [0.0, 2.0, 7.0])
def test_n_10000_c_1000_finite_and_matches_buzen(spread: float) -> None:
    net = _large(0, 10_000, 1_000, spread)
    mva = analyze(net)  # speed (target 0.2 s) is benchmarks/bench_queueing.py's claim
    buzen = analyze(net, method="buzen")
    for r in (mva, buzen):
        assert np.isfinite(r.throughput) and r.throughput > 0
        assert np.all(np.isfinite(r.mean_relative_delay))
        assert np.all(np.isfinite(r.mean_queue_length))
        assert np.all(r.utilization <= 1 + 1e-12)
    assert mva.throughput == pytest.approx(buzen.throughput, rel=1e-9)
    np.testing.assert_allclose(
        mva.mean_queue_length, buzen.mean_queue_length, rtol=1e-8, atol=1e-300
    )
    np.testing.assert_allclose(mva.mean_relative_delay, buzen.mean_relative_delay, rtol=1e-8)
    assert mva.mean_staleness == pytest.approx(999.0, rel=1e-10)


def test_symmetric_network_closed_form() -> None:
    # n identical clients with uniform routing: Lambda(C) = n mu C / (n + C - 1),
    # G(C) = binom(n + C - 1, C) rho^C (overflows float64 without log space)
    n, c, mu = 10_000, 1_000, 2.0
    net = ClosedNetwork(mu=np.full(n, mu), p=np.full(n, 1 / n), concurrency=c)
    expected = n * mu * c / (n + c - 1)
    assert analyze(net).throughput == pytest.approx(expected, rel=1e-12)
    assert analyze(net, method="buzen").throughput == pytest.approx(expected, rel=1e-12)
    log_g = log_normalizing_constants(net)
    from math import lgamma, log

    log_binom = lgamma(n + c) - lgamma(c + 1) - lgamma(n)
    assert log_g[-1] == pytest.approx(log_binom + c * log(1 / (n * mu)), rel=1e-12)
    np.testing.assert_allclose(analyze(net).mean_relative_delay, c - 1, rtol=1e-12)


def test_extreme_rates_do_not_overflow() -> None:
    mu = np.array([1e-6, 1e6, 1.0, 1e3])
    p = np.array([0.25, 0.25, 0.25, 0.25])
    net = ClosedNetwork(mu=mu, p=p, concurrency=5_000, latency=1e3, server_rate=1e5)
    mva = analyze(net)
    buzen = analyze(net, method="buzen")
    assert np.isfinite(mva.throughput)
    assert mva.throughput == pytest.approx(buzen.throughput, rel=1e-9)
    np.testing.assert_allclose(mva.mean_relative_delay, buzen.mean_relative_delay, rtol=1e-9)
