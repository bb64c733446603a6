"""The Ray runtime: run an asynchronous FL system for real (the only package importing Ray).

:func:`run` executes a :class:`~raysync.config.SystemConfig` on a Ray cluster (a local
instance by default) and returns the same :class:`~raysync.simulation.result.RunResult`
as the simulator, with ``backend="ray"``. One server actor owns the model, the strategy
and the router and keeps ``C`` tasks in flight; one actor per client, with its own CPU,
GPU and custom-resource request, serves its tasks first in, first out.

Example:
    >>> import raysync
    >>> from raysync.config import load_config
    >>> result = raysync.run(load_config("system.toml"))  # doctest: +SKIP
    >>> print(result.summary())  # doctest: +SKIP
"""

from __future__ import annotations

from raysync.runtime.coordinator import check_resources, client_request, run

__all__ = ["check_resources", "client_request", "run"]
