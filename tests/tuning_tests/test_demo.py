"""``raysync demo``: helpers (fast) and the whole pipeline on digits (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from raysync.cli import main
from raysync.config import load_config
from tests._cli import exit_code
from tuning.demo import _tiers, _variant, default_config_path

from .conftest import CONSTANTS

C_TEXT = f"{CONSTANTS.L},{CONSTANTS.sigma2},{CONSTANTS.M2},{CONSTANTS.A}"

DEMO_TINY = """
seed = 0
concurrency = 4

[routing]
kind = "uniform"

[algorithm]
name = "generalized_asyncsgd"
lr = 0.1
batch_size = 16

[data]
dataset = "digits"

[run]
time_budget = 3.0
time_scale = 1.0

[[clients]]
name = "fast"
count = 2
service_time = { kind = "exponential", rate = 40.0 }
num_cpus = 0.1

[[clients]]
name = "slow"
count = 2
service_time = { kind = "exponential", rate = 8.0 }
num_cpus = 0.1
"""


def test_packaged_demo_config_is_three_tiers_of_exponential_clients() -> None:
    config = load_config(default_config_path())
    assert 10 <= config.num_clients <= 20
    tiers = _tiers(config)
    assert len(tiers) == 3
    means_ms = [1000.0 * config.run.time_scale / config.service_rates[m[0]] for _, m in tiers]
    assert min(means_ms) >= 20 - 1e-9 and max(means_ms) <= 200 + 1e-9
    assert all(c.service_time.kind == "exponential" for c in config.clients)
    assert config.data.dataset == "mnist"
    assert sum(c.num_cpus for c in config.clients) <= 2  # fits a 2-core machine


def test_variants_share_budget_and_differ_in_routing(tmp_path) -> None:
    path = tmp_path / "d.toml"
    path.write_text(DEMO_TINY)
    config = load_config(path)
    default = _variant(config, "default", budget=5.0)
    optimised = _variant(config, "optimised", budget=5.0, p=[0.4, 0.4, 0.1, 0.1], concurrency=7)
    asyncsgd = _variant(config, "asyncsgd", budget=5.0)
    for cfg in (default, optimised, asyncsgd):
        assert cfg.run.time_budget == 5.0 and cfg.run.num_updates is None
        assert cfg.run.eval_every_seconds == pytest.approx(5.0 / 12)
    assert default.routing.kind == "uniform" and default.concurrency == 4
    assert optimised.routing.kind == "fixed" and optimised.concurrency == 7
    np.testing.assert_allclose(optimised.routing.p, [0.4, 0.4, 0.1, 0.1])
    assert asyncsgd.routing.kind == "return_to_sender" and asyncsgd.algorithm.name == "asyncsgd"


@pytest.mark.slow
@pytest.mark.ray
def test_demo_end_to_end_on_digits(tmp_path, capsys) -> None:
    path = tmp_path / "d.toml"
    path.write_text(DEMO_TINY)
    out = tmp_path / "out"
    code = main([
        "demo", str(path), "--out", str(out), "--budget", "3", "--trials", "20",
        "--constants", C_TEXT, "--no-progress",
    ])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "gain of optimised over default" in text
    assert "gain of optimised over asyncsgd" in text
    summary = json.loads((out / "demo.json").read_text())
    assert set(summary["runs"]) == {"default", "optimised", "asyncsgd"}
    for run in summary["runs"].values():
        assert 0.0 <= run["final_test_accuracy"] <= 1.0 and run["num_updates"] > 0
    gain = summary["gain_test_accuracy"]["default"]
    runs = summary["runs"]
    assert gain == pytest.approx(
        runs["optimised"]["final_test_accuracy"] - runs["default"]["final_test_accuracy"]
    )
    for name in ("accuracy_vs_time.png", "routing.png", "bound_vs_concurrency.png"):
        assert (out / name).exists()
    assert (out / "tune" / "study.journal").exists()
    for label in ("default", "optimised", "asyncsgd"):
        assert list((out / "tensorboard" / label).glob("events.out.tfevents.*"))


@pytest.mark.parametrize(("flag", "value", "match"), [
    ("--recommend-trials", "-1", "--recommend-trials must be an integer >= 0, got -1"),
    ("--max-concurrency", "0", "--max-concurrency must be an integer >= 1, got 0"),
    ("--max-concurrency", "-1", "--max-concurrency must be an integer >= 1, got -1"),
    ("--max-concurrency", "10000000", "--max-concurrency 10,000,000 with n=4 clients needs"),
    ("--constants", "nan,1,1,1", "--constants 'nan,1,1,1': constants.L must be finite"),
    ("--trials", "-2", "--trials must be an integer >= 0, got -2"),
    ("--trials", "100001", "--trials must be at most 100,000 (a study's size), got 100,001"),
    ("--recommend-trials", str(10**29), "--recommend-trials must be at most 100,000"),
    ("--seed", "-1", "--seed must be an integer >= 0, got -1"),
    ("--budget", "nan", "argument --budget: must be a finite number, got 'nan'"),
    # was refused only after stages 1-3, leaving their files in --out
    ("--budget", "1e30", "--budget 1e+30 s is too long to simulate: AsyncSGD"),
    # was taken as "no constants": the pilot ran instead
    ("--constants", "", "--constants must be 'L,sigma2,M2,A', got ''"),
    # was refused at stage 4, after stages 1-3 had written their files
    ("--address", "127.0.0.1:1", "cannot reach the Ray cluster at '127.0.0.1:1'"),
])  # fmt: skip
def test_demo_bad_numeric_flags_refused_up_front(tiny_path, tmp_path, capsys, flag, value,
                                                 match) -> None:  # noqa: ANN001
    out = tmp_path / "demo-out"
    code = exit_code(["demo", str(tiny_path), "--out", str(out), f"{flag}={value}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and match in err[0], err
    assert not out.exists()  # refused before any stage wrote anything


def test_demo_refuses_an_empty_config_path(tmp_path, capsys) -> None:  # noqa: ANN001
    # An empty path ran the packaged demo config instead of the one meant.
    out = tmp_path / "demo-out"
    assert main(["demo", "", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["raysync demo: error: config must be a file path, got ''"], err
    assert not out.exists()
    assert not out.exists()  # refused before any stage ran


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_demo_out_that_cannot_be_a_directory_names_the_flag(
    tiny_path, tmp_path, capsys, where
) -> None:  # noqa: ANN001
    existing = tmp_path / "existing"
    existing.write_text("keep me")
    out = existing if where == "file" else existing / "sub"
    code = main(["demo", str(tiny_path), "--out", str(out), "--trials", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    assert f"--out {str(out)!r} cannot be used as a directory" in err[0], err
    assert existing.read_text() == "keep me"


def test_same_design_tells_a_tie_by_design_from_a_gain() -> None:
    from tuning.demo import _same_design

    config = load_config(default_config_path())
    asyncsgd = _variant(config, "asyncsgd", budget=2.0)
    assert _same_design(asyncsgd, asyncsgd.replace(seed=asyncsgd.seed + 1))  # the run differs
    assert not _same_design(asyncsgd, _variant(config, "default", budget=2.0))
    n = config.num_clients
    routed = _variant(config, "optimised", budget=2.0, p=[1.0 / n] * n, concurrency=n + 1)
    assert not _same_design(asyncsgd, routed)
