"""The closed queueing network that models an asynchronous FL system (docs/theory.md section 2).

``C`` tasks circulate for ever. A task dispatched to client ``i`` (probability ``p_i``)
waits in client ``i``'s FIFO queue and is served at rate ``mu_i`` (exponential). When it
completes, the server applies the update and dispatches one new task. Optional stations
that keep the product form (BCMP) refine the cycle:

* ``latency``: an infinite-server (delay) station visited by every task, mean ``latency``
  (communication time, e.g. downlink plus uplink, that does not queue);
* ``client_latency``: per-client infinite-server stations, the one of client ``i`` visited by
  the tasks routed to ``i`` (visit ratio ``p_i``), mean ``client_latency[i]``;
* ``server_rate``: a single-server FIFO station for the server's own update computation,
  visited once per update (visit ratio 1), exponential with rate ``server_rate``. With it, an
  update is applied when the server finishes processing a returned task, and the next task
  is dispatched at that moment, carrying the new model.

The cycle of one task is therefore
``dispatch -> latency -> client i -> client_latency[i] -> server -> update -> dispatch``;
the order of the stations does not change any quantity reported by :func:`analyze`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from raysync._validation import check_number, check_probabilities, first_index
from raysync.exceptions import ConfigError

if TYPE_CHECKING:
    from raysync.config import SystemConfig

__all__ = ["ClosedNetwork"]

P_SUM_RTOL = 1e-9
"""Relative tolerance on ``sum(p) == 1``."""


def _vector(name: str, value: ArrayLike, n: int | None) -> NDArray[np.float64]:
    """Convert ``value`` to a read-only, 1-D float64 array and check it is finite."""
    if isinstance(value, str | bytes):
        raise ConfigError(f"{name} must be a sequence of numbers, got {value!r}")
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a sequence of numbers, got {value!r}") from exc
    if array.ndim != 1:
        raise ConfigError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        raise ConfigError(f"{name} must have at least one entry (one per client), got 0")
    if n is not None and array.size != n:
        raise ConfigError(
            f"{name} must have one entry per client: len(mu)={n}, got len({name})={array.size}"
        )
    j = first_index(~np.isfinite(array))
    if j is not None:
        raise ConfigError(f"{name}[{j}] must be finite, got {float(array[j])!r}")
    array.setflags(write=False)
    return array


def check_transit(latency: float, station_latency: NDArray[np.float64], name: str) -> None:
    """Refuse a transit delay ``latency + station_latency[j]`` beyond float64.

    Each entry is finite, but the solvers use the sum ``Z_j``: it is refused here, where
    both terms can still be named, not as an inf that a solver blames on another field.

    Raises:
        ConfigError: Names the first station whose sum overflows and both terms.
    """
    with np.errstate(over="ignore"):
        transit = latency + station_latency
    j = first_index(~np.isfinite(transit))
    if j is not None:
        raise ConfigError(
            f"the transit delay latency + {name}[{j}] = {latency!r} + "
            f"{float(station_latency[j])!r} overflows float64 (max about 1.8e308); "
            "lower the latencies"
        )


@dataclass(frozen=True, kw_only=True, eq=False)
class ClosedNetwork:
    """Specification of a closed network of ``n`` clients with population ``C``.

    All arrays are stored as read-only float64 numpy arrays. Construction validates every
    field and raises :class:`~raysync.exceptions.ConfigError` (a ``ValueError``) naming the
    field, the rule and the bad value.

    Attributes:
        mu: Service rates ``mu_i > 0`` (tasks per unit time), one per client.
        p: Routing probabilities ``p_i > 0`` summing to 1 (relative tolerance 1e-9).
        concurrency: Number of tasks in flight ``C >= 1`` (the population).
        latency: Mean time of an infinite-server delay station visited by every task
            (0 means no such station).
        client_latency: Optional per-client mean delays (>= 0) of infinite-server stations,
            the one of client ``i`` visited whenever a task goes to client ``i``.
        server_rate: Optional service rate of a single-server FIFO station, visited once per
            update, that models the server's own update computation (None: instantaneous).
    """

    mu: NDArray[np.float64]
    p: NDArray[np.float64]
    concurrency: int
    latency: float = 0.0
    client_latency: NDArray[np.float64] | None = None
    server_rate: float | None = None

    def __post_init__(self) -> None:
        mu = _vector("mu", self.mu, None)
        n = mu.size
        p = _vector("p", self.p, n)
        j = first_index(mu <= 0)
        if j is not None:
            raise ConfigError(f"mu[{j}] must be > 0, got {float(mu[j])!r}")
        check_probabilities(p)
        j = first_index(p > 1.0)
        if j is not None:  # also keeps fsum below from overflowing on huge entries
            raise ConfigError(f"p[{j}] must be a probability in (0, 1], got {float(p[j])!r}")
        total = math.fsum(p.tolist())
        if abs(total - 1.0) > P_SUM_RTOL:
            raise ConfigError(
                f"routing p must sum to 1, got sum={total:.12g} for {n} clients (to within "
                f"{P_SUM_RTOL:g}: give every digit, e.g. 1/3 as 0.333333333333, or make the "
                "last entry 1 minus the others)"
            )
        c = self.concurrency
        if isinstance(c, bool) or not isinstance(c, int | np.integer):
            raise ConfigError(f"concurrency must be an integer >= 1, got {c!r}")
        if c < 1:
            raise ConfigError(f"concurrency must be an integer >= 1, got {c!r}")
        latency = check_number("latency", self.latency, allow_zero=True)
        client_latency = None
        if self.client_latency is not None:
            client_latency = _vector("client_latency", self.client_latency, n)
            j = first_index(client_latency < 0)
            if j is not None:
                raise ConfigError(
                    f"client_latency[{j}] must be >= 0, got {float(client_latency[j])!r}"
                )
            check_transit(latency, client_latency, "client_latency")
        server_rate = None
        if self.server_rate is not None:
            server_rate = check_number("server_rate", self.server_rate, allow_zero=False)
        object.__setattr__(self, "mu", mu)
        object.__setattr__(self, "p", p)
        object.__setattr__(self, "concurrency", int(c))
        object.__setattr__(self, "latency", latency)
        object.__setattr__(self, "client_latency", client_latency)
        object.__setattr__(self, "server_rate", server_rate)

    def _key(self) -> tuple[Any, ...]:
        return (
            self.mu.tobytes(),
            self.p.tobytes(),
            self.concurrency,
            self.latency,
            None if self.client_latency is None else self.client_latency.tobytes(),
            self.server_rate,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClosedNetwork):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def n_clients(self) -> int:
        """Number of clients ``n``."""
        return int(self.mu.size)

    @property
    def rho(self) -> NDArray[np.float64]:
        """Service demands ``rho_i = p_i / mu_i`` (time at client ``i`` per update)."""
        return self.p / self.mu

    @property
    def has_extensions(self) -> bool:
        """Whether any latency or server station is present."""
        return (
            self.latency > 0
            or (self.client_latency is not None and bool(np.any(self.client_latency > 0)))
            or self.server_rate is not None
        )

    @property
    def total_latency(self) -> NDArray[np.float64]:
        """Mean communication delay ``Z_i = latency + client_latency[i]`` of a task to ``i``."""
        z = np.full(self.n_clients, self.latency)
        if self.client_latency is not None:
            z = z + self.client_latency
        z.setflags(write=False)
        return z

    @property
    def bottleneck_throughput(self) -> float:
        """Upper bound on the update throughput: ``min(min_i mu_i / p_i, server_rate)``."""
        bound = float(np.min(self.mu / self.p))
        if self.server_rate is not None:
            bound = min(bound, self.server_rate)
        return bound

    def with_concurrency(self, concurrency: int) -> ClosedNetwork:
        """Return the same network with another population ``C`` (validated again)."""
        return ClosedNetwork(
            mu=self.mu,
            p=self.p,
            concurrency=concurrency,
            latency=self.latency,
            client_latency=self.client_latency,
            server_rate=self.server_rate,
        )

    @classmethod
    def from_config(
        cls,
        config: SystemConfig,
        *,
        latency: float = 0.0,
        client_latency: Sequence[float] | NDArray[np.float64] | None = None,
        server_rate: float | None = None,
    ) -> ClosedNetwork:
        """Build the network of a :class:`~raysync.config.SystemConfig`.

        Service rates are ``1 / mean`` of each client's service time (exact for exponential
        service, an approximation otherwise). Routing probabilities are renormalised to sum
        to 1 exactly (the config accepts a looser tolerance).

        Args:
            config: The system configuration.
            latency: Mean delay of a station visited by every task.
            client_latency: Per-client mean delays.
            server_rate: Service rate of the server's update station.

        Returns:
            The closed network.

        Raises:
            ConfigError: The config's routing is ``return_to_sender``, which is not a
                random routing and has no closed-Jackson-network model here.
        """
        probabilities = config.routing_probabilities
        if probabilities is None:
            raise ConfigError(
                f"routing.kind must be 'fixed' or 'uniform' for queueing analysis, got "
                f"{config.routing.kind!r} (return-to-sender is not a random routing; its "
                "closed form, independent cycles, is raysync.queueing.predict(config) and the "
                "theory column of `raysync simulate --queue-only`)"
            )
        p = np.asarray(probabilities, dtype=np.float64)
        return cls(
            mu=np.asarray(config.service_rates, dtype=np.float64),
            p=p / p.sum(),
            concurrency=config.concurrency,
            latency=latency,
            client_latency=None if client_latency is None else np.asarray(client_latency),
            server_rate=server_rate,
        )
