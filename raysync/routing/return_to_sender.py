"""Return-to-sender routing: the client that finished a task gets the next one (AsyncSGD)."""

from __future__ import annotations

from raysync.exceptions import ConfigError
from raysync.routing._base import BaseRouter

__all__ = ["ReturnToSenderRouter"]


class ReturnToSenderRouter(BaseRouter):
    """Each client holds exactly one task; a finished task is replaced at the same client.

    This is the routing of plain AsyncSGD: it needs ``C = n`` and is not a random routing,
    so :meth:`routing_probabilities` returns ``None``. It draws no random numbers.
    """

    def initial_clients(self, concurrency: int) -> list[int]:
        """One task per client: ``[0, 1, ..., n - 1]``.

        Raises:
            ConfigError: ``concurrency != num_clients``.
        """
        n = self.num_clients
        if concurrency != n:
            raise ConfigError(
                "concurrency must equal the number of clients "
                f"(n={n}) with return-to-sender routing, got {concurrency!r}"
            )
        return list(range(n))

    def route(self, finished_client: int) -> int:
        """Return ``finished_client``.

        Raises:
            ConfigError: ``finished_client`` is not a valid client id.
        """
        if not 0 <= finished_client < self.num_clients:
            raise ConfigError(
                f"finished_client must be in [0, {self.num_clients}), got {finished_client!r}"
            )
        return finished_client

    def __repr__(self) -> str:
        return "ReturnToSenderRouter()"
