"""Client compute speed, CPU vs GPU: updates per second of the function an executor calls.

Times :func:`raysync.client.run_client_work` (one task: a minibatch gradient of 32 MNIST
images) for the built-in ``cnn`` and the residual CNN of ``residual_cnn.py``, on the CPU
and, when CUDA is present, on ``cuda:0``. Prints one JSON line per (model, device).

Run from the repository root: ``python -m examples.custom.compute_speed [--tasks 200]``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from raysync.client import run_client_work
from raysync.config import AlgorithmConfig, DataConfig, ModelConfig, SystemConfig
from raysync.strategies._base import ClientWork
from raysync.workload import build_workload


def _workloads() -> dict[str, object]:
    base = SystemConfig.from_dict({"concurrency": 1, "clients": [{"count": 1}]})
    data = DataConfig(dataset="mnist", max_train_samples=4096)
    models = {
        "cnn": ModelConfig(name="cnn"),
        "residual_cnn": ModelConfig(
            factory="examples.custom.residual_cnn:make_model", kwargs={"channels": 16}
        ),
    }
    return {
        name: build_workload(base.replace(data=data, model=model, algorithm=AlgorithmConfig()))
        for name, model in models.items()
    }


def main() -> None:
    """Measure and print updates per second."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=200, help="timed tasks per case")
    args = parser.parse_args()
    devices = ["cpu"] + (["cuda:0"] if torch.cuda.is_available() else [])
    work = ClientWork(kind="gradient", batch_size=32)
    for name, wl in _workloads().items():
        x, y = wl.client_data(0)
        for device in devices:
            computer = wl.make_computer(device=device)
            params = np.array(wl.initial_params)
            rng = np.random.default_rng(0)
            for _ in range(10):  # warm-up (CUDA context, kernels)
                run_client_work(computer, work, params, x, y, rng)
            start = time.perf_counter()
            for _ in range(args.tasks):
                run_client_work(computer, work, params, x, y, rng)
            seconds = time.perf_counter() - start
            print(json.dumps({"model": name, "device": device, "tasks": args.tasks,
                              "updates_per_s": args.tasks / seconds,
                              "num_params": int(wl.initial_params.size)}))  # fmt: skip


if __name__ == "__main__":
    main()
