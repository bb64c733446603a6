"""docs/theory.md worked example, identities of the closed network, the result object."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from raysync.exceptions import ConfigError
from raysync.queueing import (
    METHODS,
    ClosedNetwork,
    QueueingResult,
    analyze,
    log_normalizing_constants,
    stationary_distribution,
)

MU = [1.0, 2.0, 4.0, 0.5]
P = [0.4, 0.3, 0.2, 0.1]
EXAMPLE = ClosedNetwork(mu=MU, p=P, concurrency=6)


def _random_network(seed: int, n: int, c: int, **kwargs: object) -> ClosedNetwork:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(n)) + 0.01
    return ClosedNetwork(mu=rng.lognormal(0.0, 1.0, n), p=p / p.sum(), concurrency=c, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", METHODS)
def test_theory_worked_example(method: str) -> None:
    r = analyze(EXAMPLE, method=method)
    assert isinstance(r, QueueingResult)
    assert r.method == method and r.concurrency == 6 and r.n_clients == 4
    assert round(r.throughput, 5) == 2.45056
    np.testing.assert_array_equal(np.round(r.mean_relative_delay, 3), [8.698, 1.801, 0.679, 8.449])
    assert r.mean_staleness == pytest.approx(5.0, rel=1e-12)
    assert float(np.dot(P, r.mean_relative_delay)) == pytest.approx(5.0, rel=1e-12)


def test_derived_quantities_are_consistent() -> None:
    r = analyze(EXAMPLE)
    lam = r.throughput
    np.testing.assert_allclose(r.client_throughput, np.array(P) * lam)
    np.testing.assert_allclose(r.utilization, np.array(P) / np.array(MU) * lam)
    # Little's law at each client and MVA's T_i(C) = (1 + Q_i(C-1)) / mu_i
    np.testing.assert_allclose(r.mean_queue_length, r.client_throughput * r.mean_sojourn_time)
    prev = analyze(EXAMPLE.with_concurrency(5))
    np.testing.assert_allclose(r.mean_sojourn_time, (1 + prev.mean_queue_length) / np.array(MU))
    np.testing.assert_allclose(r.mean_relative_delay, prev.mean_queue_length / np.array(P))
    assert r.mean_queue_length.sum() == pytest.approx(6.0)
    np.testing.assert_array_equal(r.mean_in_transit, np.zeros(4))
    assert r.server_utilization is None and r.server_queue_length is None


def test_matches_product_form_stationary_distribution() -> None:
    states, pi = stationary_distribution(EXAMPLE)
    rho = np.array(P) / np.array(MU)
    weights = np.prod(rho[None, :] ** states, axis=1)
    np.testing.assert_allclose(pi, weights / weights.sum(), rtol=1e-10)
    log_g = log_normalizing_constants(EXAMPLE)
    assert log_g[-1] == pytest.approx(np.log(weights.sum()), rel=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_mean_staleness_is_c_minus_1_for_any_p(seed: int) -> None:
    for c in (1, 2, 7, 30):
        net = _random_network(seed, 6, c)
        r = analyze(net)
        assert r.mean_staleness == pytest.approx(c - 1, rel=1e-12, abs=1e-12)
        ext = _random_network(
            seed, 6, c, latency=0.3, client_latency=np.linspace(0, 1, 6), server_rate=4.0
        )
        assert analyze(ext).mean_staleness == pytest.approx(c - 1, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_single_task_has_no_staleness(method: str) -> None:
    net = _random_network(3, 4, 1)
    r = analyze(net, method=method)
    np.testing.assert_array_equal(r.mean_relative_delay, np.zeros(4))
    # one task: Lambda = 1 / sum_i p_i / mu_i
    assert r.throughput == pytest.approx(1.0 / net.rho.sum(), rel=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_single_client_has_delay_c_minus_1(method: str) -> None:
    for c in (1, 2, 5):
        r = analyze(ClosedNetwork(mu=[3.0], p=[1.0], concurrency=c), method=method)
        assert r.mean_relative_delay[0] == pytest.approx(c - 1, rel=1e-12, abs=1e-12)
        assert r.throughput == pytest.approx(3.0, rel=1e-12)
        assert r.utilization[0] == pytest.approx(1.0)


def test_utilisation_at_most_one_and_throughput_bounded_increasing_concave() -> None:
    for seed in range(8):
        net = _random_network(seed, 5, 60)
        r = analyze(net, curve=True)
        assert r.throughput_curve is not None
        assert np.all(r.utilization <= 1.0 + 1e-12)
        lam = r.throughput_curve
        bound = net.bottleneck_throughput
        assert np.all(np.diff(lam) >= -1e-12 * bound)
        assert np.all(np.diff(lam[:10]) > 0)  # strictly increasing before saturation
        assert np.all(lam <= bound * (1 + 1e-12))
        assert np.all(np.diff(lam, 2) <= 1e-12 * bound)  # non-increasing increments
        assert lam[-1] == pytest.approx(net.bottleneck_throughput, rel=0.05)


def test_curve_matches_separate_runs() -> None:
    r = analyze(EXAMPLE, curve=True)
    assert r.has_curve
    assert r.throughput_curve is not None and r.throughput_curve.shape == (6,)
    assert r.queue_length_curve is not None and r.queue_length_curve.shape == (6, 4)
    assert r.relative_delay_curve is not None and r.relative_delay_curve.shape == (6, 4)
    for k in range(1, 7):
        rk = analyze(EXAMPLE.with_concurrency(k))
        assert r.throughput_curve[k - 1] == pytest.approx(rk.throughput, rel=1e-13)
        np.testing.assert_allclose(r.queue_length_curve[k - 1], rk.mean_queue_length, rtol=1e-13)
        np.testing.assert_allclose(
            r.relative_delay_curve[k - 1], rk.mean_relative_delay, rtol=1e-13, atol=1e-15
        )
    np.testing.assert_array_equal(r.relative_delay_curve[0], 0.0)
    assert analyze(EXAMPLE).throughput_curve is None


def test_curve_of_c_equal_1() -> None:
    r = analyze(EXAMPLE.with_concurrency(1), curve=True)
    assert r.relative_delay_curve is not None
    np.testing.assert_array_equal(r.relative_delay_curve, np.zeros((1, 4)))


def test_result_is_frozen_and_json_safe() -> None:
    r = analyze(EXAMPLE, curve=True)
    with pytest.raises(ValueError, match="read-only"):
        r.mean_relative_delay[0] = 0.0
    data = json.loads(json.dumps(r.to_dict()))
    assert data["throughput"] == pytest.approx(r.throughput)
    assert data["method"] == "mva" and data["concurrency"] == 6
    assert len(data["mean_relative_delay"]) == 4
    assert np.shape(data["relative_delay_curve"]) == (6, 4)
    assert data["server_utilization"] is None
    for key in (
        "throughput",
        "mean_relative_delay",
        "mean_queue_length",
        "utilization",
        "client_throughput",
        "mean_staleness",
    ):
        assert key in data


def test_unknown_method_and_bad_network() -> None:
    with pytest.raises(
        ConfigError, match="method must be one of mva, buzen, bruteforce, got 'exact'"
    ):
        analyze(EXAMPLE, method="exact")
    with pytest.raises(ConfigError, match="network must be a ClosedNetwork"):
        analyze({"mu": MU})  # type: ignore[arg-type]


def test_bruteforce_refuses_large_state_space() -> None:
    net = ClosedNetwork(mu=np.ones(30), p=np.full(30, 1 / 30), concurrency=20)
    with pytest.raises(
        ValueError,
        match=r"bruteforce counts chain has \d+ states .*use method 'mva' or 'buzen' \(method=",
    ):
        analyze(net, method="bruteforce")


def test_result_can_be_built_by_other_producers() -> None:
    # the simulator builds the same result type from measurements
    ones = np.ones(3)
    r = QueueingResult(
        throughput=2.0,
        client_throughput=ones,
        utilization=ones / 2,
        mean_queue_length=ones,
        mean_sojourn_time=ones,
        mean_relative_delay=ones,
        mean_staleness=1.0,
        concurrency=2,
        n_clients=3,
        method="simulation",
    )
    np.testing.assert_array_equal(r.mean_in_transit, np.zeros(3))
    assert r.throughput_curve is None and not r.has_curve


def test_replace_revalidates() -> None:
    import dataclasses

    assert dataclasses.replace(EXAMPLE, concurrency=3).concurrency == 3
    with pytest.raises(ConfigError, match="concurrency must be an integer >= 1"):
        dataclasses.replace(EXAMPLE, concurrency=0)


def test_bruteforce_refusal_of_a_huge_state_space_gives_its_magnitude() -> None:
    # C(n + C - 1, n - 1) for C = 100000 has ~5400 digits, beyond CPython's 4300-digit
    # int-to-str limit, which must not surface as the error; log10 via lgamma cross-checks
    n = 2000
    for concurrency in (10_000, 100_000):
        net = ClosedNetwork(mu=np.ones(n), p=np.full(n, 1 / n), concurrency=concurrency)
        with pytest.raises(ValueError, match=r"counts chain has ~\S+e\+\d+ states") as info:
            analyze(net, method="bruteforce")
        message = str(info.value)
        exponent = int(message.split("e+")[1].split()[0])
        log10 = (
            math.lgamma(n + concurrency) - math.lgamma(concurrency + 1) - math.lgamma(n)
        ) / math.log(10)
        assert exponent == math.floor(log10)
        assert "\n" not in message and "max_states=" in message


def test_bruteforce_refuses_a_tagged_chain_too_slow_to_solve() -> None:
    # 3 clients and a server station at C = 30: a counts chain of 5,456 states but a
    # tagged-task chain of ~150,000, whose sparse solve ran for more than 5 minutes (the
    # slow fuzz tier's "hang"); it is refused up front, and C = 16 (15,504) still solves.
    def net(c: int) -> ClosedNetwork:
        return ClosedNetwork(
            mu=np.array([1.0, 2.0, 5.0]),
            p=np.array([0.2, 0.3, 0.5]),
            concurrency=c,
            server_rate=10.0,
        )

    with pytest.raises(ValueError, match=r"tagged-task chain has \d+ states") as info:
        analyze(net(30), method="bruteforce")
    assert "max_states=50000" in str(info.value) and "\n" not in str(info.value)
    exact = analyze(net(16), method="bruteforce")
    mva = analyze(net(16), method="mva")
    np.testing.assert_allclose(exact.throughput, mva.throughput, rtol=1e-9)
    np.testing.assert_allclose(exact.mean_relative_delay, mva.mean_relative_delay, rtol=1e-8)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("method", ["mva", "buzen"])
def test_relative_delay_beyond_float64_is_refused_without_a_numpy_warning(method: str) -> None:
    # Client 0: p = 1e-308, mu = 1e-300, next to a client 1e10 times faster. The
    # delay E[D_0] = Q_0 / p_0 ~ Lambda / mu_0 ~ 1e300 * C would be beyond float64; such a
    # p (subnormal) is refused when the network is built, in one line, and no overflow
    # warning is printed (the fuzz tier saw "RuntimeWarning: overflow encountered in
    # divide" here when it was accepted).
    p = np.array([1e-308, 1.0])
    with pytest.raises(ConfigError, match=r"p\[0\] must be >= 1e-300 .*got 1e-308"):
        ClosedNetwork(mu=np.array([1e-300, 1e10]), p=p / p.sum(), concurrency=5)
    # 18 orders of magnitude less extreme, the same shape is finite: client 0's demand
    # p_0 / mu_0 = 1e10 is 1e20 times client 1's, so at population C - 1 all 4 tasks sit
    # at client 0 and E[D_0] = Q_0(C-1) / p_0 = 4 / 1e-290 (arrival theorem, section 2).
    p = np.array([1e-290, 1.0])
    net = ClosedNetwork(mu=np.array([1e-300, 1e10]), p=p / p.sum(), concurrency=5)
    result = analyze(net, method=method)
    assert np.all(np.isfinite(result.mean_relative_delay))
    assert result.mean_relative_delay[0] == pytest.approx(4e290, rel=1e-6)
