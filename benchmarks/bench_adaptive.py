"""Benchmark: online rate estimation and adaptive re-routing (issue 16), on the simulator.

Fleet: 20 clients in three speed tiers (6 at ``mu = 1``, 7 at 5, 7 at 25 tasks/s), ``C = 10``
tasks in flight, Generalized AsyncSGD. The routing is the wall-clock optimum of the bound
(docs/theory.md section 5; :func:`raysync.objectives.optimize_routing`) with the adaptive
router's default constants and ``T`` = the run's budget. Scenarios:

* **a** stationary, rates unknown at the start: static = uniform routing (the optimum when
  all rates are assumed equal), oracle = the optimum for the true rates.
* **b** the fast tier slows down 5x at half the budget (``kind = "schedule"``): static = the
  optimum for the initial rates, oracle = that, then the optimum for the new rates from the
  change on.
* **c** 10 % of the clients (two fast ones) leave at half the budget and two new fast clients
  join then: static = the optimum for the initial fleet (joiners get its smallest ``p``;
  the engine conditions ``p`` on the clients present), oracle = the optimum for the fleet
  present after the change, switched at the change.

The adaptive arm (``[routing] kind = "adaptive"``, re-optimising every 100 updates, window
of 200 durations per client, 1 % uniform exploration) starts uniform with a pooled prior in
(a), and from the static optimum with the configured initial rates as its prior in (b) and (c).

Throughput comes from queue-only runs (long budget, many updates); accuracy from training
runs on a shorter budget. ``recovered_fraction = (adaptive - static) / (oracle - static)``
of the throughput measured after the change (b, c: from the change to the end, adaptation
included; a: after the first 300 updates). Data: scikit-learn's digits (1,797 images)
rather than MNIST: on this 2-core machine shared by several agents (load average 15-30) one
training update costs about 10 ms, and 45 MNIST training runs do not fit the time given;
the code takes ``--dataset mnist`` unchanged.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_adaptive.py [--seeds 5] [--dataset digits]

Writes ``benchmarks/results/bench_adaptive.{json,png,md}`` (the JSON after every run).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from raysync.config import SystemConfig
from raysync.objectives import BoundObjective, ProblemConstants, optimize_routing
from raysync.routing import AdaptiveRouter, FixedRouter
from raysync.routing.adaptive import DEFAULT_CONSTANTS
from raysync.simulation import simulate

RESULTS = Path(__file__).resolve().parent / "results"
TIERS = [(1.0, 6), (5.0, 7), (25.0, 7)]
CONCURRENCY = 10
SLOWDOWN = 5.0
LR = 0.02
ARMS = ("static", "adaptive", "oracle")
SCENARIOS = ("a", "b", "c")


def objective(mu: np.ndarray, horizon: float) -> BoundObjective:
    """The wall-clock bound for rates ``mu`` with the adaptive router's constants."""
    L, sigma2, M2, A = DEFAULT_CONSTANTS  # noqa: N806 (the theory's names)
    return BoundObjective(
        mu=mu, constants=ProblemConstants(L=L, sigma2=sigma2, M2=M2, A=A),
        criterion="wall-clock", time_budget=horizon,
    )  # fmt: skip


def optimum(mu: np.ndarray, horizon: float) -> np.ndarray:
    """The bound's wall-clock optimum ``p`` for rates ``mu`` (the routers' objective)."""
    return np.asarray(optimize_routing(objective(mu, horizon), concurrency=CONCURRENCY).p)


def bound_at_end(router: Any, after: np.ndarray, budget: float) -> float:
    """The bound, at the true rates after the change, of the router's final ``p``
    (conditioned on the clients present, as the engine routes)."""
    present = after > 0
    p = np.asarray(router.routing_probabilities())[present]
    return float(objective(after[present], budget).value(p / p.sum(), CONCURRENCY))


class TimedFixedRouter(FixedRouter):
    """Fixed routing that records completion times and may swap to a new ``p`` at ``t``."""

    observes_service_times = True

    def __init__(self, p: np.ndarray, swap: tuple[float, np.ndarray] | None = None) -> None:
        super().__init__(p=np.asarray(p) / np.sum(p))
        self.swap = swap
        self.times: list[float] = []
        self.routing_version = 0

    def observe(self, client: int, duration: float, now: float) -> None:
        self.times.append(now)
        if self.swap is not None and now >= self.swap[0]:
            p = np.asarray(self.swap[1], dtype=np.float64)
            self.swap = None
            p = p / p.sum()
            p.setflags(write=False)
            self._p = p
            cdf = np.cumsum(p)
            cdf[-1] = 1.0
            self._cdf = cdf
            self._block, self._pos = [], 0
            self.routing_version += 1


class TimedAdaptiveRouter(AdaptiveRouter):
    """The adaptive router, recording completion times."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.times: list[float] = []

    def observe(self, client: int, duration: float, now: float) -> None:
        self.times.append(now)
        super().observe(client, duration, now)


def fleet(scenario: str, budget: float) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray]:
    """Clients (config tables), rates before and after the change (0: absent)."""
    mus = np.concatenate([np.full(k, m) for m, k in TIERS])
    half = budget / 2
    clients: list[dict[str, Any]] = [{"service_time": {"rate": float(m)}} for m in mus]
    after = mus.copy()
    if scenario == "b":
        fast = np.flatnonzero(mus == TIERS[-1][0])
        for i in fast:
            clients[i] = {
                "service_time": {
                    "kind": "schedule",
                    "segments": [
                        {"until": half, "rate": float(mus[i])},
                        {"rate": float(mus[i] / SLOWDOWN)},
                    ],
                }
            }
            after[i] = mus[i] / SLOWDOWN
    if scenario == "c":
        leaving = np.flatnonzero(mus == TIERS[-1][0])[:2]  # 10 % of 20
        for i in leaving:
            clients[i] = {**clients[i], "leave_time": half}
            after[i] = 0.0
        top = TIERS[-1][0]
        clients += [{"service_time": {"rate": top}, "join_time": half} for _ in range(2)]
        mus = np.concatenate([mus, [0.0, 0.0]])
        after = np.concatenate([after, [top, top]])
    return clients, mus, after


def routers(scenario: str, before: np.ndarray, after: np.ndarray, budget: float) -> dict[str, Any]:
    half = budget / 2
    n = before.size
    present0 = before > 0
    p0 = np.zeros(n)
    p0[present0] = optimum(before[present0], budget)
    if scenario == "a":
        static_p = np.full(n, 1.0 / n)
        oracle = TimedFixedRouter(p0)
        adaptive = TimedAdaptiveRouter(reoptimize_every=100, horizon=budget)
    else:
        if (~present0).any():
            p0[~present0] = p0[present0].min()  # joiners: unknown, the smallest share
        static_p = p0
        present1 = after > 0
        p1 = np.zeros(n)
        p1[present1] = optimum(after[present1], budget)
        oracle = TimedFixedRouter(p0, swap=(half, np.maximum(p1, 0.0)))
        from raysync.routing.estimation import OnlineRateEstimator

        prior = np.where(present0, before, before[present0].mean())
        adaptive = TimedAdaptiveRouter(
            reoptimize_every=100, horizon=budget, initial_p=p0 / p0.sum(),
            estimator=OnlineRateEstimator(n, window=200, prior_rate=prior, prior_weight=1.0),
        )  # fmt: skip
    return {"static": TimedFixedRouter(static_p), "adaptive": adaptive, "oracle": oracle}


def config(clients: list[dict[str, Any]], budget: float, seed: int, train: bool,
           dataset: str) -> SystemConfig:  # fmt: skip
    run: dict[str, Any] = {"time_budget": budget, "train": train}
    if train:
        run["eval_every_seconds"] = budget / 4
    return SystemConfig.from_dict({
        "clients": clients, "concurrency": CONCURRENCY, "routing": {"kind": "uniform"},
        "algorithm": {"name": "generalized_asyncsgd", "lr": LR, "batch_size": 32},
        "data": {"dataset": dataset}, "run": run, "seed": seed,
    })  # fmt: skip


def window_rate(times: list[float], start: float, end: float) -> float:
    t = np.asarray(times)
    return float(((t >= start) & (t < end)).sum() / (end - start))


def mean_se(values: list[float]) -> tuple[float, float]:
    x = np.asarray(values, dtype=np.float64)
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.nan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--queue-budget", type=float, default=400.0)
    parser.add_argument("--train-budget", type=float, default=60.0)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--resume", action="store_true", help="keep the runs already in the JSON")
    parser.add_argument("--replot", action="store_true", help="table and plot from the JSON")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.replot:
        saved = json.loads((RESULTS / "bench_adaptive.json").read_text())
        saved["summary"] = summarise(saved["runs"])
        (RESULTS / "bench_adaptive.json").write_text(json.dumps(saved, indent=1))
        write_markdown(saved)
        plot(saved)
        return 0
    out: dict[str, Any] = {
        "fleet": {"tiers": TIERS, "concurrency": CONCURRENCY, "slowdown": SLOWDOWN},
        "algorithm": {"name": "generalized_asyncsgd", "lr": LR, "batch_size": 32},
        "dataset": args.dataset, "seeds": args.seeds, "queue_budget": args.queue_budget,
        "train_budget": args.train_budget, "load_average_start": os.getloadavg()[0],
        "runs": [],
    }  # fmt: skip
    path = RESULTS / "bench_adaptive.json"
    if args.resume and path.exists():
        out["runs"] = json.loads(path.read_text())["runs"]
    done = {(r["mode"], r["scenario"], r["seed"], r["arm"]) for r in out["runs"]}
    start_wall = time.time()
    for mode, budget in (("queue", args.queue_budget), ("train", args.train_budget)):
        if mode == "train" and args.skip_train:
            continue
        for scenario in SCENARIOS:
            clients, before, after = fleet(scenario, budget)
            for seed in range(args.seeds):
                arms = routers(scenario, before, after, budget)
                for arm in ARMS:
                    if (mode, scenario, seed, arm) in done:
                        continue
                    router = arms[arm]
                    cfg = config(clients, budget, seed, mode == "train", args.dataset)
                    t0 = time.time()
                    res = simulate(cfg, router=router)
                    half = budget / 2
                    row = {
                        "mode": mode, "scenario": scenario, "seed": seed, "arm": arm,
                        "updates": res.num_updates, "throughput": len(router.times) / budget,
                        "throughput_after_change": window_rate(router.times, half, budget),
                        "throughput_before_change": window_rate(router.times, 0.0, half),
                        "wall_s": time.time() - t0,
                        "routing_changes": int(getattr(router, "routing_version", 0)),
                        "bound_at_end": bound_at_end(router, after, budget),
                    }  # fmt: skip
                    if scenario == "a" and len(router.times) > 300:
                        row["throughput_after_300"] = window_rate(
                            router.times, router.times[299], budget
                        )
                    if mode == "train":
                        row["final_test_accuracy"] = res.final_test_accuracy
                        row["final_val_accuracy"] = res.final_val_accuracy
                    out["runs"].append(row)
                    print(json.dumps(row), flush=True)
                    path.write_text(json.dumps(out, indent=1))
    out["summary"] = summarise(out["runs"])
    out["wall_s"] = time.time() - start_wall
    out["load_average_end"] = os.getloadavg()[0]
    path.write_text(json.dumps(out, indent=1))
    write_markdown(out)
    plot(out)
    return 0


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for scenario in SCENARIOS:
        s: dict[str, Any] = {}
        key = "throughput_after_300" if scenario == "a" else "throughput_after_change"
        q = {a: [r[key] for r in runs if r["mode"] == "queue" and r["scenario"] == scenario
                 and r["arm"] == a and key in r] for a in ARMS}  # fmt: skip
        for arm in ARMS:
            if q[arm]:
                s[f"{arm}_throughput"] = mean_se(q[arm])
        if all(q[a] for a in ARMS):
            fr = [
                (ad - st) / (orc - st) if orc != st else math.nan
                for st, ad, orc in zip(q["static"], q["adaptive"], q["oracle"], strict=True)
            ]
            s["recovered_fraction"] = mean_se(fr)
            s["recovered_fraction_of_means"] = (
                s["adaptive_throughput"][0] - s["static_throughput"][0]
            ) / (s["oracle_throughput"][0] - s["static_throughput"][0])
        bnd = {a: [r["bound_at_end"] for r in runs if r["mode"] == "queue"
                   and r["scenario"] == scenario and r["arm"] == a] for a in ARMS}  # fmt: skip
        if all(bnd[a] for a in ARMS):
            fb = [(st - ad) / (st - orc) if orc != st else math.nan
                  for st, ad, orc in zip(bnd["static"], bnd["adaptive"], bnd["oracle"],
                                         strict=True)]  # fmt: skip
            s["bound_recovered_fraction"] = mean_se(fb)
            for arm in ARMS:
                s[f"{arm}_bound"] = mean_se(bnd[arm])
        acc = {a: [r["final_test_accuracy"] for r in runs if r["mode"] == "train"
                   and r["scenario"] == scenario and r["arm"] == a] for a in ARMS}  # fmt: skip
        for arm in ARMS:
            if acc[arm]:
                s[f"{arm}_accuracy"] = mean_se(acc[arm])
        summary[scenario] = s
    return summary


def _pm(pair: Any, digits: int = 2) -> str:
    if not pair:
        return "-"
    m, se = pair
    return f"{m:.{digits}f} ± {se:.{digits}f}"


def write_markdown(out: dict[str, Any]) -> None:
    lines = [
        "| scenario | throughput static | adaptive | oracle | recovered_fraction | "
        "bound recovered | accuracy static | adaptive | oracle |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    names = {"a": "(a) rates unknown", "b": "(b) fast tier 5x slower at T/2",
             "c": "(c) 10 % leave, 2 join at T/2"}  # fmt: skip
    for scenario, s in out["summary"].items():
        lines.append(
            f"| {names[scenario]} | {_pm(s.get('static_throughput'), 1)} | "
            f"{_pm(s.get('adaptive_throughput'), 1)} | {_pm(s.get('oracle_throughput'), 1)} | "
            f"{_pm(s.get('recovered_fraction'))} | {_pm(s.get('bound_recovered_fraction'))} | "
            f"{_pm(s.get('static_accuracy'), 3)} | "
            f"{_pm(s.get('adaptive_accuracy'), 3)} | {_pm(s.get('oracle_accuracy'), 3)} |"
        )
    (RESULTS / "bench_adaptive.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def plot(out: dict[str, Any]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        print("matplotlib missing: no plot", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    x = np.arange(len(SCENARIOS))
    for k, arm in enumerate(ARMS):
        thr = [out["summary"][s].get(f"{arm}_throughput", (math.nan, 0.0)) for s in SCENARIOS]
        acc = [out["summary"][s].get(f"{arm}_accuracy", (math.nan, 0.0)) for s in SCENARIOS]
        axes[0].bar(x + 0.25 * (k - 1), [t[0] for t in thr], 0.25, yerr=[t[1] for t in thr],
                    label=arm)  # fmt: skip
        axes[1].bar(x + 0.25 * (k - 1), [a[0] for a in acc], 0.25, yerr=[a[1] for a in acc],
                    label=arm)  # fmt: skip
    for ax, title in zip(axes, ("throughput after the change (updates/s)",
                                "final test accuracy"), strict=True):  # fmt: skip
        ax.set_xticks(x, [f"({s})" for s in SCENARIOS])
        if ax is axes[1]:
            ax.set_ylim(0.85, 0.93)
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "bench_adaptive.png", dpi=120)


if __name__ == "__main__":
    sys.exit(main())
