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
   ``--max-batch K`` adds raysync with batched executor calls (``runtime.max_batch = K``)
   as a third arm; ``--clients`` and ``--concurrency`` change the fleet and ``C`` (digits
   holds 1,259 training samples: above 1,000 clients the workload is MNIST).

4. ``--profile`` (alone): where the time per update goes, raysync next to bare Ray on the
   workload of part 3, sampled with py-spy (:func:`bench_profile`); writes
   ``bench_runtime_profile.{json,md}``.

Usage::

    .venv/bin/python benchmarks/bench_runtime.py [--quick] [--speed-only] [--max-load 6]
    .venv/bin/python benchmarks/bench_runtime.py --profile [--quick]
    .venv/bin/python benchmarks/bench_runtime.py --vs-bare-only --max-batch 8 \
        [--clients 10000] [--concurrency 16]
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
        row: dict[str, Any] = {
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
        out = run_client_work(computer, work, params, x, y, gens.minibatch.task(i, k))
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
        # One persistent generator per client: the cheapest stream a minimal server has
        # (raysync derives one per task so that any executor can serve it).
        self.rngs = [
            np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(1, i)))
            for i in range(config.num_clients)
        ]

    def pid(self) -> int:
        return os.getpid()

    def compute(self, params: np.ndarray, client: int, version: int) -> tuple[Any, ...]:
        x, y = self.workload.client_data(client)
        out = run_client_work(self.computer, self.work, params, x, y, self.rngs[client])
        return client, version, out.payload, float(out.loss), int(out.num_samples)


def bare_ray_ps(
    config: SystemConfig,
    workers: list[Any],
    updates: int,
    trace: list[tuple[float, int]] | None = None,
) -> float:
    """Updates per second of a minimal async parameter server on bare Ray.

    The driver keeps ``C`` calls in flight over the worker actors (round robin), waits for
    any one with ``ray.wait``, applies the same strategy the runtime uses and sends the
    current weights inline with the replacement call to a uniformly drawn client: the
    runtime's workload with none of its bookkeeping (no per-client FIFO, no statistics,
    no checkpoints, no server actor). ``trace`` collects ``(time, version)`` pairs (every
    50 updates) for the profiler.
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
        if trace is not None and version % 50 == 0:
            trace.append((time.perf_counter(), version))
    elapsed = time.perf_counter() - start
    ray.get(pending)
    return updates / elapsed


def vs_bare_config(
    num_clients: int = 100, concurrency: int = 4, updates: int = 4000, max_batch: int = 1
) -> SystemConfig:
    """The workload of part 3 (issue 17): a pool of 2 executors, no emulation.

    Generalized AsyncSGD with logistic regression (batch 32, lr 0.1) on digits, or on
    MNIST above 1,000 clients (digits has too few samples to give each client one).
    """
    from raysync.config import DataConfig, RuntimeConfig

    return SystemConfig(
        clients=fleet([0.01] * num_clients, num_cpus=0.5),
        concurrency=concurrency,
        routing=RoutingConfig(kind="uniform"),
        algorithm=AlgorithmConfig(name="generalized_asyncsgd", lr=0.1, batch_size=32),
        data=DataConfig(dataset="digits" if num_clients <= 1000 else "mnist"),
        runtime=RuntimeConfig(mode="pool", executors_per_tier=2, max_batch=max_batch),
        run=RunConfig(num_updates=updates, time_scale=0.0, train=True, eval_every_updates=None),
        seed=0,
    )


def bench_vs_bare_ray(
    quick: bool,
    max_load: float,
    reps: int = 3,
    *,
    num_clients: int = 100,
    concurrency: int = 4,
    max_batch: int = 1,
) -> dict[str, Any]:
    """raysync against the bare-Ray reference, alternating, on the identical workload.

    Workload (issue 17): ``num_clients`` logical clients multiplexed on a pool of 2
    executors (:func:`vs_bare_config`), ``concurrency`` tasks in flight; the reference
    runs 2 worker actors with the same calls in flight. ``reps`` alternating repetitions
    of each arm (raysync one call per task; with ``max_batch > 1`` also raysync with
    batched calls; bare Ray), medians and their ratios, and raysync's executor calls per
    update. Skipped (with the reason recorded) when the 1-minute load average exceeds
    ``max_load``: on a saturated machine the arms would measure the other jobs, not
    themselves.
    """
    load = os.getloadavg()[0]
    if load > max_load:
        print(f"  skipped: 1-min load average {load:.1f} > {max_load:g}", flush=True)
        return {"skipped": f"1-min load average {load:.1f} > {max_load:g}"}
    updates = 1500 if quick else 4000
    executors, cpus = 2, 0.5
    config = vs_bare_config(num_clients, concurrency, updates)
    arms = {"raysync": config}
    if max_batch > 1:
        arms["raysync_batched"] = vs_bare_config(num_clients, concurrency, updates, max_batch)
    speeds: dict[str, list[float]] = {name: [] for name in [*arms, "bare_ray"]}
    calls: dict[str, list[float]] = {name: [] for name in arms}
    loads: list[float] = [load]
    for rep in range(reps):
        for name, arm in arms.items():
            result = run(arm)
            speeds[name].append(float(result.throughput))
            calls[name].append(result.extras["executor_calls"] / result.num_updates)
        # The reference's actors exist only while it runs: both ask for the same CPUs.
        workers = [
            BareWorker.options(num_cpus=cpus).remote(config.to_dict())  # type: ignore[attr-defined]
            for _ in range(executors)
        ]
        bare_ray_ps(config, workers, 50)  # warm: actors built, workload loaded
        speeds["bare_ray"].append(bare_ray_ps(config, workers, updates))
        for worker in workers:
            ray.kill(worker)
        loads.append(os.getloadavg()[0])
        line = "  ".join(f"{name} {v[-1]:7.1f}" for name, v in speeds.items())
        print(f"  rep {rep}: {line} updates/s (load {loads[-1]:.1f})", flush=True)
    medians = {name: float(np.median(v)) for name, v in speeds.items()}
    ratios = {name: medians[name] / medians["bare_ray"] for name in arms}
    for name, ratio in ratios.items():
        print(f"  ratio {name} / bare Ray (medians): {ratio:.3f}", flush=True)
    out: dict[str, Any] = {
        "num_clients": num_clients,
        "dataset": config.data.dataset,
        "concurrency": concurrency,
        "executors": executors,
        "updates": updates,
        "raysync_updates_per_s": speeds["raysync"],
        "bare_ray_updates_per_s": speeds["bare_ray"],
        "ratio_of_medians": ratios["raysync"],
        "raysync_calls_per_update": calls["raysync"],
        "load_average_1min_before": load,
        "load_average_1min_after": os.getloadavg()[0],
        "load_average_1min_per_rep": loads[1:],
    }
    if max_batch > 1:
        out.update(
            {
                "max_batch": max_batch,
                "raysync_batched_updates_per_s": speeds["raysync_batched"],
                "ratio_batched_of_medians": ratios["raysync_batched"],
                "raysync_batched_calls_per_update": calls["raysync_batched"],
            }
        )
    return out


# --------------------------------------------------------------------------- 4. profile

#: Where a sampled stack's time goes: the first rule, from the innermost frame outwards,
#: whose pattern the frame contains names its category (the innermost match is the most
#: specific: numpy under ``strategy.apply`` is the strategy's, pickling under ``send`` is
#: Ray's serialisation).
PROFILE_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Ray: (de)serialisation", ("ray/_private/serialization.py", "ray/cloudpickle", "msgpack")),
    ("Ray: call submission/receipt (Python)", ("ray/actor.py", "ray/_private/", "ray/util/")),
    ("compute (model forward/backward)", ("raysync/models/", "torch/", "raysync/client.py")),
    ("minibatch stream", ("raysync/simulation/minibatch.py",)),
    ("strategy.apply", ("raysync/strategies/",)),
    ("router", ("raysync/routing/",)),
    ("statistics (ServerBook)", ("ServerBook.",)),
    ("dispatch bookkeeping", ("raysync/runtime/_dispatch.py",)),
    ("server loop / executor submit", ("raysync/runtime/actors.py",)),
    ("bare-Ray driver loop", ("bench_runtime.py",)),
    ("thread-pool handoff", ("concurrent/futures/", "threading.py", "queue.py")),
    ("asyncio machinery", ("asyncio/",)),
)
#: Innermost frames of a thread that waits (blocked in C: epoll, Ray's main loop, a lock).
IDLE_LEAVES = (
    "EpollSelector.select",
    "Worker.main_loop",
    "Condition.wait",
    "_worker (concurrent/futures/thread.py",
    "SimpleQueue.get",
)
#: The C++ task submission (``core_worker.submit_actor_task``) has no Python frame of its
#: own: its time, GIL waits included, shows as the self time of this frame.
SUBMIT_LEAF = "ActorHandle._actor_method_call"


def classify_stack(frames: list[str]) -> str:
    """The category of one sampled stack (``frames`` from the root to the innermost)."""
    leaf = frames[-1] if frames else ""
    if any(leaf.startswith(idle) for idle in IDLE_LEAVES):
        return "idle (blocked)"
    if leaf.startswith(SUBMIT_LEAF):
        return "Ray: C++ call submission (incl. GIL waits)"
    if leaf.startswith("wait (ray/_private/worker.py") or leaf.startswith("get (ray/_private/"):
        return "Ray: ray.wait/ray.get (C++)"
    for frame in reversed(frames):
        for name, patterns in PROFILE_RULES:
            if any(p in frame for p in patterns):
                return name
    return "other"


def read_collapsed(path: Path) -> dict[str, int]:
    """Samples per category of a py-spy ``--format raw`` file (collapsed stacks)."""
    totals: dict[str, int] = {}
    if not path.exists():
        return totals
    for line in path.read_text().splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        name = classify_stack(stack.split(";"))
        totals[name] = totals.get(name, 0) + int(count)
    return totals


def _process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, every thread (``/proc/<pid>/stat``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ray_worker_pids(title: str) -> list[int]:
    """This process's Ray workers whose title starts with ``title`` (``ray::ServerActor``).

    Only descendants of this process (the local Ray instance it started), not the
    workers of other Ray instances on the machine.
    """
    parent: dict[int, int] = {}
    titles: dict[int, bytes] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                titles[int(entry.name)] = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            parent[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    me = os.getpid()

    def ours(pid: int) -> bool:
        for _ in range(64):
            pid = parent.get(pid, 0)
            if pid == me:
                return True
            if pid <= 1:
                return False
        return False

    return [p for p, t in titles.items() if t.startswith(title.encode()) and ours(p)]


class _Spy:
    """py-spy sampling a set of processes for ``duration`` s, with their CPU time.

    py-spy samples from outside the process (``--nonblocking``: the target is never
    paused), so the measured code runs at its own speed, unlike an in-process profiler.
    """

    def __init__(self, out: Path, rate: int, duration: int) -> None:
        self.out = out
        self.rate = rate
        self.duration = duration
        self.procs: dict[str, tuple[int, Any, float]] = {}
        self.started = math.nan

    def start(self, targets: dict[str, int]) -> None:
        import shutil
        import subprocess

        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.started = time.perf_counter()
        for label, pid in targets.items():
            proc = subprocess.Popen(
                [
                    spy, "record", "--pid", str(pid), "--rate", str(self.rate), "--format",
                    "raw", "--nonblocking", "--duration", str(self.duration), "--output",
                    str(self.out / f"{label}.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            self.procs[label] = (pid, proc, _process_cpu_seconds(pid))
        self.cpu_end: dict[str, float] = {}

    def poll_cpu(self) -> None:
        """Record the processes' CPU time once the sampling window is over."""
        if self.procs and not self.cpu_end and self.elapsed() >= self.duration:
            self.cpu_end = {k: _process_cpu_seconds(pid) for k, (pid, _, _) in self.procs.items()}

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def finish(self) -> dict[str, dict[str, Any]]:
        out = {}
        for label, (pid, proc, cpu0) in self.procs.items():
            proc.wait(timeout=self.duration + 60)
            samples = read_collapsed(self.out / f"{label}.txt")
            out[label] = {
                "pid": pid,
                "samples": samples,
                "cpu_seconds": self.cpu_end.get(label, math.nan) - cpu0,
            }
        return out


def _per_update(spied: dict[str, dict[str, Any]], rate: int, updates: float) -> dict[str, Any]:
    """Milliseconds per update of each category, per process, plus CPU per update."""
    table: dict[str, Any] = {}
    for label, info in spied.items():
        ms = {k: 1e3 * v / rate / updates for k, v in sorted(info["samples"].items())}
        busy = sum(v for k, v in ms.items() if not k.startswith("idle"))
        table[label] = {
            "ms_per_update": ms,
            "sampled_busy_ms_per_update": busy,
            "process_cpu_ms_per_update": 1e3 * info["cpu_seconds"] / updates,
            "samples": info["samples"],
        }
    return table


def bench_profile(
    quick: bool, *, concurrency: int = 4, max_batch: int = 1, num_clients: int = 100
) -> dict[str, Any]:
    """Where raysync's time per update goes, next to the bare-Ray reference (issue 17).

    The workload of :func:`bench_vs_bare_ray`. py-spy samples the server actor and both
    executors of one raysync run, then the driver and both workers of one bare-Ray run,
    each for a window inside the run's steady state; the updates made in the window come
    from the progress callback's (time, version) pairs. Per process: milliseconds per
    update of each category (:data:`PROFILE_RULES`; time in C with no Python frame is
    given to the calling frame, so the C++ submission shows as its own row), the sampled
    busy total and the process's CPU per update from ``/proc`` (all threads, Ray's C++
    ones included, which py-spy does not sample). Also the run's real communication
    overhead (round trip minus executor span, issue 15). ``max_batch > 1`` profiles
    raysync with batched executor calls (the bare-Ray side is unchanged).
    """
    import tempfile

    rate, duration = 100, 4 if quick else 6
    n, executors, cpus = num_clients, 2, 0.5
    updates = 3000 if quick else 6000
    config = vs_bare_config(n, concurrency, updates, max_batch)
    out_dir = Path(tempfile.mkdtemp(prefix="raysync-profile-"))
    # raysync: attach once the run is past its start (version > 5% of the run).
    spy = _Spy(out_dir, rate, duration)
    trace: list[tuple[float, int]] = []

    def progress(version: int, _now: float) -> None:
        trace.append((time.perf_counter(), version))
        if not spy.procs and version > updates // 20:
            targets = {"server": _ray_worker_pids("ray::ServerActor")[0]}
            executors_found = _ray_worker_pids("ray::ExecutorActor")
            executors_found += _ray_worker_pids("ray::SyncExecutorActor")
            for e, pid in enumerate(sorted(executors_found)):
                targets[f"executor_{e}"] = pid
            spy.start(targets)
        spy.poll_cpu()

    load = os.getloadavg()[0]
    result = run(config, progress=progress, poll_interval=0.25)
    window = _updates_between(trace, spy.started, spy.started + duration)
    ours = _per_update(spy.finish(), rate, window)
    print(
        f"  raysync: {result.throughput:.1f} updates/s; {window:.0f} updates profiled", flush=True
    )
    # bare Ray: the driver is this process (a thread starts py-spy on it mid-run).
    import threading

    workers = [
        BareWorker.options(num_cpus=cpus).remote(config.to_dict())  # type: ignore[attr-defined]
        for _ in range(executors)
    ]
    bare_ray_ps(config, workers, 50)
    worker_pids = ray.get([w.pid.remote() for w in workers])
    bare_spy = _Spy(out_dir / "bare", rate, duration)
    (out_dir / "bare").mkdir()
    bare_trace: list[tuple[float, int]] = []

    def watch() -> None:
        time.sleep(1.0)
        bare_spy.start(
            {"driver": os.getpid(), **{f"worker_{e}": p for e, p in enumerate(worker_pids)}}
        )
        while bare_spy.elapsed() < duration + 0.5:
            time.sleep(0.25)
            bare_spy.poll_cpu()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    bare_rate = bare_ray_ps(config, workers, updates, trace=bare_trace)
    thread.join()
    bare_window = _updates_between(bare_trace, bare_spy.started, bare_spy.started + duration)
    bare = _per_update(bare_spy.finish(), rate, bare_window)
    for worker in workers:
        ray.kill(worker)
    print(f"  bare Ray: {bare_rate:.1f} updates/s; {bare_window:.0f} updates profiled", flush=True)
    comm = result.extras.get("communication", {}).get("fleet", {})
    return {
        "workload": f"{n} logical clients, pool of {executors} executors, C = {concurrency}, "
        f"logistic regression on {config.data.dataset}, no emulation"
        + (f", runtime.max_batch = {max_batch}" if max_batch > 1 else ""),
        "raysync_calls_per_update": result.extras["executor_calls"] / result.num_updates,
        "rate_hz": rate,
        "window_s": duration,
        "raysync_updates_per_s": float(result.throughput),
        "bare_ray_updates_per_s": float(bare_rate),
        "raysync": ours,
        "bare_ray": bare,
        "real_overhead_ms_mean": 1e3 * float(comm.get("overhead_mean", math.nan)),
        "load_average_1min_before": load,
        "load_average_1min_after": os.getloadavg()[0],
    }


def _updates_between(trace: list[tuple[float, int]], start: float, end: float) -> float:
    """Updates made between two instants, interpolated from (time, version) pairs."""
    if len(trace) < 2 or not math.isfinite(start):
        return math.nan
    times = np.array([t for t, _ in trace])
    versions = np.array([v for _, v in trace], dtype=float)
    return float(np.interp(end, times, versions) - np.interp(start, times, versions))


def profile_markdown(profile: dict[str, Any]) -> str:
    """The profile as a README-ready table: ms per update per category and process."""
    ours, bare = profile["raysync"], profile["bare_ray"]
    columns = [("raysync", k) for k in ours] + [("bare Ray", k) for k in bare]
    names: list[str] = []
    for side in (ours, bare):
        for info in side.values():
            for name in info["ms_per_update"]:
                if name not in names:
                    names.append(name)
    names.sort(key=lambda k: (k.startswith("idle"), k))
    head = "| ms per update | " + " | ".join(f"{side} {label}" for side, label in columns) + " |"
    lines = [head, "|---|" + "---|" * len(columns)]

    def cell(side: str, label: str, name: str) -> str:
        info = (ours if side == "raysync" else bare)[label]
        value = info["ms_per_update"].get(name)
        return "" if value is None else f"{value:.3f}"

    for name in names:
        lines.append(f"| {name} | " + " | ".join(cell(s, lb, name) for s, lb in columns) + " |")
    for key, title in (
        ("sampled_busy_ms_per_update", "**sampled busy (Python threads)**"),
        ("process_cpu_ms_per_update", "**process CPU, all threads (/proc)**"),
    ):
        values = [(ours if s == "raysync" else bare)[lb][key] for s, lb in columns]
        lines.append(f"| {title} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    lines += [
        "",
        f"py-spy at {profile['rate_hz']} Hz for {profile['window_s']} s inside each run "
        f"({profile['workload']}); raysync {profile['raysync_updates_per_s']:.0f} updates/s, "
        f"bare Ray {profile['bare_ray_updates_per_s']:.0f} (one run each, with the profiler "
        f"attached); real communication overhead (round trip - executor span) "
        f"{profile['real_overhead_ms_mean']:.2f} ms per task; 1-min load "
        f"{profile['load_average_1min_before']:.1f}.",
    ]
    return "\n".join(lines) + "\n"


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
        "--profile",
        action="store_true",
        help="only profile raysync and the bare-Ray reference (py-spy) and write "
        "bench_runtime_profile.{json,md}",
    )
    parser.add_argument(
        "--vs-bare-only",
        action="store_true",
        help="only part 3 (raysync against bare Ray); writes bench_runtime_vs_bare.json",
    )
    parser.add_argument("--reps", type=int, default=3, help="repetitions of part 3")
    parser.add_argument(
        "--max-batch",
        type=int,
        default=1,
        help="part 3: also run raysync with runtime.max_batch = K (batched executor calls)",
    )
    parser.add_argument("--clients", type=int, default=100, help="part 3: logical clients")
    parser.add_argument("--concurrency", type=int, default=4, help="part 3: tasks in flight")
    parser.add_argument(
        "--max-load",
        type=float,
        default=6.0,
        help="skip the bare-Ray comparison above this 1-minute load average",
    )
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    ray.init(include_dashboard=False, num_cpus=os.cpu_count(), log_to_driver=False)
    if args.vs_bare_only:
        try:
            vs = bench_vs_bare_ray(
                args.quick,
                args.max_load,
                args.reps,
                num_clients=args.clients,
                concurrency=args.concurrency,
                max_batch=args.max_batch,
            )
        finally:
            ray.shutdown()
        name = "bench_runtime_vs_bare"
        if (args.max_batch, args.clients, args.concurrency) != (1, 100, 4):
            name += f"_n{args.clients}_c{args.concurrency}_b{args.max_batch}"
        (RESULTS / f"{name}.json").write_text(json.dumps(vs, indent=2))
        return 0
    if args.profile:
        try:
            print("4. profile: raysync and bare Ray (py-spy)", flush=True)
            profile = bench_profile(
                args.quick,
                concurrency=args.concurrency,
                max_batch=args.max_batch,
                num_clients=args.clients,
            )
        finally:
            ray.shutdown()
        name = "bench_runtime_profile"
        if args.clients != 100:
            name += f"_n{args.clients}"
        if (args.max_batch, args.concurrency) != (1, 4):
            name += f"_c{args.concurrency}_b{args.max_batch}"
        (RESULTS / f"{name}.json").write_text(json.dumps(profile, indent=2))
        table = profile_markdown(profile)
        (RESULTS / f"{name}.md").write_text(table)
        print(table)
        return 0
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
