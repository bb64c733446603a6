"""Time-like [run] fields the wall clock cannot honour are refused before Ray starts."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from raysync.cli import main
from raysync.config import dump_config
from raysync.exceptions import ConfigError
from raysync.runtime.coordinator import _execute

from ._helpers import RayStarted, block_ray, digits_config, queue_config


@pytest.fixture(autouse=True)
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    block_ray(monkeypatch)


def _queue(**run: Any):  # noqa: ANN202
    config = queue_config((0.01, 0.02), None, 2, 100)
    return config.replace(run=dataclasses.replace(config.run, **run))


@pytest.mark.parametrize(
    ("run", "match"),
    [
        (
            {"num_updates": None, "time_budget": 1e308},
            r"run.time_budget = 1e\+308 config seconds x run.time_scale = 1 is 1e\+308 wall "
            r"seconds, more than the 1e\+09",
        ),
        (
            {"time_budget": 1e308, "time_scale": 10.0},
            r"run.time_budget = 1e\+308 config seconds x run.time_scale = 10 overflows the clock",
        ),
        (
            {"task_timeout": 1e308, "time_scale": 10.0},
            r"run.task_timeout = 1e\+308 config seconds x run.time_scale = 10 overflows",
        ),
        (
            {"task_timeout": 2e9, "time_scale": 0.0},
            r"run.task_timeout = 2e\+09 config seconds is 2e\+09 wall seconds, .* or leave it out",
        ),
        (
            {"eval_every_seconds": 1e308, "time_scale": 10.0},
            r"run.eval_every_seconds = 1e\+308 config seconds x run.time_scale = 10 overflows",
        ),
    ],
    ids=["budget-too-long", "budget-overflow", "timeout-overflow", "timeout-too-long", "eval"],
)
def test_time_fields_beyond_the_clock_are_refused(run: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        _execute(_queue(**run))
    assert "\n" not in str(info.value)


def test_too_many_evaluations_are_refused() -> None:
    config = digits_config(100, eval_every_updates=None)
    config = config.replace(
        run=dataclasses.replace(config.run, time_budget=10.0, eval_every_seconds=1e-300)
    )
    with pytest.raises(ConfigError, match=r"run.eval_every_seconds = 1e-300 s asks for up to"):
        _execute(config)


def test_long_but_finite_runs_pass_the_checks() -> None:
    with pytest.raises(RayStarted):
        _execute(_queue(num_updates=None, time_budget=1e8, task_timeout=1e8))


def test_cli_refuses_in_one_line(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    path = tmp_path / "big.toml"
    dump_config(_queue(num_updates=None, time_budget=1e308), path)
    assert main(["run", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run.time_budget = 1e+308" in err[0], err


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        # truthy but not True: it replaced a checkpoint the user meant to keep
        ({"overwrite_checkpoint": "no"}, r"^overwrite_checkpoint must be True or False, got 'no'$"),
        ({"address": 6379}, r"^address must be None or a Ray address string .*got 6379$"),
        ({"address": "   "}, r"^address must be None or a Ray address string"),
        ({"logdir": ""}, r"^logdir must be None or a non-blank directory path, got ''$"),
        ({"logdir": 5}, r"^logdir must be None or a non-blank directory path, got 5$"),
        ({"logdir": "FILE"}, r"logdir"),
        ({"resume_from": 3}, r"^resume_from must be None or a non-blank directory path"),
        ({"resume_from": ""}, r"^resume_from must be None or a non-blank directory path"),
        ({"startup_timeout": -1.0}, r"^startup_timeout must be > 0, got -1\.0$"),
        ({"startup_timeout": float("nan")}, r"^startup_timeout must be finite, got nan$"),
        ({"poll_interval": float("inf")}, r"^poll_interval must be finite, got inf$"),
        ({"server_num_cpus": -1}, r"^server_num_cpus must be >= 0"),
        ({"server_num_cpus": 1e-5}, r"^server_num_cpus must be 0 or at least 0\.0001"),
        ({"num_batches": "30"}, r"^num_batches must be an integer >= 2, got '30'$"),
        ({"warmup_fraction": "0.1"}, r"^warmup_fraction must be a number, got '0\.1'$"),
        ({"sinks": [1]}, r"^sinks\[0\] must be a MetricsSink, got 1$"),
        ({"sinks": "tb"}, r"^sinks must be a sequence of MetricsSink"),
        ({"progress": 5}, r"^progress must be None or a callable, got 5$"),
        ({"run_name": ""}, r"^run_name must be None or a non-blank directory name"),
        ({"router": "fixed"}, r"^router must be None or a BaseRouter, got 'fixed'$"),
    ],
)
def test_run_refuses_bad_arguments_before_ray_starts(
    kwargs: dict[str, Any], match: str, tmp_path: Any
) -> None:
    import raysync

    if kwargs.get("logdir") == "FILE":
        (tmp_path / "f").write_text("x")
        kwargs = {"logdir": tmp_path / "f"}
    with pytest.raises(ConfigError, match=match):
        raysync.run(_queue(), **kwargs)


def test_a_concurrency_beyond_the_servers_memory_is_refused_before_ray_starts(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # 10**10 (the largest concurrency a config accepts): the server would hold 10**10 task
    # records (~4 TB) and be killed by the operating system, the run's work lost with it.
    config = _queue().replace(concurrency=10**10)
    with pytest.raises(
        ConfigError, match=r"^concurrency = 10,000,000,000 keeps .* each in the server actor"
    ):
        _execute(config)
    path = tmp_path / "huge.toml"
    dump_config(config, path)
    assert main(["run", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lower the concurrency" in err[0], err


def test_runtime_task_bytes_bound_what_the_server_keeps_per_task() -> None:
    # What the dispatcher keeps for each task created and not applied: the Task record (8
    # fields set per task, the rest shared constants), its entry in the task table and its
    # place in the client's queue. Counted by tracemalloc (allocations, not time).
    import tracemalloc
    from collections import deque

    import numpy as np

    from raysync.runtime._dispatch import Task
    from raysync.runtime.coordinator import RUNTIME_TASK_BYTES

    params = np.zeros(4, dtype=np.float32)
    count = 50_000
    tasks: dict[int, Task] = {}
    queue: deque[Task] = deque()
    tracemalloc.start()
    try:
        for i in range(count):
            # distinct floats and ints, as in a run (times, ordinals)
            task = Task(i + 10**6, i % 7, 0, params, 0.5 + i, 1.7e9 + i * 1e-3, 0.25 * i, i)
            tasks[task.task_id] = task
            queue.append(task)
        per_task = tracemalloc.get_traced_memory()[0] / count
    finally:
        tracemalloc.stop()
    assert RUNTIME_TASK_BYTES / 4 <= per_task <= RUNTIME_TASK_BYTES, per_task
