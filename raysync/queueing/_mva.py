"""Exact Mean Value Analysis of the closed network (docs/theory.md section 2).

Recursion over the population ``k = 1..C``, vectorised over clients::

    Q(0) = 0
    W_i(k)   = rho_i (1 + Q_i(k-1))          # = p_i T_i(k), time at client i per update
    W_s(k)   = rho_s (1 + Q_s(k-1))          # server station (if any)
    Lambda(k) = k / (sum_i W_i(k) + Z + W_s(k))  # Z: infinite-server demand per update
    Q_i(k)   = Lambda(k) W_i(k),  Q_s(k) = Lambda(k) W_s(k)

Cost ``O(nC)`` with four numpy calls per population step and no allocation in the loop;
every quantity stays bounded (``Q_i <= k``), so nothing overflows for large ``n`` or ``C``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from raysync.queueing._common import assemble, demands, relative_delay
from raysync.queueing.network import ClosedNetwork
from raysync.queueing.result import QueueingResult

__all__ = ["solve_mva"]


def solve_mva(network: ClosedNetwork, *, curve: bool = False) -> QueueingResult:
    """Solve ``network`` by exact MVA.

    Args:
        network: The closed network.
        curve: Also return ``Lambda``, ``Q_i`` and ``E[D_i]`` for every ``C' = 1..C``.

    Returns:
        The stationary performance, ``method="mva"``.
    """
    d = demands(network)
    n = network.n_clients
    c = network.concurrency
    rho = d.rho
    z_total = d.z_total
    rho_s = d.rho_server

    q = np.zeros(n)
    q_prev = np.zeros(n)
    w = np.empty(n)
    lam = 0.0
    lam_prev = 0.0
    qs = 0.0
    qs_prev = 0.0
    lam_curve: NDArray[np.float64] | None = None
    q_curve: NDArray[np.float64] | None = None
    qs_curve: NDArray[np.float64] | None = None
    if curve:
        lam_curve = np.empty(c)
        q_curve = np.empty((c, n))
        qs_curve = np.empty(c)

    for k in range(1, c + 1):
        np.multiply(q, rho, out=w)
        w += rho  # w = rho (1 + q) = p T(k)
        ws = rho_s * (1.0 + qs)
        lam_prev, qs_prev = lam, qs
        lam = k / (float(w.sum()) + z_total + ws)
        q, q_prev = q_prev, q
        if q_curve is not None:
            q = q_curve[k - 1]
        np.multiply(w, lam, out=q)
        qs = lam * ws
        if lam_curve is not None and qs_curve is not None:
            lam_curve[k - 1] = lam
            qs_curve[k - 1] = qs

    if q_curve is not None:
        # with a curve, q_prev may alias a row of q_curve; copy the row we need
        q_prev = q_curve[c - 2].copy() if c >= 2 else np.zeros(n)
    delay = relative_delay(network, d, q_prev, lam_prev, qs_prev)

    delay_curve: NDArray[np.float64] | None = None
    if lam_curve is not None and q_curve is not None and qs_curve is not None:
        delay_curve = np.zeros((c, n))
        if c >= 2:
            delay_curve[1:] = (
                q_curve[:-1] / network.p + lam_curve[:-1, None] * d.z[None, :] + qs_curve[:-1, None]
            )
    return assemble(
        network,
        method="mva",
        lam=lam,
        q=q.copy(),
        qs=qs,
        delay=delay,
        throughput_curve=lam_curve,
        queue_length_curve=q_curve,
        relative_delay_curve=delay_curve,
    )
