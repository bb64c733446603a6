"""Numbers at the edges of the CLI: huge, tiny, non-finite; refused in one line or computed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from raysync.cli import main
from raysync.exceptions import ConfigError
from tests._cli import exit_code

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny.toml"


def _error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err.rstrip("\n").split("\n")
    assert len(err) == 1 and err[0].startswith(f"raysync {command}: error: "), err
    return err[0]


def test_analyze_curve_json_carries_the_lean_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "--mu", "1,2,4,0.5", "-C", "6", "--curve", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    curve = data["curve"]
    assert len(curve["throughput"]) == 6
    assert curve["throughput"][-1] == pytest.approx(data["throughput"], rel=1e-12)
    assert curve["max_relative_delay"][-1] == pytest.approx(max(data["mean_relative_delay"]))
    assert len(data["queue_length_curve"]) == 6  # small: the per-client curves too


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mu", "1,2", "-C", "100000000000"], "solver steps, more than"),
        # Buzen's pass costs ~40 MVA steps per client: under MVA's limit it ran for
        # minutes (C = 9.7e6 with 5 clients; MVA solves it in ~30 s)
        (["--mu", "1,1,1,3,3", "-C", "9700000", "--method", "buzen"],
         "clients, method 'buzen' needs C*(40n+8192) = 8.14e+10 solver steps"),
        (["--mu", "1e-320,1", "-C", "3"], "mu[0]=1e-320 is too small"),
        (["--mu", "1e-308,1e-308", "-C", "5"], "beyond the float64 range"),
        (["--mu", "1e308,1e308", "-C", "9"], "throughput of this network is beyond"),
        (["--mu", "1,2", "-C", "5", "--server-rate", "1e-310"], "1/server_rate overflows"),
        (["--mu", "1,nan", "-C", "3"], "--mu must be a comma-separated list of finite numbers, got "
             "'nan' at position 2 in '1,nan'"),
        (["--mu", "1,2", "-C", "3", "--latency", "inf"],
             "argument --latency: must be a finite number, got 'inf'"),
    ],
)
def test_analyze_refuses_what_it_cannot_compute(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_code(["analyze", *args]) == 2
    assert message in _error(capsys, "analyze")


@pytest.mark.parametrize("mu", ["1e308,1e308", "1e300,1e-300", "5e-300,1e-300"])
def test_analyze_extreme_rates_are_finite(mu: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "--mu", mu, "-C", "5", "--json", "--curve"]) == 0
    captured = capsys.readouterr()
    assert "Warning" not in captured.err
    data = json.loads(captured.out)
    assert math.isfinite(data["throughput"]) and data["throughput"] > 0
    assert all(math.isfinite(v) for v in data["mean_sojourn_time"])
    assert all(math.isfinite(v) for v in data["curve"]["throughput"])


def test_optimize_refuses_a_search_beyond_the_memory(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["optimize", str(EXAMPLE), "--constants", "1,1,1,1", "--budget", "5"]
    assert main([*argv, "--max-concurrency", "100000000"]) == 2
    assert "GiB for the gradient tapes" in _error(capsys, "optimize")


@pytest.mark.parametrize(
    "argv",
    [
        ["optimize", "CFG", "--constants", "1,1,1,1", "--budget", "5"],
        ["recommend", "CFG", "--budget", "5", "--out", "OUT"],
        ["tune", "CFG", "--objective", "bound", "--budget", "5", "--out", "OUT"],
    ],
)
def test_a_search_too_large_by_the_configs_concurrency_names_it(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default --max-concurrency is max(2n, C): a user who never passed the flag is
    told which setting to lower, the config's concurrency."""
    text = EXAMPLE.read_text().replace("concurrency = 6", "concurrency = 10000000")
    assert text != EXAMPLE.read_text()
    config = tmp_path / "c.toml"
    config.write_text(text)
    out = tmp_path / "out"
    command = [str(config) if a == "CFG" else str(out) if a == "OUT" else a for a in argv]
    assert main(command) == 2
    line = _error(capsys, argv[0]).split(": error: ", 1)[1]
    assert line.startswith("the config's concurrency (the default --max-concurrency) 10,000,000 "
                           "with n=4 clients needs about"), line  # fmt: skip
    assert line.endswith("lower the config's concurrency (the default --max-concurrency)")
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--torch-threads", "0"], "--torch-threads must be in [1, 1024], got 0"),
        (["--torch-threads", "1000000000"], "--torch-threads must be in [1, 1024]"),
        (["--num-updates", "0"], "run.num_updates must be an integer >= 1, got 0"),
        (["--time-budget", "nan"], "argument --time-budget: must be a finite number, got 'nan'"),
        (["--seed", "-1"], "seed must be an integer >= 0, got -1"),
    ],
)
def test_simulate_flags(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_code(["simulate", str(EXAMPLE), "--queue-only", *flags]) == 2
    assert message in _error(capsys, "simulate")


@pytest.mark.parametrize(("args", "message"), [
    # argparse read each value as an unknown option: "expected one argument"
    (["analyze", "--mu", "-1,2", "-C", "2"], "mu[0] must be > 0, got -1.0"),
    (["analyze", "--mu", "1,2", "-C", "-1e3"], "invalid int value: '-1e3'"),
    (["simulate", "EX", "--time-budget", "-1e5"], "run.time_budget must be > 0, got -100000.0"),
    (["simulate", "EX", "--time-budget", "-inf"],
     "argument --time-budget: must be a finite number, got '-inf'"),
    (["simulate", "EX", "--time-budget", "-1x"], "invalid float value: '-1x'"),
    (["optimize", "EX", "--constants", "-1,1,1,1"], "constants.L must be > 0, got -1.0"),
    (["recommend", "EX", "--budget", "30", "--trials", "-inf", "--out", "FILE"],
     "argument --trials: invalid int value: '-inf'"),
    (["recommend", "EX", "--budget", "-Infinity", "--out", "FILE"], "--budget"),
    (["tune", "EX", "--budget", "-NaN", "--out", "OUT"],
     "argument --budget: must be a finite number, got '-NaN'"),
    (["demo", "EX", "--seed", "-1e3", "--out", "OUT"], "argument --seed: invalid int value"),
])  # fmt: skip
def test_a_negative_value_reaches_the_flags_own_check(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "out"
    named = {"EX": str(EXAMPLE), "OUT": str(out), "FILE": str(tmp_path / "r.toml")}
    try:
        code = main([named.get(a, a) for a in args])
    except SystemExit as exc:  # a usage error: argparse exits
        code = exc.code
    assert code == 2
    line = _error(capsys, args[0])
    assert message in line and "expected one argument" not in line, line
    assert sorted(tmp_path.iterdir()) == []  # refused before anything was written


@pytest.mark.parametrize(("args", "command"), [
    (["validate", "EX", "EX"], "validate"),
    (["analyze", "--mu", "1,2", "-C", "2", "--bogus"], "analyze"),
    (["simulate", "EX", "--bogus", "1"], "simulate"),
    (["optimize", "EX", "--constants", "1,1,1,1", "extra"], "optimize"),
    (["run", "EX", "--bogus"], "run"),
    (["recommend", "EX", "--budget", "30", "--out", "FILE", "--bogus"], "recommend"),
    (["tune", "EX", "--bogus"], "tune"),
])  # fmt: skip
def test_unrecognised_arguments_are_the_commands_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], command: str
) -> None:
    # Reported by the top-level parser they read "raysync: error: ..." and pointed at
    # `raysync --help`, not at the command that was given them.
    named = {"EX": str(EXAMPLE), "FILE": str(tmp_path / "r.toml")}
    with pytest.raises(SystemExit) as stop:
        main([named.get(a, a) for a in args])
    assert stop.value.code == 2
    line = _error(capsys, command)
    assert "unrecognized arguments: " in line and line.endswith(f"(see raysync {command} --help)")
    assert sorted(tmp_path.iterdir()) == []


def test_buzen_s_limit_is_its_cost_in_mva_steps() -> None:
    # The same network: within MVA's limit, beyond Buzen's (priced at 40 MVA steps per
    # client and step plus twice the overhead); both limits refuse before any work.
    from raysync.queueing.analysis import MAX_SOLVER_STEPS, _check_work
    from raysync.queueing.network import ClosedNetwork

    n = 5
    c = MAX_SOLVER_STEPS // (40 * n + 8192) + 1
    network = ClosedNetwork(mu=np.ones(n), p=np.full(n, 1 / n), concurrency=c)
    _check_work(network, "mva")  # c * (n + 4096) is half the limit
    with pytest.raises(ConfigError, match="method 'buzen' needs"):
        _check_work(network, "buzen")
    _check_work(ClosedNetwork(mu=np.ones(n), p=np.full(n, 1 / n), concurrency=c - 1), "buzen")
