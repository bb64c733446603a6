"""Search spaces: a valid simplex and C in range for every draw; exact warm-start encodings."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.trial import FixedTrial

from raysync.exceptions import ConfigError
from tuning.search_space import (
    PowerSpace,
    SimplexSpace,
    TierSpace,
    client_tiers,
    make_search_space,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

MU = np.array([1.0, 2.0, 4.0, 0.5, 3.0])


def _spaces(cmax: int = 9):
    return [
        SimplexSpace(MU, max_concurrency=cmax, parameterization="exponential"),
        SimplexSpace(MU, max_concurrency=cmax, parameterization="logits"),
        PowerSpace(MU, max_concurrency=cmax),
        TierSpace(MU, tiers=[0, 0, 1, 2, 1], max_concurrency=cmax),
    ]


def _assert_valid(candidate, cmax: int, n: int) -> None:
    p = candidate.p
    assert p.shape == (n,)
    assert np.all(np.isfinite(p)) and np.all(p > 0)
    assert math.isclose(float(p.sum()), 1.0, rel_tol=0, abs_tol=1e-12)
    assert isinstance(candidate.concurrency, int)
    assert 1 <= candidate.concurrency <= cmax


unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(
    index=st.integers(0, 3),
    fractions=st.lists(unit, min_size=6, max_size=6),
    c=st.integers(1, 9),
)
def test_fixed_trial_always_gives_valid_simplex(index: int, fractions: list[float], c: int) -> None:
    space = _spaces()[index]
    params = {}
    for k, (name, dist) in enumerate(space.distributions().items()):
        if name == "concurrency":
            params[name] = c
        else:
            params[name] = dist.low + fractions[k % len(fractions)] * (dist.high - dist.low)
    candidate = space.suggest(FixedTrial(params))
    _assert_valid(candidate, 9, MU.size)


@settings(max_examples=60, deadline=None)
@given(index=st.integers(0, 3), seed=st.integers(0, 2**16))
def test_real_study_draws_are_valid(index: int, seed: int) -> None:
    space = _spaces()[index]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(3):
        trial = study.ask()
        candidate = space.suggest(trial)
        _assert_valid(candidate, 9, MU.size)
        study.tell(trial, float(candidate.p.max()))


def test_tpe_draws_are_valid() -> None:
    space = _spaces()[0]
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5))
    for _ in range(25):
        trial = study.ask()
        candidate = space.suggest(trial)
        _assert_valid(candidate, 9, MU.size)
        study.tell(trial, float(np.sum(candidate.p**2)) + candidate.concurrency)


@settings(max_examples=100, deadline=None)
@given(
    weights=st.lists(st.floats(min_value=0.01, max_value=1.0), min_size=5, max_size=5),
    c=st.integers(-3, 20),
)
def test_simplex_warm_start_encoding_is_exact(weights: list[float], c: int) -> None:
    p = np.asarray(weights) / np.sum(weights)
    for parameterization in ("exponential", "logits"):
        space = SimplexSpace(MU, max_concurrency=9, parameterization=parameterization)
        params = space.params_for(p, c)
        for name, dist in space.distributions().items():
            assert dist.low <= params[name] <= dist.high
        decoded = space.decode(params)
        np.testing.assert_allclose(decoded.p, p, rtol=1e-9, atol=1e-12)
        assert decoded.concurrency == min(max(c, 1), 9)
        # Through a real enqueued trial too.
        study = optuna.create_study()
        study.enqueue_trial(params)
        trial = study.ask()
        np.testing.assert_allclose(space.suggest(trial).p, p, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("beta", [-1.0, 0.0, 1.0, 2.5])
def test_power_family_reproduces_its_members(beta: float) -> None:
    space = PowerSpace(MU, max_concurrency=5)
    p = MU**beta / np.sum(MU**beta)
    params = space.params_for(p, 3)
    assert params["beta"] == pytest.approx(beta, abs=1e-9)
    np.testing.assert_allclose(space.decode(params).p, p, rtol=1e-9)
    # Uniform and p ~ mu are beta = 0 and 1.
    np.testing.assert_allclose(space.routing(0.0), np.full(MU.size, 1 / MU.size))
    np.testing.assert_allclose(space.routing(1.0), MU / MU.sum())


def test_tier_family_shares_weights_within_a_tier(tiered_config) -> None:
    tiers = client_tiers(tiered_config)
    assert tiers == (0, 0, 0, 1, 1, 2)  # same rate but other resources: another tier
    space = make_search_space(tiered_config, family="tiers")
    assert space.param_names == ["concurrency", "tier_0", "tier_1", "tier_2"]
    p = np.array([0.2, 0.2, 0.2, 0.15, 0.15, 0.1])
    decoded = space.project(p, 4)
    np.testing.assert_allclose(decoded.p, p, rtol=1e-9)
    fixed = FixedTrial({"concurrency": 2, "tier_0": 1.0, "tier_1": 0.0, "tier_2": -1.0})
    candidate = space.suggest(fixed)
    assert candidate.p[0] == candidate.p[1] == candidate.p[2]
    assert candidate.p[3] == candidate.p[4]


def test_defaults_and_validation(tiny_config) -> None:
    space = make_search_space(tiny_config)
    assert space.max_concurrency == 8  # 2n
    assert space.param_names[0] == "concurrency"
    with pytest.raises(ConfigError, match="family"):
        make_search_space(tiny_config, family="nope")
    with pytest.raises(ConfigError, match="max_concurrency"):
        SimplexSpace(MU, max_concurrency=0)
    with pytest.raises(ConfigError, match="parameterization"):
        SimplexSpace(MU, max_concurrency=3, parameterization="dirichlet")
    with pytest.raises(ConfigError, match="missing"):
        space.decode({"concurrency": 2})
