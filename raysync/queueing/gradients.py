"""Exact derivatives of the throughput and the relative delays with respect to p and mu.

Two exact implementations of the derivatives of the MVA recursion
(:mod:`raysync.queueing._mva`):

* :func:`throughput_and_delays_torch` (and its curve variant) runs MVA on torch tensors, so
  autograd differentiates ``Lambda(C)`` and every ``E[D_i]`` with respect to ``mu``, ``p``
  and the latency/server parameters. The loop runs over the population only and is
  vectorised over clients (``n = 1000, C = 100``: a few milliseconds forward and
  backward), which is what optimisers of a scalar objective call.
* :func:`gradients` returns full Jacobians as numpy arrays by forward sensitivity
  analysis of the same recursion (no torch), for inspection and reporting.

**p is treated as n free variables.** The formulas are evaluated at whatever positive
``p`` they receive, without renormalising it, and ``d/dp_j`` is the partial derivative with
the other entries fixed (off the simplex, ``p`` acts as visit ratios per update: scaling
``p`` by ``a`` divides ``Lambda`` by ``a``). For a derivative along the simplex, project the
gradient ``g`` onto the tangent space (``g - mean(g)``) or compose with a parameterisation
such as softmax, which autograd does for you when ``p = softmax(logits)`` is passed in.

torch is imported lazily, inside the functions, so ``import raysync.queueing`` stays light.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from raysync.exceptions import ConfigError
from raysync.queueing.network import ClosedNetwork

if TYPE_CHECKING:
    import torch

__all__ = [
    "QueueingGradients",
    "gradients",
    "throughput_and_delays_curve_torch",
    "throughput_and_delays_torch",
]


def _check_inputs(mu: torch.Tensor, p: torch.Tensor, concurrency: int) -> None:
    if mu.ndim != 1 or p.ndim != 1 or mu.shape != p.shape or mu.numel() == 0:
        raise ConfigError(
            f"mu and p must be non-empty 1-D tensors of the same length, got shapes "
            f"{tuple(mu.shape)} and {tuple(p.shape)}"
        )
    if not (mu.is_floating_point() and p.is_floating_point()):
        raise ConfigError(f"mu and p must be floating point, got {mu.dtype} and {p.dtype}")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int | np.integer):
        raise ConfigError(f"concurrency must be an integer >= 1, got {concurrency!r}")
    if concurrency < 1:
        raise ConfigError(f"concurrency must be an integer >= 1, got {concurrency!r}")


def _mva_torch(
    mu: torch.Tensor,
    p: torch.Tensor,
    concurrency: int,
    latency: float | torch.Tensor,
    client_latency: torch.Tensor | None,
    server_rate: float | torch.Tensor | None,
    curve: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    _check_inputs(mu, p, concurrency)
    rho = p / mu
    z = torch.as_tensor(latency, dtype=mu.dtype, device=mu.device) * torch.ones_like(mu)
    if client_latency is not None:
        z = z + client_latency
    z_total = torch.dot(p, z)
    rho_s = None if server_rate is None else 1.0 / torch.as_tensor(server_rate, dtype=mu.dtype)
    zero = torch.zeros((), dtype=mu.dtype, device=mu.device)
    q = torch.zeros_like(rho)
    qs = zero
    lam = zero
    q_prev, qs_prev, lam_prev = q, qs, lam
    lams: list[torch.Tensor] = []
    delays: list[torch.Tensor] = []
    for k in range(1, int(concurrency) + 1):
        q_prev, qs_prev, lam_prev = q, qs, lam
        if curve:
            delays.append(q_prev / p + z * lam_prev + qs_prev)
        w = rho * (1.0 + q)
        denom = w.sum() + z_total
        if rho_s is not None:
            ws = rho_s * (1.0 + qs)
            denom = denom + ws
        lam = k / denom
        q = lam * w
        if rho_s is not None:
            qs = lam * ws
        if curve:
            lams.append(lam)
    if curve:
        return torch.stack(lams), torch.stack(delays)
    return lam, q_prev / p + z * lam_prev + qs_prev


def throughput_and_delays_torch(
    mu: torch.Tensor,
    p: torch.Tensor,
    concurrency: int,
    *,
    latency: float | torch.Tensor = 0.0,
    client_latency: torch.Tensor | None = None,
    server_rate: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable ``Lambda(C)`` and ``E[D_i]`` by MVA in torch.

    No validation beyond shapes and types (this runs inside optimisers): pass positive
    ``mu`` and ``p``, float64 for exact-to-rounding derivatives. ``p`` is not
    renormalised; see the module docstring.

    Args:
        mu: Service rates, shape ``(n,)``.
        p: Routing probabilities, shape ``(n,)``.
        concurrency: Population ``C >= 1``.
        latency: Mean delay of a station visited by every task.
        client_latency: Per-client mean delays, shape ``(n,)``.
        server_rate: Rate of the server's update station (None: instantaneous updates).

    Returns:
        ``(throughput, delays)``: a scalar tensor ``Lambda(C)`` and the vector ``E[D_i]``
        of shape ``(n,)``, both differentiable with respect to every tensor input.

    Raises:
        ConfigError: Shapes, dtypes or ``concurrency`` are invalid.
    """
    return _mva_torch(mu, p, concurrency, latency, client_latency, server_rate, curve=False)


def throughput_and_delays_curve_torch(
    mu: torch.Tensor,
    p: torch.Tensor,
    concurrency: int,
    *,
    latency: float | torch.Tensor = 0.0,
    client_latency: torch.Tensor | None = None,
    server_rate: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable ``Lambda(C')`` and ``E[D_i](C')`` for every ``C' = 1..C`` (one pass).

    Args:
        mu: Service rates, shape ``(n,)``.
        p: Routing probabilities, shape ``(n,)``.
        concurrency: Largest population ``C >= 1``.
        latency: Mean delay of a station visited by every task.
        client_latency: Per-client mean delays, shape ``(n,)``.
        server_rate: Rate of the server's update station (None: instantaneous updates).

    Returns:
        ``(throughputs, delays)`` of shapes ``(C,)`` and ``(C, n)``; row ``C' - 1`` is
        population ``C'``.

    Raises:
        ConfigError: Shapes, dtypes or ``concurrency`` are invalid.
    """
    return _mva_torch(mu, p, concurrency, latency, client_latency, server_rate, curve=True)


@dataclass(frozen=True, kw_only=True, eq=False)
class QueueingGradients:
    """Values and exact partial derivatives of the throughput and the relative delays.

    Attributes:
        throughput: ``Lambda(C)``.
        mean_relative_delay: ``E[D_i]``, shape ``(n,)``.
        d_throughput_d_p: ``dLambda / dp_j``, shape ``(n,)``.
        d_delay_d_p: Jacobian ``[i, j] = dE[D_i] / dp_j``, shape ``(n, n)``.
        d_throughput_d_mu: ``dLambda / dmu_j``, shape ``(n,)``.
        d_delay_d_mu: Jacobian ``[i, j] = dE[D_i] / dmu_j``, shape ``(n, n)``.
    """

    throughput: float
    mean_relative_delay: NDArray[np.float64]
    d_throughput_d_p: NDArray[np.float64]
    d_delay_d_p: NDArray[np.float64]
    d_throughput_d_mu: NDArray[np.float64]
    d_delay_d_mu: NDArray[np.float64]

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                value = np.array(value, dtype=np.float64)
                value.setflags(write=False)
                object.__setattr__(self, f.name, value)


def gradients(network: ClosedNetwork) -> QueueingGradients:
    """Exact derivatives of ``Lambda(C)`` and ``E[D]`` with respect to ``p`` and ``mu``.

    Partial derivatives with ``p`` treated as ``n`` free variables (see the module
    docstring); the latency and server stations of ``network`` are held fixed. Computed by
    forward sensitivity analysis of the MVA recursion in numpy (no torch needed): the
    ``(2n, n)`` matrix ``dQ(k) / d(mu, p)`` is carried through ``k = 1..C``, which costs
    ``O(n^2 C)`` time and ``O(n^2)`` memory. For a scalar objective of large networks,
    use :func:`throughput_and_delays_torch` with autograd instead (``O(nC)``).

    Args:
        network: The closed network.

    Returns:
        Values and Jacobians as read-only numpy arrays.
    """
    n = network.n_clients
    mu, p = network.mu, network.p
    rho = p / mu
    z = np.asarray(network.total_latency, dtype=np.float64)
    z_total = float(np.dot(p, z))
    rho_s = 0.0 if network.server_rate is None else 1.0 / network.server_rate
    # derivatives of rho_i: d/dmu_i = -p_i / mu_i^2 (rows 0..n-1), d/dp_i = 1 / mu_i (n..2n-1)
    drho_dmu = -rho / mu
    drho_dp = 1.0 / mu
    dz_total = np.concatenate([np.zeros(n), z])
    diag_mu = (np.arange(n), np.arange(n))
    diag_p = (np.arange(n, 2 * n), np.arange(n))

    q = np.zeros(n)
    dq = np.zeros((2 * n, n))
    qs = 0.0
    dqs = np.zeros(2 * n)
    lam = 0.0
    dlam = np.zeros(2 * n)
    q_prev, dq_prev, qs_prev, dqs_prev, lam_prev, dlam_prev = q, dq, qs, dqs, lam, dlam
    for k in range(1, network.concurrency + 1):
        q_prev, dq_prev, qs_prev, dqs_prev, lam_prev, dlam_prev = q, dq, qs, dqs, lam, dlam
        one_q = 1.0 + q
        w = rho * one_q
        dw = dq * rho  # (2n, n): d(rho_i) (1 + Q_i) + rho_i dQ_i
        dw[diag_mu] += drho_dmu * one_q
        dw[diag_p] += drho_dp * one_q
        ws = rho_s * (1.0 + qs)
        dws = rho_s * dqs
        denom = float(w.sum()) + z_total + ws
        lam = k / denom
        dlam = -(lam / denom) * (dw.sum(axis=1) + dz_total + dws)
        dw *= lam
        dw += np.outer(dlam, w)
        dq = dw
        q = lam * w
        qs = lam * ws
        dqs = dlam * ws + lam * dws

    delays = q_prev / p + z * lam_prev + qs_prev
    # d delays_i / d theta = dQ_i(C-1) / p_i - [theta = p_i] Q_i(C-1) / p_i^2
    #                        + z_i dLambda(C-1) + dQ_s(C-1)
    d_delays = dq_prev / p + np.outer(dlam_prev, z) + dqs_prev[:, None]
    d_delays[diag_p] -= q_prev / p**2
    return QueueingGradients(
        throughput=lam,
        mean_relative_delay=delays,
        d_throughput_d_p=dlam[n:],
        d_delay_d_p=d_delays[n:].T,
        d_throughput_d_mu=dlam[:n],
        d_delay_d_mu=d_delays[:n].T,
    )
