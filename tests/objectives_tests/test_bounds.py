"""The bound of docs/theory.md section 5: hand-computed terms, gradients, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from raysync.exceptions import ConfigError
from raysync.objectives import (
    BoundObjective,
    ProblemConstants,
    asyncsgd_statistics,
    bound_from_statistics,
    check_fixed_step,
    check_time_budget,
    optimal_step_size,
    step_size_cap,
    variance_inflation,
)

MU = (1.0, 2.0, 4.0, 0.5)
P = (0.4, 0.3, 0.2, 0.1)
C = 6
LAMBDA = 2.45056  # docs/theory.md worked example
DELAYS = (8.698, 1.801, 0.679, 8.449)
CONSTANTS = ProblemConstants(L=1.5, sigma2=0.8, M2=0.3, A=2.0)


def _hand_terms(eta: float, k: float) -> tuple[float, float, float]:
    # plain arithmetic from the docs/theory.md formula and the worked example's printed digits
    n = 4
    s = (1 / 0.4 + 1 / 0.3 + 1 / 0.2 + 1 / 0.1) / n**2
    dbar = (8.698 + 1.801 + 0.679 + 8.449) / n
    v = 0.8 + 2 * 0.3
    opt = 4 * 2.0 / (eta * k)
    var = 2 * eta * 1.5 * v * s
    stale = 2 * eta**2 * 1.5**2 * v * s * dbar
    return opt, var, stale


def test_per_update_terms_match_hand_computation() -> None:
    eta, k = 0.02, 500.0
    obj = BoundObjective(mu=MU, constants=CONSTANTS, criterion="per-update", eta=eta,
                         num_updates=k)
    t = obj.evaluate(P, C)
    opt, var, stale = _hand_terms(eta, k)
    assert t.optimization == pytest.approx(opt, rel=1e-12)
    assert t.variance == pytest.approx(var, rel=1e-12)
    assert t.staleness == pytest.approx(stale, rel=5e-4)  # E[D] printed to 3 decimals
    assert t.value == pytest.approx(opt + var + stale, rel=5e-4)
    assert t.mean_delay == pytest.approx(sum(DELAYS) / 4, abs=5e-4)
    assert t.throughput == pytest.approx(LAMBDA, abs=1e-5)
    assert t.eta == eta and t.num_updates == k and t.concurrency == C
    assert t.value == pytest.approx(t.optimization + t.variance + t.staleness, rel=1e-14)


def test_wall_clock_terms_use_lambda_times_budget() -> None:
    eta, budget = 0.02, 300.0
    obj = BoundObjective(mu=MU, constants=CONSTANTS, criterion="wall-clock", eta=eta,
                         time_budget=budget)
    t = obj.evaluate(P, C)
    opt, var, stale = _hand_terms(eta, LAMBDA * budget)
    assert t.num_updates == pytest.approx(LAMBDA * budget, rel=1e-5)
    assert t.optimization == pytest.approx(opt, rel=1e-5)
    assert t.variance == pytest.approx(var, rel=1e-12)
    assert t.staleness == pytest.approx(stale, rel=5e-4)
    assert t.criterion == "wall-clock"


def test_optimal_step_terms_and_cap() -> None:
    obj = BoundObjective(mu=MU, constants=CONSTANTS, criterion="per-update", num_updates=500.0)
    t = obj.evaluate(P, C)
    s, dbar = t.variance_inflation, t.mean_delay
    v = CONSTANTS.noise
    a, b, c = 4 * 2.0 / 500.0, 2 * 1.5 * v * s, 2 * 1.5**2 * v * s * dbar
    root = optimal_step_size(a, b, c)
    cap = 1 / (2 * 1.5 * (s + math.sqrt(s * s + s * dbar)))
    assert t.eta_max == pytest.approx(cap, rel=1e-12)
    assert t.eta == pytest.approx(min(root, cap), rel=1e-12)
    assert t.admissible
    assert t.value == pytest.approx(a / t.eta + b * t.eta + c * t.eta**2, rel=1e-12)


def test_step_size_cap_solves_the_condition_exactly() -> None:
    for s, dbar in [(1.0, 0.0), (1.3, 4.9), (50.0, 1e4), (1.0, 1e-12)]:
        eta = step_size_cap(2.0, s, dbar)
        assert 4 * 2.0 * s * eta * (1 + eta * 2.0 * dbar) == pytest.approx(1.0, rel=1e-12)
    assert step_size_cap(2.0, 1.5, 0.0) == pytest.approx(1 / (4 * 2.0 * 1.5))


def test_variance_inflation_and_asyncsgd_statistics() -> None:
    assert variance_inflation(np.full(5, 0.2)) == pytest.approx(1.0)
    assert variance_inflation(P) > 1.0
    stats = asyncsgd_statistics(MU)
    assert stats.throughput == pytest.approx(sum(MU))
    assert float(np.dot(stats.p, stats.relative_delay)) == pytest.approx(len(MU) - 1)
    assert stats.relative_delay[3] == pytest.approx((7.5 - 0.5) / 0.5)


def test_bound_from_statistics_broadcasts() -> None:
    dbar = np.array([0.0, 1.0, 2.0])
    opt, var, stale = bound_from_statistics(constants=CONSTANTS, eta=0.1, num_updates=100.0,
                                            S=1.0, Dbar=dbar)
    assert np.shape(stale) == (3,)
    assert stale[0] == 0.0 and stale[2] == pytest.approx(2 * stale[1])


@pytest.mark.parametrize("criterion", ["per-update", "wall-clock"])
def test_curve_matches_pointwise_evaluation(criterion: str) -> None:
    obj = BoundObjective(mu=MU, constants=CONSTANTS, criterion=criterion, num_updates=400.0,
                         time_budget=200.0)
    curve = obj.curve(P, 10)
    for c in (1, 2, 6, 10):
        t = obj.evaluate(P, c)
        assert curve.value[c - 1] == pytest.approx(t.value, rel=1e-12)
        assert curve.staleness[c - 1] == pytest.approx(t.staleness, rel=1e-12, abs=1e-300)
        assert curve.throughput[c - 1] == pytest.approx(t.throughput, rel=1e-12)
    assert curve.mean_delay[0] == 0.0  # C = 1: no staleness


def test_per_update_staleness_grows_with_concurrency() -> None:
    obj = BoundObjective(mu=MU, constants=CONSTANTS, criterion="per-update", eta=0.01,
                         num_updates=100.0)
    curve = obj.curve(P, 15)
    assert np.all(np.diff(curve.staleness) > 0)
    assert curve.best_concurrency == 1


def _tangent_fd(obj: BoundObjective, p: np.ndarray, c: int, v: np.ndarray, h: float) -> float:
    return (obj.value_and_grad(p + h * v, c)[0] - obj.value_and_grad(p - h * v, c)[0]) / (2 * h)


@pytest.mark.parametrize("criterion", ["per-update", "wall-clock"])
@pytest.mark.parametrize("eta", [0.03, "optimal"])
def test_gradient_matches_finite_differences(criterion: str, eta: float | str) -> None:
    obj = BoundObjective(mu=MU, constants=CONSTANTS, criterion=criterion, eta=eta,
                         num_updates=400.0, time_budget=150.0)
    p = np.array(P)
    value, grad = obj.value_and_grad(p, C)
    assert value == pytest.approx(obj.value(P, C), rel=1e-12)
    rng = np.random.default_rng(0)
    for _ in range(4):
        v = rng.standard_normal(4)
        v -= v.mean()  # a direction inside the simplex
        fd = _tangent_fd(obj, p, C, v, 1e-6)
        assert float(grad @ v) == pytest.approx(fd, rel=1e-6, abs=1e-10)
    # ambient partial derivatives too (off the simplex the formula is still defined)
    for j in range(4):
        e = np.eye(4)[j]
        assert grad[j] == pytest.approx(_tangent_fd(obj, p, C, e, 1e-7), rel=1e-5)


def test_gradient_where_the_step_cap_binds() -> None:
    # a huge A pushes the unconstrained optimal step beyond the cap
    constants = ProblemConstants(L=1.5, sigma2=0.8, M2=0.3, A=1e6)
    obj = BoundObjective(mu=MU, constants=constants, criterion="wall-clock", time_budget=10.0)
    t = obj.evaluate(P, C)
    assert t.eta == pytest.approx(t.eta_max, rel=1e-12)
    p = np.array(P)
    _, grad = obj.value_and_grad(p, C)
    v = np.array([1.0, -0.5, 0.2, -0.7])
    assert float(grad @ v) == pytest.approx(_tangent_fd(obj, p, C, v, 1e-7), rel=1e-6)


def test_problem_constants_validation() -> None:
    assert ProblemConstants(L=1, sigma2=1, M2=0, A=1).M2 == 0.0
    with pytest.raises(ConfigError, match=r"constants\.L must be > 0, got -1"):
        ProblemConstants(L=-1, sigma2=1, M2=0, A=1)
    with pytest.raises(ConfigError, match=r"constants\.sigma2 must be > 0"):
        ProblemConstants(L=1, sigma2=0, M2=0, A=1)
    with pytest.raises(ConfigError, match=r"constants\.M2 must be >= 0"):
        ProblemConstants(L=1, sigma2=1, M2=-0.1, A=1)
    with pytest.raises(ConfigError, match=r"constants\.A must be > 0"):
        ProblemConstants(L=1, sigma2=1, M2=0, A=0)
    with pytest.raises(ConfigError, match=r"constants\.A must be finite"):
        ProblemConstants(L=1, sigma2=1, M2=0, A=math.inf)
    with pytest.raises(TypeError):
        ProblemConstants(1, 1, 0, 1)  # type: ignore[misc]  # keyword-only
    assert ProblemConstants.parse(" 2, 0.5,0,3") == ProblemConstants(L=2, sigma2=0.5, M2=0, A=3)
    with pytest.raises(ConfigError, match="four comma-separated numbers"):
        ProblemConstants.parse("1,2,3")
    with pytest.raises(ConfigError, match="four comma-separated numbers"):
        ProblemConstants.parse("1,2,x,4")


def test_objective_validation() -> None:
    kw = {"constants": CONSTANTS, "time_budget": 10.0}
    with pytest.raises(ConfigError, match=r"mu\[1\] must be a finite service rate > 0"):
        BoundObjective(mu=[1.0, 0.0], **kw)
    with pytest.raises(ConfigError, match=r"mu\[0\] must be a finite service rate > 0"):
        BoundObjective(mu=[-2.0, 1.0], **kw)
    with pytest.raises(ConfigError, match="time_budget must be > 0, got 0"):
        BoundObjective(mu=MU, constants=CONSTANTS, time_budget=0.0)
    with pytest.raises(ConfigError, match="time_budget must be > 0"):
        BoundObjective(mu=MU, constants=CONSTANTS, time_budget=-5.0)
    with pytest.raises(ConfigError, match=r"time_budget \(T\) is required"):
        BoundObjective(mu=MU, constants=CONSTANTS)
    with pytest.raises(ConfigError, match=r"num_updates \(K\) is required"):
        BoundObjective(mu=MU, constants=CONSTANTS, criterion="per-update")
    with pytest.raises(ConfigError, match="criterion must be one of per-update, wall-clock"):
        BoundObjective(mu=MU, criterion="loss", **kw)
    with pytest.raises(ConfigError, match="eta must be > 0"):
        BoundObjective(mu=MU, eta=-0.1, **kw)
    with pytest.raises(ConfigError, match="eta must be a number > 0 or 'optimal'"):
        BoundObjective(mu=MU, eta="best", **kw)
    with pytest.raises(ConfigError, match="constants must be a ProblemConstants"):
        BoundObjective(mu=MU, constants=(1, 1, 1, 1), time_budget=1.0)  # type: ignore[arg-type]
    obj = BoundObjective(mu=MU, **kw)
    with pytest.raises(ConfigError, match=r"p must have one entry per client \(n=4\)"):
        obj.evaluate([0.5, 0.5], C)
    with pytest.raises(ConfigError, match=r"p\[2\] must be >= 1e-300"):
        obj.evaluate([0.5, 0.5, 0.0, 0.0], C)
    with pytest.raises(ConfigError, match="p must sum to 1, got sum=0.9"):
        obj.evaluate([0.3, 0.3, 0.2, 0.1], C)
    with pytest.raises(ConfigError, match="concurrency must be an integer >= 1, got 0"):
        obj.evaluate(P, 0)
    with pytest.raises(ConfigError, match="max_concurrency must be an integer >= 1"):
        obj.curve(P, -3)
    with pytest.raises(ConfigError, match="must be 4 positive numbers"):
        obj.value_and_grad(np.array([0.5, 0.5, 0.0, 0.0]), C)


def test_results_are_frozen_and_serialisable() -> None:
    import dataclasses
    import json

    obj = BoundObjective(mu=MU, constants=CONSTANTS, time_budget=10.0)
    t = obj.evaluate(P, C)
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.value = 0.0  # type: ignore[misc]
    json.dumps(t.to_dict())
    json.dumps(CONSTANTS.to_dict())


def test_time_budget_outside_one_update_and_float_range_is_refused() -> None:
    # sum(MU) = 7.5 updates/s is the fastest any design can go: T = 0.1 s gives K < 1
    with pytest.raises(ConfigError, match=r"time_budget 0.1 s is too short for one update"):
        BoundObjective(mu=MU, constants=CONSTANTS, time_budget=0.1)
    with pytest.raises(ConfigError, match=r"time_budget 1e-300 s .*7.5 updates/s"):
        BoundObjective(mu=MU, constants=CONSTANTS, time_budget=1e-300)
    with pytest.raises(ConfigError, match=r"time_budget 1e\+308 s gives up to K .*float range"):
        BoundObjective(mu=MU, constants=CONSTANTS, time_budget=1e308)
    # a server slower than the fleet caps every design's throughput (was refused later,
    # by the gradient, blaming the clients' rates)
    with pytest.raises(ConfigError, match=r"time_budget 10 s is too short for one update "
                                          r"\(Lambda T < 1\): the server's update rate "
                                          r"\(server.update_time\) caps every design at "
                                          r"0.05 updates/s, so it needs at least 20 s"):
        BoundObjective(mu=MU, constants=CONSTANTS, time_budget=10.0, server_rate=0.05)
    with pytest.raises(ConfigError, match=r"^--budget 10 s is too short .* at 1e-300 upd"):
        check_time_budget(10.0, MU, server_rate=1e-300, name="--budget")
    check_time_budget(20.0, MU, server_rate=0.05)  # K = 1: allowed
    check_time_budget(0.2, MU, server_rate=100.0)  # a fast server caps nothing: K = 1.5
    with pytest.raises(ConfigError, match=r"^--budget must be > 0, got -1.0$"):
        check_time_budget(-1.0, MU, name="--budget")
    # the smallest admissible budget evaluates to finite numbers (no division by zero)
    obj = BoundObjective(mu=MU, constants=CONSTANTS, time_budget=1.0 / 7.5)
    value, grad = obj.value_and_grad(np.asarray(P), 1)
    assert math.isfinite(value) and np.all(np.isfinite(grad))


def test_constants_whose_products_overflow_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"constants L=1e\+308.*overflow the float range"):
        ProblemConstants(L=1e308, sigma2=1e308, M2=1e308, A=1e308)
    with pytest.raises(ConfigError, match="overflow the float range"):
        ProblemConstants(L=1e200, sigma2=1.0, M2=0.0, A=1.0)  # L^2 overflows
    with pytest.raises(ConfigError, match="underflow the float range"):
        ProblemConstants(L=1e-300, sigma2=1e-300, M2=1e-300, A=1e-300)


def test_rates_too_far_apart_for_the_gradient_are_one_line() -> None:
    """mu = (1, 1e-300): at uniform p the slow client holds every task, K = T Lambda =
    2e-298 and K**2 underflows to 0 (was ZeroDivisionError in the bound's partials)."""
    objective = BoundObjective(
        mu=[1.0, 1e-300], constants=CONSTANTS, time_budget=100.0, eta="optimal"
    )
    with pytest.raises(
        ConfigError,
        match=r"beyond the float range at a design with K = 2e-298 .*the rates are too far apart",
    ):
        objective.value_and_grad([0.5, 0.5], 3)
    # the same underflow from a link delay of 1e300 s: the message blames the delays too
    delayed = BoundObjective(
        mu=[1.0, 2.0], constants=CONSTANTS, time_budget=100.0, eta="optimal",
        client_latency=[1e300, 1e300],
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"the service rates, link delays or server time are "
                                          r"too slow for this budget"):  # fmt: skip
        delayed.value_and_grad([0.5, 0.5], 3)


@pytest.mark.parametrize("eta", [1e308, 1e160, 1e-310])
def test_a_fixed_step_beyond_the_float_range_is_refused_by_name(eta: float) -> None:
    # 1e308 overflowed 2 eta^2 L^2 V inside the optimiser, whose error then blamed the
    # rates ("too far apart for this budget"); 1e-310 overflowed 4 A / eta.
    constants = ProblemConstants(L=1.0, sigma2=1.0, M2=1.0, A=1.0)
    with pytest.raises(ConfigError, match=r"^algorithm\.lr = .* beyond the float range .* "
                                          r"1 / \(4 L\) = 0\.25$"):
        check_fixed_step(eta, constants, name="algorithm.lr")
    with pytest.raises(ConfigError, match=r"^eta = "):
        BoundObjective(mu=[1.0, 2.0], constants=constants, eta=eta, time_budget=10.0)


def test_a_fixed_step_in_range_is_kept_and_its_terms_are_the_formula() -> None:
    constants = ProblemConstants(L=2.0, sigma2=0.5, M2=0.25, A=3.0)
    # 1e150: 2 eta^2 L^2 V = 8e300 is still a float, so the step passes the check
    assert check_fixed_step(1e150, constants) == 1e150
    objective = BoundObjective(mu=[1.0, 2.0], constants=constants, eta=0.01, time_budget=10.0)
    terms = objective.evaluate([0.5, 0.5], 2)
    k = terms.throughput * 10.0
    assert terms.optimization == pytest.approx(4 * 3.0 / (0.01 * k), rel=1e-12)
    assert terms.variance == pytest.approx(2 * 0.01 * 2.0 * 1.0 * 1.0, rel=1e-12)
