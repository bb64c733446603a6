"""Benchmark of ``raysync recommend`` against every baseline (issue 13, docs/theory.md 4 and 6).

Cells: partition {iid, dirichlet 0.5, dirichlet 0.1, speed_skew (the fastest tier holds
labels 0-4 only)} x speed tiers {1:10:100, 1:5:25} (20 clients: 7 slow, 7 medium, 6 fast)
x budgets {5, 20, 60} virtual seconds; MNIST logistic regression (20,000-sample subsample).

Arms (every step chosen on validation accuracy on a separate selection seed, never on
test): ``uniform`` (Generalized AsyncSGD, uniform p, C = n), ``asyncsgd`` (return to
sender), ``fedasync`` and ``fedbuff`` (uniform p, C = n), ``opt_3a`` / ``opt_3b`` (the
section-5 bound's per-update and wall-clock optima), ``bias`` (the section-6 bias-aware
optimum alone, no trials) and ``recommend`` (:func:`tuning.recommend.recommend`: bound +
at most ``--trials`` Optuna trials on the selection seed, each warm-start arm at its own
step chosen over two pilot seeds; every simulator run it makes is reported as its
simulations spent). Each arm's chosen
design then runs on the evaluation seeds; reported: test accuracy at the budget (mean +-
standard error), time to the target validation accuracy, and the trials recommend spent.

Run: ``nice -n 10 .venv/bin/python benchmarks/recommend.py [--quick] [--workers 2]``.
``--quick`` runs a reduced set (see ``QUICK``) and writes ``recommend_quick.*``; the full
run writes ``benchmarks/results/recommend.{json,md,png}``. ``--partitions speed_skew``
keeps only those partitions; ``--stem NAME`` writes ``NAME.{json,md,png}`` instead.
``--tiers``, ``--budgets``, ``--seeds K`` (``--first-seed S``: seeds ``S..S+K-1``),
``--max-train``, ``--lrs`` and ``--trials`` replace one axis of the grid each, and
``--model cnn`` runs every cell with the CNN (the issue's CNN cell set) (a run that
differs from the full grid is labelled "Reduced run" with its grid in the JSON and the
table). ``--eval-samples N`` caps the validation and test
sets at ``N`` rows (one fixed draw for every arm and seed; the CNN's evaluations are most of
its runs' time). ``--redraw-partition`` makes recommend's pilot seeds redraw the cell's
partition (``RecommendSettings.redraw_partition``; the other arms' steps stay chosen on the
selection seed). ``--pool-bias`` is ``RecommendSettings.pool_bias`` (the bias term pooled
over the pilot seeds' draws, every run on the selection seed's draw; the library's default,
off here unless given so the runs of record, made without it, resume unchanged).
``--confirm-seeds N``
(default 5) is recommend's
``RecommendSettings.confirm_seeds``; runs made before the confirmation had 0, and
``--confirm-seeds 0`` resumes them. Finished cell-seeds are appended to
``STEM.records.jsonl`` as they come.
``--arms-from STEM`` takes every arm but recommend from the cell-seeds of an earlier run
(``STEM.records.jsonl``) with the same grid settings, ``--trials``, the redraw and the
confirmation seeds aside (the settings only recommend reads), and runs recommend alone: a
run that changes only recommend's settings (e.g. ``--redraw-partition``) costs
recommend's share of a cell-seed.
``--rerun-arms bias,recommend`` names the arms it runs again (default: recommend), e.g.
after a change to the constants pilot, which only ``bias`` and ``recommend`` read. Each
cell-seed first re-measures one reused arm and stops if this checkout's simulator gives
other numbers for it (the earlier run's arms are then not comparable).

``--overrule-margin SE`` is recommend's ``RecommendSettings.overrule_margin`` (default 1).
``--rescore STEM --overrule-margin SE`` redoes recommend's choice of every cell-seed of
``STEM.records.jsonl`` with that margin (and ``--rule-change-margin SE``, recommend's
``rule_change_margin``) on the confirmation scores the run recorded (the pilot, the study
and the confirmation runs do not depend on the margins, so they are not repeated),
measures recommend's arm again on the evaluation seed where the choice changes, and writes
``STEM_mSE.*`` (``STEM_mSE_rSE.*`` with a rule-change margin; or ``--stem``): the run a
full rerun with those margins would give, at the cost of the changed choices'
evaluations. It first checks that the run's own margins reproduce every recorded choice.

``--compare-recommend A,B`` pairs recommend's arm of two runs by cell-seed (e.g. a run
with ``--redraw-partition`` against one without, both of recommend alone) and writes
``B_vs_A.{json,md}``.

``--same-draw STEM [--same-draw-runs 2]`` reruns every arm's chosen design of
``STEM.records.jsonl`` on the data it was chosen on (the selection seed's draw: training
subsample, partition, initial model) with fresh run seeds, and writes
``STEM_samedraw.{json,md,png}``. The run of record evaluates each choice on another draw
of the partition's kind (the evaluation seed's), i.e. how a choice transfers; a user runs
the recommendation on the data it was made for, which is what this measures.

The Ray part (issue 13, item 6): ``--ray-from STEM [--ray-seeds 3] [--time-scale 4]`` reruns
every arm's evaluated design of ``results/STEM.json`` (its first seeds of every cell, same
step, same evaluation seed) on the Ray runtime with emulated service times and writes
``STEM_ray.{json,md,png}`` (``--stem``: another name, e.g. for a run of one more cell):
Ray and simulator accuracy per arm and their paired difference.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import math
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
from _common import save_results

RESULTS = Path(__file__).resolve().parent / "results"
TIERS = {"1:10:100": (1.0, 10.0, 100.0), "1:5:25": (1.0, 5.0, 25.0)}
COUNTS = (7, 7, 6)
PARTITIONS = ("iid", "dirichlet0.5", "dirichlet0.1", "speed_skew")
BUDGETS = (5.0, 20.0, 60.0)
SEEDS = (0, 1, 2, 3, 4)
SELECTION_OFFSET = 1000
TARGET = 0.85
ARMS = ("uniform", "asyncsgd", "fedasync", "fedbuff", "opt_3a", "opt_3b", "bias", "recommend")
LRS = (0.003, 0.01, 0.03, 0.1, 0.3)
# The shared 2-core machine (load ~20) affords only this; the full grid needs a real box.
QUICK: dict[str, Any] = {
    "partitions": ("iid", "speed_skew"), "tiers": ("1:10:100",), "budgets": (5.0,),
    "seeds": (0, 1), "trials": 6, "max_train": 5_000, "lrs": (0.01, 0.03, 0.1),
}


def _rates(tiers: str) -> tuple[float, ...]:
    slow, mid, fast = TIERS[tiers]
    return (slow,) * COUNTS[0] + (mid,) * COUNTS[1] + (fast,) * COUNTS[2]


def base_config(partition: str, tiers: str, seed: int, max_train: int,
                model: str = "logreg") -> Any:
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

    rates = _rates(tiers)
    clients = tuple(ClientSpec(service_time=ServiceTimeSpec(kind="exponential", rate=r))
                    for r in rates)
    alpha = {"dirichlet0.5": 0.5, "dirichlet0.1": 0.1}.get(partition, 0.5)
    return SystemConfig(
        clients=clients, concurrency=len(rates), routing=RoutingConfig(kind="uniform"),
        algorithm=AlgorithmConfig(name="generalized_asyncsgd", lr=0.03, batch_size=32),
        data=DataConfig(dataset="mnist",
                        partition="dirichlet" if partition.startswith("dirichlet") else "iid",
                        alpha=alpha, max_train_samples=max_train),
        model=ModelConfig(name=model),
        run=RunConfig(time_budget=20.0, eval_every_updates=None, eval_every_seconds=2.5),
        seed=seed,
    )


_DATASETS: dict[int | None, Any] = {}


def _eval_subset(dataset: Any, samples: int) -> Any:
    """The dataset with at most ``samples`` validation and test rows each (one fixed draw,
    independent of the cell's seed, so every arm and seed scores on the same rows)."""
    rng = np.random.default_rng(np.random.SeedSequence(0, spawn_key=(91,)))
    keep = {}
    for split in ("val", "test"):
        y = getattr(dataset, f"y_{split}")
        rows = np.sort(rng.permutation(len(y))[:samples])
        keep[f"x_{split}"] = getattr(dataset, f"x_{split}")[rows]
        keep[f"y_{split}"] = y[rows]
    return dataclasses.replace(dataset, **keep)


def make_workload(config: Any, partition: str, eval_samples: int | None = None) -> Any:
    """The workload; ``speed_skew`` gives the fastest tier labels 0-4 only.
    ``eval_samples`` caps the validation and test sets (the CNN's evaluations, not its
    updates, are most of a CNN run's time)."""
    from raysync.workload import build_workload, load_config_dataset

    if eval_samples not in _DATASETS:
        full = _DATASETS.get(None)
        if full is None:
            full = _DATASETS[None] = load_config_dataset(config)
        if eval_samples is not None:
            _DATASETS[eval_samples] = _eval_subset(full, eval_samples)
    workload = build_workload(config, dataset=_DATASETS[eval_samples])
    if partition != "speed_skew":
        return workload
    rates = config.service_rates
    y = workload.dataset.y_train
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(77,)))
    fast = [i for i, r in enumerate(rates) if r == max(rates)]
    others = [i for i in range(len(rates)) if i not in fast]
    low = rng.permutation(np.flatnonzero(y < 5))
    high = np.flatnonzero(y >= 5)
    share = len(y) // len(rates)
    indices: list[Any] = [None] * len(rates)
    for j, i in enumerate(fast):
        indices[i] = np.sort(low[j * share:(j + 1) * share])
    rest = rng.permutation(np.concatenate([low[len(fast) * share:], high]))
    for j, part in zip(others, np.array_split(rest, len(others)), strict=True):
        indices[j] = np.sort(part)
    return dataclasses.replace(workload, client_indices=tuple(indices))


def run_cell(job: dict[str, Any]) -> dict[str, Any]:
    """Choose every arm's design on the selection seed, then evaluate on ``job['seed']``."""
    import torch

    torch.set_num_threads(1)
    from raysync.objectives import (
        BiasAwareBound,
        BoundObjective,
        DesignPoint,
        DesignSpace,
        estimate_constants,
        optimize_bias_aware,
        optimize_joint,
    )
    from tuning.recommend import RecommendSettings, choose_lr, measure, recommend

    part, tiers, budget, seed = job["partition"], job["tiers"], job["budget"], job["seed"]
    sel_seed = seed + SELECTION_OFFSET
    model = job.get("model", "logreg")
    sel_cfg = base_config(part, tiers, sel_seed, job["max_train"], model)
    eval_cfg = base_config(part, tiers, seed, job["max_train"], model)

    def workload_of(sd: int) -> Any:  # this cell's partition kind, drawn with seed sd
        return make_workload(base_config(part, tiers, sd, job["max_train"], model), part,
                             job.get("eval_samples"))

    # Arms another run already measured with the same grid settings (--arms-from).
    reused: dict[str, Any] = job.pop("reuse_arms", None) or {}
    sel_wl, eval_wl = workload_of(sel_seed), workload_of(seed)
    if reused:
        _check_reusable(reused, eval_cfg, eval_wl, job)
    start = time.perf_counter()
    clients = [sel_wl.client_data(i) for i in range(sel_wl.num_clients)]
    est = estimate_constants(sel_wl.make_computer(), clients, sel_wl.initial_params,
                             batch_size=32, seed=0, fstar_steps=50)
    n = sel_cfg.num_clients
    mu = np.asarray(sel_cfg.service_rates)
    lrs = list(job["lrs"])
    space = DesignSpace.from_config(sel_cfg, max_concurrency=4 * n, lr_range=(1e-3, 1.0))
    designs: dict[str, Any] = dict(space.baselines(0.03))
    wall = BoundObjective(mu=mu, constants=est.constants, criterion="wall-clock",
                          time_budget=budget)
    r3b = optimize_joint(wall, max_concurrency=4 * n)
    per_update = BoundObjective(mu=mu, constants=est.constants, criterion="per-update",
                                num_updates=1000.0)
    r3a = optimize_joint(per_update, max_concurrency=4 * n)
    designs["opt_3a"] = DesignPoint(rule="weighted", concurrency=r3a.concurrency,
                                    p=tuple(r3a.p), beta=1.0)
    designs["opt_3b"] = DesignPoint(rule="weighted", concurrency=r3b.concurrency,
                                    p=tuple(r3b.p), beta=1.0)
    bound = BiasAwareBound.from_estimate(mu, est, time_budget=budget)
    bias_opt = optimize_bias_aware(bound, max_concurrency=4 * n)
    designs["bias"] = bias_opt.point
    chosen: dict[str, Any] = {}
    for arm, point in designs.items():
        if arm in reused:
            continue
        step = choose_lr(sel_cfg, point, lrs=lrs, budget=budget, workload=sel_wl,
                         seeds=(sel_seed,), num_evals=8, target=None)
        chosen[arm] = {"point": dataclasses.replace(point, lr=step.lr),
                       "lr_scores": step.scores}
    rec = recommend(sel_cfg, RecommendSettings(budget=budget, trials=job["trials"],
                                               max_concurrency=4 * n,
                                               lr_factors=tuple(lr / 0.03 for lr in lrs),
                                               redraw_partition=job.get("redraw", False),
                                               redraw_confirmation=job.get("confirm_redraw",
                                                                           False),
                                               pool_bias=job.get("pool_bias", False),
                                               confirm_seeds=job.get("confirm_seeds", 0),
                                               overrule_margin=job.get("overrule_margin",
                                                                       1.0),
                                               rule_change_margin=job.get(
                                                   "rule_change_margin")),
                    workload=sel_wl, estimate=est, log=lambda _line: None,
                    workload_for_seed=workload_of)
    chosen["recommend"] = {"point": rec.point, "trials": rec.trials,
                           "simulations": rec.simulations,
                           "val_selection": rec.arm("recommended").val_accuracy,
                           "lr_choice": rec.lr_choice, "confirmation": rec.confirmation}
    selection_seconds = time.perf_counter() - start
    out: dict[str, Any] = {**job, "zeta2": est.zeta2, "constants": est.constants.to_dict(),
                           "selection_seconds": selection_seconds,
                           "arms": {a: reused[a] for a in ARMS if a in reused}}
    for arm, info in chosen.items():
        point = info["point"]
        m = measure(eval_cfg, point, budget=budget, workload=eval_wl, seed=seed,
                    num_evals=8, target=TARGET)
        terms = bound.evaluate(point) if bound.covers(point) else None
        out["arms"][arm] = {
            "point": point.to_dict(),
            "bound": None if terms is None else terms.value,
            "dominant": None if terms is None else terms.dominant,
            "test_accuracy": m["test_accuracy"], "val_accuracy": m["val_accuracy"],
            "time_to_target": m["time_to_target"], "throughput": m["throughput"],
            "staleness": m["staleness"],
            **{k: v for k, v in info.items() if k != "point"},
        }
    print(f"{part} {tiers} T={budget:g} seed={seed}: "
          + ", ".join(f"{a}={out['arms'][a]['test_accuracy']:.4f}" for a in ARMS),
          file=sys.stderr, flush=True)
    return out


def _check_reusable(reused: dict[str, Any], eval_cfg: Any, eval_wl: Any,
                    job: dict[str, Any]) -> None:
    """Refuse arms measured by another simulator: re-measure one of them (one run).

    Arms are reusable only if this checkout's simulator gives the same numbers for the same
    design on the same seed; a change to the simulator's draws (e.g. the per-task minibatch
    streams) makes an older run's arms incomparable with the arms measured now.
    """
    from raysync.objectives import DesignPoint
    from tuning.recommend import measure

    arm = "asyncsgd" if "asyncsgd" in reused else next(iter(reused))
    stored = reused[arm]
    m = measure(eval_cfg, DesignPoint.from_dict(stored["point"]), budget=job["budget"],
                workload=eval_wl, seed=job["seed"], num_evals=8, target=TARGET)
    now = (m["test_accuracy"], m["val_accuracy"])
    if now != (stored["test_accuracy"], stored["val_accuracy"]):
        raise RuntimeError(
            f"--arms-from {job.get('arms_from')}: its {arm} arm of {job['partition']} "
            f"{job['tiers']} T={job['budget']:g} seed {job['seed']} measured test/validation "
            f"{stored['test_accuracy']}/{stored['val_accuracy']} and this checkout measures "
            f"{now[0]}/{now[1]}: the simulator changed since that run, its arms cannot be reused"
        )


def compare_recommend(first: list[dict[str, Any]],
                      second: list[dict[str, Any]]) -> dict[str, Any]:
    """Recommend's arm of two runs, paired by cell-seed (``second - first``).

    Only recommend's test accuracy and design are compared: both runs must have measured
    that arm with one simulator (their other arms may come from elsewhere). Cell-seeds pair
    when every grid setting but recommend's own (trials, redraw) agrees. Per cell and over
    every shared cell-seed: the mean paired difference and its standard error.
    """
    a = {_reuse_key(r): r for r in first}
    b = {_reuse_key(r): r for r in second}
    shared = sorted(set(a) & set(b), key=lambda k: (_cell_of(a[k]), a[k]["seed"]))
    rows, every = [], []
    for cell in sorted({_cell_of(a[k]) for k in shared}):
        keys = [k for k in shared if _cell_of(a[k]) == cell]
        acc_a = np.array([a[k]["arms"]["recommend"]["test_accuracy"] for k in keys])
        acc_b = np.array([b[k]["arms"]["recommend"]["test_accuracy"] for k in keys])
        diff = acc_b - acc_a
        every.extend(diff)
        rows.append({
            "partition": cell[0], "tiers": cell[1], "budget": cell[2], "seeds": len(keys),
            "first_mean": float(acc_a.mean()), "first_se": _se(acc_a),
            "second_mean": float(acc_b.mean()), "second_se": _se(acc_b),
            "diff_mean": float(diff.mean()), "diff_se": _se(diff),
            "per_seed": [{"seed": a[k]["seed"], "first": a[k]["arms"]["recommend"]["test_accuracy"],
                          "second": b[k]["arms"]["recommend"]["test_accuracy"],
                          "first_design": _design(a[k]["arms"]["recommend"]["point"]),
                          "second_design": _design(b[k]["arms"]["recommend"]["point"])}
                         for k in keys],
        })
    diffs = np.array(every)
    return {"rows": rows, "cell_seeds": len(every),
            "diff_mean": float(diffs.mean()) if diffs.size else math.nan,
            "diff_se": _se(diffs)}


def _read_records(path: Path) -> list[dict[str, Any]]:
    """The cell-seeds of a ``STEM.records.jsonl`` file, one JSON object per line."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _records_text(records: list[dict[str, Any]]) -> str:
    """``records`` as ``STEM.records.jsonl`` holds them (the inverse of _read_records)."""
    return "".join(json.dumps(r, default=float) + "\n" for r in records)


def _cell_of(record: dict[str, Any]) -> tuple[str, str, float]:
    return record["partition"], record["tiers"], float(record["budget"])


def compare_markdown(payload: dict[str, Any]) -> str:
    first, second = payload["first"], payload["second"]
    lines = [
        f"## Recommend: `{second}` against `{first}`, paired by cell-seed",
        "",
        f"Run: `{payload['command']}`. Recommend's test accuracy at the budget (%), mean ± SE "
        f"over the seeds both runs have, and the paired difference `{second} - {first}`.",
        "",
        f"| cell | {first} | {second} | difference | designs per seed ({first} / {second}) |",
        "|---|---|---|---|---|",
    ]
    for row in payload["rows"]:
        designs = "; ".join(f"{s['first_design']} / {s['second_design']}"
                            for s in row["per_seed"])
        lines.append(
            f"| {row['partition']}, {row['tiers']}, T={row['budget']:g} | "
            f"{100 * row['first_mean']:.2f} ± {100 * row['first_se']:.2f} | "
            f"{100 * row['second_mean']:.2f} ± {100 * row['second_se']:.2f} | "
            f"{100 * row['diff_mean']:+.2f} ± {100 * row['diff_se']:.2f} | {designs} |")
    lines += ["", f"Over all {payload['cell_seeds']} cell-seeds: "
              f"{100 * payload['diff_mean']:+.2f} ± {100 * payload['diff_se']:.2f} points."]
    return "\n".join(lines) + "\n"


def compare_main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``--compare-recommend A,B``: recommend's arm of runs A and B, paired; writes
    ``B_vs_A.{json,md}``."""
    stems = args.compare_recommend.split(",")
    if len(stems) != 2:
        parser.error(f"--compare-recommend takes two stems A,B, got {args.compare_recommend!r}")
    runs = []
    for stem in stems:
        path = RESULTS / f"{stem}.records.jsonl"
        if not path.is_file():
            parser.error(f"--compare-recommend: {path} does not exist")
        runs.append(_read_records(path))
    payload = {"command": "benchmarks/recommend.py " + " ".join(sys.argv[1:]),
               "first": stems[0], "second": stems[1], **compare_recommend(*runs)}
    if not payload["cell_seeds"]:
        parser.error(f"--compare-recommend: {stems[0]} and {stems[1]} share no cell-seed")
    text = compare_markdown(payload)
    save_results(f"{stems[1]}_vs_{stems[0]}", payload, _text_writer(text), None,
                 default=float, results=RESULTS)
    print(text)
    return 0


def run_ray_cell(
    record: dict[str, Any], time_scale: float, arms: tuple[str, ...] = ARMS
) -> dict[str, Any]:
    """Every arm's (or ``arms``') evaluated design of one simulator cell-seed, rerun on the
    Ray runtime.

    The design (``record['arms'][arm]['point']``, step included) runs on the evaluation
    seed's config and workload with emulated service times (``run.time_scale``: a config
    second lasts ``time_scale`` wall seconds; pool mode, 2 executors per speed tier), for
    the same budget in config seconds, evaluated at the same instants. The same design
    is simulated again by this checkout's simulator (``sim_*``; the simulator run's own
    numbers stay as ``stored_sim_*``): both engines draw each task's minibatches from the
    same per-task stream, so the pair differs only where the Ray run's schedule does.
    """
    import dataclasses as dc

    from raysync.config import RuntimeConfig
    from raysync.objectives import DesignPoint
    from raysync.runtime import run
    from tuning.recommend import measure, measurement_config

    part, tiers, budget, seed = (record["partition"], record["tiers"], record["budget"],
                                 record["seed"])
    eval_cfg = base_config(part, tiers, seed, record["max_train"], record.get("model", "logreg"))
    eval_wl = make_workload(eval_cfg, part, record.get("eval_samples"))
    out: dict[str, Any] = {k: record[k] for k in ("partition", "tiers", "budget", "seed")}
    out.update({"time_scale": time_scale, "arms": {}})
    for arm in arms:
        point = DesignPoint.from_dict(record["arms"][arm]["point"])
        cfg = measurement_config(eval_cfg, point, budget, 8, seed)
        cfg = cfg.replace(run=dc.replace(cfg.run, time_scale=time_scale),
                          runtime=RuntimeConfig(mode="pool", executors_per_tier=2))
        load = os.getloadavg()[0]
        res = run(cfg, workload=eval_wl)
        test = res.final_test_accuracy
        sim = measure(eval_cfg, point, budget=budget, workload=eval_wl, seed=seed, num_evals=8)
        out["arms"][arm] = {
            "test_accuracy": float(test) if test is not None and math.isfinite(test) else 0.0,
            "updates": int(res.num_updates),
            "throughput": float(res.extras.get("throughput_config_units", math.nan)),
            "sim_test_accuracy": sim["test_accuracy"],
            "sim_throughput": sim["throughput"],
            "sim_updates": sim["num_updates"],
            "stored_sim_test_accuracy": record["arms"][arm]["test_accuracy"],
            "stored_sim_throughput": record["arms"][arm]["throughput"],
            "load_average_1min": load,
            # Runtime diagnostics (absent from runs before 2026-12-05): tasks whose
            # computation outlasted their emulated service, and tasks ended by the
            # budget that were applied after it.
            "compute_bound_tasks": int(res.extras.get("compute_bound_tasks", 0)),
            "late_replies_applied": int(res.extras.get("late_replies_applied", 0)),
        }
        print(f"ray {part} {tiers} T={budget:g} seed={seed} {arm}: "
              f"ray={out['arms'][arm]['test_accuracy']:.4f} "
              f"sim={sim['test_accuracy']:.4f} "
              f"({res.num_updates} updates, sim {sim['num_updates']}; "
              f"{res.extras.get('compute_bound_tasks', 0)} compute-bound, "
              f"{res.extras.get('late_replies_applied', 0)} late; load {load:.1f})",
              file=sys.stderr, flush=True)
    return out


def summarise_ray(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per cell and arm: Ray and simulator mean test accuracy ± SE over the same seeds, and
    the paired difference (Ray - simulator, per seed) with its standard error."""
    rows = []
    for row, recs in _cells(records):
        for arm in _ray_arms(recs):
            ray_acc = np.array([r["arms"][arm]["test_accuracy"] for r in recs])
            sim_acc = np.array([r["arms"][arm]["sim_test_accuracy"] for r in recs])
            diff = ray_acc - sim_acc
            row["arms"][arm] = {
                "ray_mean": float(ray_acc.mean()), "ray_se": _se(ray_acc),
                "sim_mean": float(sim_acc.mean()), "sim_se": _se(sim_acc),
                "diff_mean": float(diff.mean()), "diff_se": _se(diff),
                "ray_throughput": float(np.mean([r["arms"][arm]["throughput"] for r in recs])),
                "sim_throughput": float(np.mean([r["arms"][arm]["sim_throughput"]
                                                 for r in recs])),
            }
        rows.append(row)
    return rows


def _ray_arms(recs: list[dict[str, Any]]) -> list[str]:
    """The arms every record of a cell ran on Ray (``--ray-arms``), in ``ARMS`` order."""
    return [a for a in ARMS if all(a in r["arms"] for r in recs)]


def ray_markdown(payload: dict[str, Any]) -> str:
    lines = [
        "## Recommend benchmark on Ray (issue 13, part 6)",
        "",
        f"Run: `{payload['command']}` ({payload['wall_seconds'] / 60:.0f} min; 1-min load "
        f"{payload['load_min']:.1f}-{payload['load_max']:.1f} at the runs' starts). Every arm's "
        "design of the simulator run (same evaluation seeds, same step) rerun on the Ray "
        f"runtime, emulated service times at time_scale = {payload['time_scale']:g} (pool mode, "
        "2 executors per tier), and simulated again by the same checkout (both engines draw "
        "each task's minibatches from the same per-task stream). Test accuracy at the "
        "budget (%), Ray / simulator, mean ± SE "
        "over the seeds; `Ray - sim`: mean per-seed difference ± its SE, and `in SE` the "
        "difference of the means over the standard error of that difference, "
        "sqrt(SE_Ray^2 + SE_sim^2) (the acceptance asks |in SE| <= 2).",
        "",
        "| cell | arm | Ray | simulator | Ray - sim | in SE | updates/s Ray / sim |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in payload["rows"]:
        for arm in row["arms"]:
            a = row["arms"][arm]
            units = ray_agreement(a)
            lines.append(
                f"| {row['partition']}, {row['tiers']}, T={row['budget']:g} | {arm} | "
                f"{100 * a['ray_mean']:.2f} ± {100 * a['ray_se']:.2f} | "
                f"{100 * a['sim_mean']:.2f} ± {100 * a['sim_se']:.2f} | "
                f"{100 * a['diff_mean']:+.2f} ± {100 * a['diff_se']:.2f} | {units:+.1f} | "
                f"{a['ray_throughput']:.0f} / {a['sim_throughput']:.0f} |")
    return "\n".join(lines) + "\n"


def ray_agreement(arm: dict[str, float]) -> float:
    """Ray minus simulator mean accuracy over the standard error of that difference,
    ``sqrt(SE_Ray^2 + SE_sim^2)`` (the acceptance asks ``|value| <= 2``); 0 when both
    engines gave the same accuracy on every seed, NaN when only their SEs are 0."""
    ref = math.hypot(arm["ray_se"], arm["sim_se"])
    if ref > 0:
        return arm["diff_mean"] / ref
    return 0.0 if arm["diff_mean"] == 0 else math.nan


def ray_plot(payload: dict[str, Any], path: Path) -> None:
    """Every arm-cell's Ray-minus-simulator difference in standard errors, with the
    acceptance's band of +-2."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels, values = [], []
    for row in payload["rows"]:
        for arm in row["arms"]:
            labels.append(f"{row['partition']} {row['tiers']} T={row['budget']:g} {arm}")
            values.append(ray_agreement(row["arms"][arm]))
    fig = Figure(figsize=(7, 0.16 * len(labels) + 1.4), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ys = np.arange(len(labels))
    ax.scatter(values, ys, marker="o", s=12)
    for edge in (-2.0, 2.0):
        ax.axvline(edge, color="grey", linestyle="--", linewidth=1)
    ax.axvline(0.0, color="black", linewidth=0.5)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=5)
    ax.invert_yaxis()
    ax.set_xlim(min(-2.5, *values), max(2.5, *values))
    ax.set_xlabel("Ray - simulator test accuracy, in standard errors (pass: within +-2)")
    fig.tight_layout()
    fig.savefig(path)


def ray_main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``--ray-from STEM``: rerun the first ``--ray-seeds`` seeds of every cell of a
    simulator run on Ray; writes ``STEM_ray.{json,md,png}`` (``--stem``: that stem instead)."""
    import ray

    source = RESULTS / f"{args.ray_from}.json"
    if not source.is_file():
        parser.error(f"--ray-from: {source} does not exist (run the simulator benchmark first)")
    if not (math.isfinite(args.time_scale) and args.time_scale > 0):
        parser.error(f"--time-scale must be a finite number > 0, got {args.time_scale}")
    arms = tuple(args.ray_arms.split(",")) if args.ray_arms is not None else ARMS
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms or len(set(arms)) != len(arms):
        parser.error(f"--ray-arms: distinct arms from {list(ARMS)}, got {args.ray_arms!r}")
    arms = tuple(a for a in ARMS if a in arms)
    sim = json.loads(source.read_text())
    chosen = [r for r in sim["records"] if r["seed"] < args.ray_seeds]
    if args.partitions:
        chosen = [r for r in chosen if r["partition"] in args.partitions.split(",")]
    if not chosen:
        parser.error(f"--ray-from: no cell-seed of {source.name} has a seed below "
                     f"--ray-seeds {args.ray_seeds}"
                     + (f" and a partition in {args.partitions!r}" if args.partitions else ""))
    import torch

    torch.set_num_threads(1)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    start = time.perf_counter()
    records, loads = [], []
    stem = args.stem or f"{args.ray_from}_ray"
    partial = RESULTS / f"{stem}.records.jsonl"
    partial.write_text("")
    try:
        for record in chosen:
            loads.append(os.getloadavg()[0])
            rec = run_ray_cell(record, args.time_scale, arms)
            loads += [a["load_average_1min"] for a in rec["arms"].values()]
            records.append(rec)
            with partial.open("a") as fh:
                fh.write(_records_text([rec]))
    finally:
        ray.shutdown()
    payload = {
        "command": "benchmarks/recommend.py " + " ".join(sys.argv[1:]),
        "time_scale": args.time_scale, "wall_seconds": time.perf_counter() - start,
        "load_min": min(loads), "load_max": max(loads),
        "rows": summarise_ray(records), "records": records,
    }
    text = ray_markdown(payload)
    save_results(stem, payload, _text_writer(text), ray_plot, default=float, results=RESULTS)
    print(text)
    return 0


SAME_DRAW_OFFSET = 500  # run seeds draw_seed + 500 + j: none of the selection's own


def same_draw_cell(job: dict[str, Any]) -> dict[str, Any]:
    """Every arm's chosen design of one cell-seed, rerun on the data it was chosen on.

    The benchmark's evaluation seed draws other data (training subsample, partition,
    initial model) than the selection seed the designs were chosen on, so its table
    measures how a choice transfers to another draw of the partition's kind. A user runs
    the recommendation on the data it was made for; this measures that: each arm's design
    (``job['record']['arms'][arm]['point']``, step included) runs on the selection seed's
    workload for ``job['runs']`` fresh run seeds ``draw_seed + SAME_DRAW_OFFSET + j``
    (other service times, routing and minibatches; none of the seeds any choice was made
    on), and its test accuracy is the mean over them. Identical designs share their runs.
    """
    import torch

    torch.set_num_threads(1)
    from raysync.objectives import DesignPoint
    from tuning.recommend import measure

    record, runs = job["record"], job["runs"]
    part, tiers, budget, seed = (record["partition"], record["tiers"], record["budget"],
                                 record["seed"])
    draw_seed = seed + SELECTION_OFFSET
    run_seeds = [draw_seed + SAME_DRAW_OFFSET + j for j in range(runs)]
    confirmation = record["arms"]["recommend"].get("confirmation") or {}
    used = {draw_seed, *confirmation.get("seeds", ()), *confirmation.get("selection_seeds", ())}
    for choice in (record["arms"]["recommend"].get("lr_choice") or {}).values():
        used.update(choice.get("pilot_seeds", ()))
    if used & set(run_seeds):
        raise ValueError(f"run seeds {sorted(used & set(run_seeds))} of {part} {tiers} "
                         f"T={budget:g} seed {seed} were selection seeds")
    model = record.get("model", "logreg")
    cfg = base_config(part, tiers, draw_seed, record["max_train"], model)
    workload = make_workload(cfg, part, record.get("eval_samples"))
    done: dict[str, list[dict[str, Any]]] = {}
    out: dict[str, Any] = {k: v for k, v in record.items() if k != "arms"}
    out.update({"draw_seed": draw_seed, "run_seeds": run_seeds, "arms": {}})
    for arm in ARMS:
        stored = record["arms"][arm]
        key = json.dumps(stored["point"], sort_keys=True)
        if key not in done:
            point = DesignPoint.from_dict(stored["point"])
            done[key] = [measure(cfg, point, budget=budget, workload=workload, seed=sd,
                                 num_evals=8, target=TARGET) for sd in run_seeds]
        ms = done[key]
        hits = [m["time_to_target"] for m in ms]
        out["arms"][arm] = {
            "point": stored["point"],
            "test_accuracy": float(np.mean([m["test_accuracy"] for m in ms])),
            "val_accuracy": float(np.mean([m["val_accuracy"] for m in ms])),
            "time_to_target": None if None in hits else float(np.mean(hits)),
            "throughput": float(np.mean([m["throughput"] for m in ms])),
            "run_test_accuracy": [m["test_accuracy"] for m in ms],
            "other_draw_test_accuracy": stored["test_accuracy"],
            **{k: stored[k] for k in ("simulations", "trials") if k in stored},
        }
    print(f"same draw {part} {tiers} T={budget:g} seed={seed}: "
          + ", ".join(f"{a}={out['arms'][a]['test_accuracy']:.4f}" for a in ARMS),
          file=sys.stderr, flush=True)
    return out


def same_draw_main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``--same-draw STEM``: every cell-seed of ``STEM.records.jsonl`` rerun on its
    selection draw (:func:`same_draw_cell`); writes ``STEM_samedraw.{json,md,png}`` (or
    ``--stem``) and appends to its ``.records.jsonl`` as cell-seeds finish (``--resume``
    keeps those)."""
    source = RESULTS / f"{args.same_draw}.records.jsonl"
    if not source.is_file():
        parser.error(f"--same-draw: {source} does not exist")
    if args.same_draw_runs < 1:
        parser.error(f"--same-draw-runs must be >= 1, got {args.same_draw_runs}")
    records = _read_records(source)
    if args.partitions:
        records = [r for r in records if r["partition"] in args.partitions.split(",")]
    stem = args.stem or f"{args.same_draw}_samedraw"
    partial = RESULTS / f"{stem}.records.jsonl"
    out: list[dict[str, Any]] = []
    if args.resume and partial.is_file():
        out = [r for r in _read_records(partial) if len(r["run_seeds"]) == args.same_draw_runs]
    done = {_cell_of(r) + (r["seed"],) for r in out}
    earlier = _earlier_wall_seconds(RESULTS / f"{stem}.json") if out else 0.0
    jobs = [{"record": r, "runs": args.same_draw_runs} for r in records
            if _cell_of(r) + (r["seed"],) not in done]
    partial.write_text(_records_text(out))
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        for rec in pool.map(same_draw_cell, jobs):
            out.append(rec)
            with partial.open("a") as fh:
                fh.write(_records_text([rec]))
    payload = {
        "command": "benchmarks/recommend.py " + " ".join(sys.argv[1:]),
        "note": (f"Same draw: every arm's design of {args.same_draw} (chosen on the "
                 "selection seed's data) rerun on that same data, "
                 f"{args.same_draw_runs} fresh run seeds per cell-seed (test accuracy their "
                 "mean); the run of record evaluates on another draw."),
        "same_draw_of": args.same_draw, "runs": args.same_draw_runs,
        "load_average_1min": os.getloadavg(), "wall_seconds": time.perf_counter() - start,
        "resumed_cell_seeds": len(done), "earlier_wall_seconds": earlier, "target": TARGET,
        "rows": summarise(out), "records": out,
    }
    _write_run(stem, payload)
    return 0


def _se(x: np.ndarray) -> float:
    """Standard error of the mean of ``x`` (NaN for fewer than two values)."""
    return float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.nan


def _cells(records: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """The records grouped by cell (partition, tiers, budget), sorted: an empty row of each
    cell (its keys and seed count, ``arms`` to fill) with the cell's records."""
    cells: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for r in records:
        cells.setdefault((r["partition"], r["tiers"], r["budget"]), []).append(r)
    return [({"partition": part, "tiers": tiers, "budget": budget, "seeds": len(recs),
              "arms": {}}, recs)
            for (part, tiers, budget), recs in sorted(cells.items())]


def summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for row, recs in _cells(records):
        for arm in ARMS:
            acc = np.array([r["arms"][arm]["test_accuracy"] for r in recs])
            ttt = [r["arms"][arm]["time_to_target"] for r in recs]
            row["arms"][arm] = {
                "mean": float(acc.mean()), "se": _se(acc),
                "time_to_target": [t for t in ttt if t is not None],
                "reached": sum(t is not None for t in ttt),
                "designs": [r["arms"][arm]["point"] for r in recs],
            }
        best = max(ARMS, key=lambda a: row["arms"][a]["mean"])
        row["best"] = best
        base = max(("uniform", "asyncsgd", "fedasync", "fedbuff"),
                   key=lambda a: row["arms"][a]["mean"])
        row["best_baseline"] = base
        row["recommend_simulations"] = [r["arms"]["recommend"].get("simulations") for r in recs]
        row["recommend_trials"] = [r["arms"]["recommend"].get("trials") for r in recs]
        rows.append(row)
    return rows


def markdown(payload: dict[str, Any]) -> str:
    lines = [
        "## Recommend benchmark (issue 13)",
        "",
        f"Run: `{payload['command']}` ({payload['wall_seconds'] / 60:.0f} min on a shared "
        f"2-core machine{_resumed(payload)}). {payload['note']}",
        "",
        "Test accuracy at the budget, mean ± standard error over seeds; every arm's step "
        "and recommend's trials chosen on validation on a separate selection seed. "
        f"`t→{TARGET}`: mean time (virtual s) to reach {TARGET} validation accuracy over "
        "the seeds that reached it (reached/seeds).",
        "",
        "| cell | " + " | ".join(ARMS) + " |",
        "|---|" + "---|" * len(ARMS),
    ]
    for row in payload["rows"]:
        cells = []
        for arm in ARMS:
            a = row["arms"][arm]
            mark = "**" if arm == row["best"] else ""
            cells.append(f"{mark}{100 * a['mean']:.2f} ± {100 * a['se']:.2f}{mark}")
        lines.append(f"| {row['partition']}, {row['tiers']}, T={row['budget']:g} | "
                     + " | ".join(cells) + " |")
    lines += ["", "| cell | " + " | ".join(f"t→{TARGET} {a}" for a in ARMS) + " |",
              "|---|" + "---|" * len(ARMS)]
    for row in payload["rows"]:
        cells = []
        for arm in ARMS:
            a = row["arms"][arm]
            t = f"{np.mean(a['time_to_target']):.1f}" if a["time_to_target"] else "-"
            cells.append(f"{t} ({a['reached']}/{row['seeds']})")
        lines.append(f"| {row['partition']}, {row['tiers']}, T={row['budget']:g} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Verdict per cell (recommend vs best baseline, in standard errors of the "
              "difference; the bias-aware optimum alone vs the best arm):", ""]
    for row in payload["rows"]:
        v = verdict(row)
        lines.append(
            f"- {row['partition']}, {row['tiers']}, T={row['budget']:g}: recommend "
            f"{100 * v['recommend_diff']:+.2f} points vs {row['best_baseline']} "
            f"({v['recommend_z']:+.1f} SE); bias-aware optimum alone "
            f"{100 * v['bias_diff']:+.2f} points vs best arm ({row['best']}, "
            f"{v['bias_z']:+.1f} SE); bias optimum chose "
            f"{_design(row['arms']['bias']['designs'][0])}, recommend chose "
            f"{_design(row['arms']['recommend']['designs'][0])}; "
            f"recommend spent {row.get('recommend_simulations')} simulations per seed "
            f"({row.get('recommend_trials')} of them Optuna trials)"
        )
    return "\n".join(lines) + "\n"


def verdict(row: dict[str, Any]) -> dict[str, Any]:
    """The issue's two acceptance tests on one summarised cell (a row of :func:`summarise`).

    ``recommend_diff``: recommend's mean test accuracy minus the best baseline's (uniform,
    AsyncSGD, FedAsync, FedBuff), in accuracy (fraction); ``recommend_z``: that difference
    in standard errors of the difference, ``sqrt(SE_a^2 + SE_b^2)`` (0 when both are 0);
    ``recommend_ok``: ``recommend_z >= -1``. ``bias_*`` the same for the bias-aware optimum
    alone against the best of all arms (0 when it is the best arm). ``asyncsgd_best``: AsyncSGD
    is the best baseline; ``bias_asyncsgd_seeds``: on how many seeds the bias-aware optimum
    chose AsyncSGD's rule (the issue: it should where AsyncSGD wins).
    """
    def z(diff: float, se: float) -> float:
        return diff / se if se > 0 else 0.0

    arms = row["arms"]
    rec, base = arms["recommend"], arms[row["best_baseline"]]
    diff = rec["mean"] - base["mean"]
    rec_z = z(diff, math.hypot(rec["se"], base["se"]))
    bias, best = arms["bias"], arms[row["best"]]
    b_diff = bias["mean"] - best["mean"]
    b_z = z(b_diff, math.hypot(bias["se"], best["se"]))  # 0 where bias is the best arm
    return {
        "recommend_diff": diff, "recommend_z": rec_z, "recommend_ok": rec_z >= -1.0,
        "bias_diff": b_diff, "bias_z": b_z, "bias_ok": b_z >= -1.0,
        "asyncsgd_best": row["best_baseline"] == "asyncsgd",
        "bias_asyncsgd_seeds": sum(d["rule"] == "asyncsgd" for d in bias["designs"]),
    }


def _z(rec: np.ndarray, base: np.ndarray) -> np.ndarray:
    """:func:`verdict`'s ``recommend_z`` of each row of ``rec``/``base`` (shape ``(m, k)``:
    ``m`` arrangements of ``k`` seeds): mean difference over ``sqrt(SE_a^2 + SE_b^2)``,
    0 where both SEs are 0."""
    k = rec.shape[1]
    se = np.hypot(rec.std(axis=1, ddof=1), base.std(axis=1, ddof=1)) / math.sqrt(k)
    diff = rec.mean(axis=1) - base.mean(axis=1)
    return np.divide(diff, se, out=np.zeros_like(diff), where=se > 0)


def null_fail_probability(rec: Any, base: Any, *, draws: int = 1 << 16) -> float:
    """Chance that a cell fails the one-SE test (:func:`verdict`) when recommend and the
    best baseline are exchangeable on each seed (the paired sign-flip null of a
    permutation test): the fraction of the ``2^k`` ways of swapping the two arms' test
    accuracies within seeds (``rec``, ``base``: shape ``(k,)``, paired by evaluation
    seed, ``k >= 2``) whose ``recommend_z`` is below -1. Exact for ``2^k <= draws``, else
    ``draws`` random swaps (seeded). A seed where the two arms scored the same adds
    nothing; a cell where recommend ran the baseline's design on every seed cannot fail.
    Raises ``ValueError`` for unpaired or fewer than two seeds.
    """
    r, b = np.asarray(rec, dtype=float), np.asarray(base, dtype=float)
    if r.shape != b.shape or r.ndim != 1 or r.size < 2:
        raise ValueError(f"need two paired 1-d arrays of >= 2 seeds, got shapes {r.shape} "
                         f"and {b.shape}")
    k = r.size
    if 2 ** k <= draws:
        swap = ((np.arange(2 ** k)[:, None] >> np.arange(k)) & 1).astype(bool)
    else:
        swap = np.random.default_rng(0).random((draws, k)) < 0.5
    z = _z(np.where(swap, b, r), np.where(swap, r, b))
    return float(np.mean(z < -1.0))


def count_distribution(probabilities: Any) -> np.ndarray:
    """Distribution of the number of independent events with these probabilities (the
    Poisson-binomial): entry ``j`` of the result (shape ``(n + 1,)``) is ``P(count = j)``."""
    dist = np.ones(1)
    for q in probabilities:
        dist = np.convolve(dist, [1.0 - q, q])
    return dist


def _paired(records: list[dict[str, Any]], row: dict[str, Any],
            base: str) -> tuple[np.ndarray, np.ndarray]:
    """Recommend's and ``base``'s test accuracies in ``row``'s cell, paired by seed."""
    recs = sorted((r for r in records if _cell_of(r) == _cell_of(row)), key=lambda r: r["seed"])
    return (np.array([r["arms"]["recommend"]["test_accuracy"] for r in recs]),
            np.array([r["arms"][base]["test_accuracy"] for r in recs]))


def acceptance(stems: list[str], results: Path = RESULTS) -> dict[str, Any]:
    """The acceptance verdict of every cell of the runs ``results/STEM.json``.

    Each cell (model, partition, tiers, budget) must come from one run only: a cell in two
    of the stems raises ``ValueError`` naming both (pick the run of record). A stem written
    ``STEM:PART+PART`` contributes only those partitions' cells (e.g. the cells a later run
    redid are left to it). Returns the per-cell verdicts (:func:`verdict`) and the counts
    of cells that pass each test, and a calibration of the first test: each cell's chance
    of failing it if recommend were exactly as good as the best baseline there
    (:func:`null_fail_probability` on the paired seeds, ``null_fail``), their sum
    (``null_expected_fails``), the chance that every cell passes under that null
    (``null_p_all_pass``) and that at most the observed number fail
    (``null_p_at_most``), cells taken as independent, plus recommend's
    gain over the best baseline averaged over the cells with its standard error from the
    per-cell paired SEs (``mean_gain``, ``mean_gain_se``; accuracy fractions). The best
    baseline is the best of four on the same seeds, so its mean is biased upwards and
    the null rate is, if anything, understated.
    """
    cells: dict[tuple[str, str, str, float], str] = {}
    rows = []
    for spec in stems:
        stem, _, only = spec.partition(":")
        keep = set(only.split("+")) if only else None
        path = results / f"{stem}.json"
        if not path.is_file():
            raise ValueError(f"{path} does not exist (a stem of results/*.json is expected)")
        payload = json.loads(path.read_text())
        model = (payload.get("records") or [{}])[0].get("model", "logreg")
        present = {row["partition"] for row in payload["rows"]}
        if keep is not None and not keep <= present:
            raise ValueError(f"{spec}: {stem} has no cells of {sorted(keep - present)} "
                             f"(it has {sorted(present)})")
        for row in payload["rows"]:
            if keep is not None and row["partition"] not in keep:
                continue
            key = (model, row["partition"], row["tiers"], float(row["budget"]))
            if key in cells:
                raise ValueError(f"cell {key} is in both {cells[key]} and {stem}: name one "
                                 "run per cell")
            cells[key] = stem
            rec, base = _paired(payload["records"], row, row["best_baseline"])
            if rec.size != row["seeds"]:
                raise ValueError(f"{stem}: cell {key} has {row['seeds']} seeds in its rows "
                                 f"but {rec.size} in its records")
            rows.append({"stem": stem, "model": model, "partition": row["partition"],
                         "tiers": row["tiers"], "budget": row["budget"],
                         "seeds": row["seeds"], "best": row["best"],
                         "best_baseline": row["best_baseline"], **verdict(row),
                         "gain_se": _se(rec - base),
                         "null_fail": null_fail_probability(rec, base)})
    fails = sum(not r["recommend_ok"] for r in rows)
    dist = count_distribution([r["null_fail"] for r in rows])
    n = max(len(rows), 1)
    return {"stems": stems, "cells": len(rows),
            "recommend_ok": len(rows) - fails,
            "bias_ok": sum(r["bias_ok"] for r in rows),
            "null_expected_fails": float(sum(r["null_fail"] for r in rows)),
            "null_p_at_most": float(dist[:fails + 1].sum()),
            "null_p_all_pass": float(dist[0]),
            "mean_gain": float(sum(r["recommend_diff"] for r in rows) / n),
            "mean_gain_se": float(math.sqrt(sum(r["gain_se"] ** 2 for r in rows)) / n),
            "rows": rows}


def acceptance_markdown(payload: dict[str, Any]) -> str:
    n = payload["cells"]
    lines = [
        "## Recommend benchmark: acceptance over the runs of record (issue 13)",
        "",
        f"Run: `{payload['command']}`. Per cell: recommend against the best baseline, and "
        "the bias-aware optimum alone (`bias`) against the best arm, in test-accuracy points "
        "and in standard errors of the difference (`sqrt(SE_a^2 + SE_b^2)`); a cell passes "
        "at >= -1 SE. `bias AsyncSGD`: seeds on which the bound chose AsyncSGD's rule.",
        "",
        "| run | model | cell | seeds | best baseline | recommend | ok | best arm | bias "
        "| ok | bias AsyncSGD |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["rows"]:
        lines.append(
            f"| {r['stem']} | {r['model']} | {r['partition']}, {r['tiers']}, "
            f"T={r['budget']:g} | {r['seeds']} | {r['best_baseline']} | "
            f"{100 * r['recommend_diff']:+.2f} ({r['recommend_z']:+.1f} SE) | "
            f"{'yes' if r['recommend_ok'] else '**no**'} | {r['best']} | "
            f"{100 * r['bias_diff']:+.2f} ({r['bias_z']:+.1f} SE) | "
            f"{'yes' if r['bias_ok'] else '**no**'} | "
            f"{r['bias_asyncsgd_seeds']}/{r['seeds']} |")
    lines += ["", f"Recommend within one SE of the best baseline: **{payload['recommend_ok']} "
              f"of {n}** cells (the issue: all). The bias-aware optimum alone within one SE "
              f"of the best arm: **{payload['bias_ok']} of {n}** "
              f"({100 * payload['bias_ok'] / max(n, 1):.0f} %; the issue: at least 80 %).",
              "",
              "How strict the first test is: if recommend were exactly as good as the best "
              "baseline in every cell (the two arms exchangeable on each seed, a paired "
              "sign-flip null; cells where recommend ran the baseline's design on every "
              "seed cannot fail), "
              f"{payload['null_expected_fails']:.1f} of the {n} cells would be expected to "
              "fail it by chance, all would pass with probability "
              f"{payload['null_p_all_pass']:.3f}, and at most the observed "
              f"{n - payload['recommend_ok']} would fail with probability "
              f"{payload['null_p_at_most']:.3f} (cells independent). Recommend's gain over "
              "the best baseline averaged over the cells: "
              f"{100 * payload['mean_gain']:+.2f} ± {100 * payload['mean_gain_se']:.2f} "
              "points (SE from the per-cell paired SEs)."]
    return "\n".join(lines) + "\n"


def acceptance_plot(payload: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = payload["rows"]
    fig = Figure(figsize=(7, 0.28 * len(rows) + 1.4), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ys = np.arange(len(rows))
    ax.scatter([r["recommend_z"] for r in rows], ys, marker="o",
               label="recommend vs best baseline")
    ax.scatter([r["bias_z"] for r in rows], ys, marker="x",
               label="bias-aware optimum vs best arm")
    ax.axvline(-1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{r['model']} {r['partition']} {r['tiers']} T={r['budget']:g}"
                        for r in rows], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("difference in standard errors (pass: >= -1)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)


def acceptance_main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``--acceptance STEM,...``: writes ``recommend_acceptance.{json,md,png}`` (``--stem``:
    that stem instead, e.g. for a verdict over runs with a non-default recommend)."""
    try:
        payload = acceptance(args.acceptance.split(","))
    except ValueError as exc:
        parser.error(f"--acceptance: {exc}")
    payload = {"command": "benchmarks/recommend.py " + " ".join(sys.argv[1:]), **payload}
    stem = args.stem or "recommend_acceptance"
    text = acceptance_markdown(payload)
    save_results(stem, payload, _text_writer(text), acceptance_plot, results=RESULTS)
    print(text)
    return 0


def _design(d: dict[str, Any]) -> str:
    if d["rule"] == "asyncsgd":
        return f"AsyncSGD lr={d['lr']:.3g}"
    if d["rule"] == "weighted":
        return f"weighted beta={d['beta']:.2f} C={d['concurrency']} lr={d['lr']:.3g}"
    return f"{d['rule']} C={d['concurrency']} lr={d['lr']:.3g}"


def plot(payload: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = payload["rows"]
    fig = Figure(figsize=(max(6, 1.6 * len(rows)), 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(ARMS)
    for k, arm in enumerate(ARMS):
        xs = [j + k * width for j in range(len(rows))]
        ax.bar(xs, [100 * r["arms"][arm]["mean"] for r in rows], width,
               yerr=[100 * r["arms"][arm]["se"] for r in rows], label=arm)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))])
    ax.set_xticklabels([f"{r['partition']}\n{r['tiers']} T={r['budget']:g}" for r in rows],
                       fontsize=7)
    low = min(100 * r["arms"][a]["mean"] for r in rows for a in ARMS)
    ax.set_ylim(max(0.0, low - 5), None)
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path)


def _earlier_wall_seconds(previous: Path) -> float:
    """Wall seconds a resumed run's kept cell-seeds cost: the previous run's own time plus
    what it had itself carried over (0 when there is no previous ``STEM.json``), so a run
    resumed twice still reports its whole cost."""
    if not previous.is_file():
        return 0.0
    payload = json.loads(previous.read_text())
    return float(payload.get("wall_seconds", 0.0)) + float(
        payload.get("earlier_wall_seconds", 0.0))


def _resumed(payload: dict[str, Any]) -> str:
    kept = payload.get("resumed_cell_seeds", 0)
    if not kept:
        return ""
    return (f" for the new cell-seeds, plus {payload.get('earlier_wall_seconds', 0) / 60:.0f} min "
            f"of the earlier run whose {kept} cell-seeds were kept")


def _job_key(job: dict[str, Any]) -> str:
    """What makes two cell-seeds the same run: the cell, the seed and every grid setting."""
    key = [job["partition"], job["tiers"], float(job["budget"]), job["seed"], job["trials"],
           job["max_train"], [float(v) for v in job["lrs"]], job.get("model", "logreg")]
    if job.get("eval_samples") is not None:  # absent from records made before the flag
        key.append(job["eval_samples"])
    if job.get("redraw"):
        key.append("redraw")
    if job.get("confirm_seeds"):  # absent (0) in records made before the confirmation
        key.append(["confirm_seeds", job["confirm_seeds"]])
    if job.get("confirm_redraw"):
        key.append("confirm_redraw")
    if job.get("pool_bias"):
        key.append("pool_bias")
    if job.get("overrule_margin", 1.0) != 1.0:  # absent (one SE) in records made before it
        key.append(["overrule_margin", float(job["overrule_margin"])])
    if job.get("rule_change_margin") is not None:  # absent: the overrule margin
        key.append(["rule_change_margin", float(job["rule_change_margin"])])
    return json.dumps(key)


def _reuse_key(record: dict[str, Any]) -> str:
    """What the arms other than recommend depend on: the job key without the settings
    that only recommend reads (its trial budget, the pilot's redraw, the pooled bias term
    and its confirmation seeds)."""
    return _job_key({**record, "trials": None, "redraw": False, "confirm_seeds": 0,
                     "confirm_redraw": False, "pool_bias": False, "overrule_margin": 1.0,
                     "rule_change_margin": None})


def rescore_record(record: dict[str, Any], margin: float,
                   evaluate: Callable[[Any], dict[str, Any]],
                   rule_change_margin: float | None = None) -> tuple[dict[str, Any], bool]:
    """Recommend's arm of one cell-seed as a run with ``overrule_margin = margin`` (and
    ``rule_change_margin``) gives it.

    The choice is :func:`tuning.recommend._confirm` on the recorded fresh-seed scores of the
    bound's design and the finalists (everything before the confirmation is independent of
    the margin). ``evaluate(point)`` measures a design on the record's evaluation seed; it is
    called only when the choice changes; the changed arm's ``bound``, ``dominant`` and
    ``val_selection`` are then None (not recomputed: they need the pilot's estimate and
    runs the record does not keep). A record without a confirmation (the leader was the
    bound's design) is unchanged but for the margin.

    Returns:
        The new record and whether recommend's design changed.

    Raises:
        ValueError: The record's own margin does not reproduce its recorded choice (the
            scores or points were not recorded by this rule).
    """
    from raysync.objectives import DesignPoint
    from tuning.recommend import _confirm

    out = copy.deepcopy(record)
    out["overrule_margin"] = float(margin)
    out.pop("rule_change_margin", None)
    if rule_change_margin is not None:
        out["rule_change_margin"] = float(rule_change_margin)
    arm = out["arms"]["recommend"]
    conf = arm.get("confirmation")
    if not conf:
        return out, False
    base = DesignPoint.from_dict(conf["incumbent_point"])
    finalists = [DesignPoint.from_dict(row["point"]) for row in conf["challengers"]]
    # Records made before the target counted misses have none (the benchmark sets no target).
    recorded = {base: (conf["incumbent_scores"], conf.get("incumbent_misses", 0)),
                **{q: (row["scores"], row.get("misses", 0))
                   for q, row in zip(finalists, conf["challengers"], strict=True)}}

    def choose(m: float, r: float | None) -> tuple[Any, dict[str, Any]]:
        return _confirm((conf["incumbent"], base), finalists, lambda q: recorded[q][0],
                        target=None, misses=lambda q: recorded[q][1], margin=m,
                        rule_change_margin=r)

    old, _ = choose(float(conf.get("margin", record.get("overrule_margin", 1.0))),
                    conf.get("rule_change_margin"))
    # As points, not dicts: to_dict renormalises p, which moves it in the last digit.
    if old != DesignPoint.from_dict(arm["point"]):
        raise ValueError(
            f"{record['partition']} {record['tiers']} T={record['budget']:g} seed "
            f"{record['seed']}: its recorded confirmation scores choose {old.describe()}, "
            f"the record says {DesignPoint.from_dict(arm['point']).describe()}")
    chosen, new_conf = choose(margin, rule_change_margin)
    new_conf.update({k: conf[k] for k in ("seeds", "selection_seeds", "data") if k in conf},
                    incumbent_point=conf["incumbent_point"])
    for row, recorded in zip(new_conf["challengers"], conf["challengers"], strict=True):
        row["point"] = recorded["point"]  # as recorded, not renormalised again
    arm["confirmation"] = new_conf
    if chosen == old:
        return out, False
    m = evaluate(chosen)
    arm.update(point=chosen.to_dict(), test_accuracy=m["test_accuracy"],
               val_accuracy=m["val_accuracy"], time_to_target=m["time_to_target"],
               throughput=m["throughput"], staleness=m["staleness"],
               val_selection=None, rescored_from=record["arms"]["recommend"]["point"],
               bound=None, dominant=None)  # the bound needs the pilot's estimate, not kept
    return out, True


def _evaluate(record: dict[str, Any], measure: Any, point: Any) -> dict[str, Any]:
    """``point`` measured on ``record``'s evaluation seed, as :func:`run_cell` measures."""
    part, seed = record["partition"], record["seed"]
    cfg = base_config(part, record["tiers"], seed, record["max_train"],
                      record.get("model", "logreg"))
    workload = make_workload(cfg, part, record.get("eval_samples"))
    return dict(measure(cfg, point, budget=record["budget"], workload=workload, seed=seed,
                        num_evals=8, target=TARGET))


def rescore_main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``--rescore STEM``: recommend's choices of STEM redone with ``--overrule-margin``."""
    import torch

    from raysync.objectives import DesignPoint
    from tuning.recommend import measure

    torch.set_num_threads(1)
    source = RESULTS / f"{args.rescore}.records.jsonl"
    if not source.is_file():
        parser.error(f"--rescore: {source} does not exist")
    records = _read_records(source)
    start = time.perf_counter()
    out, changed = [], []
    for record in records:
        try:
            new, moved = rescore_record(record, args.overrule_margin,
                                        functools.partial(_evaluate, record, measure),
                                        args.rule_change_margin)
        except ValueError as exc:
            parser.error(f"--rescore {args.rescore}: {exc}")
        out.append(new)
        if moved:
            arm = new["arms"]["recommend"]
            changed.append(f"{record['partition']} {record['tiers']} T={record['budget']:g} "
                           f"seed {record['seed']}: "
                           f"{DesignPoint.from_dict(arm['rescored_from']).describe()} -> "
                           f"{DesignPoint.from_dict(arm['point']).describe()}")
            print(changed[-1], file=sys.stderr, flush=True)
    stem = args.stem or (f"{args.rescore}_m{args.overrule_margin:g}"
                         + ("" if args.rule_change_margin is None
                            else f"_r{args.rule_change_margin:g}"))
    rule_change = ("" if args.rule_change_margin is None
                   else f" and --rule-change-margin {args.rule_change_margin:g}")
    (RESULTS / f"{stem}.records.jsonl").write_text(_records_text(out))
    earlier = RESULTS / f"{args.rescore}.json"
    note = json.loads(earlier.read_text()).get("note", "") if earlier.is_file() else ""
    payload = {
        "command": "benchmarks/recommend.py " + " ".join(sys.argv[1:]),
        "note": (f"Rescored: recommend's choice of {args.rescore} redone with "
                 f"--overrule-margin {args.overrule_margin:g}{rule_change} on its recorded "
                 f"confirmation scores; {len(changed)} of {len(out)} choices changed and "
                 f"were measured again. {note}").strip(),
        "rescored_from": args.rescore, "overrule_margin": args.overrule_margin,
        "rule_change_margin": args.rule_change_margin,
        "changed": changed,
        "load_average_1min": os.getloadavg(), "wall_seconds": time.perf_counter() - start,
        "resumed_cell_seeds": 0, "earlier_wall_seconds": 0.0, "target": TARGET,
        "rows": summarise(out), "records": out,
    }
    _write_run(stem, payload)
    return 0


def _write_run(stem: str, payload: dict[str, Any]) -> None:
    text = markdown(payload)
    save_results(stem, payload, _text_writer(text), plot, default=float, results=RESULTS)
    print(text)


def _text_writer(text: str) -> Callable[[dict[str, Any], Path], None]:
    """A ``save_results`` Markdown writer that writes ``text`` (already made, to print)."""

    def write(_payload: dict[str, Any], path: Path) -> None:
        path.write_text(text)

    return write


def _positive(parser: argparse.ArgumentParser, flag: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        parser.error(f"{flag}: every value must be a finite number > 0, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--partitions", default=None,
                        help="comma-separated subset of the partitions (e.g. speed_skew)")
    parser.add_argument("--stem", default=None, help="output file stem (default by mode)")
    parser.add_argument("--tiers", default=None, help="comma-separated subset of the tier sets")
    parser.add_argument("--budgets", default=None, help="comma-separated budgets (virtual s)")
    parser.add_argument("--seeds", type=int, default=None, help="evaluation seeds 0..K-1")
    parser.add_argument("--first-seed", type=int, default=0, metavar="S",
                        help="with --seeds K: evaluation seeds S..S+K-1 (seeds no earlier run "
                             "chose a rule on)")
    parser.add_argument("--max-train", type=int, default=None, help="training subsample")
    parser.add_argument("--lrs", default=None, help="comma-separated step grid")
    parser.add_argument("--model", default="logreg", choices=("logreg", "cnn"),
                        help="the model of every cell (the issue's CNN cell set: cnn)")
    parser.add_argument("--eval-samples", type=int, default=None,
                        help="cap the validation and test sets at this many rows each (one "
                             "fixed draw; for the CNN cell set, whose evaluations dominate)")
    parser.add_argument("--redraw-partition", action="store_true",
                        help="recommend's pilot seeds also redraw the partition "
                             "(RecommendSettings.redraw_partition)")
    parser.add_argument("--redraw-confirmation", action="store_true",
                        help="recommend's confirmation seeds redraw the partition "
                             "(RecommendSettings.redraw_confirmation)")
    parser.add_argument("--pool-bias", action="store_true",
                        help="recommend's bound pools its bias term over the pilot seeds' "
                             "draws, every run on the selection draw "
                             "(RecommendSettings.pool_bias, recommend's default since "
                             "2026-12-06; off here unless given, as in the runs of record)")
    parser.add_argument("--confirm-seeds", type=int, default=5, metavar="N",
                        help="recommend's confirmation seeds (RecommendSettings.confirm_seeds; "
                             "default 5; 0 as in the runs made before the confirmation)")
    parser.add_argument("--overrule-margin", type=float, default=1.0, metavar="SE",
                        help="recommend's RecommendSettings.overrule_margin (default 1)")
    parser.add_argument("--rule-change-margin", type=float, default=None, metavar="SE",
                        help="recommend's RecommendSettings.rule_change_margin (default: "
                             "--overrule-margin)")
    parser.add_argument("--rescore", default=None, metavar="STEM",
                        help="redo recommend's choices of STEM.records.jsonl with "
                             "--overrule-margin on their recorded confirmation scores")
    parser.add_argument("--arms-from", default=None, metavar="STEM",
                        help="take every arm but recommend from STEM.records.jsonl's cell-seeds "
                             "with the same grid settings (trials, redraw and confirmation "
                             "seeds aside)")
    parser.add_argument("--rerun-arms", default="recommend",
                        help="with --arms-from: the arms to run again (comma-separated)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the cell-seeds already in STEM.records.jsonl (same grid "
                             "settings) and run only the missing ones")
    parser.add_argument("--compare-recommend", default=None, metavar="A,B",
                        help="recommend's arm of runs A and B paired by cell-seed; writes "
                             "results/B_vs_A.{json,md}")
    parser.add_argument("--acceptance", default=None, metavar="STEM,...",
                        help="the issue's acceptance verdict of every cell of these runs "
                             "(results/STEM.json, one run per cell; STEM:PART+PART takes "
                             "only those partitions' cells); writes "
                             "results/recommend_acceptance.{json,md,png} (--stem: "
                             "another name)")
    parser.add_argument("--ray-from", default=None,
                        help="rerun the designs of results/STEM.json on the Ray runtime; "
                        "writes results/STEM_ray.{json,md,png} (--stem: another name)")
    parser.add_argument("--ray-seeds", type=int, default=3, help="with --ray-from: seeds 0..K-1")
    parser.add_argument("--ray-arms", default=None, metavar="ARM,...",
                        help="with --ray-from: only these arms (comma-separated; default "
                             "every arm), for cells whose runs are long on the wall clock")
    parser.add_argument("--time-scale", type=float, default=4.0,
                        help="with --ray-from: wall seconds per config second")
    parser.add_argument("--same-draw", default=None, metavar="STEM",
                        help="rerun every arm's design of STEM.records.jsonl on the data it "
                             "was chosen on (the selection seed's draw), fresh run seeds; "
                             "writes results/STEM_samedraw.{json,md,png}")
    parser.add_argument("--same-draw-runs", type=int, default=2, metavar="K",
                        help="with --same-draw: run seeds per cell-seed (default 2)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    if args.same_draw:
        return same_draw_main(args, parser)
    if args.ray_from:
        return ray_main(args, parser)
    if args.compare_recommend:
        return compare_main(args, parser)
    if args.acceptance:
        return acceptance_main(args, parser)
    if args.quick:
        parts, tiers, budgets, seeds = (QUICK["partitions"], QUICK["tiers"], QUICK["budgets"],
                                        QUICK["seeds"])
        trials, max_train, stem = QUICK["trials"], QUICK["max_train"], "recommend_quick"
        lrs = QUICK["lrs"]
    else:
        parts, tiers, budgets, seeds = PARTITIONS, tuple(TIERS), BUDGETS, SEEDS
        trials, max_train, stem, lrs = args.trials, 20_000, "recommend", LRS
    if args.partitions:
        wanted = tuple(args.partitions.split(","))
        unknown = [p for p in wanted if p not in PARTITIONS]
        if unknown:
            parser.error(f"--partitions: unknown {unknown}; choose from {list(PARTITIONS)}")
        parts = wanted  # in the order given: a run stopped part-way keeps the first cells
    if args.tiers:
        tiers = tuple(args.tiers.split(","))
        unknown = [t for t in tiers if t not in TIERS]
        if unknown:
            parser.error(f"--tiers: unknown {unknown}; choose from {list(TIERS)}")
    if args.budgets:
        budgets = tuple(_positive(parser, "--budgets", v) for v in args.budgets.split(","))
    if args.seeds is not None:
        if args.seeds < 2:
            parser.error(f"--seeds must be >= 2 (a standard error needs two), got {args.seeds}")
        seeds = tuple(range(args.first_seed, args.first_seed + args.seeds))
    if args.first_seed < 0 or (args.first_seed and args.seeds is None):
        parser.error(f"--first-seed must be >= 0 and comes with --seeds K, got "
                     f"{args.first_seed}")
    if args.max_train is not None:
        if args.max_train < 100:
            parser.error(f"--max-train must be >= 100, got {args.max_train}")
        max_train = args.max_train
    if args.lrs:
        lrs = tuple(_positive(parser, "--lrs", v) for v in args.lrs.split(","))
    if args.eval_samples is not None and args.eval_samples < 100:
        parser.error(f"--eval-samples must be >= 100, got {args.eval_samples}")
    if args.trials < 0:
        parser.error(f"--trials must be >= 0, got {args.trials}")
    from raysync.exceptions import ConfigError
    from tuning.recommend import RecommendSettings

    try:  # recommend's own rule, checked before any worker starts
        RecommendSettings(budget=1.0, confirm_seeds=args.confirm_seeds,
                          overrule_margin=args.overrule_margin,
                          rule_change_margin=args.rule_change_margin)
    except ConfigError as exc:
        parser.error(str(exc))
    if args.rescore:
        return rescore_main(args, parser)
    stem = args.stem or stem
    # Settings a job records only when set, so records made before their flags still match.
    optional = {**({"eval_samples": args.eval_samples} if args.eval_samples else {}),
                **({"redraw": True} if args.redraw_partition else {}),
                **({"confirm_redraw": True} if args.redraw_confirmation else {}),
                **({"pool_bias": True} if args.pool_bias else {}),
                **({"confirm_seeds": args.confirm_seeds} if args.confirm_seeds else {}),
                **({"overrule_margin": args.overrule_margin}
                   if args.overrule_margin != 1.0 else {}),
                **({"rule_change_margin": args.rule_change_margin}
                   if args.rule_change_margin is not None else {})}
    jobs = [{"partition": p, "tiers": t, "budget": b, "seed": s, "trials": trials,
             "max_train": max_train, "lrs": lrs, "model": args.model, **optional}
            for p in parts for t in tiers for b in budgets for s in seeds]
    rerun = sorted(set(args.rerun_arms.split(",")))
    if not set(rerun) <= set(ARMS) or "recommend" not in rerun:
        parser.error(f"--rerun-arms: arms from {list(ARMS)}, recommend among them; got "
                     f"{args.rerun_arms!r}")
    if args.arms_from:
        source = RESULTS / f"{args.arms_from}.records.jsonl"
        if not source.is_file():
            parser.error(f"--arms-from: {source} does not exist")
        earlier_records = {_reuse_key(r): r for r in _read_records(source)}
        keys = [_reuse_key(j) for j in jobs]
        missing = [k for k in keys if k not in earlier_records]
        if missing:
            parser.error(f"--arms-from: {source.name} has no cell-seed with the grid settings "
                         f"of {len(missing)} of the {len(jobs)} jobs (first: {missing[0]})")
        for j, k in zip(jobs, keys, strict=True):
            j["arms_from"] = args.arms_from
            j["rerun_arms"] = rerun
            j["reuse_arms"] = {a: v for a, v in earlier_records[k]["arms"].items()
                               if a not in rerun}
    start = time.perf_counter()
    # Each finished cell-seed is appended as it arrives: a run stopped part-way keeps them.
    partial = RESULTS / f"{stem}.records.jsonl"
    RESULTS.mkdir(exist_ok=True)
    records: list[dict[str, Any]] = []
    kept, earlier = 0, 0.0
    if args.resume and partial.is_file():
        wanted_keys = {_job_key(j) for j in jobs}
        records = [r for r in _read_records(partial) if _job_key(r) in wanted_keys]
        done = {_job_key(r) for r in records}
        jobs = [j for j in jobs if _job_key(j) not in done]
        kept = len(records)
        if kept:
            earlier = _earlier_wall_seconds(RESULTS / f"{stem}.json")
        print(f"--resume: {len(records)} cell-seeds kept from {partial.name}, "
              f"{len(jobs)} to run", file=sys.stderr, flush=True)
    partial.write_text(_records_text(records))
    failed: list[tuple[dict[str, Any], BaseException]] = []
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        # In finishing order, so one failing cell-seed loses none of the others' work.
        futures = {pool.submit(run_cell, j): j for j in jobs}
        for fut in as_completed(futures):
            try:
                record = fut.result()
            except Exception as exc:  # noqa: BLE001 - reported below, after the rest
                failed.append((futures[fut], exc))
                continue
            records.append(record)
            with partial.open("a") as fh:
                fh.write(_records_text([record]))
    if failed:
        job, first = failed[0]
        raise RuntimeError(
            f"{len(failed)} of {len(jobs)} cell-seeds failed (the others are kept in "
            f"{partial.name}; --resume runs only the missing ones); first: "
            f"{job['partition']} {job['tiers']} T={job['budget']:g} seed {job['seed']}: {first}"
        ) from first
    grid = {"partitions": parts, "tiers": tiers, "budgets": budgets, "seeds": seeds,
            "trials": trials, "max_train": max_train, "lrs": lrs, "model": args.model,
            **optional}
    full = {"partitions": PARTITIONS, "tiers": tuple(TIERS), "budgets": BUDGETS,
            "seeds": SEEDS, "trials": 30, "max_train": 20_000, "lrs": LRS, "model": "logreg"}
    payload = {
        "command": "benchmarks/recommend.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "note": ("Full grid." if grid == full else "Reduced run: " + json.dumps(grid)),
        "load_average_1min": os.getloadavg(),
        "wall_seconds": time.perf_counter() - start,
        "resumed_cell_seeds": kept,
        "earlier_wall_seconds": earlier,
        "target": TARGET,
        "rows": summarise(records),
        "records": records,
    }
    _write_run(stem, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
