"""Exact analysis of fleets given as tiers of identical clients (docs/theory.md, section 2).

A *tier* is a group of ``m_j`` clients with the same service rate ``mu_j``, the same
per-client routing probability ``p_j`` and the same per-client latency ``Z_j``. In the closed
product-form network the mean-value quantities of identical stations are identical (the
MVA recursion is symmetric in them and starts from ``Q = 0``), so the recursion of
``raysync.queueing._mva`` collapses to one entry per tier::

    W_j(k)    = rho_j (1 + Q_j(k-1))                     rho_j = p_j / mu_j
    W_s(k)    = rho_s (1 + Q_s(k-1))                     server station (if any)
    Lambda(k) = k / (sum_j m_j W_j(k) + sum_j m_j p_j Z_j + W_s(k))
    Q_j(k)    = Lambda(k) W_j(k),  Q_s(k) = Lambda(k) W_s(k)

and ``E[D_j] = Q_j(C-1) / p_j + Z_j Lambda(C-1) + Q_s(C-1)`` (the relative delay of
docs/theory.md section 2, arXiv 2502.08206 eq. (7) restated as a discrete Little's law). The cost
is ``O(T C)`` for ``T`` tiers, independent of the number of clients: a fleet of ``10^6``
clients in 10 tiers with ``C = 10^4`` takes a few tens of milliseconds. The per-tier
numbers equal those of the per-client solver exactly (up to floating-point summation
order); ``tests/queueing_tests/test_tiered.py`` checks this to ``1e-9``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from raysync._validation import check_number, check_probabilities, first_index
from raysync.exceptions import ConfigError
from raysync.queueing.network import P_SUM_RTOL, ClosedNetwork, check_transit

__all__ = ["TieredNetwork", "TieredResult", "analyze_tiered"]

# Below this many tiers, plain Python floats beat numpy's per-call overhead in the
# population loop (measured: 10 tiers, C = 10^4: ~25 ms vs ~90 ms).
_SCALAR_LOOP_MAX_TIERS = 32


def _tier_vector(name: str, value: ArrayLike, size: int | None) -> NDArray[np.float64]:
    if isinstance(value, str | bytes):
        raise ConfigError(f"{name} must be a sequence of numbers, got {value!r}")
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a sequence of numbers, got {value!r}") from exc
    if array.ndim != 1 or array.size == 0:
        raise ConfigError(f"{name} must be a non-empty 1-D sequence (one entry per tier)")
    if size is not None and array.size != size:
        raise ConfigError(
            f"{name} must have one entry per tier: {size} tiers, got {array.size} entries"
        )
    j = first_index(~np.isfinite(array))
    if j is not None:
        raise ConfigError(f"{name}[{j}] must be finite, got {float(array[j])!r}")
    array.setflags(write=False)
    return array


@dataclass(frozen=True, kw_only=True, eq=False)
class TieredNetwork:
    """A closed network whose clients come in tiers of identical clients.

    Attributes:
        counts: Number of clients ``m_j >= 1`` in each tier, shape ``(T,)`` (integers).
        mu: Service rate ``mu_j > 0`` of every client of tier ``j`` (tasks per unit time).
        p: Routing probability ``p_j > 0`` of *each* client of tier ``j``; the fleet's
            probabilities must sum to one: ``sum_j m_j p_j = 1`` (relative tolerance 1e-9).
        concurrency: Tasks in flight ``C >= 1``.
        latency: Mean delay of an infinite-server station visited by every task (>= 0).
        tier_latency: Optional per-tier mean delay ``>= 0`` of each client's own
            infinite-server station, shape ``(T,)``.
        server_rate: Optional rate of the server's single-server update station.

    Raises:
        ConfigError: A field breaks its rule (message names the field and the value).
    """

    counts: NDArray[np.int64]
    mu: NDArray[np.float64]
    p: NDArray[np.float64]
    concurrency: int
    latency: float = 0.0
    tier_latency: NDArray[np.float64] | None = None
    server_rate: float | None = None

    def __post_init__(self) -> None:
        raw_counts = np.asarray(self.counts)
        if raw_counts.ndim != 1 or raw_counts.size == 0:
            raise ConfigError("counts must be a non-empty 1-D sequence (clients per tier)")
        if raw_counts.dtype == bool or not np.issubdtype(raw_counts.dtype, np.integer):
            raise ConfigError(f"counts must be integers >= 1, got {raw_counts.tolist()!r}")
        counts = raw_counts.astype(np.int64)
        j = first_index(counts < 1)
        if j is not None:
            raise ConfigError(f"counts[{j}] must be >= 1, got {int(counts[j])}")
        counts.setflags(write=False)
        tiers = counts.size
        mu = _tier_vector("mu", self.mu, tiers)
        p = _tier_vector("p", self.p, tiers)
        j = first_index(mu <= 0)
        if j is not None:
            raise ConfigError(f"mu[{j}] must be > 0, got {float(mu[j])!r}")
        check_probabilities(p)
        total = math.fsum((counts * p).tolist())
        if abs(total - 1.0) > P_SUM_RTOL:
            raise ConfigError(
                f"routing must sum to 1 over the fleet (sum_j counts_j * p_j), got "
                f"sum={total:.12g} for {int(counts.sum())} clients in {tiers} tiers"
            )
        c = self.concurrency
        if isinstance(c, bool) or not isinstance(c, int | np.integer) or c < 1:
            raise ConfigError(f"concurrency must be an integer >= 1, got {c!r}")
        latency = check_number("latency", self.latency, allow_zero=True)
        tier_latency = None
        if self.tier_latency is not None:
            tier_latency = _tier_vector("tier_latency", self.tier_latency, tiers)
            j = first_index(tier_latency < 0)
            if j is not None:
                raise ConfigError(f"tier_latency[{j}] must be >= 0, got {float(tier_latency[j])!r}")
            check_transit(latency, tier_latency, "tier_latency")
        server_rate = None
        if self.server_rate is not None:
            server_rate = check_number("server_rate", self.server_rate, allow_zero=False)
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "mu", mu)
        object.__setattr__(self, "p", p)
        object.__setattr__(self, "concurrency", int(c))
        object.__setattr__(self, "latency", latency)
        object.__setattr__(self, "tier_latency", tier_latency)
        object.__setattr__(self, "server_rate", server_rate)

    @property
    def n_tiers(self) -> int:
        """Number of tiers ``T``."""
        return int(self.counts.size)

    @property
    def n_clients(self) -> int:
        """Number of clients ``n = sum_j m_j``."""
        return int(self.counts.sum())

    @property
    def total_latency(self) -> NDArray[np.float64]:
        """Mean communication delay ``Z_j`` of a task routed to a client of tier ``j``."""
        z = np.full(self.n_tiers, self.latency)
        if self.tier_latency is not None:
            z = z + self.tier_latency
        return z

    @classmethod
    def from_clients(
        cls,
        *,
        mu: Sequence[float] | NDArray[np.float64],
        p: Sequence[float] | NDArray[np.float64],
        concurrency: int,
        latency: float = 0.0,
        client_latency: Sequence[float] | NDArray[np.float64] | None = None,
        server_rate: float | None = None,
    ) -> tuple[TieredNetwork, NDArray[np.int64]]:
        """Group identical clients of a per-client description into tiers.

        Clients are identical when their ``mu``, ``p`` and latency are equal bit for bit.

        Returns:
            The tiered network and, for each client, the index of its tier (shape ``(n,)``).
        """
        network = ClosedNetwork(
            mu=np.asarray(mu, dtype=np.float64),
            p=np.asarray(p, dtype=np.float64),
            concurrency=concurrency,
            latency=latency,
            client_latency=(
                None if client_latency is None else np.asarray(client_latency, dtype=np.float64)
            ),
            server_rate=server_rate,
        )
        lat = (
            network.client_latency
            if network.client_latency is not None
            else np.zeros(network.n_clients)
        )
        keys = np.stack([network.mu, network.p, lat], axis=1)
        unique, tier_of, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
        tiered = cls(
            counts=counts.astype(np.int64),
            mu=unique[:, 0],
            p=unique[:, 1] / math.fsum((counts * unique[:, 1]).tolist()),
            concurrency=network.concurrency,
            latency=network.latency,
            tier_latency=unique[:, 2] if network.client_latency is not None else None,
            server_rate=network.server_rate,
        )
        return tiered, tier_of.reshape(-1).astype(np.int64)

    def to_closed_network(self) -> ClosedNetwork:
        """Expand to the per-client :class:`ClosedNetwork` (``n`` entries; small fleets)."""
        return ClosedNetwork(
            mu=np.repeat(self.mu, self.counts),
            p=np.repeat(self.p, self.counts),
            concurrency=self.concurrency,
            latency=self.latency,
            client_latency=(
                None if self.tier_latency is None else np.repeat(self.tier_latency, self.counts)
            ),
            server_rate=self.server_rate,
        )


@dataclass(frozen=True, kw_only=True, eq=False)
class TieredResult:
    """Stationary performance of a :class:`TieredNetwork`, one entry per tier.

    Time is in the unit of the rates; delays are counted in updates. Per-tier arrays hold
    the quantity of *one* client of the tier (shape ``(T,)``).

    Attributes:
        throughput: Update throughput ``Lambda(C)`` (updates per unit time).
        client_throughput: Completion rate of one client of each tier, ``p_j Lambda``.
        utilization: Busy fraction of one client of each tier, ``rho_j Lambda``.
        mean_queue_length: Mean tasks at one client of each tier, ``Q_j(C)``.
        mean_relative_delay: Mean staleness ``E[D_j]`` of a task of a tier-``j`` client.
        mean_staleness: ``sum_j m_j p_j E[D_j]`` (``= C - 1`` without extra stations).
        counts: Clients per tier.
        concurrency: Population ``C``.
        server_utilization: Busy fraction of the server station (None without it).
        throughput_curve: ``Lambda(C')`` for ``C' = 1..C`` (only when asked for).
    """

    throughput: float
    client_throughput: NDArray[np.float64]
    utilization: NDArray[np.float64]
    mean_queue_length: NDArray[np.float64]
    mean_relative_delay: NDArray[np.float64]
    mean_staleness: float
    counts: NDArray[np.int64]
    concurrency: int
    server_utilization: float | None = None
    throughput_curve: NDArray[np.float64] | None = field(default=None)

    def per_client(self, name: str) -> NDArray[np.float64]:
        """Expand a per-tier array attribute to one entry per client (tier order)."""
        values = getattr(self, name)
        if not isinstance(values, np.ndarray) or values.shape != self.counts.shape:
            raise ValueError(f"{name!r} is not a per-tier array of TieredResult")
        return np.repeat(values, self.counts)


def _recursion_scalar(
    counts: list[float],
    rho: list[float],
    z_total: float,
    rho_s: float,
    c: int,
    curve: list[float] | None,
) -> tuple[list[float], float, float, list[float], float, float]:
    tiers = range(len(rho))
    q = [0.0] * len(rho)
    q_prev = q
    qs = qs_prev = 0.0
    lam = lam_prev = 0.0
    for k in range(1, c + 1):
        w = [r * (1.0 + x) for r, x in zip(rho, q, strict=True)]
        total = z_total + rho_s * (1.0 + qs)
        for j in tiers:
            total += counts[j] * w[j]
        lam_prev, q_prev, qs_prev = lam, q, qs
        lam = k / total
        q = [lam * x for x in w]
        qs = lam * rho_s * (1.0 + qs_prev)
        if curve is not None:
            curve.append(lam)
    return q, qs, lam, q_prev, qs_prev, lam_prev


def _recursion_numpy(
    counts: NDArray[np.float64],
    rho: NDArray[np.float64],
    z_total: float,
    rho_s: float,
    c: int,
    curve: list[float] | None,
) -> tuple[NDArray[np.float64], float, float, NDArray[np.float64], float, float]:
    q = np.zeros_like(rho)
    q_prev = q
    qs = qs_prev = 0.0
    lam = lam_prev = 0.0
    for k in range(1, c + 1):
        w = rho * (1.0 + q)
        lam_prev, q_prev, qs_prev = lam, q, qs
        lam = k / (float(np.dot(counts, w)) + z_total + rho_s * (1.0 + qs))
        q = lam * w
        qs = lam * rho_s * (1.0 + qs_prev)
        if curve is not None:
            curve.append(lam)
    return q, qs, lam, q_prev, qs_prev, lam_prev


def analyze_tiered(network: TieredNetwork, *, curve: bool = False) -> TieredResult:
    """Solve a tiered closed network exactly by MVA over tiers, in ``O(T C)``.

    Args:
        network: The tiered network.
        curve: Also return ``Lambda(C')`` for ``C' = 1..C``.

    Returns:
        A :class:`TieredResult`; its per-tier numbers equal those of
        :func:`raysync.queueing.analyze` on :meth:`TieredNetwork.to_closed_network`.

    Raises:
        ConfigError: ``network`` is not a :class:`TieredNetwork`, a demand ``p / mu``
            overflows float64, or a result is beyond the float64 range (one line, as
            :func:`raysync.queueing.analyze`).
    """
    if not isinstance(network, TieredNetwork):
        raise ConfigError(f"network must be a TieredNetwork, got {type(network).__name__}")
    from raysync.queueing.analysis import demand_exponent, refuse_unrepresentable

    # As analyze(): solve in a time unit where the largest demand is about 1, so rates near
    # the ends of float64 neither overflow nor underflow in the recursion; queue lengths,
    # utilisations and relative delays are unit-free, the throughput is scaled back.
    exponent = demand_exponent(  # ConfigError if a demand overflows
        network.p, network.mu, network.total_latency, network.server_rate
    )
    with np.errstate(under="ignore"):
        rho = np.ldexp(network.p / network.mu, -exponent)
        z = np.ldexp(network.total_latency, -exponent)
        rho_s = 0.0 if network.server_rate is None else math.ldexp(1.0 / network.server_rate,
                                                                   -exponent)  # fmt: skip
    z_total = float(np.dot(network.counts * network.p, z))
    counts = network.counts.astype(np.float64)
    lam_curve: list[float] | None = [] if curve else None
    c = network.concurrency
    if network.n_tiers <= _SCALAR_LOOP_MAX_TIERS:
        q_l, qs, lam, q_prev_l, qs_prev, lam_prev = _recursion_scalar(
            counts.tolist(), rho.tolist(), z_total, rho_s, c, lam_curve
        )
        q = np.asarray(q_l, dtype=np.float64)
        q_prev = np.asarray(q_prev_l, dtype=np.float64)
    else:
        q, qs, lam, q_prev, qs_prev, lam_prev = _recursion_numpy(
            counts, rho, z_total, rho_s, c, lam_curve
        )
    delay = q_prev / network.p + z * lam_prev + qs_prev
    utilization = rho * lam
    server_utilization = None if network.server_rate is None else lam * rho_s
    with np.errstate(over="ignore"):
        lam = float(np.ldexp(lam, -exponent))
    results: dict[str, NDArray[np.float64]] = {
        "client_throughput": network.p * lam,
        "utilization": utilization,
        "mean_queue_length": q,
        "mean_relative_delay": delay,
    }
    throughput_curve = None
    if lam_curve is not None:
        with np.errstate(over="ignore"):
            throughput_curve = np.ldexp(np.asarray(lam_curve, dtype=np.float64), -exponent)
    refuse_unrepresentable(
        network.mu,
        {"throughput": lam, "client_throughput": results["client_throughput"]},
        {"utilization": utilization, "mean_queue_length": q, "mean_relative_delay": delay,
         "throughput_curve": throughput_curve},
    )  # fmt: skip
    for value in results.values():
        value.setflags(write=False)
    if throughput_curve is not None:
        throughput_curve.setflags(write=False)
    return TieredResult(
        throughput=float(lam),
        mean_staleness=float(np.dot(network.counts * network.p, delay)),
        counts=network.counts,
        concurrency=c,
        server_utilization=server_utilization,
        throughput_curve=throughput_curve,
        **results,
    )
