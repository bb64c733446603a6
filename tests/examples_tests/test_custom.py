"""examples/custom: the user workloads run with the unchanged CLI (small budgets)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from raysync.cli import main
from raysync.config import load_config
from raysync.simulation import simulate
from raysync.workload import build_workload

ROOT = Path(__file__).resolve().parents[2]
CUSTOM = ROOT / "examples" / "custom"


@pytest.fixture(autouse=True)
def _from_the_repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # the configs name their modules as examples.custom.<module>, from the repo root
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))


def _simulate(config: Path, updates: int, capsys: pytest.CaptureFixture[str]) -> dict:
    code = main(["simulate", str(config), "--num-updates", str(updates), "--json", "--no-progress"])
    assert code == 0
    return json.loads(capsys.readouterr().out)


def test_diabetes_has_a_natural_split_by_age_and_learns(
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = load_config(CUSTOM / "diabetes.toml")
    wl = build_workload(config)
    ages = [wl.dataset.x_train[ix, 0] for ix in wl.client_indices]
    # clients are age quartiles: disjoint, ordered age bands (non-IID by construction)
    for younger, older in zip(ages[:-1], ages[1:], strict=True):
        assert younger.max() <= older.min()
    assert wl.client_sizes.sum() == wl.dataset.num_train
    assert wl.model.loss == "mse" and not wl.dataset.is_classification
    out = _simulate(CUSTOM / "diabetes.toml", 300, capsys)
    losses = out["test_loss"]
    # standardised targets: predicting 0 costs ~1; 300 SGD steps must beat the start
    assert losses[-1] < losses[0]
    assert np.isfinite(losses).all()
    # a regression reports its metric under its own name, not as an "accuracy"
    assert config.model.metric_label == "metric (neg_loss)"
    assert (
        main(["simulate", str(CUSTOM / "diabetes.toml"), "--num-updates", "20", "--no-progress"])
        == 0
    )
    text = capsys.readouterr().out
    assert "final test metric (neg_loss): -" in text and "final test accuracy" not in text


def test_residual_cnn_learns_digits_and_runs_the_mnist_config(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from examples.custom.residual_cnn import ResidualCNN, digits_images, make_model

    config = load_config(CUSTOM / "resnet_mnist.toml")
    wl = build_workload(config, data_factory=digits_images, data_kwargs={})
    assert isinstance(wl.model.build(), ResidualCNN)
    assert wl.dataset.x_train.shape[1:] == (1, 8, 8)  # the factory's NCHW images
    assert wl.model.factory == "examples.custom.residual_cnn:make_model"
    logits = make_model((1, 8, 8), 10, channels=8)(torch.zeros(2, 1, 8, 8))
    assert logits.shape == (2, 10)
    short = dataclasses.replace(config.run, num_updates=150, eval_every_updates=150)
    result = simulate(config.replace(run=short), workload=wl)
    assert result.final_test_loss < result.test_loss[0]
    out = _simulate(CUSTOM / "resnet_mnist.toml", 10, capsys)
    assert out["num_updates"] == 10 and np.isfinite(out["final_test_loss"])


@pytest.mark.ray
def test_diabetes_runs_on_ray_and_reports_measured_rates(
    ray_session,
    capsys: pytest.CaptureFixture[str],  # noqa: ANN001
) -> None:
    code = main(
        [
            "run",
            str(CUSTOM / "diabetes.toml"),
            "--num-updates",
            "40",
            "--json",
            "--no-progress",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["backend"] == "ray" and out["num_updates"] == 40
    rates = out["measured_service_rates"]  # time_scale = 0: mu_i from compute times
    assert len(rates) == 4 and min(rates) > 0
