"""Build a router from a :class:`~raysync.config.RoutingConfig` (private).

The builders live in the registry (:mod:`raysync.routing.registry`); this module keeps the
factory's historical name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raysync.routing._base import BaseRouter
from raysync.routing.registry import build

if TYPE_CHECKING:
    from raysync.config import RoutingConfig

__all__ = ["make_router"]


def make_router(config: RoutingConfig) -> BaseRouter:
    """Build the router a :class:`~raysync.config.RoutingConfig` names.

    See :mod:`raysync.routing.registry` for the built-in kinds.

    Raises:
        ConfigError: The kind is not registered, or ``fixed`` without ``p``.
    """
    return build(config)
