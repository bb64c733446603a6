"""FedAsync (Xie et al., 2019): mix each returned local model into the server model."""

from __future__ import annotations

import numpy as np

from raysync.exceptions import ConfigError
from raysync.strategies._base import BaseStrategy, ClientResult, ClientWork
from raysync.strategies._common import (
    check_int,
    check_local_lr,
    check_payload,
    check_positive,
)
from raysync.strategies.staleness import BaseStaleness, ConstantStaleness

__all__ = ["FedAsync"]


class FedAsync(BaseStrategy):
    """FedAsync: ``w <- (1 - a_t) w + a_t w_i`` with ``a_t = alpha * s(D)``.

    The client runs ``local_steps`` SGD steps from the model its task carried and returns
    its new parameters ``w_i``; ``D`` is the task's relative delay and ``s`` a staleness
    function. The mix is computed as ``w + a_t (w_i - w)`` in float64 (identical in exact
    arithmetic; returning ``w_i = w`` leaves ``w`` bit-for-bit unchanged).

    Args:
        alpha: Mixing weight, in (0, 1].
        staleness: Staleness function ``s`` (default: constant, ``s = 1``).
        local_steps: Local SGD steps ``E`` per task, >= 1.
        local_lr: Client learning rate, finite and > 0.
        batch_size: Minibatch size of one local step, >= 1.

    Raises:
        ConfigError: An argument breaks its rule.
    """

    def __init__(
        self,
        *,
        alpha: float,
        staleness: BaseStaleness | None = None,
        local_steps: int = 1,
        local_lr: float,
        batch_size: int = 32,
    ) -> None:
        super().__init__()
        self._alpha = check_positive("FedAsync alpha", alpha, upper=1.0)
        if staleness is None:
            staleness = ConstantStaleness()
        if not isinstance(staleness, BaseStaleness):
            raise ConfigError(
                f"FedAsync staleness must be a BaseStaleness (see make_staleness), "
                f"got {staleness!r}"
            )
        self._staleness = staleness
        self._work = ClientWork(
            kind="params",
            batch_size=check_int("FedAsync batch_size", batch_size, minimum=1),
            local_steps=check_int("FedAsync local_steps", local_steps, minimum=1),
            local_lr=check_local_lr("FedAsync", local_lr),
        )

    @property
    def alpha(self) -> float:
        """Mixing weight ``alpha``."""
        return self._alpha

    @property
    def staleness(self) -> BaseStaleness:
        """Staleness function ``s``."""
        return self._staleness

    def client_work(self) -> ClientWork:
        """``local_steps`` SGD steps; the client returns its new parameters."""
        return self._work

    def mixing_weight(self, staleness: int) -> float:
        """``a_t = alpha * s(D)`` for a result with delay ``D = staleness``."""
        return self._alpha * self._staleness(staleness)

    def apply(self, params: np.ndarray, result: ClientResult) -> np.ndarray:
        """Return ``w + a_t (w_i - w)`` as a new float32 array.

        Raises:
            ConfigError: The payload's length differs from the model's.
        """
        local = check_payload("FedAsync", params, result)
        weight = self.mixing_weight(result.staleness)
        w = np.asarray(params, dtype=np.float64)
        return (w + weight * (local.astype(np.float64) - w)).astype(np.float32)

    def __repr__(self) -> str:
        work = self._work
        return (
            f"FedAsync(alpha={self._alpha!r}, staleness={self._staleness!r}, "
            f"local_steps={work.local_steps!r}, local_lr={work.local_lr!r}, "
            f"batch_size={work.batch_size!r})"
        )
