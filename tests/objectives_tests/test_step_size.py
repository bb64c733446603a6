"""The closed-form optimal step of docs/theory.md section 5 against numeric minimisation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from raysync.exceptions import ConfigError
from raysync.objectives import BoundObjective, ProblemConstants, optimal_step_size


def _numeric(a: float, b: float, c: float, hi: float) -> float:
    res = minimize_scalar(
        lambda e: a / e + b * e + c * e * e, bounds=(hi * 1e-9, hi), method="bounded",
        options={"xatol": hi * 1e-12},
    )
    return float(res.x)


@pytest.mark.parametrize(
    ("a", "b", "c"),
    [(1.0, 1.0, 0.0), (1.0, 1.0, 1.0), (0.004, 3.0, 50.0), (10.0, 0.1, 1e-6),
     (1e-6, 2.0, 1e4), (3.0, 1e-3, 1e3), (1.0, 1.0, 0.19245)],
)
def test_optimal_step_matches_bounded_minimisation(a: float, b: float, c: float) -> None:
    eta = optimal_step_size(a, b, c)
    # the stationarity condition holds to rounding
    assert 2 * c * eta**3 + b * eta**2 == pytest.approx(a, rel=1e-12)
    hi = float(np.sqrt(a / b)) * 1.5  # the root is <= sqrt(a / b)
    assert eta == pytest.approx(_numeric(a, b, c, hi), rel=1e-6)


def test_optimal_step_vectorised_and_extreme() -> None:
    rng = np.random.default_rng(0)
    a = 10.0 ** rng.uniform(-8, 4, 200)
    b = 10.0 ** rng.uniform(-4, 4, 200)
    c = 10.0 ** rng.uniform(-6, 8, 200)
    eta = optimal_step_size(a, b, c)
    assert eta.shape == (200,)
    np.testing.assert_allclose(2 * c * eta**3 + b * eta**2, a, rtol=1e-12)
    # huge c: eta ~ (a / 2c)^(1/3)
    eta = optimal_step_size(1.0, 1e-200, 1e200)
    assert eta == pytest.approx((1.0 / 2e200) ** (1 / 3), rel=1e-12)
    assert optimal_step_size(4.0, 1.0, 0.0) == pytest.approx(2.0, rel=1e-15)


def test_capped_optimal_step_minimises_the_bound_over_admissible_steps() -> None:
    mu = (1.0, 2.0, 4.0, 0.5)
    p = (0.4, 0.3, 0.2, 0.1)
    for a_const in (2.0, 1e5):  # interior optimum, then the cap binds
        constants = ProblemConstants(L=1.5, sigma2=0.8, M2=0.3, A=a_const)
        obj = BoundObjective(mu=mu, constants=constants, criterion="per-update",
                             num_updates=300.0)
        t = obj.evaluate(p, 6)

        def bound(eta: float, t=t, constants=constants) -> float:
            fixed = BoundObjective(mu=mu, constants=constants, criterion="per-update",
                                   eta=eta, num_updates=300.0)
            return fixed.value(p, 6)

        res = minimize_scalar(bound, bounds=(t.eta_max * 1e-6, t.eta_max), method="bounded",
                              options={"xatol": t.eta_max * 1e-10})
        assert t.eta == pytest.approx(float(res.x), rel=1e-4)
        assert t.value <= bound(float(res.x)) * (1 + 1e-12)


def test_optimal_step_rejects_bad_coefficients() -> None:
    with pytest.raises(ConfigError, match="a > 0, b > 0 and c >= 0"):
        optimal_step_size(0.0, 1.0, 1.0)
    with pytest.raises(ConfigError, match="a > 0, b > 0 and c >= 0"):
        optimal_step_size(1.0, -1.0, 1.0)
    with pytest.raises(ConfigError, match="a > 0, b > 0 and c >= 0"):
        optimal_step_size(1.0, 1.0, -1.0)
    with pytest.raises(ConfigError, match="a > 0, b > 0 and c >= 0"):
        optimal_step_size(float("nan"), 1.0, 1.0)
