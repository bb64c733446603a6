"""Build a strategy from an :class:`~raysync.config.AlgorithmConfig` (private)."""

from __future__ import annotations

from raysync.config import AlgorithmConfig
from raysync.exceptions import ConfigError
from raysync.strategies._base import BaseStrategy
from raysync.strategies.asyncsgd import AsyncSGD, GeneralizedAsyncSGD
from raysync.strategies.fedasync import FedAsync
from raysync.strategies.fedbuff import FedBuff
from raysync.strategies.staleness import BaseStaleness, make_staleness

__all__ = ["make_strategy", "staleness_from_config"]


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


def make_strategy(config: AlgorithmConfig) -> BaseStrategy:
    """Build the server update rule an :class:`~raysync.config.AlgorithmConfig` describes.

    Mapping of the config's fields:

    * ``asyncsgd``: ``AsyncSGD(lr=lr, batch_size=batch_size)``.
    * ``generalized_asyncsgd``: ``GeneralizedAsyncSGD(lr=lr, batch_size=batch_size,
      beta=weight_exponent)``.
    * ``fedasync``: ``FedAsync(alpha=alpha, staleness=s, local_steps=local_steps,
      local_lr=lr, batch_size=batch_size)``, ``s`` from ``staleness``,
      ``staleness_exponent``, ``hinge_a``, ``hinge_b``.
    * ``fedbuff``: ``FedBuff(buffer_size=buffer_size, server_lr=server_lr,
      local_steps=local_steps, local_lr=lr, batch_size=batch_size, staleness=s if
      staleness_weighting else None)``.

    Raises:
        ConfigError: The algorithm name is unknown.
    """
    if config.name == "asyncsgd":
        return AsyncSGD(lr=config.lr, batch_size=config.batch_size)
    if config.name == "generalized_asyncsgd":
        return GeneralizedAsyncSGD(
            lr=config.lr, batch_size=config.batch_size, beta=config.weight_exponent
        )
    if config.name == "fedasync":
        return FedAsync(
            alpha=config.alpha,
            staleness=staleness_from_config(config),
            local_steps=config.local_steps,
            local_lr=config.lr,
            batch_size=config.batch_size,
        )
    if config.name == "fedbuff":
        return FedBuff(
            buffer_size=config.buffer_size,
            server_lr=config.server_lr,
            local_steps=config.local_steps,
            local_lr=config.lr,
            batch_size=config.batch_size,
            staleness=staleness_from_config(config) if config.staleness_weighting else None,
        )
    raise ConfigError(f"algorithm.name {config.name!r} has no strategy")
