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
of 50 durations per client, significance gate ``change_confidence = 0.99``, 1 % uniform
exploration) starts uniform with a pooled prior in (a), and from the static optimum with the
configured initial rates as its prior in (b) and (c). (The first version used a window of 200
and no gate: in (b) its estimates of the rarely routed slow clients moved ``p`` off the
optimum before the change, and its window, longer than a fast client's whole history in a
60 s run, lagged 30 s behind the slow-down; docs/adaptive.md section 4.)

Throughput comes from queue-only runs (long budget, many updates); accuracy from training
runs on a shorter budget. ``recovered_fraction = (adaptive - static) / (oracle - static)``
of the throughput measured after the change (b, c: from the change to the end, adaptation
included; a: after the first 300 updates); ``bound_avg`` is the time average, over the
second half of the run, of the bound ``J_T`` at the true rates of the routing in force (the
routers' objective), and its recovered fraction ``(static - adaptive) / (static - oracle)``.
Accuracy: final test accuracy of MNIST logistic regression (60k/10k, IID; ``--dataset
digits`` for scikit-learn's 1,797 digits), with the paired per-seed difference to the static
arm (all arms of a seed share the data, the partition and the initial model).

``--ray`` also runs scenario (b) with training on the Ray runtime with emulated service
times (``run.time_scale``; the budget is in config seconds, so a run lasts about
``budget * time_scale`` wall seconds), the same routers pickled to the server actor;
throughput after the change from the driver's progress samples (config seconds).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_adaptive.py [--seeds 5] [--dataset mnist]
    OMP_NUM_THREADS=1 python benchmarks/bench_adaptive.py --resume --ray --ray-seeds 3

Writes ``benchmarks/results/bench_adaptive.{json,png,md}`` (the JSON after every run).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import replace
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
WINDOW = 50
#: The bound's ``(L, sigma2, M2, A)``: the router's placeholders, or a pilot's (``--pilot-b``).
CONSTANTS: tuple[float, ...] = DEFAULT_CONSTANTS
CHANGE_CONFIDENCE = 0.99
ARMS = ("static", "adaptive", "oracle")
SCENARIOS = ("a", "b", "c")


def objective(mu: np.ndarray, horizon: float) -> BoundObjective:
    """The wall-clock bound for rates ``mu`` with the adaptive router's constants."""
    L, sigma2, M2, A = CONSTANTS  # noqa: N806 (the theory's names)
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
        self.history: list[tuple[float, np.ndarray]] = [(0.0, np.asarray(self._p).copy())]

    def observe(self, client: int, duration: float, now: float) -> None:
        self.times.append(now)
        if self.swap is not None and now >= self.swap[0]:
            p = np.asarray(self.swap[1], dtype=np.float64)
            self.swap = None
            p = p / p.sum()
            self.history.append((now, p.copy()))
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

    def initial_clients(self, concurrency: int) -> list[int]:
        self.start_p = self.routing_probabilities()
        return super().initial_clients(concurrency)

    @property
    def history(self) -> list[tuple[float, np.ndarray]]:
        """``(time, p)`` of the start and of every swap."""
        return [(0.0, self.start_p)] + [(c.time, c.p) for c in self.changes]


def bound_average(router: Any, after: np.ndarray, budget: float) -> float:
    """Time average over ``[T/2, T]`` of the bound, at the true rates after the change, of
    the routing in force (conditioned on the clients present, as the engine routes)."""
    hist = sorted(router.history, key=lambda item: item[0])
    total = 0.0
    for k, (t0, p) in enumerate(hist):
        t1 = hist[k + 1][0] if k + 1 < len(hist) else budget
        lo, hi = max(t0, budget / 2), min(t1, budget)
        if hi > lo:
            # Clients present and routed to (a joiner not yet routed to is not in the network).
            mask = (after > 0) & (np.asarray(p) > 0)
            q = np.asarray(p)[mask]
            value = objective(after[mask], budget).value(q / q.sum(), CONCURRENCY)
            total += (hi - lo) * float(value)
    return total / (budget / 2)


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


def routers(
    scenario: str,
    before: np.ndarray,
    after: np.ndarray,
    budget: float,
    zeta2: float | None = None,
) -> dict[str, Any]:
    half = budget / 2
    n = before.size
    present0 = before > 0
    p0 = np.zeros(n)
    p0[present0] = optimum(before[present0], budget)
    if scenario == "a":
        static_p = np.full(n, 1.0 / n)
        oracle = TimedFixedRouter(p0)
        adaptive = TimedAdaptiveRouter(
            reoptimize_every=100, horizon=budget, window=WINDOW,
            change_confidence=CHANGE_CONFIDENCE, constants=CONSTANTS,
        )  # fmt: skip
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
            change_confidence=CHANGE_CONFIDENCE, constants=CONSTANTS,
            estimator=OnlineRateEstimator(n, window=WINDOW, prior_rate=prior, prior_weight=1.0),
        )  # fmt: skip
    arms = {"static": TimedFixedRouter(static_p), "adaptive": adaptive, "oracle": oracle}
    if zeta2 is not None:  # unweighted steps (beta = 0) routed by the bias-aware bound
        kwargs = {"horizon": budget, "constants": CONSTANTS, "objective": "bias_aware",
                  "zeta2": zeta2, "weight_exponent": 0.0}  # fmt: skip
        start = TimedAdaptiveRouter(**kwargs)._bias_aware_optimum(before, CONCURRENCY, None)
        from raysync.routing.estimation import OnlineRateEstimator

        arms["adaptive_bias"] = TimedAdaptiveRouter(
            reoptimize_every=100, initial_p=start, change_confidence=CHANGE_CONFIDENCE,
            estimator=OnlineRateEstimator(n, window=WINDOW, prior_rate=before, prior_weight=1.0),
            **kwargs,
        )  # fmt: skip
    return arms


def config(clients: list[dict[str, Any]], budget: float, seed: int, train: bool,
           dataset: str, beta: float = 1.0) -> SystemConfig:  # fmt: skip
    run: dict[str, Any] = {"time_budget": budget, "train": train}
    if train:
        run["eval_every_seconds"] = budget / 4
    return SystemConfig.from_dict({
        "clients": clients, "concurrency": CONCURRENCY, "routing": {"kind": "uniform"},
        "algorithm": {"name": "generalized_asyncsgd", "lr": LR, "batch_size": 32,
                      "weight_exponent": beta},
        "data": {"dataset": dataset}, "run": run, "seed": seed,
    })  # fmt: skip


def window_rate(times: list[float], start: float, end: float) -> float:
    t = np.asarray(times)
    return float(((t >= start) & (t < end)).sum() / (end - start))


def mean_se(values: list[float]) -> tuple[float, float]:
    x = np.asarray(values, dtype=np.float64)
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.nan


def main() -> int:
    global RESULTS  # noqa: PLW0603 (--results; the writers below read it)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--queue-budget", type=float, default=400.0)
    parser.add_argument("--train-budget", type=float, default=60.0)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--resume", action="store_true", help="keep the runs already in the JSON")
    parser.add_argument("--replot", action="store_true", help="table and plot from the JSON")
    parser.add_argument("--skip-sim", action="store_true", help="no simulator runs")
    parser.add_argument("--ray", action="store_true", help="also scenario (b) on Ray")
    parser.add_argument("--ray-seeds", type=int, default=3)
    parser.add_argument("--ray-budget", type=float, default=60.0, help="config seconds")
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--results", type=Path, default=RESULTS, help="output directory")
    parser.add_argument(
        "--pilot-b",
        action="store_true",
        help="(b) training with pilot constants and a bias-aware arm",
    )
    parser.add_argument("--pilot-json", type=Path, help="constants/zeta2 of an earlier pilot")
    args = parser.parse_args()
    RESULTS = args.results
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
        if (mode == "train" and args.skip_train) or args.skip_sim:
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
                        "bound_avg_after_change": bound_average(router, after, budget),
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
    if args.pilot_b:
        run_pilot_b(args, out, done, path)
    if args.ray:
        out["ray"] = {"time_scale": args.time_scale, "budget": args.ray_budget,
                      "seeds": args.ray_seeds}  # fmt: skip
        run_on_ray(args, out, done, path)
    out["summary"] = summarise(out["runs"])
    out["wall_s"] = time.time() - start_wall
    out["load_average_end"] = os.getloadavg()[0]
    path.write_text(json.dumps(out, indent=1))
    write_markdown(out)
    plot(out)
    return 0


def run_pilot_b(args: argparse.Namespace, out: dict[str, Any], done: set[Any], path: Path) -> None:
    """(b) training with the pilot's constants, plus unweighted steps routed by the
    bias-aware bound (``zeta2`` from the pilot): is the placeholder bound the cause?"""
    global CONSTANTS  # noqa: PLW0603 (objective() and routers() read it)
    budget = args.train_budget
    clients, before, after = fleet("b", budget)
    if args.pilot_json is not None:
        pilot = json.loads(args.pilot_json.read_text())
    else:
        from raysync.objectives import estimate_constants_for_config

        est = estimate_constants_for_config(config(clients, budget, 0, True, args.dataset))
        c = est.constants
        pilot = {"constants": [c.L, c.sigma2, c.M2, c.A], "zeta2": est.zeta2}
    out["pilot"] = pilot
    CONSTANTS = tuple(pilot["constants"])
    for seed in range(args.seeds):
        arms = routers("b", before, after, budget, zeta2=float(pilot["zeta2"]))
        for arm, router in arms.items():
            if ("pilot", "b", seed, arm) in done:
                continue
            beta = 0.0 if arm == "adaptive_bias" else 1.0
            t0 = time.time()
            res = simulate(config(clients, budget, seed, True, args.dataset, beta), router=router)
            row = {
                "mode": "pilot", "scenario": "b", "seed": seed, "arm": arm,
                "updates": res.num_updates,
                "throughput_after_change": window_rate(router.times, budget / 2, budget),
                "routing_changes": int(getattr(router, "routing_version", 0)),
                "final_test_accuracy": res.final_test_accuracy, "wall_s": time.time() - t0,
            }  # fmt: skip
            out["runs"].append(row)
            print(json.dumps(row), flush=True)
            path.write_text(json.dumps(out, indent=1))
    CONSTANTS = DEFAULT_CONSTANTS


def run_on_ray(args: argparse.Namespace, out: dict[str, Any], done: set[Any], path: Path) -> None:
    """Scenario (b) with training on the Ray runtime, emulated service times."""
    import ray

    from raysync.runtime import run

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 object_store_memory=300 * 2**20)  # fmt: skip
    budget, scale = args.ray_budget, args.time_scale
    clients, before, after = fleet("b", budget)
    for seed in range(args.ray_seeds):
        arms = routers("b", before, after, budget)
        for arm in ARMS:
            if ("ray", "b", seed, arm) in done:
                continue
            cfg = config(clients, budget, seed, True, args.dataset)
            cfg = cfg.replace(run=replace(cfg.run, time_scale=scale))
            samples: list[tuple[int, float]] = []
            t0 = time.time()
            res = run(cfg, router=arms[arm], progress=lambda u, s, log=samples: log.append((u, s)))
            # Progress is in wall seconds of the server's clock; config seconds = / scale.
            ts = np.array([s / scale for _, s in samples])
            us = np.array([u for u, _ in samples], dtype=float)
            half = budget / 2
            at_half = float(np.interp(half, ts, us)) if ts.size else math.nan
            end_t, end_u = (float(ts[-1]), float(us[-1])) if ts.size else (math.nan, math.nan)
            row = {
                "mode": "ray", "scenario": "b", "seed": seed, "arm": arm,
                "updates": int(res.num_updates),
                "throughput": float(res.extras.get("throughput_config_units", math.nan)),
                "throughput_after_change": (end_u - at_half) / max(end_t - half, 1e-9),
                "throughput_before_change": at_half / half,
                "final_test_accuracy": res.final_test_accuracy,
                "final_val_accuracy": res.final_val_accuracy,
                "completed": [int(c) for c in res.completed],
                "wall_s": time.time() - t0, "load_average": os.getloadavg()[0],
            }  # fmt: skip
            out["runs"].append(row)
            print(json.dumps(row), flush=True)
            path.write_text(json.dumps(out, indent=1))


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
        avg = {a: [r["bound_avg_after_change"] for r in runs if r["mode"] == "queue"
                   and r["scenario"] == scenario and r["arm"] == a
                   and "bound_avg_after_change" in r] for a in ARMS}  # fmt: skip
        if all(avg[a] for a in ARMS):
            for arm in ARMS:
                s[f"{arm}_bound_avg"] = mean_se(avg[arm])
            s["bound_avg_recovered_fraction"] = mean_se([
                (st - ad) / (st - orc) if orc != st else math.nan
                for st, ad, orc in zip(avg["static"], avg["adaptive"], avg["oracle"], strict=True)
            ])  # fmt: skip
        _accuracy(s, runs, "train", scenario)
        summary[scenario] = s
    ray_runs = [r for r in runs if r["mode"] == "ray"]
    if ray_runs:
        s = {}
        q = {a: [r["throughput_after_change"] for r in ray_runs if r["arm"] == a] for a in ARMS}
        for arm in ARMS:
            if q[arm]:
                s[f"{arm}_throughput"] = mean_se(q[arm])
        n = min(len(v) for v in q.values())
        if n:
            s["recovered_fraction"] = mean_se([
                (ad - st) / (orc - st) if orc != st else math.nan
                for st, ad, orc in zip(q["static"][:n], q["adaptive"][:n], q["oracle"][:n],
                                       strict=True)
            ])  # fmt: skip
        _accuracy(s, runs, "ray", "b")
        summary["b_ray"] = s
    pilot = [r for r in runs if r["mode"] == "pilot"]
    if pilot:
        s = {}
        for arm in (*ARMS, "adaptive_bias"):
            q = [r["throughput_after_change"] for r in pilot if r["arm"] == arm]
            if q:
                s[f"{arm}_throughput"] = mean_se(q)
        _accuracy(s, runs, "pilot", "b", (*ARMS, "adaptive_bias"))
        summary["b_pilot"] = s
    return summary


def _accuracy(s: dict[str, Any], runs: list[dict[str, Any]], mode: str, scenario: str,
              arms: tuple[str, ...] = ARMS) -> None:  # fmt: skip
    """Per-arm accuracy and the paired per-seed differences to the static arm."""
    acc = {a: {r["seed"]: r["final_test_accuracy"] for r in runs if r["mode"] == mode
               and r["scenario"] == scenario and r["arm"] == a} for a in arms}  # fmt: skip
    for arm in arms:
        if acc[arm]:
            s[f"{arm}_accuracy"] = mean_se(list(acc[arm].values()))
    for arm in arms[1:]:
        seeds = sorted(set(acc[arm]) & set(acc["static"]))
        if len(seeds) > 1:
            s[f"{arm}_minus_static_accuracy"] = mean_se(
                [acc[arm][k] - acc["static"][k] for k in seeds]
            )


def _pm(pair: Any, digits: int = 2) -> str:
    if not pair:
        return "-"
    m, se = pair
    return f"{m:.{digits}f} ± {se:.{digits}f}"


def write_markdown(out: dict[str, Any]) -> None:
    lines = [
        "| scenario | throughput static | adaptive | oracle | recovered_fraction | "
        "bound avg static | adaptive | oracle | bound recovered | accuracy static | adaptive | "
        "oracle | adaptive - static (paired) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    names = {"a": "(a) rates unknown", "b": "(b) fast tier 5x slower at T/2",
             "c": "(c) 10 % leave, 2 join at T/2",
             "b_ray": "(b) on Ray, emulated", "b_pilot": "(b) pilot constants"}  # fmt: skip
    for scenario, s in out["summary"].items():
        lines.append(
            f"| {names[scenario]} | {_pm(s.get('static_throughput'), 1)} | "
            f"{_pm(s.get('adaptive_throughput'), 1)} | {_pm(s.get('oracle_throughput'), 1)} | "
            f"{_pm(s.get('recovered_fraction'))} | {_pm(s.get('static_bound_avg'), 4)} | "
            f"{_pm(s.get('adaptive_bound_avg'), 4)} | {_pm(s.get('oracle_bound_avg'), 4)} | "
            f"{_pm(s.get('bound_avg_recovered_fraction'))} | "
            f"{_pm(s.get('static_accuracy'), 4)} | {_pm(s.get('adaptive_accuracy'), 4)} | "
            f"{_pm(s.get('oracle_accuracy'), 4)} | "
            f"{_pm(s.get('adaptive_minus_static_accuracy'), 4)} |"
        )
    extra = out["summary"].get("b_pilot", {})
    if "adaptive_bias_accuracy" in extra:
        lines.append(
            f"\n(b) pilot constants, unweighted steps (beta = 0) routed by the bias-aware bound: "
            f"throughput {_pm(extra.get('adaptive_bias_throughput'), 1)}, accuracy "
            f"{_pm(extra.get('adaptive_bias_accuracy'), 4)}, minus static (paired) "
            f"{_pm(extra.get('adaptive_bias_minus_static_accuracy'), 4)}."
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
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    shown = [s for s in (*SCENARIOS, "b_ray") if s in out["summary"]]
    x = np.arange(len(shown))
    for k, arm in enumerate(ARMS):
        thr = [out["summary"][s].get(f"{arm}_throughput", (math.nan, 0.0)) for s in shown]
        acc = [out["summary"][s].get(f"{arm}_accuracy", (math.nan, 0.0)) for s in shown]
        axes[0].bar(x + 0.25 * (k - 1), [t[0] for t in thr], 0.25, yerr=[t[1] for t in thr],
                    label=arm)  # fmt: skip
        axes[1].bar(x + 0.25 * (k - 1), [a[0] for a in acc], 0.25, yerr=[a[1] for a in acc],
                    label=arm)  # fmt: skip
    for ax, title in zip(axes, ("throughput after the change (updates/s)",
                                "final test accuracy"), strict=True):  # fmt: skip
        ax.set_xticks(x, [f"({s[0]})" + (" Ray" if s.endswith("ray") else "") for s in shown])
        if ax is axes[1]:
            pairs = [out["summary"][s].get(f"{arm}_accuracy") for s in shown for arm in ARMS]
            lows = [float(a[0]) for a in pairs if a]
            if lows:
                ax.set_ylim(min(lows) - 0.01, max(lows) + 0.005)
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "bench_adaptive.png", dpi=120)


if __name__ == "__main__":
    sys.exit(main())
