"""The Ray runtime: run an asynchronous FL system for real (the only package importing Ray).

:func:`run` executes a :class:`~raysync.config.SystemConfig` on a Ray cluster (a fresh
local instance by default) and returns the same
:class:`~raysync.simulation.result.RunResult` as the simulator, with ``backend="ray"``.
One server actor owns the model, the strategy, the router and every logical client's
state, and keeps ``C`` tasks in flight; executor actors serve the clients' tasks, each
client first in, first out: one executor per client with its own CPU, GPU and
custom-resource request (``[runtime] mode = "per_client"``), or thousands of clients
multiplexed on a pool of executors per resource tier (``mode = "pool"``). Executors that
die are restarted and their tasks re-issued, stragglers are re-issued after
``run.task_timeout``, and ``run.checkpoint_every_updates`` writes checkpoints that
``run(..., resume_from=DIR)`` (``raysync run CONFIG --resume DIR``) continues.

Example:
    >>> import raysync
    >>> from raysync.config import load_config
    >>> result = raysync.run(load_config("system.toml"))  # doctest: +SKIP
    >>> print(result.summary())  # doctest: +SKIP
"""

from __future__ import annotations

from raysync.runtime.coordinator import (
    ExecutorPlan,
    check_reachable,
    check_resources,
    check_run_config,
    choose_plan,
    client_request,
    connect,
    plan_executors,
    run,
)

__all__ = [
    "ExecutorPlan",
    "check_reachable",
    "check_resources",
    "check_run_config",
    "choose_plan",
    "connect",
    "client_request",
    "plan_executors",
    "run",
]
