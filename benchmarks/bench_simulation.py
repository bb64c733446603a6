"""Benchmark of the discrete-event simulator.

Claims measured (results in ``benchmarks/results/bench_simulation.{json,png,md}``):

1. Queue-only speed: updates per second for ``n = C`` in 10, 100, 1000 (target: at least
   300,000 updates/s for ``n = C = 100``).
2. Training overhead: wall time of the simulator over a bare loop that makes the same
   number of ``run_client_work`` + ``strategy.apply`` calls (target: at most 10 %).
   Evaluation time is excluded from both.
3. Agreement with queueing theory for exponential service (measured vs MVA with 99 %
   batch-means intervals), and the deviation of the formulas for non-exponential service
   (deterministic, lognormal), which the theory does not cover.
4. ``--mnist``: Generalized AsyncSGD with the CNN on the full MNIST (target: test accuracy
   above 0.95).

Usage::

    .venv/bin/python benchmarks/bench_simulation.py [--mnist] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raysync.client import run_client_work
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
from raysync.queueing import ClosedNetwork, analyze
from raysync.simulation import simulate
from raysync.strategies import ClientResult, make_strategy
from raysync.workload import Workload, build_workload

RESULTS = Path(__file__).resolve().parent / "results"


def fleet(rates: Any, *, kind: str = "exponential", cv: float = 1.0) -> tuple[ClientSpec, ...]:
    def spec(rate: float) -> ServiceTimeSpec:
        if kind == "exponential":
            return ServiceTimeSpec(kind=kind, rate=float(rate))
        if kind == "lognormal":
            return ServiceTimeSpec(kind=kind, mean=1.0 / rate, cv=cv)
        return ServiceTimeSpec(kind=kind, mean=1.0 / rate)

    return tuple(ClientSpec(service_time=spec(r)) for r in rates)


# --------------------------------------------------------------------------- 1. speed


def bench_queue_only(quick: bool) -> list[dict[str, Any]]:
    rows = []
    for n in (10, 100, 1000):
        rates = np.geomspace(1.0, 10.0, n)  # 10x speed spread
        updates = 300_000 if quick else 1_000_000
        cfg = SystemConfig(
            clients=fleet(rates),
            concurrency=n,
            routing=RoutingConfig(kind="uniform"),
            run=RunConfig(num_updates=updates, train=False),
        )
        simulate(cfg.replace(run=dataclasses.replace(cfg.run, num_updates=10_000)))  # warm
        rates_measured = []
        for rep in range(3):
            start = time.perf_counter()
            simulate(cfg.replace(seed=rep))
            rates_measured.append(updates / (time.perf_counter() - start))
        row = {
            "n": n,
            "concurrency": n,
            "updates": updates,
            "updates_per_s_median": statistics.median(rates_measured),
            "updates_per_s_best": max(rates_measured),
            "updates_per_s_all": rates_measured,
        }
        print(f"queue-only n=C={n}: {row['updates_per_s_median']:,.0f} updates/s (median of 3)")
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- 2. overhead


def bare_loop(config: SystemConfig, workload: Workload, updates: int) -> float:
    """The same gradient computations and server updates, without any simulation.

    Returns the process CPU time of the loop (less sensitive than wall time to other
    processes on a shared machine).
    """
    n = config.num_clients
    strategy = make_strategy(config.algorithm)
    strategy.bind(n, np.asarray(config.routing_probabilities))
    computer = workload.make_computer()
    work = strategy.client_work()
    data = [workload.client_data(i) for i in range(n)]
    rngs = [np.random.default_rng(i) for i in range(n)]
    params = np.array(workload.initial_params)
    params.setflags(write=False)
    versions = [params] * n  # each client computes on a (stale) version it received
    start = time.process_time()
    for k in range(updates):
        i = k % n
        x, y = data[i]
        out = run_client_work(computer, work, versions[i], x, y, rngs[i])
        result = ClientResult(
            task_id=k,
            client_id=i,
            base_version=k - n if k >= n else 0,
            current_version=k,
            payload=out.payload,
            loss=float(out.loss),
            num_samples=int(out.num_samples),
        )
        new = strategy.apply(params, result)
        if new is not None:
            new.setflags(write=False)
            params = new
        versions[i] = params
    return time.process_time() - start


def bench_overhead(quick: bool) -> list[dict[str, Any]]:
    rows = []
    for model, updates in (("logreg", 3000), ("cnn", 600)):
        if quick:
            updates //= 3
        n = 10
        cfg = SystemConfig(
            clients=fleet(np.geomspace(1.0, 10.0, n)),
            concurrency=n,
            routing=RoutingConfig(kind="uniform"),
            algorithm=AlgorithmConfig(name="generalized_asyncsgd", lr=0.1, batch_size=32),
            data=DataConfig(dataset="digits"),
            model=ModelConfig(name=model),
            run=RunConfig(num_updates=updates, eval_every_updates=None),
        )
        workload = build_workload(cfg)
        bare_loop(cfg, workload, 50)  # warm-up
        bare, sim = [], []
        for _ in range(7):  # interleaved; the minimum is robust to a busy machine
            bare.append(bare_loop(cfg, workload, updates))
            start = time.process_time()
            res = simulate(cfg, workload=workload)
            sim.append(time.process_time() - start - float(res.extras["eval_seconds"]))
        row = {
            "model": model,
            "dataset": "digits",
            "updates": updates,
            "bare_s_min": min(bare),
            "sim_s_min": min(sim),
            "bare_s_all": bare,
            "sim_s_all": sim,
            "per_update_us_bare": 1e6 * min(bare) / updates,
            "overhead_pct": 100.0 * (min(sim) / min(bare) - 1.0),
            "overhead_pct_median": 100.0 * (statistics.median(sim) / statistics.median(bare) - 1),
        }
        print(
            f"training overhead ({model}): {row['overhead_pct']:+.1f}% "
            f"(bare {row['per_update_us_bare']:.0f} us/update)"
        )
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- 3. theory

NETWORKS: dict[str, tuple[tuple[float, ...], int, tuple[float, ...] | None]] = {
    "worked_example_n4_C6": ((1.0, 2.0, 4.0, 0.5), 6, (0.4, 0.3, 0.2, 0.1)),
    "heterogeneous_n4_C2": ((0.5, 1.0, 2.0, 5.0), 2, (0.4, 0.3, 0.2, 0.1)),
    "heterogeneous_n6_C12": ((10.0, 1.0, 5.0, 2.0, 1.0, 3.0), 12, (1 / 6,) * 6),
    "heterogeneous_n8_C4": (
        (1.0, 10.0, 2.0, 5.0, 1.5, 3.0, 7.0, 4.0),
        4,
        (0.05, 0.3, 0.1, 0.15, 0.05, 0.1, 0.15, 0.1),
    ),
    "return_to_sender_n4": ((0.5, 1.0, 2.0, 5.0), 4, None),
}


def theory(mu: tuple[float, ...], c: int, p: tuple[float, ...] | None) -> dict[str, Any]:
    m = np.asarray(mu)
    if p is None:
        return {"throughput": float(m.sum()), "delay": ((m.sum() - m) / m).tolist()}
    res = analyze(ClosedNetwork(mu=m, p=np.asarray(p), concurrency=c))
    return {"throughput": res.throughput, "delay": res.mean_relative_delay.tolist()}


def net_config(
    mu: tuple[float, ...], c: int, p: tuple[float, ...] | None, kind: str, cv: float, updates: int
) -> SystemConfig:
    return SystemConfig(
        clients=fleet(mu, kind=kind, cv=cv),
        concurrency=c,
        routing=(
            RoutingConfig(kind="return_to_sender")
            if p is None
            else RoutingConfig(kind="fixed", p=p)
        ),
        algorithm=AlgorithmConfig(name="asyncsgd" if p is None else "generalized_asyncsgd"),
        run=RunConfig(num_updates=updates, train=False),
    )


def bench_theory(quick: bool) -> dict[str, Any]:
    updates = 200_000 if quick else 1_000_000
    out: dict[str, Any] = {"updates": updates, "exponential": [], "non_exponential": []}
    for name, (mu, c, p) in NETWORKS.items():
        th = theory(mu, c, p)
        res = simulate(net_config(mu, c, p, "exponential", 1.0, updates))
        lo, hi = res.throughput_ci
        inside = [
            bool(a <= t <= b) or a == b == t
            for t, (a, b) in zip(th["delay"], res.relative_delay_ci, strict=True)
        ]
        out["exponential"].append(
            {
                "network": name,
                "throughput_theory": th["throughput"],
                "throughput_sim": res.throughput,
                "throughput_ci": [lo, hi],
                "throughput_inside": bool(lo <= th["throughput"] <= hi),
                "delay_theory": th["delay"],
                "delay_sim": res.mean_relative_delay.tolist(),
                "delay_ci": res.relative_delay_ci.tolist(),
                "delay_inside": inside,
            }
        )
        print(f"exponential {name}: throughput inside={lo <= th['throughput'] <= hi}, "
              f"delays inside={sum(inside)}/{len(inside)}")  # fmt: skip
        for kind, cv in (("deterministic", 0.0), ("lognormal", 0.5), ("lognormal", 2.0)):
            res = simulate(net_config(mu, c, p, kind, cv, updates))
            thr_err = res.throughput / th["throughput"] - 1
            delay_err = res.mean_relative_delay / np.asarray(th["delay"]) - 1
            out["non_exponential"].append(
                {
                    "network": name,
                    "service": kind,
                    "cv": cv,
                    "throughput_sim": res.throughput,
                    "throughput_theory": th["throughput"],
                    "throughput_rel_error_pct": 100 * thr_err,
                    "delay_sim": res.mean_relative_delay.tolist(),
                    "delay_ci": res.relative_delay_ci.tolist(),
                    "delay_rel_error_pct": (100 * delay_err).tolist(),
                    "max_abs_delay_rel_error_pct": float(100 * np.max(np.abs(delay_err))),
                }
            )
            print(
                f"  {kind}(cv={cv}): throughput {100 * thr_err:+.1f}%, "
                f"max |delay error| {100 * np.max(np.abs(delay_err)):.1f}%"
            )
    return out


# --------------------------------------------------------------------------- 4. MNIST


def bench_mnist(updates: int) -> dict[str, Any]:
    n = 10
    cfg = SystemConfig(
        clients=fleet(np.geomspace(1.0, 10.0, n)),
        concurrency=n,
        routing=RoutingConfig(kind="uniform"),
        algorithm=AlgorithmConfig(name="generalized_asyncsgd", lr=0.05, batch_size=32),
        data=DataConfig(dataset="mnist", partition="iid"),
        model=ModelConfig(name="cnn"),
        run=RunConfig(num_updates=updates, eval_every_updates=max(1, updates // 4)),
    )
    start = time.perf_counter()
    workload = build_workload(cfg)
    load_s = time.perf_counter() - start
    cpu0 = time.process_time()
    res = simulate(cfg, workload=workload)
    cpu = time.process_time() - cpu0
    print(
        f"MNIST CNN: test accuracy {res.final_test_accuracy:.4f} after {res.num_updates} "
        f"updates ({res.wall_time:.0f} s wall, {cpu:.0f} s CPU)"
    )
    return {
        "clients": n,
        "concurrency": n,
        "model": "cnn",
        "lr": cfg.algorithm.lr,
        "batch_size": cfg.algorithm.batch_size,
        "updates": res.num_updates,
        "final_test_accuracy": res.final_test_accuracy,
        "final_val_accuracy": res.final_val_accuracy,
        "updates_curve": res.updates.tolist(),
        "test_accuracy_curve": res.test_accuracy.tolist(),
        "virtual_time_s": res.elapsed,
        "wall_s": res.wall_time,
        "cpu_s": cpu,
        "eval_s": res.extras["eval_seconds"],
        "data_load_s": load_s,
    }


# --------------------------------------------------------------------------- output


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if results.get("mnist") else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4))
    ax = axes[0]
    speed = results["queue_only"]
    ax.bar([str(r["n"]) for r in speed], [r["updates_per_s_median"] for r in speed])
    ax.axhline(300_000, color="red", linestyle="--", label="target (n = 100)")
    ax.set_xlabel("n = C")
    ax.set_ylabel("updates / s (queue-only)")
    ax.set_title("Simulator speed")
    ax.legend()
    ax = axes[1]
    for row in results["theory"]["exponential"]:
        th = np.asarray(row["delay_theory"])
        sim = np.asarray(row["delay_sim"])
        ci = np.asarray(row["delay_ci"])
        err = np.abs(ci.T - sim)
        ax.errorbar(th, sim, yerr=err, fmt="o", capsize=3, label=row["network"])
    lim = max(max(r["delay_theory"]) for r in results["theory"]["exponential"]) * 1.1
    ax.plot([0, lim], [0, lim], "k:", lw=1)
    ax.set_xlabel("E[D_i], theory (MVA / independent cycles)")
    ax.set_ylabel("mean relative delay, simulated (99% CI)")
    ax.set_title("Staleness: simulation vs theory")
    ax.legend(fontsize=7)
    if results.get("mnist"):
        ax = axes[2]
        m = results["mnist"]
        ax.plot(m["updates_curve"], m["test_accuracy_curve"], marker="o")
        ax.axhline(0.95, color="red", linestyle="--")
        ax.set_xlabel("updates")
        ax.set_ylabel("test accuracy")
        ax.set_title("Gen. AsyncSGD, CNN, MNIST (n = C = 10)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def markdown(results: dict[str, Any]) -> str:
    lines = ["| measurement | result | target |", "|---|---|---|"]
    for r in results["queue_only"]:
        target = ">= 300,000" if r["n"] == 100 else "-"
        lines.append(
            f"| queue-only speed, n = C = {r['n']} | "
            f"{r['updates_per_s_median']:,.0f} updates/s | {target} |"
        )
    for r in results["overhead"]:
        lines.append(
            f"| training overhead vs bare loop ({r['model']} on digits, "
            f"{r['per_update_us_bare']:.0f} us/update bare) | {r['overhead_pct']:+.1f}% | <= 10% |"
        )
    exp = results["theory"]["exponential"]
    inside = sum(sum(r["delay_inside"]) for r in exp)
    total = sum(len(r["delay_inside"]) for r in exp)
    thr_in = sum(r["throughput_inside"] for r in exp)
    lines.append(
        f"| exponential service: theory inside the 99% CI "
        f"({len(exp)} networks, {results['theory']['updates']:,} updates each) | "
        f"throughput {thr_in}/{len(exp)}, client delays {inside}/{total} | all |"
    )
    for kind, cv in (("deterministic", 0.0), ("lognormal", 0.5), ("lognormal", 2.0)):
        rows = [
            r
            for r in results["theory"]["non_exponential"]
            if r["service"] == kind and r["cv"] == cv
        ]
        rand = [r for r in rows if not r["network"].startswith("return")]
        rts = [r for r in rows if r["network"].startswith("return")]
        label = kind if kind == "deterministic" else f"{kind} (cv = {cv})"
        for routing, group in (("random routing", rand), ("return to sender", rts)):
            thr = max(abs(r["throughput_rel_error_pct"]) for r in group)
            dly = max(r["max_abs_delay_rel_error_pct"] for r in group)
            lines.append(
                f"| {label} service, {routing}: error of the exponential formulas "
                f"({len(group)} network{'s' if len(group) > 1 else ''}) | "
                f"throughput up to {thr:.1f}%, client delays up to {dly:.1f}% | reported |"
            )
    if results.get("mnist"):
        m = results["mnist"]
        lines.append(
            f"| MNIST, CNN, Generalized AsyncSGD, n = C = 10, {m['updates']} updates | "
            f"test accuracy {m['final_test_accuracy']:.4f} ({m['cpu_s']:.0f} s CPU) | > 0.95 |"
        )
    machine = results["machine"]
    lines.append("")
    lines.append(
        f"Machine: {machine['cpus']} CPU cores, Python {machine['python']}, torch "
        f"{machine['torch']} (1 thread); generated by `benchmarks/bench_simulation.py`. "
        "Speeds depend on machine load: the cores were shared with other jobs."
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", action="store_true", help="also train the CNN on MNIST")
    parser.add_argument("--mnist-updates", type=int, default=3000)
    parser.add_argument("--quick", action="store_true", help="fewer updates (smoke test)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import os

    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "quick": args.quick,
    }
    results["queue_only"] = bench_queue_only(args.quick)
    results["overhead"] = bench_overhead(args.quick)
    results["theory"] = bench_theory(args.quick)
    previous = args.out / "bench_simulation.json"
    if args.mnist:
        results["mnist"] = bench_mnist(args.mnist_updates)
    elif previous.exists():  # keep the last MNIST measurement when not re-running it
        old = json.loads(previous.read_text())
        if old.get("mnist"):
            results["mnist"] = old["mnist"]
    args.out.mkdir(parents=True, exist_ok=True)
    previous.write_text(json.dumps(results, indent=2))
    plot(results, args.out / "bench_simulation.png")
    (args.out / "bench_simulation.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
