"""Fault figures of the Ray runtime: real kills during runs, then counting every update.

Claims measured (results in ``benchmarks/results/bench_faults.{json,png,md}``):

1. Executors SIGKILLed from outside during a run (one; all eight at once, twice; one
   every ~300 updates; a pool executor; more kills of one executor than
   ``runtime.max_restarts``): every created task is applied exactly once or still
   pending at the end (**updates lost: 0, duplicated: 0**), the run ends with exactly
   ``run.num_updates`` updates, and the restart counter equals the kills Ray restarted.
   *Recovery time* is the wall time a run lost to its faults: its elapsed time minus that
   of the same run (same seed) without faults. When restarts run out, the run ends with
   one line: the message is reported verbatim.
2. The driver (and the local Ray instance it started) SIGKILLed mid-run, then the run
   resumed with ``--resume``: the tasks applied before the checkpoint and after the
   resume are all the tasks, each once; every scheduled evaluation happens once; the
   resumed run ends bit for bit where an uninterrupted one does. *Recovery time* is from
   the kill to the resumed run's first new update (Ray start-up, actor start, restore).

Kills are real ``SIGKILL``s of the executor processes (found in Ray's actor table), sent
from the driver's progress callback (polled every 0.1 s) when the run passes the listed
update counts, not injected faults. Queue-only runs with emulated exponential service
times (8 clients, means 10-40 ms, ``C = 8``, ``time_scale = 1``): every duration is set
by the emulated clock, so the fault-free baseline is a fair reference.

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_faults.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import ray

from raysync.config import (
    AlgorithmConfig,
    ClientSpec,
    RoutingConfig,
    RunConfig,
    RuntimeConfig,
    ServiceTimeSpec,
    SystemConfig,
    dump_config,
)
from raysync.exceptions import RuntimeFailure
from raysync.runtime.checkpoint import MANIFEST, read_checkpoint
from raysync.runtime.coordinator import _execute, connect

RESULTS = Path(__file__).resolve().parent / "results"
MEANS = (0.01, 0.01, 0.02, 0.02, 0.03, 0.03, 0.04, 0.04)


def queue_config(
    num_updates: int, *, mode: str = "per_client", max_restarts: int = 3
) -> SystemConfig:
    return SystemConfig(
        clients=tuple(
            ClientSpec(service_time=ServiceTimeSpec(kind="exponential", mean=m), num_cpus=0.25)
            for m in MEANS
        ),
        concurrency=8,
        routing=RoutingConfig(kind="uniform"),
        run=RunConfig(num_updates=num_updates, train=False, time_scale=1.0),
        runtime=RuntimeConfig(mode=mode, executors_per_tier=2, max_restarts=max_restarts),
        seed=11,
    )


def executor_actors() -> list[dict[str, Any]]:
    """This job's executor actors from Ray's actor table (id, state, pid, restarts)."""
    from ray._private import state

    job = ray.get_runtime_context().get_job_id()
    return [
        {
            "id": actor_id,
            "state": info["State"],
            "pid": int(info["Pid"]),
            "restarts": int(info["NumRestarts"]),
        }
        for actor_id, info in state.actors().items()
        if "ExecutorActor" in info["ActorClassName"] and info["JobID"] == job
    ]


def sigkill(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


class Killer:
    """A progress callback that SIGKILLs executors as the run passes update counts."""

    def __init__(self, plan: list[tuple[int, str]]) -> None:
        self.plan = sorted(plan)
        self.kills: list[dict[str, Any]] = []
        self.trace: list[tuple[float, int]] = []
        self.t0 = time.perf_counter()
        self.target: str | None = None  # actor id for "same" kills

    def __call__(self, updates: int, seconds: float) -> None:
        now = time.perf_counter() - self.t0
        self.trace.append((now, updates))
        while self.plan and updates >= self.plan[0][0]:
            _, what = self.plan.pop(0)
            alive = [a for a in executor_actors() if a["state"] == "ALIVE" and a["pid"] > 0]
            if what == "same":
                if self.target is None and alive:
                    self.target = alive[0]["id"]
                alive = [a for a in alive if a["id"] == self.target]
                if not alive:  # restarting: try again at the next poll
                    self.plan.insert(0, (updates, what))
                    return
            chosen = alive if what == "all" else alive[:1]
            if what == "random" and alive:
                chosen = [alive[len(self.kills) % len(alive)]]
            pids = [a["pid"] for a in chosen if sigkill(a["pid"])]
            self.kills.append({"updates": updates, "time": now, "pids": pids})


def exactly_once(result: Any) -> dict[str, int]:
    """Updates lost and duplicated, from the run's per-task records."""
    applied = result.extras["debug"]["applied_task_ids"]
    ids = result.extras["task_ids"]
    seen = set(applied)
    missing = set(range(ids["next"])) - seen - set(ids["pending"])
    return {
        "lost": len(missing) + abs(result.num_updates - result.config["run"]["num_updates"]),
        "duplicated": len(applied) - len(seen),
    }


def scenario(
    name: str,
    config: SystemConfig,
    plan: list[tuple[int, str]],
    baseline: float,
) -> dict[str, Any]:
    killer = Killer(plan)
    row: dict[str, Any] = {"scenario": name, "mode": config.runtime.mode}
    start = time.perf_counter()
    try:
        result, _ = _execute(config, progress=killer, poll_interval=0.1, record=True)
    except RuntimeFailure as exc:
        row.update(
            outcome="error",
            message=str(exc),
            one_line="\n" not in str(exc),
            seconds=time.perf_counter() - start,
        )
    else:
        row.update(
            outcome="ok",
            updates=result.num_updates,
            elapsed=result.elapsed,
            recovery_seconds=max(0.0, result.elapsed - baseline),
            restarts=result.extras["actor_restarts"],
            reissued=result.extras["reissued_tasks"],
            executors_dead=result.extras["executors_dead"],
            **exactly_once(result),
        )
        if config.runtime.mode == "pool":
            debug = result.extras["debug"]
            row["rejoined"] = debug["rejoined"]
            if debug["rejoined"]:
                executor, at = debug["rejoined"][0]
                after = debug["executors"][at:]
                row["share_after_return"] = after.count(executor) / max(1, len(after))
    row["kills"] = killer.kills
    row["executors_killed"] = sum(len(k["pids"]) for k in killer.kills)
    row["trace"] = killer.trace
    print(json.dumps({k: v for k, v in row.items() if k != "trace"}), flush=True)
    return row


def driver_kill(quick: bool, workdir: Path) -> dict[str, Any]:
    """SIGKILL the driver and its Ray instance after a checkpoint; resume; count."""
    num_updates = 600 if quick else 1500
    every = 50 if quick else 100

    ckpt = workdir / "ckpt"
    config = SystemConfig(
        clients=tuple(
            ClientSpec(service_time=ServiceTimeSpec(kind="exponential", mean=m), num_cpus=0.25)
            for m in (0.01, 0.01, 0.02, 0.04)
        ),
        concurrency=1,
        routing=RoutingConfig(kind="uniform"),
        algorithm=AlgorithmConfig(name="generalized_asyncsgd", lr=0.1, batch_size=32),
        run=RunConfig(
            num_updates=num_updates,
            time_scale=0.0,
            eval_every_updates=every,
            checkpoint_every_updates=every,
            checkpoint_dir=str(ckpt),
        ),
        runtime=RuntimeConfig(mode="pool", executors_per_tier=2),
        seed=0,
    )
    path = workdir / "system.toml"
    dump_config(config, path)
    cli = "import sys; from raysync.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [sys.executable, "-c", cli, "run", str(path), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    tree: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 300
        while True:
            if (ckpt / MANIFEST).exists():
                version = json.loads((ckpt / MANIFEST).read_text())["body"]["version"]
                if version >= num_updates // 3:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the driver ended before its checkpoint")
            time.sleep(0.01)
        tree = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)
        killed_at = time.perf_counter()
        for child in tree:
            with contextlib.suppress(psutil.Error):
                child.kill()
    finally:
        proc.kill()
        proc.wait(timeout=60)
        psutil.wait_procs(tree, timeout=30)
    state = read_checkpoint(ckpt).state
    saved = int(state["version"])
    before_next = int(state["next_task_id"])
    before_pending = {int(v) for v in np.asarray(state["pending"]["task_id"]).tolist()}
    applied_before = set(range(before_next)) - before_pending
    first_update: list[float] = []

    def progress(updates: int, seconds: float) -> None:
        if updates > saved and not first_update:
            first_update.append(time.perf_counter())

    resumed, _ = _execute(
        config, resume_from=ckpt, record=True, progress=progress, poll_interval=0.1
    )
    reference, _ = _execute(
        config.replace(
            run=RunConfig(num_updates=num_updates, time_scale=0.0, eval_every_updates=every)
        ),
        record=True,
    )
    after = resumed.extras["debug"]["applied_task_ids"]
    ids = resumed.extras["task_ids"]
    everything = set(range(ids["next"])) - set(ids["pending"])
    expected_evals = list(range(0, num_updates + 1, every))
    return {
        "scenario": "driver SIGKILL + resume",
        "checkpoint_version": saved,
        "updates": resumed.num_updates,
        "lost": len(everything - applied_before - set(after)),
        "duplicated": len(after) - len(set(after)) + len(applied_before & set(after)),
        "evaluations_expected": expected_evals,
        "evaluations_done": [int(v) for v in resumed.updates],
        "evaluations_exact": [int(v) for v in resumed.updates] == expected_evals,
        "same_model_as_uninterrupted": bool(resumed.final_test_loss == reference.final_test_loss),
        "same_tasks_as_uninterrupted": after
        == reference.extras["debug"]["applied_task_ids"][saved:],
        "recovery_seconds": (first_update[0] - killed_at) if first_update else None,
    }


def plot(rows: list[dict[str, Any]], driver: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for row in rows:
        if not row["trace"]:
            continue
        t, u = zip(*row["trace"], strict=True)
        (line,) = ax1.plot(t, u, label=row["scenario"], lw=1.2)
        for kill in row["kills"]:
            ax1.axvline(kill["time"], color=line.get_color(), lw=0.6, ls=":")
    ax1.set_xlabel("wall seconds since start")
    ax1.set_ylabel("model updates")
    ax1.set_title("Runs under executor kills (dotted: SIGKILL instants)")
    ax1.legend(fontsize=7)
    names = [r["scenario"] for r in rows if r["outcome"] == "ok"] + [driver["scenario"]]
    recov = [r["recovery_seconds"] for r in rows if r["outcome"] == "ok"]
    recov.append(driver["recovery_seconds"] or 0.0)
    lost = [r["lost"] for r in rows if r["outcome"] == "ok"] + [driver["lost"]]
    dup = [r["duplicated"] for r in rows if r["outcome"] == "ok"] + [driver["duplicated"]]
    y = np.arange(len(names))
    ax2.barh(y, recov, color="tab:blue")
    for j, (lo, du) in enumerate(zip(lost, dup, strict=True)):
        ax2.text(recov[j], j, f"  lost {lo}, dup {du}", va="center", fontsize=8)
    ax2.set_yticks(y, names, fontsize=8)
    ax2.set_xlabel("recovery time (s): wall time lost to the faults")
    ax2.set_title("Updates lost / duplicated and recovery time")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def markdown(rows: list[dict[str, Any]], driver: dict[str, Any], machine: str) -> str:
    lines = [
        "# Fault figures (`benchmarks/bench_faults.py`)",
        "",
        f"Machine: {machine}.",
        "",
        "| scenario | mode | executors killed | restarts counted | updates | lost | "
        "duplicated | recovery (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["outcome"] != "ok":
            continue
        lines.append(
            f"| {r['scenario']} | {r['mode']} | {r['executors_killed']} | {r['restarts']} | "
            f"{r['updates']} | {r['lost']} | {r['duplicated']} | {r['recovery_seconds']:.2f} |"
        )
    rec = driver["recovery_seconds"]
    lines.append(
        f"| {driver['scenario']} (checkpoint at {driver['checkpoint_version']}) | pool | - | - | "
        f"{driver['updates']} | {driver['lost']} | {driver['duplicated']} | "
        f"{rec:.2f} |"
        if rec is not None
        else "| driver | - | - | - | - | - | - | - |"
    )
    lines += [
        "",
        f"Driver kill: every scheduled evaluation exactly once: {driver['evaluations_exact']}; "
        f"same tasks and same model as an uninterrupted run: "
        f"{driver['same_tasks_as_uninterrupted']} / {driver['same_model_as_uninterrupted']}.",
        "",
    ]
    for r in rows:
        if r["outcome"] == "error":
            lines += [
                f"When restarts run out ({r['scenario']}), the user sees one line "
                f"({'one line' if r['one_line'] else 'SEVERAL LINES'}):",
                "",
                f"> {r['message']}",
                "",
            ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    args = parser.parse_args(argv)
    n = 1200 if args.quick else 3000
    RESULTS.mkdir(parents=True, exist_ok=True)
    connect(None)
    base, _ = _execute(queue_config(n), record=True)
    pool_base, _ = _execute(queue_config(n, mode="pool"), record=True)
    third = n // 3
    plans: list[tuple[str, SystemConfig, list[tuple[int, str]], float]] = [
        ("one executor", queue_config(n), [(third, "one")], base.elapsed),
        ("all 8, twice", queue_config(n), [(third, "all"), (2 * third, "all")], base.elapsed),
        (
            "one every ~300 updates",
            queue_config(n),
            [(k, "random") for k in range(300, n - 100, 300)],
            base.elapsed,
        ),
        ("pool executor", queue_config(n, mode="pool"), [(third, "one")], pool_base.elapsed),
        (
            "same executor 3x, max_restarts=2",
            queue_config(n, max_restarts=2),
            [(third // 2, "same"), (third, "same"), (2 * third, "same")],
            base.elapsed,
        ),
    ]
    rows = [scenario(name, cfg, plan, ref) for name, cfg, plan, ref in plans]
    ray.shutdown()
    with tempfile.TemporaryDirectory(prefix="raysync-faults-") as tmp:
        driver = driver_kill(args.quick, Path(tmp))
    print(json.dumps(driver), flush=True)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    payload = {
        "machine": machine,
        "num_updates": n,
        "baseline_elapsed": {"per_client": base.elapsed, "pool": pool_base.elapsed},
        "scenarios": rows,
        "driver_kill": driver,
    }
    (RESULTS / "bench_faults.json").write_text(json.dumps(payload, indent=1))
    plot(rows, driver, RESULTS / "bench_faults.png")
    (RESULTS / "bench_faults.md").write_text(markdown(rows, driver, machine))
    bad = [r for r in [*rows, driver] if r.get("lost") or r.get("duplicated")]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
