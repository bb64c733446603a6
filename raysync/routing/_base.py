"""The routing extension point: who gets the next task."""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

__all__ = ["BaseRouter"]


class BaseRouter(abc.ABC):
    """Decides which client serves each task.

    Call order (the simulator and the Ray runtime follow it exactly):

    1. ``bind(num_clients, rng)`` once, before anything else. The engine passes a
       generator derived from the run's seed; the router keeps it and never touches
       global RNG state.
    2. ``initial_clients(concurrency)`` once: the clients of the ``C`` tasks that exist
       at the start (a list of length ``concurrency``).
    3. ``route(finished_client)`` after every completed task, *after* the strategy has
       consumed the result: the client of the one task that replaces it.

    ``routing_probabilities()`` gives the ``p`` the queueing theory uses, or ``None`` for
    routers that are not a fixed random routing (e.g. return to sender).
    ``state_dict()`` / ``load_state_dict()`` capture the RNG state for checkpoints.

    Feedback (optional; adaptive routers): when :attr:`observes_service_times` is true the
    engines call ``observe(client, duration, now)`` right before each ``route(client)``
    with the service time of the task that just finished there, and
    ``set_available(mask, now)`` when clients join or leave. A router that changes its
    ``p`` increments :attr:`routing_version`; the engines then re-bind the strategy to the
    new ``p``. Tasks already dispatched are never moved.
    """

    #: Whether the engines feed :meth:`observe` (adaptive routers set it to True).
    observes_service_times: bool = False
    #: Incremented each time the router's ``p`` changes.
    routing_version: int = 0

    def __init__(self) -> None:
        self._num_clients: int | None = None
        self._rng: np.random.Generator | None = None

    def bind(self, num_clients: int, rng: np.random.Generator) -> None:
        """Attach the router to a fleet of ``num_clients`` clients and a generator.

        Raises:
            ValueError: The router cannot serve that many clients.
        """
        if num_clients < 1:
            raise ValueError(f"num_clients must be >= 1, got {num_clients}")
        self._num_clients = num_clients
        self._rng = rng

    @property
    def num_clients(self) -> int:
        """Number of clients, available after :meth:`bind`."""
        if self._num_clients is None:
            raise RuntimeError(f"{type(self).__name__}.bind() must be called first")
        return self._num_clients

    @property
    def rng(self) -> np.random.Generator:
        """The router's generator, available after :meth:`bind`."""
        if self._rng is None:
            raise RuntimeError(f"{type(self).__name__}.bind() must be called first")
        return self._rng

    @abc.abstractmethod
    def initial_clients(self, concurrency: int) -> list[int]:
        """Return the clients of the ``concurrency`` tasks dispatched at the start."""

    @abc.abstractmethod
    def route(self, finished_client: int) -> int:
        """Return the client of the task that replaces one finished at ``finished_client``."""

    def routing_probabilities(self) -> np.ndarray | None:
        """The routing vector ``p`` for queueing analysis, or None if not a random routing."""
        return None

    def observe(self, client: int, duration: float, now: float) -> None:
        """Service time ``duration`` of the task that just finished at ``client`` (no-op)."""
        return None

    def set_available(self, available: np.ndarray, now: float) -> None:
        """Clients that may receive new tasks changed (no-op: the engine redraws for them)."""
        return None

    def _availability_mask(self, available: Any) -> np.ndarray:
        """``available`` as a checked copy, for routers that handle availability themselves.

        Raises:
            ConfigError: No client is available, or the mask has the wrong length.
        """
        from raysync.exceptions import ConfigError

        mask = np.array(available, dtype=bool)
        if mask.shape != (self.num_clients,) or not mask.any():
            raise ConfigError(
                f"available must be {self.num_clients} booleans with at least one true, "
                f"got {mask.tolist()!r}"
            )
        return mask

    def state_dict(self) -> dict[str, Any]:
        """Serialisable state (the generator's bit-generator state)."""
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.rng.bit_generator.state = state["rng"]
