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

The adaptive arm (``[routing] kind = "adaptive"``, re-optimising every 100 updates after a
warm-up at 20, 40, 80 and 160 updates (``warmup`` = n, the default), window of 50 durations
per client, the ages of services in progress as censored durations, significance gate
``change_confidence = 0.99`` whose pooled-prior references are refreshed, exploration floor
1 % / n; the defaults since 39f99b8) starts uniform with a pooled prior in (a), and from
the static optimum with the configured initial rates as its prior in (b) and (c). (The
first version used a window of 200 and no gate: in (b) its estimates of the rarely routed
slow clients moved ``p`` off the optimum before the change, and its window, longer than a
fast client's whole history in a 60 s run, lagged 30 s behind the slow-down;
docs/adaptive.md section 4.)

Throughput comes from queue-only runs (long budget, many updates); accuracy from training
runs on a shorter budget. ``recovered_fraction = (adaptive - static) / (oracle - static)``
of the throughput measured after the change (b, c: from the change to the end, adaptation
included; a: after the first 300 updates); ``bound_avg`` is the time average, over the
second half of the run, of the bound ``J_T`` at the true rates of the routing in force (the
routers' objective), and its recovered fraction ``(static - adaptive) / (static - oracle)``.
Accuracy: final test accuracy of MNIST logistic regression (60k/10k, IID; ``--dataset
digits`` for scikit-learn's 1,797 digits), with the paired per-seed difference to the static
arm (all arms of a seed share the data, the partition and the initial model).

``--bias-b`` runs scenario (b) in a second, consistent design: every arm on unweighted
steps (Generalized AsyncSGD at ``beta = 0``) and the bias-aware bound (docs/theory.md
section 6, Cauchy-Schwarz term, the pilot's constants and ``zeta2``): static = its optimum
for the initial rates, adaptive = ``objective = "bias_aware"``, oracle = its optimum for the
true rates from the change on (rows ``bias_queue`` / ``bias_train``). At the benchmark's
``C = 10`` that bound ranks unweighted steps far ahead of importance-weighted ones (0.885 vs
2.00), so it is the design the router would be used with on this fleet. ``--bias-a`` runs
scenario (a) in the same design: static = its optimum for equal rates (uniform, what a user
without rate knowledge gets), adaptive = ``objective = "bias_aware"`` from there with the
pooled prior, oracle = its optimum for the true rates (the same row modes, scenario ``a``).

``--a-curves`` trains scenario (a) for ``--curve-budget`` seconds with an evaluation every
``--curve-every`` seconds and reports, per 30 s block, the paired adaptive - oracle accuracy
and when (if) the adaptive arm, which starts uniform, catches up. ``--a-ablation`` re-runs
the adaptive arm of (a) (queue-only) with one setting changed at a time (gate, exploration,
prior weight, window) and reports its throughput against the oracle's, measured and from the
queueing model at the true rates, with the estimates' error per tier at update 300.
``--a-start`` runs (a) in the bias-aware design queue-only with the adaptive arm's start-up
aids (warm-up, censoring, refresh; 39f99b8) removed one at a time and all together: first
change, updates in the first 60 s and per 5 s block against the oracle's (rows
``a_start``).

``--ray`` also runs scenario (b) with training on the Ray runtime with emulated service
times (``run.time_scale``; the budget is in config seconds, so a run lasts about
``budget * time_scale`` wall seconds), the same routers pickled to the server actor;
throughput after the change from the driver's progress samples (config seconds); rows
``ray`` (the first ones, with the router before c267890, are kept as ``ray_pre_c267890``).
``--ray-bias`` does the same in the bias-aware design of ``--bias-b`` (rows ``ray_bias``:
``beta = 0``, the pilot's constants and ``zeta2``, the same routers). Ray rows are wall-clock
emulation: a loaded machine delays the server and distorts them (load average per row).
Ray rows measured with the router before 39f99b8 and since re-run are kept, out of
``runs``, under ``ray_runs_before_39f99b8`` (their summaries ``b_ray_before_39f99b8`` /
``b_ray_bias_before_39f99b8``).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_adaptive.py [--seeds 5] [--dataset mnist]
    OMP_NUM_THREADS=1 python benchmarks/bench_adaptive.py --resume --ray --ray-seeds 3
    OMP_NUM_THREADS=1 python benchmarks/bench_adaptive.py --resume --skip-sim --bias-b \
        --a-curves --a-ablation
    OMP_NUM_THREADS=1 python benchmarks/bench_adaptive.py --resume --skip-sim --bias-a
    OMP_NUM_THREADS=1 python benchmarks/bench_adaptive.py --resume --skip-sim --a-start
    OMP_NUM_THREADS=1 python benchmarks/bench_adaptive.py --resume --skip-sim --ray-bias

Writes ``benchmarks/results/bench_adaptive.{json,png,md}`` (the JSON after every run).
"""

from __future__ import annotations

import argparse
import itertools
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
    """The design's optimum ``p`` for rates ``mu`` (the routers' objective): the wall-clock
    bound's, or the bias-aware bound's under :data:`BIAS`."""
    if BIAS is not None:
        return bias_optimum(mu, horizon)
    return np.asarray(optimize_routing(objective(mu, horizon), concurrency=CONCURRENCY).p)


def design_kwargs() -> dict[str, Any]:
    """The adaptive router's objective arguments for the current design."""
    if BIAS is None:
        return {}
    return {"objective": "bias_aware", "zeta2": BIAS["zeta2"], "weight_exponent": BIAS["beta"]}


#: The bias-aware design (``--bias-b``): pilot ``zeta2`` and ``beta = 0`` for every arm; None:
#: the wall-clock design (section-5 bound, importance-weighted steps).
BIAS: dict[str, float] | None = None


def bias_optimum(mu: np.ndarray, horizon: float) -> np.ndarray:
    """The bias-aware bound's optimum ``p`` at ``C`` and ``beta`` of :data:`BIAS` (the
    adaptive router's own minimiser, so every arm optimises the same objective)."""
    assert BIAS is not None
    router = AdaptiveRouter(
        horizon=horizon, constants=CONSTANTS, objective="bias_aware", zeta2=BIAS["zeta2"],
        weight_exponent=BIAS["beta"],
    )  # fmt: skip
    return router._bias_aware_optimum(mu, CONCURRENCY, None)


def bound_value(mu: np.ndarray, p: np.ndarray, horizon: float) -> float:
    """The design's bound (wall-clock, or bias-aware under :data:`BIAS`) at ``(mu, p)``."""
    if BIAS is None:
        return float(objective(mu, horizon).value(p, CONCURRENCY))
    from raysync.objectives.bias import BiasAwareBound

    L, sigma2, M2, A = CONSTANTS  # noqa: N806 (the theory's names)
    bound = BiasAwareBound(
        mu=mu, constants=ProblemConstants(L=L, sigma2=sigma2, M2=M2, A=A),
        time_budget=horizon, zeta2=BIAS["zeta2"], bias_kind="cauchy-schwarz",
    )  # fmt: skip
    return float(bound.value_and_grad(np.maximum(p, 1e-300), CONCURRENCY, BIAS["beta"])[0])


def bound_at_end(router: Any, after: np.ndarray, budget: float) -> float:
    """The bound, at the true rates after the change, of the router's final ``p``
    (conditioned on the clients present, as the engine routes)."""
    present = after > 0
    p = np.asarray(router.routing_probabilities())[present]
    return bound_value(after[present], p / p.sum(), budget)


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
            total += (hi - lo) * bound_value(after[mask], q / q.sum(), budget)
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
        # What a user without rate knowledge gets: the design's optimum for equal rates
        # (uniform by symmetry; computed, not assumed, in the bias-aware design).
        static_p = np.full(n, 1.0 / n) if BIAS is None else optimum(np.full(n, before.mean()),
                                                                    budget)  # fmt: skip
        oracle = TimedFixedRouter(p0)
        adaptive = TimedAdaptiveRouter(
            reoptimize_every=100, horizon=budget, window=WINDOW,
            change_confidence=CHANGE_CONFIDENCE, constants=CONSTANTS,
            initial_p=static_p / static_p.sum(), **design_kwargs(),
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

        prior = np.where(present0, before, before[present0].mean()).tolist()
        adaptive = TimedAdaptiveRouter(
            reoptimize_every=100, horizon=budget, initial_p=p0 / p0.sum(),
            change_confidence=CHANGE_CONFIDENCE, constants=CONSTANTS,
            estimator=OnlineRateEstimator(n, window=WINDOW, prior_rate=prior, prior_weight=1.0),
            **design_kwargs(),
        )  # fmt: skip
    arms = {"static": TimedFixedRouter(static_p), "adaptive": adaptive, "oracle": oracle}
    if zeta2 is not None:  # unweighted steps (beta = 0) routed by the bias-aware bound
        kwargs = {"horizon": budget, "constants": CONSTANTS, "objective": "bias_aware",
                  "zeta2": zeta2, "weight_exponent": 0.0}  # fmt: skip
        start = TimedAdaptiveRouter(**kwargs)._bias_aware_optimum(before, CONCURRENCY, None)
        from raysync.routing.estimation import OnlineRateEstimator

        arms["adaptive_bias"] = TimedAdaptiveRouter(
            reoptimize_every=100, initial_p=start, change_confidence=CHANGE_CONFIDENCE,
            estimator=OnlineRateEstimator(n, window=WINDOW, prior_rate=before.tolist(),
                                          prior_weight=1.0),
            **kwargs,
        )  # fmt: skip
    return arms


def config(clients: list[dict[str, Any]], budget: float, seed: int, train: bool,
           dataset: str, beta: float = 1.0, evals: int = 4) -> SystemConfig:  # fmt: skip
    run: dict[str, Any] = {"time_budget": budget, "train": train}
    if train:
        run["eval_every_seconds"] = budget / evals
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
    parser.add_argument(
        "--a-curves",
        action="store_true",
        help="(a) accuracy curves: when the adaptive arm catches up",
    )
    parser.add_argument(
        "--a-ablation",
        action="store_true",
        help="(a) adaptive arm with one setting changed at a time (queue-only runs)",
    )
    parser.add_argument(
        "--a-start",
        action="store_true",
        help="(a), bias-aware design: the adaptive arm's start with each learning aid removed",
    )
    parser.add_argument("--curve-budget", type=float, default=180.0)
    parser.add_argument("--curve-every", type=float, default=3.0)
    parser.add_argument(
        "--bias-b",
        action="store_true",
        help="(b) with all arms on unweighted steps and the bias-aware bound (pilot constants)",
    )
    parser.add_argument(
        "--bias-a",
        action="store_true",
        help="(a) with all arms on unweighted steps and the bias-aware bound (pilot constants)",
    )
    parser.add_argument(
        "--ray-bias",
        action="store_true",
        help="(b) on Ray in the bias-aware design (rows ray_bias; needs the pilot in the JSON)",
    )
    args = parser.parse_args()
    RESULTS = args.results
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.replot:
        saved = json.loads((RESULTS / "bench_adaptive.json").read_text())
        saved["summary"] = full_summary(saved)
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
        saved = json.loads(path.read_text())
        out["runs"] = saved["runs"]
        kept = ("pilot", "ray", "ray_bias", "ray_pre_c267890", "notes", "previous_adaptive_runs",
                "adaptive_runs_before_39f99b8", "summary_before_39f99b8",
                "one_off_39f99b8", "ray_runs_before_39f99b8",
                "adaptive_runs_before_e152a7c", "summary_before_e152a7c",
                "ray_runs_before_e152a7c", "one_off_e152a7c")  # fmt: skip
        out.update({k: saved[k] for k in kept if k in saved})
    done = {(r["mode"], r["scenario"], r["seed"], r["arm"]) for r in out["runs"]}
    start_wall = time.time()
    if not args.skip_sim:
        run_simulator(args, out, done, path, ("queue", "train"), SCENARIOS)
    if args.bias_a:
        run_bias(args, out, done, path, "a")
    if args.bias_b:
        run_bias(args, out, done, path, "b")
    if args.a_curves:
        run_a_curves(args, out, done, path)
    if args.a_ablation:
        run_a_ablation(args, out, done, path)
    if args.a_start:
        run_a_start(args, out, done, path)
    if args.pilot_b:
        run_pilot_b(args, out, done, path)
    if args.ray:
        out["ray"] = {"time_scale": args.time_scale, "budget": args.ray_budget,
                      "seeds": args.ray_seeds}  # fmt: skip
        run_on_ray(args, out, done, path)
    if args.ray_bias:
        out["ray_bias"] = {
            "time_scale": args.time_scale, "budget": args.ray_budget, "seeds": args.ray_seeds,
            "load_average_start": os.getloadavg()[0],
        }  # fmt: skip
        run_on_ray(args, out, done, path, bias=True)
    out["summary"] = full_summary(out)
    out["wall_s"] = time.time() - start_wall
    out["load_average_end"] = os.getloadavg()[0]
    path.write_text(json.dumps(out, indent=1))
    write_markdown(out)
    plot(out)
    return 0


def run_simulator(
    args: argparse.Namespace, out: dict[str, Any], done: set[Any], path: Path,
    modes: tuple[str, str], scenarios: tuple[str, ...], beta: float = 1.0,
    train_budget: float | None = None, evals: int = 4,
) -> None:  # fmt: skip
    """Queue-only runs (``modes[0]``, ``--queue-budget``; none when empty) and training runs
    (``modes[1]``, ``train_budget`` or ``--train-budget``, ``evals`` evaluations with their
    curve kept) of every arm, scenario and seed; a row per run in ``out``."""
    train_budget = args.train_budget if train_budget is None else train_budget
    for mode, budget in ((modes[0], args.queue_budget), (modes[1], train_budget)):
        train = mode == modes[1]
        if (train and args.skip_train) or not mode:
            continue
        for scenario in scenarios:
            clients, before, after = fleet(scenario, budget)
            for seed in range(args.seeds):
                arms = routers(scenario, before, after, budget)
                for arm in ARMS:
                    if (mode, scenario, seed, arm) in done:
                        continue
                    router = arms[arm]
                    cfg = config(clients, budget, seed, train, args.dataset, beta, evals)
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
                        "load_average": os.getloadavg()[0],
                    }  # fmt: skip
                    edges = np.linspace(0.0, budget, 41)
                    row["completions_per_block"] = np.histogram(router.times, edges)[0].tolist()
                    if scenario == "a" and len(router.times) > 300:
                        row["throughput_after_300"] = window_rate(
                            router.times, router.times[299], budget
                        )
                    if train:
                        row["final_test_accuracy"] = res.final_test_accuracy
                        row["final_val_accuracy"] = res.final_val_accuracy
                        row["curve"] = {
                            "times": [float(t) for t in res.times],
                            "updates": [int(u) for u in res.updates],
                            "test_accuracy": [float(a) for a in res.test_accuracy],
                        }
                    out["runs"].append(row)
                    print(json.dumps(row), flush=True)
                    path.write_text(json.dumps(out, indent=1))


def run_a_curves(args: argparse.Namespace, out: dict[str, Any], done: set[Any],
                 path: Path) -> None:  # fmt: skip
    """(a) training runs of ``--curve-budget`` seconds with an evaluation every
    ``--curve-every`` seconds: when (if) the adaptive arm's accuracy, which starts uniform,
    catches up with the oracle's."""
    evals = max(1, round(args.curve_budget / args.curve_every))
    run_simulator(args, out, done, path, ("", "a_curve"), ("a",),
                  train_budget=args.curve_budget, evals=evals)  # fmt: skip


#: Scenario (a) ablations of the adaptive arm (``--a-ablation``): router/estimator changes.
ABLATIONS: dict[str, dict[str, Any]] = {
    "as benchmarked": {},
    "no gate": {"change_confidence": None},
    "explore 0": {"explore": 0.0},
    "prior weight 0": {"prior_weight": 0.0},
    "window 200": {"window": 200},
    "no window": {"window": None},
    "no window, no gate": {"window": None, "change_confidence": None},
}


def run_a_ablation(args: argparse.Namespace, out: dict[str, Any], done: set[Any],
                   path: Path) -> None:  # fmt: skip
    """(a) queue-only runs of the adaptive arm with one setting changed at a time: measured
    throughput after the first 300 updates, the queueing model's throughput at the true rates
    of the routing in force (time-averaged from update 300, and of the final ``p``), and the
    estimates' error per tier behind the routing in force at update 300."""
    from raysync.routing.estimation import OnlineRateEstimator

    budget = args.queue_budget
    clients, _, mu = fleet("a", budget)
    n = mu.size
    tiers = np.cumsum([0] + [k for _, k in TIERS])

    def model(p: np.ndarray) -> float:
        q = np.asarray(p, dtype=np.float64)
        return float(objective(mu, budget).evaluate(q / q.sum(), CONCURRENCY).throughput)

    oracle_model = model(optimum(mu, budget))
    for name, change in ABLATIONS.items():
        for seed in range(args.seeds):
            key = ("a_ablation", name, seed, "adaptive")
            if key in done:
                continue
            kwargs: dict[str, Any] = {
                "reoptimize_every": 100, "horizon": budget, "window": WINDOW,
                "change_confidence": CHANGE_CONFIDENCE, "constants": CONSTANTS,
                "prior_weight": 1.0,
            }  # fmt: skip
            kwargs.update(change)
            est = OnlineRateEstimator(n, window=kwargs.pop("window"),
                                      prior_weight=kwargs.pop("prior_weight"))  # fmt: skip
            router = TimedAdaptiveRouter(estimator=est, **kwargs)
            simulate(config(clients, budget, seed, False, args.dataset), router=router)
            t300 = router.times[299]
            hist = router.history
            total = 0.0
            for k, (t0, p) in enumerate(hist):
                t1 = hist[k + 1][0] if k + 1 < len(hist) else budget
                if t1 > max(t0, t300):
                    total += (t1 - max(t0, t300)) * model(p)
            at300 = [c for c in router.changes if c.update <= 300]
            rates = at300[-1].rates if at300 else est.prior_rates()
            err = [float(np.mean(rates[a:b] / mu[a:b] - 1.0)) for a, b in itertools.pairwise(tiers)]
            row = {
                "mode": "a_ablation", "scenario": name, "seed": seed, "arm": "adaptive",
                "throughput_after_300": window_rate(router.times, t300, budget),
                "model_throughput_after_300": total / (budget - t300),
                "model_throughput_final_p": model(router.routing_probabilities()),
                "model_throughput_oracle": oracle_model,
                "rate_error_per_tier_at_300": err, "routing_changes": len(router.changes),
                "load_average": os.getloadavg()[0],
            }  # fmt: skip
            out["runs"].append(row)
            print(json.dumps(row), flush=True)
            path.write_text(json.dumps(out, indent=1))


#: Scenario (a), bias-aware design (``--a-start``): the adaptive arm with one of the start-up
#: aids of 39f99b8 removed at a time, and with none of them (the router before it).
START_VARIANTS: dict[str, dict[str, Any]] = {
    "as benchmarked": {},
    "no warm-up": {"warmup": 0},
    "no censoring": {"censoring": False},
    "no refresh": {"refresh": False},
    "no single probe": {"single_probe": False},
    "none (router before 39f99b8)": {"warmup": 0, "censoring": False, "refresh": False,
                                     "single_probe": False},
}
#: The start-up window of ``--a-start`` (the training runs' budget) and its blocks, seconds.
START_WINDOW, START_BLOCK = 60.0, 5.0


def run_a_start(args: argparse.Namespace, out: dict[str, Any], done: set[Any],
                path: Path) -> None:  # fmt: skip
    """(a) in the bias-aware design (:func:`run_bias`), queue-only runs of ``--queue-budget``:
    the oracle and the adaptive arm with each start-up aid removed (:data:`START_VARIANTS`):
    first change, completions in the first 60 s and per 5 s block, throughput after update
    300 (rows ``a_start``)."""
    global CONSTANTS, BIAS  # noqa: PLW0603 (optimum() and routers() read them)
    budget = args.queue_budget
    clients, before, after = fleet("a", budget)
    pilot = load_pilot(args, out, clients, args.train_budget)
    out["pilot"] = pilot
    CONSTANTS = tuple(pilot["constants"])
    BIAS = {"zeta2": float(pilot["zeta2"]), "beta": 0.0}
    edges = np.arange(0.0, START_WINDOW + 1e-9, START_BLOCK)
    try:
        for seed in range(args.seeds):
            arms = routers("a", before, after, budget)
            start_p = arms["adaptive"]._initial_p  # the static (uniform) start
            for name, change in [*START_VARIANTS.items(), ("oracle", None)]:
                arm = "oracle" if change is None else "adaptive"
                if ("a_start", name, seed, arm) in done:
                    continue
                if change is None:
                    router = arms["oracle"]
                else:
                    router = TimedAdaptiveRouter(
                        reoptimize_every=100, horizon=budget, window=WINDOW,
                        change_confidence=CHANGE_CONFIDENCE, constants=CONSTANTS,
                        initial_p=start_p, **design_kwargs(), **change,
                    )  # fmt: skip
                t0 = time.time()
                simulate(config(clients, budget, seed, False, args.dataset, 0.0), router=router)
                times = np.asarray(router.times)
                changes = getattr(router, "changes", [])
                row = {
                    "mode": "a_start", "scenario": name, "seed": seed, "arm": arm,
                    "updates_first_window": int((times < START_WINDOW).sum()),
                    "completions_per_block": np.histogram(times, edges)[0].tolist(),
                    "first_change_update": changes[0].update if changes else None,
                    "first_change_time": changes[0].time if changes else None,
                    "throughput_after_300": window_rate(router.times, router.times[299], budget),
                    "routing_changes": len(changes), "wall_s": time.time() - t0,
                    "load_average": os.getloadavg()[0],
                }  # fmt: skip
                out["runs"].append(row)
                print(json.dumps(row), flush=True)
                path.write_text(json.dumps(out, indent=1))
    finally:
        CONSTANTS, BIAS = DEFAULT_CONSTANTS, None


def start_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per ``--a-start`` variant, paired by seed with the oracle: updates in the first 60 s,
    completions per 5 s block and throughput after update 300 as fractions of the oracle's,
    and the first change (mean update and time)."""
    oracle = {r["seed"]: r for r in runs if r["mode"] == "a_start" and r["arm"] == "oracle"}
    table: dict[str, Any] = {}
    for name in START_VARIANTS:
        rows = [r for r in runs if r["mode"] == "a_start" and r["scenario"] == name
                and r["arm"] == "adaptive" and r["seed"] in oracle]  # fmt: skip
        if len(rows) < 2:
            continue
        orc = [oracle[r["seed"]] for r in rows]
        blocks = np.array([r["completions_per_block"] for r in rows], dtype=np.float64)
        ref = np.array([o["completions_per_block"] for o in orc], dtype=np.float64)
        table[name] = {
            "seeds": len(rows),
            "updates_60_vs_oracle": mean_se([r["updates_first_window"] / o["updates_first_window"]
                                             for r, o in zip(rows, orc, strict=True)]),
            "updates_60": mean_se([r["updates_first_window"] for r in rows]),
            "oracle_updates_60": mean_se([o["updates_first_window"] for o in orc]),
            "blocks_vs_oracle": (blocks / np.maximum(ref, 1.0)).mean(axis=0).tolist(),
            "after_300_vs_oracle": mean_se([r["throughput_after_300"] / o["throughput_after_300"]
                                            for r, o in zip(rows, orc, strict=True)]),
            "first_change_update": mean_se([r["first_change_update"] for r in rows
                                            if r["first_change_update"] is not None]),
            "first_change_time": mean_se([r["first_change_time"] for r in rows
                                          if r["first_change_time"] is not None]),
        }  # fmt: skip
    return table


def ablation_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per ablation: throughputs relative to the oracle arm's (paired by seed, queue runs)."""
    oracle = {
        r["seed"]: r
        for r in runs
        if r["mode"] == "queue" and r["scenario"] == "a" and r["arm"] == "oracle"
    }
    table: dict[str, Any] = {}
    for name in ABLATIONS:
        rows = [r for r in runs if r["mode"] == "a_ablation" and r["scenario"] == name
                and r["seed"] in oracle]  # fmt: skip
        if len(rows) < 2:
            continue
        rel = [r["throughput_after_300"] / oracle[r["seed"]]["throughput_after_300"] - 1
               for r in rows]  # fmt: skip
        table[name] = {
            "measured_vs_oracle": mean_se(rel),
            "model_after_300": mean_se([r["model_throughput_after_300"] for r in rows]),
            "model_final_p": mean_se([r["model_throughput_final_p"] for r in rows]),
            "model_oracle": rows[0]["model_throughput_oracle"],
            "rate_error_per_tier_at_300": np.mean(
                [r["rate_error_per_tier_at_300"] for r in rows], axis=0
            ).tolist(),
            "seeds": len(rows),
        }
    return table


def catch_up(runs: list[dict[str, Any]], mode: str = "a_curve", every: float = 3.0,
             block: float = 30.0) -> dict[str, Any]:  # fmt: skip
    """Paired adaptive - oracle test accuracy of ``mode``'s runs, per block of ``block``
    seconds (each seed's mean difference over the evaluations at multiples of ``every``
    inside the block; the runs also evaluate every 100 updates, at instants that differ
    between runs, which are left out), and the first block from which every block's mean
    difference is above 0 or within one standard error of it (the adaptive arm, which
    starts uniform, has caught up), with the updates the adaptive arm had made by then."""
    curves: dict[str, dict[int, dict[str, Any]]] = {"adaptive": {}, "oracle": {}}
    for r in runs:
        if r["mode"] == mode and r["arm"] in curves and "curve" in r:
            curves[r["arm"]][r["seed"]] = r["curve"]
    seeds = sorted(set(curves["adaptive"]) & set(curves["oracle"]))
    if len(seeds) < 2:
        return {}

    def on_grid(curve: dict[str, Any]) -> dict[int, tuple[float, int]]:
        out: dict[int, tuple[float, int]] = {}
        for t, a, u in zip(curve["times"], curve["test_accuracy"], curve["updates"],
                           strict=True):  # fmt: skip
            k = round(t / every)
            if k > 0 and abs(t - k * every) < 1e-6:
                out[k] = (a, u)
        return out

    grids = {arm: {s: on_grid(curves[arm][s]) for s in seeds} for arm in curves}
    common = sorted(set.intersection(*(set(g) for arm in grids for g in grids[arm].values())))
    per_block = int(round(block / every))
    blocks: list[dict[str, Any]] = []
    for start in range(0, len(common), per_block):
        ks = common[start : start + per_block]
        diffs = [
            float(np.mean([grids["adaptive"][s][k][0] - grids["oracle"][s][k][0] for k in ks]))
            for s in seeds
        ]
        mean, se = mean_se(diffs)
        blocks.append({
            "start": (ks[0] - 1) * every, "end": ks[-1] * every, "difference": mean, "se": se,
            "adaptive_updates_at_start": float(np.mean(
                [grids["adaptive"][s][ks[0]][1] for s in seeds])),
        })  # fmt: skip
    ok = [b["difference"] >= 0 or abs(b["difference"]) <= b["se"] for b in blocks]
    first = next((j for j in range(len(blocks)) if all(ok[j:])), None)
    return {
        "blocks": blocks, "seeds": len(seeds), "every": every,
        "caught_up_time": None if first is None else blocks[first]["start"],
        "caught_up_updates": None if first is None
        else blocks[first]["adaptive_updates_at_start"],
    }  # fmt: skip


def throughput_blocks(runs: list[dict[str, Any]], mode: str = "queue",
                      scenario: str = "a") -> dict[str, Any]:  # fmt: skip
    """Adaptive / oracle throughput per block of the run (a 40th of it, paired by seed; a
    block's ratio is noisy, 5-20 % standard error, as slow clients hold tasks for seconds),
    the ratio from each block to the end of the run, and the first block from which that
    ratio is at least 0.95 (within 5 % of the oracle from then on), with the updates the
    adaptive arm had made by then."""
    rows = {(r["arm"], r["seed"]): r["completions_per_block"] for r in runs
            if r["mode"] == mode and r["scenario"] == scenario
            and "completions_per_block" in r}  # fmt: skip
    seeds = sorted(s for a, s in rows if a == "adaptive" and ("oracle", s) in rows)
    if len(seeds) < 2:
        return {}
    ada = np.array([rows[("adaptive", s)] for s in seeds], dtype=np.float64)
    orc = np.array([rows[("oracle", s)] for s in seeds], dtype=np.float64)
    ratio = ada / np.maximum(orc, 1.0)
    mean = ratio.mean(axis=0)
    se = ratio.std(axis=0, ddof=1) / math.sqrt(len(seeds))
    updates = np.cumsum(ada.mean(axis=0))
    # From block j to the end (the acceptance's "after a few hundred updates" form).
    tail = [float(np.mean(ada[:, j:].sum(axis=1) / orc[:, j:].sum(axis=1)))
            for j in range(mean.size)]  # fmt: skip
    first = next((j for j in range(mean.size) if tail[j] >= 0.95), None)
    return {
        "ratio": mean.tolist(), "se": se.tolist(), "blocks": int(mean.size), "seeds": len(seeds),
        "ratio_from_block_to_end": tail,
        "within_5_percent_from_block": first,
        "updates_by_then": None if first is None else float(updates[first - 1] if first else 0),
    }  # fmt: skip


def load_pilot(args: argparse.Namespace, out: dict[str, Any], clients: list[dict[str, Any]],
               budget: float) -> dict[str, Any]:  # fmt: skip
    """The pilot's constants and ``zeta2``: ``--pilot-json``, the JSON's, or a new pilot."""
    if args.pilot_json is not None:
        return dict(json.loads(args.pilot_json.read_text()))
    if "pilot" in out:
        return dict(out["pilot"])
    from raysync.objectives import estimate_constants_for_config

    est = estimate_constants_for_config(config(clients, budget, 0, True, args.dataset))
    c = est.constants
    return {"constants": [c.L, c.sigma2, c.M2, c.A], "zeta2": est.zeta2}


def run_bias(args: argparse.Namespace, out: dict[str, Any], done: set[Any], path: Path,
             scenario: str) -> None:  # fmt: skip
    """``scenario`` with every arm on one update rule and one objective: unweighted steps
    (``beta = 0``) and the bias-aware bound (pilot constants and ``zeta2``). (b): static =
    its optimum at the initial rates, oracle = its optimum at the true rates, switched at
    the change; (a): static = its optimum for equal rates (what a user without rate
    knowledge gets), oracle = its optimum at the true rates; adaptive =
    ``objective = "bias_aware"`` from the static routing. Rows ``bias_queue`` /
    ``bias_train``."""
    global CONSTANTS, BIAS  # noqa: PLW0603 (objective(), optimum() and routers() read them)
    clients, _, _ = fleet("b", args.train_budget)
    pilot = load_pilot(args, out, clients, args.train_budget)
    out["pilot"] = pilot
    CONSTANTS = tuple(pilot["constants"])
    BIAS = {"zeta2": float(pilot["zeta2"]), "beta": 0.0}
    try:
        run_simulator(args, out, done, path, ("bias_queue", "bias_train"), (scenario,), beta=0.0)
    finally:
        CONSTANTS, BIAS = DEFAULT_CONSTANTS, None


def run_pilot_b(args: argparse.Namespace, out: dict[str, Any], done: set[Any], path: Path) -> None:
    """(b) training with the pilot's constants, plus unweighted steps routed by the
    bias-aware bound (``zeta2`` from the pilot): is the placeholder bound the cause?"""
    global CONSTANTS  # noqa: PLW0603 (objective() and routers() read it)
    budget = args.train_budget
    clients, before, after = fleet("b", budget)
    pilot = load_pilot(args, out, clients, budget)
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


def run_on_ray(args: argparse.Namespace, out: dict[str, Any], done: set[Any], path: Path,
               bias: bool = False) -> None:  # fmt: skip
    """Scenario (b) with training on the Ray runtime, emulated service times: the
    wall-clock design (rows ``ray``), or with ``bias`` the bias-aware design of
    :func:`run_bias` (rows ``ray_bias``: ``beta = 0``, the pilot's constants and ``zeta2``,
    the same routers as ``bias_train``)."""
    global CONSTANTS, BIAS  # noqa: PLW0603 (optimum() and routers() read them)
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 object_store_memory=300 * 2**20)  # fmt: skip
    budget = args.ray_budget
    clients, before, after = fleet("b", budget)
    mode, beta = ("ray_bias", 0.0) if bias else ("ray", 1.0)
    if bias:
        pilot = load_pilot(args, out, clients, budget)
        out["pilot"] = pilot
    try:
        for seed in range(args.ray_seeds):
            if bias:
                CONSTANTS = tuple(pilot["constants"])
                BIAS = {"zeta2": float(pilot["zeta2"]), "beta": 0.0}
            arms = routers("b", before, after, budget)
            CONSTANTS, BIAS = DEFAULT_CONSTANTS, None
            for arm in ARMS:
                if (mode, "b", seed, arm) in done:
                    continue
                _ray_row(args, out, path, mode, seed, arm, arms[arm], clients, beta)
    finally:
        CONSTANTS, BIAS = DEFAULT_CONSTANTS, None


def _ray_row(
    args: argparse.Namespace, out: dict[str, Any], path: Path, mode: str, seed: int, arm: str,
    router: Any, clients: list[dict[str, Any]], beta: float,
) -> None:  # fmt: skip
    """One Ray run of scenario (b); its row in ``out`` (and the JSON)."""
    from raysync.runtime import run

    budget, scale = args.ray_budget, args.time_scale
    cfg = config(clients, budget, seed, True, args.dataset, beta)
    cfg = cfg.replace(run=replace(cfg.run, time_scale=scale))
    samples: list[tuple[int, float]] = []
    t0 = time.time()
    res = run(cfg, router=router, progress=lambda u, s: samples.append((u, s)))
    # Progress is in wall seconds of the server's clock; config seconds = / scale.
    ts = np.array([s / scale for _, s in samples])
    us = np.array([u for u, _ in samples], dtype=float)
    half = budget / 2
    at_half = float(np.interp(half, ts, us)) if ts.size else math.nan
    end_t, end_u = (float(ts[-1]), float(us[-1])) if ts.size else (math.nan, math.nan)
    row = {
        "mode": mode, "scenario": "b", "seed": seed, "arm": arm,
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


def full_summary(out: dict[str, Any]) -> dict[str, Any]:
    """:func:`summarise` of the runs, plus the Ray summaries of the rows kept under
    ``ray_runs_before_<commit>`` (``b_ray_before_<commit>``, ``b_ray_bias_before_<commit>``)."""
    summary = summarise(out["runs"])
    for commit in ("39f99b8", "e152a7c"):
        old = summarise(out.get(f"ray_runs_before_{commit}", []))
        for name in ("b_ray", "b_ray_bias"):
            if name in old:
                summary[f"{name}_before_{commit}"] = old[name]
    return summary


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    designs = [(scenario, scenario, "queue", "train") for scenario in SCENARIOS]
    designs.append(("a_bias", "a", "bias_queue", "bias_train"))
    designs.append(("b_bias", "b", "bias_queue", "bias_train"))
    for name, scenario, queue_mode, train_mode in designs:
        s: dict[str, Any] = {}
        key = "throughput_after_300" if scenario == "a" else "throughput_after_change"
        q = {a: [r[key] for r in runs if r["mode"] == queue_mode and r["scenario"] == scenario
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
        bnd = {a: [r["bound_at_end"] for r in runs if r["mode"] == queue_mode
                   and r["scenario"] == scenario and r["arm"] == a] for a in ARMS}  # fmt: skip
        if all(bnd[a] for a in ARMS):
            fb = [(st - ad) / (st - orc) if orc != st else math.nan
                  for st, ad, orc in zip(bnd["static"], bnd["adaptive"], bnd["oracle"],
                                         strict=True)]  # fmt: skip
            s["bound_recovered_fraction"] = mean_se(fb)
            for arm in ARMS:
                s[f"{arm}_bound"] = mean_se(bnd[arm])
        avg = {a: [r["bound_avg_after_change"] for r in runs if r["mode"] == queue_mode
                   and r["scenario"] == scenario and r["arm"] == a
                   and "bound_avg_after_change" in r] for a in ARMS}  # fmt: skip
        if all(avg[a] for a in ARMS):
            for arm in ARMS:
                s[f"{arm}_bound_avg"] = mean_se(avg[arm])
            s["bound_avg_recovered_fraction"] = mean_se([
                (st - ad) / (st - orc) if orc != st else math.nan
                for st, ad, orc in zip(avg["static"], avg["adaptive"], avg["oracle"], strict=True)
            ])  # fmt: skip
        _accuracy(s, runs, train_mode, scenario)
        if s:
            summary[name] = s
    # ray_pre_c267890: the wall-clock design's first Ray rows, with the router before c267890.
    ray_modes = (("ray", "b_ray"), ("ray_bias", "b_ray_bias"), ("ray_pre_c267890", "b_ray_pre"))
    for ray_mode, name in ray_modes:
        ray_runs = [r for r in runs if r["mode"] == ray_mode]
        if not ray_runs:
            continue
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
        s["load_average"] = mean_se([r["load_average"] for r in ray_runs])
        _accuracy(s, runs, ray_mode, "b")
        summary[name] = s
    pilot = [r for r in runs if r["mode"] == "pilot"]
    if pilot:
        s = {}
        for arm in (*ARMS, "adaptive_bias"):
            thr = [r["throughput_after_change"] for r in pilot if r["arm"] == arm]
            if thr:
                s[f"{arm}_throughput"] = mean_se(thr)
        _accuracy(s, runs, "pilot", "b", (*ARMS, "adaptive_bias"))
        summary["b_pilot"] = s
    curve = catch_up(runs)
    if curve:
        summary["a_catch_up"] = curve
    blocks = throughput_blocks(runs)
    if blocks:
        summary["a_throughput_blocks"] = blocks
    blocks = throughput_blocks(runs, mode="bias_queue")
    if blocks:
        summary["a_bias_throughput_blocks"] = blocks
    ablation = ablation_summary(runs)
    if ablation:
        summary["a_ablation"] = ablation
    start = start_summary(runs)
    if start:
        summary["a_start"] = start
    return summary


def _accuracy(s: dict[str, Any], runs: list[dict[str, Any]], mode: str, scenario: str,
              arms: tuple[str, ...] = ARMS) -> None:  # fmt: skip
    """Per-arm accuracy and the paired per-seed differences to the static arm (and, for the
    adaptive arm, to the oracle: criterion (a))."""
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
    seeds = sorted(set(acc.get("adaptive", {})) & set(acc.get("oracle", {})))
    if len(seeds) > 1:
        s["adaptive_minus_oracle_accuracy"] = mean_se(
            [acc["adaptive"][k] - acc["oracle"][k] for k in seeds]
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
        "oracle | adaptive - static (paired) | adaptive - oracle (paired) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    names = {"a": "(a) rates unknown", "b": "(b) fast tier 5x slower at T/2, wall-clock design",
             "c": "(c) 10 % leave, 2 join at T/2",
             "b_ray": "(b) on Ray, emulated, wall-clock design",
             "b_ray_pre": "(b) on Ray, emulated, wall-clock design (router before c267890)",
             "b_pilot": "(b) pilot constants (router before c267890)",
             "a_bias": "(a) same, bias-aware design (beta = 0, pilot constants)",
             "b_bias": "(b) same, bias-aware design (beta = 0, pilot constants)",
             "b_ray_bias": "(b) on Ray, emulated, bias-aware design",
             "b_ray_before_39f99b8": "(b) on Ray, wall-clock design, router before 39f99b8",
             "b_ray_bias_before_39f99b8": "(b) on Ray, bias-aware design, router before 39f99b8",
             "b_ray_bias_before_e152a7c": "(b) on Ray, bias-aware design, router before e152a7c",
             }  # fmt: skip
    for scenario, s in out["summary"].items():
        if scenario not in names:
            continue
        lines.append(
            f"| {names[scenario]} | {_pm(s.get('static_throughput'), 1)} | "
            f"{_pm(s.get('adaptive_throughput'), 1)} | {_pm(s.get('oracle_throughput'), 1)} | "
            f"{_pm(s.get('recovered_fraction'))} | {_pm(s.get('static_bound_avg'), 4)} | "
            f"{_pm(s.get('adaptive_bound_avg'), 4)} | {_pm(s.get('oracle_bound_avg'), 4)} | "
            f"{_pm(s.get('bound_avg_recovered_fraction'))} | "
            f"{_pm(s.get('static_accuracy'), 4)} | {_pm(s.get('adaptive_accuracy'), 4)} | "
            f"{_pm(s.get('oracle_accuracy'), 4)} | "
            f"{_pm(s.get('adaptive_minus_static_accuracy'), 4)} | "
            f"{_pm(s.get('adaptive_minus_oracle_accuracy'), 4)} |"
        )
    extra = out["summary"].get("b_pilot", {})
    if "adaptive_bias_accuracy" in extra:
        lines.append(
            f"\n(b) pilot constants, unweighted steps (beta = 0) routed by the bias-aware bound: "
            f"throughput {_pm(extra.get('adaptive_bias_throughput'), 1)}, accuracy "
            f"{_pm(extra.get('adaptive_bias_accuracy'), 4)}, minus static (paired) "
            f"{_pm(extra.get('adaptive_bias_minus_static_accuracy'), 4)}."
        )
    curve = out["summary"].get("a_catch_up")
    if curve:
        blocks = "; ".join(
            f"{b['start']:.0f}-{b['end']:.0f} s {b['difference']:+.4f} ± {b['se']:.4f}"
            for b in curve["blocks"]
        )
        when = (
            "not within the run"
            if curve["caught_up_time"] is None
            else f"from {curve['caught_up_time']:.0f} s ({curve['caught_up_updates']:.0f} updates)"
        )
        lines.append(
            f"\n(a) accuracy, adaptive - oracle (paired, {curve['seeds']} seeds, mean over each "
            f"block's evaluations): {blocks}. Caught up (within one SE or above): {when}."
        )
    ablation = out["summary"].get("a_ablation")
    if ablation:
        lines += [
            "\n(a) ablations of the adaptive arm (queue-only, after the first 300 updates):\n",
            "| setting | measured vs oracle | model throughput of the routing in force | "
            "of the final p | rate error per tier at update 300 (slow, mid, fast) |",
            "|---|---|---|---|---|",
        ]
        for name, a in ablation.items():
            m, se = a["measured_vs_oracle"]
            err = ", ".join(f"{100 * e:+.0f} %" for e in a["rate_error_per_tier_at_300"])
            lines.append(
                f"| {name} | {100 * m:+.1f} ± {100 * se:.1f} % | {_pm(a['model_after_300'], 2)} "
                f"(oracle {a['model_oracle']:.2f}) | {_pm(a['model_final_p'], 2)} | {err} |"
            )
    start = out["summary"].get("a_start")
    if start:
        lines += [
            "\n(a), bias-aware design: the adaptive arm's start with one learning aid removed "
            "at a time (queue-only, paired with the oracle by seed):\n",
            "| adaptive arm | first change: update, time (s) | updates in the first 60 s / "
            "oracle's | per 5 s block / oracle's (0-20 s) | throughput after update 300 / "
            "oracle's |",
            "|---|---|---|---|---|",
        ]
        for name, a in start.items():
            blocks = ", ".join(f"{m:.2f}" for m in a["blocks_vs_oracle"][:4])
            lines.append(
                f"| {name} | {a['first_change_update'][0]:.0f}, "
                f"{a['first_change_time'][0]:.2f} | {_pm(a['updates_60_vs_oracle'], 3)} | "
                f"{blocks} | {_pm(a['after_300_vs_oracle'], 3)} |"
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
    fig, axes = plt.subplots(1, 2, figsize=(14, 4))
    shown = [s for s in (*SCENARIOS, "a_bias", "b_bias", "b_ray", "b_ray_bias")
             if s in out["summary"]]  # fmt: skip
    labels = {"a_bias": "(a) bias", "b_bias": "(b) bias", "b_ray": "(b) Ray",
              "b_ray_bias": "(b) Ray bias"}  # fmt: skip
    x = np.arange(len(shown))
    for k, arm in enumerate(ARMS):
        thr = [out["summary"][s].get(f"{arm}_throughput", (math.nan, 0.0)) for s in shown]
        acc = [out["summary"][s].get(f"{arm}_accuracy", (math.nan, 0.0)) for s in shown]
        axes[0].bar(x + 0.25 * (k - 1), [t[0] for t in thr], 0.25, yerr=[t[1] for t in thr],
                    label=arm)  # fmt: skip
        axes[1].bar(x + 0.25 * (k - 1), [a[0] for a in acc], 0.25, yerr=[a[1] for a in acc],
                    label=arm)  # fmt: skip
    for ax, title in zip(axes, ("throughput (updates/s): (a) after update 300, else after T/2",
                                "final test accuracy"), strict=True):  # fmt: skip
        ax.set_xticks(x, [labels.get(s, f"({s})") for s in shown])
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
