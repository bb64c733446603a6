"""Service-time distributions: how long one task takes at a client.

Shared by the simulator (virtual clock) and the Ray runtime (emulated waits). Every
distribution knows its analytic mean and variance and samples from an injected
:class:`numpy.random.Generator`; none keeps RNG state of its own.
"""

from __future__ import annotations

import abc
import bisect
import math
from collections.abc import Sequence

import numpy as np

from raysync._validation import first_index
from raysync.config import ServiceTimeSpec
from raysync.exceptions import ConfigError

__all__ = [
    "BaseServiceTime",
    "DeterministicServiceTime",
    "ExponentialServiceTime",
    "LogNormalServiceTime",
    "ScheduleServiceTime",
    "TraceServiceTime",
    "make_service_time",
]


class BaseServiceTime(abc.ABC):
    """A service-time distribution (seconds per task).

    A distribution whose law changes with time (:class:`ScheduleServiceTime`) sets
    :attr:`time_dependent`; the engines then draw each duration with
    :meth:`sample_at` at the instant the task's service starts.
    """

    #: Whether the law depends on the clock (engines call :meth:`sample_at`).
    time_dependent: bool = False

    @property
    @abc.abstractmethod
    def mean(self) -> float:
        """Analytic mean service time."""

    @property
    @abc.abstractmethod
    def variance(self) -> float:
        """Analytic variance of the service time."""

    @property
    def cv(self) -> float:
        """Coefficient of variation ``std / mean`` (dimensionless).

        Computed as ``sqrt(variance) / mean``, never ``variance / mean**2``: a mean of
        1e-200 s squares to 0 in floating point, its ratio does not. Subclasses whose cv is
        known in closed form return it directly, so it stays exact where the variance
        itself under- or overflows.
        """
        mean = self.mean
        return math.sqrt(self.variance) / mean if mean > 0 else 0.0

    @property
    def rate(self) -> float:
        """Service rate ``mu = 1 / mean``."""
        return 1.0 / self.mean

    @abc.abstractmethod
    def sample(self, rng: np.random.Generator, size: int | None = None) -> float | np.ndarray:
        """Draw one duration (``size=None``) or an array of ``size`` durations."""

    def sample_at(self, rng: np.random.Generator, now: float) -> float:
        """Draw one duration for a service starting at ``now`` (seconds)."""
        del now
        return float(self.sample(rng))

    @property
    def shortest(self) -> float:
        """The shortest duration a draw can take (seconds; 0 unless a law says more).

        A lower bound, not an estimate: a law whose durations can be arbitrarily short
        (exponential, log-normal, any law that does not override this) gives 0.
        """
        return 0.0

    def earliest_finish(self, start: float) -> float:
        """The earliest instant a service starting at or after ``start`` can end (seconds)."""
        return start + self.shortest


def _check_positive_finite(name: str, value: object) -> float:
    """Return ``value`` as a float, or raise ConfigError unless it is finite and > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    result = float(value)
    if not math.isfinite(result) or result <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return result


class ExponentialServiceTime(BaseServiceTime):
    """Exponential service time with rate ``mu`` (the closed Jackson network's case).

    Density ``mu * exp(-mu * t)``; mean ``1 / mu``; variance ``1 / mu**2``.

    Args:
        rate: Service rate ``mu`` in tasks per second, finite and > 0.

    Raises:
        ConfigError: ``rate`` is not a finite number > 0.
    """

    def __init__(self, *, rate: float) -> None:
        self._rate = _check_positive_finite("exponential service rate", rate)
        self._scale = 1.0 / self._rate

    @property
    def mean(self) -> float:
        """Mean ``1 / rate``."""
        return self._scale

    @property
    def variance(self) -> float:
        """Variance ``1 / rate**2``."""
        return self._scale * self._scale

    @property
    def cv(self) -> float:
        """Coefficient of variation: 1 for every exponential law."""
        return 1.0

    @property
    def rate(self) -> float:
        """The rate ``mu`` the distribution was built with."""
        return self._rate

    def sample(self, rng: np.random.Generator, size: int | None = None) -> float | np.ndarray:
        """Draw one duration (``size=None``) or an array of ``size`` durations."""
        if size is None:
            return float(rng.exponential(self._scale))
        return rng.exponential(self._scale, size=size)

    def __repr__(self) -> str:
        return f"ExponentialServiceTime(rate={self._rate!r})"


class DeterministicServiceTime(BaseServiceTime):
    """Every task takes exactly ``duration`` seconds (mean ``duration``, variance 0).

    Sampling does not consume the generator.

    Args:
        duration: Duration in seconds, finite and > 0.

    Raises:
        ConfigError: ``duration`` is not a finite number > 0.
    """

    def __init__(self, *, duration: float) -> None:
        self._duration = _check_positive_finite("deterministic service duration", duration)

    @property
    def mean(self) -> float:
        """The duration."""
        return self._duration

    @property
    def variance(self) -> float:
        """Zero."""
        return 0.0

    @property
    def cv(self) -> float:
        """Coefficient of variation: 0 (no spread)."""
        return 0.0

    def sample(self, rng: np.random.Generator, size: int | None = None) -> float | np.ndarray:
        """Return ``duration`` (``size=None``) or an array of ``size`` copies of it."""
        del rng
        if size is None:
            return self._duration
        return np.full(size, self._duration, dtype=np.float64)

    @property
    def shortest(self) -> float:
        """The duration."""
        return self._duration

    def __repr__(self) -> str:
        return f"DeterministicServiceTime(duration={self._duration!r})"


class LogNormalServiceTime(BaseServiceTime):
    """Log-normal service time with an exact mean and coefficient of variation.

    ``T = exp(Z)`` with ``Z ~ Normal(m, s**2)``, where

    * ``s**2 = log(1 + cv**2)``
    * ``m = log(mean) - s**2 / 2``

    so that ``E[T] = exp(m + s**2 / 2) = mean`` and
    ``Var[T] = (exp(s**2) - 1) * E[T]**2 = (cv * mean)**2``.

    Args:
        mean: Mean duration in seconds, finite and > 0.
        cv: Coefficient of variation ``std / mean``, finite and > 0.

    Raises:
        ConfigError: ``mean`` or ``cv`` is not a finite number > 0.
    """

    def __init__(self, *, mean: float, cv: float) -> None:
        self._mean = _check_positive_finite("lognormal service mean", mean)
        self._cv = _check_positive_finite("lognormal service cv", cv)
        sigma2 = math.log1p(self._cv * self._cv)
        self._sigma = math.sqrt(sigma2)
        self._mu = math.log(self._mean) - 0.5 * sigma2

    @property
    def mean(self) -> float:
        """Mean duration."""
        return self._mean

    @property
    def variance(self) -> float:
        """Variance ``(cv * mean)**2``."""
        std = self._cv * self._mean
        return std * std

    @property
    def cv(self) -> float:
        """Coefficient of variation ``std / mean``."""
        return self._cv

    @property
    def log_mean(self) -> float:
        """Mean ``m`` of the underlying normal."""
        return self._mu

    @property
    def log_std(self) -> float:
        """Standard deviation ``s`` of the underlying normal."""
        return self._sigma

    def sample(self, rng: np.random.Generator, size: int | None = None) -> float | np.ndarray:
        """Draw one duration (``size=None``) or an array of ``size`` durations."""
        if size is None:
            return float(rng.lognormal(self._mu, self._sigma))
        return rng.lognormal(self._mu, self._sigma, size=size)

    def __repr__(self) -> str:
        return f"LogNormalServiceTime(mean={self._mean!r}, cv={self._cv!r})"


class TraceServiceTime(BaseServiceTime):
    """Resample observed durations uniformly with replacement (an empirical distribution).

    The mean is the empirical mean and the variance the *population* variance
    ``(1/m) sum_j (d_j - mean)**2`` of the ``m`` observed durations: exactly the moments of
    the distribution that is sampled.

    Args:
        durations: Observed durations in seconds: a non-empty 1-D sequence of finite
            numbers > 0.

    Raises:
        ConfigError: ``durations`` is empty, not 1-D, or holds a value that is not a
            finite number > 0.
    """

    def __init__(self, *, durations: Sequence[float] | np.ndarray) -> None:
        try:
            values = np.array(durations, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"trace service durations must be numbers, got {durations!r}"
            ) from exc
        if values.ndim != 1 or values.size == 0:
            raise ConfigError(
                "trace service durations must be a non-empty 1-D sequence, "
                f"got shape {values.shape}"
            )
        j = first_index(~(np.isfinite(values) & (values > 0)))
        if j is not None:
            raise ConfigError(
                "trace service durations must be finite and > 0, "
                f"got durations[{j}]={float(values[j])!r}"
            )
        values.setflags(write=False)
        self._durations = values
        self._mean = float(values.mean())
        self._variance = float(values.var())
        # The spread relative to the mean, from the rescaled durations: exact where the
        # variance (a mean squared) under- or overflows.
        self._cv = float((values / self._mean).std())

    @property
    def durations(self) -> np.ndarray:
        """The observed durations (read-only)."""
        return self._durations

    @property
    def mean(self) -> float:
        """Empirical mean of the durations."""
        return self._mean

    @property
    def variance(self) -> float:
        """Population variance of the durations."""
        return self._variance

    @property
    def cv(self) -> float:
        """Coefficient of variation ``std / mean`` of the durations."""
        return self._cv

    @property
    def shortest(self) -> float:
        """The shortest observed duration (resampling never draws less)."""
        return float(self._durations.min())

    def sample(self, rng: np.random.Generator, size: int | None = None) -> float | np.ndarray:
        """Draw one observed duration (``size=None``) or ``size`` of them, with replacement."""
        m = self._durations.size
        if size is None:
            return float(self._durations[rng.integers(m)])
        return self._durations[rng.integers(0, m, size=size)]

    def __repr__(self) -> str:
        return (
            f"TraceServiceTime(<{self._durations.size} durations, mean={self._mean:.6g}, "
            f"std={math.sqrt(self._variance):.6g}>)"
        )


class ScheduleServiceTime(BaseServiceTime):
    """A law that changes over time: segment ``j`` is in force on ``[ends[j-1], ends[j])``.

    A task's duration is drawn from the segment in force when its service starts (so a
    slow-down at ``t`` affects services starting at ``t`` or later; one already running
    keeps its duration). :attr:`mean`, :attr:`variance` and :meth:`sample` describe the
    first segment, the one in force at ``t = 0`` (what a stationary analysis sees).

    Args:
        segments: The laws, in time order (at least one, none itself a schedule).
        ends: End times of every segment but the last (``len(segments) - 1`` numbers,
            strictly increasing, > 0).

    Raises:
        ConfigError: Empty segments, a nested schedule, or ends that are not strictly
            increasing positive times, one per segment but the last.
    """

    time_dependent = True

    def __init__(self, *, segments: Sequence[BaseServiceTime], ends: Sequence[float]) -> None:
        laws = list(segments)
        if not laws:
            raise ConfigError("schedule segments must be a non-empty list, got []")
        for j, law in enumerate(laws):
            if not isinstance(law, BaseServiceTime) or law.time_dependent:
                raise ConfigError(
                    f"schedule segments[{j}] must be a stationary service time, got {law!r}"
                )
        cuts = [float(e) for e in ends]
        if len(cuts) != len(laws) - 1:
            raise ConfigError(
                f"schedule needs one end time per segment but the last ({len(laws) - 1}), "
                f"got {len(cuts)}"
            )
        previous = 0.0
        for j, end in enumerate(cuts):
            if not (math.isfinite(end) and end > previous):
                raise ConfigError(
                    f"schedule ends[{j}] must be > {previous:g} (segments go forward in time "
                    f"and must not overlap), got {end!r}"
                )
            previous = end
        self._segments = laws
        self._ends = cuts

    @property
    def segments(self) -> tuple[BaseServiceTime, ...]:
        """The laws in time order."""
        return tuple(self._segments)

    @property
    def ends(self) -> tuple[float, ...]:
        """End times of every segment but the last."""
        return tuple(self._ends)

    def segment_index(self, now: float) -> int:
        """Index of the segment in force at ``now``."""
        return bisect.bisect_right(self._ends, now)

    def at(self, now: float) -> BaseServiceTime:
        """The law in force at ``now``."""
        return self._segments[bisect.bisect_right(self._ends, now)]

    @property
    def mean(self) -> float:
        """Mean of the first segment."""
        return self._segments[0].mean

    @property
    def variance(self) -> float:
        """Variance of the first segment."""
        return self._segments[0].variance

    @property
    def cv(self) -> float:
        """Coefficient of variation of the first segment."""
        return self._segments[0].cv

    def sample(self, rng: np.random.Generator, size: int | None = None) -> float | np.ndarray:
        """Draw from the first segment (the law at ``t = 0``)."""
        return self._segments[0].sample(rng, size)

    @property
    def shortest(self) -> float:
        """The shortest duration of the first segment (the law at ``t = 0``)."""
        return self._segments[0].shortest

    def earliest_finish(self, start: float) -> float:
        """The earliest end of a service starting at or after ``start``.

        The minimum over the segments in force from then on: a later segment may be faster.
        """
        begins = [0.0, *self._ends]
        first = bisect.bisect_right(self._ends, start)
        return min(max(begins[j], start) + self._segments[j].shortest
                   for j in range(first, len(self._segments)))

    def sample_at(self, rng: np.random.Generator, now: float) -> float:
        """Draw one duration from the segment in force at ``now``."""
        return float(self._segments[bisect.bisect_right(self._ends, now)].sample(rng))

    def __repr__(self) -> str:
        parts = [
            f"{law!r} until {end:g}"
            for law, end in zip(self._segments[:-1], self._ends, strict=True)
        ]
        parts.append(f"{self._segments[-1]!r} after")
        return f"ScheduleServiceTime({'; '.join(parts)})"


def make_service_time(spec: ServiceTimeSpec) -> BaseServiceTime:
    """Build the distribution a :class:`~raysync.config.ServiceTimeSpec` describes.

    Built through the registry :mod:`raysync.simulation.registry` (which lists the kinds
    and the fields each uses): ``exponential`` uses ``rate``; ``deterministic`` uses
    ``mean`` as the duration; ``lognormal`` uses ``mean`` and ``cv``; ``trace`` uses
    ``durations``; ``schedule`` uses ``segments`` (:class:`ScheduleServiceTime`).

    Raises:
        ConfigError: The spec's kind is not registered or a required field is missing.
    """
    # Imported here: the registry module imports the classes defined above.
    from raysync.simulation.registry import build

    return build(spec)
