"""The design space: points, configs, parameters, baselines; partial weighting in the strategy."""

from __future__ import annotations

import numpy as np
import pytest

from raysync.config import load_config
from raysync.exceptions import ConfigError
from raysync.objectives import DesignPoint, DesignSpace, bias_weights, speed_tiers
from raysync.strategies import make_strategy

TINY = "examples/tiny.toml"


def _same(a: DesignPoint, b: DesignPoint) -> bool:
    """Equal up to the rounding of renormalising ``p``."""
    if (a.rule, a.concurrency, a.beta, a.lr) != (b.rule, b.concurrency, b.beta, b.lr):
        return False
    if a.p is None or b.p is None:
        return a.p is None and b.p is None
    return bool(np.allclose(a.p, b.p, rtol=1e-12, atol=0))


@pytest.fixture(scope="module")
def config():  # noqa: ANN201
    return load_config(TINY)


def test_baselines_are_points_that_round_trip_through_configs(config) -> None:  # noqa: ANN001
    space = DesignSpace.from_config(config)
    base = space.baselines(0.02)
    assert set(base) == {"uniform", "asyncsgd", "fedasync", "fedbuff"}
    kinds = {"uniform": ("uniform", "generalized_asyncsgd"),
             "asyncsgd": ("return_to_sender", "asyncsgd"),
             "fedasync": ("uniform", "fedasync"), "fedbuff": ("uniform", "fedbuff")}
    for label, point in base.items():
        cfg = point.to_config(config)
        assert (cfg.routing.kind, cfg.algorithm.name) == kinds[label]
        assert cfg.concurrency == config.num_clients
        assert cfg.algorithm.lr == 0.02
        assert cfg.algorithm.batch_size == config.algorithm.batch_size  # kept from the base
        assert cfg.data == config.data and cfg.run == config.run and cfg.clients == config.clients
        assert _same(DesignPoint.from_config(cfg), point)
        assert _same(space.project(point), point)


def test_weighted_point_with_partial_beta_round_trips(config) -> None:  # noqa: ANN001
    point = DesignPoint(rule="weighted", concurrency=7, p=(0.4, 0.3, 0.2, 0.1), beta=0.25,
                        lr=0.03)
    cfg = point.to_config(config)
    assert cfg.routing.kind == "fixed" and cfg.algorithm.weight_exponent == 0.25
    assert _same(DesignPoint.from_config(cfg), point)
    assert _same(DesignPoint.from_dict(point.to_dict()), point)


def test_encode_decode_is_exact_for_tier_constant_routing() -> None:
    mu = [5.0, 5.0, 1.0, 1.0, 0.2]
    space = DesignSpace(mu, max_concurrency=10, lr_range=(1e-3, 1.0))
    assert space.tiers == speed_tiers(mu) == (0, 0, 1, 1, 2)
    point = DesignPoint(rule="weighted", concurrency=3, p=(0.3, 0.3, 0.15, 0.15, 0.1),
                        beta=0.6, lr=0.01)
    params = space.encode(point)
    assert set(params) == {p.name for p in space.active("weighted")}
    back = space.decode(params)
    np.testing.assert_allclose(back.p, point.p, rtol=1e-12)
    assert (back.concurrency, back.beta, back.lr) == (3, 0.6, pytest.approx(0.01))
    # out-of-range values are clipped onto the space
    clipped = space.decode({**params, "concurrency": 99, "lr": 5.0})
    assert clipped.concurrency == 10 and clipped.lr == 1.0
    with pytest.raises(ConfigError, match="missing 'beta'"):
        space.decode({k: v for k, v in params.items() if k != "beta"})


def test_points_reject_what_the_config_would_reject(config) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match="None for rule 'asyncsgd'"):
        DesignPoint(rule="asyncsgd", concurrency=4, p=(0.25,) * 4)
    with pytest.raises(ConfigError, match="concurrency = n"):
        DesignPoint(rule="asyncsgd", concurrency=3, p=None).to_config(config)
    with pytest.raises(ConfigError, match="beta"):
        DesignPoint(rule="weighted", concurrency=2, p=(0.5, 0.5), beta=1.5)
    with pytest.raises(ConfigError, match="sum to 1"):
        DesignPoint(rule="weighted", concurrency=2, p=(0.5, 0.6))
    with pytest.raises(ConfigError, match="rule"):
        DesignPoint(rule="sgd", concurrency=2, p=(0.5, 0.5))
    with pytest.raises(ConfigError, match="entries"):
        DesignPoint(rule="fedasync", concurrency=2, p=(0.5, 0.5)).to_config(config)
    bad = config.replace(algorithm=config.algorithm.__class__(weight_exponent=0.5))
    assert bad.algorithm.weight_exponent == 0.5
    with pytest.raises(ConfigError, match="weight_exponent"):
        config.algorithm.__class__(weight_exponent=-0.1)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_strategy_expected_step_is_the_bounds_mix(config, beta: float) -> None:  # noqa: ANN001
    point = DesignPoint(rule="weighted", concurrency=4, p=(0.4, 0.3, 0.2, 0.1), beta=beta,
                        lr=0.1)
    strategy = make_strategy(point.to_config(config).algorithm)
    p = np.asarray(point.p)
    strategy.bind(4, p)
    steps = strategy.step_sizes
    _, r, _ = bias_weights(p, beta)
    # client i is served a fraction p_i of the updates: expected step lr * sum_i r_i g_i
    np.testing.assert_allclose(p * steps, 0.1 * r, rtol=1e-12)
    if beta == 0.0:
        np.testing.assert_allclose(steps, 0.1)
    if beta == 1.0:
        np.testing.assert_array_equal(steps, 0.1 / (4 * p))


def test_projection_keeps_each_tiers_routing_mass() -> None:
    # The optimum may put a tier's mass on a few of its clients (e.g. 76 % on 2 of 6 fast
    # clients, the rest ~1e-35): the projection must keep the tier's share, not drop it.
    tiers = (0, 0, 0, 1, 1, 1)
    space = DesignSpace([1.0, 1.0, 1.0, 10.0, 10.0, 10.0], tiers=tiers, max_concurrency=12)
    p = np.array([0.08, 0.08, 0.08, 0.38, 0.38, 1e-35])
    p = p / p.sum()
    projected = space.project(DesignPoint(rule="weighted", concurrency=6, p=tuple(p), lr=0.1))
    assert projected.p is not None
    q = np.asarray(projected.p)
    np.testing.assert_allclose(q[:3].sum(), p[:3].sum(), rtol=1e-9)
    np.testing.assert_allclose(q[3:].sum(), p[3:].sum(), rtol=1e-9)
    np.testing.assert_allclose(q[3:], p[3:].sum() / 3, rtol=1e-9)
