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


def test_nonstationary_fleets_are_refused_on_ray_in_one_line() -> None:
    with pytest.raises(ConfigError, match=r"clients\[0\]: .*simulator only") as info:
        _execute(_config(leave_time=5.0), virtual_clock=True)
    assert "\n" not in str(info.value)
