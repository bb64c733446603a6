"""Discrete-event simulation on a virtual clock, and the run result shared with Ray.

:func:`simulate` runs a :class:`~raysync.config.SystemConfig` (queue-only or with real
training) and returns a :class:`RunResult`; the per-task minibatch streams both engines
draw from are :class:`MinibatchStreams`; the service-time distributions it samples
from live in :mod:`raysync.simulation.service_times`, and the statistics machinery both
backends share (snapshots, batch means, service-time streams) in
:mod:`raysync.simulation.statistics`.
"""

from __future__ import annotations

from raysync.simulation.engine import (
    ProgressCallback,
    RunGenerators,
    queue_only_snapshots,
    run_generators,
    simulate,
)
from raysync.simulation.minibatch import MinibatchStreams
from raysync.simulation.result import RunResult, SimulationResult, batch_ratio_ci
from raysync.simulation.service_times import (
    BaseServiceTime,
    DeterministicServiceTime,
    ExponentialServiceTime,
    LogNormalServiceTime,
    TraceServiceTime,
    make_service_time,
)

__all__ = [
    "BaseServiceTime",
    "DeterministicServiceTime",
    "ExponentialServiceTime",
    "LogNormalServiceTime",
    "MinibatchStreams",
    "ProgressCallback",
    "RunGenerators",
    "RunResult",
    "SimulationResult",
    "TraceServiceTime",
    "batch_ratio_ci",
    "make_service_time",
    "queue_only_snapshots",
    "run_generators",
    "simulate",
]
