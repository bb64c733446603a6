"""Energy as the tuner's second objective (docs/network.md): Pareto front of bound vs joules."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from raysync.config import PowerSpec, RoutingConfig, ServerConfig, ServiceTimeSpec
from raysync.objectives.energy import predict_energy
from raysync.queueing import predict
from tuning.objectives import BoundTrialObjective, directions_for, metric_names_for
from tuning.search_space import Candidate
from tuning.study import TuneSettings, make_storage, run_study

from .conftest import CONSTANTS

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _powered(config):  # noqa: ANN001, ANN202
    import dataclasses

    clients = tuple(
        dataclasses.replace(
            c,
            downlink=ServiceTimeSpec(rate=4.0),
            power=PowerSpec(busy=f"{5 * (i + 1)} W", idle="1 W", transfer="0.2 J"),
        )
        for i, c in enumerate(config.clients)
    )
    server = ServerConfig(
        update_time=ServiceTimeSpec(rate=8.0), power=PowerSpec(busy="50 W", idle="10 W")
    )
    return config.replace(clients=clients, server=server)


def test_energy_is_minimised_and_named() -> None:
    assert directions_for("bound", "energy") == ["minimize", "minimize"]
    assert directions_for("simulated", "energy") == ["maximize", "minimize"]
    assert metric_names_for("bound", "energy") == ["bound", "energy_J"]


def test_bound_trial_energy_is_the_theory_power_times_the_budget(tiny_config) -> None:  # noqa: ANN001
    config = _powered(tiny_config)
    bound = BoundTrialObjective(config.service_rates, CONSTANTS, config=config)
    cand = Candidate(p=np.array([0.1, 0.2, 0.3, 0.4]), concurrency=3)
    outcome = bound.evaluate(cand, budget=40.0, multi="energy")
    fixed = config.replace(
        routing=RoutingConfig(kind="fixed", p=(0.1, 0.2, 0.3, 0.4)), concurrency=3
    )
    theory = predict(fixed)
    assert outcome.attrs["bound"]["throughput"] == pytest.approx(theory.throughput, rel=1e-9)
    expected = predict_energy(fixed, theory).power * 40.0
    assert outcome.values[1] == pytest.approx(expected, rel=1e-9)


def test_energy_bound_study_has_a_pareto_front_and_plot(tiny_config, tmp_path) -> None:  # noqa: ANN001
    config = _powered(tiny_config)
    report = run_study(
        config,
        TuneSettings(
            objective="bound", trials=40, budget=40.0, max_concurrency=8, constants=CONSTANTS,
            multi_objective="energy", out=tmp_path, tensorboard=False, seed=0,
        ),
    )  # fmt: skip
    assert report.metric_names == ["bound", "energy_J"]
    assert report.to_dict()["metric_units"][1] == "joules over the run (J)"
    values = np.array([b["values"] for b in report.best])
    assert len(values) >= 2
    order = np.argsort(values[:, 1])
    assert np.all(np.diff(values[order, 0]) <= 1e-12)  # more energy buys a lower bound
    from tuning.plots import plot_pareto

    study = optuna.load_study(study_name="raysync", storage=make_storage(None, tmp_path))
    png = plot_pareto(study, tmp_path / "pareto.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_analytical_warm_start_uses_the_stations(tiny_config, tmp_path) -> None:  # noqa: ANN001
    from raysync.objectives import BoundObjective, optimize_joint
    from raysync.queueing.predict import station_parameters

    config = _powered(tiny_config)
    latency, rate = station_parameters(config)
    reference = optimize_joint(
        BoundObjective(
            mu=np.asarray(config.service_rates), constants=CONSTANTS, criterion="wall-clock",
            time_budget=40.0, client_latency=latency, server_rate=rate,
        ),
        max_concurrency=8,
    )  # fmt: skip
    report = run_study(
        config,
        TuneSettings(
            objective="bound", trials=3, budget=40.0, max_concurrency=8, constants=CONSTANTS,
            out=tmp_path, tensorboard=False,
        ),
    )  # fmt: skip
    assert report.references["analytical"]["values"][0] == pytest.approx(reference.value, rel=1e-9)
    assert report.references["analytical"]["concurrency"] == reference.concurrency


@pytest.mark.parametrize("objective", ["bound", "simulated"])
def test_energy_without_power_is_refused(tiny_config, tmp_path, objective) -> None:  # noqa: ANN001
    from raysync.exceptions import ConfigError

    out = tmp_path / "study"
    settings = TuneSettings(
        objective=objective, trials=2, budget=40.0, max_concurrency=4, constants=CONSTANTS,
        multi_objective="energy", out=out, tensorboard=False, seed=0,
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"^multi_objective 'energy' \(--multi-objective "
                       r"energy\) needs power figures: set power = "):  # fmt: skip
        run_study(tiny_config, settings)
    assert not out.exists()  # refused before anything is written


def test_cli_help_names_the_energy_objective(capsys: pytest.CaptureFixture[str]) -> None:
    from raysync.cli import main

    with pytest.raises(SystemExit):
        main(["tune", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "the budget itself, or the energy over the run in joules" in help_text
