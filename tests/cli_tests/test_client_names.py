"""The per-client tables of validate, analyze, simulate, optimize and run show the names a
config gives its clients (``[[clients]] name``), and only then."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from raysync._cli.run import _report
from raysync._validation import name_column
from raysync.cli import main
from raysync.config import load_config
from raysync.queueing import predict
from raysync.simulation import simulate

NAMED = """concurrency = 3
seed = 0
[routing]
kind = "uniform"
[algorithm]
name = "generalized_asyncsgd"
[data]
max_train_samples = 200
[run]
num_updates = 40
eval_every_updates = 40
[[clients]]
count = 2
name = "fast-tier"
service_time = { kind = "exponential", rate = 4.0 }
[[clients]]
service_time = { kind = "exponential", rate = 1.0 }
"""


def test_name_column_pads_to_the_widest_shown_name() -> None:
    assert name_column(None, range(2)) == ("", ["", ""])
    assert name_column([None, None], range(2)) == ("", ["", ""])
    head, cells = name_column(["a", None, "longer-name"], [0, 1])
    # Only the shown rows set the width (4 at least, the header's).
    assert head == "name " and cells == ["a    ", "-    "]
    head, cells = name_column(["a", None, "longer-name"], [2])
    assert head == "name        " and cells == ["longer-name "]


def _rows(out: str, first: str) -> list[list[str]]:
    lines = out.splitlines()
    head = next(k for k, line in enumerate(lines) if line.split()[:2] == ["client", first])
    return [line.split() for line in lines[head + 1:head + 4]]


@pytest.mark.parametrize(
    "command",
    [
        ["validate"],
        ["analyze"],
        ["simulate", "--queue-only"],
        ["optimize", "--constants", "1,1,1,1", "--criterion", "per-update"],
    ],
)
def test_named_clients_in_every_command_table(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "named.toml"
    path.write_text(NAMED)
    assert main([command[0], str(path), *command[1:]]) == 0
    rows = _rows(capsys.readouterr().out, "name")
    assert [r[:2] for r in rows] == [["0", "fast-tier"], ["1", "fast-tier"], ["2", "-"]]
    # The column after the name is the client's own (mu, or validate's kind).
    third = [r[2] for r in rows]
    assert third in (["exponential"] * 3, ["4", "4", "1"])


def test_unnamed_clients_get_no_name_column(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "plain.toml"
    path.write_text(NAMED.replace('name = "fast-tier"\n', ""))
    assert main(["analyze", str(path)]) == 0
    assert [r[:2] for r in _rows(capsys.readouterr().out, "mu")] == [
        ["0", "4"], ["1", "4"], ["2", "1"]]
    # --mu describes another fleet than the config's: its rows are not named.
    named = tmp_path / "named.toml"
    named.write_text(NAMED)
    assert main(["analyze", str(named), "--mu", "1,2", "--p", "0.5,0.5"]) == 0
    assert [r[:2] for r in _rows(capsys.readouterr().out, "mu")][:2] == [["0", "1"], ["1", "2"]]


def test_run_report_names_clients(tmp_path: Path) -> None:
    path = tmp_path / "named.toml"
    path.write_text(NAMED)
    config = load_config(path)
    result = simulate(config)
    result = dataclasses.replace(result, extras={**result.extras})
    text = _report(result, config, predict(config))
    assert [r[:2] for r in _rows(text, "name")] == [
        ["0", "fast-tier"], ["1", "fast-tier"], ["2", "-"]]
