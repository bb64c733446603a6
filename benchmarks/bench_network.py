"""Benchmark of communication delays, the server station and energy (docs/network.md, issue 15).

Claims measured (results in ``benchmarks/results/bench_network.{json,md,png}``):

1. **Theory vs simulator vs Ray.** Update throughput and every client's mean staleness of
   queue-only runs with exponential service, link delays and server times: the closed form
   (:func:`raysync.queueing.predict`), the simulator (99 % batch-means intervals) and the Ray
   runtime with emulated time (``time_scale = 2``) on the small network of
   ``tests/runtime_tests/test_network_delays.py``; theory vs simulator also on the
   20-client fleet of claim 2 at its optimised routing.
2. **MNIST, optimised vs AsyncSGD** (the follow-up paper's comparison, arXiv 2603.26231, on
   MNIST since EMNIST is not available offline). Fixed before any run: 20 clients in three
   tiers (7 slow at 1 task/s, 7 medium at 5/s, 6 fast at 25/s) whose links are slow where
   the clients are (downlink and uplink each exponential with mean 0.5 / 0.2 / 0.05 s), a
   server applying an update in 0.02 s on average (exponential), powers 3/8/25 W busy,
   0.5/1/3 W idle, 0.5 J per transfer, server 150 W busy, 60 W idle. Logistic regression on
   a seeded 20,000-image MNIST subsample (IID), batch 32, virtual budget 60 s, evaluations
   every 2 s. Arms: ``asyncsgd`` (return to sender, ``C = n``, unweighted); ``opt`` (the
   wall-clock bound's optimum ``(p, C)`` with the stations, Generalized AsyncSGD);
   ``opt_energy`` (the same bound under an energy budget of 80 % of ``opt``'s, from
   :func:`~raysync.objectives.optimize.optimize_with_energy`). Constants of the bound from
   a pilot run (:func:`~raysync.objectives.estimate_constants_for_config`). Step size per
   arm from {0.01, 0.03, 0.1, 0.3} by the mean validation accuracy over the run on
   selection seed 1000; then 5 evaluation seeds (0-4). Reported per arm: time to a
   validation accuracy of 0.88 (first evaluation at or above it; the budget when never),
   the energy to that point (measured mean power x time), final test accuracy, energy over
   the budget; mean and standard error.

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_network.py [--quick] [--no-ray]
    .venv/bin/python benchmarks/bench_network.py --only-ray   # claim 1's small network only

``--only-ray`` re-measures the small network (theory, simulator, Ray) and replaces that
entry in the stored JSON, keeping the other results; the Markdown and plot are rewritten
from the merged payload.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
TIERS = (  # count, service rate, mean link delay each way, busy W, idle W
    (7, 1.0, 0.5, 3, 0.5),
    (7, 5.0, 0.2, 8, 1.0),
    (6, 25.0, 0.05, 25, 3.0),
)
SERVER_MEAN = 0.02
BUDGET = 60.0
EVAL_EVERY = 2.0
TARGET = 0.88
LR_GRID = (0.01, 0.03, 0.1, 0.3)
SELECTION_SEED = 1000
EVAL_SEEDS = (0, 1, 2, 3, 4)
ARMS = ("asyncsgd", "opt", "opt_energy")


def _exp(mean: float) -> Any:
    from raysync.config import ServiceTimeSpec

    return ServiceTimeSpec(kind="exponential", mean=mean)


def fleet(seed: int = 0, *, train: bool = True) -> Any:
    """The claim-2 fleet (uniform routing, ``C = n``; arms replace routing and ``C``)."""
    from raysync.config import (
        AlgorithmConfig,
        ClientSpec,
        DataConfig,
        PowerSpec,
        RoutingConfig,
        RunConfig,
        ServerConfig,
        SystemConfig,
    )

    clients = []
    for count, rate, link, busy, idle in TIERS:
        spec = ClientSpec(
            service_time=_exp(1.0 / rate),
            downlink=_exp(link),
            uplink=_exp(link),
            power=PowerSpec(busy=f"{busy} W", idle=f"{idle} W", transfer="0.5 J"),
        )
        clients.extend([spec] * count)
    return SystemConfig(
        clients=tuple(clients),
        concurrency=len(clients),
        routing=RoutingConfig(kind="uniform"),
        algorithm=AlgorithmConfig(name="generalized_asyncsgd", lr=0.03, batch_size=32),
        data=DataConfig(dataset="mnist", partition="iid", max_train_samples=20_000),
        run=RunConfig(
            time_budget=BUDGET, eval_every_updates=None, eval_every_seconds=EVAL_EVERY,
            train=train,
        ),  # fmt: skip
        server=ServerConfig(
            update_time=_exp(SERVER_MEAN), power=PowerSpec(busy="150 W", idle="60 W")
        ),
        seed=seed,
    )


# --------------------------------------------------------------------------- claim 1
def _stats(res: Any) -> dict[str, Any]:
    return {
        "throughput": float(res.throughput),
        "throughput_ci": [float(v) for v in res.throughput_ci],
        "staleness": [float(v) for v in res.mean_relative_delay],
        "staleness_ci": np.asarray(res.relative_delay_ci, dtype=float).tolist(),
        "num_updates": int(res.num_updates),
    }


def agreement(config: Any, *, ray_run: bool) -> dict[str, Any]:
    """Theory, simulator and (optionally) Ray on one queue-only config."""
    from raysync.queueing import predict
    from raysync.simulation import simulate

    theory = predict(config)
    out: dict[str, Any] = {
        "theory": {
            "throughput": theory.throughput,
            "staleness": theory.mean_relative_delay.tolist(),
        },
        "simulator": _stats(simulate(config)),
    }
    if ray_run:
        from raysync.runtime import run

        start = time.perf_counter()
        res = run(config)
        out["ray"] = _stats(res)
        scale = config.run.time_scale  # the runtime measures per wall second
        out["ray"]["throughput"] = float(res.extras["throughput_config_units"])
        out["ray"]["throughput_ci"] = [float(v) * scale for v in res.throughput_ci]
        out["ray"]["time_scale"] = scale
        out["ray"]["wall_seconds"] = time.perf_counter() - start
        out["ray"]["lag_mean"] = res.extras.get("lag_mean")
        # The Ray figure is a wall-clock measurement whose reply lag grows with the load.
        out["ray"]["load_average"] = [round(v, 2) for v in os.getloadavg()]
    return out


def small_network(updates: int) -> Any:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from runtime_tests.test_network_delays import _config

    return _config(updates=updates)


# --------------------------------------------------------------------------- claim 2
def designs(constants: Any) -> dict[str, dict[str, Any]]:
    """The arms' routing, concurrency and algorithm (from the bound with the stations)."""
    from raysync.objectives import BoundObjective
    from raysync.objectives.energy import power_figures
    from raysync.objectives.optimize import optimize_with_energy
    from raysync.queueing.predict import station_parameters

    config = fleet()
    latency, rate = station_parameters(config)
    objective = BoundObjective(
        mu=np.asarray(config.service_rates), constants=constants, criterion="wall-clock",
        time_budget=BUDGET, client_latency=latency, server_rate=rate,
    )  # fmt: skip
    figures = power_figures(config)
    n = config.num_clients
    free = optimize_with_energy(objective, figures, max_concurrency=3 * n)
    tight = optimize_with_energy(
        objective, figures, max_concurrency=3 * n, energy_budget=0.8 * free.energy
    )
    out = {"asyncsgd": {"routing": None, "concurrency": n, "algorithm": "asyncsgd"}}
    for name, choice in (("opt", free), ("opt_energy", tight)):
        out[name] = {
            "routing": [float(v) for v in choice.optimum.p],
            "concurrency": int(choice.optimum.concurrency),
            "algorithm": "generalized_asyncsgd",
            "bound": float(choice.optimum.value),
            "predicted_throughput": float(choice.optimum.throughput),
            "predicted_energy_J": float(choice.energy),
            "predicted_power_W": float(choice.power),
        }
    return out


def arm_config(design: dict[str, Any], lr: float, seed: int) -> Any:
    from raysync.config import AlgorithmConfig, RoutingConfig

    config = fleet(seed)
    if design["routing"] is None:
        routing = RoutingConfig(kind="return_to_sender")
    else:
        p = np.asarray(design["routing"])
        routing = RoutingConfig(kind="fixed", p=tuple(float(v) for v in p / p.sum()))
    return config.replace(
        routing=routing,
        concurrency=design["concurrency"],
        algorithm=AlgorithmConfig(name=design["algorithm"], lr=lr, batch_size=32),
    )


def train_once(config: Any, workload: Any) -> dict[str, Any]:
    from raysync.objectives.energy import measured_energy
    from raysync.simulation import simulate

    res = simulate(config, workload=workload)
    power = measured_energy(config, res).power
    val = np.asarray(res.val_accuracy)
    times = np.asarray(res.times)
    hit = np.flatnonzero(val >= TARGET)
    reach = float(times[hit[0]]) if hit.size else math.nan
    return {
        "final_test_accuracy": float(res.final_test_accuracy),
        "mean_val_accuracy": float(np.nanmean(val[1:])),
        "time_to_target": reach,
        "energy_to_target_J": power * reach if hit.size else math.nan,
        "power_W": power,
        "energy_budget_J": power * float(res.elapsed),
        "throughput": float(res.throughput),
        "times": times.tolist(),
        "val_accuracy": val.tolist(),
    }


def _mean_se(values: list[float]) -> tuple[float, float, int]:
    arr = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if arr.size == 0:
        return math.nan, math.nan, 0
    se = float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else math.nan
    return float(arr.mean()), se, int(arr.size)


def comparison(quick: bool) -> dict[str, Any]:
    import torch

    from raysync.objectives import estimate_constants_for_config
    from raysync.workload import build_workload

    torch.set_num_threads(1)
    estimate = estimate_constants_for_config(fleet(SELECTION_SEED))
    constants = estimate.constants
    arms = designs(constants)
    seeds = EVAL_SEEDS[:2] if quick else EVAL_SEEDS
    grid = LR_GRID[1:3] if quick else LR_GRID
    selection: dict[str, dict[str, float]] = {}
    chosen: dict[str, float] = {}
    workloads = {SELECTION_SEED: build_workload(fleet(SELECTION_SEED))}
    for arm in ARMS:
        scores = {}
        for lr in grid:
            cfg = arm_config(arms[arm], lr, SELECTION_SEED)
            scores[str(lr)] = train_once(cfg, workloads[SELECTION_SEED])["mean_val_accuracy"]
            print(f"select {arm} lr={lr}: mean val acc {scores[str(lr)]:.4f}", flush=True)
        selection[arm] = scores
        chosen[arm] = float(max(scores, key=lambda k: scores[k]))
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    for seed in seeds:
        workload = build_workload(fleet(seed))
        for arm in ARMS:
            out = train_once(arm_config(arms[arm], chosen[arm], seed), workload)
            runs[arm].append(out)
            print(
                f"seed {seed} {arm}: time to {TARGET} = {out['time_to_target']:.3g} s, "
                f"test acc {out['final_test_accuracy']:.4f}, {out['power_W']:.4g} W",
                flush=True,
            )
    summary: dict[str, dict[str, Any]] = {}
    for arm in ARMS:
        rows = runs[arm]
        summary[arm] = {
            key: _mean_se([r[key] for r in rows])
            for key in (
                "time_to_target", "energy_to_target_J", "final_test_accuracy", "power_W",
                "energy_budget_J", "throughput",
            )
        }  # fmt: skip
        summary[arm]["reached"] = sum(math.isfinite(r["time_to_target"]) for r in rows)
    return {
        "constants": constants.to_dict(),
        "designs": arms,
        "lr_selection": selection,
        "lr": chosen,
        "seeds": list(seeds),
        "runs": runs,
        "summary": summary,
    }


# --------------------------------------------------------------------------- output
def write_outputs(payload: dict[str, Any]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_network.json").write_text(json.dumps(payload, indent=2, default=float))
    fig = Figure(figsize=(11, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2, 1)
    small = payload["agreement"]["small"]
    x = np.arange(len(small["theory"]["staleness"]))
    ax.bar(x - 0.25, small["theory"]["staleness"], 0.25, label="theory")
    ax.bar(x, small["simulator"]["staleness"], 0.25, label="simulator")
    if "ray" in small:
        ax.bar(x + 0.25, small["ray"]["staleness"], 0.25, label="Ray (emulated)")
    ax.set_xlabel("client")
    ax.set_ylabel("mean staleness E[D_i] (updates)")
    ax.set_title("links + server station: staleness")
    ax.legend(fontsize=8)
    if "comparison" in payload:
        ax2 = fig.add_subplot(1, 2, 2)
        comp = payload["comparison"]
        for arm in ARMS:
            curves = comp["runs"][arm]
            t = np.asarray(curves[0]["times"])
            acc = np.nanmean([c["val_accuracy"][: len(t)] for c in curves], axis=0)
            ax2.plot(t, acc, label=f"{arm} (lr {comp['lr'][arm]:g})")
        ax2.axhline(TARGET, color="0.5", ls=":")
        ax2.set_xlabel("virtual time (s)")
        ax2.set_ylabel("validation accuracy (mean over seeds)")
        ax2.set_title("MNIST with links and a slow server")
        ax2.set_ylim(0.6, 0.95)
        ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "bench_network.png")
    (RESULTS / "bench_network.md").write_text(markdown(payload))


def _fmt(triple: tuple[float, float, int], digits: int = 3) -> str:
    mean, se, k = triple
    if not math.isfinite(mean):
        return "n/a"
    tail = f" +- {se:.{digits}g}" if math.isfinite(se) else ""
    return f"{mean:.{digits}g}{tail} ({k})"


def markdown(payload: dict[str, Any]) -> str:
    lines = ["# bench_network", "", "## Theory vs simulator vs Ray (throughput, updates/s)", ""]
    lines += [
        "| network | theory | simulator (99% CI) | Ray emulated (99% CI) |",
        "|---|---|---|---|",
    ]
    for name, block in payload["agreement"].items():
        sim = block["simulator"]
        ray_cell = "-"
        if "ray" in block:
            r = block["ray"]
            low, high = r["throughput_ci"]
            ray_cell = f"{r['throughput']:.4g} ({low:.4g}-{high:.4g})"
            if "load_average" in r:
                ray_cell += f", load {r['load_average'][0]:.1f}"
        lines.append(
            f"| {name} | {block['theory']['throughput']:.4g} | {sim['throughput']:.4g} "
            f"({sim['throughput_ci'][0]:.4g}-{sim['throughput_ci'][1]:.4g}) | {ray_cell} |"
        )
    if "comparison" in payload:
        comp = payload["comparison"]
        lines += [
            "",
            f"## MNIST: time and energy to {TARGET} validation accuracy "
            f"(mean +- SE (runs reaching it), {len(comp['seeds'])} seeds)",
            "",
            "| arm | C | lr | time to target (s) | energy to target (J) | test acc at 60 s "
            "| power (W) | updates/s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for arm in ARMS:
            s = comp["summary"][arm]
            lines.append(
                f"| {arm} | {comp['designs'][arm]['concurrency']} | {comp['lr'][arm]:g} | "
                f"{_fmt(s['time_to_target'])} | {_fmt(s['energy_to_target_J'])} | "
                f"{_fmt(s['final_test_accuracy'], 4)} | {_fmt(s['power_W'])} | "
                f"{_fmt(s['throughput'])} |"
            )
    return "\n".join(lines) + "\n"


def only_ray(start: float) -> int:
    """Re-measure the small network (theory, simulator, Ray) into the stored payload."""
    stored = RESULTS / "bench_network.json"
    if not stored.is_file():
        print(f"--only-ray needs a stored {stored} to merge into; run the full benchmark first")
        return 2
    payload = json.loads(stored.read_text())
    small = small_network(3_000)
    payload["agreement"]["small"] = agreement(
        dataclasses.replace(small, run=dataclasses.replace(small.run, num_updates=3_000)),
        ray_run=True,
    )
    payload["agreement"]["small"]["seconds"] = time.perf_counter() - start
    write_outputs(payload)
    print((RESULTS / "bench_network.md").read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, 2 step sizes")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray runs")
    parser.add_argument("--no-mnist", action="store_true", help="skip claim 2")
    parser.add_argument(
        "--only-ray",
        action="store_true",
        help="re-run only claim 1's small network with Ray and merge it into the stored JSON",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.only_ray:
        return only_ray(start)
    payload: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "agreement": {},
    }
    small = small_network(3_000)
    payload["agreement"]["small"] = agreement(
        dataclasses.replace(small, run=dataclasses.replace(small.run, num_updates=3_000)),
        ray_run=not args.no_ray,
    )
    if not args.no_mnist:
        payload["comparison"] = comparison(args.quick)
        design = payload["comparison"]["designs"]["opt"]
        queue = arm_config(design, 0.03, 0).replace(
            run=fleet().run.__class__(num_updates=100_000, train=False)
        )
        payload["agreement"]["fleet20_opt"] = agreement(queue, ray_run=False)
    payload["seconds"] = time.perf_counter() - start
    write_outputs(payload)
    print((RESULTS / "bench_network.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
