"""FedBuff (Nguyen et al., 2022): buffer client deltas, apply their mean every B results."""

from __future__ import annotations

from typing import Any

import numpy as np

from raysync.exceptions import CheckpointError, ConfigError
from raysync.strategies._base import BaseStrategy, ClientResult, ClientWork
from raysync.strategies._common import (
    check_int,
    check_local_lr,
    check_payload,
    check_positive,
)
from raysync.strategies.staleness import BaseStaleness

__all__ = ["FedBuff"]


class FedBuff(BaseStrategy):
    """FedBuff: ``w <- w + server_lr * (1/B) sum_j s(D_j) delta_j`` every ``B`` results.

    Clients run ``local_steps`` SGD steps and return ``delta = new - received``. The
    server adds each delta (weighted by ``s(D)`` when a staleness function is given,
    else by 1) to a buffer; when it holds ``B = buffer_size`` deltas it returns the new
    model and empties the buffer, otherwise it returns ``None`` and the version stays.

    Normalisation: the weighted sum is divided by ``B``, not by ``sum_j s(D_j)``. This is
    the FedBuff paper's rule (Algorithm 1 divides the accumulated ``s(D) delta`` by the
    buffer size ``K``): with no staleness it is the plain mean, and stale deltas shrink
    the server step instead of being renormalised away (dividing by the weights' sum
    would restore a full step when every buffered delta is equally stale).

    The buffer is accumulated in float64 and returned by :meth:`state_dict`.

    Args:
        buffer_size: Deltas per server update ``B``, >= 1.
        server_lr: Server step ``eta_g``, finite and > 0.
        local_steps: Local SGD steps per task, >= 1.
        local_lr: Client learning rate, finite and > 0.
        batch_size: Minibatch size of one local step, >= 1.
        staleness: Optional staleness function weighting each delta by ``s(D)``.

    Raises:
        ConfigError: An argument breaks its rule.
    """

    def __init__(
        self,
        *,
        buffer_size: int,
        server_lr: float = 1.0,
        local_steps: int = 1,
        local_lr: float,
        batch_size: int = 32,
        staleness: BaseStaleness | None = None,
    ) -> None:
        super().__init__()
        self._buffer_size = check_int("FedBuff buffer_size", buffer_size, minimum=1)
        self._server_lr = check_positive("FedBuff server_lr", server_lr)
        if staleness is not None and not isinstance(staleness, BaseStaleness):
            raise ConfigError(
                f"FedBuff staleness must be None or a BaseStaleness (see make_staleness), "
                f"got {staleness!r}"
            )
        self._staleness = staleness
        self._work = ClientWork(
            kind="delta",
            batch_size=check_int("FedBuff batch_size", batch_size, minimum=1),
            local_steps=check_int("FedBuff local_steps", local_steps, minimum=1),
            local_lr=check_local_lr("FedBuff", local_lr),
        )
        self._sum: np.ndarray | None = None
        self._count = 0

    @property
    def buffer_size(self) -> int:
        """Deltas per server update ``B``."""
        return self._buffer_size

    @property
    def server_lr(self) -> float:
        """Server step ``eta_g``."""
        return self._server_lr

    @property
    def staleness(self) -> BaseStaleness | None:
        """Staleness weighting, or None for an unweighted mean."""
        return self._staleness

    @property
    def num_buffered(self) -> int:
        """Deltas currently in the buffer (``0 <= num_buffered < B`` between calls)."""
        return self._count

    def client_work(self) -> ClientWork:
        """``local_steps`` SGD steps; the client returns ``new - received``."""
        return self._work

    def apply(self, params: np.ndarray, result: ClientResult) -> np.ndarray | None:
        """Buffer the delta; return ``w + server_lr * mean`` when the buffer is full.

        Raises:
            ConfigError: The payload's length differs from the model's.
        """
        delta = check_payload("FedBuff", params, result).astype(np.float64)
        if self._staleness is not None:
            delta *= self._staleness(result.staleness)
        if self._sum is None:
            self._sum = delta
        else:
            self._sum += delta
        self._count += 1
        if self._count < self._buffer_size:
            return None
        step = (self._server_lr / self._buffer_size) * self._sum
        self._sum = None
        self._count = 0
        return (np.asarray(params, dtype=np.float64) + step).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        """The buffer: ``{"count": int, "sum": float64 array copy or None}``."""
        return {
            "count": self._count,
            "sum": None if self._sum is None else self._sum.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the buffer from :meth:`state_dict`.

        Raises:
            CheckpointError: The state is malformed or its count is not below ``B``.
        """
        try:
            count = int(state["count"])
            total = state["sum"]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"FedBuff state must hold 'count' and 'sum', got {state!r}"
            ) from exc
        if not 0 <= count < self._buffer_size or (count == 0) != (total is None):
            raise CheckpointError(
                f"FedBuff state count must be in [0, {self._buffer_size}) with a sum iff "
                f"count > 0, got count={count} and sum={'None' if total is None else 'array'}"
            )
        self._count = count
        self._sum = None if total is None else np.array(total, dtype=np.float64)

    def __repr__(self) -> str:
        work = self._work
        return (
            f"FedBuff(buffer_size={self._buffer_size!r}, server_lr={self._server_lr!r}, "
            f"local_steps={work.local_steps!r}, local_lr={work.local_lr!r}, "
            f"batch_size={work.batch_size!r}, staleness={self._staleness!r})"
        )
