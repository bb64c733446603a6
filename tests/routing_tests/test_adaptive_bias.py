"""AdaptiveRouter with the bias-aware objective (docs/theory.md section 6, issue 16 item 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import optimize as sopt

from raysync.cli import main
from raysync.config import RoutingConfig, SystemConfig
from raysync.exceptions import ConfigError
from raysync.objectives import (
    BiasAwareBound,
    BoundObjective,
    ProblemConstants,
    bias_weights,
    optimize_bias_aware,
    optimize_routing,
)
from raysync.objectives.design import DesignPoint
from raysync.routing import AdaptiveRouter, BaseRouter, make_router
from raysync.simulation import simulate
from raysync.testing.contracts import RouterContract
from tests.routing_tests._network import closed_network

MU = np.array([1.0, 4.0, 16.0])
UNIT = ProblemConstants(L=1.0, sigma2=1.0, M2=0.0, A=1.0)  # the router's DEFAULT_CONSTANTS


class TestBiasAwareRouterContract(RouterContract):
    def make_router(self, num_clients: int) -> BaseRouter:
        return AdaptiveRouter(
            reoptimize_every=7, objective="bias_aware", zeta2=0.5, weight_exponent=0.5
        )


def _fed(router: AdaptiveRouter, mu: np.ndarray, updates: int, concurrency: int) -> None:
    """Bind, start and serve ``updates`` tasks of a closed network (exponential times)."""
    router.bind(mu.size, np.random.default_rng(0))
    closed_network(router, mu, updates, concurrency=concurrency, seed=1)


@pytest.mark.parametrize(("beta", "zeta2"), [(0.0, 0.5), (0.5, 0.2), (0.0, 0.0), (1.0, 3.0)])
def test_new_p_is_optimize_bias_aware_for_the_same_estimates(beta: float, zeta2: float) -> None:
    router = AdaptiveRouter(
        reoptimize_every=400, explore=0.0, min_change=0.0, horizon=1000.0,
        objective="bias_aware", zeta2=zeta2, weight_exponent=beta, warmup=0,
    )  # fmt: skip
    _fed(router, MU, 800, concurrency=MU.size)
    change = router.changes[-1]
    assert change.objective == "bias_aware" and len(router.changes) == 2
    # The independent optimiser scans C <= C_max and keeps the best; with C_max = n it
    # must land on C = n here for the comparison to be at the router's C.
    bound = BiasAwareBound(
        mu=change.rates, constants=UNIT, time_budget=1000.0, zeta2=zeta2,
        bias_kind="cauchy-schwarz",
    )  # fmt: skip
    ref = optimize_bias_aware(
        bound, max_concurrency=MU.size, fixed_beta=beta, include_asyncsgd=False
    )
    assert ref.point.concurrency == MU.size
    assert change.p == pytest.approx(np.array(ref.point.p), abs=2e-4)


def test_two_clients_match_a_scalar_search_of_the_bound() -> None:
    """n = 2: ``p = (x, 1 - x)``; bounded 1-D search on the bound's values, no gradients."""
    mu, c, beta, zeta2 = np.array([1.0, 10.0]), 2, 0.0, 0.05
    bound = BiasAwareBound(
        mu=mu, constants=UNIT, time_budget=500.0, zeta2=zeta2, bias_kind="cauchy-schwarz"
    )

    def value(x: float) -> float:
        point = DesignPoint(rule="weighted", concurrency=c, p=(x, 1.0 - x), beta=beta)
        return bound.evaluate(point).value

    ref = sopt.minimize_scalar(value, bounds=(1e-6, 1 - 1e-6), method="bounded",
                               options={"xatol": 1e-9})  # fmt: skip
    router = AdaptiveRouter(
        reoptimize_every=10**9, explore=0.0, horizon=500.0, objective="bias_aware",
        zeta2=zeta2, weight_exponent=beta,
    )  # fmt: skip
    p = router._bias_aware_optimum(mu, c, None)
    assert 0.01 < ref.x < 0.99  # interior: the comparison is not at a box edge
    assert p[0] == pytest.approx(ref.x, abs=1e-4)


@pytest.mark.parametrize("zeta2", [0.0, 3.0])
def test_beta_one_is_the_section_5_choice(zeta2: float) -> None:
    """beta = 1: ``r`` uniform, no bias term, ``B = 2 J_T`` (docs/theory.md section 6)."""
    kwargs = {"reoptimize_every": 250, "explore": 0.0, "min_change": 0.0, "horizon": 1000.0,
              "warmup": 0}  # fmt: skip
    wall = AdaptiveRouter(**kwargs)  # type: ignore[arg-type]
    bias = AdaptiveRouter(**kwargs, objective="bias_aware", zeta2=zeta2)  # type: ignore[arg-type]
    _fed(wall, MU, 1000, concurrency=3)
    _fed(bias, MU, 1000, concurrency=3)
    assert len(wall.changes) == len(bias.changes) == 4
    for a, b in zip(wall.changes, bias.changes, strict=True):
        assert np.array_equal(a.rates, b.rates)  # the same estimates, stream for stream
        assert b.p == pytest.approx(a.p, abs=2e-4)


def test_below_beta_one_it_differs_and_zeta2_pulls_the_mix_to_uniform() -> None:
    """beta = 0: zeta2 = 0 is not the section-5 choice; the bias term shrinks ||r - u||."""
    section5 = np.asarray(
        optimize_routing(
            BoundObjective(mu=MU, constants=UNIT, time_budget=1000.0), concurrency=3
        ).p  # fmt: skip
    )
    distances = []
    for zeta2 in (0.0, 0.05, 0.5, 5.0):
        router = AdaptiveRouter(
            explore=0.0, horizon=1000.0, objective="bias_aware", zeta2=zeta2,
            weight_exponent=0.0,
        )  # fmt: skip
        p = router._bias_aware_optimum(MU, 3, None)
        if zeta2 == 0.0:
            assert np.abs(p - section5).max() > 0.1
        _, r, _ = bias_weights(p, 0.0)
        distances.append(float(np.sum((r - 1 / 3) ** 2)))
    assert all(a > b for a, b in zip(distances, distances[1:], strict=False)), distances


def test_config_passes_zeta2_and_the_algorithms_beta() -> None:
    config = SystemConfig.from_dict({
        "clients": [{"service_time": {"rate": float(m)}} for m in MU], "concurrency": 3,
        "routing": {"kind": "adaptive", "objective": "bias_aware", "zeta2": 0.7},
        "algorithm": {"name": "generalized_asyncsgd", "weight_exponent": 0.25},
    })  # fmt: skip
    assert config.routing.weight_exponent == 0.25
    router = make_router(config.routing)
    assert isinstance(router, AdaptiveRouter)
    assert (router.objective, router.zeta2, router.weight_exponent) == ("bias_aware", 0.7, 0.25)
    assert SystemConfig.from_dict(config.to_dict()).routing == config.routing  # round trip


def test_simulated_run_swaps_with_the_bias_aware_bound() -> None:
    config = SystemConfig.from_dict({
        "clients": [{"service_time": {"rate": float(m)}} for m in MU], "concurrency": 3,
        "routing": {"kind": "adaptive", "objective": "bias_aware", "zeta2": 0.1,
                    "reoptimize_every": 50},
        "algorithm": {"name": "generalized_asyncsgd", "weight_exponent": 0.0},
        "run": {"num_updates": 400, "train": False},
    })  # fmt: skip
    router = make_router(config.routing)
    assert isinstance(router, AdaptiveRouter)
    result = simulate(config, router=router)
    assert result.num_updates == 400
    assert router.changes and all(c.objective == "bias_aware" for c in router.changes)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"objective": "fast"}, r"routing\.objective must be one of wall_clock, bias_aware, "
         r"got 'fast'"),
        ({"objective": "bias_aware"}, r"routing\.objective 'bias_aware' needs routing\.zeta2"),
        ({"objective": "bias_aware", "zeta2": -1.0}, r"routing\.zeta2 must be >= 0, got -1"),
        ({"zeta2": 1.0}, r"routing\.zeta2 is only allowed with objective 'bias_aware'"),
        ({"objective": "bias_aware", "zeta2": 1.0, "weight_exponent": 2.0},
         r"routing\.weight_exponent must be in \[0, 1\], got 2"),
    ],
)  # fmt: skip
def test_bad_values_are_one_line(fields: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        make_router(RoutingConfig(kind="adaptive", **fields))  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_router_refuses_bias_aware_without_zeta2() -> None:
    with pytest.raises(ConfigError, match="needs routing.zeta2"):
        AdaptiveRouter(objective="bias_aware")
    with pytest.raises(ConfigError, match="routing.objective must be one of"):
        AdaptiveRouter(objective="bias-aware")


CLIENTS = '[[clients]]\nservice_time = { kind = "exponential", rate = 1.0 }\ncount = 3\n'


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ('[routing]\nkind = "adaptive"\nobjective = "bias_aware"\n',
         "routing.objective 'bias_aware' needs routing.zeta2"),
        ('[routing]\nkind = "adaptive"\nobjective = "speed"\n',
         "routing.objective must be one of wall_clock, bias_aware, got 'speed'"),
        ('[routing]\nkind = "adaptive"\nobjective = "bias_aware"\nzeta2 = -0.5\n',
         "routing.zeta2 must be >= 0, got -0.5"),
        ('[routing]\nkind = "adaptive"\nobjective = "bias_aware"\nzeta2 = 1.0\n'
         "weight_exponent = 0.5\n[algorithm]\nweight_exponent = 1.0\n",
         "routing.weight_exponent must equal algorithm.weight_exponent = 1"),
        ('[routing]\nkind = "adaptive"\nobjective = "bias_aware"\nzeta2 = 1.0\n'
         '[algorithm]\nname = "fedasync"\n',
         "routing.objective 'bias_aware' bounds Generalized AsyncSGD"),
    ],
)  # fmt: skip
def test_cli_exits_2_with_one_line(
    body: str, match: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("concurrency = 3\n[run]\nnum_updates = 50\ntrain = false\n" + body + CLIENTS,
                    encoding="utf-8")  # fmt: skip
    code = main(["simulate", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert match in err
    assert len(err.splitlines()) == 1, err
