"""The simulator's memory per task in flight: measured, and the bound that refuses a huge ``C``.

``C`` tasks are records from the first instant of a run, so ``concurrency = 10**9`` would
need ~150 GiB; :func:`raysync.simulation.engine.check_task_memory` refuses that in one line
from :data:`~raysync.simulation.engine.SIMULATOR_TASK_BYTES`. Those constants must be upper
bounds of what a run really allocates per task (else the check lets an out-of-memory kill
through) and not wild ones (else it refuses runs that fit): both are measured here with
tracemalloc, which counts allocations (Python's and numpy's), not time, so the numbers do
not depend on the machine's load.
"""

from __future__ import annotations

import dataclasses
import tracemalloc

import pytest

from raysync.config import ServiceTimeSpec
from raysync.exceptions import ConfigError
from raysync.simulation import engine as engine_module
from raysync.simulation import simulate
from raysync.simulation.engine import SIMULATOR_TASK_BYTES
from tests.simulation_tests.test_extreme_numbers import exp, fleet


def _peak_bytes(concurrency: int, train: bool, network: bool = False) -> int:
    cfg = fleet([exp(1.0), exp(2.0), exp(4.0), exp(0.5)], concurrency, updates=50, train=train)
    if network:
        delay = ServiceTimeSpec(kind="exponential", mean=0.2)
        cfg = cfg.replace(clients=tuple(
            dataclasses.replace(c, downlink=delay, uplink=delay) for c in cfg.clients))
    tracemalloc.start()
    try:
        simulate(cfg)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("kind", "train", "network"),
    [("train", True, False), ("queue_only", False, False), ("network", True, True),
     ("network", False, True)],
    ids=["train", "queue_only", "network_train", "network_queue_only"],
)  # fmt: skip
def test_bytes_per_task_bound_what_the_simulator_allocates(
    kind: str, train: bool, network: bool
) -> None:
    # The difference of two peaks cancels what does not grow with C (the workload, the
    # model, the statistics); 100,000 extra tasks make the per-task figure exact to well
    # under a byte of what is fixed.
    small, large = 1_000, 101_000
    _peak_bytes(small, train, network)  # first: imports and caches, which must not count
    per_task = (
        _peak_bytes(large, train, network) - _peak_bytes(small, train, network)
    ) / (large - small)
    bound = SIMULATOR_TASK_BYTES[kind]
    assert bound / 4 <= per_task <= bound, (per_task, bound)


def test_a_concurrency_beyond_memory_is_refused_before_anything_is_allocated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine_module, "_memory_limit", lambda: 2**20)  # 1 MiB
    # 1 MiB / 160 bytes = 6,553 tasks with training, 32,768 queue-only
    with pytest.raises(
        ConfigError,
        match=r"^concurrency = 7,000 keeps 7,000 tasks of about 160 bytes each in the "
        r"simulator \(0.00104 GiB\), more than the 0.000977 GiB allowed",
    ):
        simulate(fleet([exp(1.0)] * 2, 7_000, updates=5, train=True))
    simulate(fleet([exp(1.0)] * 2, 7_000, updates=5, train=False))
    with pytest.raises(ConfigError, match=r"^concurrency = 40,000 keeps .* 32 bytes each"):
        simulate(fleet([exp(1.0)] * 2, 40_000, updates=5, train=False))


def test_the_largest_concurrency_a_config_accepts_is_refused_in_one_line() -> None:
    # 10**10 (config.MAX_CONCURRENCY) on this machine: hundreds of GiB of tasks.
    with pytest.raises(ConfigError, match=r"^concurrency = 10,000,000,000 keeps"):
        simulate(fleet([exp(1.0)] * 2, 10**10, updates=5, train=False))
