"""PNG plots from synthetic studies (no training)."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from tuning.plots import plot_best_p, plot_history, plot_intermediate, plot_pareto, write_plots
from tuning.study import StudyReport

optuna.logging.set_verbosity(optuna.logging.WARNING)

PNG = b"\x89PNG"

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _single_study() -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    study.set_metric_names(["val_accuracy"])
    rng = np.random.default_rng(0)
    for k in range(12):
        trial = study.ask()
        trial.suggest_int("concurrency", 1, 8)
        if k == 0:
            trial.set_user_attr("warm_start", "analytical")
        for step in (1, 2, 3):
            trial.report(0.5 + 0.1 * step + 0.05 * rng.random(), step)
            if k % 3 == 2 and step == 2:
                break
        if k % 3 == 2:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, 0.8 + 0.01 * k)
    return study


def test_history_and_intermediate_plots(tmp_path) -> None:
    study = _single_study()
    for path in (
        plot_history(study, tmp_path / "h.png"),
        plot_intermediate(study, tmp_path / "i.png"),
    ):
        assert path.read_bytes()[:4] == PNG


def test_pareto_and_best_p(tmp_path) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    for k in range(10):
        trial = study.ask()
        x = trial.suggest_float("x", 0, 1)
        study.tell(trial, [x, x * x + 0.1 * k])
    assert plot_pareto(study, tmp_path / "p.png").read_bytes()[:4] == PNG
    path = plot_best_p(
        [1, 2, 4], {"best": ([0.2, 0.3, 0.5], 3), "uniform": ([1 / 3] * 3, 3)}, tmp_path / "b.png"
    )
    assert path.read_bytes()[:4] == PNG


def test_write_plots_picks_what_applies(tmp_path) -> None:
    study = _single_study()
    report = StudyReport(
        study_name="s", storage="mem", objective="simulated", directions=["maximize"],
        metric_names=["val_accuracy"], budget=1.0, counts={}, constants=None, wall_time=0.0,
        best=[{"p": [0.5, 0.5], "concurrency": 2, "values": [0.9]}],
        references={"uniform": {"p": [0.5, 0.5], "concurrency": 2}},
    )
    names = sorted(p.name for p in write_plots(study, report, [1.0, 2.0], tmp_path))
    assert names == ["best_p.png", "history.png", "intermediate.png"]
