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
