"""The bias-aware bound of docs/theory.md section 6 against closed-form quadratic clients.

With ``f_i(w) = 0.5 E_x ||w - x||^2`` over client ``i``'s points (mean ``c_i``), every
``grad f_i(w) = w - c_i``: ``L = 1``, ``grad f_i - grad f = cbar - c_i`` whatever ``w`` is,
so ``zeta^2 = (1/n) sum_i ||c_i - cbar||^2``, the centred Gram matrix is
``(c_i - cbar) . (c_j - cbar)`` and the direct bias is ``2 ||sum_i (r_i - 1/n) c_i||^2``.
"""

from __future__ import annotations

import numpy as np
import pytest

from raysync.exceptions import ConfigError
from raysync.objectives import (
    BiasAwareBound,
    BoundObjective,
    DesignPoint,
    ProblemConstants,
    bias_weights,
    estimate_constants,
    optimize_bias_aware,
    variance_inflation,
)

MU = np.array([1.0, 1.0, 10.0, 10.0, 100.0, 100.0])
CONST = ProblemConstants(L=2.0, sigma2=1.0, M2=0.5, A=2.0)


class QuadraticComputer:
    """``loss = 0.5 mean_j ||w - x_j||^2`` on a batch (float32 results, like the models)."""

    def compute_gradient(self, w, x, y):  # noqa: ANN001, ANN201 - the GradientComputer API
        del y
        w64 = np.asarray(w, dtype=np.float64)
        x64 = np.asarray(x, dtype=np.float64)
        grad = w64 - x64.mean(axis=0)
        loss = 0.5 * float(np.mean(np.sum((x64 - w64) ** 2, axis=1)))
        return grad.astype(np.float32), loss


def _quadratic_clients(n: int = 5, dim: int = 3, per_client: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(n, dim))
    clients = []
    for i in range(n):
        x = centres[i] + rng.normal(size=(per_client, dim))
        clients.append((x.astype(np.float32), np.zeros(per_client, dtype=np.int64)))
    means = np.stack([c[0].astype(np.float64).mean(axis=0) for c in clients])
    return clients, means


def test_pilot_estimates_zeta2_and_gram_exactly_on_quadratics() -> None:
    clients, means = _quadratic_clients()
    est = estimate_constants(
        QuadraticComputer(), clients, np.zeros(3), batch_size=8, num_points=3, fstar_steps=10,
    )
    centred = means - means.mean(axis=0)
    zeta2 = float(np.mean(np.sum(centred**2, axis=1)))
    gram = centred @ centred.T
    # float32 gradients: relative error ~1e-6 on O(1) quantities
    assert est.zeta2 == pytest.approx(zeta2, rel=1e-5)
    assert len(est.gram) == est.num_points == 3
    for h, z in zip(est.gram, est.zeta2_per_point, strict=True):
        np.testing.assert_allclose(h, gram, rtol=1e-4, atol=1e-4)
        assert np.trace(h) / len(clients) == pytest.approx(z, rel=1e-6)
    # Hessian is the identity (the trajectory ratios are not checked: step 1/L_0 = 1
    # reaches the optimum in one step, after which float32 rounding dominates them)
    assert est.smoothness_power == pytest.approx(1.0, rel=1e-3)
    assert est.to_dict()["gram"][0][0][0] == pytest.approx(gram[0, 0], rel=1e-4)


def _bound(kind: str, *, budget: float = 50.0, gram=None, zeta2=None) -> BiasAwareBound:  # noqa: ANN001
    rng = np.random.default_rng(1)
    g = rng.normal(size=(MU.size, 4))
    g -= g.mean(axis=0)
    h = g @ g.T if gram is None else gram
    z2 = float(np.trace(h)) / MU.size if zeta2 is None else zeta2
    return BiasAwareBound(mu=MU, constants=CONST, time_budget=budget, zeta2=z2, gram=(h,),
                          bias_kind=kind)


def test_bias_terms_in_closed_form() -> None:
    clients, means = _quadratic_clients(n=6)
    centred = means - means.mean(axis=0)
    gram = centred @ centred.T
    zeta2 = float(np.mean(np.sum(centred**2, axis=1)))
    direct = _bound("direct", gram=gram, zeta2=zeta2)
    cs = _bound("cauchy-schwarz", gram=gram, zeta2=zeta2)
    p = np.array([0.05, 0.1, 0.15, 0.2, 0.2, 0.3])
    for beta in (0.0, 0.3, 1.0):
        _, r, _ = bias_weights(p, beta)
        exact = 2.0 * float(np.sum(((r - 1 / 6)[:, None] * means).sum(axis=0) ** 2))
        b_direct, _ = direct.bias_value_and_grad(r)
        b_cs, _ = cs.bias_value_and_grad(r)
        assert b_direct == pytest.approx(exact, rel=1e-10, abs=1e-14)
        assert b_cs == pytest.approx(2 * 6 * float(np.sum((r - 1 / 6) ** 2)) * zeta2)
        assert b_direct <= b_cs * (1 + 1e-12)  # Cauchy-Schwarz is an upper bound
    # unbiased weights: r uniform, no bias at all
    assert direct.evaluate(DesignPoint(rule="weighted", concurrency=4, p=tuple(p))).bias == (
        pytest.approx(0.0, abs=1e-20)
    )


def test_weights_interpolate_between_unweighted_and_unbiased() -> None:
    p = np.array([0.1, 0.2, 0.3, 0.4])
    w, r, s = bias_weights(p, 0.0)
    np.testing.assert_allclose(w, 1.0)
    np.testing.assert_allclose(r, p)
    assert s == pytest.approx(1.0)
    _, r, s = bias_weights(p, 1.0)
    np.testing.assert_allclose(r, 0.25)
    assert s == pytest.approx(variance_inflation(p))


def test_unbiased_point_is_twice_the_section5_bound() -> None:
    bound = _bound("direct", budget=30.0)
    base = BoundObjective(mu=MU, constants=CONST, criterion="wall-clock", time_budget=30.0)
    p = np.array([0.05, 0.1, 0.15, 0.2, 0.2, 0.3])
    for c in (1, 5, 12):
        terms = bound.evaluate(DesignPoint(rule="weighted", concurrency=c, p=tuple(p)))
        ref = base.evaluate(p, c)
        assert terms.value == pytest.approx(2 * ref.value, rel=1e-12)
        assert terms.eta == pytest.approx(ref.eta, rel=1e-12)
        assert terms.staleness == pytest.approx(2 * ref.staleness, rel=1e-12)
        total = terms.optimization + terms.variance + terms.staleness + terms.bias
        assert terms.value == pytest.approx(total, rel=1e-14)


def test_asyncsgd_point_statistics() -> None:
    terms = _bound("direct").evaluate(DesignPoint(rule="asyncsgd", concurrency=6, p=None))
    assert terms.throughput == pytest.approx(MU.sum())
    assert terms.variance_inflation == pytest.approx(1.0)
    assert terms.mean_delay == pytest.approx(MU.size - 1)  # Dbar_q = n - 1
    np.testing.assert_allclose(terms.r, MU / MU.sum())
    assert terms.dominant in ("optimization", "variance", "staleness", "bias")


@pytest.mark.parametrize("kind", ["direct", "cauchy-schwarz"])
@pytest.mark.parametrize("budget", [5.0, 1e4])
def test_gradient_matches_finite_differences(kind: str, budget: float) -> None:
    bound = _bound(kind, budget=budget)
    p = np.random.default_rng(3).dirichlet(np.ones(MU.size))
    beta, c, h = 0.37, 5, 1e-6
    value, g_p, g_beta = bound.value_and_grad(p, c, beta)
    fd = np.array([
        (bound.value_and_grad(p + h * e, c, beta)[0] - bound.value_and_grad(p - h * e, c, beta)[0])
        / (2 * h)
        for e in np.eye(MU.size)
    ])
    up, down = bound.value_and_grad(p, c, beta + h)[0], bound.value_and_grad(p, c, beta - h)[0]
    fd_beta = (up - down) / (2 * h)
    # central differences: error O(h^2 * third derivative) + rounding O(eps * B / h) ~ 1e-9 B
    np.testing.assert_allclose(g_p, fd, rtol=1e-5, atol=1e-7 * value)
    assert g_beta == pytest.approx(fd_beta, rel=1e-5, abs=1e-7 * value)
    env, g_env, gb_env, c_star = bound.envelope_value_and_grad(p, beta, 30)
    v_star, g_star, gb_star = bound.value_and_grad(p, c_star, beta)
    assert env == pytest.approx(v_star, rel=1e-10)
    np.testing.assert_allclose(g_env, g_star, rtol=1e-8)
    assert all(env <= bound.value_and_grad(p, cc, beta)[0] * (1 + 1e-12) for cc in (1, 6, 30))


def test_iid_optimum_is_unweighted_and_skew_moves_towards_unbiased_mix() -> None:
    n = MU.size
    iid = BiasAwareBound(mu=MU, constants=CONST, time_budget=50.0, zeta2=0.0,
                         gram=(np.zeros((n, n)),))
    opt = optimize_bias_aware(iid, max_concurrency=2 * n)
    assert opt.point.rule == "asyncsgd" or opt.point.beta < 0.05
    # every client's data differs strongly (full-rank heterogeneity): the bias of an
    # unweighted, speed-proportional mix dominates; the optimum's mix r is near uniform
    g = 30.0 * np.random.default_rng(5).normal(size=(n, n))
    g -= g.mean(axis=0)
    skew = BiasAwareBound(mu=MU, constants=CONST, time_budget=50.0, gram=(g @ g.T,))
    opt = optimize_bias_aware(skew, max_concurrency=2 * n)
    asyncsgd = next(t for lab, _, t in opt.candidates if lab == "asyncsgd")
    assert asyncsgd.dominant == "bias"
    assert opt.point.rule == "weighted"
    assert opt.terms.bias_distance < 0.01 * asyncsgd.bias_distance
    assert opt.terms.value < asyncsgd.value
    # rank-one skew (only the two fast clients differ): an unweighted routing can cancel
    # the bias exactly by giving the fast clients their fair share r_i = 1/n
    g = np.zeros((n, 2))
    g[4:, 0] = 30.0
    g -= g.mean(axis=0)
    rank_one = BiasAwareBound(mu=MU, constants=CONST, time_budget=50.0, gram=(g @ g.T,))
    opt = optimize_bias_aware(rank_one, max_concurrency=2 * n)
    assert sum(opt.terms.r[4:]) == pytest.approx(2 / n, rel=1e-3)
    assert opt.terms.bias < 1e-3 * opt.terms.value


def test_bad_input_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="bias_kind"):
        BiasAwareBound(mu=MU, constants=CONST, time_budget=1.0, zeta2=1.0, bias_kind="tight")
    with pytest.raises(ConfigError, match="Gram"):
        BiasAwareBound(mu=MU, constants=CONST, time_budget=1.0, zeta2=1.0)
    with pytest.raises(ConfigError, match="zeta2"):
        BiasAwareBound(mu=MU, constants=CONST, time_budget=1.0, bias_kind="cauchy-schwarz")
    with pytest.raises(ConfigError, match="gram"):
        BiasAwareBound(mu=MU, constants=CONST, time_budget=1.0, gram=(np.eye(2),))
    bound = _bound("direct")
    with pytest.raises(ConfigError, match="covers"):
        bound.evaluate(DesignPoint(rule="fedasync", concurrency=3, p=(1 / 6,) * 6))


def _quadratic_draws(count: int, n: int = 5):  # noqa: ANN202
    """Pilots on ``count`` draws of quadratic clients, with each draw's centres."""
    draws = [_quadratic_clients(n=n, seed=s) for s in range(count)]
    ests = [estimate_constants(QuadraticComputer(), clients, np.zeros(3), batch_size=8,
                               num_points=2, fstar_steps=4, seed=s)
            for s, (clients, _) in enumerate(draws)]
    return ests, [means for _, means in draws]


def test_bias_pooled_over_draws_is_the_mean_bias_of_the_draws() -> None:
    """On quadratic clients the direct bias of a draw is ``2 ||sum_i (r_i - 1/n) c_i||^2``
    (module docstring); pooled over draws the bound's bias is the mean of that over the
    draws, and its gradient the mean of ``4 sum_j (H_d)_{ij} (r_j - 1/n)``."""
    from raysync.objectives import pool_bias_over_draws

    ests, centres = _quadratic_draws(3)
    pooled = pool_bias_over_draws(ests)
    assert pooled.bias_draws == 3
    assert pooled.constants == ests[0].constants  # everything else is the first pilot's
    assert pooled.pilot_losses == ests[0].pilot_losses
    bound = BiasAwareBound.from_estimate(MU[:5], pooled, time_budget=50.0)
    rng = np.random.default_rng(7)
    for _ in range(5):
        r = rng.dirichlet(np.ones(5))
        d = r - 0.2
        per_draw = [2.0 * float(np.sum((d @ c) ** 2)) for c in centres]
        grads = [4.0 * (c - c.mean(axis=0)) @ (c - c.mean(axis=0)).T @ d for c in centres]
        value, grad = bound.bias_value_and_grad(r)
        # float32 gradients in the pilot: ~1e-6 relative on O(1) quantities
        assert value == pytest.approx(np.mean(per_draw), rel=1e-4)
        np.testing.assert_allclose(grad, np.mean(grads, axis=0), rtol=1e-4, atol=1e-5)
    zetas = [float(np.mean(np.sum((c - c.mean(axis=0)) ** 2, axis=1))) for c in centres]
    assert pooled.zeta2 == pytest.approx(np.mean(zetas), rel=1e-4)
    assert pooled.to_dict()["bias_draws"] == 3


def test_pooling_pooled_estimates_weighs_every_draw_once() -> None:
    from raysync.objectives import pool_bias_over_draws

    ests, _ = _quadratic_draws(3)
    once = pool_bias_over_draws(ests)
    nested = pool_bias_over_draws([pool_bias_over_draws(ests[:2]), ests[2]])
    assert nested.bias_draws == once.bias_draws == 3
    for a, b in zip(nested.gram, once.gram, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    assert nested.zeta2_per_point == pytest.approx(once.zeta2_per_point, rel=1e-12)
    assert pool_bias_over_draws(ests[:1]) is ests[0]  # one draw: nothing to average


def test_pooling_refuses_pilots_that_do_not_match() -> None:
    from raysync.objectives import pool_bias_over_draws

    (five,), _ = _quadratic_draws(1)
    four = estimate_constants(QuadraticComputer(), _quadratic_clients(n=4)[0], np.zeros(3),
                              batch_size=8, num_points=2, fstar_steps=4)
    with pytest.raises(ConfigError, match=r"estimate 1 has \(points, zeta points, Gram shape\) "
                                          r"\(2, 2, \(4, 4\)\), the first \(2, 2, \(5, 5\)\)"):
        pool_bias_over_draws([five, four])
    with pytest.raises(ConfigError, match="at least one estimate"):
        pool_bias_over_draws([])
