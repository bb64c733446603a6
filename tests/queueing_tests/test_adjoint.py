"""Reverse-mode (adjoint) MVA in numpy vs torch autograd, finite differences, closed forms."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raysync.exceptions import ConfigError
from raysync.queueing import (
    ClosedNetwork,
    MVATape,
    analyze,
    mva_curve_value_and_vjp,
    mva_forward,
    mva_value_and_vjp,
    throughput_and_delays_curve_torch,
    throughput_and_delays_torch,
)

torch = pytest.importorskip("torch")

MU = np.array([1.0, 2.0, 4.0, 0.5])
P = np.array([0.4, 0.3, 0.2, 0.1])
EXTENDED: dict[str, Any] = {
    "latency": 0.3, "client_latency": np.array([0.1, 0.0, 0.5, 0.2]), "server_rate": 4.0
}
RTOL = 1e-10


def _torch_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    out = dict(kwargs)
    if out.get("client_latency") is not None:
        out["client_latency"] = torch.tensor(out["client_latency"], dtype=torch.float64)
    return out


def _torch_vjp(
    mu: np.ndarray, p: np.ndarray, c: int, g_lam: Any, g_delay: np.ndarray, curve: bool,
    **kwargs: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    mu_t = torch.tensor(mu, dtype=torch.float64, requires_grad=True)
    p_t = torch.tensor(p, dtype=torch.float64, requires_grad=True)
    fn = throughput_and_delays_curve_torch if curve else throughput_and_delays_torch
    lam, delay = fn(mu_t, p_t, c, **_torch_kwargs(kwargs))
    f = (torch.as_tensor(g_lam, dtype=torch.float64) * lam).sum() + (
        torch.as_tensor(g_delay, dtype=torch.float64) * delay
    ).sum()
    d_p, d_mu = torch.autograd.grad(f, (p_t, mu_t))
    return lam.detach().numpy(), delay.detach().numpy(), d_p.numpy(), d_mu.numpy()


def _close(
    actual: np.ndarray, expected: np.ndarray, rtol: float = RTOL, natural: float = 0.0
) -> None:
    """Relative agreement, measured against the largest entry (cancellation-safe).

    ``natural`` adds the gradient's natural scale (e.g. ``|g| Lambda / min mu``): where the
    exact derivative is itself the result of cancellation (a saturated server makes
    ``dLambda/dmu`` vanish), two correct implementations agree only to rounding of the
    terms that cancel, not of their tiny difference.
    """
    scale = max(float(np.max(np.abs(expected), initial=0.0)) + natural, 1e-300)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def _natural(g_lam: Any, lam: Any, g_delay: np.ndarray, delay: np.ndarray) -> float:
    """``sum |g_lam| Lambda + sum |g_delay| (E[D] + 1)``: the size of the cotangent terms."""
    return float(np.sum(np.abs(g_lam) * lam) + np.sum(np.abs(g_delay) * (delay + 1.0)))


def _network(draw: Any) -> tuple[np.ndarray, np.ndarray, int, dict[str, Any]]:
    n = draw(st.integers(1, 8))
    c = draw(st.integers(1, 15))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    mu = rng.lognormal(0.0, 1.0, n)
    p = rng.dirichlet(np.full(n, 0.7)) + 1e-3
    p /= p.sum()
    kwargs: dict[str, Any] = {}
    if draw(st.booleans()):
        kwargs = {
            "latency": float(rng.uniform(0.0, 1.0)),
            "client_latency": rng.uniform(0.0, 1.0, n) if draw(st.booleans()) else None,
            "server_rate": float(rng.uniform(0.5, 5.0)) if draw(st.booleans()) else None,
        }
    return mu, p, c, kwargs


@st.composite
def _networks(draw: Any) -> tuple[np.ndarray, np.ndarray, int, dict[str, Any]]:
    return _network(draw)


@settings(max_examples=60, deadline=None)
@given(net=_networks(), seed=st.integers(0, 2**32 - 1))
def test_point_vjp_matches_torch_autograd(
    net: tuple[np.ndarray, np.ndarray, int, dict[str, Any]], seed: int
) -> None:
    mu, p, c, kwargs = net
    rng = np.random.default_rng(seed)
    g_lam = float(rng.standard_normal())
    g_delay = rng.standard_normal(mu.size)
    lam, delay, d_p, d_mu = mva_value_and_vjp(
        mu, p, c, grad_throughput=g_lam, grad_delay=g_delay, **kwargs
    )
    t_lam, t_delay, t_dp, t_dmu = _torch_vjp(mu, p, c, g_lam, g_delay, False, **kwargs)
    assert lam == pytest.approx(float(t_lam), rel=1e-13)
    _close(delay, t_delay, 1e-13)
    natural = _natural(g_lam, lam, g_delay, delay)
    _close(d_p, t_dp, natural=natural / float(p.min()))
    _close(d_mu, t_dmu, natural=natural / float(mu.min()))


@settings(max_examples=40, deadline=None)
@given(net=_networks(), seed=st.integers(0, 2**32 - 1))
def test_curve_vjp_matches_torch_autograd(
    net: tuple[np.ndarray, np.ndarray, int, dict[str, Any]], seed: int
) -> None:
    mu, p, c, kwargs = net
    rng = np.random.default_rng(seed)
    g_lam = rng.standard_normal(c)
    g_delay = rng.standard_normal((c, mu.size))
    lams, delays, d_p, d_mu = mva_curve_value_and_vjp(
        mu, p, c, grad_throughput=g_lam, grad_delay=g_delay, **kwargs
    )
    t_lams, t_delays, t_dp, t_dmu = _torch_vjp(mu, p, c, g_lam, g_delay, True, **kwargs)
    assert lams.shape == (c,) and delays.shape == (c, mu.size)
    _close(lams, t_lams, 1e-13)
    _close(delays, t_delays, 1e-13)
    natural = _natural(g_lam, lams, g_delay, delays)
    _close(d_p, t_dp, natural=natural / float(p.min()))
    _close(d_mu, t_dmu, natural=natural / float(mu.min()))


@pytest.mark.parametrize("extended", [False, True])
def test_larger_seeded_network_matches_torch(extended: bool) -> None:
    rng = np.random.default_rng(7)
    n, c = 60, 90
    mu = rng.lognormal(0.0, 1.0, n)
    p = rng.dirichlet(np.ones(n))
    kwargs: dict[str, Any] = (
        {"latency": 0.2, "client_latency": rng.uniform(0, 1, n), "server_rate": 30.0}
        if extended else {}
    )
    g_delay = rng.standard_normal(n)
    _, _, d_p, d_mu = mva_value_and_vjp(mu, p, c, grad_throughput=-0.7, grad_delay=g_delay,
                                        **kwargs)
    _, _, t_dp, t_dmu = _torch_vjp(mu, p, c, -0.7, g_delay, False, **kwargs)
    _close(d_p, t_dp)
    _close(d_mu, t_dmu)
    # only the throughput, only the delays
    _, _, d_p, _ = mva_value_and_vjp(mu, p, c, grad_throughput=1.0, **kwargs)
    _close(d_p, _torch_vjp(mu, p, c, 1.0, np.zeros(n), False, **kwargs)[2])
    _, _, d_p, _ = mva_value_and_vjp(mu, p, c, grad_delay=g_delay, **kwargs)
    _close(d_p, _torch_vjp(mu, p, c, 0.0, g_delay, False, **kwargs)[2])


@pytest.mark.parametrize("kwargs", [{}, EXTENDED], ids=["base", "extended"])
def test_vjp_matches_central_finite_differences(kwargs: dict[str, Any]) -> None:
    c = 6
    g_lam, g_delay = 0.8, np.array([0.3, -1.2, 0.5, 2.0])

    def objective(mu: np.ndarray, p: np.ndarray) -> float:
        tape = mva_forward(mu, p, c, **kwargs)
        return g_lam * tape.throughput() + float(g_delay @ tape.delays())

    _, _, d_p, d_mu = mva_value_and_vjp(MU, P, c, grad_throughput=g_lam, grad_delay=g_delay,
                                        **kwargs)
    for j in range(4):
        e = np.eye(4)[j]
        h_p, h_mu = 1e-6 * P[j], 1e-6 * MU[j]
        fd_p = (objective(MU, P + h_p * e) - objective(MU, P - h_p * e)) / (2 * h_p)
        fd_mu = (objective(MU + h_mu * e, P) - objective(MU - h_mu * e, P)) / (2 * h_mu)
        assert d_p[j] == pytest.approx(fd_p, rel=1e-6, abs=1e-8)
        assert d_mu[j] == pytest.approx(fd_mu, rel=1e-6, abs=1e-8)


def test_curve_vjp_matches_central_finite_differences() -> None:
    c = 5
    rng = np.random.default_rng(3)
    g_lam, g_delay = rng.standard_normal(c), rng.standard_normal((c, 4))

    def objective(mu: np.ndarray, p: np.ndarray) -> float:
        tape = mva_forward(mu, p, c, **EXTENDED)
        return float(g_lam @ tape.throughput_curve()) + float(np.sum(g_delay * tape.delay_curve()))

    _, _, d_p, d_mu = mva_curve_value_and_vjp(
        MU, P, c, grad_throughput=g_lam, grad_delay=g_delay, **EXTENDED
    )
    for j in range(4):
        e = np.eye(4)[j]
        h = 1e-6
        fd_p = (objective(MU, P + h * e) - objective(MU, P - h * e)) / (2 * h)
        fd_mu = (objective(MU + h * e, P) - objective(MU - h * e, P)) / (2 * h)
        assert d_p[j] == pytest.approx(fd_p, rel=1e-6, abs=1e-8)
        assert d_mu[j] == pytest.approx(fd_mu, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("c", [1, 2, 7])
def test_single_client_closed_form(c: int) -> None:
    # n = 1 (p a free visit ratio): Lambda = mu / p, E[D] = (C - 1) / p
    mu, p = 2.5, 0.8
    lam, delay, d_p, d_mu = mva_value_and_vjp([mu], [p], c, grad_throughput=1.0)
    assert lam == pytest.approx(mu / p, rel=1e-14)
    assert delay[0] == pytest.approx((c - 1) / p, rel=1e-14, abs=0.0)
    assert d_p[0] == pytest.approx(-mu / p**2, rel=1e-13)
    assert d_mu[0] == pytest.approx(1.0 / p, rel=1e-13)
    _, _, d_p, d_mu = mva_value_and_vjp([mu], [p], c, grad_delay=[1.0])
    assert d_p[0] == pytest.approx(-(c - 1) / p**2, rel=1e-13, abs=1e-300)
    assert d_mu[0] == pytest.approx(0.0, abs=1e-14)


def test_concurrency_one_closed_form() -> None:
    # C = 1: Lambda = 1 / sum_i rho_i, no staleness (E[D] = 0 whatever p and mu)
    lam, delay, d_p, d_mu = mva_value_and_vjp(MU, P, 1, grad_throughput=1.0,
                                              grad_delay=np.ones(4))
    assert lam == pytest.approx(1.0 / np.sum(P / MU), rel=1e-14)
    assert np.all(delay == 0.0)
    np.testing.assert_allclose(d_p, -(lam**2) / MU, rtol=1e-13)
    np.testing.assert_allclose(d_mu, lam**2 * P / MU**2, rtol=1e-13)
    _, _, d_p, d_mu = mva_value_and_vjp(MU, P, 1, grad_delay=np.ones(4))
    assert np.all(d_p == 0.0) and np.all(d_mu == 0.0)
    lams, delays, d_p, _ = mva_curve_value_and_vjp(MU, P, 1, grad_throughput=[1.0])
    assert lams.shape == (1,) and delays.shape == (1, 4)
    np.testing.assert_allclose(d_p, -(lam**2) / MU, rtol=1e-13)


def test_homogeneity_identities() -> None:
    # base model: Lambda is homogeneous of degree -1 in p and 1 in mu (Euler)
    lam, delay, d_p, d_mu = mva_value_and_vjp(MU, P, 6, grad_throughput=1.0)
    assert float(d_p @ P) == pytest.approx(-lam, rel=1e-12)
    assert float(d_mu @ MU) == pytest.approx(lam, rel=1e-12)
    # E[D] has degree -1 in p and 0 in mu
    g = np.array([1.0, 2.0, -1.0, 0.5])
    _, _, d_p, d_mu = mva_value_and_vjp(MU, P, 6, grad_delay=g)
    assert float(d_p @ P) == pytest.approx(-float(g @ delay), rel=1e-12)
    assert float(d_mu @ MU) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("kwargs", [{}, EXTENDED], ids=["base", "extended"])
def test_values_are_bitwise_those_of_analyze(kwargs: dict[str, Any]) -> None:
    c = 7
    net = ClosedNetwork(mu=MU, p=P, concurrency=c, **kwargs)
    r = analyze(net, method="mva", curve=True)
    tape = mva_forward(MU, P, c, **kwargs)
    assert isinstance(tape, MVATape) and tape.concurrency == c and tape.n_clients == 4
    assert tape.throughput() == r.throughput
    assert np.array_equal(tape.delays(), r.mean_relative_delay)
    assert np.array_equal(tape.throughput_curve(), r.throughput_curve)
    assert np.array_equal(tape.delay_curve(), r.relative_delay_curve)
    assert np.array_equal(tape.queue_path[c], r.mean_queue_length)
    # every smaller population is on the same tape
    for c_small in (1, 3, 6):
        r_small = analyze(ClosedNetwork(mu=MU, p=P, concurrency=c_small, **kwargs))
        assert tape.throughput(c_small) == r_small.throughput
        assert np.array_equal(tape.delays(c_small), r_small.mean_relative_delay)


def test_tape_vjp_at_a_smaller_population() -> None:
    g = np.array([0.2, -0.4, 1.0, 0.1])
    tape = mva_forward(MU, P, 10, **EXTENDED)
    for c in (1, 4, 9):
        d_p, d_mu = tape.vjp(grad_throughput=0.5, grad_delay=g, concurrency=c)
        _, _, e_p, e_mu = mva_value_and_vjp(MU, P, c, grad_throughput=0.5, grad_delay=g,
                                            **EXTENDED)
        np.testing.assert_array_equal(d_p, e_p)
        np.testing.assert_array_equal(d_mu, e_mu)


def test_worked_example() -> None:
    lam, delay, _, _ = mva_value_and_vjp([1, 2, 4, 0.5], [0.4, 0.3, 0.2, 0.1], 6)
    assert lam == pytest.approx(2.45056, abs=5e-6)
    np.testing.assert_allclose(delay, [8.698, 1.801, 0.679, 8.449], atol=5e-4)
    assert float(P @ delay) == pytest.approx(5.0, rel=1e-12)


def test_validation() -> None:
    with pytest.raises(ConfigError, match="same length"):
        mva_forward(MU, [0.5, 0.5], 3)
    with pytest.raises(ConfigError, match="non-empty 1-D"):
        mva_forward([], [], 3)
    with pytest.raises(ConfigError, match="concurrency must be an integer >= 1, got 0"):
        mva_forward(MU, P, 0)
    with pytest.raises(ConfigError, match="concurrency must be an integer >= 1"):
        mva_forward(MU, P, True)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"client_latency must have shape \(4,\)"):
        mva_forward(MU, P, 3, client_latency=[0.1, 0.2])
    tape = mva_forward(MU, P, 3)
    with pytest.raises(ConfigError, match="exceeds the population of the tape"):
        tape.vjp(grad_throughput=1.0, concurrency=4)
    with pytest.raises(ConfigError, match=r"grad_delay must have shape \(4,\)"):
        tape.vjp(grad_delay=np.ones(3))
    with pytest.raises(ConfigError, match=r"grad_throughput must have shape \(3,\)"):
        tape.vjp_curve(grad_throughput=np.ones(4))
    with pytest.raises(ConfigError, match=r"grad_delay must have shape \(3, 4\)"):
        tape.vjp_curve(grad_delay=np.ones((3, 3)))


def test_adjoint_is_finite_for_n_1000_c_1000() -> None:
    # Its speed (~15-25 ms here, torch autograd ~100 ms) is a benchmark claim, not a test:
    # a wall-clock bound fails on a busy machine (issue 12, "green under load").
    rng = np.random.default_rng(0)
    mu = rng.lognormal(size=1000)
    p = rng.dirichlet(np.ones(1000))
    _, _, d_p, d_mu = mva_value_and_vjp(mu, p, 1000, grad_throughput=1.0,
                                        grad_delay=np.full(1000, 1e-3))
    assert np.all(np.isfinite(d_p)) and np.all(np.isfinite(d_mu))


def test_adjoint_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from raysync.queueing import mva_value_and_vjp\n"
        "mva_value_and_vjp([1, 2], [0.5, 0.5], 3, grad_throughput=1.0)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------- the bound's gradient path
@pytest.mark.parametrize("criterion", ["per-update", "wall-clock"])
@pytest.mark.parametrize("eta", [0.03, "optimal", "capped"])
def test_bound_gradient_matches_torch_autograd(criterion: str, eta: float | str) -> None:
    from raysync.objectives import BoundObjective, ProblemConstants

    a = 1e6 if eta == "capped" else 2.0  # a huge A makes the step cap bind
    constants = ProblemConstants(L=1.5, sigma2=0.8, M2=0.3, A=a)
    obj = BoundObjective(mu=MU, constants=constants, criterion=criterion,
                         eta="optimal" if eta == "capped" else eta,
                         num_updates=400.0, time_budget=150.0)
    if eta == "capped":
        terms = obj.evaluate(P, 6)
        assert terms.eta == terms.eta_max  # the cap binds: its derivative is exercised
    rng = np.random.default_rng(5)
    for c in (1, 2, 6):
        p = rng.dirichlet(np.ones(4)) * rng.uniform(0.9, 1.1)  # off the simplex too
        value, grad = obj.value_and_grad(p, c)
        tensor = torch.tensor(p, dtype=torch.float64, requires_grad=True)
        t_value = obj.torch_value(tensor, c)
        (t_grad,) = torch.autograd.grad(t_value, tensor)
        assert value == pytest.approx(float(t_value.detach()), rel=1e-13)
        _close(grad, t_grad.numpy())


def test_envelope_gradient_is_the_gradient_at_the_best_concurrency() -> None:
    from raysync.objectives import BoundObjective, ProblemConstants

    rng = np.random.default_rng(11)
    mu = rng.lognormal(0.0, 1.0, 30)
    obj = BoundObjective(mu=mu, constants=ProblemConstants(L=1.0, sigma2=1.0, M2=0.5, A=2.0),
                         time_budget=100.0)
    p = rng.dirichlet(np.ones(30))
    value, grad, c = obj.envelope_value_and_grad(p, 60)
    curve = obj.curve(p, 60)
    assert c == curve.best_concurrency
    assert value == pytest.approx(float(curve.value.min()), rel=1e-13)
    v_ref, g_ref = obj.value_and_grad(p, c)
    assert value == v_ref
    np.testing.assert_array_equal(grad, g_ref)
