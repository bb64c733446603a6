"""Buzen's convolution algorithm with per-step rescaling (a cross-check of MVA).

The normalising constants ``G(K) = sum_{|x| = K} prod_j f_j(x_j)`` obey Buzen's recursion
``g_j(k) = g_{j-1}(k) + rho_j g_j(k-1)`` for single-server stations, which telescopes to
``g_j(k) = g_0(k) + sum_{l <= j} rho_l g_l(k-1)``: one cumulative sum over the stations per
population step. Station 0 is the aggregated infinite-server (latency) station,
``g_0(k) = Z^k / k!``. Plain ``G`` overflows for large ``n, C``; we carry the normalised
vector ``u(k) = g(k) / G(k)`` (entries in ``[0, 1]``) and ``log G(k)`` instead, so
``Lambda(k) = G(k-1) / G(k)`` comes out of each step without overflow.

``u`` is kept in **log space** (``np.logaddexp.accumulate`` for the cumulative sum): its
first entries fall far below the smallest double (``1 / binom(n + k - 1, k)`` for ``n``
identical clients), and their true mass still feeds every later station. Flushed to 0
(or left in subnormal range) they made ``Lambda`` 27 % wrong for 1,000 identical
clients at ``C = 5,000``; in log space nothing underflows and that case is exact to
``1e-12``.

Queue lengths use the product-form marginals
``P(X_j >= m) = rho_j^m G(K - m) / G(K)``, so ``Q_j(K) = sum_{m=1..K} rho_j^m G(K-m) / G(K)``,
summed term by term (each term is ``rho_j Lambda(K - m + 1)`` times the previous one, all
``<= 1``). Cost ``O(nC)``; the optional curve uses the equivalent recursion
``Q_j(K) = rho_j Lambda(K) (1 + Q_j(K-1))``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from raysync.queueing._common import Demands, assemble, demands, relative_delay
from raysync.queueing.network import ClosedNetwork
from raysync.queueing.result import QueueingResult

__all__ = ["log_normalizing_constants", "solve_buzen"]


def _single_server_demands(d: Demands) -> NDArray[np.float64]:
    if d.has_server:
        return np.append(d.rho, d.rho_server)
    return np.array(d.rho, dtype=np.float64)


def log_normalizing_constants(network: ClosedNetwork) -> NDArray[np.float64]:
    """Return ``log G(K)`` for ``K = 0..C`` (Buzen's recursion, rescaled at every step).

    Args:
        network: The closed network.

    Returns:
        Array of shape ``(C + 1,)``; ``log G(0) = 0``.
    """
    return _convolve(network)[0]


def _convolve(network: ClosedNetwork) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Return ``log G(K)`` and ``G(K) / G(K-1)`` (index ``K - 1``) for ``K = 0..C``."""
    d = demands(network)
    rho = _single_server_demands(d)
    c = network.concurrency
    m = rho.size
    with np.errstate(divide="ignore"):
        log_rho = np.log(rho)
        log_z = np.log(d.z_total)  # -inf without latency stations
    lu = np.zeros(m)  # log(g_j(0) / G(0)) for single-server stations 1..m
    lu0 = 0.0  # log(g_0(0) / G(0)) for the infinite-server station
    lru = np.empty(m)
    lv = np.empty(m)
    log_g = np.zeros(c + 1)
    ratios = np.empty(c)
    for k in range(c):
        np.add(log_rho, lu, out=lru)
        np.logaddexp.accumulate(lru, out=lv)
        lv0 = log_z - np.log(k + 1) + lu0
        if lv0 > -np.inf:
            np.logaddexp(lv, lv0, out=lv)
        log_ratio = float(lv[-1])  # log(G(k+1) / G(k))
        ratios[k] = np.exp(log_ratio)
        log_g[k + 1] = log_g[k] + log_ratio
        np.subtract(lv, log_ratio, out=lu)
        lu0 = lv0 - log_ratio
    return log_g, ratios


def _queue_lengths(
    rho: NDArray[np.float64], lam: NDArray[np.float64], population: int
) -> NDArray[np.float64]:
    """``Q_j(K) = sum_{m=1..K} rho_j^m G(K-m) / G(K)`` with ``lam[k] = G(k-1) / G(k)``."""
    q = np.zeros(rho.size)
    term = np.ones(rho.size)
    for m in range(1, population + 1):
        # G(K-m) / G(K-m+1) = Lambda(K-m+1)
        term *= rho
        term *= lam[population - m + 1]
        q += term
    return q


def solve_buzen(network: ClosedNetwork, *, curve: bool = False) -> QueueingResult:
    """Solve ``network`` with Buzen's (rescaled) convolution algorithm.

    Args:
        network: The closed network.
        curve: Also return ``Lambda``, ``Q_i`` and ``E[D_i]`` for every ``C' = 1..C``.

    Returns:
        The stationary performance, ``method="buzen"``.
    """
    d = demands(network)
    n = network.n_clients
    c = network.concurrency
    _, ratios = _convolve(network)
    lam_all = np.zeros(c + 1)  # lam_all[k] = Lambda(k) = G(k-1) / G(k); Lambda(0) = 0
    lam_all[1:] = 1.0 / ratios
    rho = _single_server_demands(d)

    q_all = _queue_lengths(rho, lam_all, c)
    q_prev_all = _queue_lengths(rho, lam_all, c - 1)
    q, q_prev = q_all[:n], q_prev_all[:n]
    qs = float(q_all[n]) if d.has_server else 0.0
    qs_prev = float(q_prev_all[n]) if d.has_server else 0.0
    delay = relative_delay(network, d, q_prev, float(lam_all[c - 1]), qs_prev)

    lam_curve = q_curve = delay_curve = None
    if curve:
        lam_curve = lam_all[1:].copy()
        q_full = np.empty((c, rho.size))
        previous = np.zeros(rho.size)
        for k in range(1, c + 1):
            previous = rho * lam_all[k] * (1.0 + previous)
            q_full[k - 1] = previous
        q_curve = q_full[:, :n].copy()
        qs_curve = q_full[:, n] if d.has_server else np.zeros(c)
        delay_curve = np.zeros((c, n))
        if c >= 2:
            delay_curve[1:] = (
                q_curve[:-1] / network.p + lam_curve[:-1, None] * d.z[None, :] + qs_curve[:-1, None]
            )
    return assemble(
        network,
        method="buzen",
        lam=float(lam_all[c]),
        q=q,
        qs=qs,
        delay=delay,
        throughput_curve=lam_curve,
        queue_length_curve=q_curve,
        relative_delay_curve=delay_curve,
    )
