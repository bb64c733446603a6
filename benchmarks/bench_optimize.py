"""Optimiser timing: how long choosing p and C takes for n = 10, 100, 1000 clients.

Fleet: n clients in three speed tiers (rates 1, 10, 100, assigned in turn), wall-clock
criterion (3b) with the bound's optimal step, time budget 100, constants
``L = 1, sigma^2 = 1, M^2 = 0.5, A = 2``. Timed (best of ``--repeats`` runs, one thread):

* ``gradient``: one bound evaluation with its exact gradient at ``C = n`` (torch MVA);
* ``routing``: :func:`optimize_routing` at ``C = n`` (3 starts, L-BFGS-B on logits);
* ``scan``: :func:`optimize_concurrency` over ``C = 1..2n`` at uniform ``p`` (one MVA pass);
* ``joint``: :func:`optimize_joint` over ``p`` and ``C = 1..2n``.

Target: the routing optimiser for n = 1000 in under 5 s.
Run: ``.venv/bin/python benchmarks/bench_optimize.py``; writes
``benchmarks/results/bench_optimize.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = (10, 100, 1000)
TARGET_SECONDS = 5.0


def _best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best = float("inf")
    out = None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from raysync.objectives import (
        BoundObjective,
        ProblemConstants,
        optimize_concurrency,
        optimize_joint,
        optimize_routing,
    )

    constants = ProblemConstants(L=1.0, sigma2=1.0, M2=0.5, A=2.0)
    rows = []
    for n in SIZES:
        mu = np.array([(1.0, 10.0, 100.0)[i % 3] for i in range(n)])
        obj = BoundObjective(mu=mu, constants=constants, criterion="wall-clock",
                             time_budget=100.0)
        uniform = np.full(n, 1.0 / n)
        repeats = args.repeats if n < 1000 else 1
        t_grad, _ = _best_of(functools.partial(obj.value_and_grad, uniform, n),
                             max(3, repeats))
        t_routing, routing = _best_of(
            functools.partial(optimize_routing, obj, concurrency=n), repeats)
        t_scan, scan = _best_of(
            functools.partial(optimize_concurrency, obj, p=uniform, max_concurrency=2 * n),
            max(3, repeats))
        t_joint, joint = _best_of(
            functools.partial(optimize_joint, obj, max_concurrency=2 * n), repeats)
        row = {
            "n": n,
            "gradient_seconds": t_grad,
            "routing_seconds": t_routing,
            "routing_iterations": routing.iterations,
            "routing_evaluations": routing.evaluations,
            "routing_value": routing.value,
            "routing_converged": routing.converged,
            "uniform_value_at_C_n": obj.value(uniform, n),
            "scan_seconds": t_scan,
            "scan_best_C": scan.concurrency,
            "joint_seconds": t_joint,
            "joint_iterations": joint.iterations,
            "joint_evaluations": joint.evaluations,
            "joint_C": joint.concurrency,
            "joint_value": joint.value,
            "joint_throughput": joint.throughput,
            "joint_converged": joint.converged,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "setting": {
            "sizes": SIZES, "rates": [1.0, 10.0, 100.0], "criterion": "wall-clock",
            "time_budget": 100.0, "eta": "optimal", "constants": constants.to_dict(),
            "max_concurrency": "2n", "torch_threads": 1, "repeats": args.repeats,
        },
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                    "platform": platform.platform(),
                    "load_average": list(os.getloadavg())},
        "target_seconds_routing_n1000": TARGET_SECONDS,
        "rows": rows,
    }
    (out_dir / "bench_optimize.json").write_text(json.dumps(payload, indent=1))
    (out_dir / "bench_optimize.md").write_text(markdown(payload))
    plot(payload, out_dir / "bench_optimize.png")
    print(markdown(payload))
    return 0


def markdown(payload: dict[str, Any]) -> str:
    lines = [
        "# Optimiser timing (wall-clock criterion, optimal step, 3 speed tiers)",
        "",
        "Seconds (best of repeats, one torch thread). `routing`: p at C = n (3 starts); "
        "`scan`: C = 1..2n at uniform p; `joint`: p and C = 1..2n. "
        f"Machine load average at the end: {payload['machine']['load_average'][0]:.1f} "
        f"on {payload['machine']['cpu_count']} cores.",
        "",
        "| n | gradient | routing (iters) | scan | joint (iters) | joint C | "
        "bound: uniform C=n -> joint |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in payload["rows"]:
        lines.append(
            f"| {r['n']} | {r['gradient_seconds']:.4f} | {r['routing_seconds']:.3f} "
            f"({r['routing_iterations']}) | {r['scan_seconds']:.4f} | "
            f"{r['joint_seconds']:.3f} ({r['joint_iterations']}) | {r['joint_C']} | "
            f"{r['uniform_value_at_C_n']:.4g} -> {r['joint_value']:.4g} |"
        )
    return "\n".join(lines) + "\n"


def plot(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = payload["rows"]
    n = [r["n"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("gradient_seconds", "one value + gradient (C = n)"),
                       ("routing_seconds", "routing optimiser (C = n)"),
                       ("scan_seconds", "C scan (1..2n)"),
                       ("joint_seconds", "joint p and C (1..2n)")):
        ax.loglog(n, [r[key] for r in rows], marker="o", label=label)
    ax.axhline(payload["target_seconds_routing_n1000"], color="gray", ls="--", lw=1,
               label="5 s target")
    ax.set_xlabel("clients n")
    ax.set_ylabel("seconds")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
