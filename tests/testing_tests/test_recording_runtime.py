"""The Ray runtime calls strategy and router in the simulator's order, with its arguments."""

from __future__ import annotations

import dataclasses

import pytest

from raysync.routing import make_router
from raysync.simulation import simulate
from raysync.strategies import make_strategy
from raysync.testing.recording import (
    CallLog,
    RecordingRouter,
    RecordingStrategy,
    check_call_order,
    protocol_view,
)

from .test_recording import _config

pytestmark = pytest.mark.ray


@pytest.mark.parametrize("algorithm", ["generalized_asyncsgd", "fedbuff"])
def test_runtime_and_simulator_drive_strategy_and_router_alike(
    ray_session, tmp_path, algorithm
) -> None:
    import raysync

    config = _config(tmp_path, algorithm)
    config = config.replace(run=dataclasses.replace(config.run, time_scale=0.0))
    logs = {}
    for backend in ("simulation", "ray"):
        # The runtime ships the recorders to its server actor: the log goes through a file.
        log = CallLog(tmp_path / f"{backend}.jsonl")
        strategy = RecordingStrategy(make_strategy(config.algorithm), log)
        router = RecordingRouter(make_router(config.routing), log)
        runner = simulate if backend == "simulation" else raysync.run
        result = runner(config, strategy=strategy, router=router)
        assert result.num_updates == config.run.num_updates
        calls = log.calls()
        check_call_order(calls, concurrency=config.concurrency)
        logs[backend] = protocol_view(calls)
    sim, ray = logs["simulation"], logs["ray"]
    assert ray["binds"] == sim["binds"]  # same n, router generator state and p
    assert ray["initial_clients"] == sim["initial_clients"]
    # Random routing ignores which client finished, so the chosen clients are the same
    # sequence on both backends; only how many tasks each run dispatched may differ.
    common = min(len(sim["routes"]), len(ray["routes"]))
    assert common >= config.run.num_updates - 1
    assert ray["routes"][:common] == sim["routes"][:common]
