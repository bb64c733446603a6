"""Build a strategy from an :class:`~raysync.config.AlgorithmConfig` (private).

The builders live in the registry (:mod:`raysync.strategies.registry`); this module keeps
the factory's historical names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raysync.strategies._base import BaseStrategy
from raysync.strategies.registry import build, staleness_from_config

if TYPE_CHECKING:
    from raysync.config import AlgorithmConfig

__all__ = ["make_strategy", "staleness_from_config"]


def make_strategy(config: AlgorithmConfig) -> BaseStrategy:
    """Build the server update rule an :class:`~raysync.config.AlgorithmConfig` names.

    See :mod:`raysync.strategies.registry` for the mapping of the config's fields.

    Raises:
        ConfigError: The algorithm name is not registered.
    """
    return build(config)
