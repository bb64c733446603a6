"""Typed result of a closed-network analysis, shared with the simulator."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["QueueingResult"]


def _freeze(value: NDArray[np.float64] | None) -> NDArray[np.float64] | None:
    if value is None:
        return None
    array = np.array(value, dtype=np.float64)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, kw_only=True, eq=False)
class QueueingResult:
    """Stationary performance of a :class:`~raysync.queueing.ClosedNetwork`.

    Time is in the unit of the service rates; delays (staleness) are counted in updates
    of the network, i.e. in **completions** (one task completes per update). A server
    that applies one model version per ``buffer_size = B`` completions (FedBuff) sees
    delays in versions of ``mean_relative_delay / B`` in expectation
    (:attr:`mean_version_delay`; ``docs/fedbuff.md`` derives it). Arrays are read-only
    float64 with one entry per client.

    Attributes:
        throughput: Update throughput ``Lambda(C)`` (updates per unit time).
        client_throughput: Completion rate of each client, ``p_i Lambda(C)``.
        utilization: Fraction of time each client is busy, ``rho_i Lambda(C) <= 1``.
        mean_queue_length: Mean number of tasks at client ``i`` (waiting or in service),
            ``Q_i(C)``.
        mean_sojourn_time: Mean time a task spends at client ``i`` (waiting plus service),
            ``T_i(C)``.
        mean_relative_delay: Mean staleness ``E[D_i]`` of a task consumed from client ``i``:
            the number of updates applied between its dispatch and its own update.
        mean_staleness: Staleness averaged over updates, ``sum_i p_i E[D_i] = C - 1``.
        concurrency: Population ``C``.
        n_clients: Number of clients ``n``.
        method: Solver that produced the numbers: ``mva``, ``buzen`` or ``bruteforce``.
        mean_in_transit: Mean number of tasks of client ``i`` in the latency stations
            (zeros without latency; zeros when not given).
        server_utilization: Busy fraction of the server station (None without it).
        server_queue_length: Mean number of tasks at the server station (None without it).
        buffer_size: Completions per model version ``B`` (1 unless the prediction is for
            a FedBuff config; see :func:`raysync.queueing.predict`).
        throughput_curve: ``Lambda(C')`` for ``C' = 1..C``, shape ``(C,)`` (curve only).
        queue_length_curve: ``Q_i(C')``, shape ``(C, n)`` (curve only).
        relative_delay_curve: ``E[D_i]`` at population ``C'``, shape ``(C, n)`` (curve only).
    """

    throughput: float
    client_throughput: NDArray[np.float64]
    utilization: NDArray[np.float64]
    mean_queue_length: NDArray[np.float64]
    mean_sojourn_time: NDArray[np.float64]
    mean_relative_delay: NDArray[np.float64]
    mean_staleness: float
    concurrency: int
    n_clients: int
    method: str
    mean_in_transit: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    server_utilization: float | None = None
    server_queue_length: float | None = None
    buffer_size: int = 1
    throughput_curve: NDArray[np.float64] | None = None
    queue_length_curve: NDArray[np.float64] | None = None
    relative_delay_curve: NDArray[np.float64] | None = None

    def __post_init__(self) -> None:
        if self.mean_in_transit.size == 0:
            object.__setattr__(self, "mean_in_transit", np.zeros(self.n_clients))
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                object.__setattr__(self, f.name, _freeze(value))
        object.__setattr__(self, "throughput", float(self.throughput))
        object.__setattr__(self, "mean_staleness", float(self.mean_staleness))
        if (
            isinstance(self.buffer_size, bool)
            or not isinstance(self.buffer_size, int)
            or (self.buffer_size < 1)
        ):
            raise ValueError(f"buffer_size must be an integer >= 1, got {self.buffer_size!r}")

    @property
    def mean_version_delay(self) -> NDArray[np.float64]:
        """``E[D_i]`` in model versions: ``mean_relative_delay / buffer_size``, shape ``(n,)``."""
        out = self.mean_relative_delay / self.buffer_size
        out.setflags(write=False)
        return out

    @property
    def mean_version_staleness(self) -> float:
        """Staleness averaged over completions, in model versions: ``(C - 1) / B``."""
        return self.mean_staleness / self.buffer_size

    @property
    def version_throughput(self) -> float:
        """Model versions per unit time: ``throughput / buffer_size``."""
        return self.throughput / self.buffer_size

    @property
    def has_curve(self) -> bool:
        """Whether the ``*_curve`` arrays were computed."""
        return self.throughput_curve is not None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe mapping (arrays as nested lists, None kept as None)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.tolist() if isinstance(value, np.ndarray) else value
        return out
