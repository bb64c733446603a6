from __future__ import annotations

import math

import numpy as np
import pytest

from raysync.config import ServiceTimeSpec
from raysync.exceptions import ConfigError
from raysync.simulation.service_times import (
    BaseServiceTime,
    DeterministicServiceTime,
    ExponentialServiceTime,
    LogNormalServiceTime,
    TraceServiceTime,
    make_service_time,
)
from raysync.testing.contracts import ServiceTimeContract


class TestExponentialContract(ServiceTimeContract):
    def make_service_time(self) -> BaseServiceTime:
        return ExponentialServiceTime(rate=2.5)


class TestDeterministicContract(ServiceTimeContract):
    def make_service_time(self) -> BaseServiceTime:
        return DeterministicServiceTime(duration=0.75)


class TestLogNormalContract(ServiceTimeContract):
    def make_service_time(self) -> BaseServiceTime:
        return LogNormalServiceTime(mean=3.0, cv=0.5)


class TestLogNormalHighCVContract(ServiceTimeContract):
    def make_service_time(self) -> BaseServiceTime:
        return LogNormalServiceTime(mean=0.2, cv=1.0)


class TestTraceContract(ServiceTimeContract):
    def make_service_time(self) -> BaseServiceTime:
        return TraceServiceTime(durations=[0.1, 0.4, 0.4, 2.0, 0.35])


def test_exponential_moments() -> None:
    dist = ExponentialServiceTime(rate=4.0)
    assert (dist.mean, dist.variance, dist.rate) == (0.25, 0.0625, 4.0)
    assert repr(dist) == "ExponentialServiceTime(rate=4.0)"


def test_deterministic_is_constant_and_draws_nothing() -> None:
    dist = DeterministicServiceTime(duration=1.5)
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert dist.sample(rng) == 1.5
    np.testing.assert_array_equal(dist.sample(rng, size=3), [1.5, 1.5, 1.5])
    assert rng.bit_generator.state == state
    assert (dist.mean, dist.variance) == (1.5, 0.0)


def test_lognormal_parameterisation_is_exact() -> None:
    dist = LogNormalServiceTime(mean=2.0, cv=0.5)
    s2 = math.log(1 + 0.25)
    assert dist.log_std == pytest.approx(math.sqrt(s2), rel=1e-15)
    assert dist.log_mean == pytest.approx(math.log(2.0) - s2 / 2, rel=1e-15)
    # E[T] = exp(m + s^2/2), Var[T] = (exp(s^2) - 1) E[T]^2
    assert math.exp(dist.log_mean + dist.log_std**2 / 2) == pytest.approx(2.0, rel=1e-14)
    assert (math.exp(dist.log_std**2) - 1) * 4.0 == pytest.approx(dist.variance, rel=1e-14)
    assert dist.variance == pytest.approx(1.0, rel=1e-15)
    assert repr(dist) == "LogNormalServiceTime(mean=2.0, cv=0.5)"


def test_trace_moments_are_population_moments() -> None:
    durations = [1.0, 2.0, 3.0, 6.0]
    dist = TraceServiceTime(durations=durations)
    assert dist.mean == 3.0
    assert dist.variance == pytest.approx(3.5)  # (4 + 1 + 0 + 9) / 4
    values = dist.sample(np.random.default_rng(0), size=1000)
    assert set(np.unique(values)) <= set(durations)
    assert "4 durations" in repr(dist)
    assert not dist.durations.flags.writeable


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: ExponentialServiceTime(rate=0.0), r"service rate must be a finite number > 0"),
        (lambda: ExponentialServiceTime(rate=-2), r"got -2"),
        (lambda: ExponentialServiceTime(rate=True), r"got True"),
        (lambda: DeterministicServiceTime(duration=float("inf")), r"duration must be .* got inf"),
        (lambda: LogNormalServiceTime(mean=1.0, cv=0.0), r"lognormal service cv must be .*0\.0"),
        (lambda: LogNormalServiceTime(mean=-1.0, cv=1.0), r"lognormal service mean must be"),
        (lambda: TraceServiceTime(durations=[]), r"non-empty 1-D .*shape \(0,\)"),
        (lambda: TraceServiceTime(durations=[1.0, 0.0]), r"durations\[1\]=0\.0"),
        (lambda: TraceServiceTime(durations=[[1.0]]), r"non-empty 1-D"),
        (lambda: TraceServiceTime(durations=["x"]), r"must be numbers"),
    ],
)
def test_bad_arguments(build: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build()  # type: ignore[operator]


def test_keyword_only() -> None:
    with pytest.raises(TypeError):
        ExponentialServiceTime(1.0)  # type: ignore[misc]


def test_make_service_time_maps_every_kind() -> None:
    exp = make_service_time(ServiceTimeSpec(kind="exponential", rate=3.0))
    assert isinstance(exp, ExponentialServiceTime) and exp.rate == 3.0
    exp_from_mean = make_service_time(ServiceTimeSpec(kind="exponential", mean=0.5))
    assert isinstance(exp_from_mean, ExponentialServiceTime) and exp_from_mean.rate == 2.0
    det = make_service_time(ServiceTimeSpec(kind="deterministic", mean=0.3))
    assert isinstance(det, DeterministicServiceTime) and det.mean == 0.3
    logn = make_service_time(ServiceTimeSpec(kind="lognormal", mean=2.0, cv=0.3))
    assert isinstance(logn, LogNormalServiceTime) and (logn.mean, logn.cv) == (2.0, 0.3)
    logn_default = make_service_time(ServiceTimeSpec(kind="lognormal", mean=2.0))
    assert isinstance(logn_default, LogNormalServiceTime) and logn_default.cv == 1.0
    trace = make_service_time(ServiceTimeSpec(kind="trace", durations=(1.0, 3.0)))
    assert isinstance(trace, TraceServiceTime) and trace.mean == 2.0
    for spec in (
        ServiceTimeSpec(kind="exponential", rate=3.0),
        ServiceTimeSpec(kind="deterministic", mean=0.3),
        ServiceTimeSpec(kind="lognormal", mean=2.0, cv=0.3),
        ServiceTimeSpec(kind="trace", durations=(1.0, 3.0)),
    ):
        assert make_service_time(spec).mean == pytest.approx(spec.mean_duration, rel=1e-15)
