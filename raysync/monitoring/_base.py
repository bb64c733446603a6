"""The metrics-sink extension point: where runs send their scalars.

A sink receives scalars at a step (the model version) and an instant (seconds since the
start of the run: virtual in the simulator, wall clock in the runtime). Sinks are optional
and must be cheap: the engines call them only at evaluation points and at the end.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

__all__ = ["MetricsSink"]


@runtime_checkable
class MetricsSink(Protocol):
    """Receives a run's metrics (TensorBoard, memory, ...).

    Call order: ``log_scalars`` any number of times with non-decreasing steps,
    ``log_hparams`` at most once, then ``close`` (by whoever created the sink; engines
    never close the sinks they are given). Tags are stable names such as ``test/accuracy``,
    ``system/throughput`` or ``staleness/client_3``.
    """

    def log_scalars(self, step: int, scalars: Mapping[str, float], *, time: float) -> None:
        """Record ``scalars`` at ``step`` (model version) and ``time`` (seconds)."""

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """Record a run's hyper-parameters with its final metrics."""

    def close(self) -> None:
        """Flush and release resources."""
