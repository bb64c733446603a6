"""10,000 logical clients on a 2-core machine: throughput against the theory, flat memory.

Claims measured (results in ``benchmarks/results/bench_scale.{json,png,md}``):

1. **Throughput.** 10,000 logical clients in three resource tiers (fast / medium / slow:
   emulated exponential service times of mean 0.5, 2 and 8 s; each tier requests its own
   custom resource, ``tier_fast`` / ``tier_mid`` / ``tier_slow``, and gets its own pool of
   ``--executors-per-tier`` executor actors) run queue-only with ``C`` tasks in flight and
   uniform routing. The measured updates per second (``RunResult.throughput``, first 10 %
   dropped, 99 % batch-means interval) are compared with the closed form ``Lambda(C)``
   (exact for exponential service times); target ratio within 5 %.
2. **Memory.** The resident memory (RSS) of the driver plus every process of the local Ray
   instance it started (GCS, raylet, agents, server and executor actors) is sampled every
   ``--sample-every`` seconds with psutil over the whole run; reported: peak, and the
   least-squares slope of the total over time after a warm-up (first 20 % of the run
   dropped), in MB per minute. Flat memory means the slope is ~0 (no growth with the
   number of updates).

Usage::

    .venv/bin/python benchmarks/bench_scale.py --minutes 10      # the full run
    .venv/bin/python benchmarks/bench_scale.py --minutes 1       # a quick check
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
CORES = os.cpu_count() or 1

#: (name, custom resource, mean service time in seconds, share of the clients)
TIERS = (
    ("fast", "tier_fast", 0.5, 0.2),
    ("mid", "tier_mid", 2.0, 0.5),
    ("slow", "tier_slow", 8.0, 0.3),
)


def scale_config(
    num_clients: int, concurrency: int, seconds: float, executors_per_tier: int, seed: int = 0
) -> Any:
    """The benchmark's system: ``num_clients`` clients in three tiers, queue-only."""
    from raysync.config import (
        ClientSpec,
        RoutingConfig,
        RunConfig,
        RuntimeConfig,
        ServiceTimeSpec,
        SystemConfig,
    )

    clients: list[Any] = []
    for j, (name, resource, mean, share) in enumerate(TIERS):
        count = round(share * num_clients) if j < len(TIERS) - 1 else num_clients - len(clients)
        spec = ClientSpec(
            service_time=ServiceTimeSpec(kind="exponential", mean=mean),
            num_cpus=0.1,
            resources={resource: 1},
            name=name,
        )
        clients.extend([spec] * count)
    return SystemConfig(
        clients=tuple(clients),
        concurrency=concurrency,
        routing=RoutingConfig(kind="uniform"),
        run=RunConfig(
            time_budget=seconds,
            num_updates=None,
            time_scale=1.0,
            train=False,
            eval_every_updates=None,
        ),
        runtime=RuntimeConfig(mode="pool", executors_per_tier=executors_per_tier),
        seed=seed,
    )


def _role(proc: psutil.Process, me: psutil.Process) -> str:
    """A process's role: driver, gcs_server, raylet, ServerActor, ExecutorActor, ..."""
    if proc.pid == me.pid:
        return "driver"
    name = proc.name()
    if name.startswith("ray::"):
        return name[5:].split(".")[0]
    if name == "python":
        cmd = " ".join(proc.cmdline()[1:3])
        for key in ("dashboard", "log_monitor", "monitor", "agent"):
            if key in cmd:
                return f"python ({key})"
        return "python (other)"
    return name


class RssSampler:
    """Samples the RSS of this process and all its descendants every ``every`` seconds."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.samples: list[tuple[float, float, int]] = []  # (seconds, MB, processes)
        self.roles: list[tuple[float, dict[str, float]]] = []  # (seconds, MB per role)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._t0 = time.perf_counter()
        self._names: dict[int, str] = {}

    def clock(self) -> float:
        """Seconds on the sampler's clock."""
        return time.perf_counter() - self._t0

    def sample(self, roles: dict[str, float] | None = None) -> tuple[float, int]:
        me = psutil.Process()
        total, count = 0, 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                rss = proc.memory_info().rss
                if roles is not None:
                    # A worker is "IDLE" until it hosts an actor; keep the last real role.
                    role = _role(proc, me)
                    if role in ("IDLE", "python (other)"):
                        role = self._names.get(proc.pid, role)
                    else:
                        self._names[proc.pid] = role
                    roles[role] = roles.get(role, 0.0) + rss / 2**20
            except psutil.Error:
                continue
            total += rss
            count += 1
        return total / 2**20, count

    def _loop(self) -> None:
        while not self._stop.is_set():
            roles: dict[str, float] = {}
            mb, count = self.sample(roles)
            now = time.perf_counter() - self._t0
            self.samples.append((now, mb, count))
            self.roles.append((now, roles))
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def slope_mb_per_min(samples: list[tuple[float, float, int]], start: float, end: float) -> float:
    """Least-squares slope of RSS over time (MB per minute) of the samples in ``[start, end]``."""
    pts = np.array([(t, mb) for t, mb, _ in samples if start <= t <= end], dtype=np.float64)
    if len(pts) < 3:
        return math.nan
    t, mb = pts[:, 0], pts[:, 1]
    return float(np.polyfit(t, mb, 1)[0] * 60.0)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    import raysync
    from raysync.queueing import ClosedNetwork, analyze

    seconds = 60.0 * args.minutes
    load_start = os.getloadavg()[0]
    config = scale_config(args.num_clients, args.concurrency, seconds, args.executors_per_tier)
    t_theory = time.perf_counter()
    theory = analyze(ClosedNetwork.from_config(config))
    theory_s = time.perf_counter() - t_theory
    resources = {resource: float(args.executors_per_tier) for _, resource, _, _ in TIERS}
    with RssSampler(args.sample_every) as sampler:
        # A private local instance (address="local": never joins a `ray start` cluster),
        # with one unit of each tier's resource per executor.
        ray.init(
            address="local",
            num_cpus=CORES,
            resources=resources,
            include_dashboard=False,
            logging_level=logging.WARNING,
        )
        try:
            startup_rss = sampler.sample()[0]
            progress: list[tuple[float, int]] = []
            offsets: list[float] = []  # sampler clock minus the server's loop clock

            def on_progress(updates: int, now: float) -> None:
                progress.append((now, updates))
                if updates > 0:
                    offsets.append(sampler.clock() - now)

            result = raysync.run(config, progress=on_progress, startup_timeout=600)
        finally:
            ray.shutdown()
    # The server's loop clock runs from the first dispatch; progress polls tie it to the
    # sampler's clock (minimum offset: the poll that returned soonest).
    loop_start = min(offsets) if offsets else math.nan
    loop_end = loop_start + result.elapsed
    warm = loop_start + 0.2 * result.elapsed  # drop the first 20 % of the loop
    in_loop = [mb for t, mb, _ in sampler.samples if loop_start <= t <= loop_end]
    after = [mb for t, mb, _ in sampler.samples if warm <= t <= loop_end]
    slope = slope_mb_per_min(sampler.samples, warm, loop_end)
    role_slopes: dict[str, dict[str, float]] = {}
    for role in sorted({r for _, roles in sampler.roles for r in roles}):
        series = [(t, roles.get(role, math.nan), 0) for t, roles in sampler.roles]
        window = [mb for t, mb, _ in series if warm <= t <= loop_end and math.isfinite(mb)]
        if len(window) < 2:
            continue  # only alive before the warm-up ended (idle workers)
        role_slopes[role] = {
            "mb_at_warmup_end": window[0] if window else math.nan,
            "mb_at_loop_end": window[-1] if window else math.nan,
            "slope_mb_per_min": slope_mb_per_min(
                [x for x in series if math.isfinite(x[1])], warm, loop_end
            ),
        }
    lo, hi = result.throughput_ci
    return {
        "num_clients": args.num_clients,
        "tiers": [
            {"name": n, "resource": r, "mean_service_s": m, "clients": round(s * args.num_clients)}
            for n, r, m, s in TIERS
        ],
        "concurrency": args.concurrency,
        "executors_per_tier": args.executors_per_tier,
        "num_executors": result.extras["num_executors"],
        "runtime_mode": result.extras["runtime_mode"],
        "minutes": args.minutes,
        # 1-minute load average when the run started and when it ended: the emulation is
        # wall-clock, so a loaded machine shows as server lag and a lower ratio.
        "loadavg": f"{load_start:.1f} -> {os.getloadavg()[0]:.1f}",
        "elapsed_s": result.elapsed,
        "startup_s": result.wall_time - result.elapsed,
        "updates": result.num_updates,
        "throughput": result.throughput,
        "throughput_ci": [lo, hi],
        "theory_throughput": theory.throughput,
        "theory_seconds": theory_s,
        "ratio": result.throughput / theory.throughput,
        "ratio_ci": [lo / theory.throughput, hi / theory.throughput],
        "mean_staleness": result.mean_staleness,
        "theory_mean_staleness": theory.mean_staleness,
        "lag_mean_s": result.extras["lag_mean"],
        "lag_max_s": result.extras["lag_max"],
        "rss_startup_mb": startup_rss,
        "rss_peak_mb": max(in_loop) if in_loop else math.nan,
        "rss_after_warmup_min_mb": min(after) if after else math.nan,
        "rss_after_warmup_max_mb": max(after) if after else math.nan,
        "rss_slope_mb_per_min": slope,
        "rss_by_role": role_slopes,
        "rss_samples": [[round(t, 2), round(mb, 1), n] for t, mb, n in sampler.samples],
        "loop_start_s": loop_start,
        "loop_end_s": loop_end,
        "warmup_end_s": warm,
        "progress": progress[:: max(1, len(progress) // 200)],
    }


def write_plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = report["result"]
    samples = np.array([(t, mb) for t, mb, _ in r["rss_samples"]])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(samples[:, 0] / 60, samples[:, 1] / 1024, lw=1.2)
    ax1.axvline(r["loop_start_s"] / 60, color="gray", ls=":", lw=1, label="run loop starts")
    ax1.axvline(r["warmup_end_s"] / 60, color="gray", ls="--", lw=1, label="slope measured from")
    ax1.axvline(r["loop_end_s"] / 60, color="gray", ls="-.", lw=1, label="run loop ends")
    ax1.set_xlabel("minutes")
    ax1.set_ylabel("RSS, driver + all Ray processes (GiB)")
    ax1.set_title(f"memory: slope {r['rss_slope_mb_per_min']:+.2f} MB/min after warm-up")
    ax1.legend(fontsize=8)
    prog = np.array(r["progress"], dtype=float)
    if len(prog) > 2:
        rate = np.diff(prog[:, 1]) / np.maximum(np.diff(prog[:, 0]), 1e-9)
        ax2.plot(prog[1:, 0] / 60, rate, lw=0.8, label="measured (between progress polls)")
    ax2.axhline(r["theory_throughput"], color="C3", ls="--", label="closed form Lambda(C)")
    ax2.axhline(r["throughput"], color="C2", lw=1.5, label="RunResult.throughput")
    ax2.set_xlabel("minutes")
    ax2.set_ylabel("updates per second")
    ax2.set_title(
        f"{r['num_clients']} clients, {r['num_executors']} executors, C = {r['concurrency']}: "
        f"ratio {r['ratio']:.3f}"
    )
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_markdown(report: dict[str, Any], path: Path, stem: str = "bench_scale") -> None:
    r = report["result"]
    v = report["versions"]
    tiers = ", ".join(
        f"{t['clients']} {t['name']} (mean {t['mean_service_s']:g} s, `{t['resource']}`)"
        for t in r["tiers"]
    )
    lines = [
        f"# {r['num_clients']:,} logical clients on a pool of executors",
        "",
        "Generated by `benchmarks/bench_scale.py` "
        f"(`--minutes {r['minutes']:g} --num-clients {r['num_clients']}`, load average "
        f"{r.get('loadavg', '?')}; raysync {v['raysync']}, Ray {v['ray']}, Python "
        f"{v['python']}), machine: {report['machine']['cores']} CPU cores, "
        f"{report['machine']['memory_gib']:.0f} GiB RAM, shared with other jobs.",
        "",
        f"Setup: {r['num_clients']} logical clients in three resource tiers: {tiers}; "
        f"emulated exponential service times (`time_scale = 1`), queue-only, uniform "
        f'routing, C = {r["concurrency"]} tasks in flight, `[runtime] mode = "pool"` with '
        f"{r['executors_per_tier']} executor actors per tier ({r['num_executors']} in all, "
        "each requesting 0.1 CPU and one unit of its tier's custom resource). Each logical "
        "client keeps its own FIFO queue, service-time stream and counters in the server "
        "actor; the executors only compute and wait (asyncio), so a handful of actors "
        "serves thousands of clients.",
        "",
        "| quantity | value |",
        "|---|---:|",
        f"| run loop | {r['elapsed_s']:.0f} s ({r['updates']} updates; start-up "
        f"{r['startup_s']:.1f} s) |",
        f"| measured throughput (99 % CI) | {r['throughput']:.1f} updates/s "
        f"[{r['throughput_ci'][0]:.1f}, {r['throughput_ci'][1]:.1f}] |",
        f"| closed form Lambda(C) | {r['theory_throughput']:.1f} updates/s "
        f"(MVA over {r['num_clients']} clients in {r['theory_seconds']:.2f} s) |",
        f"| ratio measured / theory (99 % CI) | **{r['ratio']:.3f}** "
        f"[{r['ratio_ci'][0]:.3f}, {r['ratio_ci'][1]:.3f}] |",
        f"| mean staleness (theory C - 1) | {r['mean_staleness']:.1f} "
        f"({r['theory_mean_staleness']:.1f}) |",
        f"| server lag, mean / max | {1e3 * r['lag_mean_s']:.1f} ms / "
        f"{1e3 * r['lag_max_s']:.0f} ms |",
        f"| RSS after start-up (driver + all Ray processes) | "
        f"{r['rss_startup_mb'] / 1024:.2f} GiB |",
        f"| RSS peak during the run | {r['rss_peak_mb'] / 1024:.2f} GiB |",
        f"| RSS during the loop after warm-up, min / max | "
        f"{r['rss_after_warmup_min_mb'] / 1024:.2f} / "
        f"{r['rss_after_warmup_max_mb'] / 1024:.2f} GiB |",
        f"| **RSS slope after warm-up** | **{r['rss_slope_mb_per_min']:+.2f} MB/min** |",
        "",
        f"![memory and throughput]({stem}.png)",
        "",
        "RSS by process role over the same window (several processes share a role; "
        "shared pages counted in each):",
        "",
        "| role | MB at warm-up end | MB at loop end | slope MB/min |",
        "|---|---:|---:|---:|",
        *(
            f"| {role} | {v['mb_at_warmup_end']:.0f} | {v['mb_at_loop_end']:.0f} | "
            f"{v['slope_mb_per_min']:+.2f} |"
            for role, v in sorted(
                r.get("rss_by_role", {}).items(), key=lambda kv: -kv[1]["mb_at_loop_end"]
            )
        ),
        "",
        "Memory is sampled every "
        f"{report['settings']['sample_every']:g} s with psutil (RSS of the driver and every "
        "descendant process: GCS, raylet, dashboard agent, server and executor actors; "
        "shared pages are counted once per process, so the total overstates the physical "
        "use). The slope is the least-squares fit over the samples of the run loop after "
        "its first 20 % (start-up and shutdown excluded). The server's memory is bounded "
        "by design: per-client state is a few numpy arrays of length n, the statistics "
        "snapshots are thinned by doubling and capped at about 10^6 values per quantity, "
        "task records exist only while a task is pending, and per-client queues are "
        "dropped when empty.",
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the run loop")
    parser.add_argument("--num-clients", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=1000, help="C, tasks in flight")
    parser.add_argument("--executors-per-tier", type=int, default=2)
    parser.add_argument("--sample-every", type=float, default=5.0, help="RSS sampling period (s)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--stem", default=None, help="output file stem (default: bench_scale, or bench_scale_<n>)"
    )
    args = parser.parse_args(argv)
    stem = args.stem or (
        "bench_scale" if args.num_clients == 10_000 else f"bench_scale_{args.num_clients}"
    )

    import ray

    import raysync

    result = measure(args)
    report = {
        "versions": {
            "raysync": raysync.__version__,
            "ray": ray.__version__,
            "python": platform.python_version(),
        },
        "machine": {"cores": CORES, "memory_gib": psutil.virtual_memory().total / 2**30},
        "settings": vars(args) | {"out_dir": str(args.out_dir)},
        "result": result,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{stem}.json").write_text(json.dumps(report, indent=1, default=str))
    write_plot(report, args.out_dir / f"{stem}.png")
    write_markdown(report, args.out_dir / f"{stem}.md", stem)
    print(
        f"{result['num_clients']} clients, {result['updates']} updates in "
        f"{result['elapsed_s']:.0f} s: {result['throughput']:.1f} updates/s vs theory "
        f"{result['theory_throughput']:.1f} (ratio {result['ratio']:.3f}); RSS peak "
        f"{result['rss_peak_mb'] / 1024:.2f} GiB, slope {result['rss_slope_mb_per_min']:+.2f} "
        "MB/min",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
