"""Reports: warm starts shown where they were evaluated, units on every number, settings."""

from __future__ import annotations

import argparse
import json

import numpy as np
import optuna
import pytest

from raysync.cli import main
from raysync.exceptions import ConfigError
from tuning.report import METRIC_UNITS, UNITS, format_report
from tuning.search_space import Candidate, make_search_space
from tuning.settings import TuneSettings, settings_from_args
from tuning.study import make_storage, run_study
from tuning.warm_start import evaluated_point

from .conftest import CONSTANTS

optuna.logging.set_verbosity(optuna.logging.WARNING)

C_TEXT = f"{CONSTANTS.L},{CONSTANTS.sigma2},{CONSTANTS.M2},{CONSTANTS.A}"


def test_clipped_warm_starts_are_reported_as_evaluated(tiny_config, tmp_path) -> None:
    events: list[str] = []
    report = run_study(
        tiny_config,
        TuneSettings(
            objective="bound", trials=8, budget=40.0, max_concurrency=2, constants=CONSTANTS,
            out=tmp_path, tensorboard=False,
        ),  # fmt: skip
        on_event=events.append,
    )
    warm = next(e for e in events if e.startswith("warm start"))
    assert "uniform (C=4 clipped to 2)" in warm and "proportional (C=4 clipped to 2)" in warm
    study = optuna.load_study(study_name="raysync", storage=make_storage(None, tmp_path))
    for label in ("uniform", "proportional"):
        ref = report.references[label]
        trial = study.trials[ref["trial"]]
        # The row holds the C and p the trial ran with, next to the value it measured.
        assert ref["concurrency"] == trial.user_attrs["concurrency"] == 2
        np.testing.assert_allclose(ref["p"], trial.user_attrs["p"])
        assert ref["values"] == [trial.value]
        assert ref["bound"] == pytest.approx(trial.value, rel=1e-12)
        assert ref["clipped"] is True and ref["requested"]["concurrency"] == 4
        assert ref["requested"]["bound"] != pytest.approx(ref["bound"])  # not the same point
    assert report.references["analytical"]["clipped"] is False
    assert "requested" not in report.references["analytical"]
    text = format_report(report, tiny_config)
    assert "uniform*" in text and "* uniform: C=4 clipped to 2" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.strip()}
    assert rows["uniform*"][1] == "2"


def test_projected_points_are_flagged_for_low_dimensional_families(tiny_config) -> None:
    space = make_search_space(tiny_config, family="power", max_concurrency=8)
    odd = Candidate(p=np.array([0.7, 0.1, 0.1, 0.1]), concurrency=3)
    point = evaluated_point(space, odd)
    assert not point.clipped and point.moved
    assert point.projection_error == pytest.approx(np.abs(point.evaluated.p - odd.p).max())
    assert "p projected" in point.note()
    on_family = evaluated_point(space, Candidate(p=np.full(4, 0.25), concurrency=3))
    assert not on_family.moved and on_family.note() == ""


def test_every_number_in_study_json_has_a_unit(tiny_path, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code = main([
        "tune", str(tiny_path), "--trials", "6", "--constants", C_TEXT, "--out", str(out),
        "--no-tensorboard", "--no-progress", "--no-plots", "--budget", "40",
    ])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    for unit in ("C [tasks]", "bound [E||grad f||^2]", "p [probability]", "(config time unit)"):
        assert unit in text
    saved = json.loads((out / "study.json").read_text())
    assert saved["units"] == UNITS
    assert saved["metric_units"] == [METRIC_UNITS["bound"]]
    numeric = {k for k, v in saved.items() if isinstance(v, int | float) and k != "evaluated"}
    assert numeric <= set(UNITS)
    for ref in saved["references"].values():
        for key, value in ref.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                assert key in UNITS or key == "trial", key
    for key in saved["best"][0]["user_attrs"]:
        if isinstance(saved["best"][0]["user_attrs"][key], float):
            assert key in UNITS, key


def test_counts_add_up_in_the_text(tiny_config, tmp_path) -> None:
    report = run_study(
        tiny_config,
        TuneSettings(
            objective="bound", trials=7, budget=40.0, constants=CONSTANTS, out=tmp_path,
            tensorboard=False,
        ),  # fmt: skip
    )
    assert report.evaluated == 7 == sum(report.counts.values())
    assert "trials: 7 evaluated (complete 7, pruned 0, failed 0)" in format_report(
        report, tiny_config
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"trials": 0}, "trials must be an integer >= 1, got 0"),
        ({"trials": 2.5}, "trials must be an integer >= 1"),
        ({"trials": True}, "trials must be an integer >= 1"),
        ({"parallel": 0}, "parallel must be an integer >= 1"),
        ({"num_evals": -1}, "num_evals must be an integer >= 1"),
        ({"trials": 10**30}, "trials must be at most 100,000 (a study's size), got 1,000"),
        ({"num_evals": 10_001}, "num_evals must be at most 10,000 (evaluations per run)"),
        ({"max_concurrency": 0}, "max_concurrency must be an integer >= 1"),
        ({"budget": float("nan")}, "budget must be a finite number > 0"),
        ({"budget": float("inf")}, "budget must be a finite number > 0"),
        ({"budget": -1.0}, "budget must be a finite number > 0"),
        ({"budget_range": (5.0, 1.0)}, "budget_range must have low < high"),
        ({"min_p": 1.5}, "min_p must be in (0, 1)"),
        ({"min_p": float("nan")}, "min_p must be in (0, 1)"),
        ({"eta": "fast"}, "eta must be 'optimal' or a number > 0"),
        ({"eta": 0.0}, "eta must be a finite number > 0"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"family": "cube"}, "family must be one of"),
        ({"pruner": "hyperband"}, "pruner must be one of"),
        ({"heartbeat_interval": 0}, "heartbeat_interval must be an integer >= 1"),
        ({"cpus_per_trial": 0.0}, "cpus_per_trial must be a finite number > 0"),
        ({"study_name": " "}, "study_name must be a non-empty string"),
        ({"storage": ""}, "storage must be a non-empty string"),
    ],
)
def test_bad_settings_are_one_line(changes, message) -> None:
    with pytest.raises(ConfigError) as info:
        TuneSettings(**changes)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_settings_from_args_is_the_one_mapping(tiny_path) -> None:
    args = argparse.Namespace(
        config=str(tiny_path), objective="simulated", trials=7, storage=None, study=None,
        family="tiers", parameterization="logits", max_concurrency=9, budget=12.5,
        multi_objective=None, parallel=2, out=None, num_evals=3, pruner="none",
        no_warm_start=True, constants=C_TEXT, seed=4, min_p=0.01, address=None,
        no_tensorboard=True,
    )  # fmt: skip
    s = settings_from_args(args)
    assert (s.objective, s.trials, s.family, s.parameterization) == (
        "simulated", 7, "tiers", "logits",
    )  # fmt: skip
    assert (s.max_concurrency, s.budget, s.parallel, s.num_evals, s.seed) == (9, 12.5, 2, 3, 4)
    assert s.study_name == "tiny-simulated" and str(s.out) == "tune-out/tiny-simulated"
    assert not s.warm_start and not s.tensorboard and s.min_p == 0.01
    assert s.constants == CONSTANTS
    # A caller with fewer flags (the cluster entry point) gets the defaults for the rest.
    short = settings_from_args(argparse.Namespace(config="x.toml", objective="bound"))
    assert short.trials == TuneSettings().trials and short.warm_start


def test_warm_starts_breaking_min_p_are_marked_infeasible(tiny_config, tmp_path) -> None:
    report = run_study(
        tiny_config,
        TuneSettings(
            objective="bound", trials=6, budget=40.0, constants=CONSTANTS, out=tmp_path,
            tensorboard=False, min_p=0.2,
        ),  # fmt: skip
    )
    text = format_report(report, tiny_config)
    for label in ("analytical", "proportional"):
        assert min(report.references[label]["p"]) < 0.2
        assert report.references[label]["infeasible"] == (
            "violates --min-p 0.2; not a feasible trial"
        )
        assert f"{label}*" in text
        assert f"* {label}: violates --min-p 0.2; not a feasible trial" in text
    assert "infeasible" not in report.references["uniform"]  # 0.25 >= 0.2
    assert "uniform*" not in text


def test_analytical_p_not_computed_prints_dash(tiny_config, tmp_path) -> None:
    from tuning.warm_start import warm_start_points

    report = run_study(
        tiny_config,
        TuneSettings(objective="bound", trials=4, budget=40.0, constants=CONSTANTS,
                     out=tmp_path, tensorboard=False),
    )
    # Without constants (simulated, --no-warm-start) there is no analytical reference row.
    assert "analytical" not in dict(warm_start_points(tiny_config, None))
    del report.references["analytical"]
    text = format_report(report, tiny_config)
    table = text[text.index("p analytical"):].splitlines()[1:5]
    assert all(line.split()[3] == "-" for line in table), table
    assert "nan" not in "\n".join(table)


def test_table_cells_say_missing_as_na_and_keep_infinities() -> None:
    from tuning.report import _fmt

    assert _fmt(None) == "-"
    assert _fmt(float("nan")) == "n/a"  # not measured
    assert _fmt(float("inf")) == "inf"  # an unstable design's bound is a value
    assert _fmt(float("-inf")) == "-inf"
    assert _fmt(0.123456789) == "0.12346"


def test_the_p_table_names_the_clients_the_config_names(tiny_config, tmp_path) -> None:
    import dataclasses

    named = tiny_config.replace(clients=tuple(
        dataclasses.replace(c, name="edge" if i < 2 else None)
        for i, c in enumerate(tiny_config.clients)
    ))
    report = run_study(
        named,
        TuneSettings(objective="bound", trials=3, budget=40.0, max_concurrency=2,
                     constants=CONSTANTS, out=tmp_path, tensorboard=False),
    )
    lines = format_report(report, named).splitlines()
    head = next(k for k, line in enumerate(lines) if line.split()[:2] == ["client", "name"])
    rows = [line.split()[:2] for line in lines[head + 1:head + 1 + named.num_clients]]
    assert rows == [["0", "edge"], ["1", "edge"]] + [[str(i), "-"]
                                                      for i in range(2, named.num_clients)]


@pytest.mark.parametrize(
    ("names", "best", "uniform", "expected"),
    [
        (["val_accuracy"], [0.9], [0.875],
         "best vs uniform (C=4): val_accuracy 0.9000 vs 0.8750 (+0.0250 fraction); selected"),
        # a Pareto front trades its objectives: the line shows each, not the first alone
        (["val_accuracy", "mean_client_staleness"], [0.9, 3.5], [0.875, 2.0],
         "best vs uniform (C=4): val_accuracy 0.9000 vs 0.8750 (+0.0250 fraction), "
         "mean_client_staleness 3.5000 vs 2.0000 (+1.5000 updates); selected"),
    ],
)  # fmt: skip
def test_best_vs_uniform_compares_every_objective(
    tiny_config, names: list[str], best: list[float], uniform: list[float], expected: str  # noqa: ANN001
) -> None:
    from tuning.report import StudyReport

    report = StudyReport(
        study_name="s", storage="mem", objective="simulated", directions=["maximize"] * len(names),
        metric_names=names, budget=1.0, counts={}, constants=None, wall_time=0.0,
        best=[{"p": None, "concurrency": 2, "values": best}],
        references={"uniform": {"p": None, "concurrency": 4, "values": uniform}},
    )  # fmt: skip
    line = next(x for x in format_report(report, tiny_config).splitlines()
                if x.startswith("best vs uniform"))
    assert line.startswith(expected)
