"""Build a router from a :class:`~raysync.config.RoutingConfig` (private)."""

from __future__ import annotations

from raysync.config import RoutingConfig
from raysync.exceptions import ConfigError
from raysync.routing._base import BaseRouter
from raysync.routing.fixed import FixedRouter, UniformRouter
from raysync.routing.return_to_sender import ReturnToSenderRouter

__all__ = ["make_router"]


def make_router(config: RoutingConfig) -> BaseRouter:
    """Build the router a :class:`~raysync.config.RoutingConfig` describes.

    ``fixed`` gives ``FixedRouter(p=config.p)``, ``uniform`` gives ``UniformRouter()``,
    ``return_to_sender`` gives ``ReturnToSenderRouter()``.

    Raises:
        ConfigError: The kind is unknown, or ``fixed`` without ``p``.
    """
    if config.kind == "fixed":
        if config.p is None:
            raise ConfigError("routing.p is required when routing.kind is 'fixed'")
        return FixedRouter(p=config.p)
    if config.kind == "uniform":
        return UniformRouter()
    if config.kind == "return_to_sender":
        return ReturnToSenderRouter()
    raise ConfigError(f"routing.kind {config.kind!r} has no router")
