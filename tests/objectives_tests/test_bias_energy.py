"""The bias-aware bound under an energy budget or price (``raysync recommend --energy-*``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from raysync.exceptions import ConfigError
from raysync.objectives import BiasAwareBound, DesignPoint, ProblemConstants
from raysync.objectives.bias import optimize_bias_aware, optimize_bias_aware_with_energy
from raysync.objectives.energy import PowerFigures

MU = np.array([1.0, 2.0, 4.0, 0.5])
T = 30.0
FIGURES = PowerFigures(
    busy=np.array([10.0, 20.0, 80.0, 5.0]), idle=np.array([1.0, 1.0, 2.0, 1.0]),
    transfer=np.full(4, 0.5), server_busy=0.0, server_idle=0.0,
)  # fmt: skip


def _bound(**kwargs: Any) -> BiasAwareBound:
    return BiasAwareBound(
        mu=MU, constants=ProblemConstants(L=1.0, sigma2=1.0, M2=0.5, A=2.0), time_budget=T,
        zeta2=0.3, bias_kind="cauchy-schwarz", **kwargs,
    )  # fmt: skip


def _joules_by_hand(bound: BiasAwareBound, point: DesignPoint) -> float:
    """``P T`` from the point's throughput: ``U_i = q_i Lambda / mu_i``, 2 transfers a task."""
    lam = bound.evaluate(point).throughput
    q = point.update_shares(MU)
    u = q * lam / MU
    watts = FIGURES.busy @ u + FIGURES.idle @ (1 - u) + 2 * FIGURES.transfer @ (q * lam)
    return float(watts) * T


@pytest.mark.parametrize("stations", [{}, {"client_latency": [0.2, 0.1, 0.0, 0.4],
                                           "server_rate": 5.0}])
def test_curve_is_the_bound_at_every_concurrency(stations: dict[str, Any]) -> None:
    bound = _bound(**stations)
    p = np.array([0.1, 0.2, 0.3, 0.4])
    values, lam = bound.curve(p, 0.5, 9)
    for c in (1, 4, 9):
        terms = bound.evaluate(DesignPoint(rule="weighted", concurrency=c, p=tuple(p), beta=0.5))
        assert values[c - 1] == pytest.approx(terms.value, rel=1e-9)
        assert lam[c - 1] == pytest.approx(terms.throughput, rel=1e-12)


def test_no_budget_and_no_price_is_the_unconstrained_optimum() -> None:
    bound = _bound()
    free = optimize_bias_aware(bound, max_concurrency=8)
    choice = optimize_bias_aware_with_energy(bound, FIGURES, max_concurrency=8)
    assert choice.optimum.point == free.point
    assert choice.energy == pytest.approx(_joules_by_hand(bound, free.point), rel=1e-9)


def test_a_budget_is_met_at_the_least_bound_cost() -> None:
    bound = _bound()
    free = optimize_bias_aware_with_energy(bound, FIGURES, max_concurrency=8)
    budget = 0.6 * free.energy
    tight = optimize_bias_aware_with_energy(bound, FIGURES, max_concurrency=8,
                                            energy_budget=budget)
    assert tight.energy <= budget
    assert tight.energy == pytest.approx(_joules_by_hand(bound, tight.optimum.point), rel=1e-9)
    assert tight.optimum.terms.value >= free.optimum.terms.value
    assert tight.optimum.terms.value == pytest.approx(tight.score, rel=1e-9)
    # every scanned pair cheaper than the choice within the budget has a larger bound
    for _, point, _ in free.optimum.candidates:
        if point.rule != "weighted":
            continue
        values, lam = bound.curve(np.asarray(point.p), point.beta, 8)
        for c in range(8):
            pt = DesignPoint(rule="weighted", concurrency=c + 1, p=point.p, beta=point.beta)
            if _joules_by_hand(bound, pt) <= budget:
                assert values[c] >= tight.optimum.terms.value * (1 - 1e-9)


def test_a_price_moves_the_choice_to_fewer_joules() -> None:
    bound = _bound()
    free = optimize_bias_aware_with_energy(bound, FIGURES, max_concurrency=8)
    priced = optimize_bias_aware_with_energy(bound, FIGURES, max_concurrency=8,
                                             energy_weight=1e-3)
    assert priced.energy < free.energy
    assert priced.score == pytest.approx(
        priced.optimum.terms.value + 1e-3 * priced.energy, rel=1e-9
    )


def test_a_budget_below_every_design_and_bad_values_are_one_line() -> None:
    bound = _bound()
    idle_joules = float(FIGURES.idle.sum()) * T  # no design spends less
    with pytest.raises(ConfigError, match=r"energy budget 100 J is below the least energy"):
        optimize_bias_aware_with_energy(bound, FIGURES, max_concurrency=8,
                                        energy_budget=min(100.0, idle_joules))
    for kwargs, words in (({"energy_budget": 0.0}, "energy_budget must be a finite number"),
                          ({"energy_budget": float("nan")}, "energy_budget must be"),
                          ({"energy_weight": -1.0}, "energy_weight must be a finite number")):
        with pytest.raises(ConfigError, match=words):
            optimize_bias_aware_with_energy(bound, FIGURES, max_concurrency=8, **kwargs)
    # A finite weight whose product with every design's energy overflows: named as the
    # weight's fault (it was a TypeError formatting the absent budget), with or without a
    # budget every design meets.
    for budget in (None, 1e300):
        with pytest.raises(ConfigError, match=r"^energy weight 1e\+308 per J is too large: "):
            optimize_bias_aware_with_energy(bound, FIGURES, max_concurrency=8,
                                            energy_weight=1e308, energy_budget=budget)
