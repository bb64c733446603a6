"""Every number flag of every command refuses a value no check after it could read right.

``float("1e309")`` is ``inf``: each command's own check then said "got inf" (not what was
typed) and some named an internal parameter (``latency``, ``run.time_budget``) instead of
the flag. Integers of hundreds of digits were echoed back in full. The parser now refuses
both kinds for every flag of every command, built-in or plugin, found by walking the
parser (so a flag added later is covered without a new test).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from raysync.cli import _build_parser
from tests._cli import exit_code

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny.toml"


def _number_flags(kind: type) -> list[tuple[str, str, str]]:
    """``(command, flag, name in argparse's messages)`` for every option of type ``kind``."""
    parser = _build_parser()
    found = []
    for command, sub in parser.commands.items():
        for action in sub._actions:  # argparse has no public list of a parser's options
            if action.type is kind and action.option_strings:
                found.append((command, action.option_strings[0], "/".join(action.option_strings)))
    return found


_FLOAT_FLAGS = _number_flags(float)
_INT_FLAGS = _number_flags(int)


def test_the_walk_finds_the_flags_of_every_command() -> None:
    # A walk that found nothing would make the tests below pass vacuously.
    assert {"analyze", "optimize", "run", "simulate", "recommend", "tune", "demo"} <= {
        command for command, _, _ in _FLOAT_FLAGS
    }
    assert ("analyze", "--latency", "--latency") in _FLOAT_FLAGS
    assert ("recommend", "--overrule-margin", "--overrule-margin") in _FLOAT_FLAGS
    assert ("simulate", "--torch-threads", "--torch-threads") in _INT_FLAGS
    assert len(_INT_FLAGS) >= 20


def _refused(
    argv: list[str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """Run ``argv`` (``EX``: the example config) in ``tmp_path``; its one error line."""
    monkeypatch.chdir(tmp_path)  # a command that went on would write here
    argv = [str(EXAMPLE) if a == "EX" else a for a in argv]
    assert exit_code(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.rstrip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith(f"raysync {argv[0]}: error: "), lines
    assert captured.out == ""
    assert list(tmp_path.iterdir()) == []  # refused before anything was written
    return lines[0]


@pytest.mark.parametrize(("command", "flag", "name"), _FLOAT_FLAGS)
@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("1e309", "'1e309' (beyond the float range, about 1.8e308)"),
        ("-1e400", "'-1e400' (beyond the float range, about 1.8e308)"),
        ("inf", "'inf'"),
        ("-Infinity", "'-Infinity'"),
        ("nan", "'nan'"),
    ],
)
def test_float_flags_refuse_non_finite_values_by_name(
    command: str,
    flag: str,
    name: str,
    value: str,
    shown: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    line = _refused([command, "EX", f"{flag}={value}"], capsys, tmp_path, monkeypatch)
    assert f"argument {name}: must be a finite number, got {shown}" in line


@pytest.mark.parametrize(("command", "flag", "name"), _INT_FLAGS)
def test_int_flags_refuse_integers_of_more_than_30_digits(
    command: str,
    flag: str,
    name: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    line = _refused([command, "EX", f"{flag}={10**400}"], capsys, tmp_path, monkeypatch)
    assert f"argument {name}: must be an integer of at most 30 digits, got 100000... " in line
    assert "(401 digits)" in line and len(line) < 200
    line = _refused([command, "EX", f"{flag}={-(10**30)}"], capsys, tmp_path, monkeypatch)
    assert "got -100000... (31 digits)" in line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # 30 digits still reach the command's own rule, which names it in full
        (["recommend", "EX", "--budget", "30", "--trials", str(10**29), "--out", "r.toml"],
         "--trials must be at most 100,000 (a study's size), got 100,000,000,000,000,"),
        # a config field set by a flag: the field's rule, naming the flag that set it
        (["simulate", "EX", "--queue-only", "--num-updates", str(10**29)],
         "argument --num-updates: run.num_updates must be an integer <= 9,007,199,254,740,992"),
        (["simulate", "EX", "--queue-only", "--time-budget", "-1e308"],
         "argument --time-budget: run.time_budget must be > 0, got -1e+308"),
        (["simulate", "EX", "--num-updates", "0"],
         "argument --num-updates: run.num_updates must be an integer >= 1, got 0"),
        (["simulate", "EX", "--seed", "-1"], "argument --seed: seed must be an integer >= 0"),
        (["run", "EX", "--num-updates", "0"],
         "argument --num-updates: run.num_updates must be an integer >= 1, got 0"),
        (["run", "EX", "--time-budget", "0"],
         "argument --time-budget: run.time_budget must be > 0, got 0.0"),
    ],
)  # fmt: skip
def test_values_in_range_reach_the_commands_own_check(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    line = _refused(argv, capsys, tmp_path, monkeypatch)
    assert message in line and "digits" not in line, line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["analyze", "--mu", "1,1e309", "-C", "2"],
         "--mu must be a comma-separated list of finite numbers, got '1e309' (beyond the "
         "float range, about 1.8e308) at position 2 in '1,1e309'"),
        (["analyze", "--mu", "1,2", "--p", "0.5,-inf", "-C", "2"],
         "--p must be a comma-separated list of finite numbers, got '-inf' at position 2"),
        (["analyze", "EX", "--client-latency", "1,1,1,nan"],
         "--client-latency must be a comma-separated list of finite numbers, got 'nan' at "
         "position 4"),
        (["optimize", "EX", "--constants", "1,1e309,1,1", "--budget", "5"],
         "--constants '1,1e309,1,1': constants.sigma2 must be finite, got '1e309' (beyond "
         "the float range, about 1.8e308)"),
        (["optimize", "EX", "--constants", "1,1,1,-inf", "--budget", "5"],
         "--constants '1,1,1,-inf': constants.A must be finite, got '-inf'"),
        (["optimize", "EX", "--constants", "0,1,1,1", "--budget", "5"],
         "--constants '0,1,1,1': constants.L must be > 0, got 0.0"),
        (["tune", "EX", "--constants", "1,1,1e400,1", "--budget", "5", "--out", "o"],
         "--constants '1,1,1e400,1': constants.M2 must be finite, got '1e400' (beyond"),
        (["demo", "EX", "--constants", "1e999,1,1,1", "--out", "o"],
         "--constants '1e999,1,1,1': constants.L must be finite, got '1e999' (beyond"),
    ],
)  # fmt: skip
def test_number_lists_refuse_non_finite_entries_by_flag_and_position(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    line = _refused(argv, capsys, tmp_path, monkeypatch)
    assert message in line, line


def test_a_config_number_beyond_the_float_range_is_not_called_inf(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # TOML reads 1e309 as inf; the message must not claim the file says "inf".
    config = tmp_path / "c.toml"
    config.write_text(EXAMPLE.read_text().replace("rate = 2.0", "rate = 1e309"))
    assert exit_code(["validate", str(config)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"raysync validate: error: {config}: clients[1].service_time.rate must be finite, got "
        "inf (written as inf or as a number beyond the float range, about 1.8e308)"
    )

