"""The registry of server update rules: ``algorithm.name`` -> strategy.

The config's allowed ``algorithm.name`` values are :func:`names`; :func:`build` (also
``raysync.strategies.make_strategy``) constructs the strategy an
:class:`~raysync.config.AlgorithmConfig` names. Adding a rule is one class plus one
:func:`register` call (see :mod:`raysync._registry`).

Built-in mapping of the config's fields:

* ``asyncsgd``: ``AsyncSGD(lr=lr, batch_size=batch_size)``.
* ``generalized_asyncsgd``: ``GeneralizedAsyncSGD(lr=lr, batch_size=batch_size,
  beta=weight_exponent)``.
* ``fedasync``: ``FedAsync(alpha=alpha, staleness=s, local_steps=local_steps,
  local_lr=lr, batch_size=batch_size)``, ``s`` from ``staleness``, ``staleness_exponent``,
  ``hinge_a``, ``hinge_b``.
* ``fedbuff``: ``FedBuff(buffer_size=buffer_size, server_lr=server_lr,
  local_steps=local_steps, local_lr=lr, batch_size=batch_size, staleness=s if
  staleness_weighting else None)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raysync._registry import Registry
from raysync.strategies._base import BaseStrategy
from raysync.strategies.asyncsgd import AsyncSGD, GeneralizedAsyncSGD
from raysync.strategies.fedasync import FedAsync
from raysync.strategies.fedbuff import FedBuff
from raysync.strategies.staleness import BaseStaleness, make_staleness

if TYPE_CHECKING:  # raysync.config imports this module when it validates a name
    from raysync.config import AlgorithmConfig

__all__ = ["STRATEGIES", "build", "names", "register", "unregister", "staleness_from_config"]

#: The registry itself; ``register``, ``unregister`` and ``names`` are its methods.
STRATEGIES: Registry[BaseStrategy] = Registry("algorithm.name")
register = STRATEGIES.register
unregister = STRATEGIES.unregister
names = STRATEGIES.names


def build(config: AlgorithmConfig) -> BaseStrategy:
    """Build the server update rule an :class:`~raysync.config.AlgorithmConfig` names.

    Raises:
        ConfigError: ``config.name`` is not registered.
    """
    return STRATEGIES.build(config.name, config)


def staleness_from_config(config: AlgorithmConfig) -> BaseStaleness:
    """Build the staleness function an algorithm config names.

    ``constant`` takes no parameter; ``polynomial`` uses ``staleness_exponent`` as ``a``;
    ``hinge`` uses ``hinge_a`` and ``hinge_b``.
    """
    if config.staleness == "polynomial":
        return make_staleness("polynomial", a=config.staleness_exponent)
    if config.staleness == "hinge":
        return make_staleness("hinge", a=config.hinge_a, b=config.hinge_b)
    return make_staleness(config.staleness)


@register("asyncsgd")
def _asyncsgd(config: AlgorithmConfig) -> BaseStrategy:
    return AsyncSGD(lr=config.lr, batch_size=config.batch_size)


@register("generalized_asyncsgd")
def _generalized_asyncsgd(config: AlgorithmConfig) -> BaseStrategy:
    return GeneralizedAsyncSGD(
        lr=config.lr, batch_size=config.batch_size, beta=config.weight_exponent
    )


@register("fedasync")
def _fedasync(config: AlgorithmConfig) -> BaseStrategy:
    return FedAsync(
        alpha=config.alpha,
        staleness=staleness_from_config(config),
        local_steps=config.local_steps,
        local_lr=config.lr,
        batch_size=config.batch_size,
    )


@register("fedbuff")
def _fedbuff(config: AlgorithmConfig) -> BaseStrategy:
    return FedBuff(
        buffer_size=config.buffer_size,
        server_lr=config.server_lr,
        local_steps=config.local_steps,
        local_lr=config.lr,
        batch_size=config.batch_size,
        staleness=staleness_from_config(config) if config.staleness_weighting else None,
    )
