"""The adaptive router's exploration floor (``explore``) and :func:`with_floor`."""

from __future__ import annotations

import numpy as np
import pytest

from raysync.routing import AdaptiveRouter
from raysync.routing.adaptive import with_floor

MU = np.array([1.0, 1.0, 4.0, 4.0, 16.0])


def test_floor_keeps_ratios_above_it_and_lifts_the_rest() -> None:
    p = np.array([0.001, 0.009, 0.19, 0.3, 0.5])
    q = with_floor(p, 0.02)
    assert q.sum() == pytest.approx(1.0, abs=1e-15)
    assert q[:2] == pytest.approx([0.02, 0.02])  # both below the floor
    # the mass above the floor shrinks by the same factor: ratios kept
    assert q[2:] / p[2:] == pytest.approx(np.full(3, 0.96 / 0.99))


def test_floor_cascades_when_scaling_pushes_an_entry_under_it() -> None:
    # Lifting the first entry to 0.2 scales the others by 0.8 / 0.999: the second (0.21 ->
    # 0.168) falls under the floor and is fixed at it as well.
    p = np.array([0.001, 0.21, 0.789])
    q = with_floor(p, 0.2)
    assert q == pytest.approx([0.2, 0.2, 0.6])
    assert with_floor(np.ones(4), 0.25) == pytest.approx(np.full(4, 0.25))


def test_floor_leaves_a_distribution_already_above_it_alone() -> None:
    p = np.array([0.1, 0.2, 0.3, 0.4])
    assert np.array_equal(with_floor(p, 0.05), p)
    assert np.array_equal(with_floor(p, 0.0), p)


def _optimised(explore: float) -> np.ndarray:
    router = AdaptiveRouter(reoptimize_every=10**9, explore=explore, horizon=1000.0)
    router.bind(MU.size, np.random.default_rng(0))
    router.initial_clients(5)
    for i, m in enumerate(MU):  # exact means: the estimates are the true rates up to (N-1)/N
        router.estimator.observe_many(i, np.full(400, 1.0 / m))  # type: ignore[union-attr]
    router.reoptimize(1.0, force=True)
    return router.routing_probabilities()


def test_exploration_costs_nothing_where_the_optimum_measures_every_client() -> None:
    """The optimum here gives every client far more than 1 % / 5, so the floor does not bind
    and the router routes exactly by the optimum (a uniform mixture moved 1 % of the mass
    towards the slow clients and cost throughput); a floor above a client's share lifts it."""
    exact = _optimised(0.0)
    assert exact.min() > 0.01 / MU.size
    assert _optimised(0.01) == pytest.approx(exact, rel=1e-12, abs=0)
    lifted = _optimised(0.9)
    assert lifted.min() == pytest.approx(0.9 / MU.size)
    assert lifted.sum() == pytest.approx(1.0)
