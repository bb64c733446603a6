"""Executors that crash mid-task and stragglers: the run still applies every task once.

Faults are injected with :class:`~raysync.runtime._backend.FaultPlan`: the executor that
receives a listed task id (first attempt) calls ``os._exit`` at once, so the task and every
other task in flight on that executor are lost with ``RayActorError``; a delayed task
stalls long past ``run.task_timeout``.
"""

from __future__ import annotations

import pytest

from raysync.config import RunConfig, RuntimeConfig
from raysync.runtime._backend import FaultPlan
from raysync.runtime.coordinator import _execute

from ._helpers import digits_config, queue_config

pytestmark = pytest.mark.ray

COUNTERS = ("reissued_tasks", "timed_out_tasks", "duplicates_dropped", "actor_restarts")


def _check_exactly_once(result, num_updates: int) -> list[int]:  # noqa: ANN001
    """Exactly ``num_updates`` updates, every created task applied once or still pending."""
    applied = result.extras["debug"]["applied_task_ids"]
    ids = result.extras["task_ids"]
    assert result.num_updates == num_updates
    assert len(applied) == len(set(applied)) == result.num_completions
    assert sorted([*applied, *ids["pending"]]) == list(range(ids["next"]))
    return applied


@pytest.mark.parametrize("mode", ["pool", "per_client"])
def test_killed_executor_is_restarted_and_its_tasks_reissued(ray_session, mode: str) -> None:  # noqa: ANN001
    config = queue_config((0.01, 0.01, 0.01, 0.01), None, 4, 400, seed=1)
    config = config.replace(runtime=RuntimeConfig(mode=mode, executors_per_tier=2))
    result, _ = _execute(config, faults=FaultPlan(exit_on_tasks=frozenset({40, 200})), record=True)
    _check_exactly_once(result, 400)
    assert result.extras["runtime_mode"] == mode
    assert result.extras["actor_restarts"] == 2
    assert result.extras["reissued_tasks"] >= 2  # the crashing tasks, and any beside them
    assert result.extras["timed_out_tasks"] == 0


def test_training_survives_a_crash_with_the_same_model(ray_session) -> None:  # noqa: ANN001
    # Without emulation and with C = 1 the schedule is deterministic, and a re-issued task
    # draws the same minibatch: the crash must not change the trained model at all.
    config = digits_config(120, eval_every_updates=None)
    config = config.replace(concurrency=1, runtime=RuntimeConfig(mode="pool", executors_per_tier=2))
    clean, _ = _execute(config, record=True)
    crashed, _ = _execute(config, faults=FaultPlan(exit_on_tasks=frozenset({60})), record=True)
    assert _check_exactly_once(crashed, 120) == list(range(120))
    assert crashed.extras["actor_restarts"] == 1
    assert crashed.final_test_loss == clean.final_test_loss
    assert crashed.final_test_accuracy == clean.final_test_accuracy


def test_straggler_is_reissued_and_its_late_duplicate_dropped(ray_session) -> None:  # noqa: ANN001
    config = queue_config((0.01, 0.01, 0.01, 0.01), None, 4, 2000, seed=2)
    config = config.replace(
        run=RunConfig(num_updates=2000, train=False, time_scale=1.0, task_timeout=1.0),
        runtime=RuntimeConfig(mode="pool", executors_per_tier=2),
    )
    # Task 50's first attempt stalls 3 s: the 1 s timeout re-issues it, the copy is
    # applied, and the stalled original comes back ~2 s later. The run lasts at least 5 s
    # (2,000 emulated services of 10 ms, 4 at a time), so the original returns before
    # the end; a 1 s timeout is 100 service times, which no other task comes near even
    # on a loaded machine.
    result, _ = _execute(config, faults=FaultPlan(delay_tasks={50: 3.0}), record=True)
    applied = _check_exactly_once(result, 2000)
    assert 50 in applied
    assert result.extras["timed_out_tasks"] == 1
    assert result.extras["reissued_tasks"] == 1
    assert result.extras["duplicates_dropped"] == 1
    assert result.extras["actor_restarts"] == 0


def test_restarted_pool_executor_returns_to_rotation(ray_session) -> None:  # noqa: ANN001
    # Two executors serve four clients; task 40 kills one of them about 0.1 s into a
    # ~15 s run. Once Ray has restarted it and it answers the server's probe, it must
    # take its share of the tasks again (it used to stay "suspect" and idle).
    config = queue_config((0.01, 0.01, 0.01, 0.01), None, 4, 6000, seed=4)
    config = config.replace(runtime=RuntimeConfig(mode="pool", executors_per_tier=2))
    result, _ = _execute(config, faults=FaultPlan(exit_on_tasks=frozenset({40})), record=True)
    _check_exactly_once(result, 6000)
    assert result.extras["actor_restarts"] == 1
    assert result.extras["executors_dead"] == 0
    debug = result.extras["debug"]
    assert len(debug["rejoined"]) == 1
    executor, applied_then = debug["rejoined"][0]
    after = debug["executors"][applied_then:]
    # Least-loaded dispatch between two equal executors: each takes about half. The
    # kill happens within the first 1 % of the run, and a restart takes seconds, so
    # thousands of tasks remain after the return.
    assert len(after) >= 1000, "the executor came back too late to judge"
    share = after.count(executor) / len(after)
    assert 0.25 < share < 0.75, share


def test_every_restart_is_counted(ray_session) -> None:  # noqa: ANN001
    # All 8 executors (one per client) are killed twice: at their clients' 3rd and 12th
    # task. Ray restarts each twice: 16 restarts, whether or not the server noticed them
    # one by one (it used to count 9).
    config = queue_config((0.01,) * 8, None, 8, 800, seed=5)
    config = config.replace(runtime=RuntimeConfig(mode="per_client"))
    kills = frozenset((client, k) for client in range(8) for k in (3, 12))
    result, _ = _execute(config, faults=FaultPlan(exit_on_ordinals=kills), record=True)
    _check_exactly_once(result, 800)
    assert result.extras["actor_restarts"] == 16
    assert result.extras["reissued_tasks"] >= 16
    assert result.extras["executors_dead"] == 0


def test_pool_without_restarts_counts_none_and_says_when_executors_run_out(
    ray_session,  # noqa: ANN001
) -> None:
    from raysync.exceptions import RuntimeFailure

    config = queue_config((0.01, 0.01, 0.01, 0.01), None, 4, 600, seed=6)
    config = config.replace(
        runtime=RuntimeConfig(mode="pool", executors_per_tier=2, max_restarts=0)
    )
    # One of two executors dies for good: its tasks move to the other, nothing restarts.
    result, _ = _execute(config, faults=FaultPlan(exit_on_tasks=frozenset({40})), record=True)
    _check_exactly_once(result, 600)
    assert result.extras["actor_restarts"] == 0
    assert result.extras["executors_dead"] == 1
    # Both die: the run ends with one line naming the cause and the fixes.
    with pytest.raises(RuntimeFailure) as info:
        _execute(config, faults=FaultPlan(exit_on_tasks=frozenset({40, 200})))
    message = str(info.value)
    assert "\n" not in message
    assert "all 2 executor(s) of tier 0" in message
    assert "runtime.max_restarts = 0 restarts per executor are used up" in message
    assert "0 restarts in this run" in message
