"""Helpers shared by the strategy implementations (private)."""

from __future__ import annotations

import math

import numpy as np

from raysync._validation import check_int
from raysync.exceptions import ConfigError
from raysync.strategies._base import ClientResult

__all__ = ["check_int", "check_local_lr", "check_payload", "check_positive"]

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_positive(name: str, value: object, *, upper: float | None = None) -> float:
    """Return ``value`` as a float if it is finite and > 0 (and <= ``upper``), else raise."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    result = float(value)
    if not math.isfinite(result) or result <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    if upper is not None and result > upper:
        raise ConfigError(f"{name} must be in (0, {upper:g}], got {value!r}")
    return result


def check_local_lr(strategy: str, value: object) -> float:
    """Return a client learning rate if local training (float32) can take a step that size."""
    result = check_positive(f"{strategy} local_lr", value)
    # torch casts the step to the parameters' float32 and raises a bare RuntimeError
    # inside a client task for anything larger.
    if result > _FLOAT32_MAX:
        raise ConfigError(
            f"{strategy} local_lr (algorithm.lr) must be <= {_FLOAT32_MAX:.6g} (local steps "
            f"run in float32), got {value!r}"
        )
    return result


def check_payload(strategy: str, params: np.ndarray, result: ClientResult) -> np.ndarray:
    """Return the result's payload as a flat array after checking it matches ``params``.

    Raises:
        ConfigError: The payload is not 1-D or its length differs from the model's.
        ConfigError: The result's staleness is negative.
    """
    payload = np.asarray(result.payload)
    if payload.ndim != 1 or payload.shape != np.shape(params):
        raise ConfigError(
            f"{strategy}: payload of task {result.task_id} from client {result.client_id} "
            f"must be a flat vector of length {np.size(params)} (the model's), "
            f"got shape {payload.shape}"
        )
    if result.current_version < result.base_version:
        raise ConfigError(
            f"{strategy}: task {result.task_id} has base_version {result.base_version} > "
            f"current_version {result.current_version} (negative staleness)"
        )
    return payload
