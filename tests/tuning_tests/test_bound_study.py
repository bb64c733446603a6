"""Bound studies: TPE gets within 1% of the analytical optimiser; warm starts are exact."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest

from raysync.objectives import BoundObjective, optimize_joint
from tuning.objectives import BoundTrialObjective
from tuning.search_space import Candidate
from tuning.study import TuneSettings, make_storage, run_study

from .conftest import CONSTANTS

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _optimum(config, budget: float, cmax: int):
    objective = BoundObjective(
        mu=np.asarray(config.service_rates), constants=CONSTANTS, criterion="wall-clock",
        time_budget=budget,
    )
    return optimize_joint(objective, max_concurrency=cmax)


@pytest.mark.parametrize("family", ["simplex", "power"])
def test_cold_bound_study_within_one_percent_of_optimiser(tiny_config, tmp_path, family) -> None:
    reference = _optimum(tiny_config, 40.0, 8)
    report = run_study(
        tiny_config,
        TuneSettings(
            objective="bound", trials=250, budget=40.0, max_concurrency=8, constants=CONSTANTS,
            warm_start=False, family=family, out=tmp_path, tensorboard=False, seed=1,
        ),
    )
    best = report.best[0]
    assert best["values"][0] <= reference.value * 1.01
    assert best["values"][0] >= reference.value * (1 - 1e-6)  # the optimiser is optimal
    assert report.counts == {"COMPLETE": 250}
    assert "warm_start" not in best["user_attrs"]


def test_warm_start_enqueues_analytical_optimum_and_defaults(tiny_config, tmp_path) -> None:
    reference = _optimum(tiny_config, 40.0, 8)
    report = run_study(
        tiny_config,
        TuneSettings(
            objective="bound", trials=12, budget=40.0, max_concurrency=8, constants=CONSTANTS,
            out=tmp_path, tensorboard=True,
        ),
    )
    refs = report.references
    assert set(refs) == {"analytical", "uniform", "proportional"}
    assert refs["analytical"]["trial"] == 0
    assert refs["analytical"]["values"][0] == pytest.approx(reference.value, rel=1e-9)
    assert refs["uniform"]["concurrency"] == 4
    np.testing.assert_allclose(refs["uniform"]["p"], 0.25)
    mu = np.asarray(tiny_config.service_rates)
    np.testing.assert_allclose(refs["proportional"]["p"], mu / mu.sum())
    assert report.best[0]["values"][0] == pytest.approx(reference.value, rel=1e-9)
    # Every trial has its own TensorBoard run with hparams.
    runs = sorted((tmp_path / "tensorboard").iterdir())
    assert len(runs) == 12
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(runs[0]))
    acc.Reload()
    assert "tune/value" in acc.Tags()["scalars"]
    assert acc.PluginTagToContent("hparams")  # add_hparams was written
    saved = json.loads((tmp_path / "study.json").read_text())
    assert saved["best"][0]["concurrency"] == reference.concurrency


def test_multi_objective_bound_study_has_pareto_front(tiny_config, tmp_path) -> None:
    report = run_study(
        tiny_config,
        TuneSettings(
            objective="bound", trials=40, budget=40.0, max_concurrency=8, constants=CONSTANTS,
            multi_objective="staleness", out=tmp_path, tensorboard=False,
        ),
    )
    assert report.directions == ["minimize", "minimize"]
    assert report.metric_names == ["bound", "mean_client_staleness"]
    assert len(report.best) >= 2
    values = np.array([b["values"] for b in report.best])
    order = np.argsort(values[:, 1])
    assert np.all(np.diff(values[order, 0]) <= 1e-12)  # a front: less staleness, larger bound
    # Listed best first on the first objective (the bound, minimised), so "best (Pareto 1)"
    # is the front's lowest bound; the table shows both objectives.
    assert list(values[:, 0]) == sorted(values[:, 0])
    from tuning.report import format_report

    text = format_report(report, tiny_config)
    row = next(line for line in text.splitlines() if line.startswith("best (Pareto 1)"))
    assert f"{values[0, 0]:.5g} / {values[0, 1]:.5g}" in row
    assert "bound [E||grad f||^2] / mean_client_staleness" in text


def test_bound_trial_objective_terms_match_objectives_module(tiny_config) -> None:
    bound = BoundTrialObjective(tiny_config.service_rates, CONSTANTS)
    cand = Candidate(p=np.array([0.1, 0.2, 0.3, 0.4]), concurrency=3)
    outcome = bound.evaluate(cand, budget=40.0, multi="budget")
    reference = BoundObjective(
        mu=np.asarray(tiny_config.service_rates), constants=CONSTANTS, time_budget=40.0
    ).evaluate(cand.p, 3)
    assert outcome.values == (pytest.approx(reference.value), 40.0)
    assert outcome.attrs["bound"]["throughput"] == pytest.approx(reference.throughput)


def test_resuming_with_other_settings_is_refused(tiny_config, tmp_path) -> None:
    settings = TuneSettings(
        objective="bound", trials=5, budget=40.0, constants=CONSTANTS, out=tmp_path,
        tensorboard=False,
    )
    run_study(tiny_config, settings)
    with pytest.raises(ValueError, match="budget"):
        run_study(
            tiny_config,
            TuneSettings(
                objective="bound", trials=5, budget=20.0, constants=CONSTANTS, out=tmp_path,
                tensorboard=False,
            ),
        )
    # Same settings: resumes, and runs only the missing trials.
    report = run_study(
        tiny_config,
        TuneSettings(
            objective="bound", trials=9, budget=40.0, constants=CONSTANTS, out=tmp_path,
            tensorboard=False,
        ),
    )
    assert report.counts == {"COMPLETE": 9}


def test_min_p_constraint_is_recorded(tiny_config, tmp_path) -> None:
    run_study(
        tiny_config,
        TuneSettings(
            objective="bound", trials=20, budget=40.0, constants=CONSTANTS, out=tmp_path,
            tensorboard=False, min_p=0.1,
        ),
    )
    study = optuna.load_study(study_name="raysync", storage=make_storage(None, tmp_path))
    for trial in study.trials:
        value = trial.system_attrs["constraints:min_p"]  # trial.set_constraint("min_p", ...)
        assert value == pytest.approx(0.1 - min(trial.user_attrs["p"]))
