"""The recommend benchmark's acceptance verdict (benchmarks/recommend.py, issue 13)."""

from __future__ import annotations

import itertools
import json
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ._benchmarks import load_benchmark

B = load_benchmark("recommend", "bench_recommend")


def _records(accuracies: dict[str, list[float]], partition: str = "iid",
             model: str = "logreg") -> list[dict[str, Any]]:
    """One record per seed; arms without accuracies get 0.1 on every seed."""
    seeds = len(next(iter(accuracies.values())))
    out = []
    for s in range(seeds):
        arms = {}
        for arm in B.ARMS:
            acc = accuracies.get(arm, [0.1] * seeds)[s]
            rule = "asyncsgd" if arm in ("asyncsgd", "bias") else "weighted"
            arms[arm] = {"test_accuracy": acc, "time_to_target": None,
                         "point": {"rule": rule, "concurrency": 20, "beta": 1.0, "lr": 0.1},
                         "simulations": 80, "trials": 30}
        out.append({"partition": partition, "tiers": "1:10:100", "budget": 5.0, "seed": s,
                    "model": model, "arms": arms})
    return out


def test_verdict_against_a_hand_computation() -> None:
    # recommend mean 0.86, SE sqrt(var/3) with var 0.0004 -> 0.011547; AsyncSGD 0.89, same SE.
    rows = B.summarise(_records({"recommend": [0.84, 0.86, 0.88],
                                 "asyncsgd": [0.87, 0.89, 0.91],
                                 "bias": [0.87, 0.89, 0.91]}))
    v = B.verdict(rows[0])
    se = math.sqrt(0.0004 / 3)
    assert rows[0]["best_baseline"] == "asyncsgd"
    assert v["recommend_diff"] == pytest.approx(-0.03)
    assert v["recommend_z"] == pytest.approx(-0.03 / math.hypot(se, se))  # -1.84
    assert not v["recommend_ok"]
    # bias ties AsyncSGD exactly (max picks the first of equal means, AsyncSGD): 0 SE.
    assert v["bias_diff"] == pytest.approx(0.0) and v["bias_ok"]
    assert v["asyncsgd_best"] and v["bias_asyncsgd_seeds"] == 3


def test_verdict_passes_at_exactly_one_standard_error() -> None:
    # Both arms have the same spread (SE s), recommend shifted down by s * sqrt(2): the
    # difference is exactly one SE of the difference, the boundary the issue allows.
    s = math.sqrt(0.0004 / 3)
    d = s * math.sqrt(2)
    rows = B.summarise(_records({"recommend": [0.78 - d, 0.80 - d, 0.82 - d],
                                 "uniform": [0.78, 0.80, 0.82],
                                 "bias": [0.78, 0.80, 0.82]}))
    v = B.verdict(rows[0])
    assert v["recommend_z"] == pytest.approx(-1.0)
    assert v["bias_asyncsgd_seeds"] == 3 and not v["asyncsgd_best"]


def test_acceptance_counts_cells_and_refuses_a_cell_in_two_runs(tmp_path: Path) -> None:
    good = _records({"recommend": [0.90, 0.91], "asyncsgd": [0.90, 0.91],
                     "bias": [0.90, 0.91]})
    bad = _records({"recommend": [0.70, 0.71], "asyncsgd": [0.90, 0.91],
                    "bias": [0.80, 0.81]}, partition="speed_skew")
    cnn = _records({"recommend": [0.90, 0.91], "asyncsgd": [0.90, 0.91],
                    "bias": [0.90, 0.91]}, model="cnn")
    for stem, recs in (("a", good + bad), ("b", cnn), ("c", good)):
        (tmp_path / f"{stem}.json").write_text(
            json.dumps({"rows": B.summarise(recs), "records": recs}))
    result = B.acceptance(["a", "b"], tmp_path)
    assert result["cells"] == 3  # the CNN cell is its own cell, not a duplicate of a's iid
    assert result["recommend_ok"] == 2 and result["bias_ok"] == 2
    failed = [r for r in result["rows"] if not r["recommend_ok"]]
    assert [(r["stem"], r["partition"]) for r in failed] == [("a", "speed_skew")]
    text = B.acceptance_markdown({"command": "t", **result})
    assert "**2 of 3**" in text and "**no**" in text
    with pytest.raises(ValueError, match="in both a and c"):
        B.acceptance(["a", "c"], tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        B.acceptance(["missing"], tmp_path)
    # a stem restricted to some partitions leaves its other cells to a later run
    both = B.acceptance(["a:speed_skew", "c"], tmp_path)
    assert [(r["stem"], r["partition"]) for r in both["rows"]] == [("a", "speed_skew"),
                                                                    ("c", "iid")]
    assert both["recommend_ok"] == 1
    with pytest.raises(ValueError, match=r"a:dirichlet0\.1: a has no cells of \['dirichlet0\.1'\]"):
        B.acceptance(["a:dirichlet0.1"], tmp_path)
    # The calibration, by hand: only a's speed_skew cell can fail under the null. Of its
    # 4 within-seed swaps, none (z -28) fails, both (+28) passes, and either single swap
    # makes the means equal (z 0): a null failure chance of 1/4.
    assert [r["null_fail"] for r in result["rows"]] == [0.0, 0.25, 0.0]
    assert result["null_expected_fails"] == pytest.approx(0.25)
    assert result["null_p_all_pass"] == pytest.approx(0.75)
    assert result["null_p_at_most"] == pytest.approx(1.0)  # one failure observed
    assert result["mean_gain"] == pytest.approx(-0.2 / 3)
    assert result["mean_gain_se"] == pytest.approx(0.0)  # paired differences constant
    assert "with probability 0.750" in text and "-6.67 ± 0.00 points" in text
    # rows and records that disagree on the seeds are refused
    (tmp_path / "d.json").write_text(json.dumps({"rows": B.summarise(good), "records": good[:1]}))
    with pytest.raises(ValueError, match="2 seeds in its rows but 1 in its records"):
        B.acceptance(["d"], tmp_path)


def _brute_null(rec: list[float], base: list[float]) -> float:
    """The sign-flip null by loops over every swap pattern (statistics, not numpy)."""
    fails = 0
    patterns = list(itertools.product((False, True), repeat=len(rec)))
    for swap in patterns:
        r = [b if s else a for a, b, s in zip(rec, base, swap, strict=True)]
        q = [a if s else b for a, b, s in zip(rec, base, swap, strict=True)]
        se = math.hypot(statistics.stdev(r), statistics.stdev(q)) / math.sqrt(len(r))
        z = (statistics.fmean(r) - statistics.fmean(q)) / se if se > 0 else 0.0
        fails += z < -1.0
    return fails / len(patterns)


def test_null_fail_probability_against_a_brute_force_enumeration() -> None:
    rng = np.random.default_rng(13)
    for k in (2, 3, 5, 7):
        rec = list(0.85 + 0.03 * rng.standard_normal(k))
        base = [x + 0.01 * rng.standard_normal() + 0.005 for x in rec]
        assert B.null_fail_probability(rec, base) == pytest.approx(_brute_null(rec, base))
    same = [0.9, 0.8, 0.85]
    assert B.null_fail_probability(same, same) == 0.0  # identical designs cannot fail
    with pytest.raises(ValueError, match="paired 1-d arrays of >= 2 seeds"):
        B.null_fail_probability([0.9], [0.8])
    with pytest.raises(ValueError, match="paired"):
        B.null_fail_probability([0.9, 0.8], [0.8, 0.7, 0.6])


def test_null_fail_probability_samples_swaps_beyond_the_exact_limit() -> None:
    # 16 seeds: exact over 65,536 swaps against 4,096 seeded random ones; the sampled
    # fraction's SE is at most sqrt(0.25 / 4096) = 0.0078, the tolerance 4.5 of those.
    rng = np.random.default_rng(1)
    rec = 0.85 + 0.02 * rng.standard_normal(16)
    base = 0.85 + 0.02 * rng.standard_normal(16)
    exact = B.null_fail_probability(rec, base)
    sampled = B.null_fail_probability(rec, base, draws=4096)
    assert 0.05 < exact < 0.5  # a case where the two can differ
    assert sampled == pytest.approx(exact, abs=0.035)
    assert sampled == B.null_fail_probability(rec, base, draws=4096)  # seeded


def test_count_distribution_against_an_enumeration() -> None:
    probs = [0.1, 0.5, 0.25, 0.9]
    expected = [0.0] * 5
    for outcome in itertools.product((0, 1), repeat=4):
        expected[sum(outcome)] += math.prod(q if o else 1 - q
                                            for q, o in zip(probs, outcome, strict=True))
    assert B.count_distribution(probs) == pytest.approx(expected)
    assert list(B.count_distribution([])) == [1.0]


def test_confirmation_seeds_are_recommends_own_setting() -> None:
    """A run with recommend's confirmation is another run (no resuming into records made
    without it) whose other arms may still come from those records (--arms-from)."""
    old = {"partition": "iid", "tiers": "1:10:100", "budget": 5.0, "seed": 0, "trials": 30,
           "max_train": 20000, "lrs": [0.01, 0.1], "model": "logreg"}
    confirmed = {**old, "confirm_seeds": 5}
    assert B._job_key({**old, "confirm_seeds": 0}) == B._job_key(old)
    assert B._job_key(confirmed) != B._job_key(old)
    assert B._job_key(confirmed) != B._job_key({**old, "confirm_seeds": 3})
    assert B._reuse_key(confirmed) == B._reuse_key(old)


@pytest.mark.parametrize("setting", ["confirm_redraw", "pool_bias"])
def test_recommend_only_flags_are_recommends_own_setting(setting: str) -> None:
    """--redraw-confirmation and --pool-bias each make another run (records made without
    them are not resumed into), and its other arms may still come from them
    (--arms-from)."""
    old = {"partition": "dirichlet0.1", "tiers": "1:5:25", "budget": 60.0, "seed": 1,
           "trials": 30, "max_train": 20000, "lrs": [0.01, 0.1], "model": "logreg",
           "confirm_seeds": 5}
    flagged = {**old, setting: True}
    assert B._job_key({**old, setting: False}) == B._job_key(old)
    assert B._job_key(flagged) != B._job_key(old)
    assert B._job_key(flagged) != B._job_key({**old, "redraw": True})
    assert B._reuse_key(flagged) == B._reuse_key(old)


def test_overrule_margin_is_recommends_own_setting() -> None:
    """--overrule-margin other than one SE makes another run, records made before the flag
    (one SE) still match the default, and the other arms may come from either."""
    old = {"partition": "speed_skew", "tiers": "1:5:25", "budget": 5.0, "seed": 2,
           "trials": 30, "max_train": 20000, "lrs": [0.01, 0.1], "model": "logreg",
           "confirm_seeds": 5, "confirm_redraw": True}
    strict = {**old, "overrule_margin": 2.132}
    assert B._job_key({**old, "overrule_margin": 1.0}) == B._job_key(old)
    assert B._job_key(strict) != B._job_key(old)
    assert B._job_key(strict) != B._job_key({**old, "overrule_margin": 3.0})
    assert B._reuse_key(strict) == B._reuse_key(old)


def _confirmed_record(gains: dict[str, list[float]], margin: float = 1.0) -> dict[str, Any]:
    """A cell-seed whose recommend arm went through the confirmation: the incumbent
    (AsyncSGD, C = 20) scored 0.80 on five fresh seeds, each challenger 0.80 + its gains;
    the choice is the one ``_confirm`` makes with ``margin``."""
    from raysync.objectives import DesignPoint
    from tuning.recommend import _confirm

    base = DesignPoint(rule="asyncsgd", concurrency=20, p=None, lr=0.1)
    finalists = {name: DesignPoint(rule="asyncsgd", concurrency=c, p=None, lr=0.03)
                 for name, c in zip(gains, (24, 30, 36), strict=False)}
    scores = {base: [0.80] * 5,
              **{q: [0.80 + g for g in gains[name]] for name, q in finalists.items()}}
    chosen, conf = _confirm(("analytical", base), list(finalists.values()),
                            scores.__getitem__, target=None, misses=lambda q: 0, margin=margin)
    conf.update(seeds=[5, 6, 7, 8, 9], selection_seeds=[2, 3, 4], data="redrawn")
    record = _records({"recommend": [0.7]})[0]
    record["arms"]["recommend"].update(point=chosen.to_dict(), confirmation=conf,
                                       val_accuracy=0.71, val_selection=0.72)
    return record


def test_rescore_redoes_the_choice_with_another_margin() -> None:
    """A lead of 1.36 SE (b) chose b at one SE; at 2.132 the incumbent is kept and measured
    on the evaluation seed, once; a lead of 4.7 SE (c) survives both margins."""
    from raysync.objectives import DesignPoint

    weak = [0.06, -0.01, 0.03, -0.01, 0.02]  # 1.36 SE
    strong = [0.02, 0.03, 0.01, 0.04, 0.02]  # 4.7 SE and the larger mean gain (0.024)
    assert sum(strong) / 5 > sum(weak) / 5
    measured: list[Any] = []

    def evaluate(point: Any) -> dict[str, Any]:
        measured.append(point)
        return {"test_accuracy": 0.9, "val_accuracy": 0.91, "time_to_target": 2.5,
                "throughput": 3.0, "staleness": 4.0}

    record = _confirmed_record({"b": weak})
    assert record["arms"]["recommend"]["point"]["concurrency"] == 24  # b, at one SE
    same, moved = B.rescore_record(record, 1.0, evaluate)
    assert not moved and not measured and same["arms"] == record["arms"]
    new, moved = B.rescore_record(record, 2.132, evaluate)
    incumbent = DesignPoint(rule="asyncsgd", concurrency=20, p=None, lr=0.1)
    assert moved and measured == [incumbent]
    arm = new["arms"]["recommend"]
    assert DesignPoint.from_dict(arm["point"]) == incumbent
    assert (arm["test_accuracy"], arm["val_accuracy"], arm["time_to_target"]) == (0.9, 0.91, 2.5)
    assert arm["val_selection"] is None and arm["rescored_from"]["concurrency"] == 24
    assert arm["bound"] is None and arm["dominant"] is None
    assert arm["confirmation"]["kept_incumbent"] and arm["confirmation"]["margin"] == 2.132
    assert arm["confirmation"]["data"] == "redrawn" and new["overrule_margin"] == 2.132
    assert record["arms"]["recommend"]["test_accuracy"] == 0.7  # the input is not changed
    measured.clear()
    both = _confirmed_record({"b": weak, "c": strong})
    assert both["arms"]["recommend"]["point"]["concurrency"] == 30  # c: the larger gain
    for margin in (1.0, 2.132):
        assert B.rescore_record(both, margin, evaluate)[1] is False
    assert not measured


def test_rescore_with_a_rule_change_margin_blocks_only_rule_changes() -> None:
    """An AsyncSGD incumbent overruled at 1.36 SE by a weighted design: a rule-change margin
    of 2.132 keeps the incumbent (measured once), while the same lead by another AsyncSGD
    step survives it; the rule-change margin is its own job setting."""
    from raysync.objectives import DesignPoint
    from tuning.recommend import _confirm

    weak = [0.06, -0.01, 0.03, -0.01, 0.02]  # 1.36 SE
    base = DesignPoint(rule="asyncsgd", concurrency=20, p=None, lr=0.1)
    weighted = DesignPoint(rule="weighted", concurrency=24, p=(0.05,) * 20, beta=1.0, lr=0.03)
    scores = {base: [0.80] * 5, weighted: [0.80 + g for g in weak]}
    chosen, conf = _confirm(("analytical", base), [weighted], scores.__getitem__,
                            target=None, misses=lambda q: 0)
    assert chosen == weighted
    conf.update(seeds=[5, 6, 7, 8, 9], selection_seeds=[2, 3, 4], data="redrawn")
    record = _records({"recommend": [0.7]})[0]
    record["arms"]["recommend"].update(point=chosen.to_dict(), confirmation=conf)
    measured: list[Any] = []

    def evaluate(point: Any) -> dict[str, Any]:
        measured.append(point)
        return {"test_accuracy": 0.9, "val_accuracy": 0.91, "time_to_target": 2.5,
                "throughput": 3.0, "staleness": 4.0}

    new, moved = B.rescore_record(record, 1.0, evaluate, rule_change_margin=2.132)
    assert moved and measured == [base] and new["rule_change_margin"] == 2.132
    conf_new = new["arms"]["recommend"]["confirmation"]
    assert conf_new["kept_incumbent"] and conf_new["rule_change_margin"] == 2.132
    # Rescoring the rescored record with its own margins reproduces its choice.
    assert B.rescore_record(new, 1.0, evaluate, rule_change_margin=2.132)[1] is False
    step = _confirmed_record({"b": weak})  # the same lead by an AsyncSGD step
    assert B.rescore_record(step, 1.0, evaluate, rule_change_margin=2.132)[1] is False
    assert measured == [base]
    job = {"partition": "speed_skew", "tiers": "1:5:25", "budget": 5.0, "seed": 2,
           "trials": 30, "max_train": 20000, "lrs": [0.01, 0.1], "model": "logreg"}
    assert B._job_key({**job, "rule_change_margin": 2.132}) != B._job_key(job)
    assert B._reuse_key({**job, "rule_change_margin": 2.132}) == B._reuse_key(job)


def test_rescore_refuses_a_record_its_scores_do_not_explain() -> None:
    record = _confirmed_record({"b": [0.06, -0.01, 0.03, -0.01, 0.02]})
    record["arms"]["recommend"]["point"]["concurrency"] = 36
    with pytest.raises(ValueError, match="recorded confirmation scores choose"):
        B.rescore_record(record, 2.132, lambda point: {})
    plain = _records({"recommend": [0.7]})[0]  # no confirmation: nothing to redo
    assert B.rescore_record(plain, 2.132, lambda point: {}) == ({**plain,
                                                                "overrule_margin": 2.132}, False)


@pytest.mark.parametrize("argv", [["--first-seed", "3"], ["--first-seed", "-1", "--seeds", "2"]])
def test_first_seed_needs_seeds_and_is_not_negative(argv: list[str], capsys) -> None:  # noqa: ANN001
    with pytest.raises(SystemExit) as stop:
        B.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--first-seed must be >= 0 and comes with --seeds K" in err


def test_same_draw_reruns_each_design_on_the_data_it_was_chosen_on() -> None:
    """Each arm's design runs on the selection seed's draw with fresh run seeds; its test
    accuracy is their mean; identical designs share runs; a run seed that was a
    selection seed is refused."""
    from raysync.objectives import DesignPoint
    from tuning.recommend import measure

    asyncsgd = DesignPoint(rule="asyncsgd", concurrency=20, p=None, lr=0.1)
    weighted = DesignPoint(rule="weighted", concurrency=20, p=tuple([0.05] * 20), beta=1.0,
                           lr=0.1)
    record = {"partition": "dirichlet0.5", "tiers": "1:5:25", "budget": 0.5, "seed": 3,
              "max_train": 300, "model": "logreg",
              "arms": {arm: {"point": (asyncsgd if arm in ("asyncsgd", "bias", "recommend")
                                       else weighted).to_dict(),
                             "test_accuracy": 0.5, "simulations": 90, "trials": 30}
                       for arm in B.ARMS}}
    out = B.same_draw_cell({"record": record, "runs": 2})
    draw = 3 + B.SELECTION_OFFSET
    assert out["draw_seed"] == draw
    assert out["run_seeds"] == [draw + B.SAME_DRAW_OFFSET, draw + B.SAME_DRAW_OFFSET + 1]
    arms = out["arms"]
    for arm in B.ARMS:
        runs = arms[arm]["run_test_accuracy"]
        assert len(runs) == 2
        assert arms[arm]["test_accuracy"] == pytest.approx(sum(runs) / 2)
        assert arms[arm]["other_draw_test_accuracy"] == 0.5
    assert arms["bias"]["run_test_accuracy"] == arms["asyncsgd"]["run_test_accuracy"]
    assert arms["recommend"]["simulations"] == 90
    # the same run, made directly on the selection seed's workload
    cfg = B.base_config("dirichlet0.5", "1:5:25", draw, 300)
    direct = measure(cfg, weighted, budget=0.5, workload=B.make_workload(cfg, "dirichlet0.5"),
                     seed=out["run_seeds"][1], num_evals=8, target=B.TARGET)
    assert arms["uniform"]["run_test_accuracy"][1] == direct["test_accuracy"]
    record["arms"]["recommend"]["confirmation"] = {"seeds": [draw + B.SAME_DRAW_OFFSET]}
    with pytest.raises(ValueError, match="were selection seeds"):
        B.same_draw_cell({"record": record, "runs": 1})


def test_a_resumed_run_reports_the_time_of_every_earlier_run(tmp_path: Path) -> None:
    previous = tmp_path / "stem.json"
    assert B._earlier_wall_seconds(previous) == 0.0
    # a run that had itself resumed one of 600 s, and ran 300 s: 900 s before this one
    previous.write_text(json.dumps({"wall_seconds": 300.0, "earlier_wall_seconds": 600.0}))
    assert B._earlier_wall_seconds(previous) == 900.0
    previous.write_text(json.dumps({"wall_seconds": 120.0}))  # written before the field existed
    assert B._earlier_wall_seconds(previous) == 120.0
    text = B._resumed({"resumed_cell_seeds": 3, "earlier_wall_seconds": 900.0})
    assert text == (" for the new cell-seeds, plus 15 min of the earlier run whose 3 "
                    "cell-seeds were kept")


def test_ray_summary_pairs_seeds_and_the_plot_is_written(tmp_path: Path) -> None:
    # Two seeds of one cell; Ray and simulator accuracies per arm, throughputs per engine.
    ray = {"asyncsgd": [0.90, 0.80], "recommend": [0.85, 0.87]}
    sim = {"asyncsgd": [0.88, 0.81], "recommend": [0.85, 0.87]}
    records = []
    for s in range(2):
        arms = {arm: {"test_accuracy": ray.get(arm, [0.5, 0.6])[s],
                      "sim_test_accuracy": sim.get(arm, [0.5, 0.6])[s],
                      "throughput": 10.0 + s, "sim_throughput": 12.0} for arm in B.ARMS}
        records.append({"partition": "iid", "tiers": "1:10:100", "budget": 20.0, "seed": s,
                        "model": "logreg", "arms": arms})
    (row,) = B.summarise_ray(records)
    a = row["arms"]["asyncsgd"]
    # By hand: Ray mean 0.85, SE = |0.90 - 0.80| / 2 = 0.05; simulator 0.845, SE 0.035;
    # paired differences +0.02 and -0.01: mean 0.005, SE 0.015.
    assert a["ray_mean"] == pytest.approx(0.85) and a["ray_se"] == pytest.approx(0.05)
    assert a["sim_mean"] == pytest.approx(0.845) and a["sim_se"] == pytest.approx(0.035)
    assert a["diff_mean"] == pytest.approx(0.005) and a["diff_se"] == pytest.approx(0.015)
    assert a["ray_throughput"] == pytest.approx(10.5) and a["sim_throughput"] == 12.0
    assert B.ray_agreement(a) == pytest.approx(0.005 / math.hypot(0.05, 0.035))
    assert B.ray_agreement(row["arms"]["recommend"]) == 0.0  # same accuracy on every seed
    # identical constant accuracies: agreement 0, not a division by a zero SE
    same = {"ray_se": 0.0, "sim_se": 0.0, "diff_mean": 0.0}
    assert B.ray_agreement(same) == 0.0
    assert math.isnan(B.ray_agreement({"ray_se": 0.0, "sim_se": 0.0, "diff_mean": 0.01}))
    payload = {"command": "x", "time_scale": 4.0, "wall_seconds": 60.0, "load_min": 0.1,
               "load_max": 0.5, "rows": [row], "records": records}
    text = B.ray_markdown(payload)
    assert ("| iid, 1:10:100, T=20 | asyncsgd | 85.00 ± 5.00 | 84.50 ± 3.50 | "
            "+0.50 ± 1.50 | +0.1 |") in text
    path = tmp_path / "ray.png"
    B.ray_plot(payload, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_ray_run_writes_under_its_stem_and_keeps_only_the_chosen_cells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    # A simulator run of two cells x two seeds; --ray-seeds 1 --partitions iid takes one.
    records = _records({"asyncsgd": [0.9, 0.8]}) + _records({"asyncsgd": [0.7, 0.6]},
                                                            partition="speed_skew")
    (tmp_path / "sim.json").write_text(json.dumps({"records": records}))
    monkeypatch.setattr(B, "RESULTS", tmp_path)
    monkeypatch.setattr(ray, "init", lambda **kwargs: None)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    ran = []

    def fake_cell(record: dict[str, Any], time_scale: float,
                  arms: tuple[str, ...] = B.ARMS) -> dict[str, Any]:
        ran.append((record["partition"], record["seed"], time_scale, arms))
        out = {arm: {"test_accuracy": a["test_accuracy"] + 0.01,
                     "sim_test_accuracy": a["test_accuracy"], "throughput": 5.0,
                     "sim_throughput": 5.0, "load_average_1min": 0.5}
               for arm, a in record["arms"].items() if arm in arms}
        return {**{k: v for k, v in record.items() if k != "arms"}, "arms": out}

    monkeypatch.setattr(B, "run_ray_cell", fake_cell)
    argv = ["--ray-from", "sim", "--ray-seeds", "1", "--partitions", "iid",
            "--time-scale", "2", "--stem", "sim_ray_iid"]
    assert B.main(argv) == 0
    assert ran == [("iid", 0, 2.0, B.ARMS)]
    for ext in ("json", "md", "png", "records.jsonl"):
        assert (tmp_path / f"sim_ray_iid.{ext}").is_file(), ext
    assert not (tmp_path / "sim_ray.json").exists()
    payload = json.loads((tmp_path / "sim_ray_iid.json").read_text())
    (row,) = payload["rows"]
    assert row["partition"] == "iid" and row["arms"]["asyncsgd"]["diff_mean"] == pytest.approx(0.01)
    # --ray-arms: only those arms run (in ARMS order), and only they are in the outputs.
    ran.clear()
    argv = ["--ray-from", "sim", "--ray-seeds", "2", "--partitions", "speed_skew",
            "--ray-arms", "recommend,asyncsgd", "--stem", "sim_ray_two"]
    assert B.main(argv) == 0
    assert ran == [("speed_skew", s, 4.0, ("asyncsgd", "recommend")) for s in (0, 1)]
    payload = json.loads((tmp_path / "sim_ray_two.json").read_text())
    (row,) = payload["rows"]
    assert list(row["arms"]) == ["asyncsgd", "recommend"]
    assert row["arms"]["asyncsgd"]["ray_mean"] == pytest.approx(0.66)
    text = (tmp_path / "sim_ray_two.md").read_text()
    assert "| speed_skew, 1:10:100, T=5 | recommend |" in text and "| uniform |" not in text


@pytest.mark.parametrize("arms", ["recommend,nope", "asyncsgd,asyncsgd", ",", ""])
def test_ray_arms_that_are_not_distinct_known_arms_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    arms: str,
) -> None:
    (tmp_path / "sim.json").write_text(json.dumps({"records": _records({"asyncsgd": [0.9]})}))
    monkeypatch.setattr(B, "RESULTS", tmp_path)
    with pytest.raises(SystemExit) as exc:
        B.main(["--ray-from", "sim", "--ray-arms", arms])
    assert exc.value.code == 2
    assert f"--ray-arms: distinct arms from {list(B.ARMS)}" in capsys.readouterr().err
    assert not list(tmp_path.glob("*_ray*"))


@pytest.mark.parametrize("extra", [["--ray-seeds", "0"], ["--partitions", "dirichlet0.1"]])
def test_ray_run_that_selects_no_cell_seed_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    extra: list[str],
) -> None:
    (tmp_path / "sim.json").write_text(json.dumps({"records": _records({"asyncsgd": [0.9]})}))
    monkeypatch.setattr(B, "RESULTS", tmp_path)
    with pytest.raises(SystemExit) as exc:
        B.main(["--ray-from", "sim", *extra])
    assert exc.value.code == 2
    assert "--ray-from: no cell-seed of sim.json has a seed below --ray-seeds" in (
        capsys.readouterr().err)
    assert not list(tmp_path.glob("*_ray*"))


def test_compare_writes_json_and_markdown_under_the_scripts_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    import _common  # benchmarks/ is on sys.path once a benchmark is loaded

    monkeypatch.setattr(B, "RESULTS", tmp_path)
    monkeypatch.setattr(_common, "RESULTS", tmp_path / "not_here")
    grid = {"trials": 6, "max_train": 5_000, "lrs": [0.1]}  # what pairs two runs' seeds
    first = [{**r, **grid} for r in _records({"recommend": [0.80, 0.82]})]
    second = [{**r, **grid} for r in _records({"recommend": [0.83, 0.86]})]
    (tmp_path / "a.records.jsonl").write_text(B._records_text(first))
    (tmp_path / "b.records.jsonl").write_text(B._records_text(second))
    monkeypatch.setattr("sys.argv", ["recommend.py", "--compare-recommend", "a,b"])
    assert B.main(["--compare-recommend", "a,b"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.records.jsonl", "b.records.jsonl", "b_vs_a.json", "b_vs_a.md"]  # no .png
    saved = json.loads((tmp_path / "b_vs_a.json").read_text())
    assert saved["cell_seeds"] == 2 and saved["diff_mean"] == pytest.approx(0.035)
    text = (tmp_path / "b_vs_a.md").read_text()
    assert text in capsys.readouterr().out and "+3.50" in text
