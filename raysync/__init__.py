"""raysync: asynchronous federated learning on Ray, tuned by queueing theory."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "run"]


def __getattr__(name: str) -> Any:
    # ``raysync.run`` imports Ray; load it on first access so the core stays Ray-free.
    if name == "run":
        from raysync.runtime import run

        return run
    raise AttributeError(f"module 'raysync' has no attribute {name!r}")
