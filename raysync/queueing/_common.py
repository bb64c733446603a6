"""Pieces shared by the analytic solvers (MVA, Buzen): demands and result assembly."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from raysync.queueing.network import ClosedNetwork
from raysync.queueing.result import QueueingResult


@dataclass(frozen=True)
class Demands:
    """Per-update service demands of every station of a network.

    Attributes:
        rho: Client demands ``p_i / mu_i``.
        z: Per-client mean latency ``Z_i`` (latency + client_latency[i]).
        z_total: Total infinite-server demand per update, ``sum_i p_i Z_i``.
        rho_server: Server demand ``1 / server_rate`` (0 without a server station).
        has_server: Whether the server station exists.
    """

    rho: NDArray[np.float64]
    z: NDArray[np.float64]
    z_total: float
    rho_server: float
    has_server: bool


def demands(network: ClosedNetwork) -> Demands:
    """Compute the demands of ``network``'s stations."""
    z = np.asarray(network.total_latency, dtype=np.float64)
    has_server = network.server_rate is not None
    return Demands(
        rho=network.p / network.mu,
        z=z,
        z_total=float(np.dot(network.p, z)),
        rho_server=1.0 / network.server_rate if network.server_rate is not None else 0.0,
        has_server=has_server,
    )


def relative_delay(
    network: ClosedNetwork,
    d: Demands,
    q_prev: NDArray[np.float64],
    lam_prev: float,
    qs_prev: float,
) -> NDArray[np.float64]:
    """Mean relative delay ``E[D_i]`` from the population-``(C-1)`` solution.

    By the arrival theorem, right after an update the ``C - 1`` other tasks are distributed
    as the network with population ``C - 1``. A task routed to ``i`` is passed, in updates,
    by exactly the tasks that are in flight for client ``i`` at those instants (discrete
    Little's law), so ``p_i E[D_i]`` is the mean number of client-``i`` tasks in flight with
    population ``C - 1``: those at client ``i`` (``Q_i``), in its latency stations
    (``p_i Z_i Lambda``) and at the server (a fraction ``p_i`` of ``Q_server``). Hence
    ``E[D_i] = Q_i(C-1) / p_i + Z_i Lambda(C-1) + Q_server(C-1)``.
    """
    # Overflow (a routing probability near the float64 floor) is not an error here:
    # analyze() refuses a non-finite result in one line naming the quantity.
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return q_prev / network.p + d.z * lam_prev + qs_prev


def assemble(
    network: ClosedNetwork,
    *,
    method: str,
    lam: float,
    q: NDArray[np.float64],
    qs: float,
    delay: NDArray[np.float64],
    throughput_curve: NDArray[np.float64] | None = None,
    queue_length_curve: NDArray[np.float64] | None = None,
    relative_delay_curve: NDArray[np.float64] | None = None,
    utilization: NDArray[np.float64] | None = None,
    server_utilization: float | None = None,
    mean_in_transit: NDArray[np.float64] | None = None,
) -> QueueingResult:
    """Build a :class:`QueueingResult` from a solver's raw numbers.

    Quantities not passed explicitly follow from product-form identities: utilisation
    ``rho_i Lambda``, sojourn time by Little's law ``Q_i / (p_i Lambda)``, tasks in transit
    ``p_i Z_i Lambda``.
    """
    p = network.p
    d = demands(network)
    client_throughput = p * lam
    if utilization is None:
        utilization = d.rho * lam
    if mean_in_transit is None:
        mean_in_transit = client_throughput * d.z
    if server_utilization is None and d.has_server:
        server_utilization = lam * d.rho_server
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # see relative_delay
        sojourn = q / client_throughput
    return QueueingResult(
        throughput=lam,
        client_throughput=client_throughput,
        utilization=utilization,
        mean_queue_length=q,
        mean_sojourn_time=sojourn,
        mean_relative_delay=delay,
        mean_staleness=float(np.dot(p, delay)),
        concurrency=network.concurrency,
        n_clients=network.n_clients,
        method=method,
        mean_in_transit=mean_in_transit,
        server_utilization=server_utilization if d.has_server else None,
        server_queue_length=qs if d.has_server else None,
        throughput_curve=throughput_curve,
        queue_length_curve=queue_length_curve,
        relative_delay_curve=relative_delay_curve,
    )
