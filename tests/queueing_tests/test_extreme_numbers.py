"""Extreme but valid inputs: finite, correct numbers or a clear refusal (issue 12, Numbers).

Every case is checked against a closed form, not against another solver:

* one client holding all ``C`` tasks: ``Lambda = mu``, ``Q = C``, ``E[D] = C - 1``;
* ``n`` identical clients with uniform routing: ``G(K) = rho^K binom(n + K - 1, K)``, so
  ``Lambda = n mu C / (n + C - 1)``, ``Q_i = C / n``, ``U_i = C / (n + C - 1)`` and
  ``E[D_i] = Q_i(C - 1) / p_i = C - 1``;
* two clients, exact rational arithmetic: ``G(K) = sum_x rho_1^x rho_2^(K - x)``,
  ``Q_1(K) = sum_m rho_1^m G(K - m) / G(K)``, ``E[D_1] = Q_1(C - 1) / p_1``;
* return to sender: ``Lambda = sum mu``, ``E[D_i] = sum_{j != i} mu_j / mu_i``.
"""

from __future__ import annotations

import functools
from fractions import Fraction

import numpy as np
import pytest

from raysync.config import (
    AlgorithmConfig,
    ClientSpec,
    RoutingConfig,
    ServiceTimeSpec,
    SystemConfig,
)
from raysync.exceptions import ConfigError
from raysync.queueing import ClosedNetwork, analyze, predict
from raysync.queueing.predict import analyze_independent_cycles

RATES = (1e-300, 1e-9, 1.0, 1e9, 1e300)
METHODS = ("mva", "buzen")


def _finite(res: object) -> None:
    for name in (
        "client_throughput",
        "utilization",
        "mean_queue_length",
        "mean_sojourn_time",
        "mean_relative_delay",
    ):
        assert np.all(np.isfinite(getattr(res, name))), name
    assert np.isfinite(res.throughput) and np.isfinite(res.mean_staleness)  # type: ignore[attr-defined]


# Population 100,000 costs seconds per solve: only at the two ends of the rate range.
BIG = [(mu, 100_000) for mu in (RATES[0], RATES[-1])]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("mu", "c"), [(mu, c) for mu in RATES for c in (1, 2, 1000)] + BIG)
def test_one_client(method: str, mu: float, c: int) -> None:
    res = analyze(ClosedNetwork(mu=[mu], p=[1.0], concurrency=c), method=method)
    _finite(res)
    assert res.throughput == pytest.approx(mu, rel=1e-12, abs=0)
    assert res.mean_queue_length[0] == pytest.approx(c, rel=1e-9)
    assert res.mean_relative_delay[0] == pytest.approx(c - 1, rel=1e-9, abs=1e-9)
    assert res.utilization[0] == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("mu", "n", "c"),
    [(mu, n, c) for mu in RATES for n, c in ((2, 1), (2, 7), (1000, 3), (1000, 5000))]
    + [(mu, 10, c) for mu, c in BIG],
)
def test_identical_clients(method: str, mu: float, n: int, c: int) -> None:
    res = analyze(ClosedNetwork(mu=[mu] * n, p=[1.0 / n] * n, concurrency=c), method=method)
    _finite(res)
    assert res.throughput == pytest.approx(n * mu * c / (n + c - 1), rel=1e-9, abs=0)
    np.testing.assert_allclose(res.mean_queue_length, c / n, rtol=1e-9)
    np.testing.assert_allclose(res.utilization, c / (n + c - 1), rtol=1e-9)
    np.testing.assert_allclose(res.mean_relative_delay, c - 1, rtol=1e-8, atol=1e-9)
    assert res.mean_staleness == pytest.approx(c - 1, rel=1e-8, abs=1e-9)


@functools.cache
def _two_client_exact(mu: tuple[float, float], p: tuple[float, float], c: int) -> tuple[float, ...]:
    rho = [Fraction(p[i]) / Fraction(mu[i]) for i in range(2)]

    def g(k: int) -> Fraction:
        return sum((rho[0] ** x * rho[1] ** (k - x) for x in range(k + 1)), Fraction(0))

    gs = [g(k) for k in range(c + 1)]

    def q(i: int, k: int) -> Fraction:
        return sum((rho[i] ** m * gs[k - m] for m in range(1, k + 1)), Fraction(0)) / gs[k]

    lam = gs[c - 1] / gs[c]
    delays = [q(i, c - 1) / Fraction(p[i]) for i in range(2)]
    return float(lam), float(delays[0]), float(delays[1])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "mu", [(1e-9, 1e9), (1e9, 1e-9), (3.7, 1e9), (1e-300, 1e-299), (2e300, 3e300)]
)
def test_two_clients_exact_rational(method: str, mu: tuple[float, float]) -> None:
    p, c = (0.3, 0.7), 40
    lam, d0, d1 = _two_client_exact(mu, p, c)
    res = analyze(ClosedNetwork(mu=list(mu), p=list(p), concurrency=c), method=method)
    _finite(res)
    assert res.throughput == pytest.approx(lam, rel=1e-9, abs=0)
    # Tiny delays (1e-16) are compared relatively too: no absolute floor hides them.
    assert res.mean_relative_delay[0] == pytest.approx(d0, rel=1e-8, abs=0)
    assert res.mean_relative_delay[1] == pytest.approx(d1, rel=1e-8, abs=0)
    assert res.mean_staleness == pytest.approx(c - 1, rel=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_huge_concurrency_keeps_the_identity(method: str) -> None:
    """Heterogeneous fleet, C = 1e5: sum_i p_i E[D_i] = C - 1 whatever p and mu."""
    mu, p = [1e-9, 2.0, 4e9, 0.5], [0.4, 0.3, 0.2, 0.1]
    res = analyze(ClosedNetwork(mu=mu, p=p, concurrency=100_000), method=method)
    _finite(res)
    assert res.mean_staleness == pytest.approx(99_999, rel=1e-9)
    assert np.all(res.utilization <= 1.0 + 1e-12)
    # The slowest client (demand 4e8, all others below 1) holds nearly every task.
    assert res.throughput == pytest.approx(1e-9 / 0.4, rel=1e-6, abs=0)


@pytest.mark.parametrize(
    ("mu", "delays"),
    [
        ((1e9, 1e-9), (1e-18, 1e18)),  # sum - mu_0 would cancel to 0
        ((1e-9,) * 4, (3.0,) * 4),
        ((1e300, 1e300), (1.0, 1.0)),
        ((8e307, 8e307), (1.0, 1.0)),
    ],
)
def test_independent_cycles_closed_form(mu: tuple[float, ...], delays: tuple[float, ...]) -> None:
    res = analyze_independent_cycles(mu)
    _finite(res)
    np.testing.assert_allclose(res.mean_relative_delay, delays, rtol=1e-12)
    assert res.throughput == pytest.approx(sum(mu), rel=1e-12, abs=0)
    assert res.mean_staleness == pytest.approx(len(mu) - 1, rel=1e-12)


@pytest.mark.parametrize(
    ("mu", "match"),
    [
        ((1.7e308, 1.7e308), r"throughput sum\(mu\) = .* beyond the float range"),
        ((1e-300, 1e300), r"E\[D_i\].*client 0 \(mu\[0\] = 1e-300\).*factor of 1.8e308"),
        ((1e-320, 1.0), r"client 0 \(mu\[0\] = 1e-320\)"),
    ],
)
def test_independent_cycles_refuses_what_floats_cannot_hold(
    mu: tuple[float, ...], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        analyze_independent_cycles(mu)


def test_predict_fedbuff_config_carries_both_units() -> None:
    cfg = SystemConfig(
        clients=tuple(
            ClientSpec(service_time=ServiceTimeSpec(kind="exponential", rate=r))
            for r in (1.0, 2.0, 4.0, 0.5)
        ),
        concurrency=6,
        routing=RoutingConfig(kind="fixed", p=(0.4, 0.3, 0.2, 0.1)),
        algorithm=AlgorithmConfig(name="fedbuff", buffer_size=5),
    )
    res = predict(cfg)
    assert res.buffer_size == 5
    np.testing.assert_allclose(res.mean_relative_delay, [8.698, 1.801, 0.679, 8.449], atol=1e-3)
    np.testing.assert_allclose(res.mean_version_delay, res.mean_relative_delay / 5)
    assert res.mean_version_staleness == pytest.approx(1.0)
    assert res.version_throughput == pytest.approx(2.45056 / 5, rel=1e-5)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("latency", [1e307, 4.4e307, 1e308, 1.7e308])
def test_a_latency_beyond_every_demand_gives_the_utilisation_law(
    method: str, latency: float
) -> None:
    """Z >> 1/mu_i: every task is in transit, ``Lambda = C / Z`` to double precision and
    ``U_i = Q_i = p_i Lambda / mu_i`` (a latency of 1e308 s once clamped both rates and
    reported 2.5e-301 for either)."""
    mu = np.array([1.0, 2.0])
    net = ClosedNetwork(mu=mu, p=[0.5, 0.5], concurrency=3, latency=latency)
    res = analyze(net, method=method)
    lam = 3.0 / latency
    assert res.throughput == pytest.approx(lam, rel=1e-12, abs=0)
    # a subnormal result (< 2.2e-308) is exact to its last bit, 5e-324, not to 1e-12
    busy = 0.5 * lam / mu
    np.testing.assert_allclose(res.utilization, busy, rtol=1e-12, atol=1e-322)
    np.testing.assert_allclose(res.mean_queue_length, busy, rtol=1e-12, atol=1e-322)
    np.testing.assert_allclose(res.mean_sojourn_time, 1.0 / mu, rtol=1e-12)
    np.testing.assert_allclose(res.mean_relative_delay, [2.0, 2.0], rtol=1e-12)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("server_rate", "latency"), [(1e-308, 0.0), (3e-308, 0.0), (5.0, 1e308)])
def test_a_server_at_the_end_of_the_float_range(
    method: str, server_rate: float, latency: float
) -> None:
    """The server's rate is rescaled by the full ``2**e``, not by at most ``2**1000``: a
    server of rate 1e-308 is the bottleneck (``Lambda = server_rate``, busy all the time),
    where it was reported at 6e-316 with a utilisation of 6e-8."""
    net = ClosedNetwork(
        mu=[1.0, 2.0], p=[0.5, 0.5], concurrency=3, latency=latency, server_rate=server_rate
    )
    res = analyze(net, method=method)
    if latency == 0.0:
        # the clients' demands (<= 0.5 s) vanish beside 1 / server_rate >= 3e307 s
        assert res.throughput == pytest.approx(server_rate, rel=1e-12, abs=0)
        assert res.server_utilization == pytest.approx(1.0, rel=1e-12, abs=0)
        assert res.server_queue_length == pytest.approx(3.0, rel=1e-12, abs=0)
    else:
        lam = 3.0 / latency
        assert res.throughput == pytest.approx(lam, rel=1e-12, abs=0)
        assert res.server_utilization == pytest.approx(lam / server_rate, rel=1e-9, abs=0)
