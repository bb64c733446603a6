"""Return-to-sender routing: the client that finished a task gets the next one (AsyncSGD)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from raysync.exceptions import ConfigError
from raysync.routing._base import BaseRouter

__all__ = ["ReturnToSenderRouter"]


class ReturnToSenderRouter(BaseRouter):
    """Each client holds exactly one task; a finished task is replaced at the same client.

    This is the routing of plain AsyncSGD: it needs ``C = n`` and is not a random routing,
    so :meth:`routing_probabilities` returns ``None``. It draws no random numbers.

    Clients that join or leave (``join_time`` / ``leave_time``, docs/adaptive.md): the
    router handles availability itself, keeping ``C = n`` tasks and one per present
    client where it can. The task of a client absent at the start, or one that finishes
    at a client that has left, goes to a present client holding no task (a client that
    joined), else to the present client holding the fewest (lowest id first). A present
    client that finishes its only task gets the next one, as without joins and leaves; one
    that finishes while holding another hands the task to a present client holding none,
    if any. So a joining client gets a task at the next completion, and with everyone
    present the routing is plain return to sender.
    """

    def __init__(self) -> None:
        super().__init__()
        self._holding: np.ndarray | None = None
        self._present: np.ndarray | None = None

    def initial_clients(self, concurrency: int) -> list[int]:
        """One task per client: ``[0, 1, ..., n - 1]`` (absent clients' to present ones).

        Raises:
            ConfigError: ``concurrency != num_clients``.
        """
        n = self.num_clients
        if concurrency != n:
            raise ConfigError(
                "concurrency must equal the number of clients "
                f"(n={n}) with return-to-sender routing, got {concurrency!r}"
            )
        self._holding = np.zeros(n, dtype=np.int64)
        clients = []
        for i in range(n):
            j = i if self._is_present(i) else self._least_loaded()
            self._holding[j] += 1
            clients.append(j)
        return clients

    def route(self, finished_client: int) -> int:
        """Return ``finished_client`` (with joins and leaves, see the class docstring).

        Raises:
            ConfigError: ``finished_client`` is not a valid client id.
        """
        if not 0 <= finished_client < self.num_clients:
            raise ConfigError(
                f"finished_client must be in [0, {self.num_clients}), got {finished_client!r}"
            )
        holding = self._holding
        if holding is None or self._present is None:
            # Everyone present (the common case): no bookkeeping needed beyond the counts.
            return finished_client
        holding[finished_client] -= 1
        j = finished_client
        if not (self._present[j] and holding[j] == 0):
            idle = np.flatnonzero(self._present & (holding <= 0))
            if idle.size:
                j = int(idle[0])
            elif not self._present[j]:
                j = self._least_loaded()
        holding[j] += 1
        return j

    def set_available(self, available: Sequence[bool] | np.ndarray, now: float) -> None:
        """Clients that may receive new tasks changed (joins and leaves).

        Raises:
            ConfigError: No client is available, or the mask has the wrong length.
        """
        self._present = self._availability_mask(available)

    def _is_present(self, client: int) -> bool:
        return self._present is None or bool(self._present[client])

    def _least_loaded(self) -> int:
        assert self._holding is not None and self._present is not None
        load = np.where(self._present, self._holding, np.iinfo(np.int64).max)
        return int(np.argmin(load))

    def state_dict(self) -> dict[str, Any]:
        """Serialisable state: the generator's, and the tasks held per client."""
        state = super().state_dict()
        if self._holding is not None:
            state["holding"] = self._holding.tolist()
        if self._present is not None:
            state["present"] = self._present.tolist()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        super().load_state_dict(state)
        if "holding" in state:
            self._holding = np.asarray(state["holding"], dtype=np.int64)
        if "present" in state:
            self._present = np.asarray(state["present"], dtype=bool)

    def __repr__(self) -> str:
        return "ReturnToSenderRouter()"
