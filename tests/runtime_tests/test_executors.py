"""The two executor kinds answer a task identically (issue 17: the runtime's speed).

Without emulation an executor with one compute thread is a plain Ray actor
(:class:`~raysync.runtime.actors.SyncExecutorActor`) instead of the async one; the choice
must not change any result: the same task on the same model gives the same bits.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import ray

from raysync.runtime._backend import TaskSpec, reply_from_wire
from raysync.runtime.actors import ExecutorActor, ExecutorSetup, SyncExecutorActor
from raysync.strategies import make_strategy
from raysync.workload import build_workload

from ._helpers import digits_config

#: Actor start-up limit: a hang guard on a loaded machine, not a speed test.
STARTUP = 900.0


def test_the_sync_executor_refuses_emulation() -> None:
    setup = ExecutorSetup(
        executor_id=0, tier=0, client=None, num_cpus=1, num_gpus=0, time_scale=1.0,
        train=False, seed=0,
    )  # fmt: skip
    with pytest.raises(ValueError, match="time_scale must be 0, got 1.0"):
        SyncExecutorActor(setup)


@pytest.mark.ray
def test_sync_and_async_executors_give_bit_identical_replies(ray_session) -> None:  # noqa: ANN001
    config = digits_config(10)
    workload = build_workload(config)
    x, y = workload.split("train")
    tiers = np.zeros(config.num_clients, dtype=np.int64)
    shared = [ray.put((x, y, workload.client_indices, tiers))]
    setup = ExecutorSetup(
        executor_id=0,
        tier=0,
        client=None,
        num_cpus=0.25,
        num_gpus=0.0,
        time_scale=0.0,
        train=True,
        seed=config.seed,
        model=workload.model,
        work=make_strategy(config.algorithm).client_work(),
    )
    actors = [
        ray.remote(ExecutorActor).options(num_cpus=0).remote(setup),
        ray.remote(SyncExecutorActor).options(num_cpus=0, max_concurrency=1).remote(setup),
    ]
    try:
        ray.get([a.prepare.remote(shared) for a in actors], timeout=STARTUP)
        params = np.asarray(workload.initial_params, dtype=np.float32)
        # tasks of two clients, the second client's at its third ordinal (its own stream)
        tasks = [
            TaskSpec(7, 1, 0, 0, 0.0, 0.0, math.nan, 0),
            TaskSpec(8, 3, 0, 0, 0.0, 0.0, math.nan, 2),
        ]
        replies = [
            [
                reply_from_wire(r)
                for r in ray.get(
                    [a.submit.remote(tuple(t), params) for t in tasks], timeout=STARTUP
                )
            ]
            for a in actors
        ]
    finally:
        for actor in actors:
            ray.kill(actor)
    for got_async, got_sync in zip(*replies, strict=True):
        assert got_async.task_id == got_sync.task_id and got_async.client_id == got_sync.client_id
        np.testing.assert_array_equal(got_async.payload, got_sync.payload)
        assert got_async.loss == got_sync.loss
        assert got_async.num_samples == got_sync.num_samples == config.algorithm.batch_size
        for reply in (got_async, got_sync):
            # stamps on one clock, in order: received <= started <= finished <= returned
            assert reply.received_at <= reply.started_at <= reply.finished_at <= reply.returned_at
    # different clients (and ordinals) draw different minibatches: the check can fail
    assert not np.array_equal(replies[0][0].payload, replies[0][1].payload)
