"""benchmarks/recommend_steps.py: the step rules and the evaluation-draw sweep."""

from __future__ import annotations

import math
import sys
from typing import Any

import pytest

from ._benchmarks import load_benchmark

S = load_benchmark("recommend_steps", "bench_recommend_steps")

# A CNN-like pilot (after recommend_cnn_t2_d01_confirm seed 1): 0.1 best, 0.3 collapsed.
EDGE = {"0.003": [0.09, 0.09], "0.01": [0.62, 0.69], "0.03": [0.85, 0.82],
        "0.1": [0.86, 0.83], "0.3": [0.09, 0.09]}


def test_argmax_takes_the_best_mean_and_ties_go_to_the_smaller_step() -> None:
    assert S.pick("argmax", EDGE) == "0.1"
    assert S.pick("argmax", {"0.1": [0.5, 0.7], "0.03": [0.6, 0.6]}) == "0.03"


def test_one_se_takes_the_smallest_step_within_one_standard_error_of_the_best() -> None:
    # best 0.1: mean 0.845, SE = std([0.86, 0.83], ddof=1) / sqrt(2) = 0.015; 0.03's mean
    # 0.835 >= 0.830
    assert S.pick("one_se", EDGE) == "0.03"
    tight = {**EDGE, "0.1": [0.90, 0.90]}  # SE 0: nothing else is within it
    assert S.pick("one_se", tight) == "0.1"
    se = math.sqrt(((0.86 - 0.845) ** 2 + (0.83 - 0.845) ** 2) / 1) / math.sqrt(2)
    just_out = {**EDGE, "0.03": [0.845 - se - 0.001] * 2}
    assert S.pick("one_se", just_out) == "0.1"
    with pytest.raises(ValueError, match="two pilot seeds"):
        S.pick("one_se", {"0.1": [0.5], "0.03": [0.4]})


def test_maximin_loses_a_step_that_collapses_on_one_seed() -> None:
    scores = {"0.03": [0.93, 0.92], "0.1": [0.99, 0.11]}
    assert S.pick("maximin", scores) == "0.03"
    assert S.pick("maximin", EDGE) == "0.1"  # worst seeds 0.82 vs 0.83


def test_backoff_steps_down_only_when_the_next_step_collapsed() -> None:
    assert S.pick("backoff", EDGE) == "0.03"
    no_edge = {**EDGE, "0.3": [0.5, 0.5]}  # 0.5 >= half of 0.845
    assert S.pick("backoff", no_edge) == "0.1"
    top = {"0.03": [0.5, 0.5], "0.1": [0.9, 0.9]}  # best is the largest step: no edge seen
    assert S.pick("backoff", top) == "0.1"
    with pytest.raises(ValueError, match="unknown rule"):
        S.pick("median", EDGE)


def _swept(seed: int, eval_runs: dict[str, list[float]], asyncsgd_lr: float = 0.03,
           with_seeds: bool = True) -> dict[str, Any]:
    design = {"rule": "asyncsgd", "concurrency": 20, "p": None, "beta": 0.0, "lr": 0.1}
    return {"partition": "iid", "tiers": "1:10:100", "budget": 2.0, "seed": seed,
            "source": "run", "design": design, "run_seeds": [seed, seed + 700],
            "pilot_scores": {k: sum(v) / 2 for k, v in EDGE.items()},
            "pilot_seed_scores": EDGE if with_seeds else None, "pilot_lr": 0.1,
            "eval_runs": eval_runs,
            "asyncsgd": {"point": {**design, "lr": asyncsgd_lr},
                         "test_accuracy": eval_runs[f"{asyncsgd_lr:.6g}"][0]}}


def test_score_pairs_each_rule_with_argmax_by_hand() -> None:
    runs_a = {"0.003": [0.1, 0.1], "0.01": [0.5, 0.5], "0.03": [0.90, 0.92],
              "0.1": [0.80, 0.84], "0.3": [0.1, 0.1]}
    runs_b = {"0.003": [0.1, 0.1], "0.01": [0.5, 0.5], "0.03": [0.80, 0.80],
              "0.1": [0.90, 0.90], "0.3": [0.1, 0.1]}
    out = S.score([_swept(0, runs_a), _swept(1, runs_b, with_seeds=False)])
    summary = out["summary"]
    # argmax picks 0.1 on both: 82 and 90 -> mean 86, SE = 4
    assert summary["argmax"]["cell_seeds"] == 2
    assert summary["argmax"]["accuracy"] == pytest.approx(86.0)
    assert summary["argmax"]["accuracy_se"] == pytest.approx(4.0)
    # one_se / backoff only where the per-seed scores were kept (seed 0): 0.03 -> 91 vs 82
    for rule in ("one_se", "backoff"):
        assert summary[rule]["cell_seeds"] == 1
        assert summary[rule]["changed"] == 1
        assert summary[rule]["gain_over_argmax"] == pytest.approx(9.0)
        assert math.isnan(summary[rule]["gain_se"])
    assert summary["maximin"]["changed"] == 0
    # oracle: the best evaluation step of each cell-seed (91 and 90)
    assert summary["oracle"]["accuracy"] == pytest.approx(90.5)
    assert [row["reproduces_asyncsgd_arm"] for row in out["rows"]] == [True, True]
    bad = _swept(2, runs_a)
    bad["asyncsgd"]["test_accuracy"] = 0.5
    assert S.score([bad])["rows"][0]["reproduces_asyncsgd_arm"] is False


def test_the_sweep_reruns_the_benchmarks_evaluation_run() -> None:
    """The sweep's first run seed is the evaluation seed: at the AsyncSGD arm's step it is
    the benchmark's own evaluation run, so the two must agree exactly."""
    from raysync.objectives import DesignPoint
    from tuning.recommend import measure

    bench = sys.modules["recommend"]
    point = DesignPoint(rule="asyncsgd", concurrency=20, p=None, lr=0.1)
    cfg = bench.base_config("iid", "1:5:25", 2, 300)
    workload = bench.make_workload(cfg, "iid")
    arm = measure(cfg, point, budget=0.5, workload=workload, seed=2, num_evals=8,
                  target=bench.TARGET)
    record = {"partition": "iid", "tiers": "1:5:25", "budget": 0.5, "seed": 2,
              "max_train": 300, "model": "logreg",
              "arms": {"bias": {"point": point.to_dict()},
                       "asyncsgd": {"point": point.to_dict(),
                                    "test_accuracy": arm["test_accuracy"]},
                       "recommend": {"lr_choice": {"analytical": {
                           "lr": 0.1, "pilot_scores": {"0.03": 0.6, "0.1": 0.7},
                           "pilot_seed_scores": {"0.03": [0.6, 0.6], "0.1": [0.7, 0.7]}}}}}}
    out = S.sweep_cell({"record": record, "runs": 2, "target": bench.TARGET, "source": "x"})
    assert out["run_seeds"] == [2, 2 + S.RUN_OFFSET]
    assert sorted(out["eval_runs"]) == ["0.03", "0.1"]
    assert out["eval_runs"]["0.1"][0] == arm["test_accuracy"]
    assert all(len(v) == 2 for v in out["eval_runs"].values())
    assert S.score([out])["rows"][0]["reproduces_asyncsgd_arm"] is True
