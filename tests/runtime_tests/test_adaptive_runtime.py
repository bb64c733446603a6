"""The adaptive router on Ray: observed (emulated) service times reach it and it re-routes.

Four clients with emulated exponential service (means 0.2, 0.2, 0.025, 0.025 s, so rates
5, 5, 40, 40), ``C = 4``, on the runtime's virtual clock (completions in the order of their
emulated ends, independent of the machine's load). The router starts uniform; from the
estimates it routes most tasks to the two fast clients, so their share of completions rises
from the uniform 50 % to the optimum's ~80 % (the bound's optimum for these rates,
computed in the test).
"""

from __future__ import annotations

import numpy as np
import pytest

from raysync.config import ClientSpec, RoutingConfig, RunConfig, ServiceTimeSpec, SystemConfig
from raysync.exceptions import ConfigError
from raysync.runtime.coordinator import _execute


def _config(**client: object) -> SystemConfig:
    means = (0.2, 0.2, 0.025, 0.025)
    return SystemConfig(
        clients=tuple(
            ClientSpec(
                service_time=ServiceTimeSpec(kind="exponential", mean=m), num_cpus=0.25, **client
            )  # type: ignore[arg-type]
            for m in means
        ),  # fmt: skip
        concurrency=4,
        routing=RoutingConfig(kind="adaptive", reoptimize_every=50),
        run=RunConfig(num_updates=1500, train=False, time_scale=1.0),
        seed=2,
    )


@pytest.mark.ray
def test_adaptive_router_learns_on_ray(ray_session) -> None:  # noqa: ANN001
    from raysync.objectives import BoundObjective, ProblemConstants, optimize_routing

    result, _ = _execute(_config(), virtual_clock=True)
    share = np.asarray(result.completed, dtype=float)
    fast = share[2:].sum() / share.sum()
    target = optimize_routing(
        BoundObjective(mu=np.array([5.0, 5.0, 40.0, 40.0]),
                       constants=ProblemConstants(L=1, sigma2=1, M2=0, A=1), time_budget=1000.0),
        concurrency=4,
    ).p[2:].sum()  # fmt: skip
    assert target > 0.7
    # Uniform routing would give 0.5 (each client completes p_i Lambda tasks); the first
    # 50 updates are uniform, then the optimum (1 % explored) takes over.
    assert fast > 0.5 + 0.6 * (target - 0.5), (fast, target)


@pytest.mark.ray
@pytest.mark.parametrize("routing", ["uniform", "return_to_sender"])
def test_join_and_leave_on_ray(ray_session, routing: str) -> None:  # noqa: ANN001
    """Client 1 leaves at t = 5 s, client 3 joins at t = 10 s (config seconds); uniform
    routing conditioned on presence, or AsyncSGD's return to sender (the joiner takes a
    task from a client holding two). Expected completions over the ~20 s run (each client
    at most 5-40/s): the leaver serves only what it was sent before 5 s, the joiner only
    after 10 s; the runtime's counts agree with the simulator's on the same config within
    25 %."""
    from raysync.simulation import simulate

    means = (0.2, 0.2, 0.025, 0.025)
    times = ({}, {"leave_time": 5.0}, {}, {"join_time": 10.0})
    config = SystemConfig(
        clients=tuple(
            ClientSpec(service_time=ServiceTimeSpec(kind="exponential", mean=m), num_cpus=0.25, **t)  # type: ignore[arg-type]
            for m, t in zip(means, times, strict=True)
        ),  # fmt: skip
        concurrency=4,
        routing=RoutingConfig(kind=routing),  # type: ignore[arg-type]
        run=RunConfig(time_budget=20.0, train=False, time_scale=0.5),
        seed=6,
    )
    result, _ = _execute(config, virtual_clock=True)
    sim = simulate(config)
    done, expected = np.asarray(result.completed), np.asarray(sim.completed)
    assert done[3] > 0 and done[1] < 0.5 * done[0]
    assert np.all(np.abs(done - expected) <= 0.25 * expected + 10), (done, expected)


def _slowing(num_updates: int, time_scale: float) -> SystemConfig:
    """Two clients at 20 tasks/s that both become 5x slower at t = 10 s."""
    sched = ServiceTimeSpec(
        kind="schedule",
        segments=(ServiceTimeSpec(kind="exponential", rate=20.0, until=10.0),
                  ServiceTimeSpec(kind="exponential", rate=4.0)),
    )  # fmt: skip
    return SystemConfig(
        clients=(ClientSpec(service_time=sched), ClientSpec(service_time=sched)),
        concurrency=2,
        routing=RoutingConfig(kind="uniform"),
        run=RunConfig(num_updates=num_updates, train=False, time_scale=time_scale),
        seed=4,
    )


@pytest.mark.ray
def test_schedule_is_emulated_on_ray(ray_session) -> None:  # noqa: ANN001
    """Throughput 26.7/s (C = 2, two clients at 20/s, uniform) for 10 s, then 5.3/s: 600
    updates take ~10 + 333 / 5.33 = 72 s, against 22.5 s without the slow-down. On Ray a
    duration is drawn from the segment in force at dispatch (not at service start), a
    difference of one task per client at the change."""
    from raysync.simulation import simulate

    config = _slowing(600, 0.2)
    result, _ = _execute(config, virtual_clock=True)
    sim = simulate(config)
    assert result.num_updates == 600
    elapsed = result.elapsed / 0.2  # the runtime reports wall seconds: back to config seconds
    assert elapsed == pytest.approx(sim.elapsed, rel=0.15), (elapsed, sim.elapsed)
    assert elapsed > 2.0 * 600 / 26.7
    with pytest.raises(ConfigError, match=r"schedule service time is emulated on Ray"):
        _execute(_slowing(10, 0.0), virtual_clock=True)


def test_zero_duration_completion_keeps_the_router_tracking_tasks_in_service() -> None:
    """A completion whose timer step is zero is still observed (floored at the clock's
    resolution), so the router's route/observe pairing, and with it the in-service ages,
    survive it. No Ray needed: ``ServerActor._observe`` on a stand-in server."""
    from types import SimpleNamespace

    from raysync.routing.adaptive import AdaptiveRouter
    from raysync.runtime._backend import TaskReply
    from raysync.runtime.actors import ServerActor

    router = AdaptiveRouter(reoptimize_every=1000)
    router.bind(2, np.random.default_rng(0))
    first = router.initial_clients(2)
    server = SimpleNamespace(
        _router=router,
        _config=SimpleNamespace(run=SimpleNamespace(time_scale=0.0)),
        _rebind_strategy=lambda: None,
    )
    nan = float("nan")
    reply = TaskReply(0, first[0], 0, 0, None, nan, 0, 0.0, 0.0, 5.0, 5.0, nan, nan)
    ServerActor._observe(server, first[0], reply, 5.0)  # type: ignore[arg-type]
    router.route(first[0])
    ages = router.in_service_ages(6.0)
    assert ages is not None, "the zero-length completion stopped the in-service bookkeeping"
    assert router.estimator is not None
    assert router.estimator.counts()[first[0]] == 1
    assert np.all(ages >= 0) and ages.max() > 0
