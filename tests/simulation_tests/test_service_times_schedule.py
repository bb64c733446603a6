"""Non-stationary fleets: schedule service times, clients that join and leave, and the
adaptive router inside the simulator (docs/adaptive.md)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from raysync.config import ClientSpec, ServiceTimeSpec, SystemConfig
from raysync.exceptions import ConfigError
from raysync.routing import AdaptiveRouter, FixedRouter
from raysync.simulation import simulate
from raysync.simulation.service_times import (
    BaseServiceTime,
    ExponentialServiceTime,
    ScheduleServiceTime,
    make_service_time,
)
from raysync.testing.contracts import ServiceTimeContract

SLOW_DOWN = {"kind": "schedule", "segments": [{"until": 100.0, "rate": 10.0}, {"rate": 2.0}]}


class TestScheduleContract(ServiceTimeContract):
    def make_service_time(self) -> BaseServiceTime:
        return make_service_time(ServiceTimeSpec(**SLOW_DOWN))  # type: ignore[arg-type]


def test_sample_at_uses_the_segment_in_force() -> None:
    law = make_service_time(ServiceTimeSpec(**SLOW_DOWN))  # type: ignore[arg-type]
    assert isinstance(law, ScheduleServiceTime) and law.time_dependent
    assert law.mean == pytest.approx(0.1)  # the theory describes the first segment
    rng = np.random.default_rng(0)
    m = 20_000
    before = np.array([law.sample_at(rng, 99.9) for _ in range(m)])
    after = np.array([law.sample_at(rng, 100.0) for _ in range(m)])
    # exponential: sd = mean, so 5 standard errors of the mean are 5 mean / sqrt(m)
    assert abs(before.mean() - 0.1) <= 5 * 0.1 / math.sqrt(m)
    assert abs(after.mean() - 0.5) <= 5 * 0.5 / math.sqrt(m)
    assert law.segment_index(100.0) == 1 and law.segment_index(0.0) == 0


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (
            {"kind": "schedule", "segments": [{"until": 50.0, "rate": 1.0},
                                              {"until": 20.0, "rate": 2.0}, {"rate": 1.0}]},
            r"service_time\.segments\[1\]\.until must be > segments\[0\]\.until = 50 "
            r"\(segments go forward in time and must not overlap\), got 20\.0",
        ),
        (
            {"kind": "schedule", "segments": [{"until": 50.0, "rate": 1.0},
                                              {"until": 50.0, "rate": 2.0}, {"rate": 1.0}]},
            r"segments\[1\]\.until must be > segments\[0\]\.until = 50",
        ),
        (
            {"kind": "schedule", "segments": [{"until": -5.0, "rate": 1.0}, {"rate": 2.0}]},
            r"segments\[0\]\.until must be > 0, got -5\.0",
        ),
        (
            {"kind": "schedule", "segments": [{"rate": 1.0}, {"rate": 2.0}]},
            r"segments\[0\]\.until is required on every segment but the last",
        ),
        (
            {"kind": "schedule", "segments": [{"until": 5.0, "rate": 1.0},
                                              {"until": 9.0, "rate": 2.0}]},
            r"segments\[1\]\.until must be left out on the last segment",
        ),
        ({"kind": "schedule", "segments": []}, r"segments must be a non-empty list"),
        (
            {"kind": "schedule", "segments": [{"until": 5.0, "rate": -1.0}, {"rate": 2.0}]},
            r"rate must be > 0, got -1\.0",
        ),
    ],
)  # fmt: skip
def test_bad_schedules_are_one_line(spec: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        ServiceTimeSpec(**spec)
    assert "\n" not in str(info.value)


def test_schedule_class_refuses_backwards_ends() -> None:
    laws = [ExponentialServiceTime(rate=1.0)] * 3
    with pytest.raises(ConfigError, match=r"ends\[1\] must be > 5 .* got 3\.0"):
        ScheduleServiceTime(segments=laws, ends=[5.0, 3.0])


def test_join_and_leave_rules() -> None:
    with pytest.raises(ConfigError, match=r"leave_time must be > join_time = 5, got 3\.0"):
        ClientSpec(join_time=5.0, leave_time=3.0)
    with pytest.raises(ConfigError, match=r"join_time must be >= 0"):
        ClientSpec(join_time=-1.0)
    with pytest.raises(ConfigError, match=r"until is only allowed inside schedule segments"):
        ClientSpec(service_time={"rate": 1.0, "until": 3.0})  # type: ignore[arg-type]


def _config(clients: list[dict[str, Any]], routing: dict[str, Any], **run: Any) -> SystemConfig:
    return SystemConfig.from_dict(
        {
            "clients": clients,
            "concurrency": 6,
            "routing": routing,
            "run": {"train": False, **run},
            "seed": 5,
        }
    )


def test_simulator_honours_the_schedule() -> None:
    """One client slows 5x at t = 100: its completions per second drop by about 5x."""
    clients = [{"service_time": {"rate": 10.0}}, {"service_time": SLOW_DOWN}]
    config = _config(clients, {"kind": "uniform"}, time_budget=400.0)
    times: list[tuple[int, float]] = []
    result = simulate(config, progress=lambda k, t: times.append((k, t)))
    # Before t = 100 both serve at 10/s (C = 6 keeps both busy): ~20 updates/s; after,
    # the slow client's queue holds most tasks and throughput tends to ~2 / p_1 ... < 20.
    early = [(k, t) for k, t in times if t <= 100.0]
    late = [(k, t) for k, t in times if t >= 200.0]
    rate_early = early[-1][0] / early[-1][1]
    rate_late = (late[-1][0] - late[0][0]) / (late[-1][1] - late[0][1])
    assert rate_early > 15.0
    assert rate_late < 0.5 * rate_early
    assert result.num_updates > 0


def test_leaving_client_gets_no_new_task_and_joining_client_none_before() -> None:
    clients = [
        {"service_time": {"rate": 5.0}},
        {"service_time": {"rate": 5.0}, "leave_time": 50.0},
        {"service_time": {"rate": 5.0}, "join_time": 100.0},
    ]
    config = _config(clients, {"kind": "uniform"}, time_budget=200.0)
    router = FixedRouter(p=[1 / 3, 1 / 3, 1 / 3])  # redrawn while it names an absent client
    result = simulate(config, router=router)
    completed = np.asarray(result.completed)
    # client 1 served at most its queue after t = 50; client 2 only after t = 100
    assert completed[1] < 0.45 * completed[0]
    assert 0.25 * completed[0] < completed[2] < 0.75 * completed[0]


def test_return_to_sender_serves_a_joining_client() -> None:
    """AsyncSGD with a client that joins at t = 100 and one that leaves at t = 50 (C = n = 3,
    every client at 5 tasks/s): a present client always holds a task, so over 200 s client
    0 completes ~1000, the leaver ~250 and the joiner ~500 (Poisson counts: sd ~3 %)."""
    clients = [
        {"service_time": {"rate": 5.0}},
        {"service_time": {"rate": 5.0}, "leave_time": 50.0},
        {"service_time": {"rate": 5.0}, "join_time": 100.0},
    ]
    config = SystemConfig.from_dict(
        {
            "clients": clients,
            "concurrency": 3,
            "routing": {"kind": "return_to_sender"},
            "algorithm": {"name": "asyncsgd"},
            "run": {"train": False, "time_budget": 200.0},
            "seed": 5,
        }
    )
    completed = np.asarray(simulate(config).completed, dtype=float)
    assert 0.15 * completed[0] < completed[1] < 0.35 * completed[0]
    assert 0.35 * completed[0] < completed[2] < 0.65 * completed[0]
    assert 800 < completed[0] < 1200


def test_presence_gaps_are_refused() -> None:
    clients = [
        {"service_time": {"rate": 5.0}, "leave_time": 10.0},
        {"service_time": {"rate": 5.0}, "join_time": 20.0},
    ]
    with pytest.raises(ConfigError, match=r"every client has left at t = 10"):
        simulate(_config(clients, {"kind": "uniform"}, time_budget=30.0))
    late = [{"service_time": {"rate": 5.0}, "join_time": 1.0}]
    with pytest.raises(ConfigError, match=r"no client is present at t = 0"):
        simulate(_config(late, {"kind": "uniform"}, time_budget=30.0))


def test_adaptive_router_in_the_simulator_learns_and_beats_uniform() -> None:
    mus = [1.0, 1.0, 1.0, 8.0, 8.0, 8.0]
    clients = [{"service_time": {"rate": m}} for m in mus]
    uniform = simulate(_config(clients, {"kind": "uniform"}, num_updates=6000))
    router = AdaptiveRouter(reoptimize_every=300)
    adaptive = simulate(_config(clients, {"kind": "uniform"}, num_updates=6000), router=router)
    assert router.routing_version >= 5
    # the estimates converge to the true rates (window of 200 durations: ~7 % sd)
    rates = router.changes[-1].rates
    assert np.all(np.abs(rates / np.array(mus) - 1.0) < 0.35)
    assert adaptive.throughput > 1.5 * uniform.throughput


def test_adaptive_training_rebinds_the_strategy() -> None:
    config = SystemConfig.from_dict(
        {
            "clients": [{"service_time": {"rate": m}} for m in (1.0, 1.0, 6.0, 6.0)],
            "concurrency": 4,
            "routing": {"kind": "adaptive", "reoptimize_every": 40},
            "algorithm": {"name": "generalized_asyncsgd", "lr": 0.05},
            "data": {"dataset": "digits"},
            "run": {"num_updates": 300, "train": True, "eval_every_updates": 150},
            "seed": 1,
        }
    )
    from raysync.strategies import make_strategy

    strategy = make_strategy(config.algorithm)
    router = AdaptiveRouter(reoptimize_every=40)
    result = simulate(config, strategy=strategy, router=router)
    p = router.routing_probabilities()
    assert router.routing_version >= 3 and not np.allclose(p, 0.25)
    steps = strategy.step_sizes  # type: ignore[attr-defined]
    assert np.allclose(steps, 0.05 / (4 * p))  # the importance weights follow the swap
    assert math.isfinite(result.final_test_accuracy)


def test_training_with_a_joining_client_and_adaptive_routing() -> None:
    """The joiner has p = 0 before it joins; the strategy's weights stay finite."""
    config = SystemConfig.from_dict(
        {
            "clients": [
                {"service_time": {"rate": 2.0}},
                {"service_time": {"rate": 2.0}},
                {"service_time": {"rate": 8.0}, "join_time": 20.0},
            ],
            "concurrency": 3,
            "routing": {"kind": "adaptive", "reoptimize_every": 50},
            "algorithm": {"name": "generalized_asyncsgd", "lr": 0.05},
            "data": {"dataset": "digits"},
            "run": {"time_budget": 60.0, "train": True, "eval_every_seconds": 30.0},
            "seed": 4,
        }
    )
    router = AdaptiveRouter(reoptimize_every=50)
    result = simulate(config, router=router)
    assert result.completed[2] > 0  # it joined and was used
    assert any(c.reason == "availability" for c in router.changes)
    assert math.isfinite(result.final_test_loss)


def test_earliest_finish_of_a_schedule_against_a_grid_of_start_times() -> None:
    """A slow first segment then a fast one: the earliest end of a service starting at or
    after ``t`` is the minimum of ``s + duration(s)`` over start times ``s >= t``, found
    here on a 0.01 s grid (deterministic segments: exact at the grid's points)."""
    law = make_service_time(ServiceTimeSpec(kind="schedule", segments=(
        ServiceTimeSpec(kind="deterministic", mean=10.0, until=5.0),
        ServiceTimeSpec(kind="deterministic", mean=1.0, until=8.0),
        ServiceTimeSpec(kind="deterministic", mean=4.0),
    )))
    rng = np.random.default_rng(0)
    grid = np.arange(0.0, 30.0, 0.01)
    ends = np.array([s + law.sample_at(rng, s) for s in grid])
    for start in (0.0, 3.0, 5.0, 6.5, 7.99, 8.0, 12.0):
        brute = float(ends[grid >= start - 1e-9].min())
        assert law.earliest_finish(start) == pytest.approx(brute, abs=1e-9), start
    assert law.shortest == 10.0  # the first segment's, like mean and variance
