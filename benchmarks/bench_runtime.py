"""Benchmark of the Ray runtime.

Claims measured (results in ``benchmarks/results/bench_runtime.{json,png,md}``):

1. Emulated service times: measured / predicted update throughput for several ``(C, p)``
   (queue-only, exponential service, 4 clients with a 10x speed spread, ``time_scale = 1``;
   target: ratio >= 0.95). The prediction is the closed form ``Lambda(C)``; the ratio to the
   simulation of the same seed (same service-time and routing draws) isolates the runtime's
   own fidelity from sampling noise. Also reported: the server's lag (seconds between a
   task's end at its client and its consumption).
2. Maximum speed without emulation (``time_scale = 0``; best of two runs, the loop best of
   five): updates per second of Generalized AsyncSGD with logistic regression on digits (a
   tiny model: one remote call per update dominates), and of queue-only runs (no
   computation: the runtime's ceiling), next to a single-process loop that makes the same
   ``run_client_work`` + ``strategy.apply`` calls.

3. raysync against a minimal bare-Ray parameter server (:func:`bare_ray_ps`) on the
   identical workload (model, data, batch, lr, tasks in flight), alternating in the same
   invocation; the ratio of the medians is reported. Skipped above ``--max-load``.

Usage::

    .venv/bin/python benchmarks/bench_runtime.py [--quick] [--speed-only] [--max-load 6]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from raysync.client import run_client_work
from raysync.config import (
    AlgorithmConfig,
    ClientSpec,
    RoutingConfig,
    RunConfig,
    ServiceTimeSpec,
    SystemConfig,
)
from raysync.queueing import ClosedNetwork, analyze
from raysync.runtime import run
from raysync.simulation import simulate
from raysync.simulation.engine import run_generators
from raysync.strategies import ClientResult, make_strategy
from raysync.workload import build_workload

RESULTS = Path(__file__).resolve().parent / "results"

MEANS = (0.005, 0.01, 0.025, 0.05)  # seconds: a 10x spread


def fleet(means: Any, num_cpus: float = 0.25) -> tuple[ClientSpec, ...]:
    return tuple(
        ClientSpec(
            service_time=ServiceTimeSpec(kind="exponential", mean=float(m)), num_cpus=num_cpus
        )
        for m in means
    )


# --------------------------------------------------------------------------- 1. fidelity


def bench_emulated(quick: bool) -> list[dict[str, Any]]:
    rates = 1.0 / np.asarray(MEANS)
    routings = {
        "uniform": None,
        "proportional": tuple(float(v) for v in rates / rates.sum()),
        "slow-heavy": (0.1, 0.2, 0.3, 0.4),
    }
    cases = [
        ("uniform", 1),
        ("uniform", 4),
        ("uniform", 8),
        ("proportional", 2),
        ("proportional", 4),
        ("proportional", 8),
        ("proportional", 16),
        ("slow-heavy", 4),
    ]
    seconds = 8.0 if quick else 30.0
    rows = []
    for name, concurrency in cases:
        p = routings[name]
        routing = RoutingConfig(kind="uniform") if p is None else RoutingConfig(kind="fixed", p=p)
        base = SystemConfig(clients=fleet(MEANS), concurrency=concurrency, routing=routing, seed=11)
        theory = analyze(ClosedNetwork.from_config(base))
        updates = int(seconds * theory.throughput)
        config = base.replace(run=RunConfig(num_updates=updates, train=False, time_scale=1.0))
        result = run(config)
        sim = simulate(config)
        lo, hi = result.throughput_ci
        row = {
            "routing": name,
            "p": [float(v) for v in (p if p is not None else [0.25] * 4)],
            "concurrency": concurrency,
            "num_updates": updates,
            "predicted_throughput": float(theory.throughput),
            "measured_throughput": float(result.throughput),
            "measured_throughput_ci": [float(lo), float(hi)],
            "throughput_ratio": float(result.throughput / theory.throughput),
            "throughput_ratio_ci": [float(lo / theory.throughput), float(hi / theory.throughput)],
            "simulated_throughput_same_seed": float(sim.throughput),
            "ratio_to_simulation": float(result.throughput / sim.throughput),
            "mean_staleness": float(result.mean_staleness),
            "predicted_mean_staleness": float(theory.mean_staleness),
            "max_delay_error_vs_theory": float(
                np.max(np.abs(result.mean_relative_delay / theory.mean_relative_delay - 1))
            ),
            "max_delay_error_vs_simulation": float(
                np.max(np.abs(result.mean_relative_delay / sim.mean_relative_delay - 1))
            ),
            "lag_mean_s": float(result.extras["lag_mean"]),
            "lag_max_s": float(result.extras["lag_max"]),
            "elapsed_s": float(result.elapsed),
        }
        rows.append(row)
        print(
            f"  {name:>12} C={concurrency:<3} predicted {theory.throughput:7.1f}/s "
            f"measured {result.throughput:7.1f}/s ratio {row['throughput_ratio']:.3f} "
            f"(vs sim {row['ratio_to_simulation']:.3f}) lag {row['lag_mean_s'] * 1e3:.2f} ms",
            flush=True,
        )
    return rows


# --------------------------------------------------------------------------- 2. speed


def single_process_loop(config: SystemConfig, updates: int) -> float:
    """Updates per second of one process making the same calls as the runtime's update."""
    torch.set_num_threads(1)
    workload = build_workload(config)
    n = config.num_clients
    strategy = make_strategy(config.algorithm)
    strategy.bind(n, np.full(n, 1.0 / n))
    work = strategy.client_work()
    computer = workload.make_computer()
    data = [workload.client_data(i) for i in range(n)]
    gens = run_generators(config.seed, n)
    params = np.array(workload.initial_params, dtype=np.float32)
    clients = gens.router.integers(0, n, size=updates)
    start = time.perf_counter()
    for k in range(updates):
        i = int(clients[k])
        x, y = data[i]
        out = run_client_work(computer, work, params, x, y, gens.minibatch[i])
        result = ClientResult(
            task_id=k,
            client_id=i,
            base_version=k,
            current_version=k,
            payload=out.payload,
            loss=out.loss,
            num_samples=out.num_samples,
        )
        new = strategy.apply(params, result)
        if new is not None:
            params = np.asarray(new, dtype=np.float32)
    return updates / (time.perf_counter() - start)


def bench_speed(quick: bool) -> dict[str, Any]:
    updates = 1500 if quick else 4000
    cases = [
        ("train", 2, 2, 1.0),
        ("train", 2, 4, 1.0),
        ("train", 4, 4, 0.5),
        ("train", 4, 8, 0.5),
        ("queue-only", 4, 4, 0.5),
        ("queue-only", 4, 8, 0.5),
    ]
    rows = []
    for mode, n, concurrency, cpus in cases:
        config = SystemConfig(
            clients=fleet([0.01] * n, num_cpus=cpus),
            concurrency=concurrency,
            routing=RoutingConfig(kind="uniform"),
            algorithm=AlgorithmConfig(name="generalized_asyncsgd", lr=0.1, batch_size=32),
            run=RunConfig(
                num_updates=updates,
                time_scale=0.0,
                train=mode == "train",
                eval_every_updates=None,
            ),
            seed=0,
        )
        # Best of two runs: the cores may be shared with other jobs.
        result = max((run(config) for _ in range(2)), key=lambda r: r.throughput)
        rows.append(
            {
                "mode": mode,
                "num_clients": n,
                "num_cpus_per_client": cpus,
                "concurrency": concurrency,
                "updates_per_s": float(result.throughput),
                "compute_ms_mean": float(np.mean(result.extras["compute_time_mean"]) * 1e3),
                "final_test_accuracy": (
                    float(result.final_test_accuracy) if result.train else None
                ),
            }
        )
        print(
            f"  {mode:>10} n={n} C={concurrency}: {result.throughput:7.1f} updates/s",
            flush=True,
        )
    loop_config = SystemConfig(
        clients=fleet([0.01] * 4),
        concurrency=4,
        algorithm=AlgorithmConfig(name="generalized_asyncsgd", lr=0.1, batch_size=32),
        seed=0,
    )
    loop = max(single_process_loop(loop_config, updates) for _ in range(5))
    print(f"  single-process loop: {loop:7.1f} updates/s", flush=True)
    return {"ray": rows, "single_process_updates_per_s": loop, "num_updates": updates}


# --------------------------------------------------------------------------- 3. bare Ray


@ray.remote
class BareWorker:
    """A bare-Ray parameter-server worker: one gradient per call, weights passed inline."""

    def __init__(self, config_dict: dict[str, Any]) -> None:
        torch.set_num_threads(1)
        config = SystemConfig.from_dict(config_dict)
        self.workload = build_workload(config)
        self.work = make_strategy(config.algorithm).client_work()
        self.computer = self.workload.make_computer()
        self.rngs = run_generators(config.seed, config.num_clients).minibatch

    def compute(self, params: np.ndarray, client: int, version: int) -> tuple[Any, ...]:
        x, y = self.workload.client_data(client)
        out = run_client_work(self.computer, self.work, params, x, y, self.rngs[client])
        return client, version, out.payload, float(out.loss), int(out.num_samples)


def bare_ray_ps(config: SystemConfig, workers: list[Any], updates: int) -> float:
    """Updates per second of a minimal async parameter server on bare Ray.

    The driver keeps ``C`` calls in flight over the worker actors (round robin), waits for
    any one with ``ray.wait``, applies the same strategy the runtime uses and sends the
    current weights inline with the replacement call to a uniformly drawn client: the
    runtime's workload with none of its bookkeeping (no per-client FIFO, no statistics,
    no checkpoints, no server actor).
    """
    n = config.num_clients
    strategy = make_strategy(config.algorithm)
    strategy.bind(n, np.full(n, 1.0 / n))
    workload = build_workload(config)
    params = np.array(workload.initial_params, dtype=np.float32)
    rng = np.random.default_rng(config.seed)
    pending = [
        workers[k % len(workers)].compute.remote(params, int(rng.integers(n)), 0)
        for k in range(config.concurrency)
    ]
    version = 0
    dispatched = config.concurrency
    start = time.perf_counter()
    while version < updates:
        done, pending = ray.wait(pending, num_returns=1)
        client, base, payload, loss, num = ray.get(done[0])
        result = ClientResult(
            task_id=version,
            client_id=client,
            base_version=base,
            current_version=version,
            payload=payload,
            loss=loss,
            num_samples=num,
        )
        new = strategy.apply(params, result)
        if new is not None:
            params = np.asarray(new, dtype=np.float32)
            version += 1
        worker = workers[dispatched % len(workers)]
        pending.append(worker.compute.remote(params, int(rng.integers(n)), version))
        dispatched += 1
    elapsed = time.perf_counter() - start
    ray.get(pending)
    return updates / elapsed


def bench_vs_bare_ray(quick: bool, max_load: float) -> dict[str, Any]:
    """raysync against the bare-Ray reference, alternating, on the identical workload.

    Workload (issue 17): 100 logical clients multiplexed on a pool of 2 executors,
    Generalized AsyncSGD with logistic regression on digits (batch 32, lr 0.1), 4 tasks in
    flight, no emulation; the reference runs 2 worker actors with the same 4 calls in
    flight. Three alternating repetitions, medians and their ratio. Skipped (with the
    reason recorded) when the 1-minute load average exceeds ``max_load``: on a saturated
    machine the two would measure the other jobs, not themselves.
    """
    load = os.getloadavg()[0]
    if load > max_load:
        print(f"  skipped: 1-min load average {load:.1f} > {max_load:g}", flush=True)
        return {"skipped": f"1-min load average {load:.1f} > {max_load:g}"}
    from raysync.config import RuntimeConfig

    updates = 1500 if quick else 4000
    n, concurrency, executors, cpus = 100, 4, 2, 0.5
    config = SystemConfig(
        clients=fleet([0.01] * n, num_cpus=cpus),
        concurrency=concurrency,
        routing=RoutingConfig(kind="uniform"),
        algorithm=AlgorithmConfig(name="generalized_asyncsgd", lr=0.1, batch_size=32),
        runtime=RuntimeConfig(mode="pool", executors_per_tier=executors),
        run=RunConfig(num_updates=updates, time_scale=0.0, train=True, eval_every_updates=None),
        seed=0,
    )
    ours: list[float] = []
    bare: list[float] = []
    for rep in range(3):
        ours.append(float(run(config).throughput))
        # The reference's actors exist only while it runs: both ask for the same CPUs.
        workers = [
            BareWorker.options(num_cpus=cpus).remote(config.to_dict())  # type: ignore[attr-defined]
            for _ in range(executors)
        ]
        bare_ray_ps(config, workers, 50)  # warm: actors built, workload loaded
        bare.append(bare_ray_ps(config, workers, updates))
        for worker in workers:
            ray.kill(worker)
        print(
            f"  rep {rep}: raysync {ours[-1]:7.1f}  bare Ray {bare[-1]:7.1f} updates/s",
            flush=True,
        )
    ratio = float(np.median(ours) / np.median(bare))
    print(f"  ratio raysync / bare Ray (medians): {ratio:.3f}", flush=True)
    return {
        "num_clients": n,
        "concurrency": concurrency,
        "executors": executors,
        "updates": updates,
        "raysync_updates_per_s": ours,
        "bare_ray_updates_per_s": bare,
        "ratio_of_medians": ratio,
        "load_average_1min_before": load,
        "load_average_1min_after": os.getloadavg()[0],
    }


# --------------------------------------------------------------------------- output


def plot(emulated: list[dict[str, Any]], speed: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = [f"{r['routing']}\nC={r['concurrency']}" for r in emulated]
    x = np.arange(len(emulated))
    ratio = np.array([r["throughput_ratio"] for r in emulated])
    ci = np.array([r["throughput_ratio_ci"] for r in emulated])
    ax1.errorbar(
        x, ratio, yerr=[ratio - ci[:, 0], ci[:, 1] - ratio], fmt="o", capsize=4,
        label="measured / closed form (99% CI)",
    )  # fmt: skip
    ax1.plot(
        x,
        [r["ratio_to_simulation"] for r in emulated],
        "s",
        label="measured / simulation (same seed)",
    )
    ax1.axhline(1.0, color="grey", lw=0.8)
    ax1.axhline(0.95, color="red", ls="--", lw=0.8, label="target 0.95")
    ax1.set_xticks(x, labels, fontsize=8)
    ax1.set_ylabel("throughput ratio")
    ax1.set_title("Emulated service times (4 clients, 5-50 ms)")
    ax1.legend(fontsize=8)
    rows = speed["ray"]
    names = [f"{r['mode']}\nn={r['num_clients']} C={r['concurrency']}" for r in rows]
    values = [r["updates_per_s"] for r in rows]
    names.append("single\nprocess")
    values.append(speed["single_process_updates_per_s"])
    colors = ["tab:blue" if r["mode"] == "train" else "tab:green" for r in rows] + ["tab:orange"]
    ax2.bar(range(len(values)), values, color=colors)
    ax2.set_xticks(range(len(values)), names, fontsize=8)
    ax2.set_ylabel("updates / s")
    ax2.set_title("No emulation: logistic regression on digits")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def markdown(emulated: list[dict[str, Any]], speed: dict[str, Any], machine: str) -> str:
    lines = [
        "| routing | C | predicted updates/s | measured (99% CI) | ratio | ratio to simulation "
        "| staleness (theory) | server lag |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in emulated:
        lo, hi = r["measured_throughput_ci"]
        lines.append(
            f"| {r['routing']} | {r['concurrency']} | {r['predicted_throughput']:.1f} | "
            f"{r['measured_throughput']:.1f} [{lo:.1f}, {hi:.1f}] | "
            f"{r['throughput_ratio']:.3f} | {r['ratio_to_simulation']:.3f} | "
            f"{r['mean_staleness']:.2f} ({r['predicted_mean_staleness']:.0f}) | "
            f"{r['lag_mean_s'] * 1e3:.1f} ms |"
        )
    lines += [
        "",
        "| no emulation | clients x CPUs | C | updates/s |",
        "|---|---|---|---|",
    ]
    for r in speed["ray"]:
        lines.append(
            f"| Ray, {r['mode']} | {r['num_clients']} x {r['num_cpus_per_client']:g} | "
            f"{r['concurrency']} | {r['updates_per_s']:.0f} |"
        )
    lines.append(
        f"| single-process loop, same calls | 1 | - | {speed['single_process_updates_per_s']:.0f} |"
    )
    vs = speed.get("vs_bare_ray")
    if vs and "skipped" in vs:
        lines += ["", f"raysync against bare Ray: not run ({vs['skipped']})."]
    elif vs:
        lines += [
            "",
            f"raysync against a bare-Ray parameter server, alternating in one run "
            f"({vs['num_clients']} logical clients on {vs['executors']} executors, "
            f"C = {vs['concurrency']}, logistic regression on digits, 3 repetitions): "
            f"raysync {np.median(vs['raysync_updates_per_s']):.0f} updates/s, bare Ray "
            f"{np.median(vs['bare_ray_updates_per_s']):.0f}; ratio "
            f"**{vs['ratio_of_medians']:.2f}** (1-min load {vs['load_average_1min_before']:.1f}).",
        ]
    lines += [
        "",
        f"Machine: {machine}; generated by `benchmarks/bench_runtime.py`. Emulated runs: "
        "4 clients with exponential service times of mean 5, 10, 25 and 50 ms, queue-only, "
        "`time_scale = 1`, about 30 s each; the prediction is the closed-form `Lambda(C)`. "
        "Speeds depend on machine load.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument(
        "--speed-only",
        action="store_true",
        help="rerun part 2 only, keeping part 1 from the existing JSON",
    )
    parser.add_argument(
        "--max-load",
        type=float,
        default=6.0,
        help="skip the bare-Ray comparison above this 1-minute load average",
    )
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    ray.init(include_dashboard=False, num_cpus=os.cpu_count(), log_to_driver=False)
    try:
        if args.speed_only:
            emulated = json.loads((RESULTS / "bench_runtime.json").read_text())["emulated"]
        else:
            print("1. emulated service times", flush=True)
            emulated = bench_emulated(args.quick)
        print("2. speed without emulation", flush=True)
        speed = bench_speed(args.quick)
        print("3. raysync against a bare-Ray parameter server (alternating)", flush=True)
        speed["vs_bare_ray"] = bench_vs_bare_ray(args.quick, args.max_load)
    finally:
        ray.shutdown()
    machine = (
        f"{os.cpu_count()} CPU cores, Python {platform.python_version()}, "
        f"ray {ray.__version__}, torch {torch.__version__}, load average at the end "
        f"{os.getloadavg()[0]:.1f}"
    )
    payload = {
        "machine": machine,
        "emulated": emulated,
        "throughput_ratio": {
            f"{r['routing']}/C={r['concurrency']}": r["throughput_ratio"] for r in emulated
        },
        "min_throughput_ratio": min(r["throughput_ratio"] for r in emulated),
        "target_throughput_ratio": 0.95,
        "speed": speed,
        "quick": args.quick,
    }
    (RESULTS / "bench_runtime.json").write_text(json.dumps(payload, indent=2))
    plot(emulated, speed, RESULTS / "bench_runtime.png")
    (RESULTS / "bench_runtime.md").write_text(markdown(emulated, speed, machine))
    print(markdown(emulated, speed, machine))
    ok = all(r["throughput_ratio"] >= 0.95 for r in emulated) and not math.isnan(
        payload["min_throughput_ratio"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
