"""Client updates per second of Flower's simulation engine on raysync's workload.

Runs inside the Flower virtual environment (``benchmarks/flower/.venv``, made by
``setup_venv.sh``), never in raysync's own: ``flwr[simulation]`` pins its own Ray. The model,
the data and the unit of work are raysync's, imported from the repository's pure-python
modules (``raysync.workload``, ``raysync.client``, ``raysync.data``, ``raysync.models``;
nothing here imports ``raysync.runtime`` or anything else that imports Ray from raysync's
side):

* data and model: :func:`raysync.workload.build_workload` of a raysync ``SystemConfig`` with
  the same dataset, IID partition, model (``logreg``) and seed as the raysync side, so both
  frameworks train on identical partitions from identical initial parameters;
* one client update (one Flower ``train`` message = one "fit"): the client draws one
  minibatch of ``batch_size`` rows of its partition and returns the flat float32 gradient of
  the mean cross-entropy at the received parameters, through
  :func:`raysync.client.run_client_work` with ``ClientWork(kind="gradient")``, exactly what
  a raysync client actor does per task;
* server: a FedAvg subclass (``FedSGD``) from Flower's message API samples ``K`` of the
  ``N`` nodes per round (``fraction_train = K / N``, ``min_train_nodes = K``), averages the
  ``K`` gradients with FedAvg's own weighted ``aggregate_arrayrecords`` and takes one SGD
  step ``w <- w - lr * mean(g)``; no federated evaluation (``fraction_evaluate = 0``).

API (flwr 1.42, read from the installed source): ``flwr.simulation.run_simulation(
server_app, client_app, num_supernodes, backend_config)`` with a ``ServerApp`` whose
``@main()`` drives the rounds through ``Grid.send_and_receive`` and a ``ClientApp`` with a
``@train()`` function. ``run_simulation`` is marked deprecated in 1.42 in favour of the
``flwr run`` CLI, which runs the same Simulation Runtime (``flwr.simulation.run_simulation.
_run_simulation`` -> ``vce.start_vce`` -> ``RayBackend``) behind a SuperLink; the Python entry
point is the one that can be timed in-process.

Measurement: the server loop records the wall time of every round. Start-up (``ray.init``,
the actor pool, the actors' first import of torch and loading of the data) falls in the
first round, so the first ``--warmup-rounds`` rounds are excluded and reported as
``startup_s``; the measured window runs from the end of warm-up for ``--seconds`` seconds,
and ``updates_per_s`` = client train calls completed in it / its wall seconds. Each
configuration runs in a fresh subprocess (one Ray instance each).

Usage (from the repository root)::

    benchmarks/flower/.venv/bin/python benchmarks/flower/flower_clients.py \
        --num-clients 10 100 1000 --clients-per-round 10 --num-cpus 1 --seconds 40 \
        --out benchmarks/results/tmp/flower.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # no phoning home from the benchmark
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
for _p in (str(REPO_ROOT), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402
from flwr.app import (  # noqa: E402
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp  # noqa: E402

RESULT_KEY = "flower"

# --------------------------------------------------------------------------- raysync workload


def make_system_config(
    num_clients: int, *, dataset: str, seed: int, batch_size: int, lr: float
) -> Any:
    """The raysync ``SystemConfig`` whose workload both frameworks train (Ray-free import)."""
    from raysync.config import (
        AlgorithmConfig,
        ClientSpec,
        DataConfig,
        ModelConfig,
        RunConfig,
        SystemConfig,
    )

    return SystemConfig(
        clients=tuple(ClientSpec() for _ in range(num_clients)),
        concurrency=1,
        algorithm=AlgorithmConfig(name="generalized_asyncsgd", lr=lr, batch_size=batch_size),
        data=DataConfig(dataset=dataset, partition="iid"),
        model=ModelConfig(name="logreg"),
        run=RunConfig(time_scale=0.0),
        seed=seed,
    )


# One cache per process (the driver and every Ray actor): the workload is built once, the
# clients' shards are cut once, the GradientComputer is reused for every call.
_CACHE: dict[tuple[Any, ...], Any] = {}


def _workload(dataset: str, num_clients: int, seed: int) -> Any:
    key = ("workload", dataset, num_clients, seed)
    if key not in _CACHE:
        from raysync.workload import build_workload

        config = make_system_config(num_clients, dataset=dataset, seed=seed, batch_size=32, lr=0.05)
        _CACHE[key] = build_workload(config)
    return _CACHE[key]


def _client_state(dataset: str, num_clients: int, seed: int, num_threads: int) -> Any:
    key = ("state", dataset, num_clients, seed)
    if key not in _CACHE:
        import torch

        torch.set_num_threads(max(1, num_threads))  # as raysync's client actors do
        workload = _workload(dataset, num_clients, seed)
        _CACHE[key] = {"workload": workload, "computer": workload.make_computer(), "shards": {}}
    return _CACHE[key]


# --------------------------------------------------------------------------- ClientApp

# Module level, so that Ray pickles it by reference (``flower_clients.client_app``) and each
# actor imports this module once instead of receiving the function by value on every call.
client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """One client update: one minibatch gradient at the received parameters."""
    from raysync.client import run_client_work
    from raysync.strategies import ClientWork

    start = time.perf_counter()
    cfg = msg.content["config"]
    dataset = str(cfg["dataset"])
    num_clients = int(cfg["num-clients"])
    seed = int(cfg["seed"])
    state = _client_state(dataset, num_clients, seed, int(cfg["torch-threads"]))
    pid = int(context.node_config["partition-id"])
    shards = state["shards"]
    if pid not in shards:
        shards[pid] = state["workload"].client_data(pid)
    x, y = shards[pid]
    params = msg.content["arrays"]["params"].numpy()
    rng = np.random.default_rng([seed, pid, int(cfg["server-round"])])
    work = ClientWork(kind="gradient", batch_size=int(cfg["batch-size"]))
    ready = time.perf_counter()
    out = run_client_work(state["computer"], work, params, x, y, rng)
    done = time.perf_counter()
    metrics = MetricRecord(
        {
            "num-examples": int(out.num_samples),
            "loss": float(out.loss),
            "compute-s": done - ready,
            "clientapp-s": done - start,
        }
    )
    content = RecordDict({"arrays": ArrayRecord({"grad": Array(out.payload)}), "metrics": metrics})
    return Message(content=content, reply_to=msg)


# --------------------------------------------------------------------------- ServerApp


def _fedsgd_class() -> type:
    from flwr.serverapp.strategy import FedAvg

    class FedSGD(FedAvg):
        """FedAvg's sampling and weighted averaging, applied to gradients: one SGD step."""

        def __init__(self, *, lr: float, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.lr = lr
            self._arrays: ArrayRecord | None = None

        def configure_train(self, server_round, arrays, config, grid):
            self._arrays = arrays
            return super().configure_train(server_round, arrays, config, grid)

        def aggregate_train(self, server_round, replies):
            avg, metrics = super().aggregate_train(server_round, replies)
            if avg is None or self._arrays is None:
                return None, metrics
            params = self._arrays["params"].numpy()
            new = (params - self.lr * avg["grad"].numpy()).astype(np.float32)
            return ArrayRecord({"params": Array(new)}), metrics

    return FedSGD


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """One simulation: ``args.num_clients`` virtual clients, ``K`` per round."""
    import logging

    import flower_clients as module  # the importable copy, so Ray pickles by reference
    import flwr
    import ray
    import torch
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    n = int(args.num_clients)
    k = min(int(args.clients_per_round), n)
    t_call = time.perf_counter()
    workload = _workload(args.dataset, n, args.seed)
    build_s = time.perf_counter() - t_call
    initial = np.array(workload.initial_params, dtype=np.float32)
    out: dict[str, Any] = {"rounds": []}

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = _fedsgd_class()(
            lr=args.lr,
            fraction_train=k / n,
            fraction_evaluate=0.0,
            min_train_nodes=k,
            min_available_nodes=n,
        )
        arrays = ArrayRecord({"params": Array(initial)})
        train_config = ConfigRecord(
            {
                "dataset": args.dataset,
                "num-clients": n,
                "seed": args.seed,
                "batch-size": args.batch_size,
                "torch-threads": max(1, int(args.num_cpus)),
            }
        )
        rounds = out["rounds"]
        measure_start: float | None = None
        server_round = 0
        while True:
            server_round += 1
            t0 = time.perf_counter()
            messages = strategy.configure_train(server_round, arrays, train_config, grid)
            replies = list(grid.send_and_receive(messages, timeout=args.round_timeout))
            t_replies = time.perf_counter()
            new_arrays, _ = strategy.aggregate_train(server_round, replies)
            t1 = time.perf_counter()
            if new_arrays is not None:
                arrays = new_arrays
            ok = [m for m in replies if not m.has_error()]
            mets = [m.content["metrics"] for m in ok]
            rounds.append(
                {
                    "round": server_round,
                    "start": t0 - t_call,
                    "end": t1 - t_call,
                    "seconds": t1 - t0,
                    "aggregate_s": t1 - t_replies,
                    "sent": k,
                    "completed": len(ok),
                    "errors": len(replies) - len(ok),
                    "compute_s": [float(m["compute-s"]) for m in mets],
                    "clientapp_s": [float(m["clientapp-s"]) for m in mets],
                    "loss": float(np.mean([m["loss"] for m in mets])) if mets else None,
                }
            )
            if server_round == args.warmup_rounds:
                measure_start = t1
            if measure_start is not None and t1 - measure_start >= args.seconds:
                break
            if server_round > args.warmup_rounds and len(ok) == 0:
                break  # every client failed: stop instead of spinning
        out["final_params"] = arrays["params"].numpy().copy()
        out["server_done"] = time.perf_counter() - t_call

    backend_config = {
        "client_resources": {"num_cpus": float(args.num_cpus), "num_gpus": 0.0},
        # address="local": always a private Ray instance, never a cluster someone else
        # started on this machine with `ray start`.
        "init_args": {
            "address": "local",
            "num_cpus": int(args.ray_num_cpus),
            "include_dashboard": False,
        },
    }
    logging.getLogger("flwr").setLevel(logging.WARNING if not args.verbose else logging.INFO)
    run_simulation(
        server_app=server_app,
        client_app=module.client_app,
        num_supernodes=n,
        backend_config=backend_config,
    )
    t_end = time.perf_counter() - t_call

    rounds = out["rounds"]
    if len(rounds) <= args.warmup_rounds:
        raise RuntimeError(f"the simulation ran only {len(rounds)} rounds: {rounds}")
    warm = rounds[: args.warmup_rounds]
    measured = rounds[args.warmup_rounds :]
    window = measured[-1]["end"] - warm[-1]["end"]
    updates = sum(r["completed"] for r in measured)
    num_actors = max(1, int(args.ray_num_cpus / args.num_cpus))
    compute = [c for r in measured for c in r["compute_s"]]
    clientapp = [c for r in measured for c in r["clientapp_s"]]
    round_s = np.array([r["seconds"] for r in measured])
    loss, acc = workload.evaluate(out["final_params"])
    return {
        "framework": "flower",
        "flwr_version": flwr.__version__,
        "ray_version": ray.__version__,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "api": (
            "flwr.simulation.run_simulation(ServerApp(@main: FedAvg-subclass "
            "configure_train/Grid.send_and_receive/aggregate_train), ClientApp(@train), "
            "num_supernodes=N, backend_config)"
        ),
        "num_clients": n,
        "clients_per_round": k,
        "fraction_train": k / n,
        "client_num_cpus": float(args.num_cpus),
        "ray_num_cpus": int(args.ray_num_cpus),
        "num_actors": num_actors,
        "dataset": args.dataset,
        "model": "logreg",
        "num_params": int(initial.size),
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "workload_build_s": build_s,
        "startup_s": warm[-1]["end"],
        "first_round_s": rounds[0]["end"],
        "warmup_rounds": args.warmup_rounds,
        "measured_rounds": len(measured),
        "measured_s": window,
        "updates": updates,
        "errors": sum(r["errors"] for r in measured),
        "updates_per_s": updates / window,
        "round_s_mean": float(round_s.mean()),
        "round_s_p50": float(np.median(round_s)),
        "round_s_p95": float(np.percentile(round_s, 95)),
        "aggregate_s_mean": float(np.mean([r["aggregate_s"] for r in measured])),
        "compute_s_mean": float(np.mean(compute)),
        "clientapp_s_mean": float(np.mean(clientapp)),
        # Share of the actors' capacity spent inside the gradient computation / the ClientApp:
        # what is left is Flower's per-round and per-message machinery.
        "compute_busy_fraction": float(np.sum(compute) / (window * num_actors)),
        "clientapp_busy_fraction": float(np.sum(clientapp) / (window * num_actors)),
        "final_test_loss": loss,
        "final_test_accuracy": acc,
        "shutdown_s": t_end - out["server_done"],
        "total_s": t_end,
    }


# --------------------------------------------------------------------------- driver


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-clients", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--clients-per-round", type=int, default=10, help="K (sampled per round)")
    p.add_argument("--num-cpus", type=float, default=1.0, help="client_resources num_cpus")
    p.add_argument("--ray-num-cpus", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seconds", type=float, default=40.0, help="measured window per config")
    p.add_argument("--warmup-rounds", type=int, default=3)
    p.add_argument("--round-timeout", type=float, default=600.0)
    p.add_argument("--dataset", default="mnist", choices=("mnist", "digits"))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config-timeout", type=float, default=900.0)
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, required=True, help="JSON output")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.single:  # one configuration, in this process
        args.num_clients = args.num_clients[0]
        result = run_one(args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        return 0
    results: list[dict[str, Any]] = []
    for n in args.num_clients:
        with tempfile.TemporaryDirectory() as tmp:
            part = Path(tmp) / "one.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--single", "--out", str(part)]
            for name in (
                "clients_per_round",
                "num_cpus",
                "ray_num_cpus",
                "seconds",
                "warmup_rounds",
                "round_timeout",
                "dataset",
                "batch_size",
                "lr",
                "seed",
            ):
                cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
            cmd += ["--num-clients", str(n)] + (["--verbose"] if args.verbose else [])
            print(
                f"[flower] N={n} K={min(args.clients_per_round, n)} num_cpus={args.num_cpus}",
                flush=True,
            )
            try:
                proc = subprocess.run(cmd, timeout=args.config_timeout, check=False)
                ok = proc.returncode == 0 and part.is_file()
                error = None if ok else f"exit code {proc.returncode}"
            except subprocess.TimeoutExpired:
                ok, error = False, f"timed out after {args.config_timeout:g} s"
            if ok:
                res = json.loads(part.read_text())
                print(
                    f"[flower] N={n}: {res['updates_per_s']:.1f} updates/s "
                    f"(start-up {res['startup_s']:.1f} s, round {res['round_s_mean'] * 1e3:.0f} "
                    f"ms, compute busy {res['compute_busy_fraction']:.1%})",
                    flush=True,
                )
            else:
                res = {"framework": "flower", "num_clients": n, "error": error}
                print(f"[flower] N={n}: FAILED ({error})", flush=True)
            results.append(res)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({RESULT_KEY: results}, indent=2))
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
