"""Client updates per second: raysync's Ray runtime against Flower's simulation engine.

Run from raysync's own environment (``.venv/bin/python benchmarks/bench_flower.py``).
Flower (``flwr[simulation]``) pins its own Ray, so it lives in a separate virtual
environment, ``benchmarks/flower/.venv``, made by ``benchmarks/flower/setup_venv.sh`` when
missing; its side runs there as a subprocess (``benchmarks/flower/flower_clients.py``).

Both sides do the same unit of work on the same model, data and partitions: one client
update = one minibatch (32) stochastic gradient of multinomial logistic regression on the
client's IID partition of MNIST (raysync's ``build_workload``, seed 0, ``run_client_work``
with ``ClientWork(kind="gradient")``), returned to the server, which applies it.

* raysync: :func:`raysync_updates_per_second`, ``raysync.run`` with
  ``generalized_asyncsgd``, uniform routing, ``C`` tasks in flight (default 4 = 2 per core),
  ``run.time_scale = 0`` (no emulation: tasks last their compute time), no periodic
  evaluation. ``runtime.mode = "auto"``: up to 16 clients get one executor actor each
  (``num_cpus = cores / n``); larger fleets are multiplexed on a pool of 2 executors with
  ``num_cpus = cores / 2`` each (Flower's layout: one actor per core), the clients' state
  kept in the server. ``throughput`` = completions per wall second after the first 10 %.
* Flower: ``flwr.simulation.run_simulation`` with ``N`` virtual SuperNodes, a FedAvg-based
  ServerApp sampling ``K`` clients per round, ``client_resources = {"num_cpus": 1}`` (one
  ClientApp actor per core), start-up and the first rounds excluded (see flower_clients.py).

Writes ``benchmarks/results/bench_flower.{json,png,md}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FLOWER_DIR = ROOT / "benchmarks" / "flower"
FLOWER_VENV = FLOWER_DIR / ".venv"
FLOWER_PYTHON = FLOWER_VENV / "bin" / "python"
RESULTS = ROOT / "benchmarks" / "results"
CORES = os.cpu_count() or 1

DEFAULT_CONCURRENCY = 2 * CORES
DEFAULT_DATASET = "mnist"
#: Executors of raysync's pool mode: one per core, like Flower's ClientApp actors here.
POOL_EXECUTORS = CORES


# --------------------------------------------------------------------------- raysync side


def raysync_mode(num_clients: int, mode: str = "auto") -> str:
    """The runtime mode the benchmark uses for ``num_clients`` (``auto``: as raysync.run)."""
    from raysync.config import AUTO_PER_CLIENT_MAX

    if mode != "auto":
        return mode
    return "per_client" if num_clients <= AUTO_PER_CLIENT_MAX else "pool"


def raysync_config(
    num_clients: int,
    seconds: float,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    dataset: str = DEFAULT_DATASET,
    client_num_cpus: float | None = None,
    mode: str = "auto",
    executors_per_tier: int = POOL_EXECUTORS,
    seed: int = 0,
) -> Any:
    """The raysync ``SystemConfig`` of the benchmark (same workload as the Flower side)."""
    from raysync.config import (
        AlgorithmConfig,
        ClientSpec,
        DataConfig,
        ModelConfig,
        RoutingConfig,
        RunConfig,
        RuntimeConfig,
        SystemConfig,
    )

    mode = raysync_mode(num_clients, mode)
    if client_num_cpus is None:
        # Every executor must be alive at once: share the cores, rounded down to Ray's
        # resource granularity (1e-4) so that the sum never exceeds the cluster.
        executors = num_clients if mode == "per_client" else executors_per_tier
        client_num_cpus = math.floor(CORES / executors * 1e4) / 1e4
    spec = ClientSpec(num_cpus=client_num_cpus)
    return SystemConfig(
        clients=tuple(spec for _ in range(num_clients)),
        concurrency=concurrency,
        routing=RoutingConfig(kind="uniform"),
        algorithm=AlgorithmConfig(name="generalized_asyncsgd", lr=0.05, batch_size=32),
        data=DataConfig(dataset=dataset, partition="iid"),
        model=ModelConfig(name="logreg"),
        run=RunConfig(
            time_budget=seconds,
            time_scale=0.0,
            eval_every_updates=None,
            eval_every_seconds=None,
        ),
        runtime=RuntimeConfig(mode=mode, executors_per_tier=executors_per_tier),
        seed=seed,
    )


def raysync_updates_per_second(
    num_clients: int,
    seconds: float,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    dataset: str = DEFAULT_DATASET,
    client_num_cpus: float | None = None,
    mode: str = "auto",
    startup_timeout: float = 900.0,
) -> dict[str, Any]:
    """Client updates per second of ``raysync.run`` on the benchmark workload.

    Args:
        num_clients: ``n`` logical clients.
        seconds: Wall-clock length of the run loop (``run.time_budget`` with
            ``time_scale = 0``).
        concurrency: ``C``, tasks kept in flight.
        dataset: ``mnist`` or ``digits``.
        client_num_cpus: CPUs per executor actor (default: the cores shared by the
            executors).
        mode: ``auto`` (one executor per client up to 16 clients, else a pool of one
            executor per core), ``per_client`` or ``pool``.
        startup_timeout: Seconds ``raysync.run`` waits for the executors (one Python
            process each: about 1.5 CPU-seconds and 150 MB apiece on this machine).

    Returns:
        ``updates_per_s`` (``RunResult.throughput``: completions per wall second after the
        first 10 % of the run), start-up and run times, and the run's details.
    """
    import ray

    import raysync
    from raysync.workload import build_workload

    config = raysync_config(
        num_clients,
        seconds,
        concurrency=concurrency,
        dataset=dataset,
        client_num_cpus=client_num_cpus,
        mode=mode,
    )
    t0 = time.perf_counter()
    workload = build_workload(config)
    build_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    # A private local Ray instance: address="local" never joins a cluster that someone else
    # started on this machine with `ray start` (ray.init() alone would, and then rejects
    # num_cpus). raysync.run reuses the initialised session; we shut it down.
    ray.init(
        address="local", num_cpus=CORES, include_dashboard=False, logging_level=logging.WARNING
    )
    try:
        result = raysync.run(config, workload=workload, startup_timeout=startup_timeout)
    finally:
        ray.shutdown()
    total = time.perf_counter() - t1
    compute = np.asarray(result.extras.get("compute_time_mean", []), dtype=np.float64)
    service = np.asarray(result.extras.get("service_time_mean", []), dtype=np.float64)
    completed = np.asarray(result.completed, dtype=np.float64)
    busy = float(np.nansum(compute * completed)) if compute.size else math.nan
    return {
        "framework": "raysync",
        "raysync_version": raysync.__version__,
        "ray_version": ray.__version__,
        "api": "raysync.run(SystemConfig, workload=build_workload(config))",
        "num_clients": num_clients,
        "concurrency": concurrency,
        "runtime_mode": result.extras["runtime_mode"],
        "num_executors": result.extras["num_executors"],
        "executor_num_cpus": config.clients[0].num_cpus,
        "dataset": dataset,
        "model": "logreg",
        "batch_size": 32,
        "algorithm": "generalized_asyncsgd",
        "routing": "uniform",
        "time_scale": 0.0,
        "workload_build_s": build_s,
        # raysync.run = connect + start actors + run loop + shutdown; the loop is `elapsed`.
        "startup_and_shutdown_s": total - result.elapsed,
        "measured_s": result.elapsed,
        "updates": int(result.num_completions),
        "window_updates": int(result.window_updates),
        "updates_per_s": float(result.throughput),
        "updates_per_s_ci": [float(v) for v in result.throughput_ci],
        "updates_per_s_whole_run": result.num_completions / result.elapsed,
        "compute_s_mean": float(np.nanmean(compute)) if compute.size else math.nan,
        "service_s_mean": float(np.nanmean(service)) if service.size else math.nan,
        # Share of the cores spent inside the gradient computation over the whole run.
        "compute_busy_fraction": busy / (result.elapsed * CORES),
        "mean_staleness": float(result.mean_staleness),
        "final_test_accuracy": float(result.final_test_accuracy),
        "final_test_loss": float(result.final_test_loss),
    }


# --------------------------------------------------------------------------- Flower side


def ensure_flower_venv() -> None:
    """Create ``benchmarks/flower/.venv`` when missing (setup_venv.sh is idempotent)."""
    if FLOWER_PYTHON.is_file():
        return
    print(f"[bench_flower] creating the Flower venv at {FLOWER_VENV}", flush=True)
    subprocess.run(["bash", str(FLOWER_DIR / "setup_venv.sh")], check=True)


def run_flower(
    num_clients: list[int],
    *,
    seconds: float,
    clients_per_round: int,
    num_cpus: float,
    dataset: str,
    out: Path,
    timeout: float,
    warmup_rounds: int = 3,
) -> list[dict[str, Any]]:
    """Run flower_clients.py in the Flower venv; return its per-N results."""
    ensure_flower_venv()
    cmd = [
        str(FLOWER_PYTHON),
        str(FLOWER_DIR / "flower_clients.py"),
        "--num-clients",
        *map(str, num_clients),
        "--clients-per-round",
        str(clients_per_round),
        "--num-cpus",
        str(num_cpus),
        "--ray-num-cpus",
        str(CORES),
        "--seconds",
        str(seconds),
        "--dataset",
        dataset,
        "--config-timeout",
        str(timeout),
        "--warmup-rounds",
        str(warmup_rounds),
        "--out",
        str(out),
    ]
    # The child must not see raysync's venv (its Ray, its site-packages).
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    subprocess.run(cmd, cwd=ROOT, env=env, check=False)
    if not out.is_file():
        raise RuntimeError(f"flower_clients.py wrote no results to {out}")
    return json.loads(out.read_text())["flower"]


# --------------------------------------------------------------------------- report

# Measured: each raysync client actor is a Python process with torch imported, 0.17-0.21 GB
# resident (Ray's OOM report when 100 of them did not fit next to other jobs in 24 GB).
MB_PER_RAYSYNC_ACTOR = 210
# The benchmark machine is shared: never plan to take more than this share of its memory.
MAX_MEMORY_SHARE = 0.6


def memory_mb() -> tuple[float, float]:
    """``(available, total)`` memory in MB from /proc/meminfo (inf when unknown)."""
    info: dict[str, float] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            info[key] = int(rest.split()[0]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return info.get("MemAvailable", math.inf), info.get("MemTotal", math.inf)


def _short_error(text: str, limit: int = 400) -> str:
    first = text.strip().splitlines()[0] if text.strip() else text
    return first if len(first) <= limit else first[: limit - 3] + "..."


def _fmt(v: Any, spec: str = ".0f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return format(v, spec)


def _ratio(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}x"


def write_plot(rows: list[dict[str, Any]], settings: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(rows))
    series = [
        (
            "raysync_updates_per_s",
            f"raysync (C = {settings['concurrency']}; pool mode above 16 clients)",
            "#1f77b4",
        ),
        (
            "flower_updates_per_s",
            f"Flower, K = {settings['clients_per_round']} per round",
            "#ff7f0e",
        ),
        (
            "flower_bigk_updates_per_s",
            f"Flower, K = min(N, {settings['flower_big_k']}) per round",
            "#ffbb78",
        ),
    ]
    if not settings["flower_big_k"]:
        series = series[:2]
    width = 0.27
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    top = 1.0
    for j, (key, label, color) in enumerate(series):
        vals = [r.get(key) or 0.0 for r in rows]
        top = max(top, *vals)
        bars = ax.bar(
            x + (j - 1) * width,
            [v if v > 0 else np.nan for v in vals],
            width,
            label=label,
            color=color,
        )
        for bar, v in zip(bars, vals, strict=True):
            ax.annotate(
                f"{v:.0f}" if v > 0 else "not run",
                (bar.get_x() + bar.get_width() / 2, v if v > 0 else 1.0),
                ha="center",
                va="bottom",
                fontsize=7,
                rotation=0 if v > 0 else 90,
            )
    for i, r in enumerate(rows):
        if r.get("ratio"):
            ax.annotate(
                f"raysync / Flower(K={settings['clients_per_round']}) = {r['ratio']:.1f}x",
                (x[i], top * 1.6),
                ha="center",
                fontsize=7,
            )
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.set_xticks(x, [str(r["num_clients"]) for r in rows])
    ax.set_xlabel("clients N")
    ax.set_ylabel("client updates per second (log)")
    ax.set_yscale("log")
    ax.set_ylim(1.0, top * 4)
    ax.set_title(
        f"One minibatch gradient per update, logreg on MNIST, {settings['cores']} CPU cores"
    )
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _scan_evidence(bigk: dict[int, dict[str, Any]]) -> str:
    """Measured round times at the same K and growing N, when the big-K series has them."""
    by_k: dict[int, list[tuple[int, float]]] = {}
    for n, r in sorted(bigk.items()):
        by_k.setdefault(int(r["clients_per_round"]), []).append((n, r["round_s_mean"]))
    for k, pts in sorted(by_k.items(), reverse=True):
        if len(pts) >= 2:
            txt = " and ".join(f"{t * 1e3:.0f} ms at N = {n}" for n, t in pts)
            return f" (at K = {k} a round took {txt})"
    return ""


def explain(report: dict[str, Any]) -> str:
    """The explanation, with the measured numbers filled in."""
    s = report["settings"]
    k = s["clients_per_round"]
    flower = {int(r["num_clients"]): r for r in report["flower"] if "error" not in r}
    bigk = {int(r["num_clients"]): r for r in report["flower_bigk"] if "error" not in r}
    ray_ = {int(r["num_clients"]): r for r in report["raysync"] if "error" not in r}
    facts: list[str] = []
    for n in sorted(flower):
        f = flower[n]
        facts.append(
            f"N = {n}: a Flower round of {f['clients_per_round']} updates took "
            f"{f['round_s_mean'] * 1e3:.0f} ms (p95 {f['round_s_p95'] * 1e3:.0f} ms) for "
            f"{f['compute_s_mean'] * 1e3:.2f} ms of gradient compute per update "
            f"({f['clientapp_s_mean'] * 1e3:.2f} ms per whole ClientApp call), so its "
            f"{f['num_actors']} actors computed {f['compute_busy_fraction']:.1%} of the time"
        )
        if n in bigk and bigk[n]["clients_per_round"] != f["clients_per_round"]:
            b = bigk[n]
            facts[-1] += (
                f"; with K = {b['clients_per_round']} the round took "
                f"{b['round_s_mean'] * 1e3:.0f} ms and throughput rose to "
                f"{b['updates_per_s']:.0f}/s ({b['compute_busy_fraction']:.1%} busy)"
            )
        if n in ray_:
            g = ray_[n]
            facts[-1] += (
                f"; raysync turned {g['updates_per_s']:.0f} updates/s with "
                f"{g['compute_s_mean'] * 1e3:.2f} ms of compute each, its cores "
                f"{g['compute_busy_fraction']:.1%} busy computing"
            )
    return (
        "The unit of work is tiny (about a millisecond of compute per update), so the "
        "benchmark measures each system's per-update overhead rather than the model. "
        "Measured: " + " ".join(f + "." for f in facts) + " "
        "Flower's rounds are synchronous: the ServerApp pushes K messages and blocks until "
        "all K replies are in before it aggregates and samples the next round, so each "
        "round pays for its slowest client and for the engine's fixed latency. In flwr "
        f"{report['versions']['flwr']} that latency is polling: the Simulation Runtime's "
        "dispatcher thread scans the in-memory link state for every SuperNode's pending "
        "messages and then sleeps 0.1 s (`vce_api.add_messages_to_queue`), and "
        "`InMemoryGrid.send_and_receive` sleeps 0.1 s between pulls (`pull_interval`). "
        "A round therefore costs at least one to two 0.1 s ticks however little the clients "
        f"compute, which caps Flower at roughly K / 0.1-0.2 s (K = {k}: about 50-100 "
        "updates/s); on top of that the dispatcher's per-SuperNode scan (each "
        "`get_message_ins` walks every stored message) costs more as N and K grow"
        + _scan_evidence(bigk)
        + ". Each ClientApp call is also a Ray task on a small actor "
        "pool (one actor per `client_resources.num_cpus`), submitted and awaited with a "
        "blocking `ray.get` per message and carrying the Message and Context both ways. "
        "Raising K amortises the ticks (see the K = min(N, "
        f"{s['flower_big_k']}) column) but not the per-message cost, and changes the "
        "algorithm (more clients per synchronous step). raysync has no rounds: the server "
        "actor keeps C tasks in flight and dispatches a new one the moment any update "
        "arrives (asyncio, no polling), so the client actors are never idle waiting for a "
        "round barrier and throughput is bound by Ray's per-task cost plus the gradient. "
        "The systems do not run the same algorithm: Flower here is synchronous FedSGD (no "
        "staleness), raysync applies gradients asynchronously (mean staleness "
        + ", ".join(f"{g['mean_staleness']:.1f}" for g in ray_.values())
        + f" with C = {s['concurrency']}); "
        "what is compared is how many client updates each turns around per second on the "
        "same hardware, model and data. Layout: up to 16 clients raysync gives each "
        "client its own executor actor (num_cpus = cores / N); above that "
        "(`runtime.mode = \"auto\"`) it multiplexes the N logical clients on a pool of one "
        "executor actor per core, like Flower's ClientApp actors, and keeps every "
        "client's state (FIFO queue, service-time stream, minibatch seeds, data indices) "
        "in the server actor; the executors map one shared read-only copy of the "
        "training set from Ray's object store and gather each minibatch's rows by index, "
        "so memory and start-up no longer grow with N (one actor process per client "
        "took 0.17-0.21 GB each, which is why N = 100 ran out of memory before the pool "
        "existed). The pool keeps raysync's advantage: an executor is an asyncio actor "
        "that computes in a bounded thread pool, so the C tasks in flight overlap Ray's "
        "per-call latency with computation, and each update still costs exactly one "
        "remote call."
        + _pool_note(ray_)
    )


def _pool_note(ray_: dict[int, dict[str, Any]]) -> str:
    """Measured per-update compute in the pool runs next to the per-client run."""
    parts = [
        f"N = {n}: {r['runtime_mode']}, {r['num_executors']} executor actors, "
        f"{r['compute_s_mean'] * 1e3:.2f} ms of compute per update"
        for n, r in sorted(ray_.items())
        if "runtime_mode" in r
    ]
    return (" Measured layouts: " + "; ".join(parts) + ".") if parts else ""


def write_markdown(report: dict[str, Any], path: Path) -> None:
    rows = report["rows"]
    s = report["settings"]
    v = report["versions"]
    k = s["clients_per_round"]
    bk = s["flower_big_k"]
    lines = [
        "# raysync vs Flower: client updates per second",
        "",
        "Generated by `benchmarks/bench_flower.py` (raysync's venv) with "
        "`benchmarks/flower/flower_clients.py` (Flower's venv, made by "
        "`benchmarks/flower/setup_venv.sh`). Reproduce: `.venv/bin/python "
        "benchmarks/bench_flower.py` (about 15 minutes; `--skip-flower` / "
        "`--skip-raysync` reuse the previous JSON's side).",
        "",
        f"Machine: {s['cores']} CPU cores, no GPU, shared with other jobs while measuring "
        "(absolute numbers are noisy). Same workload on both sides: multinomial logistic "
        f"regression ({s['num_params']} parameters) on MNIST, IID partition over N clients "
        "(raysync's `build_workload`, seed 0); one client update = one minibatch gradient "
        "(batch 32) at the model the client received (raysync's `run_client_work`), "
        "applied by the server with lr 0.05.",
        "",
        f"* **raysync** {v['raysync']} on Ray {v['raysync_ray']}: `raysync.run`, "
        f"generalized_asyncsgd, uniform routing, C = {s['concurrency']} tasks in flight "
        f"(2 per core), `run.time_scale = 0`, "
        f"`runtime.mode = \"{s.get('raysync_mode', 'auto')}\"`: "
        "one executor actor per client (num_cpus = cores / N) for N <= 16, else the N "
        f"logical clients multiplexed on a pool of {s.get('pool_executors', 2)} executor "
        "actors (num_cpus = 1 each, as Flower's ClientApp actors), no periodic evaluation, "
        f"{s['seconds']:g} s run; updates/s = "
        "`RunResult.throughput` (first 10 % dropped). Start-up = everything in "
        "`raysync.run` outside its run loop.",
        f"* **Flower** {v['flwr']} (`flwr[simulation]` pins Ray {v['flower_ray']}; separate "
        "venv): `flwr.simulation.run_simulation(server_app, client_app, num_supernodes=N, "
        "backend_config)`; ServerApp `@main` loop with a FedAvg subclass "
        "(`configure_train` samples K nodes, fraction_train = K/N; "
        "`Grid.send_and_receive`; `aggregate_train` averages the gradients with FedAvg's "
        "weighted average, then one SGD step), ClientApp `@train`; client_resources = "
        f"{{num_cpus: {s['flower_num_cpus']:g}, num_gpus: 0}} = {s['flower_actors']} "
        f"ClientApp actors on {s['cores']} cores (num_cpus 0.5 / 4 actors measured no "
        f"better). Start-up (Ray, actor pool, first data load) and the first "
        f"{s['flower_warmup_rounds']} rounds are excluded; updates/s = train replies in "
        f"the next {s['seconds']:g} s / wall seconds.",
        "",
        f"| N | raysync updates/s | Flower updates/s, K = {k} | raysync / Flower "
        f"(K = {k}) | Flower updates/s, K = min(N, {bk}) | raysync / Flower (K = min(N, "
        f"{bk})) | Flower round ms (K = {k}) | start-up s: raysync / Flower |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['num_clients']} | {_fmt(r['raysync_updates_per_s'])} | "
            f"{_fmt(r['flower_updates_per_s'])} | {_ratio(r['ratio'])} | "
            f"{_fmt(r['flower_bigk_updates_per_s'])} | {_ratio(r['ratio_vs_bigk'])} | "
            f"{_fmt(r['flower_round_ms'])} | {_fmt(r['raysync_startup_s'], '.1f')} / "
            f"{_fmt(r['flower_startup_s'], '.1f')} |"
        )
    lines += [
        "",
        "![updates per second](bench_flower.png)",
        "",
        "## Why",
        "",
        report["explanation"],
        "",
    ]
    if report["notes"]:
        lines += ["## Notes", ""] + [f"* {n}" for n in report["notes"]] + [""]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-clients", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--seconds", type=float, default=40.0, help="measured seconds per run")
    p.add_argument("--clients-per-round", type=int, default=10, help="Flower's K")
    p.add_argument(
        "--flower-big-k",
        type=int,
        default=100,
        help="second Flower series with K = min(N, this) (0: skip)",
    )
    p.add_argument("--flower-num-cpus", type=float, default=1.0)
    p.add_argument("--flower-warmup-rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="raysync C")
    p.add_argument("--dataset", default=DEFAULT_DATASET, choices=("mnist", "digits"))
    p.add_argument(
        "--raysync-mode",
        default="auto",
        choices=("auto", "per_client", "pool"),
        help="raysync runtime.mode (auto: one executor per client up to 16 clients, "
        "else a pool of one executor per core)",
    )
    p.add_argument(
        "--raysync-max-clients",
        type=int,
        default=100,
        help="largest N run on raysync in per_client mode (one actor process per client)",
    )
    p.add_argument("--skip-flower", action="store_true", help="reuse the previous JSON's")
    p.add_argument("--skip-raysync", action="store_true", help="reuse the previous JSON's")
    p.add_argument("--flower-timeout", type=float, default=900.0, help="per configuration")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    args = p.parse_args(argv)

    out_dir: Path = args.out_dir
    (out_dir / "tmp").mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "bench_flower.json"
    previous = json.loads(json_path.read_text()) if json_path.is_file() else {}

    def by_n(items: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
        return {int(r["num_clients"]): r for r in items}

    flower: dict[int, dict[str, Any]] = {}
    bigk: dict[int, dict[str, Any]] = {}
    if args.skip_flower:
        flower = by_n(previous.get("flower", []))
        bigk = by_n(previous.get("flower_bigk", []))
    else:
        common = dict(
            seconds=args.seconds,
            num_cpus=args.flower_num_cpus,
            dataset=args.dataset,
            timeout=args.flower_timeout,
            warmup_rounds=args.flower_warmup_rounds,
        )
        flower = by_n(
            run_flower(
                args.num_clients,
                clients_per_round=args.clients_per_round,
                out=out_dir / "tmp" / "flower.json",
                **common,
            )
        )
        for n in args.num_clients:
            big = min(n, args.flower_big_k)
            if args.flower_big_k <= 0:
                continue
            if big == min(n, args.clients_per_round):
                bigk[n] = flower[n]
                continue
            bigk.update(
                by_n(
                    run_flower(
                        [n],
                        clients_per_round=big,
                        out=out_dir / "tmp" / f"flower_k{big}_n{n}.json",
                        **common,
                    )
                )
            )

    ray_: dict[int, dict[str, Any]] = {}
    if args.skip_raysync:
        ray_ = by_n(previous.get("raysync", []))
    else:
        for n in args.num_clients:
            mode = raysync_mode(n, args.raysync_mode)
            actors = n if mode == "per_client" else POOL_EXECUTORS
            need = actors * MB_PER_RAYSYNC_ACTOR + 2000
            available, total = memory_mb()
            allowed = min(available, MAX_MEMORY_SHARE * total)
            reason = None
            if mode == "per_client" and n > args.raysync_max_clients:
                reason = (
                    f"not run: per_client mode starts one Ray actor process per client; N = "
                    f"{n} is above --raysync-max-clients = {args.raysync_max_clients} for "
                    f"{CORES} cores (use --raysync-mode pool)"
                )
            elif need > allowed:
                reason = (
                    f"not run: {actors} executor actors (about {MB_PER_RAYSYNC_ACTOR} MB "
                    f"each) need about {need / 1024:.0f} GiB; this machine allows "
                    f"{allowed / 1024:.1f} GiB (available, at most {MAX_MEMORY_SHARE:.0%} of "
                    f"{total / 1024:.0f} GiB: it is shared)"
                )
            if reason:
                ray_[n] = {"framework": "raysync", "num_clients": n, "error": reason}
                print(f"[raysync] N={n}: {reason}", flush=True)
                continue
            print(f"[raysync] N={n} C={args.concurrency} mode={mode}", flush=True)
            try:
                ray_[n] = raysync_updates_per_second(
                    n, args.seconds, concurrency=args.concurrency, dataset=args.dataset, mode=mode
                )
                print(
                    f"[raysync] N={n}: {ray_[n]['updates_per_s']:.1f} updates/s (start-up + "
                    f"shutdown {ray_[n]['startup_and_shutdown_s']:.1f} s)",
                    flush=True,
                )
            except Exception as exc:  # report it, keep the other sizes
                ray_[n] = {
                    "framework": "raysync",
                    "num_clients": n,
                    "error": _short_error(f"{type(exc).__name__}: {exc}"),
                }
                print(f"[raysync] N={n}: FAILED {ray_[n]['error']}", flush=True)

    def ok(d: dict[str, Any] | None) -> float | None:
        return d.get("updates_per_s") if d and "error" not in d else None

    rows: list[dict[str, Any]] = []
    side_notes: list[str] = []
    if args.skip_flower and not args.skip_raysync:
        side_notes.append(
            f"raysync re-measured on {time.strftime('%Y-%m-%d')}, Flower's side reused from "
            "the previous run (`--skip-flower`): the two sides ran at different times on a "
            "machine shared with other jobs (compare each side's compute ms per update to "
            "see the load: the gradient itself is the same code)"
        )
    elif args.skip_raysync:
        side_notes = list(previous.get("side_notes", []))
    notes: list[str] = list(side_notes)
    for n in args.num_clients:
        f, b, g = flower.get(n), bigk.get(n), ray_.get(n)
        fu, bu, gu = ok(f), ok(b), ok(g)
        rows.append(
            {
                "num_clients": n,
                "raysync_updates_per_s": gu,
                "flower_updates_per_s": fu,
                "flower_clients_per_round": f.get("clients_per_round") if f else None,
                "ratio": gu / fu if gu and fu else None,
                "flower_bigk_updates_per_s": bu,
                "flower_bigk_clients_per_round": b.get("clients_per_round") if b else None,
                "ratio_vs_bigk": gu / bu if gu and bu else None,
                "flower_round_ms": f["round_s_mean"] * 1e3 if fu and f is not None else None,
                "flower_startup_s": f["startup_s"] if fu and f is not None else None,
                "raysync_startup_s": g["startup_and_shutdown_s"] if gu and g is not None else None,
            }
        )
        for side, d in (
            ("raysync", g),
            (f"Flower K={args.clients_per_round}", f),
            ("Flower big K", b),
        ):
            if d and d.get("error"):
                d["error"] = _short_error(str(d["error"]))
                notes.append(f"N = {n}, {side}: {d['error']}")

    import ray

    import raysync

    any_f = next((r for r in [*flower.values(), *bigk.values()] if "error" not in r), {})
    report: dict[str, Any] = {
        "versions": {
            "raysync": raysync.__version__,
            "raysync_ray": ray.__version__,
            "flwr": any_f.get("flwr_version"),
            "flower_ray": any_f.get("ray_version"),
            "flower_torch": any_f.get("torch_version"),
            "python": platform.python_version(),
        },
        "settings": {
            "cores": CORES,
            "seconds": args.seconds,
            "dataset": args.dataset,
            "model": "logreg",
            "batch_size": 32,
            "num_params": any_f.get("num_params", 7850),
            "concurrency": args.concurrency,
            "raysync_mode": args.raysync_mode,
            "pool_executors": POOL_EXECUTORS,
            "clients_per_round": args.clients_per_round,
            "flower_big_k": args.flower_big_k,
            "flower_num_cpus": args.flower_num_cpus,
            "flower_actors": int(CORES / args.flower_num_cpus),
            "flower_warmup_rounds": args.flower_warmup_rounds,
            "flower_api": any_f.get("api"),
        },
        "rows": rows,
        "raysync": [ray_[n] for n in args.num_clients if n in ray_],
        "flower": [flower[n] for n in args.num_clients if n in flower],
        "flower_bigk": [bigk[n] for n in args.num_clients if n in bigk],
        "notes": notes,
        "side_notes": side_notes,
    }
    report["explanation"] = explain(report)
    json_path.write_text(json.dumps(report, indent=2))
    write_plot(rows, report["settings"], out_dir / "bench_flower.png")
    write_markdown(report, out_dir / "bench_flower.md")
    for r in rows:
        print(
            f"N={r['num_clients']:>5}: raysync {_fmt(r['raysync_updates_per_s'])}/s, Flower "
            f"{_fmt(r['flower_updates_per_s'])}/s (K={r['flower_clients_per_round']}), "
            f"{_fmt(r['flower_bigk_updates_per_s'])}/s (K={r['flower_bigk_clients_per_round']})"
            f", ratio {_ratio(r['ratio'])} / {_ratio(r['ratio_vs_bigk'])}",
            flush=True,
        )
    print(f"wrote {json_path} and bench_flower.png / bench_flower.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
