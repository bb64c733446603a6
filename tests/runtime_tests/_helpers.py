"""Shared helpers of the runtime tests (configs, paired batch statistics, actor census)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from raysync.config import (
    AlgorithmConfig,
    ClientSpec,
    RoutingConfig,
    RunConfig,
    ServiceTimeSpec,
    SystemConfig,
)


def exp_time(mean: float) -> ServiceTimeSpec:
    return ServiceTimeSpec(kind="exponential", mean=mean)


def exp_clients(means: Sequence[float], **kwargs: Any) -> tuple[ClientSpec, ...]:
    return tuple(ClientSpec(service_time=exp_time(m), **kwargs) for m in means)


def queue_config(
    means: Sequence[float],
    p: Sequence[float] | None,
    concurrency: int,
    num_updates: int,
    *,
    seed: int = 0,
    time_scale: float = 1.0,
) -> SystemConfig:
    routing = RoutingConfig(kind="uniform") if p is None else RoutingConfig(kind="fixed", p=p)
    return SystemConfig(
        clients=exp_clients(means, num_cpus=0.25),
        concurrency=concurrency,
        routing=routing,
        run=RunConfig(num_updates=num_updates, train=False, time_scale=time_scale),
        seed=seed,
    )


def digits_config(num_updates: int, *, time_scale: float = 0.0, **run: Any) -> SystemConfig:
    return SystemConfig(
        clients=exp_clients((0.01, 0.01, 0.02, 0.04), num_cpus=0.25),
        concurrency=4,
        routing=RoutingConfig(kind="uniform"),
        algorithm=AlgorithmConfig(name="generalized_asyncsgd", lr=0.1, batch_size=32),
        run=RunConfig(num_updates=num_updates, time_scale=time_scale, **run),
        seed=0,
    )


def simulator_rows(config: SystemConfig) -> list[tuple[Any, ...]]:
    """The simulator's statistics snapshots of a queue-only run (same grid as the runtime).

    ``simulate`` returns only the summary, and the paired comparison below needs the
    per-batch sums of the very same sample path.
    """
    from raysync.simulation import queue_only_snapshots

    rows, final = queue_only_snapshots(config)
    return with_final(rows, final)


def with_final(rows: list[tuple[Any, ...]], final: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    return rows if rows[-1][0] == final[0] else [*rows, final]


def _batches(rows: list[tuple[Any, ...]], warmup: int, num_batches: int) -> dict[str, Any]:
    grid = [r for r in rows if r[0] >= warmup]
    per = (len(grid) - 1) // num_batches
    start = len(grid) - 1 - num_batches * per
    sel = [grid[start + b * per] for b in range(num_batches + 1)]
    return {
        "completions": np.array([r[0] for r in sel], dtype=float),
        "dc": np.diff([r[0] for r in sel]).astype(float),
        "dt": np.diff([r[1] for r in sel]),
        "count": np.diff(np.array([r[3] for r in sel], dtype=float), axis=0),
        "delay": np.diff(np.array([r[4] for r in sel], dtype=float), axis=0),
    }


def _ratio(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = y.sum(axis=0) / x.sum(axis=0)
    return r, (y - r * x) / x.mean(axis=0)


def paired_difference(
    rows_a: list[tuple[Any, ...]],
    rows_b: list[tuple[Any, ...]],
    *,
    warmup_fraction: float = 0.1,
    num_batches: int = 30,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Estimates of two coupled runs and the standard error of their difference.

    Both runs are cut into the same batches of completions (the snapshot grids agree
    when both runs have the same length). For each ratio ``sum Y / sum X`` (throughput:
    completions / seconds; delay of client ``i``: sum of delays / completions) the delta
    method gives per-batch residuals ``Z_b = (Y_b - R X_b) / mean X``; the residuals of the
    difference are ``Z^a_b - Z^b_b`` and the batch-means standard error follows.

    Returns:
        ``{"throughput": (est_a, est_b, se_diff, se_a), "delay": (...)}``.
    """
    total = rows_a[-1][0]
    assert rows_b[-1][0] == total
    warmup = math.ceil(warmup_fraction * total)
    a = _batches(rows_a, warmup, num_batches)
    b = _batches(rows_b, warmup, num_batches)
    np.testing.assert_array_equal(a["completions"], b["completions"])
    out = {}
    for name, (ya, xa, yb, xb) in {
        "throughput": (a["dc"], a["dt"], b["dc"], b["dt"]),
        "delay": (a["delay"], a["count"], b["delay"], b["count"]),
    }.items():
        ra, za = _ratio(ya, xa)
        rb, zb = _ratio(yb, xb)
        denom = num_batches * (num_batches - 1)
        se_diff = np.sqrt(((za - zb) ** 2).sum(axis=0) / denom)
        se_a = np.sqrt((za**2).sum(axis=0) / denom)
        out[name] = (ra, rb, se_diff, se_a)
    return out


def t_quantile(confidence: float, num_batches: int = 30) -> float:
    return float(stats.t.ppf(0.5 + confidence / 2, num_batches - 1))


def actor_ids() -> set[str]:
    """Ids of every actor the GCS knows of, dead ones included."""
    import ray._private.state

    return set(ray._private.state.actors())


def alive_actor_ids() -> set[str]:
    """Ids of the actors the GCS reports alive (private state API: no dashboard here)."""
    import ray._private.state

    return {
        actor_id
        for actor_id, info in ray._private.state.actors().items()
        if info.get("State") == "ALIVE"
    }


class RayStarted(Exception):
    """A run got past every check made before Ray starts (raised by :func:`block_ray`)."""


def block_ray(monkeypatch: Any) -> None:
    """Make ``raysync.runtime``'s ``connect`` raise :class:`RayStarted` instead of starting Ray."""
    from raysync.runtime import coordinator

    def connect(address: str | None = None) -> bool:
        raise RayStarted(address)

    monkeypatch.setattr(coordinator, "connect", connect)


def spawn_run(path: Path, *args: str, **popen: Any) -> subprocess.Popen[bytes]:
    """``raysync run PATH --no-progress ARGS`` in a fresh Python (its own local Ray instance).

    ``popen`` goes to :class:`subprocess.Popen` (stdout and stderr default to DEVNULL);
    ``RAY_ADDRESS`` is dropped so that the run never joins the session's instance.
    """
    cli = "import sys; from raysync.cli import main; sys.exit(main(sys.argv[1:]))"
    popen.setdefault("stdout", subprocess.DEVNULL)
    popen.setdefault("stderr", subprocess.DEVNULL)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.Popen(
        [sys.executable, "-c", cli, "run", str(path), "--no-progress", *args], env=env, **popen
    )


def wait_for_file(proc: subprocess.Popen[bytes], path: Path, limit: float = 900.0) -> None:
    """Wait until ``path`` exists while ``proc`` runs (its stderr's tail if it ends first).

    A hang guard, not a timing test: starting Ray on a loaded machine can take minutes.
    """
    deadline = time.monotonic() + limit
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:] if proc.stderr else ""
        assert time.monotonic() < deadline, f"no {path.name} within {limit:g} s"
        time.sleep(0.02)
