"""Metrics sinks: the :class:`MetricsSink` protocol runs send their scalars to."""

from __future__ import annotations

from raysync.monitoring._base import MetricsSink

__all__ = ["MetricsSink"]
