"""A study is bound to its problem: a resume with anything else is refused in one line."""

from __future__ import annotations

import dataclasses

import optuna
import pytest

from raysync.exceptions import ConfigError
from raysync.objectives import ProblemConstants
from tuning.recovery import PROBLEM_ATTR, bind_study, problem_fingerprint
from tuning.search_space import make_search_space
from tuning.study import TuneSettings, make_storage, run_study

from .conftest import CONSTANTS, TINY, _load

optuna.logging.set_verbosity(optuna.logging.WARNING)

# The same four clients as TINY, each twice as fast.
FAST = TINY.replace("rate = 1.0", "rate = 2.5").replace("rate = 0.5", "rate = 1.5")


def _settings(tmp_path, **changes) -> TuneSettings:
    base = {
        "objective": "bound", "trials": 6, "budget": 40.0, "constants": CONSTANTS,
        "out": tmp_path, "tensorboard": False, "max_concurrency": 8,
    }  # fmt: skip
    return TuneSettings(**{**base, **changes})


@pytest.mark.parametrize(
    ("changes", "component", "detail"),
    [
        ({"budget": 20.0}, "budget", "budget was 40.0, now 20.0"),
        ({"max_concurrency": 5}, "search_space", "max_concurrency was 8, now 5"),
        ({"family": "power"}, "search_space", "family was"),
        ({"eta": 0.01}, "objective", "eta was"),
        (
            {"constants": dataclasses.replace(CONSTANTS, L=2 * CONSTANTS.L)},
            "objective",
            "constants.L was",
        ),
        ({"multi_objective": "budget"}, None, "exists with directions ['minimize'], not"),
    ],
)
def test_changed_settings_are_refused_naming_what_changed(
    tiny_config, tmp_path, changes, component, detail
) -> None:
    run_study(tiny_config, _settings(tmp_path))
    with pytest.raises(ConfigError) as info:
        run_study(tiny_config, _settings(tmp_path, **changes))
    text = str(info.value)
    assert "\n" not in text
    assert detail in text
    if component is not None:
        assert f"{component} (" in text and "created for another problem" in text


def test_changed_fleet_with_the_same_size_is_refused(tiny_config, tmp_path, tmp_path_factory):
    fast = _load(FAST, tmp_path_factory, "fast")
    assert fast.num_clients == tiny_config.num_clients
    run_study(fast, _settings(tmp_path))
    with pytest.raises(ConfigError, match=r"fleet \(groups\[0\]\.service_time\.rate was 2\.5"):
        run_study(tiny_config, _settings(tmp_path))
    # The original problem resumes, and its report is the fast fleet's own.
    report = run_study(fast, _settings(tmp_path, trials=8))
    assert report.evaluated == 8


def test_measured_studies_bind_data_model_and_training(tiny_config, tmp_path) -> None:
    settings = _settings(tmp_path, objective="simulated", num_evals=2)
    space = make_search_space(tiny_config, max_concurrency=8)
    base = problem_fingerprint(tiny_config, settings, budget=40.0, space=space, constants=None)
    assert {"fleet", "objective", "budget", "search_space", "data", "model", "training"} <= set(
        base
    )
    study = optuna.create_study(study_name="m", storage=make_storage(None, tmp_path))
    assert bind_study(study, base) is True  # new: written
    assert bind_study(study, base) is False  # same: accepted
    for section, field, value in [
        ("data", "partition", "dirichlet"),
        ("model", "name", "mlp"),
        ("algorithm", "lr", 0.5),
    ]:
        changed = tiny_config.replace(
            **{section: dataclasses.replace(getattr(tiny_config, section), **{field: value})}
        )
        other = problem_fingerprint(changed, settings, budget=40.0, space=space, constants=None)
        name = "training" if section == "algorithm" else section
        with pytest.raises(ConfigError, match=rf"{name} \(.*{field} was"):
            bind_study(study, other)
    more_evals = dataclasses.replace(settings, num_evals=4)
    other = problem_fingerprint(tiny_config, more_evals, budget=40.0, space=space, constants=None)
    with pytest.raises(ConfigError, match=r"objective \(num_evals was 2, now 4\)"):
        bind_study(study, other)
    # Settings that do not change the problem are free to change.
    free = dataclasses.replace(settings, seed=3, pruner="none", parallel=2, trials=50)
    same = problem_fingerprint(tiny_config, free, budget=40.0, space=space, constants=None)
    assert bind_study(study, same) is False


def test_keys_recorded_by_one_version_only_are_not_differences(tiny_config, tmp_path) -> None:
    settings = _settings(tmp_path)
    space = make_search_space(tiny_config, max_concurrency=8)
    fp = problem_fingerprint(tiny_config, settings, budget=40.0, space=space, constants=CONSTANTS)
    study = optuna.create_study(study_name="v", storage=make_storage(None, tmp_path))
    bind_study(study, fp)
    newer = {**fp, "objective": {**fp["objective"], "new_option": 1}, "extra": {"x": 1}}
    assert bind_study(study, newer) is False


def test_a_study_from_before_fingerprints_is_checked_then_adopted(tiny_config, tmp_path) -> None:
    study = optuna.create_study(study_name="raysync", storage=make_storage(None, tmp_path))
    study.set_user_attr("budget", 10.0)  # how older versions recorded their settings
    with pytest.raises(ConfigError, match="created with budget=10.0"):
        run_study(tiny_config, _settings(tmp_path))
    study.set_user_attr("budget", 40.0)
    run_study(tiny_config, _settings(tmp_path))
    assert PROBLEM_ATTR in optuna.load_study(
        study_name="raysync", storage=make_storage(None, tmp_path)
    ).user_attrs


def test_estimated_constants_are_reused_on_resume(tiny_config, tmp_path, monkeypatch) -> None:
    run_study(tiny_config, _settings(tmp_path))  # stores CONSTANTS in the study
    import raysync.objectives as objectives

    def no_pilot(config):  # a resume must not run (or need) a new pilot
        raise AssertionError("constants were estimated again")

    monkeypatch.setattr(objectives, "estimate_constants_for_config", no_pilot)
    report = run_study(tiny_config, _settings(tmp_path, constants=None, trials=8))
    assert report.constants == CONSTANTS.to_dict()
    assert ProblemConstants(**report.constants) == CONSTANTS


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_a_study_another_program_made_is_refused_unchanged(tiny_config, tmp_path, kind) -> None:
    url = (str(tmp_path / "foreign.journal") if kind == "journal"
           else f"sqlite:///{tmp_path / 'foreign.db'}")
    storage = make_storage(url, tmp_path)
    foreign = optuna.create_study(study_name="raysync", storage=storage, direction="minimize")
    foreign.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    before = [(t.params, t.value) for t in foreign.trials]
    with pytest.raises(ConfigError) as info:
        run_study(tiny_config, _settings(tmp_path, storage=url, study_name="raysync"))
    text = str(info.value)
    assert "\n" not in text
    assert "'raysync' in this storage was not created by raysync tune (its 3 trials" in text
    again = optuna.load_study(study_name="raysync", storage=make_storage(url, tmp_path))
    assert [(t.params, t.value) for t in again.trials] == before
    assert again.metric_names is None and again.user_attrs == {}
    # An empty study is nothing to mix with: tune takes it.
    optuna.create_study(study_name="empty", storage=storage, direction="minimize")
    report = run_study(tiny_config, _settings(tmp_path, storage=url, study_name="empty"))
    assert report.evaluated == 6


def test_another_objective_on_resume_names_the_metrics(tiny_config, tmp_path) -> None:
    run_study(tiny_config, _settings(tmp_path))
    with pytest.raises(ConfigError, match=r"\(it records \['bound'\], this run \['bound', "):
        run_study(tiny_config, _settings(tmp_path, multi_objective="budget"))


def test_a_resume_with_trials_already_reached_says_nothing_runs(tiny_config, tmp_path) -> None:
    run_study(tiny_config, _settings(tmp_path, trials=8))
    events: list[str] = []
    report = run_study(tiny_config, _settings(tmp_path, trials=3), on_event=events.append)
    assert report.evaluated == 8
    resumed = next(e for e in events if e.startswith("resuming study"))
    assert ("8 evaluated trials; --trials 3 counts the study's total and is reached: "
            "nothing new to run (raise --trials to continue)") in resumed


def test_tuning_an_asyncsgd_config_says_what_is_searched(tiny_config, tmp_path) -> None:
    import dataclasses

    from raysync.config import RoutingConfig

    asyncsgd = tiny_config.replace(
        algorithm=dataclasses.replace(tiny_config.algorithm, name="asyncsgd"),
        routing=RoutingConfig(kind="return_to_sender"),
    )
    events: list[str] = []
    run_study(asyncsgd, _settings(tmp_path, trials=3), on_event=events.append)
    assert ("note: tune searches random routing p with generalized_asyncsgd; the config's "
            "asyncsgd with routing 'return_to_sender' is not in that space") in "\n".join(events)
    events.clear()
    run_study(tiny_config, _settings(tmp_path / "plain", trials=3), on_event=events.append)
    assert not [e for e in events if e.startswith("note: tune searches")]


def test_warm_starts_beyond_the_trials_are_not_left_waiting(tiny_config, tmp_path) -> None:
    events: list[str] = []
    run_study(tiny_config, _settings(tmp_path, trials=2), on_event=events.append)
    study = optuna.load_study(study_name="raysync", storage=make_storage(None, tmp_path))
    states = [t.state for t in study.trials]
    assert len(states) == 2 and optuna.trial.TrialState.WAITING not in states
    # A resume with more trials enqueues the warm starts not run yet, once each.
    events.clear()
    report = run_study(tiny_config, _settings(tmp_path, trials=6), on_event=events.append)
    assert report.evaluated == 6
    study = optuna.load_study(study_name="raysync", storage=make_storage(None, tmp_path))
    assert optuna.trial.TrialState.WAITING not in [t.state for t in study.trials]
    labels = [t.user_attrs.get("warm_start") for t in study.trials]
    named = [x for x in labels if x]
    assert len(named) == len(set(named)) >= 3
