"""The bound with latency and server stations; the energy-aware choice (docs/network.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from raysync.config import (
    ClientSpec,
    PowerSpec,
    RoutingConfig,
    RunConfig,
    ServerConfig,
    ServiceTimeSpec,
    SystemConfig,
)
from raysync.exceptions import ConfigError
from raysync.objectives import BoundObjective, ProblemConstants, optimize_concurrency
from raysync.objectives.energy import power_figures, predict_energy
from raysync.objectives.optimize import optimize_with_energy
from raysync.queueing import predict

CONSTANTS = ProblemConstants(L=1.0, sigma2=1.0, M2=0.0, A=1.0)
ETA = 0.05
MU, Z, NU = 50.0, 4.0, 1.0  # one fast client, 4 s of links, a slow server (1 update/s)


def _closed_form_throughput(c: int, *, server: bool) -> float:
    """``Lambda(C) = G(C-1) / G(C)`` with the product-form ``G`` written out by hand.

    Stations: the client (single server, demand x = 1/mu), the links (infinite server,
    demand Z: weight Z^k / k!) and the server (single server, demand y = 1/nu), so
    ``G(K) = sum_k Z^k / k! * h(K - k)`` with ``h(r) = x^r`` without the server and
    ``h(r) = sum_a x^a y^(r-a) = (y^(r+1) - x^(r+1)) / (y - x)`` with it; in logs.
    """
    x, y = 1 / MU, 1 / NU

    def log_h(r: int) -> float:
        if not server:
            return r * math.log(x)
        return (r + 1) * math.log(y) + math.log1p(-((x / y) ** (r + 1))) - math.log(y - x)

    def log_g(k_total: int) -> float:
        terms = [
            k * math.log(Z) - math.lgamma(k + 1) + log_h(k_total - k) for k in range(k_total + 1)
        ]
        top = max(terms)
        return top + math.log(sum(math.exp(t - top) for t in terms))

    return math.exp(log_g(c - 1) - log_g(c))


def _bound(c: int, budget: float, *, server: bool) -> float:
    # n = 1: S = 1 and E[D] = C - 1 (every other task is consumed first); fixed step.
    v = CONSTANTS.noise
    k = _closed_form_throughput(c, server=server) * budget
    return 4 * CONSTANTS.A / (ETA * k) + 2 * ETA * v + 2 * ETA**2 * v * (c - 1)


def _objective(budget: float, *, server: bool) -> BoundObjective:
    return BoundObjective(
        mu=[MU], constants=CONSTANTS, criterion="wall-clock", eta=ETA, time_budget=budget,
        client_latency=[Z], server_rate=NU if server else None,
    )  # fmt: skip


@pytest.mark.parametrize("budget", [0.02, 0.2, 2.0, 20.0, 200.0])
def test_optimal_concurrency_matches_the_closed_form(budget: float) -> None:
    cmax = 400
    if budget * NU < 1:
        # the server caps every design below one update in the budget: refused up front
        with pytest.raises(ConfigError, match="server's update rate .* caps every design"):
            _objective(budget, server=True)
    for server in (True, False) if budget * NU >= 1 else (False,):
        best = optimize_concurrency(
            _objective(budget, server=server), p=[1.0], max_concurrency=cmax
        )
        values = [_bound(c, budget, server=server) for c in range(1, cmax + 1)]
        assert best.concurrency == int(np.argmin(values)) + 1, (budget, server)
        assert best.value == pytest.approx(min(values), rel=1e-9)


def test_a_slow_server_stops_the_growth_of_c() -> None:
    # Without the server, Lambda(C) ~ C / (Z + 1/mu) up to C ~ mu Z = 200, and the optimal C
    # keeps growing as the budget shrinks. With it, Lambda(C) <= nu: beyond the knee
    # C* = nu (Z + 1/mu + 1/nu) ~ 5 a task more raises the throughput by next to nothing,
    # so C stops where the gain alpha (1/Lambda(C) - 1/nu) can no longer pay the staleness
    # step beta (alpha = 4A/(eta T), beta = 2 eta^2 v): the theory's stopping point.
    v = CONSTANTS.noise
    beta = 2 * ETA**2 * v
    with_server, without = [], []
    # (the server's 1 update/s needs T >= 1 s for one update)
    for budget in (200.0, 20.0, 2.0, 1.0):
        alpha = 4 * CONSTANTS.A / (ETA * budget)
        stop = next(
            c for c in range(1, 10_000)
            if alpha * (1 / _closed_form_throughput(c, server=True) - 1 / NU) <= beta
        )  # fmt: skip
        c_server = optimize_concurrency(
            _objective(budget, server=True), p=[1.0], max_concurrency=400
        ).concurrency
        assert c_server <= stop, (budget, c_server, stop)
        with_server.append(c_server)
        without.append(
            optimize_concurrency(
                _objective(budget, server=False), p=[1.0], max_concurrency=400
            ).concurrency
        )
    knee = NU * (Z + 1 / MU + 1 / NU)
    assert max(with_server) <= 4 * knee  # a 200x smaller budget: C grows only a little
    assert without[-1] > 10 * max(with_server)
    assert np.all(np.diff(without) >= 0)


def test_bound_gradient_with_stations_matches_autograd() -> None:
    import torch

    objective = BoundObjective(
        mu=[1.0, 2.0, 4.0], constants=CONSTANTS, criterion="wall-clock", eta="optimal",
        time_budget=50.0, client_latency=[0.5, 1.0, 0.0], server_rate=3.0,
    )  # fmt: skip
    p = np.array([0.5, 0.3, 0.2])
    value, grad = objective.value_and_grad(p, 5)
    assert value == pytest.approx(objective.value(p, 5), rel=1e-12)
    tensor = torch.tensor(p, dtype=torch.float64, requires_grad=True)
    auto = objective.torch_value(tensor, 5)
    auto.backward()
    assert float(auto.detach()) == pytest.approx(value, rel=1e-10)
    np.testing.assert_allclose(grad, tensor.grad.numpy(), rtol=1e-7)
    # The stations change the answer: without them the throughput is higher.
    plain = BoundObjective(
        mu=[1.0, 2.0, 4.0], constants=CONSTANTS, criterion="wall-clock", time_budget=50.0
    )
    assert plain.evaluate(p, 5).throughput > objective.evaluate(p, 5).throughput


def _energy_config() -> SystemConfig:
    exp = lambda rate: ServiceTimeSpec(rate=rate)  # noqa: E731
    return SystemConfig(
        clients=tuple(
            ClientSpec(
                service_time=exp(m),
                downlink=exp(2.0),
                power=PowerSpec(busy=f"{w} W", idle="1 W", transfer="0.5 J"),
            )
            for m, w in ((1.0, 5), (4.0, 40))
        ),
        concurrency=2,
        routing=RoutingConfig(kind="uniform"),
        run=RunConfig(num_updates=100, train=False),
        server=ServerConfig(update_time=exp(6.0), power=PowerSpec(busy="30 W", idle="3 W")),
    )


def test_power_line_matches_predict_energy() -> None:
    config = _energy_config()
    objective = BoundObjective(
        mu=[1.0, 4.0], constants=CONSTANTS, criterion="wall-clock", time_budget=10.0,
        client_latency=[0.5, 0.5], server_rate=6.0,
    )  # fmt: skip
    choice = optimize_with_energy(
        objective, power_figures(config), max_concurrency=8, energy_weight=0.0
    )
    p = choice.optimum.p
    picked = config.replace(
        routing=RoutingConfig(kind="fixed", p=tuple(float(x) for x in p / p.sum())),
        concurrency=choice.optimum.concurrency,
    )
    expected = predict_energy(picked, predict(picked))
    assert choice.power == pytest.approx(expected.power, rel=1e-9)
    assert choice.energy == pytest.approx(10.0 * expected.power, rel=1e-9)
    assert choice.optimum.value == pytest.approx(choice.unconstrained.value, rel=1e-9)


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_an_energy_budget_is_respected_and_costs_bound() -> None:
    config = _energy_config()
    objective = BoundObjective(
        mu=[1.0, 4.0], constants=CONSTANTS, criterion="wall-clock", time_budget=10.0,
        client_latency=[0.5, 0.5], server_rate=6.0,
    )  # fmt: skip
    figures = power_figures(config)
    free = optimize_with_energy(objective, figures, max_concurrency=8)
    budget = 0.8 * free.energy
    tight = optimize_with_energy(objective, figures, max_concurrency=8, energy_budget=budget)
    assert tight.energy <= budget
    assert tight.optimum.value >= free.optimum.value
    priced = optimize_with_energy(objective, figures, max_concurrency=8, energy_weight=1.0)
    assert priced.energy <= free.energy
    with pytest.raises(ConfigError, match="energy budget .* below the least energy"):
        optimize_with_energy(objective, figures, max_concurrency=8, energy_budget=1.0)
    with pytest.raises(ConfigError, match=r"^energy weight 1e\+308 per J is too large: "):
        optimize_with_energy(objective, figures, max_concurrency=8, energy_weight=1e308)


def test_bias_aware_bound_with_stations_at_beta_one_is_twice_the_section_5_bound() -> None:
    from raysync.objectives import BiasAwareBound, DesignPoint

    stations = {"client_latency": [0.5, 1.0, 0.0], "server_rate": 3.0}
    common = {"constants": CONSTANTS, "time_budget": 50.0}
    bias = BiasAwareBound(mu=[1.0, 2.0, 4.0], zeta2=0.0, bias_kind="cauchy-schwarz",
                          **common, **stations)  # fmt: skip
    plain = BoundObjective(mu=[1.0, 2.0, 4.0], criterion="wall-clock", **common, **stations)
    p = np.array([0.5, 0.3, 0.2])
    value, _, _ = bias.value_and_grad(p, 5, 1.0)
    # beta = 1: r uniform, S_beta = S(p), Dbar_r = Dbar, no bias: B_T = 2 x (section-5 bound).
    assert value == pytest.approx(2 * plain.value(p, 5), rel=1e-9)
    point = DesignPoint(rule="weighted", concurrency=5, p=tuple(p), beta=1.0)
    assert bias.evaluate(point).throughput == pytest.approx(plain.evaluate(p, 5).throughput)
    env, _, _, best = bias.envelope_value_and_grad(p, 1.0, 12)
    curve = plain.curve(p, 12)
    assert best == curve.best_concurrency
    assert env == pytest.approx(2 * float(curve.value.min()), rel=1e-9)
