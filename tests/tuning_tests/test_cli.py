"""``raysync tune``: end to end on the bound, plots, JSON; the command is a plugin."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from raysync.cli import main

from .conftest import CONSTANTS

C_TEXT = f"{CONSTANTS.L},{CONSTANTS.sigma2},{CONSTANTS.M2},{CONSTANTS.A}"


def test_tune_bound_prints_best_next_to_references(tiny_path, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code = main([
        "tune", str(tiny_path), "--objective", "bound", "--trials", "60", "--constants", C_TEXT,
        "--out", str(out), "--max-concurrency", "8", "--no-progress",
    ])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    for word in ("best", "analytical", "uniform", "proportional", "optuna-dashboard",
                 "tensorboard --logdir"):
        assert word in text
    for name in ("history.png", "best_p.png", "study.json", "study.journal"):
        assert (out / name).exists(), name
    assert len(list((out / "tensorboard").iterdir())) == 60
    report = json.loads((out / "study.json").read_text())
    assert report["study_name"] == "tiny-bound"
    assert report["best"][0]["values"][0] <= report["references"]["uniform"]["bound"]


def test_tune_multi_objective_writes_pareto_plot(tiny_path, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code = main([
        "tune", str(tiny_path), "--trials", "30", "--constants", C_TEXT, "--out", str(out),
        "--multi-objective", "budget", "--no-tensorboard", "--no-progress", "--json",
    ])  # fmt: skip
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["directions"] == ["minimize", "minimize"]
    assert str(out / "pareto.png") in payload["plots"]


def test_seeds_beyond_32_bits_run_and_fold_into_the_samplers_range(tiny_path, tmp_path,
                                                                    capsys) -> None:
    from tuning.settings import sampler_seed

    assert [sampler_seed(s) for s in (0, 7, 2**32 - 1, 2**32, 2**32 + 7, 10**30)] == [
        0, 7, 2**32 - 1, 0, 7, 10**30 % 2**32]
    # Optuna's TPE seeds a 32-bit RandomState: `--seed 4294967296` used to stop tune and
    # recommend with numpy's "Seed must be between 0 and 2**32 - 1" after their pilots.
    code = main(["tune", str(tiny_path), "--objective", "bound", "--trials", "3", "--seed",
                 str(2**32), "--constants", C_TEXT, "--out", str(tmp_path / "t"),
                 "--no-tensorboard", "--no-progress", "--no-plots"])
    assert code == 0, capsys.readouterr().err
    out = tmp_path / "rec.toml"
    code = main(["recommend", str(tiny_path), "--budget", "2", "--trials", "2",
                 "--confirm-seeds", "0", "--seed", str(2**32), "--quiet", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert "seed = 4294967296" in out.read_text()


def test_tune_bad_input_is_one_line_exit_2(tiny_path, tmp_path, capsys) -> None:
    code = main(["tune", str(tiny_path), "--trials", "0", "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "trials must be an integer >= 1" in err and len(err.strip().splitlines()) == 1
    code = main(["tune", str(tiny_path), "--constants", "1,2", "--out", str(tmp_path)])
    assert code == 2


def test_building_the_cli_parser_imports_no_optuna_or_ray() -> None:
    # tuning contributes `tune` and `demo` through the raysync.commands entry points, so
    # building the parser imports tuning's light modules, never the heavy ones.
    code = (
        "import sys\n"
        "from raysync.cli import _build_parser\n"
        "parser = _build_parser()\n"
        "args = parser.parse_args(['tune', 'x.toml', '--objective', 'simulated'])\n"
        "assert args.objective == 'simulated'\n"
        "parser.parse_args(['demo', '--budget', '5'])\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('optuna', 'ray'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == ""


def _one_line_exit_2(args: list[str], capsys, match: str) -> None:  # noqa: ANN001
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and match in err[0], err


def test_tune_huge_max_concurrency_refused_with_size(tiny_path, tmp_path, capsys) -> None:
    base = ["tune", str(tiny_path), "--constants", C_TEXT, "--no-plots", "--no-progress",
            "--no-tensorboard", "--out", str(tmp_path / "o")]
    _one_line_exit_2([*base, "--max-concurrency", "10000000"], capsys, "4.1e+12 solver steps")
    _one_line_exit_2([*base, "--max-concurrency", "1000000000000"], capsys,
                     "--max-concurrency 1,000,000,000,000 with n=4 clients needs")
    assert not (tmp_path / "o").exists()  # refused before any storage was opened


def test_tune_min_p_with_no_feasible_routing_refused(tiny_path, tmp_path, capsys) -> None:
    _one_line_exit_2(["tune", str(tiny_path), "--constants", C_TEXT, "--min-p", "0.3",
                      "--out", str(tmp_path / "o")], capsys,
                     "--min-p 0.3 leaves no feasible routing: needs min_p * n <= 1, "
                     "got 0.3 * 4 = 1.2")


def _no_pilot(monkeypatch) -> None:  # noqa: ANN001
    """Make any constants pilot fail loudly: the checks under test must come before it."""

    def pilot(*args: object, **kwargs: object) -> None:
        raise AssertionError("the pilot ran before the budget was checked")

    import raysync.objectives as objectives
    import tuning.recommend as recommend

    monkeypatch.setattr(objectives, "estimate_constants_for_config", pilot)
    monkeypatch.setattr(recommend, "estimate_constants", pilot)


def test_tune_budget_beyond_the_bound_refused_before_the_pilot(
    tiny_path, tmp_path, capsys, monkeypatch
) -> None:
    _no_pilot(monkeypatch)
    base = ["tune", str(tiny_path), "--objective", "bound", "--trials", "5", "--no-plots",
            "--no-progress", "--no-tensorboard", "--out", str(tmp_path / "o")]  # fmt: skip
    _one_line_exit_2([*base, "--budget", "1e308"], capsys,
                     "time_budget 1e+308 s gives up to K = T x 7.5 = inf updates")  # fmt: skip
    _one_line_exit_2([*base, "--budget", "1e-3"], capsys,
                     "time_budget 0.001 s is too short for one update")  # fmt: skip


def test_recommend_budget_beyond_the_bound_refused_before_the_pilot(
    tiny_path, tmp_path, capsys, monkeypatch
) -> None:
    _no_pilot(monkeypatch)
    _one_line_exit_2(["recommend", str(tiny_path), "--budget", "1e200",
                      "--out", str(tmp_path / "rec.toml")], capsys,
                     "--budget 1e+200 s gives up to K")  # fmt: skip


SLOW_FIXED = """
seed = 0
concurrency = 2
[routing]
kind = "uniform"
[algorithm]
name = "generalized_asyncsgd"
lr = 0.1
[data]
dataset = "digits"
[model]
name = "logreg"
[run]
time_budget = 5.0
[[clients]]
count = 2
service_time = { kind = "deterministic", mean = 0.1 }
"""


def test_recommend_budget_no_task_can_finish_in_is_refused_and_writes_nothing(
    tmp_path, capsys
) -> None:
    # T sum(mu) = 0.05 x 20 = 1 passes the rate check, but every task takes 0.1 s: each
    # pilot run ends at the untrained model. It used to pick among those ties and exit 0.
    path = tmp_path / "fixed.toml"
    path.write_text(SLOW_FIXED)
    out = tmp_path / "rec.toml"
    _one_line_exit_2(["recommend", str(path), "--budget", "0.05", "--trials", "2", "--quiet",
                      "--out", str(out)], capsys,
                     "--budget 0.05 s: no design completed a task in any of the")
    assert not out.exists()


def test_recommend_target_accuracy_with_a_negated_loss_metric_refused_before_the_pilot(
    tmp_path, capsys, monkeypatch
) -> None:
    # The example's regression model reports neg_loss (<= 0): a target in (0, 1) is never
    # reached. It used to simulate every pilot and trial first, then fail.
    _no_pilot(monkeypatch)
    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)  # the example names its module relative to the repository
    out = tmp_path / "rec.toml"
    _one_line_exit_2(["recommend", "examples/custom/diabetes.toml", "--budget", "5",
                      "--target-accuracy", "0.5", "--quiet", "--out", str(out)], capsys,
                     "--target-accuracy 0.5 cannot be reached: the config's model.metric is "
                     "'neg_loss'")
    assert not out.exists()


def test_recommend_redraw_flags_reach_the_settings(tiny_path, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """--redraw-partition, --no-redraw-confirmation, --no-pool-bias, --overrule-margin and
    --rule-change-margin set recommend's settings of those names, each on its own; without
    them the pilot seeds keep the config's draw, the confirmation seeds redraw it, the bias
    term is pooled (``--pool-bias``), the margin is one SE and a change of rule needs 2.132
    SEs (the defaults since the held-out test of --rule-change-margin)."""
    import tuning.recommend as recommend

    class Stop(Exception):
        pass

    got: list[tuple[bool, bool, bool, float, float | None]] = []

    def fake(config, settings, **kwargs):  # noqa: ANN001, ANN202
        got.append((settings.redraw_partition, settings.redraw_confirmation,
                    settings.pool_bias, settings.overrule_margin,
                    settings.rule_change_margin))
        raise Stop

    monkeypatch.setattr(recommend, "recommend", fake)
    base = ["recommend", str(tiny_path), "--budget", "30", "--out", str(tmp_path / "r.toml")]
    for flags in ([], ["--redraw-partition"], ["--redraw-confirmation"],
                  ["--no-redraw-confirmation"], ["--pool-bias"], ["--no-pool-bias"],
                  ["--overrule-margin", "2.132"], ["--rule-change-margin", "3"]):
        with pytest.raises(Stop):
            main([*base, *flags])
    assert got == [(False, True, True, 1.0, 2.132), (True, True, True, 1.0, 2.132),
                   (False, True, True, 1.0, 2.132), (False, False, True, 1.0, 2.132),
                   (False, True, True, 1.0, 2.132), (False, True, False, 1.0, 2.132),
                   (False, True, True, 2.132, 2.132), (False, True, True, 1.0, 3.0)]
    assert not (tmp_path / "r.toml").exists()


def _tune(tiny_path, out, *extra: str) -> list[str]:  # noqa: ANN001
    return ["tune", str(tiny_path), "--objective", "bound", "--trials", "3", "--constants",
            C_TEXT, "--budget", "50", "--out", str(out), "--no-plots", "--no-progress",
            "--no-tensorboard", *extra]  # fmt: skip


@pytest.mark.parametrize(("extra", "message"), [
    # found by a sweep of tune's flags: each was exit 0 (a default taken silently, every
    # trial failing) or exit 2 with an empty output folder left behind
    (["--out="], "--out must be a directory path, got ''"),
    (["--constants="], "--constants must be 'L,sigma2,M2,A', got ''"),
    # a blank study name ran under the default one; a blank storage was named "storage"
    (["--study="], "--study must be a study name, got ''"),
    (["--study= "], "--study must be a study name, got ' '"),
    (["--storage="], "--storage must be an Optuna storage URL or a path ending in .journal"),
    (["--storage= "], "--storage must be an Optuna storage URL"),
    (["--objective=simulated", "--budget=1e30"],
     "--budget 1e+30 s is too long to simulate: AsyncSGD (all 4 clients busy"),
    (["--objective=simulated", "--budget=4294967296"], "--budget 4.29497e+09 s is too long"),
    (["--storage=sqlite:///"], "storage 'sqlite:///' is an in-memory SQLite database"),
    (["--storage=sqlite://"], "is an in-memory SQLite database"),
    (["--storage=sqlite:///:memory:"], "is an in-memory SQLite database"),
    (["--storage=ADIR"], "storage must be an SQLAlchemy URL"),
    (["--budget=1e308"], "time_budget"),
    # checked after the output folder was made: an empty folder was left behind
    (["--budget=1e-3"], "time_budget 0.001 s is too short for one update (Lambda T < 1)"),
    # ignored: every bound (or parallel-1 simulated) trial ran in this process
    (["--address=auto"], "address 'auto' is used only by trials on Ray (objective 'live', "
                         "or parallel > 1); with objective 'bound' and parallel 1"),
    (["--objective=simulated", "--address=auto"], "with objective 'simulated' and parallel 1"),
    (["--objective=live", "--address= "], "address must name a Ray cluster, got ' '"),
    # an unreachable cluster was refused only after the study's journal was written
    (["--objective=live", "--address=127.0.0.1:1"],
     "cannot reach the Ray cluster at '127.0.0.1:1'"),
    (["--objective=simulated", "--parallel=2", "--address=ray://127.0.0.1:1"],
     "cannot reach the Ray cluster at 'ray://127.0.0.1:1'"),
])  # fmt: skip
def test_tune_refusals_are_one_line_and_leave_no_output_folder(
    tiny_path, tmp_path, capsys, extra: list[str], message: str  # noqa: ANN001
) -> None:
    (tmp_path / "adir").mkdir()
    extra = [e.replace("ADIR", str(tmp_path / "adir")) for e in extra]
    out = tmp_path / "out"
    code = main(_tune(tiny_path, out, *extra))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()
    # nothing anywhere else (the fixture's config aside), nor in a folder named as storage
    assert sorted(p.name for p in tmp_path.iterdir() if p != tiny_path) == ["adir"]
    assert not list((tmp_path / "adir").iterdir())


def test_tune_keeps_an_output_folder_that_existed_or_holds_files(tiny_path, tmp_path,
                                                                  capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert main(_tune(tiny_path, out, "--storage=sqlite:///")) == 2
    assert out.is_dir()  # the user's folder, not ours to remove
    capsys.readouterr()


def test_recommend_on_a_config_without_emulation_says_run_will_not_emulate(
    tmp_path, capsys, monkeypatch
) -> None:
    # diabetes.toml sets run.time_scale = 0: the recommendation assumes service times that
    # `raysync run` then does not emulate.
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    out = tmp_path / "rec.toml"
    assert main(["recommend", "examples/custom/diabetes.toml", "--budget", "5", "--trials",
                 "2", "--quiet", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert (f"note: run.time_scale = 0: 'raysync run {out}' will not emulate the service "
            "times") in text


@pytest.mark.parametrize(
    ("outcome", "said"),
    [
        ("diverged", "(50 diverged), at every step tried (0.01 to 1, algorithm.lr x 0.1..10); "
                     "lower algorithm.lr"),
        ("flat", "(0 diverged), at every step tried (0.01 to 1, algorithm.lr x 0.1..10); "
                 "raise algorithm.lr or --budget"),
    ],
)
def test_recommend_where_no_design_learns_is_refused_and_writes_nothing(
    tiny_path, tmp_path, capsys, monkeypatch, outcome, said
) -> None:
    # A step far too large: every pilot run diverges (the CLI used to write a config at
    # the grid's smallest step, which diverged when simulated); far too small: nothing
    # moves. Either way the runs rank nothing.
    import tuning.recommend as rmod

    def fake_measure(*args: object, **kwargs: object) -> dict[str, object]:
        if outcome == "diverged":
            return {"val_accuracy": 0.0, "test_accuracy": 0.0, "throughput": float("nan"),
                    "staleness": float("nan"), "time_to_target": None, "times": [],
                    "val_curve": [], "test_curve": [], "num_updates": 0, "energy_J": None,
                    "diverged": "client 0 failed on task 3: the training loss is inf"}
        return {"val_accuracy": 0.1, "test_accuracy": 0.1, "throughput": 1.0,
                "staleness": 1.0, "time_to_target": None, "times": [0.0, 5.0],
                "val_curve": [0.1, 0.1], "test_curve": [0.1, 0.1], "num_updates": 10}

    monkeypatch.setattr(rmod, "measure", fake_measure)
    out = tmp_path / "rec.toml"
    _one_line_exit_2(["recommend", str(tiny_path), "--budget", "5", "--trials", "2",
                      "--quiet", "--out", str(out)], capsys,
                     "algorithm.lr = 0.1: no design beat the initial model's validation "
                     f"accuracy in any of the 50 pilot runs of 5 s {said}")
    assert not out.exists()


def test_tune_simulated_holds_back_the_simulators_warnings(tiny_path, tmp_path, capsys) -> None:  # noqa: ANN001
    # Trials of 2 s leave too few completions for the warm-up: every trial used to print
    # the same "run too short" warning; now one summary line says how many there were.
    code = main(["tune", str(tiny_path), "--objective", "simulated", "--trials", "3",
                 "--budget", "2", "--no-plots", "--no-progress", "--no-tensorboard",
                 "--out", str(tmp_path / "o")])
    assert code == 0
    err = capsys.readouterr().err
    assert "WARNING raysync.simulation.engine" not in err
    (line,) = [ln for ln in err.splitlines() if "simulator warnings held back" in ln]
    assert "run too short to leave its warm-up" in line
    assert "every trial is scored on the same budget" in line


def test_tune_write_config_writes_the_best_trials_design(tiny_path, tmp_path, capsys) -> None:  # noqa: ANN001
    from raysync.config import load_config

    out = tmp_path / "new" / "tuned.toml"
    base = ["tune", str(tiny_path), "--objective", "bound", "--trials", "12", "--budget", "40",
            "--constants", C_TEXT, "--no-plots", "--no-progress", "--no-tensorboard",
            "--json", "--out", str(tmp_path / "o")]
    assert main([*base, "--write-config", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    best = report["best"][0]
    tuned = load_config(out)
    assert tuned.routing.kind == "fixed" and tuned.concurrency == best["concurrency"]
    assert tuned.routing.p == pytest.approx(best["p"], rel=1e-12)
    original = load_config(tiny_path)
    assert tuned.algorithm == original.algorithm and tuned.run == original.run
    assert report["written_config"] == str(out)
    assert main(["validate", str(out)]) == 0
    capsys.readouterr()
    # Refused before any trial: a Pareto front has no single best, and CONFIG itself.
    _one_line_exit_2([*base[:-2], "--out", str(tmp_path / "m"), "--multi-objective",
                      "budget", "--write-config", str(tmp_path / "x.toml")], capsys,
                     "--write-config needs a single objective")
    _one_line_exit_2([*base, "--write-config", str(tiny_path)], capsys, "is CONFIG itself")
    assert not (tmp_path / "m").exists()
