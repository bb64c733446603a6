"""Where a Ray-vs-simulator accuracy gap at the budget comes from: the run's last updates.

The recommend benchmark's Ray cells (``recommend.py --ray-from``) rerun each arm's design on
the Ray runtime and simulate it again. On tiers 1:10:100 speed_skew at T = 60 AsyncSGD was
lower on Ray on all 3 seeds (-0.23 to -0.32 points) while every other arm matched within
0.02. This script tests one explanation on the simulator alone: Ray's run applies a few
updates fewer than the simulation (the replies of tasks that end just before the deadline
reach the server after it), and the accuracy at the end of such a run moves by more than
the gap within those few updates.

For every seed of ``--ray-stem``'s records it rebuilds the arm's evaluated design (config,
workload, step, seed: ``recommend.py``'s own functions) and simulates it

* stopped at the Ray run's update count (``run.num_updates``), and
* stopped at budgets ``T - window * k / steps`` for ``k = steps .. 0``,

and reports the test accuracy of each next to Ray's. Writes
``results/STEM_end_phase.{json,md,png}``.

Run: ``.venv/bin/python benchmarks/ray_end_phase.py --ray-stem recommend_t60_skew_fresh_ray
--arm asyncsgd`` (simulator only, about 1 minute per run of 40,000 updates on one core).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import save_results  # noqa: E402
from recommend import ARMS, RESULTS, base_config, make_workload  # noqa: E402


def _source_stem(ray_payload: dict[str, Any]) -> str:
    words = ray_payload["command"].split()
    return words[words.index("--ray-from") + 1]


def end_phase(ray_stem: str, arm: str, window: float, steps: int) -> dict[str, Any]:
    """Simulated test accuracy near the end of each seed's run, next to Ray's."""
    import torch

    from raysync.objectives import DesignPoint
    from raysync.simulation import simulate
    from tuning.recommend import measurement_config

    torch.set_num_threads(1)
    ray_payload = json.loads((RESULTS / f"{ray_stem}.json").read_text())
    source = _source_stem(ray_payload)
    sim_records = {
        (r["partition"], r["tiers"], r["budget"], r["seed"]): r
        for r in json.loads((RESULTS / f"{source}.json").read_text())["records"]
    }
    seeds = []
    for ray_rec in ray_payload["records"]:
        if arm not in ray_rec["arms"]:
            continue
        key = (ray_rec["partition"], ray_rec["tiers"], ray_rec["budget"], ray_rec["seed"])
        rec = sim_records[key]
        part, tiers, budget, seed = key
        cfg = base_config(part, tiers, seed, rec["max_train"], rec.get("model", "logreg"))
        workload = make_workload(cfg, part, rec.get("eval_samples"))
        point = DesignPoint.from_dict(rec["arms"][arm]["point"])
        ray_arm = ray_rec["arms"][arm]

        def run(stop_budget: float, cap: int | None = None) -> tuple[float, int]:
            config = measurement_config(cfg, point, stop_budget, 8, seed)  # noqa: B023
            config = config.replace(run=dataclasses.replace(config.run, num_updates=cap))
            res = simulate(config, workload=workload)  # noqa: B023
            return float(res.final_test_accuracy), int(res.num_updates)

        at_count, count = run(budget, ray_arm["updates"])
        sweep = []
        for k in range(steps, -1, -1):
            b = budget - window * k / steps
            acc, n = run(b)
            sweep.append({"budget": b, "test_accuracy": acc, "updates": n})
            print(f"{part} {tiers} T={budget:g} seed={seed} {arm}: T'={b:.3f} acc={acc:.4f} "
                  f"updates={n}", file=sys.stderr, flush=True)
        accs = np.array([s["test_accuracy"] for s in sweep])
        seeds.append({
            "partition": part, "tiers": tiers, "budget": budget, "seed": seed,
            "point": rec["arms"][arm]["point"],
            "ray_test_accuracy": ray_arm["test_accuracy"], "ray_updates": ray_arm["updates"],
            "sim_test_accuracy": ray_arm["sim_test_accuracy"],
            "sim_updates": ray_arm["sim_updates"],
            "sim_at_ray_count": at_count, "sim_at_ray_count_updates": count,
            "sweep": sweep,
            "sweep_range": float(accs.max() - accs.min()),
            "sweep_sd": float(accs.std(ddof=1)),
        })
    if not seeds:
        raise SystemExit(f"ray_end_phase.py: {ray_stem} has no {arm} arm")
    return {"ray_stem": ray_stem, "source_stem": source, "arm": arm, "window": window,
            "steps": steps, "seeds": seeds}


def _mean_se(values: list[float]) -> str:
    x = np.asarray(values, dtype=float) * 100
    se = x.std(ddof=1) / math.sqrt(len(x)) if len(x) > 1 else math.nan
    return f"{x.mean():+.2f} ± {se:.2f}"


def markdown(payload: dict[str, Any]) -> str:
    rows = payload["seeds"]
    lines = [
        f"## End phase of `{payload['arm']}` on `{payload['ray_stem']}`",
        "",
        f"Run: `{payload['command']}` ({payload['wall_seconds'] / 60:.0f} min, 1-min load "
        f"{payload['load_average_1min']:.1f} at the start; simulator only). Test accuracy (%) "
        f"of the Ray run, of the simulation to the budget, of the simulation stopped at the "
        f"Ray run's update count, and the range and SD of the simulated accuracy over "
        f"{payload['steps'] + 1} stops in the last {payload['window']:g} config seconds.",
        "",
        "| cell | seed | Ray (updates) | sim to T (updates) | sim at Ray's count | "
        "Ray - sim to T | Ray - sim at count | last-window range / SD |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['partition']}, {r['tiers']}, T={r['budget']:g} | {r['seed']} | "
            f"{100 * r['ray_test_accuracy']:.2f} ({r['ray_updates']}) | "
            f"{100 * r['sim_test_accuracy']:.2f} ({r['sim_updates']}) | "
            f"{100 * r['sim_at_ray_count']:.2f} | "
            f"{100 * (r['ray_test_accuracy'] - r['sim_test_accuracy']):+.2f} | "
            f"{100 * (r['ray_test_accuracy'] - r['sim_at_ray_count']):+.2f} | "
            f"{100 * r['sweep_range']:.2f} / {100 * r['sweep_sd']:.2f} |"
        )
    to_t = [r["ray_test_accuracy"] - r["sim_test_accuracy"] for r in rows]
    at_n = [r["ray_test_accuracy"] - r["sim_at_ray_count"] for r in rows]
    lines += [
        "",
        f"Mean over the seeds (points, ± SE): Ray - sim to T {_mean_se(to_t)}; "
        f"Ray - sim at Ray's update count {_mean_se(at_n)}.",
        "",
    ]
    return "\n".join(lines)


def plot(payload: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 3.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, r in enumerate(payload["seeds"]):
        color = f"C{i}"
        n0 = r["sim_updates"]
        xs = [s["updates"] - n0 for s in r["sweep"]]
        ys = [100 * s["test_accuracy"] for s in r["sweep"]]
        ax.plot(xs, ys, marker=".", color=color, label=f"seed {r['seed']}: simulator")
        ax.scatter([r["ray_updates"] - n0], [100 * r["ray_test_accuracy"]], marker="x",
                   s=60, color=color, label=f"seed {r['seed']}: Ray")
    ax.set_xlabel("updates relative to the simulation's count at T")
    ax.set_ylabel("test accuracy at the stop (%)")
    ax.set_title(f"{payload['arm']}: the last {payload['window']:g} config s", fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ray-stem", required=True, help="a recommend.py --ray-from output")
    parser.add_argument("--arm", default="asyncsgd", choices=ARMS)
    parser.add_argument("--window", type=float, default=0.1,
                        help="config seconds before T to sweep (default 0.1)")
    parser.add_argument("--steps", type=int, default=10, help="stops in the window - 1")
    args = parser.parse_args(argv)
    if not (RESULTS / f"{args.ray_stem}.json").is_file():
        parser.error(f"--ray-stem: {RESULTS / args.ray_stem}.json does not exist")
    if not (math.isfinite(args.window) and args.window > 0) or args.steps < 1:
        parser.error("--window must be a finite number > 0 and --steps an integer >= 1")
    load = os.getloadavg()[0]
    start = time.perf_counter()
    payload = end_phase(args.ray_stem, args.arm, args.window, args.steps)
    payload.update({
        "command": "benchmarks/ray_end_phase.py " + " ".join(sys.argv[1:] if argv is None
                                                             else argv),
        "wall_seconds": time.perf_counter() - start, "load_average_1min": load,
    })
    text = markdown(payload)

    def write_text(_payload: dict[str, Any], path: Path) -> None:
        path.write_text(text)

    save_results(f"{args.ray_stem}_end_phase", payload, write_text, plot)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
