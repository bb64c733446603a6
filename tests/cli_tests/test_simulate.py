"""``raysync simulate CONFIG``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from raysync.cli import main
from raysync.simulation import RunResult

from .._configs import worked_example, write_config

TINY = worked_example("""
[algorithm]
name = "generalized_asyncsgd"
lr = 0.5
batch_size = 16

[run]
num_updates = 300
eval_every_updates = 100
""")

RETURN_TO_SENDER = """
concurrency = 3
[routing]
kind = "return_to_sender"
[algorithm]
name = "asyncsgd"
[run]
num_updates = 1000
train = false
[[clients]]
service_time = { kind = "exponential", rate = 1.0 }
count = 2
[[clients]]
service_time = { kind = "exponential", rate = 2.0 }
"""


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Iterator[None]:
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    return write_config(tmp_path, TINY, "tiny.toml")


def test_simulate_prints_accuracy_throughput_and_staleness(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "out"
    assert main(["simulate", str(tiny), "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "final test accuracy: 0." in out
    assert "throughput:" in out and "theory: 2.45056" in out
    assert "per-client staleness" in out
    assert "8.698" in out  # client 0's theoretical delay (docs/theory.md worked example)
    res = RunResult.load(out_dir)
    assert res.num_updates == 300 and res.train
    theory = json.loads((out_dir / "theory.json").read_text())
    assert theory["model"] == "closed_jackson"
    assert out.rstrip().endswith(f"saved to {out_dir}")
    # A second run into the same folder replaces the result, and says so.
    assert main(["simulate", str(tiny), "--out", str(out_dir), "--queue-only"]) == 0
    assert capsys.readouterr().out.rstrip().endswith(
        f"saved to {out_dir} (replacing the result that was there)")
    assert not RunResult.load(out_dir).train


def test_queue_only_overrides_and_json(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "simulate",
        str(tiny),
        "--queue-only",
        "--num-updates",
        "20000",
        "--seed",
        "3",
        "--json",
    ]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["num_updates"] == 20000 and data["seed"] == 3 and data["train"] is False
    assert data["theory"]["throughput"] == pytest.approx(2.45056, abs=1e-5)
    assert abs(data["throughput"] / 2.45056 - 1) < 0.1


def test_time_budget_override(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", str(tiny), "--queue-only", "--time-budget", "500"]) == 0
    out = capsys.readouterr().out
    assert "in 500 virtual s" in out
    assert "final test accuracy: n/a (queue-only)" in out


def test_return_to_sender_theory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "rts.toml"
    path.write_text(RETURN_TO_SENDER)
    assert main(["simulate", str(path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "theory: 4" in out  # throughput = sum of the rates
    lines = [line.split() for line in out.splitlines() if line.strip().startswith(("0 ", "2 "))]
    assert lines[0][-1] == "3" and lines[1][-1] == "1"  # (4 - mu_i) / mu_i


def test_bad_config_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.replace("p = [0.4, 0.3, 0.2, 0.1]", "p = [0.4, 0.3, 0.2, 0.2]"))
    assert main(["simulate", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "routing.p must sum to 1" in err
    assert main(["simulate", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        # time_budget x throughput overflows: the budget is named, not the absent num_updates
        ("1e308", "run.time_budget = 1e+308 s"),
        # nothing completes: refused rather than printing NaN intervals
        ("1e-300", "ended with no task completed"),
    ],
)
def test_extreme_time_budget_exits_2_with_one_line(
    tiny: Path, capsys: pytest.CaptureFixture[str], budget: str, expected: str
) -> None:
    args = ["simulate", str(tiny), "--queue-only", "--no-progress", "--time-budget", budget]
    assert main(args) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1, err
    assert expected in err
    assert "nan" not in captured.out.lower()


HEAVY_TAILED = """
seed = 0
concurrency = 2
[[clients]]
count = 2
service_time = { kind = "lognormal", mean = 1.0, cv = 1e6 }
[run]
num_updates = 5000
train = false
"""


@pytest.mark.parametrize("as_json", [False, True], ids=["report", "json"])
def test_heavy_tailed_run_warns_once_and_no_interval_goes_negative(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    as_json: bool,
) -> None:
    path = write_config(tmp_path, HEAVY_TAILED, "heavy.toml")
    caplog.set_level("WARNING")
    assert main(["simulate", str(path), "--no-progress", *(["--json"] if as_json else [])]) == 0
    captured = capsys.readouterr()
    shown = captured.out + captured.err + caplog.text
    # the engine's log record and the report carry the same line: shown once
    assert shown.count("service times too variable") == 1, shown
    if as_json:
        payload = json.loads(captured.out)
        lo, hi = payload["throughput_ci"]
        # a symmetric t-interval of this sample reaches below 0; the quantity cannot
        assert 0.0 <= lo <= payload["throughput"] <= hi
        for low, high in payload["utilization_ci"]:
            assert 0.0 <= low <= high
    else:
        assert "CI [-" not in captured.out


UNMEASURED = """
seed = 0
concurrency = 3
[routing]
kind = "fixed"
p = [0.5, 0.3, 0.2]
[algorithm]
name = "generalized_asyncsgd"
[run]
time_budget = 0.5
train = false
[[clients]]
service_time = { kind = "exponential", rate = 100.0 }
[[clients]]
service_time = { kind = "exponential", rate = 1e-9 }
[[clients]]
service_time = { kind = "exponential", rate = 50.0 }
"""


def test_client_without_completion_reads_not_measured_in_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Client 1 (mean service time 1e9 s) cannot finish a task in 0.5 s: its delay is
    # missing, which the table says as its interval does ("n/a"), not as a number ("nan").
    path = write_config(tmp_path, UNMEASURED, "unmeasured.toml")
    assert main(["simulate", str(path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    row = next(line.split() for line in out.splitlines() if line.split()[:2] == ["1", "1e-09"])
    assert row[3:6] == ["0", "n/a", "n/a"], row  # completed, measured, CI
    assert float(row[6]) > 0  # the theory still predicts it
    table = out[out.index("per-client staleness"):]
    assert "nan" not in table.lower()


BIG_FLEET = """
concurrency = 50
[routing]
kind = "uniform"
[algorithm]
name = "generalized_asyncsgd"
[run]
num_updates = 2000
train = false
[[clients]]
count = 10000
service_time = { kind = "exponential", rate = 1.0 }
[[clients]]
count = 10000
service_time = { kind = "exponential", rate = 5.0 }
"""


def test_big_fleet_table_is_cut_like_analyze_and_json_keeps_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, BIG_FLEET, "big.toml")
    assert main(["simulate", str(path), "--no-progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    # analyze's default of 50 rows, plus the fastest client's row (the slowest is row 0)
    assert len(out) < 50 + 1 + 15
    assert out[-1] == "  ... 19949 more clients (--max-rows 0 or --json shows all)"
    assert main(["simulate", str(path), "--no-progress", "--max-rows", "3"]) == 0
    assert "... 19996 more clients" in capsys.readouterr().out
    assert main(["simulate", str(path), "--no-progress", "--json", "--max-rows", "3"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["completed"]) == len(data["theory"]["mean_relative_delay"]) == 20_000


def test_negative_max_rows_exits_2_before_the_run(
    tiny: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", str(tiny), "--queue-only", "--max-rows", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err]
    assert "--max-rows must be >= 1 (clients shown) or 0 (all), got -1" in err


def test_a_theory_beyond_the_solvers_limit_is_left_out_and_the_run_goes_on(
    tiny: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # C = 10**7 with 4 clients simulates in seconds but its MVA pass is beyond the solver's
    # 4e10 steps: simulate refused the whole run for its theory column. The limit is
    # lowered here so that the worked example (C = 6: 6 x 4100 steps) stands in for it.
    from raysync.queueing import analysis

    monkeypatch.setattr(analysis, "MAX_SOLVER_STEPS", 1000)
    assert main(["simulate", str(tiny), "--queue-only", "--num-updates", "2000"]) == 0
    out = capsys.readouterr().out
    assert (
        "theory: none here, its analysis was not computed (concurrency C=6 with n=4 clients "
        "needs C*(n+4096) = 2.46e+04 solver steps, more than the 1e+03 allowed" in out
    ), out
    assert "throughput:" in out and "theory: -" in out
    assert main(["simulate", str(tiny), "--queue-only", "--num-updates", "2000", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["theory"]["model"] is None
    assert data["theory"]["unavailable"].startswith("its analysis was not computed")
    assert data["num_updates"] == 2000
    # analyze is the analysis: there the limit still refuses, in one line
    assert main(["analyze", str(tiny)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "solver steps, more than the 1e+03 allowed" in err[0], err
