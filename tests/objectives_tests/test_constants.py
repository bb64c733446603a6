"""Estimators: service rates from durations, problem constants from a pilot run."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest

from raysync.exceptions import ConfigError
from raysync.objectives import (
    estimate_constants,
    estimate_constants_for_config,
    estimate_service_rate,
    estimate_service_rates,
)


def test_exponential_mle_recovers_known_rates() -> None:
    rng = np.random.default_rng(2024)
    for rate in (0.5, 2.0, 40.0):
        est = estimate_service_rate(rng.exponential(1 / rate, size=400), confidence=0.99)
        assert est.method == "exponential" and est.num_samples == 400
        assert est.lower < est.rate < est.upper
        assert est.covers(rate)
        assert est.rate == pytest.approx(rate, rel=0.2)


def test_exponential_interval_is_exact() -> None:
    # N = 1: the interval is [chi2_{2}(a/2), chi2_{2}(1-a/2)] / (2 t) = [-ln(1-a/2), -ln(a/2)] / t
    est = estimate_service_rate([2.0], confidence=0.9)
    assert est.rate == 0.5
    assert est.lower == pytest.approx(-math.log(1 - 0.05) / 2.0, rel=1e-12)
    assert est.upper == pytest.approx(-math.log(0.05) / 2.0, rel=1e-12)


@pytest.mark.parametrize("method", ["exponential", "mean"])
def test_interval_coverage_over_repeats(method: str) -> None:
    rng = np.random.default_rng(99)
    rate = 3.0
    hits = 0
    for _ in range(200):
        est = estimate_service_rate(rng.exponential(1 / rate, size=60), method=method,
                                    confidence=0.99)
        hits += est.covers(rate)
    assert hits >= 190  # >= 95 % of 200 repeats for a 99 % interval


def test_mean_method_for_non_exponential_service() -> None:
    rng = np.random.default_rng(5)
    mean, cv = 0.25, 0.5
    sigma = math.sqrt(math.log(1 + cv**2))
    durations = rng.lognormal(math.log(mean) - sigma**2 / 2, sigma, size=2000)
    est = estimate_service_rate(durations, method="mean")
    assert est.covers(1 / mean)
    assert est.rate == pytest.approx(4.0, rel=0.05)
    both = estimate_service_rates([durations, durations[:100]], method="mean")
    assert len(both) == 2 and both[1].num_samples == 100


def test_rate_estimation_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="at least one observed service time"):
        estimate_service_rate([])
    with pytest.raises(ConfigError, match=r"durations\[1\] must be a finite time > 0, got -1"):
        estimate_service_rate([1.0, -1.0])
    with pytest.raises(ConfigError, match=r"durations\[0\] must be a finite time > 0"):
        estimate_service_rate([float("nan")])
    with pytest.raises(ConfigError, match="method must be one of exponential, mean"):
        estimate_service_rate([1.0], method="median")
    with pytest.raises(ConfigError, match=r"confidence must be in \(0, 1\)"):
        estimate_service_rate([1.0], confidence=1.0)
    with pytest.raises(ConfigError, match="needs at least 2 durations"):
        estimate_service_rate([1.0], method="mean")
    with pytest.raises(ConfigError, match=r"client 1: durations\[0\]"):
        estimate_service_rates([[1.0], [0.0]])


@pytest.fixture()
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one torch thread (and do not fight other processes)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _digits_config(partition: str) -> object:
    from raysync.config import ClientSpec, DataConfig, SystemConfig

    return SystemConfig(
        clients=tuple(ClientSpec() for _ in range(4)),
        concurrency=4,
        data=DataConfig(dataset="digits", partition=partition, alpha=0.1),
        seed=3,
    )


@pytest.mark.usefixtures("one_thread")
def test_constants_from_a_pilot_run_on_digits() -> None:
    from raysync.workload import build_workload

    config = _digits_config("iid")
    est = estimate_constants_for_config(config, fstar_steps=30, num_points=2)  # type: ignore[arg-type]
    c = est.constants
    assert c.L > 0 and c.sigma2 > 0 and c.M2 >= 0 and c.A > 0
    # logistic regression: the Hessian of f_i is at most (1/2) X~^T X~ / N_i (X~: inputs
    # with a bias column), so every gradient-difference ratio is below that bound
    workload = build_workload(config)  # type: ignore[arg-type]
    bound = 0.0
    for i in range(4):
        x, _ = workload.client_data(i)
        xt = np.hstack([x.astype(np.float64), np.ones((x.shape[0], 1))])
        bound = max(bound, 0.5 * float(np.linalg.eigvalsh(xt.T @ xt / x.shape[0])[-1]))
    assert c.L <= bound * 1.01
    assert c.L >= 0.05 * bound  # the power iteration finds a sizeable curvature
    assert est.best_loss < est.initial_loss
    assert c.A == pytest.approx(est.initial_loss - 0.9 * est.best_loss)
    assert len(est.sigma2_per_point) == 2 and est.M2_mean <= c.M2
    # label skew makes the clients' gradients disagree much more than IID data
    skewed = estimate_constants_for_config(
        _digits_config("dirichlet"), fstar_steps=30, num_points=2  # type: ignore[arg-type]
    )
    assert skewed.constants.M2 > 3 * c.M2


def test_constants_estimation_rejects_bad_input() -> None:
    from raysync.models import GradientComputer, LogisticRegression

    computer = GradientComputer(LogisticRegression(3, 2))
    w0 = computer.get_params()
    x = np.random.default_rng(0).random((10, 3)).astype(np.float32)
    y = np.array([0, 1] * 5)
    with pytest.raises(ConfigError, match="at least one client"):
        estimate_constants(computer, [], w0)
    with pytest.raises(ConfigError, match="client 1 has no data"):
        estimate_constants(computer, [(x, y), (x[:0], y[:0])], w0)
    with pytest.raises(ConfigError, match="margin must be in"):
        estimate_constants(computer, [(x, y)], w0, margin=1.0)
    with pytest.raises(ConfigError, match="num_batches must be an integer >= 2"):
        estimate_constants(computer, [(x, y)], w0, num_batches=1)
