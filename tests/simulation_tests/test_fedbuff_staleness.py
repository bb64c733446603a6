"""FedBuff's staleness in both units against the theory (docs/fedbuff.md).

The closed-network theory counts delays in completions; a FedBuff server with a buffer of
``B`` applies one model version per ``B`` completions, and the delay a strategy sees is in
versions. The relation checked here is ``E[D_versions_i] = E[D_completions_i] / B``
(exact in steady state for any service distribution, because the buffer's phase at
dispatch is uniform and independent of the queues), and the sample-path identities
``mean over completions of D_completions = C - 1`` and ``of D_versions = (C - 1) / B``
(each version change finds exactly ``C - 1`` older tasks in flight).

Statistics: each network is one family of ``2n + 2`` batch-means intervals at family-wise
level 99 % (Bonferroni), as in ``test_theory_agreement.py``; seeds fixed before the first
run. Batches hold ~6,000 completions, far longer than the networks' relaxation times.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from raysync.config import (
    AlgorithmConfig,
    ClientSpec,
    DataConfig,
    ModelConfig,
    RoutingConfig,
    RunConfig,
    ServiceTimeSpec,
    SystemConfig,
)
from raysync.monitoring import summary_scalars, theory_scalars
from raysync.queueing import predict
from raysync.simulation import RunResult, simulate
from raysync.simulation.report import format_report, theory_prediction

MU = (1.0, 2.0, 4.0, 0.5)
P = (0.4, 0.3, 0.2, 0.1)
FAMILY_LEVEL = 0.99


def fedbuff_config(
    buffer: int,
    *,
    concurrency: int = 6,
    updates: int = 40_000,
    train: bool = False,
    kind: str = "exponential",
    seed: int = 0,
) -> SystemConfig:
    def spec(rate: float) -> ServiceTimeSpec:
        if kind == "exponential":
            return ServiceTimeSpec(kind="exponential", rate=rate)
        return ServiceTimeSpec(kind="lognormal", mean=1.0 / rate, cv=3.0)

    return SystemConfig(
        clients=tuple(ClientSpec(service_time=spec(m)) for m in MU),
        concurrency=concurrency,
        routing=RoutingConfig(kind="fixed", p=P),
        algorithm=AlgorithmConfig(name="fedbuff", lr=0.05, batch_size=16, buffer_size=buffer),
        data=DataConfig(dataset="digits", partition="iid"),
        model=ModelConfig(name="logreg"),
        run=RunConfig(num_updates=updates, train=train, eval_every_updates=None),
        seed=seed,
    )


def _se(ci: np.ndarray, num_batches: int, confidence: float) -> np.ndarray:
    """Standard errors behind the result's t-intervals."""
    half = (np.asarray(ci)[..., 1] - np.asarray(ci)[..., 0]) / 2.0
    return half / stats.t.ppf(0.5 + confidence / 2.0, num_batches - 1)


def _family_t(res: RunResult, size: int) -> float:
    return float(stats.t.ppf(1.0 - (1.0 - FAMILY_LEVEL) / (2 * size), res.num_batches - 1))


@pytest.mark.parametrize("buffer", [1, 5])
def test_delays_in_both_units_match_theory(buffer: int) -> None:
    cfg = fedbuff_config(buffer)
    res = simulate(cfg, queue_only=True)
    th = predict(cfg)
    assert res.buffer_size == buffer == th.buffer_size
    assert res.num_updates == 40_000 and res.num_completions == 40_000 * buffer
    assert res.num_batches == 30 and res.warnings == ()
    n = len(MU)
    t = _family_t(res, 2 * n + 2)
    se_c = _se(res.completion_delay_ci, res.num_batches, res.confidence)
    se_v = _se(res.relative_delay_ci, res.num_batches, res.confidence)
    err_c = np.abs(res.mean_completion_delay - th.mean_relative_delay)
    err_v = np.abs(res.mean_relative_delay - th.mean_relative_delay / buffer)
    assert np.all(err_c <= t * se_c), (res.mean_completion_delay, th.mean_relative_delay)
    assert np.all(err_v <= t * se_v), (res.mean_relative_delay, th.mean_relative_delay / buffer)
    # Sample-path identities, up to the window's edges (a few C-sized terms out of
    # ~100,000 completions): far tighter than any interval.
    c = cfg.concurrency
    assert res.mean_completion_staleness == pytest.approx(c - 1, rel=2e-3)
    assert res.mean_staleness == pytest.approx((c - 1) / buffer, rel=2e-3)
    assert res.throughput == pytest.approx(th.throughput, rel=0.03)
    assert res.version_throughput == pytest.approx(th.throughput / buffer, rel=0.03)


def test_version_delay_is_completion_delay_over_b_for_lognormal_service() -> None:
    """The unit relation does not need the product form: lognormal service, cv = 3.

    The closed forms are only approximations here, but measured versions and measured
    completions / B estimate the same number; both intervals come from the same batches,
    so the sum of their half-widths at the family level bounds the difference.
    """
    buffer = 4
    res = simulate(fedbuff_config(buffer, kind="lognormal", updates=50_000), queue_only=True)
    t = _family_t(res, len(MU))
    se_c = _se(res.completion_delay_ci, res.num_batches, res.confidence) / buffer
    se_v = _se(res.relative_delay_ci, res.num_batches, res.confidence)
    diff = np.abs(res.mean_relative_delay - res.mean_completion_delay / buffer)
    assert np.all(diff <= t * (se_c + se_v)), (res.mean_relative_delay, res.mean_completion_delay)
    assert res.mean_staleness == pytest.approx(5 / buffer, rel=2e-3)


def test_training_run_measures_versions_and_completions() -> None:
    """With the real FedBuff strategy the version advances every B results, as modelled."""
    cfg = fedbuff_config(5, updates=400, train=True)
    res = simulate(cfg)
    assert res.buffer_size == 5 and res.num_updates == 400 and res.num_completions == 2000
    # Identities over the window: versions ~ (C - 1) / B and completions ~ C - 1.
    assert res.mean_staleness == pytest.approx(1.0, abs=0.02)
    assert res.mean_completion_staleness == pytest.approx(5.0, abs=0.1)
    assert res.max_relative_delay < res.extras["max_completion_delay"]


def test_theory_json_and_result_json_share_keys_and_units(tmp_path: Path) -> None:
    cfg = fedbuff_config(5, updates=2_000)
    res = simulate(cfg, queue_only=True)
    theory = theory_prediction(cfg)
    res.save(tmp_path)
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["units"] == theory["units"]
    assert theory["mean_staleness"] == pytest.approx(1.0)
    assert theory["mean_completion_staleness"] == pytest.approx(5.0)
    assert theory["mean_relative_delay"] == pytest.approx(
        [d / 5 for d in theory["mean_completion_delay"]]
    )
    assert theory["version_throughput"] == pytest.approx(theory["throughput"] / 5)
    for key in ("mean_staleness", "mean_completion_staleness"):  # same key, same unit
        assert abs(saved[key] / theory[key] - 1) < 0.15
    assert saved["buffer_size"] == theory["buffer_size"] == 5
    back = RunResult.load(tmp_path)
    assert back.buffer_size == 5
    np.testing.assert_array_equal(back.mean_completion_delay, res.mean_completion_delay)
    text = format_report(cfg, res, theory)
    assert "2000 model versions = 10000 completions" in text
    assert "mean staleness in completions (docs/theory.md sec. 2):" in text
    assert "mean staleness in model versions (completions / B):" in text
    assert "theory: 1\n" in text + "\n" and "theory: 5\n" in text


@pytest.mark.parametrize("buffer", [1, 5])
def test_warm_up_and_window_count_completions_not_versions(tmp_path: Path, buffer: int) -> None:
    res = simulate(fedbuff_config(buffer, updates=2_000), queue_only=True)
    assert res.num_updates == 2_000 and res.num_completions == 2_000 * buffer
    # both are cut on the completion count (the queues do not depend on the buffer) ...
    assert res.warmup_updates + res.window_updates == res.num_completions
    assert res.warmup_updates >= 0.1 * res.num_completions
    # ... and say so where the numbers are saved
    res.save(tmp_path)
    units = json.loads((tmp_path / "result.json").read_text())["units"]
    for key in ("warmup_updates", "window_updates"):
        assert "task completions" in units[key] and "not versions" in units[key]


def test_tensorboard_tags_compare_like_with_like() -> None:
    cfg = fedbuff_config(5, updates=2_000)
    res = simulate(cfg, queue_only=True)
    measured = summary_scalars(res)
    theory = theory_scalars(cfg)
    assert theory["theory/staleness_mean"] == pytest.approx(1.0)
    assert theory["theory/staleness_completions_mean"] == pytest.approx(5.0)
    assert measured["staleness/mean"] == pytest.approx(theory["theory/staleness_mean"], rel=0.1)
    assert measured["staleness_completions/mean"] == pytest.approx(
        theory["theory/staleness_completions_mean"], rel=0.1
    )
    assert theory["theory/version_throughput"] == pytest.approx(theory["theory/throughput"] / 5)


def test_sgd_rules_have_one_unit() -> None:
    """Without a buffer both units are the same count and the theory is unchanged."""
    cfg = fedbuff_config(1, updates=3_000)
    res = simulate(cfg, queue_only=True)
    np.testing.assert_array_equal(res.mean_completion_delay, res.mean_relative_delay)
    theory = theory_prediction(cfg)
    assert theory["mean_relative_delay"] == theory["mean_completion_delay"]


@pytest.mark.parametrize(
    ("updates", "phrase"),
    [(3, "run too short to leave its warm-up"), (0, "no task completed")],
)
def test_too_short_runs_say_so(updates: int, phrase: str) -> None:
    base = fedbuff_config(1, updates=max(updates, 1))
    if updates == 0:  # a time budget that ends before the first completion
        run = RunConfig(num_updates=None, time_budget=1e-9, train=False)
    else:
        run = base.run
    cfg = base.replace(run=run)
    res = simulate(cfg, queue_only=True)
    assert any(phrase in w for w in res.warnings), res.warnings
    text = format_report(cfg, res, theory_prediction(cfg))
    assert "WARNING: " + phrase in text
    assert res.summary().count("WARNING:") == len(res.warnings)


def test_warm_up_inside_the_start_up_transient_is_flagged() -> None:
    """A client 10^6 times slower holds a start-up task through the whole short run."""
    cfg = SystemConfig(
        clients=(
            ClientSpec(service_time=ServiceTimeSpec(kind="exponential", rate=1000.0)),
            ClientSpec(service_time=ServiceTimeSpec(kind="exponential", rate=0.001)),
        ),
        concurrency=2,
        routing=RoutingConfig(kind="return_to_sender"),
        algorithm=AlgorithmConfig(name="asyncsgd"),
        run=RunConfig(num_updates=500, train=False),
        seed=0,
    )
    res = simulate(cfg)
    assert res.extras["transient_end"] == -1  # the slow client's first task is still out
    assert any("start-up transient" in w for w in res.warnings), res.warnings
