"""Reproduction of docs/theory.md section 4: does the (3b) optimum win at a fixed time budget?

Setting (fixed before any run was looked at):

* Fleet: 20 clients in three speed tiers, exponential service with rates 1 : 10 : 100
  (7 slow, 7 medium, 6 fast clients). Time is virtual (simulator), in seconds.
* Task: multinomial logistic regression on MNIST, a seeded 20,000-sample subsample of the
  training set (``data.max_train_samples``), one minibatch gradient (batch 32) per task.
  The validation split (10,000 images) selects step sizes; the test split (10,000) is
  only reported.
* Partitions: ``iid``; ``dirichlet`` (label skew, alpha = 0.3, clients unrelated to
  speed); ``speed_skew`` (heterogeneity correlated with speed: the 6 fast clients hold only
  labels 0-4, the 14 others an IID share of everything left, so labels 5-9 live only on
  slow and medium clients).
* Methods:
  (i) ``uniform``: Generalized AsyncSGD, uniform routing, the same ``C`` as (v);
  (ii) ``asyncsgd``: AsyncSGD, return to sender, ``C = n``;
  (iii) ``fedasync``: FedAsync, uniform routing, ``C = n``, its defaults (alpha = 0.6,
  polynomial staleness ``(D + 1)^-0.5``, one local step per task so that a task is the same
  work as for the SGD methods);
  (iv) ``opt_3a``: the per-update (3a) optimum (``C = 1``, ``p`` uniform);
  (v) ``opt_3b``: the wall-clock (3b) optimum ``(p, C)`` for the budget ``T``.
  (iv) and (v) use Generalized AsyncSGD (importance weights ``1 / (n p_i)``) and minimise
  the bound of docs/theory.md section 5 with its own optimal step (``eta="optimal"``) and the
  constants ``L, sigma^2, M^2, A`` estimated by a pilot run on the partition
  (:func:`raysync.objectives.estimate_constants`).
* Budgets ``T`` in {5, 20, 60} virtual seconds. (i) and (v) depend on ``T`` and run once
  per budget; the others run to 60 s and are read at each budget (evaluations every 5 s).
* Step sizes: for every method (and budget for (i), (v)) the server step (FedAsync: the
  client's step) is chosen from {0.003, 0.01, 0.03, 0.1, 0.3} by validation accuracy,
  averaged over two separate selection seeds (1000, 1001): at ``T`` for (i) and (v),
  averaged over the budgets for the others. Reported: test accuracy over 5 evaluation
  seeds (0-4, seeding partition, initial model and simulation), mean and standard error.

Run: ``.venv/bin/python benchmarks/reproduce_paper.py [--workers 2] [--quick]``; writes
``benchmarks/results/reproduce_paper.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
RATES = (1.0,) * 7 + (10.0,) * 7 + (100.0,) * 6
BUDGETS = (5.0, 20.0, 60.0)
EVAL_EVERY = 5.0
LR_GRID = (0.003, 0.01, 0.03, 0.1, 0.3)
SELECTION_SEEDS = (1000, 1001)
EVAL_SEEDS = (0, 1, 2, 3, 4)
PARTITIONS = ("iid", "dirichlet", "speed_skew")
DIRICHLET_ALPHA = 0.3
MAX_TRAIN = 20_000
BATCH = 32
METHODS = ("uniform", "asyncsgd", "fedasync", "opt_3a", "opt_3b")
PER_BUDGET = ("uniform", "opt_3b")
LABELS = {
    "uniform": "(i) uniform p, C = C(3b)",
    "asyncsgd": "(ii) AsyncSGD, C = n",
    "fedasync": "(iii) FedAsync, C = n",
    "opt_3a": "(iv) (3a) optimum",
    "opt_3b": "(v) (3b) optimum",
}


def _set_threads() -> None:
    import torch

    torch.set_num_threads(1)


def base_config(partition: str, seed: int) -> Any:
    from raysync.config import (
        AlgorithmConfig,
        ClientSpec,
        DataConfig,
        RoutingConfig,
        RunConfig,
        ServiceTimeSpec,
        SystemConfig,
    )

    clients = tuple(
        ClientSpec(service_time=ServiceTimeSpec(kind="exponential", rate=r)) for r in RATES
    )
    data_partition = "dirichlet" if partition == "dirichlet" else "iid"
    return SystemConfig(
        clients=clients,
        concurrency=len(RATES),
        routing=RoutingConfig(kind="uniform"),
        algorithm=AlgorithmConfig(name="generalized_asyncsgd", lr=0.01, batch_size=BATCH),
        data=DataConfig(
            dataset="mnist",
            partition=data_partition,
            alpha=DIRICHLET_ALPHA,
            max_train_samples=MAX_TRAIN,
        ),
        run=RunConfig(time_budget=max(BUDGETS), eval_every_updates=None,
                      eval_every_seconds=EVAL_EVERY),
        seed=seed,
    )


_DATASET: Any = None


def _dataset() -> Any:
    global _DATASET
    if _DATASET is None:
        from raysync.workload import load_config_dataset

        _DATASET = load_config_dataset(base_config("iid", 0))
    return _DATASET


def make_workload(partition: str, seed: int) -> Any:
    """The workload of a partition; ``speed_skew`` re-partitions an IID workload."""
    from raysync.workload import build_workload

    config = base_config(partition, seed)
    workload = build_workload(config, dataset=_dataset())
    if partition != "speed_skew":
        return workload
    y = workload.dataset.y_train
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(77,)))
    fast = [i for i, r in enumerate(RATES) if r == max(RATES)]
    others = [i for i in range(len(RATES)) if i not in fast]
    low = np.flatnonzero(y < 5)
    high = np.flatnonzero(y >= 5)
    low = rng.permutation(low)
    # fast clients: an equal share of labels 0-4 each, as much as the others' average share
    share = len(y) // len(RATES)
    fast_parts = [np.sort(low[j * share:(j + 1) * share]) for j in range(len(fast))]
    rest = rng.permutation(np.concatenate([low[len(fast) * share:], high]))
    other_parts = np.array_split(rest, len(others))
    indices: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(RATES)
    for j, i in enumerate(fast):
        indices[i] = fast_parts[j]
    for j, i in enumerate(others):
        indices[i] = np.sort(other_parts[j])
    return dataclasses.replace(workload, client_indices=tuple(indices))


# --------------------------------------------------------------------------- optima
def compute_optima(partition: str) -> dict[str, Any]:
    """Estimate the constants on the partition (seed 0) and optimise (3a) and (3b)."""
    from raysync.objectives import BoundObjective, estimate_constants, optimize_joint

    workload = make_workload(partition, 0)
    clients = [workload.client_data(i) for i in range(workload.num_clients)]
    start = time.perf_counter()
    est = estimate_constants(
        workload.make_computer(), clients, workload.initial_params, batch_size=BATCH, seed=0
    )
    est_seconds = time.perf_counter() - start
    n = len(RATES)
    out: dict[str, Any] = {
        "constants": est.to_dict(),
        "estimate_seconds": est_seconds,
        "opt_3b": {},
    }
    per_update = BoundObjective(
        mu=np.asarray(RATES), constants=est.constants, criterion="per-update", eta="optimal",
        num_updates=1000.0,
    )
    r3a = optimize_joint(per_update, max_concurrency=4 * n)
    out["opt_3a"] = {"p": r3a.p.tolist(), "concurrency": r3a.concurrency,
                     "throughput": r3a.throughput, "bound": r3a.value}
    for budget in BUDGETS:
        objective = BoundObjective(
            mu=np.asarray(RATES), constants=est.constants, criterion="wall-clock", eta="optimal",
            time_budget=budget,
        )
        start = time.perf_counter()
        res = optimize_joint(objective, max_concurrency=4 * n)
        seconds = time.perf_counter() - start
        uniform_same_c = objective.evaluate(np.full(n, 1.0 / n), res.concurrency)
        out["opt_3b"][str(budget)] = {
            "p": res.p.tolist(),
            "concurrency": res.concurrency,
            "throughput": res.throughput,
            "relative_delay": res.relative_delay.tolist(),
            "eta_bound": res.eta,
            "bound": res.value,
            "terms": res.terms.to_dict(),
            "converged": res.converged,
            "optimizer_seconds": seconds,
            "bound_uniform_same_C": uniform_same_c.value,
            "bound_uniform_C_n": objective.evaluate(np.full(n, 1.0 / n), n).value,
            "bound_asyncsgd": objective.asyncsgd_terms().value,
        }
    return out


# --------------------------------------------------------------------------- runs
def run_config(job: dict[str, Any], optima: dict[str, Any]) -> Any:
    from raysync.config import AlgorithmConfig, RoutingConfig, RunConfig

    config = base_config(job["partition"], job["seed"])
    n = len(RATES)
    method = job["method"]
    budget = job["budget"]
    lr = job["lr"]
    run = RunConfig(time_budget=budget, eval_every_updates=None, eval_every_seconds=EVAL_EVERY)
    if method == "asyncsgd":
        return config.replace(
            routing=RoutingConfig(kind="return_to_sender"), concurrency=n,
            algorithm=AlgorithmConfig(name="asyncsgd", lr=lr, batch_size=BATCH), run=run,
        )
    if method == "fedasync":
        return config.replace(
            routing=RoutingConfig(kind="uniform"), concurrency=n,
            algorithm=AlgorithmConfig(name="fedasync", lr=lr, batch_size=BATCH, local_steps=1),
            run=run,
        )
    algorithm = AlgorithmConfig(name="generalized_asyncsgd", lr=lr, batch_size=BATCH)
    if method == "opt_3a":
        opt = optima["opt_3a"]
        return config.replace(
            routing=RoutingConfig(kind="fixed", p=tuple(opt["p"])),
            concurrency=int(opt["concurrency"]), algorithm=algorithm, run=run,
        )
    opt = optima["opt_3b"][str(budget)]
    if method == "uniform":
        return config.replace(
            routing=RoutingConfig(kind="uniform"), concurrency=int(opt["concurrency"]),
            algorithm=algorithm, run=run,
        )
    return config.replace(
        routing=RoutingConfig(kind="fixed", p=tuple(opt["p"])),
        concurrency=int(opt["concurrency"]), algorithm=algorithm, run=run,
    )


def run_job(job: dict[str, Any], optima: dict[str, Any]) -> dict[str, Any]:
    _set_threads()
    from raysync.simulation import simulate

    config = run_config(job, optima)
    workload = make_workload(job["partition"], job["seed"])
    start = time.perf_counter()
    result = simulate(config, workload=workload)
    return {
        **job,
        "wall_time": time.perf_counter() - start,
        "num_updates": int(result.num_updates),
        "throughput": float(result.throughput),
        "mean_relative_delay": [float(v) for v in result.mean_relative_delay],
        "times": result.times.tolist(),
        "test_accuracy": [float(v) for v in result.test_accuracy],
        "val_accuracy": [float(v) for v in result.val_accuracy],
    }


def _at(times: list[float], values: list[float], t: float) -> float:
    """The evaluation at virtual time ``t`` (the last one at or before it)."""
    best = math.nan
    for ti, vi in zip(times, values, strict=True):
        if ti <= t + 1e-9:
            best = vi
    return float(best) if best == best else 0.0  # NaN (diverged) counts as 0


def _score(rec: dict[str, Any], key: str, budgets: tuple[float, ...]) -> float:
    return float(np.mean([_at(rec["times"], rec[key], b) for b in budgets]))


def jobs_for(method: str, partition: str, seeds: tuple[int, ...], lrs: tuple[float, ...],
             budgets: tuple[float, ...]) -> list[dict[str, Any]]:
    jobs = []
    for seed in seeds:
        for lr in lrs:
            if method in PER_BUDGET:
                for b in budgets:
                    jobs.append({"method": method, "partition": partition, "seed": seed,
                                 "lr": lr, "budget": b, "key": f"{method}@{b:g}"})
            else:
                jobs.append({"method": method, "partition": partition, "seed": seed,
                             "lr": lr, "budget": max(budgets), "key": method})
    return jobs


def _run_all(jobs: list[dict[str, Any]], optima: dict[str, Any], workers: int,
             log: Any) -> list[dict[str, Any]]:
    # longest first keeps both workers busy
    order = sorted(jobs, key=lambda j: -(j["budget"] * (700 if j["method"] == "asyncsgd"
                                                          else 300)))
    out = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_job, job, optima[job["partition"]]) for job in order]
        for k, fut in enumerate(futures):
            rec = fut.result()
            out.append(rec)
            print(f"[{k + 1}/{len(futures)}] {rec['partition']:>10} {rec['key']:>14} "
                  f"seed={rec['seed']} lr={rec['lr']:g}: {rec['num_updates']} updates, "
                  f"final test {rec['test_accuracy'][-1]:.4f}, {rec['wall_time']:.1f} s",
                  file=log, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 step sizes (smoke)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    _set_threads()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = EVAL_SEEDS[:1] if args.quick else EVAL_SEEDS
    lrs = (0.01, 0.1) if args.quick else LR_GRID
    partitions = PARTITIONS
    t0 = time.perf_counter()
    log = sys.stdout

    optima = {}
    for partition in partitions:
        optima[partition] = compute_optima(partition)
        o = optima[partition]
        print(f"{partition}: constants {o['constants']['constants']} "
              f"({o['estimate_seconds']:.1f} s); 3b optima: "
              + ", ".join(f"T={b}: C={v['concurrency']} Lambda={v['throughput']:.1f}"
                          for b, v in o["opt_3b"].items()), file=log, flush=True)

    # phase 1: step-size selection on the validation split, selection seed only
    selection_jobs = [
        job for partition in partitions for method in METHODS
        for job in jobs_for(method, partition, SELECTION_SEEDS, lrs, BUDGETS)
    ]
    selection = _run_all(selection_jobs, optima, args.workers, log)
    chosen: dict[str, dict[str, float]] = {p: {} for p in partitions}
    selection_scores: dict[str, dict[str, dict[str, float]]] = {p: {} for p in partitions}
    for partition in partitions:
        for method in METHODS:
            keys = ([f"{method}@{b:g}" for b in BUDGETS] if method in PER_BUDGET
                    else [method])
            for key in keys:
                recs = [r for r in selection if r["partition"] == partition and r["key"] == key]
                budgets = (recs[0]["budget"],) if method in PER_BUDGET else BUDGETS
                scores = {
                    f"{lr:g}": float(np.mean([_score(r, "val_accuracy", budgets)
                                              for r in recs if r["lr"] == lr]))
                    for lr in lrs
                }
                selection_scores[partition][key] = scores
                # best mean validation accuracy; ties go to the smaller step
                best_lr = max(lrs, key=lambda lr: (scores[f"{lr:g}"], -lr))
                chosen[partition][key] = best_lr
        print(f"{partition}: chosen steps {chosen[partition]}", file=log, flush=True)

    # phase 2: evaluation seeds with the chosen steps
    eval_jobs = []
    for partition in partitions:
        for method in METHODS:
            for job in jobs_for(method, partition, seeds, (0.0,), BUDGETS):
                job["lr"] = chosen[partition][job["key"]]
                eval_jobs.append(job)
    evaluation = _run_all(eval_jobs, optima, args.workers, log)

    # aggregate
    table: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    for partition in partitions:
        table[partition] = {}
        curves[partition] = {}
        for budget in BUDGETS:
            row = {}
            for method in METHODS:
                key = f"{method}@{budget:g}" if method in PER_BUDGET else method
                recs = [r for r in evaluation if r["partition"] == partition and r["key"] == key]
                accs = np.array([_at(r["times"], r["test_accuracy"], budget) for r in recs])
                row[method] = {
                    "mean": float(accs.mean()),
                    "se": float(accs.std(ddof=1) / math.sqrt(accs.size)) if accs.size > 1
                    else math.nan,
                    "values": accs.tolist(),
                    "lr": chosen[partition][key],
                    "throughput": float(np.mean([r["throughput"] for r in recs])),
                    "updates": float(np.mean([r["num_updates"] for r in recs])),
                }
            table[partition][f"{budget:g}"] = row
        for method in METHODS:
            key = f"{method}@{max(BUDGETS):g}" if method in PER_BUDGET else method
            recs = [r for r in evaluation if r["partition"] == partition and r["key"] == key]
            times = recs[0]["times"]
            acc = np.array([[_at(r["times"], r["test_accuracy"], t) for t in times]
                            for r in recs])
            curves[partition][method] = {"times": times, "mean": acc.mean(axis=0).tolist(),
                                         "se": (acc.std(axis=0, ddof=1) / math.sqrt(len(recs))
                                                ).tolist() if len(recs) > 1 else None}
    # queueing check: predicted vs simulated throughput of the (3b) optimum
    check: dict[str, Any] = {}
    for partition in partitions:
        check[partition] = {}
        for budget in BUDGETS:
            recs = [r for r in evaluation if r["partition"] == partition
                    and r["key"] == f"opt_3b@{budget:g}"]
            check[partition][f"{budget:g}"] = {
                "predicted_throughput": optima[partition]["opt_3b"][str(budget)]["throughput"],
                "simulated_throughput": float(np.mean([r["throughput"] for r in recs])),
            }
    total = time.perf_counter() - t0
    payload = {
        "setting": {
            "rates": RATES, "budgets": BUDGETS, "lr_grid": lrs, "selection_seeds": SELECTION_SEEDS,
            "eval_seeds": seeds, "partitions": partitions, "dirichlet_alpha": DIRICHLET_ALPHA,
            "max_train_samples": MAX_TRAIN, "batch_size": BATCH, "model": "logreg",
            "dataset": "mnist", "quick": args.quick, "workers": args.workers,
        },
        "optima": optima,
        "chosen_lr": chosen,
        "selection_val_scores": selection_scores,
        "table": table,
        "throughput_check": check,
        "curves": curves,
        "total_seconds": total,
        "cpu_count": os.cpu_count(),
    }
    name = "reproduce_paper_quick" if args.quick else "reproduce_paper"
    (out_dir / f"{name}.json").write_text(json.dumps(payload, indent=1))
    (out_dir / f"{name}.md").write_text(markdown(payload))
    plot(payload, out_dir / f"{name}.png")
    print(markdown(payload), file=log)
    print(f"total {total:.0f} s", file=log)
    return 0


def markdown(payload: dict[str, Any]) -> str:
    s = payload["setting"]
    lines = [
        "# Reproduction: test accuracy at a fixed virtual-time budget",
        "",
        f"MNIST logistic regression, {len(s['rates'])} clients, rates 1:10:100 "
        f"(7/7/6 clients), {s['max_train_samples']} training samples, batch {s['batch_size']}. "
        f"Mean test accuracy (%) +- standard error over seeds {list(s['eval_seeds'])}; "
        f"step sizes chosen on the validation split (seeds {list(s['selection_seeds'])}) from "
        f"{list(s['lr_grid'])}. Best mean per row in bold.",
        "",
        "| partition | T (s) | " + " | ".join(LABELS[m] for m in METHODS) + " |",
        "|---|---|" + "---|" * len(METHODS),
    ]
    for partition, rows in payload["table"].items():
        for budget, row in rows.items():
            best = max(row[m]["mean"] for m in METHODS)
            cells = []
            for m in METHODS:
                cell = f"{100 * row[m]['mean']:.2f} +- {100 * row[m]['se']:.2f}"
                if row[m]["mean"] == best:
                    cell = f"**{cell}**"
                cells.append(cell)
            lines.append(f"| {partition} | {budget} | " + " | ".join(cells) + " |")
    lines += ["", "Chosen steps and (3b) optima (C, predicted / simulated throughput):", ""]
    lines.append("| partition | T (s) | C(3b) | Lambda pred | Lambda sim | steps "
                 "(i)/(ii)/(iii)/(iv)/(v) |")
    lines.append("|---|---|---|---|---|---|")
    for partition, rows in payload["table"].items():
        for budget, row in rows.items():
            opt = payload["optima"][partition]["opt_3b"][str(float(budget))]
            chk = payload["throughput_check"][partition][budget]
            steps = "/".join(f"{row[m]['lr']:g}" for m in METHODS)
            lines.append(
                f"| {partition} | {budget} | {opt['concurrency']} | "
                f"{chk['predicted_throughput']:.1f} | {chk['simulated_throughput']:.1f} | "
                f"{steps} |"
            )
    return "\n".join(lines) + "\n"


def plot(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = list(payload["curves"])
    fig, axes = plt.subplots(1, len(parts), figsize=(5 * len(parts), 4), squeeze=False)
    for ax, partition in zip(axes[0], parts, strict=True):
        for method in METHODS:
            c = payload["curves"][partition][method]
            t = np.array(c["times"])
            m = 100 * np.array(c["mean"])
            ax.plot(t, m, marker="o", ms=3, label=LABELS[method])
            if c["se"] is not None:
                se = 100 * np.array(c["se"])
                ax.fill_between(t, m - se, m + se, alpha=0.2)
        ax.set_title(f"{partition} (runs for T = {max(payload['setting']['budgets']):g} s)")
        ax.set_xlabel("virtual time (s)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
