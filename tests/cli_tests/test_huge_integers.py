"""Integers beyond the float range, run lengths no run can reach, and the --curve's work.

Every refusal is exit 2 with one stderr line ``raysync <cmd>: error: ...`` naming the
flag or field, nothing on stdout and nothing written; ``run`` refuses before Ray starts.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from raysync.cli import main
from raysync.config import MAX_CONCURRENCY, MAX_NUM_UPDATES, load_config
from raysync.simulation.engine import MAX_SIMULATED_COMPLETIONS
from tests.runtime_tests._helpers import RayStarted, block_ray

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny.toml"
B309, B400 = str(10**309), str(10**400)
#: The longest integer a flag accepts (30 digits); the config's own checks see it.
B30 = str(10**29)


@pytest.fixture(autouse=True)
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    block_ray(monkeypatch)


def _config(tmp_path: Path, **top: str) -> str:
    """tiny.toml with top-level or ``[run]`` keys replaced or added (``run_<key>``)."""
    text = EXAMPLE.read_text()
    for key, value in top.items():
        name = key.removeprefix("run_")
        line = f"{name} = {value}"
        pattern = rf"^{name} = .*$"
        if re.search(pattern, text, flags=re.M):
            text = re.sub(pattern, line, text, count=1, flags=re.M)
        elif key.startswith("run_"):
            text = text.replace("[run]\n", f"[run]\n{line}\n")
        else:
            text = f"{line}\n{text}"
    path = tmp_path / "c.toml"
    path.write_text(text)
    return str(path)


def _refused(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.rstrip("\n").split("\n")
    assert len(err) == 1 and err[0].startswith(f"raysync {argv[0]}: error: "), err
    assert needle in err[0], err[0]
    assert captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_the_config_caps_match_the_simulator() -> None:
    assert MAX_CONCURRENCY == MAX_SIMULATED_COMPLETIONS
    assert float(MAX_NUM_UPDATES) == MAX_NUM_UPDATES and float(MAX_NUM_UPDATES + 1) != (
        MAX_NUM_UPDATES + 1
    )


# ------------------------------------------------------------------ K1: ints beyond float


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["analyze", "--mu", "1,2", "-C", B30], "solver steps, more than"),
        (["analyze", "--mu", "1,2", "-C", B30, "--method", "buzen"], "solver steps, more than"),
        (["analyze", "--mu", "1,2", "-C", B30, "--curve"], "solver steps, more than"),
        (
            ["analyze", "--mu", "1,2", "-C", B30, "--method", "bruteforce", "--curve"],
            "float64 matrices = 4.47e+21 GiB, more than the 1 GiB allowed; the lean MVA pass "
            "(curve_summary() in Python, --method mva --curve on the command line)",
        ),
        (["analyze", "--mu", "1,2", "-C", B30, "--method", "bruteforce"], "states"),
        (
            ["simulate", str(EXAMPLE), "--queue-only", "--no-progress", "--num-updates", B30],
            "run.num_updates must be an integer <= 9,007,199,254,740,992",
        ),
        (
            ["simulate", str(EXAMPLE), "--queue-only", "--no-progress", "--num-updates", B30],
            "run.num_updates must be an integer <=",
        ),
        (
            ["optimize", str(EXAMPLE), "--constants", "1,1,1,1", "--criterion", "per-update",
             "--updates", B30],
            "--updates must be an integer in [1, 9,007,199,254,740,992]",
        ),
        (
            ["optimize", str(EXAMPLE), "--constants", "1,1,1,1", "--criterion", "per-update",
             "--updates", str(MAX_NUM_UPDATES + 1)],
            "--updates must be an integer in [1,",
        ),
        (
            ["optimize", str(EXAMPLE), "--constants", "1,1,1,1", "--max-concurrency", B30],
            "--max-concurrency 100,000,000,000,000,000,000,000,000,000 with n=4 clients "
            "needs 5.96e+21 GiB",
        ),
        (["run", str(EXAMPLE), "--num-updates", B30], "run.num_updates must be an integer <="),
    ],
    ids=[
        "analyze-C", "analyze-buzen", "analyze-curve", "analyze-bruteforce-curve",
        "analyze-bruteforce", "simulate-400", "simulate-309", "optimize-updates",
        "optimize-updates-cap", "optimize-max-concurrency", "run-num-updates",
    ],
)  # fmt: skip
def test_huge_integer_flags_are_refused_in_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    if argv[0] == "optimize":
        out = tmp_path / "out" / "best.toml"
        _refused([*argv, "--write-config", str(out)], needle, capsys, tmp_path)
        assert not out.exists()
    else:
        _refused(argv, needle, capsys, tmp_path)


_COMMANDS = {
    "validate": [],
    "analyze": [],
    "simulate": ["--queue-only", "--no-progress"],
    "optimize": ["--constants", "1,1,1,1", "--criterion", "per-update"],
    "run": [],
}


@pytest.mark.parametrize("command", list(_COMMANDS))
@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("concurrency", B400, "concurrency must be an integer <= 10,000,000,000"),
        ("concurrency", B309, "concurrency must be an integer <= 10,000,000,000"),
        ("concurrency", str(MAX_CONCURRENCY + 1),
         "concurrency must be an integer <= 10,000,000,000"),
        ("run_num_updates", B400, "run.num_updates must be an integer <= 9,007,199,254,740,992"),
        ("run_num_updates", str(MAX_NUM_UPDATES + 1), "run.num_updates must be an integer <="),
    ],
    ids=["concurrency-400", "concurrency-309", "concurrency-cap", "updates-400", "updates-cap"],
)
def test_huge_integer_config_fields_are_refused_at_load(
    command: str,
    key: str,
    value: str,
    needle: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, **{key: value})
    _refused([command, config, *_COMMANDS[command]], f"c.toml: {needle}", capsys, tmp_path)


@pytest.mark.parametrize(
    ("key", "value"),
    [("concurrency", str(MAX_CONCURRENCY)), ("run_num_updates", str(MAX_NUM_UPDATES))],
)
def test_the_caps_themselves_load_and_validate_names_the_command_that_refuses_them(
    key: str, value: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # The field rules are inclusive; that many tasks or updates is then beyond what the
    # simulator can hold or run, which validate reports as simulate would.
    path = _config(tmp_path, **{key: value})
    load_config(path)
    assert main(["validate", path]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("raysync validate: error: `raysync simulate` would refuse it: ")
    assert f"{int(value):,}" in err[0] and "must be an integer" not in err[0]


# ------------------------------------------------------- K8: run refuses before Ray starts


@pytest.mark.parametrize(
    ("run", "flags", "needle"),
    [
        ({}, ["--num-updates", B30], "run.num_updates must be an integer <="),
        ({}, ["--num-updates", str(10**12)], "run.num_updates = 1,000,000,000,000 (x B = 1)"),
        ({}, ["--num-updates", str(MAX_SIMULATED_COMPLETIONS + 1)], "needs 10,000,000,001 task"),
        ({"run_time_scale": "1e308"}, [], "time_scale = 1e+308 makes a mean task of clients[3]"),
        ({"run_time_scale": "1e9"}, [], "run.time_scale = 1e+09 makes a mean task"),
        ({"run_task_timeout": "1e-320"}, [], "run.task_timeout = 1e-320 config seconds"),
        ({"run_task_timeout": "1e-4"}, [], "less than the 0.001 s a run accepts"),
        (
            {"run_task_timeout": "0.5", "run_time_scale": "1e-3"},
            [],
            "run.task_timeout = 0.5 config seconds x run.time_scale = 0.001 is 0.0005 wall",
        ),
        ({}, ["--time-budget", "1e308"], "run.time_budget = 1e+308"),
        ({}, ["--address", ""], "--address must name a Ray cluster"),
        ({}, ["--address", "  "], "--address must name a Ray cluster"),
        # a budget over before one Ray call could return started Ray
        ({}, ["--time-budget", "1e-320"], "run.time_budget = 1e-320 config seconds x run"),
        ({}, ["--time-budget", "1e-4"], "less than the 0.001 s a run accepts"),
    ],
    ids=[
        "updates-1e30", "updates-1e12", "updates-limit", "scale-overflow", "scale-too-long",
        "timeout-subnormal", "timeout-short", "timeout-short-wall", "budget-bar", "address-empty",
        "address-blank", "budget-subnormal", "budget-short",
    ],
)  # fmt: skip
def test_run_refuses_before_ray_and_before_the_bar(
    run: dict[str, str],
    flags: list[str],
    needle: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    # with the progress bar on: a refusal must not draw it first
    _refused(["run", _config(tmp_path, **run), *flags], needle, capsys, tmp_path)


@pytest.mark.parametrize(
    ("run", "flags"),
    [
        ({}, []),
        ({}, ["--num-updates", str(10**12), "--time-budget", "10"]),  # the budget ends it
        ({"run_task_timeout": "0.01"}, []),
        ({"run_time_scale": "1e8"}, ["--time-budget", "5"]),  # a 2e8 s task, budget 5e8 s
    ],
    ids=["tiny", "updates-with-budget", "timeout", "scale"],
)
def test_run_accepts_what_can_finish(
    run: dict[str, str], flags: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(RayStarted):
        main(["run", _config(tmp_path, **run), *flags])
    assert capsys.readouterr().err == ""


def test_fedbuff_updates_count_their_completions(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = Path(_config(tmp_path))
    text = config.read_text().replace(
        'name = "generalized_asyncsgd"', 'name = "fedbuff"\nbuffer_size = 10'
    )
    config.write_text(text)
    _refused(
        ["run", str(config), "--num-updates", "2000000000"],
        "(x B = 10) needs 20,000,000,000 task completions",
        capsys,
        tmp_path,
    )


# ------------------------------------------------------------- K10: the --curve's work


@pytest.mark.parametrize(
    "argv",
    [
        ["--mu", "1,2", "-C", "9000000", "--curve", "--json"],
        ["--mu", "1,2", "-C", "2000000", "--curve"],
        ["--mu", "1,2,3", "-C", "1700000", "--curve", "--method", "buzen"],
        ["--mu", ",".join(["1"] * 1000), "-C", "1400000", "--curve"],
    ],
    ids=["json", "table", "buzen", "wide"],
)
def test_a_curve_past_the_work_limit_is_refused(
    argv: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _refused(["analyze", *argv], "--curve with concurrency C=", capsys, tmp_path)


def test_the_curve_message_names_the_largest_concurrency(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["analyze", "--mu", "1,2", "-C", "9000000", "--curve"]) == 2
    err = capsys.readouterr().err
    largest = int(re.search(r"at most ([\d,]+) with --curve", err)[1].replace(",", ""))  # type: ignore[index]
    assert 10**6 < largest < 2 * 10**6
    assert main(["analyze", "--mu", "1,2", "-C", str(largest + 1), "--curve"]) == 2
    capsys.readouterr()
