"""Service-time distributions: how long one task takes at a client.

Shared by the simulator (virtual clock) and the Ray runtime (emulated waits). Every
distribution knows its analytic mean and variance and samples from an injected
:class:`numpy.random.Generator`; none keeps RNG state of its own.
"""

from __future__ import annotations

import abc

import numpy as np

__all__ = ["BaseServiceTime"]


class BaseServiceTime(abc.ABC):
    """A service-time distribution (seconds per task)."""

    @property
    @abc.abstractmethod
    def mean(self) -> float:
        """Analytic mean service time."""

    @property
    @abc.abstractmethod
    def variance(self) -> float:
        """Analytic variance of the service time."""

    @property
    def rate(self) -> float:
        """Service rate ``mu = 1 / mean``."""
        return 1.0 / self.mean

    @abc.abstractmethod
    def sample(self, rng: np.random.Generator, size: int | None = None) -> float | np.ndarray:
        """Draw one duration (``size=None``) or an array of ``size`` durations."""
