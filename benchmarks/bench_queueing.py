"""Benchmark of the queueing engine: MVA vs Buzen (rescaled) vs brute force.

Claim checked: ``analyze`` (exact MVA) solves ``n = 10,000`` clients with ``C = 1,000`` tasks
in under 0.2 s on a 2-core machine, and the three solvers agree.

Usage::

    python benchmarks/bench_queueing.py [--quick]

Writes ``benchmarks/results/bench_queueing.{json,png,md}``.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from _common import best_of, machine, rel, save_results

from raysync.queueing import ClosedNetwork, analyze

TARGET_S = 0.2


def network(n: int, c: int, seed: int = 0) -> ClosedNetwork:
    rng = np.random.default_rng(seed)
    mu = rng.lognormal(0.0, 1.0, n)  # heterogeneous fleet
    p = rng.dirichlet(np.ones(n)) + 1e-3 / n
    return ClosedNetwork(mu=mu, p=p / p.sum(), concurrency=c)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeats = 2 if args.quick else 5
    analyze(network(10, 10))  # warm up imports

    grid = []
    for n in (10, 100, 1_000, 10_000):
        for c in (10, 100, 1_000):
            net = network(n, c)
            reps = repeats if n * c < 10_000_000 else max(3, repeats - 2)
            mva_s = best_of(functools.partial(analyze, net), reps)
            buzen_s = best_of(functools.partial(analyze, net, method="buzen"), reps)
            a, b = analyze(net), analyze(net, method="buzen")
            row = {
                "n": n,
                "C": c,
                "mva_s": mva_s,
                "buzen_s": buzen_s,
                "rel_diff_throughput": rel(a.throughput, b.throughput),
                "rel_diff_delay": rel(a.mean_relative_delay, b.mean_relative_delay),
                "throughput": a.throughput,
            }
            grid.append(row)
            print(
                f"n={n:>6} C={c:>5}  mva {mva_s * 1e3:8.2f} ms  buzen {buzen_s * 1e3:8.2f} ms  "
                f"rel.diff {row['rel_diff_throughput']:.1e}/{row['rel_diff_delay']:.1e}",
                flush=True,
            )

    brute = []
    for n, c in ((2, 4), (3, 6), (4, 6), (4, 10), (6, 8)):
        net = network(n, c)
        brute_s = best_of(functools.partial(analyze, net, method="bruteforce"), 2)
        mva_s = best_of(functools.partial(analyze, net), repeats)
        buzen_s = best_of(functools.partial(analyze, net, method="buzen"), repeats)
        a, r = analyze(net), analyze(net, method="bruteforce")
        row = {
            "n": n,
            "C": c,
            "bruteforce_s": brute_s,
            "mva_s": mva_s,
            "buzen_s": buzen_s,
            "rel_diff_throughput": rel(a.throughput, r.throughput),
            "rel_diff_delay": rel(a.mean_relative_delay, r.mean_relative_delay),
        }
        brute.append(row)
        print(
            f"n={n:>6} C={c:>5}  bruteforce {brute_s * 1e3:8.2f} ms  "
            f"rel.diff vs MVA {row['rel_diff_throughput']:.1e}/{row['rel_diff_delay']:.1e}",
            flush=True,
        )

    grads = []
    try:
        import torch

        from raysync.queueing import throughput_and_delays_torch

        torch.set_num_threads(max(1, os.cpu_count() or 1))
        for n, c in ((100, 100), (1_000, 100), (10_000, 1_000)):
            net = network(n, c)

            def step(net: ClosedNetwork = net) -> None:
                mu = torch.tensor(net.mu, requires_grad=True)
                p = torch.tensor(net.p, requires_grad=True)
                lam, delays = throughput_and_delays_torch(mu, p, net.concurrency)
                (lam + delays.mean()).backward()

            seconds = best_of(step, 3)
            grads.append({"n": n, "C": c, "torch_forward_backward_s": seconds})
            print(f"n={n:>6} C={c:>5}  torch MVA forward+backward {seconds * 1e3:8.2f} ms")
    except ImportError:  # pragma: no cover
        pass

    target = next(r for r in grid if r["n"] == 10_000 and r["C"] == 1_000)
    summary = {
        "claim": "analyze (MVA) for n=10,000, C=1,000 under 0.2 s",
        "target_s": TARGET_S,
        "measured_s": target["mva_s"],
        "met": target["mva_s"] < TARGET_S,
    }
    payload = {
        "benchmark": "bench_queueing",
        "machine": machine(),
        "summary": summary,
        "grid": grid,
        "bruteforce": brute,
        "torch_gradients": grads,
    }
    save_results("bench_queueing", payload, write_markdown, write_plot)
    print(f"claim met: {summary['met']} ({target['mva_s'] * 1e3:.1f} ms)")
    return 0


def write_markdown(payload: dict[str, Any], path: Path) -> None:
    m = payload["machine"]
    lines = [
        "### Queueing engine speed (`benchmarks/bench_queueing.py`)",
        "",
        f"Best of several runs, {m['cpu_count']} CPU cores, Python {m['python']}, "
        f"numpy {m['numpy']}; heterogeneous fleet (log-normal rates, Dirichlet routing). "
        "`rel. diff` is the largest relative difference between MVA and Buzen over "
        "`Lambda` and every `E[D_i]`.",
        "",
        "| n | C | MVA (ms) | Buzen, rescaled (ms) | rel. diff |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in payload["grid"]:
        diff = max(r["rel_diff_throughput"], r["rel_diff_delay"])
        lines.append(
            f"| {r['n']:,} | {r['C']:,} | {r['mva_s'] * 1e3:.2f} | {r['buzen_s'] * 1e3:.2f} "
            f"| {diff:.0e} |"
        )
    lines += [
        "",
        "Brute force (exact Markov chain + tagged-task chain for `E[D_i]`), small networks:",
        "",
        "| n | C | brute force (ms) | MVA (ms) | rel. diff vs MVA |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in payload["bruteforce"]:
        diff = max(r["rel_diff_throughput"], r["rel_diff_delay"])
        lines.append(
            f"| {r['n']} | {r['C']} | {r['bruteforce_s'] * 1e3:.1f} | {r['mva_s'] * 1e3:.3f} "
            f"| {diff:.0e} |"
        )
    if payload["torch_gradients"]:
        lines += [
            "",
            "Differentiable MVA in torch (float64), forward + backward of `Lambda + mean E[D]`:",
            "",
            "| n | C | forward + backward (ms) |",
            "|---:|---:|---:|",
        ]
        for r in payload["torch_gradients"]:
            lines.append(f"| {r['n']:,} | {r['C']:,} | {r['torch_forward_backward_s'] * 1e3:.1f} |")
    s = payload["summary"]
    lines += [
        "",
        f"Claim: {s['claim']}: measured {s['measured_s'] * 1e3:.1f} ms "
        f"({'met' if s['met'] else 'NOT met'}).",
        "",
    ]
    path.write_text("\n".join(lines))


def write_plot(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colors = {10: "tab:blue", 100: "tab:orange", 1_000: "tab:green"}
    for c, color in colors.items():
        rows = [r for r in payload["grid"] if r["C"] == c]
        ns = [r["n"] for r in rows]
        ax.plot(ns, [r["mva_s"] for r in rows], "o-", color=color, label=f"MVA, C={c:,}")
        ax.plot(ns, [r["buzen_s"] for r in rows], "s--", color=color, label=f"Buzen, C={c:,}")
    ax.axhline(payload["summary"]["target_s"], color="gray", lw=0.8, ls=":", label="0.2 s target")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("clients n")
    ax.set_ylabel("seconds (best of runs)")
    ax.set_title("raysync.queueing.analyze: time per solve")
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
