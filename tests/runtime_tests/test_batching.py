"""Batched executor calls (``runtime.max_batch > 1``): same per-client semantics, fewer calls.

Batching changes only how tasks travel: several tasks of different logical clients share
one remote call, and their replies come back together. Each task keeps the model version
it was created with, its minibatch seed, its place in its client's FIFO queue and its own
re-issue, so a run on a fixed schedule must be the same run bit for bit. The schedule is
fixed with the runtime's virtual clock, which without emulation applies completions in the
order their tasks were first sent (Ray may hand two replies of one executor back out of
order), so neither run depends on the machine's speed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from raysync.cli import main
from raysync.config import ModelConfig, RunConfig, RuntimeConfig, SystemConfig, dump_config
from raysync.runtime._backend import INLINE_PARAMS_BYTES, FaultPlan
from raysync.runtime._state import Key
from raysync.runtime.checkpoint import config_fingerprint, fingerprint_fields, read_checkpoint
from raysync.runtime.coordinator import _execute

from ._helpers import digits_config, exp_clients, queue_config
from .test_faults import _check_exactly_once

pytestmark = pytest.mark.ray


def _per_client(debug: dict[str, Any]) -> dict[int, list[int]]:
    """Each client's applied task ids, in the order applied."""
    orders: dict[int, list[int]] = {}
    for task_id, client, _start, _end in debug["services"]:
        orders.setdefault(client, []).append(task_id)
    return orders


@pytest.mark.parametrize(
    ("model", "updates", "by_ref"),
    [
        (ModelConfig(name="logreg"), 150, False),  # 2.6 kB: models travel inline
        (ModelConfig(name="mlp", hidden=(512,)), 60, True),  # 154 kB: one object-store ref
    ],
    ids=["inline", "object-store"],
)
def test_batched_calls_give_the_unbatched_run_bit_for_bit(
    ray_session,  # noqa: ANN001
    model: ModelConfig,
    updates: int,
    by_ref: bool,
) -> None:
    # Training on digits, 4 clients, C = 8: clients queue tasks behind their task in
    # service (FIFO is exercised) and each of the 2 executors holds about 4 tasks, which
    # a max_batch of 3 splits into calls of 1-3 (tasks of one version share its model).
    base = digits_config(updates, eval_every_updates=None).replace(concurrency=8, model=model)
    assert base.num_clients == 4
    runs = {}
    for max_batch in (1, 3):
        config = base.replace(
            runtime=RuntimeConfig(mode="pool", executors_per_tier=2, max_batch=max_batch)
        )
        runs[max_batch] = _execute(config, record=True, virtual_clock=True)
    (one, one_outcome), (many, many_outcome) = runs[1], runs[3]
    applied = _check_exactly_once(one, updates)
    assert _check_exactly_once(many, updates) == applied
    debug_one, debug_many = one.extras["debug"], many.extras["debug"]
    assert _per_client(debug_many) == _per_client(debug_one)
    assert len(_per_client(debug_one)) == 4
    # Staleness of every applied task, and the running statistics built from it.
    assert debug_many["delays"] == debug_one["delays"]
    assert max(debug_one["delays"]) > 0
    assert many.mean_staleness == one.mean_staleness
    assert one_outcome.final_params is not None and many_outcome.final_params is not None
    assert (one_outcome.final_params.nbytes >= INLINE_PARAMS_BYTES) is by_ref
    assert np.array_equal(many_outcome.final_params, one_outcome.final_params)
    assert many.final_test_loss == one.final_test_loss
    # Unbatched: one call per task sent (every update's task, plus some still in flight).
    assert one.extras["executor_calls"] >= updates
    # Batched: the 8 first tasks leave in one call per executor (3 + 1 each at most).
    assert many.extras["executor_calls"] <= one.extras["executor_calls"] - 4


@pytest.mark.parametrize("num_cpus", [0.25, 2.0], ids=["plain-executor", "async-executor"])
def test_a_call_carries_several_tasks(ray_session, num_cpus: float) -> None:  # noqa: ANN001
    # One executor, C = 8, no emulation: it holds 8 tasks in at most 2 calls, and the
    # replacements created by one call's replies leave together, so calls carry ~4 tasks.
    # An executor with one compute thread is a plain actor (SyncExecutorActor); with 2
    # CPUs it is the async ExecutorActor with a compute pool: both serve batched calls.
    config = queue_config((0.01,) * 8, None, 8, 400, seed=3, time_scale=0.0)
    config = config.replace(
        clients=exp_clients((0.01,) * 8, num_cpus=num_cpus),
        runtime=RuntimeConfig(mode="pool", executors_per_tier=1, max_batch=8),
    )
    result, _ = _execute(config, record=True)
    _check_exactly_once(result, 400)
    calls = result.extras["executor_calls"]
    assert 0 < calls < 400 / 2, calls


def test_emulated_runs_call_once_per_task(ray_session) -> None:  # noqa: ANN001
    # A batch would hold each emulated reply until the batch's last wait ends: emulated
    # runs ignore max_batch (one call per task sent).
    config = queue_config((0.01,) * 4, None, 4, 200, seed=3, time_scale=1.0)
    config = config.replace(runtime=RuntimeConfig(mode="pool", executors_per_tier=1, max_batch=8))
    result, _ = _execute(config, record=True)
    _check_exactly_once(result, 200)
    assert result.extras["executor_calls"] >= 200


def test_killed_executor_holding_a_batch_loses_and_duplicates_nothing(ray_session) -> None:  # noqa: ANN001
    # Uniform routing, 8 clients, C = 8: the first tasks of distinct clients leave as one
    # call per executor (the least loaded takes each task, so they alternate) and task 2's
    # executor exits on receiving it, losing its whole call (with seed 1: 3 tasks). Each
    # lost task must be re-issued once, the executor restarted, and every task applied
    # exactly once. The run cannot end before Ray reports the loss: replacements routed
    # to a client whose task is lost queue behind it, and all 8 tasks end up there
    # within a few dozen updates.
    config = queue_config((0.01,) * 8, None, 8, 600, seed=1, time_scale=0.0)
    config = config.replace(runtime=RuntimeConfig(mode="pool", executors_per_tier=2, max_batch=4))
    result, _ = _execute(config, faults=FaultPlan(exit_on_tasks=frozenset({2})), record=True)
    applied = _check_exactly_once(result, 600)
    assert 2 in applied
    assert result.extras["actor_restarts"] == 1
    assert result.extras["reissued_tasks"] >= 2  # the whole call, not the one task
    assert result.extras["duplicates_dropped"] == 0


def test_a_straggler_in_a_batch_is_reissued_alone_and_applied_once(ray_session) -> None:  # noqa: ANN001
    # Task 20's first attempt stalls its executor 3 s (a batched call runs its tasks one
    # after another, as an unbatched executor runs its queued calls): it and every task
    # waiting behind it, in the same call, a later call or the executor's outbox, time out
    # after 1 s and are re-issued each once to the other executor. Each id is applied
    # once; copies that come back later are dropped.
    config = queue_config((0.01,) * 8, None, 8, 1500, seed=4, time_scale=0.0)
    config = config.replace(
        run=RunConfig(num_updates=1500, train=False, time_scale=0.0, task_timeout=1.0),
        runtime=RuntimeConfig(mode="pool", executors_per_tier=2, max_batch=4),
    )
    result, _ = _execute(config, faults=FaultPlan(delay_tasks={20: 3.0}), record=True)
    applied = _check_exactly_once(result, 1500)
    assert 20 in applied
    assert result.extras["timed_out_tasks"] >= 1
    assert result.extras["reissued_tasks"] == result.extras["timed_out_tasks"]
    assert result.extras["actor_restarts"] == 0


@pytest.mark.parametrize("value", ["0", "-2", "1.5", '"4"'])
def test_bad_max_batch_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    path = tmp_path / "system.toml"
    dump_config(queue_config((0.01, 0.02), None, 2, 100), path)
    text = path.read_text()
    assert "max_batch = 1" in text
    path.write_text(text.replace("max_batch = 1", f"max_batch = {value}"))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "runtime.max_batch must be an integer" in err and value.strip('"') in err, err


def test_unsent_batched_tasks_are_checkpointed_and_resumed(ray_session, tmp_path: Path) -> None:  # noqa: ANN001
    # A checkpoint is captured while the loop applies an update, after the replacement
    # task was created and before the step ends: with batched calls that task is still
    # in its executor's outbox (sent only when the step ends). It must be saved as
    # pending like any task not applied, and the resumed run must apply it exactly once.
    ckpt = tmp_path / "ckpt"

    def config(num_updates: int) -> SystemConfig:
        base = queue_config((0.01,) * 8, None, 8, num_updates, seed=2, time_scale=0.0)
        return base.replace(
            run=RunConfig(
                num_updates=num_updates,
                train=False,
                time_scale=0.0,
                checkpoint_every_updates=50,
                checkpoint_dir=str(ckpt),
            ),
            runtime=RuntimeConfig(mode="pool", executors_per_tier=2, max_batch=4),
        )

    first, _ = _execute(config(100), record=True)
    state = read_checkpoint(
        ckpt,
        fingerprint=config_fingerprint(config(100), None),
        fields=fingerprint_fields(config(100), None),
    ).state
    pending = sorted(int(t) for t in state[Key.PENDING]["task_id"])
    ids = first.extras["task_ids"]
    assert pending == ids["pending"]
    assert len(pending) == 8  # C tasks exist at every instant, sent or not
    assert ids["next"] - 1 in pending  # the replacement created in the checkpoint's step
    second, _ = _execute(config(200), resume_from=ckpt, record=True)
    assert second.extras["resumed_tasks"] == 8
    applied = [
        *first.extras["debug"]["applied_task_ids"],
        *second.extras["debug"]["applied_task_ids"],
    ]
    assert len(applied) == len(set(applied)) == 200
    ids = second.extras["task_ids"]
    assert sorted([*applied, *ids["pending"]]) == list(range(ids["next"]))
