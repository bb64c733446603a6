"""Optimisers over p (simplex), C (integer scan) and both."""

from __future__ import annotations

import json

import numpy as np
import pytest

from raysync.exceptions import ConfigError
from raysync.objectives import (
    BoundObjective,
    ProblemConstants,
    optimize_concurrency,
    optimize_joint,
    optimize_routing,
)

MU = (1.0, 2.0, 4.0, 0.5)
CONSTANTS = ProblemConstants(L=1.0, sigma2=1.0, M2=0.5, A=2.0)


def _objectives() -> list[BoundObjective]:
    return [
        BoundObjective(mu=MU, constants=CONSTANTS, criterion="wall-clock", time_budget=100.0),
        BoundObjective(mu=MU, constants=CONSTANTS, criterion="wall-clock", eta=0.05,
                       time_budget=100.0),
        BoundObjective(mu=MU, constants=CONSTANTS, criterion="per-update", num_updates=500.0),
    ]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_routing_optimum_is_feasible_and_beats_random_points(index: int) -> None:
    obj = _objectives()[index]
    c = 6
    res = optimize_routing(obj, concurrency=c)
    assert res.p.shape == (4,) and np.all(res.p > 0)
    assert float(res.p.sum()) == pytest.approx(1.0, abs=1e-12)
    assert res.concurrency == c and res.criterion == obj.criterion
    assert res.value == pytest.approx(obj.value(res.p, c), rel=1e-12)
    assert res.value <= obj.value(np.full(4, 0.25), c) * (1 + 1e-12)
    rng = np.random.default_rng(12345)
    for q in rng.dirichlet(np.ones(4), size=200):
        q = np.maximum(q, 1e-12)
        assert res.value <= obj.value(q / q.sum(), c) * (1 + 1e-9)
    assert res.converged
    assert res.iterations > 0 and res.evaluations >= res.iterations


def test_routing_optimum_larger_fleet_beats_random_points() -> None:
    mu = np.array([1.0] * 4 + [10.0] * 3 + [100.0] * 3)
    obj = BoundObjective(mu=mu, constants=CONSTANTS, time_budget=20.0)
    res = optimize_routing(obj, concurrency=10)
    rng = np.random.default_rng(7)
    draws = rng.dirichlet(np.ones(10), size=200)
    assert res.value <= min(obj.value(q, 10) for q in draws)
    # clients with equal rates get equal probabilities
    assert np.ptp(res.p[:4]) < 1e-6 and np.ptp(res.p[7:]) < 1e-6


@pytest.mark.parametrize("index", [0, 1, 2])
def test_concurrency_scan_agrees_with_brute_force(index: int) -> None:
    obj = _objectives()[index]
    p = np.array([0.1, 0.2, 0.5, 0.2])
    res = optimize_concurrency(obj, p=p, max_concurrency=25)
    values = [obj.value(p, c) for c in range(1, 26)]
    assert res.concurrency == int(np.argmin(values)) + 1
    assert res.value == pytest.approx(min(values), rel=1e-12)
    np.testing.assert_allclose(res.p, p)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_joint_optimum_agrees_with_brute_force(index: int) -> None:
    obj = _objectives()[index]
    cmax = 10
    brute = [optimize_routing(obj, concurrency=c).value for c in range(1, cmax + 1)]
    res = optimize_joint(obj, max_concurrency=cmax)
    assert res.value == pytest.approx(min(brute), rel=1e-7)
    assert res.concurrency == int(np.argmin(brute)) + 1
    assert res.converged


def test_per_update_optimum_is_c1_uniform_and_wall_clock_is_interior() -> None:
    per_update, wall = _objectives()[2], _objectives()[0]
    res = optimize_joint(per_update, max_concurrency=30)
    assert res.concurrency == 1
    np.testing.assert_allclose(res.p, 0.25, atol=1e-6)
    assert res.terms.staleness == 0.0
    res = optimize_joint(wall, max_concurrency=30)
    assert 1 < res.concurrency < 30
    # the wall-clock optimum routes more work to faster clients
    assert res.p[2] > res.p[1] > res.p[0] > res.p[3]
    assert res.throughput == pytest.approx(res.terms.throughput)
    assert float(np.dot(res.p, res.relative_delay)) == pytest.approx(res.concurrency - 1)


def test_optimizers_are_deterministic_and_results_serialise() -> None:
    obj = _objectives()[0]
    a = optimize_joint(obj, max_concurrency=12)
    b = optimize_joint(obj, max_concurrency=12)
    assert np.array_equal(a.p, b.p) and a.concurrency == b.concurrency and a.value == b.value
    payload = json.loads(json.dumps(a.to_dict()))
    assert payload["concurrency"] == a.concurrency and len(payload["p"]) == 4
    assert payload["terms"]["criterion"] == "wall-clock"
    with pytest.raises(ValueError):
        a.p[0] = 1.0  # read-only


def test_single_client() -> None:
    obj = BoundObjective(mu=[3.0], constants=CONSTANTS, time_budget=10.0)
    res = optimize_joint(obj, max_concurrency=5)
    assert res.p.tolist() == [1.0] and res.concurrency == 1  # one client: no gain from C > 1


def test_optimizer_validation() -> None:
    obj = _objectives()[0]
    with pytest.raises(ConfigError, match="objective must be a BoundObjective"):
        optimize_routing("bound", concurrency=2)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="concurrency must be an integer >= 1, got 0"):
        optimize_routing(obj, concurrency=0)
    with pytest.raises(ConfigError, match="max_concurrency must be an integer >= 1"):
        optimize_joint(obj, max_concurrency=0)
    with pytest.raises(ConfigError, match="tol must be > 0"):
        optimize_routing(obj, concurrency=2, tol=0.0)
    with pytest.raises(ConfigError, match="max_iter must be an integer >= 1"):
        optimize_routing(obj, concurrency=2, max_iter=0)
    with pytest.raises(ConfigError, match="max_rounds must be an integer >= 1"):
        optimize_joint(obj, max_concurrency=3, max_rounds=0)
    with pytest.raises(ConfigError, match=r"p must have one entry per client \(n=4\)"):
        optimize_concurrency(obj, p=[0.5, 0.5], max_concurrency=3)
    with pytest.raises(ConfigError, match=r"p must have one entry per client"):
        optimize_routing(obj, concurrency=2, starts=[[1.0]])


def test_search_size_is_refused_with_what_it_needs() -> None:
    from raysync.objectives import check_search_size
    from raysync.queueing.analysis import MAX_CURVE_BYTES, MAX_SOLVER_STEPS

    check_search_size(64, 4)  # an ordinary search passes
    # memory: 16 bytes per client and C
    cmax = MAX_CURVE_BYTES // (16 * 1000)
    with pytest.raises(ConfigError, match=r"^max_concurrency [\d,]+ with n=1,000 clients needs "
                       r"[\d.]+ GiB for the gradient tapes"):  # fmt: skip
        check_search_size(cmax, 1000)
    # solver steps: 100 passes of C (n + 4096) steps, named as the caller's flag
    cmax = MAX_SOLVER_STEPS // (100 * 4100) + 1
    message = (
        r"^--max-concurrency [\d,]+ with n=4 clients needs about .* solver steps "
        r"\(100 MVA passes\).*; lower --max-concurrency$"
    )
    with pytest.raises(ConfigError, match=message):
        check_search_size(cmax, 4, name="--max-concurrency")
    check_search_size(cmax - 1, 4)
