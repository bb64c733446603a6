"""Random routing with fixed probabilities ``p`` (and its uniform special case)."""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from raysync._validation import check_probabilities
from raysync.exceptions import CheckpointError, ConfigError
from raysync.routing._base import BaseRouter

__all__ = ["FixedRouter", "UniformRouter"]

_SUM_TOL = 1e-6
_DEFAULT_BLOCK = 4096


def _check_block_size(block_size: object) -> int:
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ConfigError(f"routing block_size must be an integer >= 1, got {block_size!r}")
    return block_size


class _BlockRouter(BaseRouter):
    """A router whose destinations are i.i.d. draws, pre-drawn in blocks for speed.

    ``route`` pops the next pre-drawn client (a list lookup, well under a microsecond);
    a new block of ``block_size`` draws is taken from the bound generator when the
    current one runs out. The initial clients come from the same stream. The state
    holds the generator state *and* the unconsumed draws, so a restored router continues
    the exact same sequence.
    """

    def __init__(self, *, block_size: int = _DEFAULT_BLOCK) -> None:
        super().__init__()
        self._block_size = _check_block_size(block_size)
        self._block: list[int] = []
        self._pos = 0

    def bind(self, num_clients: int, rng: np.random.Generator) -> None:
        """Attach to ``num_clients`` clients and a generator; drops any pre-drawn clients."""
        super().bind(num_clients, rng)
        self._block = []
        self._pos = 0

    @abc.abstractmethod
    def _draw(self, size: int) -> np.ndarray:
        """Return ``size`` i.i.d. client ids drawn from the bound generator."""

    def initial_clients(self, concurrency: int) -> list[int]:
        """``concurrency`` independent draws from ``p``.

        Raises:
            ConfigError: ``concurrency`` is not an integer >= 1.
        """
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        return [self.route(-1) for _ in range(concurrency)]

    def route(self, finished_client: int) -> int:
        """Return a client drawn from ``p``, independently of ``finished_client``."""
        pos = self._pos
        block = self._block
        if pos >= len(block):
            block = self._block = self._draw(self._block_size).tolist()
            pos = 0
        self._pos = pos + 1
        return block[pos]

    def state_dict(self) -> dict[str, Any]:
        """The generator state and the pre-drawn clients not yet routed."""
        return {"rng": self.rng.bit_generator.state, "pending": self._block[self._pos :]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Raises:
            CheckpointError: The state is malformed or names a client out of range.
        """
        try:
            rng_state = state["rng"]
            pending = [int(c) for c in state["pending"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{type(self).__name__} state must hold 'rng' and 'pending', got keys "
                f"{sorted(state) if isinstance(state, dict) else state!r}"
            ) from exc
        n = self.num_clients
        if any(not 0 <= c < n for c in pending):
            raise CheckpointError(
                f"{type(self).__name__} state names clients outside [0, {n}): {pending!r}"
            )
        self.rng.bit_generator.state = rng_state
        self._block = pending
        self._pos = 0


class FixedRouter(_BlockRouter):
    """Route each new task to client ``j`` with fixed probability ``p_j``.

    The finished client is ignored: destinations are i.i.d. draws from ``p`` (the
    closed Jackson network's routing, docs/theory.md section 2). Draws use inverse-CDF
    sampling on blocks of uniforms, so ``route`` costs a list lookup.

    Args:
        p: Routing probabilities, one per client, each finite and > 0, summing to 1
            (within 1e-6; they are renormalised to sum to 1 exactly).
        block_size: Draws taken from the generator at a time.

    Raises:
        ConfigError: ``p`` is empty, not 1-D, has an entry that is not > 0, or does not
            sum to 1.
    """

    def __init__(
        self, *, p: Sequence[float] | np.ndarray, block_size: int = _DEFAULT_BLOCK
    ) -> None:
        super().__init__(block_size=block_size)
        try:
            probs = np.array(p, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"routing p must be a sequence of numbers, got {p!r}") from exc
        if probs.ndim != 1 or probs.size == 0:
            raise ConfigError(
                f"routing p must be a non-empty 1-D sequence, got shape {probs.shape}"
            )
        check_probabilities(probs, "routing p")
        total = math.fsum(probs.tolist())
        if abs(total - 1.0) > _SUM_TOL:
            raise ConfigError(
                f"routing p must sum to 1, got sum={total:.6g} for {probs.size} clients"
            )
        probs /= total
        probs.setflags(write=False)
        self._p = probs
        cdf = np.cumsum(probs)
        cdf[-1] = 1.0
        self._cdf = cdf

    def bind(self, num_clients: int, rng: np.random.Generator) -> None:
        """Attach to the fleet; ``p`` must have one entry per client.

        Raises:
            ConfigError: ``len(p) != num_clients``.
        """
        if num_clients != self._p.size:
            raise ConfigError(
                f"routing p must have one entry per client (n={num_clients}), "
                f"got {self._p.size} entries"
            )
        super().bind(num_clients, rng)

    def _draw(self, size: int) -> np.ndarray:
        return np.searchsorted(self._cdf, self.rng.random(size), side="right")

    def routing_probabilities(self) -> np.ndarray:
        """A copy of ``p``."""
        return self._p.copy()

    def __repr__(self) -> str:
        return f"FixedRouter(p={self._p.tolist()!r})"


class UniformRouter(_BlockRouter):
    """Route each new task to a client drawn uniformly at random (``p_j = 1/n``).

    Args:
        block_size: Draws taken from the generator at a time.
    """

    def _draw(self, size: int) -> np.ndarray:
        return self.rng.integers(0, self.num_clients, size=size)

    def routing_probabilities(self) -> np.ndarray:
        """``p = (1/n, ..., 1/n)`` (after :meth:`bind`)."""
        n = self.num_clients
        return np.full(n, 1.0 / n)

    def __repr__(self) -> str:
        return "UniformRouter()"
