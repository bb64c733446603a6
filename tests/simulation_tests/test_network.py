"""The simulator with communication delays and a server station against the theory.

Acceptance of issue 15: with exponential service, delays and server times, the simulator's
99% batch-means intervals contain the closed-network prediction (docs/network.md) for the
throughput and every client's mean staleness, on five networks. Seeds were fixed before
the first run (seed 1 everywhere). 60,000 updates per network: the slowest-visited client
still completes several thousand tasks, so its interval is a few percent wide.
"""

from __future__ import annotations

import numpy as np
import pytest

from raysync.config import (
    AlgorithmConfig,
    ClientSpec,
    DataConfig,
    PowerSpec,
    RoutingConfig,
    RunConfig,
    ServerConfig,
    ServiceTimeSpec,
    SystemConfig,
)
from raysync.objectives.energy import measured_energy, predict_energy
from raysync.queueing import predict
from raysync.simulation import simulate


def _exp(rate: float | None) -> ServiceTimeSpec | None:
    return None if rate is None else ServiceTimeSpec(kind="exponential", rate=rate)


def _network(
    mu: tuple[float, ...],
    p: tuple[float, ...] | None,
    concurrency: int,
    down: tuple[float | None, ...],
    up: tuple[float | None, ...],
    server: float | None,
    *,
    updates: int = 60_000,
) -> SystemConfig:
    rtr = p is None
    return SystemConfig(
        clients=tuple(
            ClientSpec(
                service_time=ServiceTimeSpec(rate=m),
                downlink=_exp(d),
                uplink=_exp(u),
                power=PowerSpec(busy="10 W", idle="1 W", transfer="0.2 J"),
            )
            for m, d, u in zip(mu, down, up, strict=True)
        ),
        concurrency=len(mu) if rtr else concurrency,
        routing=RoutingConfig(kind="return_to_sender") if rtr else RoutingConfig(kind="fixed", p=p),
        algorithm=AlgorithmConfig(name="asyncsgd" if rtr else "generalized_asyncsgd"),
        run=RunConfig(num_updates=updates, train=False),
        server=None
        if server is None
        else ServerConfig(update_time=_exp(server), power=PowerSpec(busy="30 W", idle="5 W")),
        seed=1,
    )


NETWORKS = {
    "worked-example+links+server": _network(
        (1.0, 2.0, 4.0, 0.5), (0.4, 0.3, 0.2, 0.1), 6, (2.0, 4.0, None, 1.0),
        (3.0, None, 5.0, 2.0), 5.0,
    ),
    "slow-server-bottleneck": _network(
        (2.0, 3.0, 5.0), (0.3, 0.3, 0.4), 8, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), 2.0
    ),
    "downlink-only-no-server": _network(
        (1.0, 2.0, 4.0), (0.5, 0.3, 0.2), 4, (0.5, 2.0, 8.0), (None, None, None), None
    ),
    "server-only": _network(
        (1.0, 1.5, 3.0, 6.0), (0.25, 0.25, 0.25, 0.25), 5, (None,) * 4, (None,) * 4, 4.0
    ),
    "return-to-sender+links": _network(
        (1.0, 2.0, 4.0), None, 3, (2.0, 1.0, None), (1.0, None, 3.0), None
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(NETWORKS))
def test_simulator_within_its_99_percent_ci_of_the_theory(name: str) -> None:
    config = NETWORKS[name]
    theory = predict(config)
    sim = simulate(config)
    assert sim.warnings == ()
    low, high = sim.throughput_ci
    assert low <= theory.throughput <= high, (theory.throughput, (low, high))
    for i, expected in enumerate(theory.mean_relative_delay):
        lo, hi = sim.relative_delay_ci[i]
        assert lo <= expected <= hi, (i, expected, (lo, hi))
    # Utilisations (and so energy) agree to a few percent at this run length.
    np.testing.assert_allclose(sim.utilization, theory.utilization, rtol=0.05)
    theory_energy = predict_energy(config, theory)
    assert measured_energy(config, sim).power == pytest.approx(theory_energy.power, rel=0.03)
    if config.server is not None:
        assert sim.extras["server_utilization"] == pytest.approx(
            theory.server_utilization, rel=0.03
        )


def test_deterministic_single_task_cycle_is_exact() -> None:
    # C = 1, one client, every leg deterministic: one update per 0.25 + 1 + 0.5 + 0.125 s.
    det = lambda mean: ServiceTimeSpec(kind="deterministic", mean=mean)  # noqa: E731
    config = SystemConfig(
        clients=(ClientSpec(service_time=det(1.0), downlink=det(0.25), uplink=det(0.5)),),
        concurrency=1,
        run=RunConfig(num_updates=40, train=False),
        server=ServerConfig(update_time=det(0.125)),
    )
    sim = simulate(config)
    assert sim.elapsed == pytest.approx(40 * 1.875)
    assert sim.num_updates == 40
    assert sim.throughput == pytest.approx(1 / 1.875)
    assert sim.utilization[0] == pytest.approx(1 / 1.875)
    assert sim.extras["server_utilization"] == pytest.approx(0.125 / 1.875)
    np.testing.assert_array_equal(sim.mean_relative_delay, [0.0])


def test_delays_leave_the_service_streams_unchanged() -> None:
    # The delay streams have their own generators: the same seed serves the same tasks.
    base = _network((1.0, 2.0), (0.5, 0.5), 1, (None, None), (None, None), None, updates=200)
    slow = _network((1.0, 2.0), (0.5, 0.5), 1, (None, None), (None, None), 1e6, updates=200)
    a, b = simulate(base), simulate(slow)
    np.testing.assert_array_equal(a.completed, b.completed)
    assert b.elapsed == pytest.approx(a.elapsed, rel=1e-3)


@pytest.mark.slow  # builds a torch workload (tens of seconds on a loaded 2-core machine)
def test_training_with_delays_follows_the_queue_only_events() -> None:
    config = NETWORKS["worked-example+links+server"].replace(
        run=RunConfig(num_updates=150, train=True, eval_every_updates=None),
        algorithm=AlgorithmConfig(name="generalized_asyncsgd", lr=0.1, batch_size=8),
        data=DataConfig(dataset="digits", max_train_samples=400),
    )
    trained = simulate(config)
    queue = simulate(config, queue_only=True)
    np.testing.assert_array_equal(trained.completed, queue.completed)
    np.testing.assert_array_equal(trained.mean_relative_delay, queue.mean_relative_delay)
    assert trained.elapsed == queue.elapsed
    assert np.isfinite(trained.final_test_accuracy)
