"""The registry of service-time distributions: ``service_time.kind`` -> distribution.

The config's allowed ``service_time.kind`` values are :func:`names`; :func:`build` (also
``raysync.simulation.make_service_time``) constructs the distribution a
:class:`~raysync.config.ServiceTimeSpec` names. Adding a distribution is one
:class:`~raysync.simulation.service_times.BaseServiceTime` subclass plus one
:func:`register` call (see :mod:`raysync._registry`); a kind that needs fields the spec
does not have also needs them added to :class:`~raysync.config.ServiceTimeSpec`.

Built-in: ``exponential`` uses ``rate``; ``deterministic`` uses ``mean`` as the duration;
``lognormal`` uses ``mean`` and ``cv`` (1 when absent); ``trace`` uses ``durations``;
``schedule`` uses ``segments`` (each built like a spec of its own).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raysync._registry import Registry
from raysync.exceptions import ConfigError
from raysync.simulation.service_times import (
    BaseServiceTime,
    DeterministicServiceTime,
    ExponentialServiceTime,
    LogNormalServiceTime,
    ScheduleServiceTime,
    TraceServiceTime,
)

if TYPE_CHECKING:  # raysync.config imports this module when it validates a kind
    from raysync.config import ServiceTimeSpec

__all__ = ["SERVICE_TIMES", "build", "names", "register", "unregister"]

#: The registry itself; ``register``, ``unregister`` and ``names`` are its methods.
SERVICE_TIMES: Registry[BaseServiceTime] = Registry("service_time.kind")
register = SERVICE_TIMES.register
unregister = SERVICE_TIMES.unregister
names = SERVICE_TIMES.names


def build(spec: ServiceTimeSpec) -> BaseServiceTime:
    """Build the distribution a :class:`~raysync.config.ServiceTimeSpec` names.

    Raises:
        ConfigError: ``spec.kind`` is not registered or a field it needs is missing.
    """
    return SERVICE_TIMES.build(spec.kind, spec)


def _missing(spec: ServiceTimeSpec, field: str) -> ConfigError:
    return ConfigError(f"service_time.{field} is required for kind {spec.kind!r}, got {spec!r}")


@register("exponential")
def _exponential(spec: ServiceTimeSpec) -> BaseServiceTime:
    if spec.rate is None:
        raise _missing(spec, "rate")
    return ExponentialServiceTime(rate=spec.rate)


@register("deterministic")
def _deterministic(spec: ServiceTimeSpec) -> BaseServiceTime:
    if spec.mean is None:
        raise _missing(spec, "mean")
    return DeterministicServiceTime(duration=spec.mean)


@register("lognormal")
def _lognormal(spec: ServiceTimeSpec) -> BaseServiceTime:
    if spec.mean is None:
        raise _missing(spec, "mean")
    return LogNormalServiceTime(mean=spec.mean, cv=1.0 if spec.cv is None else spec.cv)


@register("trace")
def _trace(spec: ServiceTimeSpec) -> BaseServiceTime:
    if not spec.durations:
        raise _missing(spec, "durations")
    return TraceServiceTime(durations=spec.durations)


@register("schedule")
def _schedule(spec: ServiceTimeSpec) -> BaseServiceTime:
    if not spec.segments:
        raise _missing(spec, "segments")
    ends = [seg.until for seg in spec.segments[:-1]]
    return ScheduleServiceTime(
        segments=[build(seg) for seg in spec.segments], ends=[float(e) for e in ends if e]
    )
