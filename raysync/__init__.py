"""raysync: asynchronous federated learning on Ray, tuned by queueing theory."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "build_workload", "run", "simulate"]


def __getattr__(name: str) -> Any:
    # ``raysync.run`` imports Ray; load it on first access so the core stays Ray-free.
    if name == "run":
        from raysync.runtime import run

        return run
    if name == "simulate":
        from raysync.simulation import simulate

        return simulate
    if name == "build_workload":
        from raysync.workload import build_workload

        return build_workload
    raise AttributeError(f"module 'raysync' has no attribute {name!r}")
