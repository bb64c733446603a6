"""Metrics sinks: the :class:`MetricsSink` protocol runs send their scalars to.

:class:`TensorBoardSink` writes one event-file directory per run; the helpers build the
scalars and hparams both backends (simulator and Ray runtime) log at the end of a run.
Importing this package does not import torch: the writer is created on first use.
"""

from __future__ import annotations

from raysync.monitoring._base import MetricsSink
from raysync.monitoring.tensorboard import (
    TensorBoardSink,
    default_run_name,
    run_hparams,
    summary_scalars,
    theory_scalars,
)

__all__ = [
    "MetricsSink",
    "TensorBoardSink",
    "default_run_name",
    "run_hparams",
    "summary_scalars",
    "theory_scalars",
]
