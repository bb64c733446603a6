"""Minibatch streams: one independent random stream per task, shared by both engines.

The ``k``-th task served by client ``i`` draws its minibatches from a Philox
counter-based generator (Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as easy
as 1, 2, 3", SC 2011) whose key comes from the run's seed and whose 256-bit counter
starts at ``(0, 0, k, i)``. Distinct counters under one key give independent streams, and
a task draws far fewer than ``2**128`` numbers, so the streams of two tasks never overlap.

Deriving the stream from ``(seed, client, k)`` instead of advancing one generator per
client makes a task's minibatches independent of which process computes it and of
retries: the simulator and the Ray runtime (any executor, any re-issue) draw the same
rows for the same task, so on a schedule both engines share (e.g. one task in flight) they
train the same model. Setting a reused generator's counter costs a few microseconds per
task (about a seventh of deriving a ``SeedSequence`` child per task).
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["MinibatchStreams"]

# SeedSequence spawn key of the minibatch streams' Philox key (see run_generators).
_KEY_MINIBATCH = 1
_MASK64 = (1 << 64) - 1


class MinibatchStreams:
    """The minibatch generator of every task of a run.

    Args:
        seed: The run's root seed (``SystemConfig.seed``); the Philox key is the first
            128 bits of child ``(1,)`` of ``numpy.random.SeedSequence(seed)``.

    Thread safety: each thread gets its own generator object, so tasks may be computed in
    a thread pool. The generator returned by :meth:`task` is valid until the same thread
    calls :meth:`task` again.
    """

    __slots__ = ("_key", "_local", "seed")

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._key = np.random.SeedSequence(self.seed, spawn_key=(_KEY_MINIBATCH,)).generate_state(
            2, np.uint64
        )
        self._local = threading.local()

    def task(self, client: int, ordinal: int) -> np.random.Generator:
        """The generator of the ``ordinal``-th task (0-based) served by ``client``.

        Args:
            client: Client index ``i >= 0``.
            ordinal: The task's place among ``client``'s tasks, ``k >= 0`` (a re-issued
                task keeps its place, hence its minibatches).

        Returns:
            A generator at the start of the task's stream.

        Raises:
            ValueError: ``client`` or ``ordinal`` negative or at least ``2**64``.
        """
        if not (0 <= client <= _MASK64 and 0 <= ordinal <= _MASK64):
            raise ValueError(
                f"client {client} and ordinal {ordinal} must lie in [0, 2**64)"
            )
        local = self._local
        bitgen = getattr(local, "bitgen", None)
        if bitgen is None:
            bitgen = local.bitgen = np.random.Philox(key=self._key)
            local.generator = np.random.Generator(bitgen)
            local.state = bitgen.state
        state = local.state
        state["state"]["counter"] = np.array([0, 0, ordinal, client], dtype=np.uint64)
        state["buffer_pos"] = 4  # the buffer is spent: the next draw uses the counter
        state["has_uint32"] = 0
        bitgen.state = state
        generator: np.random.Generator = local.generator
        return generator

    def __reduce__(self) -> tuple[type[MinibatchStreams], tuple[int]]:
        # The per-thread generators are not state: a copy re-derives them from the seed.
        return (MinibatchStreams, (self.seed,))
