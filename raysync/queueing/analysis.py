"""Entry point of the queueing engine: :func:`analyze`."""

from __future__ import annotations

from typing import Literal

from raysync.exceptions import ConfigError
from raysync.queueing._bruteforce import solve_bruteforce
from raysync.queueing._buzen import solve_buzen
from raysync.queueing._mva import solve_mva
from raysync.queueing.network import ClosedNetwork
from raysync.queueing.result import QueueingResult

__all__ = ["METHODS", "Method", "analyze"]

Method = Literal["mva", "buzen", "bruteforce"]
METHODS: tuple[str, ...] = ("mva", "buzen", "bruteforce")
"""Solver names accepted by :func:`analyze`."""


def analyze(
    network: ClosedNetwork, *, method: Method | str = "mva", curve: bool = False
) -> QueueingResult:
    """Compute the stationary performance of a closed network.

    Args:
        network: The network (service rates, routing, concurrency, optional stations).
        method: ``"mva"`` (exact Mean Value Analysis, the default: ``O(nC)``, stable for
            any size), ``"buzen"`` (Buzen's convolution with rescaling, ``O(nC)``, a
            cross-check) or ``"bruteforce"`` (the Markov chain solved exactly; small
            networks only, the reference of the tests).
        curve: Also return ``Lambda(C')``, ``Q_i(C')`` and ``E[D_i](C')`` for every
            ``C' = 1..C`` (one MVA or Buzen pass gives them all).

    Returns:
        A frozen :class:`QueueingResult`.

    Raises:
        ConfigError: ``network`` is not a :class:`ClosedNetwork` or ``method`` is unknown.
        ValueError: ``method="bruteforce"`` on a network whose state space is too large.
    """
    if not isinstance(network, ClosedNetwork):
        raise ConfigError(f"network must be a ClosedNetwork, got {type(network).__name__}")
    if method == "mva":
        return solve_mva(network, curve=curve)
    if method == "buzen":
        return solve_buzen(network, curve=curve)
    if method == "bruteforce":
        return solve_bruteforce(network, curve=curve)
    raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
