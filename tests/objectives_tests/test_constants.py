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
    # logistic regression: step 1 / L_0 never raises f, so the pilot is plain descent
    assert est.pilot_halvings == 0 and len(est.pilot_losses) == 31
    assert all(b < a for a, b in zip(est.pilot_losses, est.pilot_losses[1:], strict=False))
    assert est.pilot_losses[0] == est.initial_loss and min(est.pilot_losses) == est.best_loss
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


class PseudoHuberComputer:
    """``loss = mean_j sqrt(1 + (w - x_j)^2)`` in one dimension (float32 results).

    Its curvature ``(1 + r^2)^(-3/2)`` at distance ``r`` from the data grows as descent
    approaches the data: at ``r = 10`` it is ``~1e-3``, so the pilot's first step
    ``1 / L_0 ~ 1000`` overshoots to ``r ~ 1000`` (the CNN's case: curvature growing
    along the trajectory, in closed form).
    """

    def compute_gradient(self, w, x, y):  # noqa: ANN001, ANN201 - the GradientComputer API
        del y
        d = float(np.asarray(w, dtype=np.float64)[0]) - np.asarray(x, dtype=np.float64)[:, 0]
        root = np.sqrt(1.0 + d**2)
        return np.array([np.mean(d / root)], dtype=np.float32), float(np.mean(root))


def _huber_clients() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(11)
    return [((c + 0.1 * rng.standard_normal((30, 1))).astype(np.float32),
             np.zeros(30, dtype=np.int64)) for c in (-1.0, 1.0)]


def _huber_loss(w: float, clients: list[tuple[np.ndarray, np.ndarray]]) -> float:
    return float(np.mean([np.mean(np.sqrt(1.0 + (w - x[:, 0].astype(np.float64)) ** 2))
                          for x, _ in clients]))


def test_pilot_halves_a_step_that_would_raise_the_loss() -> None:
    clients = _huber_clients()
    est = estimate_constants(PseudoHuberComputer(), clients, np.array([10.0]), batch_size=8,
                             num_points=3, fstar_steps=20, seed=0)
    losses = est.pilot_losses
    assert len(losses) == 21 and losses[0] == pytest.approx(_huber_loss(10.0, clients))
    # plain descent at 1 / L_0 would jump ~1000 away (f ~ 1000); every step is a descent
    assert est.pilot_halvings >= 5
    assert all(b <= a * (1 + 1e-6) for a, b in zip(losses, losses[1:], strict=False))
    # the last step is 1 / L_0 halved that often; L_0 = max_i f_i''(10) in closed form
    l0 = max(float(np.mean((1.0 + (10.0 - x[:, 0].astype(np.float64)) ** 2) ** -1.5))
             for x, _ in clients)
    assert est.pilot_step_size * 2**est.pilot_halvings == pytest.approx(1.0 / l0, rel=0.02)
    # it gets near the minimiser: f there (brute force over a grid) is ~1.4
    grid = np.linspace(-3.0, 3.0, 6001)
    f_min = min(_huber_loss(float(w), clients) for w in grid[::20])
    assert est.best_loss < f_min + 0.05 and est.best_loss == min(losses)
    # the points measured on a descending trajectory: |grad f_i| < 1, so zeta^2 <= 1
    assert 0 < est.zeta2 <= 1.0 and math.isfinite(est.constants.L)


class OffStartNaN(PseudoHuberComputer):
    """The pseudo-Huber loss, but a non-finite loss anywhere but at the start ``w = 10``."""

    def compute_gradient(self, w, x, y):  # noqa: ANN001, ANN201
        grad, loss = super().compute_gradient(w, x, y)
        return grad, (loss if float(w[0]) == 10.0 else math.nan)


def test_pilot_stays_put_when_every_step_gives_a_non_finite_loss() -> None:
    est = estimate_constants(OffStartNaN(), _huber_clients(), np.array([10.0]), batch_size=8,
                             num_points=2, fstar_steps=4, seed=0)
    # the step and its 30 halvings all fail at the first step: the trajectory stays at w_0
    assert est.pilot_halvings == 30
    assert est.pilot_losses == (est.initial_loss,) * 5 and est.best_loss == est.initial_loss
    c = est.constants
    assert all(math.isfinite(v) for v in (c.L, c.sigma2, c.M2, c.A, est.zeta2))


class RaisesLater(PseudoHuberComputer):
    """A user's model that raises on its 5th gradient (recommend showed a traceback)."""

    def __init__(self) -> None:
        self.calls = 0

    def compute_gradient(self, w, x, y):  # noqa: ANN001, ANN201
        self.calls += 1
        if self.calls == 5:
            raise TypeError("late failure in forward")
        return super().compute_gradient(w, x, y)


class AlwaysNaN(PseudoHuberComputer):
    loss_name = "userwl:nan_loss"

    def compute_gradient(self, w, x, y):  # noqa: ANN001, ANN201
        grad, _ = super().compute_gradient(w, x, y)
        return grad * math.nan, math.nan


def test_pilot_names_the_client_whose_model_raised() -> None:
    from raysync.exceptions import RuntimeFailure

    with pytest.raises(RuntimeFailure) as info:
        estimate_constants(RaisesLater(), _huber_clients(), np.array([10.0]), batch_size=8,
                           num_points=2, fstar_steps=4, seed=0)  # fmt: skip
    # calls 1-2: the full gradients at w_0; 3-4: client 0's power iteration; 5: its third
    assert str(info.value) == (
        "client 0 raised TypeError in the pilot (the bound's constants) on 30 samples: late "
        "failure in forward. Fix the client's data or model configuration"
    )


def test_pilot_failure_says_which_loss_was_not_finite() -> None:
    """A NaN loss failed as "gradients do not change with w", naming neither loss nor NaN."""
    with pytest.raises(ConfigError) as info:
        estimate_constants(AlwaysNaN(), _huber_clients(), np.array([10.0]), batch_size=8,
                           num_points=2, fstar_steps=4, seed=0)  # fmt: skip
    assert str(info.value) == (
        "could not estimate the curvature: gradients do not change with w; the loss "
        "'userwl:nan_loss' was nan (gradient not finite) for client 0 on 30 samples at pilot "
        "evaluation 1: the model or the loss diverges (check the loss and the data)"
    )
