"""Simulated-accuracy studies on digits: pruning, parallel trials on Ray, TensorBoard."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from tuning.objectives import TrialSpec, run_simulated_trial, trial_config
from tuning.search_space import Candidate
from tuning.study import TuneSettings, make_storage, run_study

from .conftest import CONSTANTS

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _check_study(report, tmp_path, trials: int, *, pruning_is_deterministic: bool) -> optuna.Study:
    study = optuna.load_study(study_name="raysync", storage=make_storage(None, tmp_path))
    states = [t.state for t in study.trials]
    assert len(states) == trials
    assert set(states) <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    if pruning_is_deterministic:
        # Sequential trials in the driver: the pruner always sees the same history.
        assert states.count(optuna.trial.TrialState.PRUNED) >= 1
    # With parallel trials the pruner's history depends on which trial finishes first (a
    # matter of load), so whether any trial is pruned is not asserted there.
    assert states.count(optuna.trial.TrialState.COMPLETE) >= 4  # the warm starts at least
    for t in study.trials:
        assert t.intermediate_values, "every measured trial reports intermediate values"
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert 0.0 <= t.value <= 1.0
            assert t.user_attrs["accuracy_split"] == "val"
            assert 0.0 <= t.user_attrs["test_accuracy"] <= 1.0
            assert len(t.intermediate_values) == 4
        else:
            assert len(t.intermediate_values) < 4
    assert 0 < report.best[0]["values"][0] <= 1
    return study


def test_simulated_study_prunes_in_the_driver(tiny_config, tmp_path) -> None:
    report = run_study(
        tiny_config,
        TuneSettings(
            objective="simulated", trials=12, budget=20.0, num_evals=4, constants=CONSTANTS,
            out=tmp_path, max_concurrency=8,
        ),
    )
    study = _check_study(report, tmp_path, 12, pruning_is_deterministic=True)
    # Warm starts are measured and reported next to the best.
    assert {"analytical", "uniform", "proportional"} <= set(report.references)
    assert all("values" in ref for ref in report.references.values())
    # One TensorBoard run per trial, with the learning curve and hparams.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = sorted((tmp_path / "tensorboard").iterdir())
    assert len(runs) == len(study.trials)
    acc = EventAccumulator(str(runs[0]))
    acc.Reload()
    assert "val/accuracy" in acc.Tags()["scalars"]
    assert acc.PluginTagToContent("hparams")


@pytest.mark.ray
def test_simulated_study_runs_trials_in_parallel_on_ray(ray_session, tiny_config, tmp_path) -> None:
    report = run_study(
        tiny_config,
        TuneSettings(
            objective="simulated", trials=10, budget=20.0, num_evals=4, constants=CONSTANTS,
            out=tmp_path, max_concurrency=8, parallel=2, tensorboard=False,
        ),
    )
    _check_study(report, tmp_path, 10, pruning_is_deterministic=False)
    assert ray_session.is_initialized()  # the session's Ray was reused, not shut down


def test_multi_objective_simulated_study_never_prunes(tiny_config, tmp_path) -> None:
    report = run_study(
        tiny_config,
        TuneSettings(
            objective="simulated", trials=5, budget=10.0, num_evals=2, warm_start=False,
            multi_objective="budget", out=tmp_path, tensorboard=False,
        ),
    )
    assert report.counts == {"COMPLETE": 5}
    assert report.directions == ["maximize", "minimize"]
    for best in report.best:
        assert 10.0 / 8 <= best["values"][1] <= 10.0 + 1e-9


class _PruneAt:
    def __init__(self, step: int) -> None:
        self.step = step
        self.seen: list[tuple[int, float]] = []

    def report(self, step: int, value: float) -> bool:
        self.seen.append((step, value))
        return step >= self.step


def _spec(config, tmp_path, **kw) -> TrialSpec:
    cand = Candidate(p=np.full(4, 0.25), concurrency=4)
    return TrialSpec(
        number=7, kind="simulated", config=trial_config(config, cand, budget=20.0, num_evals=4),
        candidate=cand, budget=20.0, logdir=str(tmp_path), run_name="t7",
        hparams={"trial": 7}, **kw,
    )


def test_trial_is_pruned_when_the_reporter_says_so(tiny_config, tmp_path) -> None:
    reporter = _PruneAt(2)
    outcome = run_simulated_trial(_spec(tiny_config, tmp_path), reporter)
    assert outcome.state == "pruned"
    assert [s for s, _ in reporter.seen] == [1, 2]
    assert outcome.intermediate == tuple(reporter.seen)
    assert outcome.attrs["pruned_at_step"] == 2


def test_a_prune_decision_at_the_last_evaluation_completes_the_trial(tiny_config, tmp_path) -> None:
    # The pruner may answer "prune" to the last report (with parallel trials its history
    # depends on which trial finished first); the trial has then run its whole budget.
    reporter = _PruneAt(4)
    outcome = run_simulated_trial(_spec(tiny_config, tmp_path), reporter)
    assert [s for s, _ in reporter.seen] == [1, 2, 3, 4]
    assert outcome.state == "complete"
    assert outcome.values[0] == reporter.seen[-1][1]


def test_trial_failure_becomes_a_fail_outcome(tiny_config, tmp_path) -> None:
    spec = _spec(tiny_config, tmp_path)

    class Broken:
        num_clients = 99  # does not match the config: the simulator refuses it

    outcome = run_simulated_trial(spec, None, Broken())  # type: ignore[arg-type]
    assert outcome.state == "fail"
    assert outcome.message


def test_trial_config_replaces_routing_concurrency_and_budget(tiny_config) -> None:
    cand = Candidate(p=np.array([0.1, 0.2, 0.3, 0.4]), concurrency=7)
    cfg = trial_config(tiny_config, cand, budget=12.0, num_evals=3)
    assert cfg.routing.kind == "fixed" and cfg.routing.p == pytest.approx((0.1, 0.2, 0.3, 0.4))
    assert cfg.concurrency == 7
    assert cfg.run.time_budget == 12.0 and cfg.run.num_updates is None
    assert math.isclose(cfg.run.eval_every_seconds, 4.0)
    sgd = tiny_config.replace(
        algorithm=tiny_config.algorithm.__class__(name="asyncsgd"),
        routing=tiny_config.routing.__class__(kind="return_to_sender"),
    )
    assert trial_config(sgd, cand, budget=1.0, num_evals=1).algorithm.name == "generalized_asyncsgd"
