"""A registry of named builders: one per extension point (strategies, routers, service times).

Each extension point owns one :class:`Registry` (``raysync.strategies.registry``,
``raysync.routing.registry``, ``raysync.simulation.registry``). The config's allowed names
(``algorithm.name``, ``routing.kind``, ``service_time.kind``) are the registry's names, and
the factories (``make_strategy``, ``make_router``, ``make_service_time``) build through it,
so a new implementation is one class plus one ``register`` call::

    from raysync.strategies import BaseStrategy, registry

    @registry.register("my_rule")
    def _build(config):  # config: the AlgorithmConfig
        return MyRule(lr=config.lr, batch_size=config.batch_size)

A config may then say ``algorithm.name = "my_rule"`` (register before loading it).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

from raysync.exceptions import ConfigError

__all__ = ["Registry"]

T = TypeVar("T")
Builder = Callable[[Any], T]

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class Registry(Generic[T]):
    """Named builders ``config -> instance`` of one extension point, in registration order.

    Args:
        field: The config field whose value names an entry (``"algorithm.name"``); used in
            error messages.
    """

    def __init__(self, field: str) -> None:
        self._field = field
        self._builders: dict[str, Builder[T]] = {}

    @property
    def field(self) -> str:
        """The config field whose value names an entry."""
        return self._field

    @overload
    def register(self, name: str) -> Callable[[Builder[T]], Builder[T]]: ...

    @overload
    def register(self, name: str, builder: Builder[T]) -> Builder[T]: ...

    def register(self, name: str, builder: Builder[T] | None = None) -> Any:
        """Register ``builder`` under ``name``; without ``builder``, return a decorator.

        Args:
            name: Lower-case snake-case name (``[a-z][a-z0-9_]*``), not yet registered.
            builder: Callable taking the extension point's config section and returning
                an instance.

        Returns:
            The builder (so the decorator leaves the function unchanged).

        Raises:
            ValueError: The name is malformed or taken, or the builder is not callable.
        """
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(
                f"{self._field} names must match [a-z][a-z0-9_]*, got {name!r}"
            )
        if name in self._builders:
            raise ValueError(f"{self._field} {name!r} is already registered")

        def add(fn: Builder[T]) -> Builder[T]:
            if not callable(fn):
                raise ValueError(f"the builder of {self._field} {name!r} must be callable")
            self._builders[name] = fn
            return fn

        return add if builder is None else add(builder)

    def unregister(self, name: str) -> None:
        """Remove an entry (for tests and plugins that clean up after themselves).

        Raises:
            KeyError: ``name`` is not registered.
        """
        del self._builders[name]

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._builders)

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def build(self, name: str, config: Any) -> T:
        """Build the entry ``name`` from ``config``.

        Raises:
            ConfigError: ``name`` is not registered (the message lists the names).
        """
        builder = self._builders.get(name)
        if builder is None:
            raise ConfigError(
                f"{self._field} must be one of {', '.join(self._builders)}, got {name!r}"
            )
        return builder(config)

    def __repr__(self) -> str:
        return f"Registry({self._field!r}, names={self.names()!r})"
