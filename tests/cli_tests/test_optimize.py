"""``raysync optimize`` on the docs/theory.md worked-example fleet."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from raysync.cli import main
from raysync.config import load_config

from .._configs import worked_example, write_config

FLEET = worked_example("""
[run]
time_budget = 100.0

[data]
dataset = "digits"
""")

CONSTANTS = "1,1,0.5,2"


@pytest.fixture()
def fleet(tmp_path: Path) -> Path:
    return write_config(tmp_path, FLEET, "fleet.toml")


def test_wall_clock_prints_c_p_and_terms(
    fleet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["optimize", str(fleet), "--criterion", "wall-clock",
                 "--constants", CONSTANTS]) == 0
    out = capsys.readouterr().out
    assert "optimum: C = 7" in out
    assert "throughput" in out and "E[D_i]" in out
    for word in ("optimization", "variance", "staleness", "uniform p, C=n", "AsyncSGD"):
        assert word in out
    # one row per client with mu, p and delay
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("0 ", "3 "))]
    assert rows[0][1] == "1" and rows[1][1] == "0.5"


def test_json_and_write_config(fleet: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    out_path = tmp_path / "best.toml"
    assert main(["optimize", str(fleet), "--constants", CONSTANTS, "--budget", "50",
                 "--max-concurrency", "12", "--json", "--write-config", str(out_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    opt = data["optimum"]
    assert 1 <= opt["concurrency"] <= 12
    assert sum(opt["p"]) == pytest.approx(1.0)
    assert set(data["baselines"]) == {"uniform", "asyncsgd"}
    assert data["baselines"]["asyncsgd"]["throughput"] == pytest.approx(7.5)
    written = load_config(out_path)
    assert written.routing.kind == "fixed"
    assert written.concurrency == opt["concurrency"]
    assert written.routing.p == pytest.approx(tuple(opt["p"]))


def test_per_update_gives_c1(fleet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["optimize", str(fleet), "--criterion", "per-update", "--updates", "300",
                 "--step", "fixed", "--constants", CONSTANTS]) == 0
    out = capsys.readouterr().out
    assert "optimum: C = 1 " in out and "0.25000" in out


@pytest.fixture()
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one torch thread (and do not fight other processes)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("one_thread")
def test_estimate_constants(fleet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["optimize", str(fleet), "--estimate-constants", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["constants_estimate"]["constants"]["L"] > 0
    assert data["constants"]["sigma2"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--constants", "1,1,0.5"], "four comma-separated numbers"),
        (["--constants", "1,-1,0.5,2"], "constants.sigma2 must be > 0"),
        (["--constants", CONSTANTS, "--budget", "0"], "--budget must be"),
        (["--constants", CONSTANTS, "--max-concurrency", "0"], "--max-concurrency must be"),
        (["--constants", CONSTANTS, "--criterion", "per-update", "--updates", "0"],
         "--updates must be"),
    ],
)
def test_bad_arguments_exit_2(fleet: Path, capsys: pytest.CaptureFixture[str],
                              args: list[str], message: str) -> None:
    assert main(["optimize", str(fleet), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_missing_constants_or_bad_choice_is_a_usage_error(fleet: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["optimize", str(fleet)])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["optimize", str(fleet), "--constants", CONSTANTS, "--criterion", "loss"])
    assert exc.value.code == 2


def test_wall_clock_needs_a_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nobudget = FLEET.replace("time_budget = 100.0", "num_updates = 100")
    path = write_config(tmp_path, nobudget, "nobudget.toml")
    assert main(["optimize", str(path), "--constants", CONSTANTS]) == 2
    assert "needs a time budget" in capsys.readouterr().err
    assert main(["optimize", str(path), "--constants", CONSTANTS, "--criterion",
                 "per-update"]) == 0


def test_asyncsgd_below_the_optimum_and_the_unwritten_step_are_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # examples/tiny.toml at T = 60 with its estimated constants: AsyncSGD's bound (0.654)
    # beats the best random routing (0.871); the step eta the bound used is not written.
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "opt.toml"
    assert main(["optimize", str(root / "examples" / "tiny.toml"), "--criterion", "wall-clock",
                 "--budget", "60", "--constants", "1.787,0.5576,0.03205,1.996",
                 "--write-config", str(out)]) == 0
    text = capsys.readouterr().out
    rows = {line.split("  ")[1].strip(): float(line.split()[-1])
            for line in text.splitlines() if line.startswith("  optimum ")
            or line.startswith("  AsyncSGD, C=n")}
    assert rows["AsyncSGD, C=n *"] < rows["optimum"]
    assert (f"note: AsyncSGD's bound {rows['AsyncSGD, C=n *']:.5g} is below the optimum's "
            f"{rows['optimum']:.5g}") in text
    eta = float(text.split("eta = ")[1].split()[0])
    assert f"algorithm.lr kept at 0.05, not the bound's step eta = {eta:.4g})" in text
    assert load_config(out).algorithm.lr == 0.05


def test_solver_note_reads_scipys_bare_abnormal() -> None:
    from raysync.objectives.optimize import _solver_note

    assert "line search made no progress" in _solver_note("ABNORMAL: ")
    assert _solver_note("CONVERGENCE: REL_REDUCTION_OF_F_<=_FACTR*EPSMCH") == (
        "CONVERGENCE: REL_REDUCTION_OF_F_<=_FACTR*EPSMCH")
    assert _solver_note("  ") == "no message from the solver"
