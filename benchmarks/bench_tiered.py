"""Benchmark: exact analysis of fleets given as tiers (issue 17, "a million clients").

Claim checked: :func:`raysync.queueing.analyze_tiered` solves ``n = 10^6`` clients in 10
tiers with ``C = 10^4`` tasks in under 50 ms, and equals the per-client MVA wherever both
run (largest relative difference over ``Lambda`` and every client's ``E[D_i]``). The
per-client solver on the same fleet is timed in the same run as the reference (ratio), and
the 1-minute load average is recorded with the figures.

Usage::

    python benchmarks/bench_tiered.py [--quick]

Writes ``benchmarks/results/bench_tiered.{json,png,md}``.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

import numpy as np
from _common import best_of, machine, rel, save_results

from raysync.queueing import TieredNetwork, analyze, analyze_tiered

TARGET_S = 0.05


def fleet(n: int, tiers: int, c: int) -> TieredNetwork:
    counts = np.full(tiers, n // tiers, dtype=np.int64)
    counts[: n % tiers] += 1
    mu = np.logspace(0.0, 2.0, tiers)  # tiers 1x .. 100x
    weights = np.sqrt(mu)  # route more to fast tiers, as the optimisers do
    return TieredNetwork(counts=counts, mu=mu, p=weights / np.dot(counts, weights), concurrency=c)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    rows = []
    for n, tiers, c in (
        (1_000, 10, 100),
        (10_000, 10, 1_000),
        (100_000, 10, 1_000),
        (1_000_000, 10, 10_000),
        (1_000_000, 100, 10_000),
    ):
        net = fleet(n, tiers, c)
        tiered_s = best_of(functools.partial(analyze_tiered, net), repeats)
        row: dict[str, Any] = {"n": n, "tiers": tiers, "C": c, "tiered_s": tiered_s}
        if n * c <= 10**8:  # the per-client reference fits comfortably in memory and time
            flat_net = net.to_closed_network()
            row["per_client_s"] = best_of(
                functools.partial(analyze, flat_net), max(2, repeats // 3)
            )
            a, b = analyze_tiered(net), analyze(flat_net)
            row["rel_diff"] = max(
                rel(a.throughput, b.throughput),
                rel(a.per_client("mean_relative_delay"), b.mean_relative_delay),
            )
            row["speedup"] = row["per_client_s"] / tiered_s
        rows.append(row)
        extra = (
            f"  per-client {row['per_client_s'] * 1e3:9.2f} ms  x{row['speedup']:.0f}"
            f"  rel.diff {row['rel_diff']:.1e}"
            if "per_client_s" in row
            else ""
        )
        print(f"n={n:>9,} tiers={tiers:>3} C={c:>6,}  tiered {tiered_s * 1e3:7.2f} ms{extra}")
    target = next(r for r in rows if r["n"] == 1_000_000 and r["tiers"] == 10)
    payload: dict[str, Any] = {
        "benchmark": "bench_tiered",
        "machine": machine(load=True),
        "summary": {
            "claim": "analyze_tiered for n=10^6 in 10 tiers, C=10^4 under 50 ms",
            "target_s": TARGET_S,
            "measured_s": target["tiered_s"],
            "met": target["tiered_s"] < TARGET_S,
        },
        "rows": rows,
    }
    save_results("bench_tiered", payload, write_markdown, write_plot)
    print(f"claim met: {payload['summary']['met']} ({target['tiered_s'] * 1e3:.1f} ms)")
    return 0


def write_markdown(payload: dict[str, Any], path: Path) -> None:
    m = payload["machine"]
    lines = [
        "### Tiered analysis (`benchmarks/bench_tiered.py`)",
        "",
        f"Best of several runs, {m['cpu_count']} CPU cores (1-min load average "
        f"{m['load_average_1min']:.1f} during the run), Python {m['python']}. Tiers with rates "
        "1x..100x; the per-client MVA on the same fleet is the reference, timed in the same run.",
        "",
        "| n | tiers | C | tiered (ms) | per-client MVA (ms) | speed-up | rel. diff |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in payload["rows"]:
        ref = f"{r['per_client_s'] * 1e3:.1f}" if "per_client_s" in r else "-"
        speed = f"{r['speedup']:.0f}x" if "speedup" in r else "-"
        diff = f"{r['rel_diff']:.0e}" if "rel_diff" in r else "-"
        lines.append(
            f"| {r['n']:,} | {r['tiers']} | {r['C']:,} | {r['tiered_s'] * 1e3:.2f} | {ref} "
            f"| {speed} | {diff} |"
        )
    s = payload["summary"]
    lines += [
        "",
        f"Claim ({s['claim']}): {'met' if s['met'] else 'NOT met'}, "
        f"{s['measured_s'] * 1e3:.1f} ms.",
    ]
    path.write_text("\n".join(lines) + "\n")


def write_plot(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = payload["rows"]
    fig, ax = plt.subplots(figsize=(6, 4))
    labels = [f"n={r['n']:.0e}\nT={r['tiers']}, C={r['C']:.0e}" for r in rows]
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["tiered_s"] * 1e3 for r in rows], 0.4, label="tiered MVA")
    ax.bar(
        x + 0.2,
        [r.get("per_client_s", np.nan) * 1e3 for r in rows],
        0.4,
        label="per-client MVA",
    )
    ax.axhline(TARGET_S * 1e3, color="k", ls="--", lw=1, label="50 ms target")
    ax.set_yscale("log")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("time (ms, best of runs)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
