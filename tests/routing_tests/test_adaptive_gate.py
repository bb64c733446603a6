"""The adaptive router's significance gate (``change_confidence``) and vectorised intervals."""

from __future__ import annotations

import numpy as np
import pytest

from raysync.config import RoutingConfig
from raysync.exceptions import ConfigError
from raysync.objectives import BoundObjective, ProblemConstants, optimize_routing
from raysync.routing import AdaptiveRouter, BaseRouter, make_router
from raysync.routing.estimation import OnlineRateEstimator
from raysync.testing.contracts import RouterContract
from tests.routing_tests._network import closed_network

MU = np.array([1.0, 1.0, 4.0, 4.0, 16.0])
UNIT = ProblemConstants(L=1.0, sigma2=1.0, M2=0.0, A=1.0)


class TestGatedRouterContract(RouterContract):
    def make_router(self, num_clients: int) -> BaseRouter:
        return AdaptiveRouter(reoptimize_every=5, change_confidence=0.9, window=10)


def _optimum(mu: np.ndarray) -> np.ndarray:
    objective = BoundObjective(mu=mu, constants=UNIT, time_budget=1000.0)
    return np.asarray(optimize_routing(objective, concurrency=4).p)


def _router(gate: float | None) -> AdaptiveRouter:
    """Starts at the optimum for the true rates, which are also its prior (scenario (b))."""
    return AdaptiveRouter(
        reoptimize_every=50, explore=0.0, min_change=0.0, horizon=1000.0,
        initial_p=_optimum(MU), change_confidence=gate,
        estimator=OnlineRateEstimator(MU.size, window=30, prior_rate=MU),
    )  # fmt: skip


def _run(router: AdaptiveRouter, mu_of: object, updates: int, seed: int) -> list[float]:
    """Serve a closed network of 4 tasks (rates ``mu_of(k)`` after ``k`` updates); return
    ``|p - p*|_1`` after every update."""
    router.bind(MU.size, np.random.default_rng(seed))
    gaps: list[float] = []

    def gap(k: int, now: float, began: list[float]) -> None:
        p_star = _optimum_cached(mu_of(k))  # type: ignore[operator]
        gaps.append(float(np.abs(router.routing_probabilities() - p_star).sum()))

    closed_network(router, mu_of, updates, concurrency=4, seed=seed + 1, after=gap)  # type: ignore[arg-type]
    return gaps


_CACHE: dict[bytes, np.ndarray] = {}


def _optimum_cached(mu: np.ndarray) -> np.ndarray:
    key = np.asarray(mu).tobytes()
    if key not in _CACHE:
        _CACHE[key] = _optimum(np.asarray(mu))
    return _CACHE[key]


def test_stationary_noise_does_not_move_p() -> None:
    """Without the gate every check swaps ``p`` (63 of 63: warm-up after 5, 10, 20, 40 and 80
    updates, then every 50) and ``p`` wanders off the optimum for the true rates; with a 99 %
    gate a check swaps only when some client's rate leaves its interval (or, once it has,
    when its estimate rests on twice the durations): 5 clients x 63 checks at 1 % each give
    about 3 false alarms (20 allowed, the checks are not independent: a window of 30
    overlaps from one check to the next)."""
    free, gated = _router(None), _router(0.99)
    gaps_free = _run(free, lambda k: MU, 3000, seed=3)
    gaps_gated = _run(gated, lambda k: MU, 3000, seed=3)
    assert free.routing_version == 63
    assert gated.routing_version <= 20, gated.routing_version
    assert np.mean(gaps_gated) < 0.75 * np.mean(gaps_free), (
        np.mean(gaps_gated),
        np.mean(gaps_free),
    )


def test_a_5x_slowdown_passes_the_gate_quickly() -> None:
    """The fastest client becomes 5x slower at update 1000: the gated router swaps within
    a few checks and ends nearer the new optimum than the old one."""
    slow = MU.copy()
    slow[4] /= 5.0
    router = _router(0.99)
    gaps = _run(router, lambda k: MU if k < 1000 else slow, 2500, seed=4)
    changes = [c for c in router.changes if c.update > 1000]
    assert changes and changes[0].update <= 1300, [c.update for c in changes[:3]]
    assert changes[-1].rates[4] == pytest.approx(slow[4], rel=0.5)
    old_gap = float(np.abs(router.routing_probabilities() - _optimum_cached(MU)).sum())
    assert gaps[-1] < 0.5 * old_gap, (gaps[-1], old_gap)


@pytest.mark.parametrize("method", ["exponential", "mean"])
def test_intervals_are_estimate_vectorised(method: str) -> None:
    est = OnlineRateEstimator(4, method=method, window=50, prior_weight=0.0 if method == "mean"
                              else 1.0)  # fmt: skip
    rng = np.random.default_rng(7)
    for i, count in enumerate((0, 1, 5, 80)):
        est.observe_many(i, rng.lognormal(0.0, 0.8, count))
    lower, upper = est.intervals(0.9)
    est.confidence = 0.9
    for i in range(4):
        one = est.estimate(i)
        assert lower[i] == pytest.approx(one.lower, rel=1e-12, abs=0)
        assert upper[i] == pytest.approx(one.upper, rel=1e-12) or upper[i] == one.upper


@pytest.mark.parametrize("value", [0.0, 1.0, -0.5, float("nan")])
def test_bad_change_confidence_is_one_line(value: float) -> None:
    with pytest.raises(ConfigError, match=r"routing\.change_confidence must be") as info:
        make_router(RoutingConfig(kind="adaptive", change_confidence=value))
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"routing\.change_confidence must be a number in"):
        AdaptiveRouter(change_confidence=value)


def test_config_builds_the_gate() -> None:
    router = make_router(RoutingConfig(kind="adaptive", change_confidence=0.95))
    assert isinstance(router, AdaptiveRouter) and router.change_confidence == 0.95
