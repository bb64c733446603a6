"""The registry of routers: ``routing.kind`` -> router.

The config's allowed ``routing.kind`` values are :func:`names`; :func:`build` (also
``raysync.routing.make_router``) constructs the router a
:class:`~raysync.config.RoutingConfig` names. Adding a router is one class plus one
:func:`register` call (see :mod:`raysync._registry`).

Built-in: ``fixed`` gives ``FixedRouter(p=p)`` (``p`` required), ``uniform`` gives
``UniformRouter()``, ``return_to_sender`` gives ``ReturnToSenderRouter()``, ``adaptive`` gives
``AdaptiveRouter(...)`` with the config's ``reoptimize_every``, ``reoptimize_seconds``,
``constants``, ``horizon``, ``explore``, ``window``, ``objective``, ``zeta2``,
``weight_exponent``, ``change_confidence`` and ``warmup`` (docs/adaptive.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raysync._registry import Registry
from raysync.exceptions import ConfigError
from raysync.routing._base import BaseRouter
from raysync.routing.fixed import FixedRouter, UniformRouter
from raysync.routing.return_to_sender import ReturnToSenderRouter

if TYPE_CHECKING:  # raysync.config imports this module when it validates a kind
    from raysync.config import RoutingConfig

__all__ = ["ROUTERS", "build", "names", "register", "unregister"]

#: The registry itself; ``register``, ``unregister`` and ``names`` are its methods.
ROUTERS: Registry[BaseRouter] = Registry("routing.kind")
register = ROUTERS.register
unregister = ROUTERS.unregister
names = ROUTERS.names


def build(config: RoutingConfig) -> BaseRouter:
    """Build the router a :class:`~raysync.config.RoutingConfig` names.

    Raises:
        ConfigError: ``config.kind`` is not registered, or ``fixed`` without ``p``.
    """
    return ROUTERS.build(config.kind, config)


@register("fixed")
def _fixed(config: RoutingConfig) -> BaseRouter:
    if config.p is None:
        raise ConfigError("routing.p is required when routing.kind is 'fixed'")
    return FixedRouter(p=config.p)


@register("uniform")
def _uniform(config: RoutingConfig) -> BaseRouter:
    return UniformRouter()


@register("return_to_sender")
def _return_to_sender(config: RoutingConfig) -> BaseRouter:
    return ReturnToSenderRouter()


@register("adaptive")
def _adaptive(config: RoutingConfig) -> BaseRouter:
    from raysync.routing.adaptive import AdaptiveRouter

    names = ("reoptimize_every", "reoptimize_seconds", "constants", "horizon", "explore", "window",
             "objective", "zeta2", "weight_exponent", "change_confidence", "warmup")  # fmt: skip
    kwargs = {k: getattr(config, k) for k in names if getattr(config, k, None) is not None}
    return AdaptiveRouter(**kwargs)
