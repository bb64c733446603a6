"""Staleness functions ``s(D)``: how much a result with relative delay ``D`` counts.

``D = k - v`` is the number of updates applied between a task's dispatch and the update
that consumes it (docs/theory.md section 1). Every function maps ``D >= 0`` to ``(0, 1]``, with
``s(0) = 1``, and is vectorised: a scalar gives a float, an array an array of floats.
FedAsync scales its mixing weight by ``s(D)``; FedBuff can weight buffered deltas by it.
"""

from __future__ import annotations

import abc
import math
from typing import Any, overload

import numpy as np

from raysync.exceptions import ConfigError

__all__ = [
    "STALENESS_FUNCTIONS",
    "BaseStaleness",
    "ConstantStaleness",
    "HingeStaleness",
    "PolynomialStaleness",
    "make_staleness",
]


def _check_number(name: str, value: object, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    result = float(value)
    rule = ">= 0" if allow_zero else "> 0"
    if not math.isfinite(result) or result < 0 or (result == 0 and not allow_zero):
        raise ConfigError(f"{name} must be a finite number {rule}, got {value!r}")
    return result


class BaseStaleness(abc.ABC):
    """A staleness function ``s: D -> (0, 1]`` with ``s(0) = 1``.

    Subclasses implement :meth:`_evaluate` on a float64 array of delays already checked
    to be ``>= 0``.
    """

    @overload
    def __call__(self, staleness: int | float) -> float: ...

    @overload
    def __call__(self, staleness: np.ndarray) -> np.ndarray: ...

    def __call__(self, staleness: int | float | np.ndarray) -> float | np.ndarray:
        """Evaluate ``s`` at one delay (returns a float) or an array of delays.

        Raises:
            ConfigError: A delay is negative or not finite.
        """
        delays = np.asarray(staleness, dtype=np.float64)
        if not np.all(np.isfinite(delays)) or np.any(delays < 0):
            raise ConfigError(f"staleness D must be finite and >= 0, got {staleness!r}")
        values = self._evaluate(delays)
        if np.ndim(staleness) == 0 and not isinstance(staleness, np.ndarray):
            return float(values)
        return values

    @abc.abstractmethod
    def _evaluate(self, delays: np.ndarray) -> np.ndarray:
        """Return ``s(D)`` elementwise for a float64 array of delays ``D >= 0``."""


class ConstantStaleness(BaseStaleness):
    """``s(D) = 1``: staleness is ignored."""

    def _evaluate(self, delays: np.ndarray) -> np.ndarray:
        return np.ones_like(delays)

    def __repr__(self) -> str:
        return "ConstantStaleness()"


class PolynomialStaleness(BaseStaleness):
    """``s(D) = (D + 1) ** (-a)``: polynomial decay (FedAsync).

    Args:
        a: Exponent, finite and >= 0 (``a = 0`` is the constant function).

    Raises:
        ConfigError: ``a`` is negative or not finite.
    """

    def __init__(self, *, a: float) -> None:
        self._a = _check_number("polynomial staleness exponent a", a, allow_zero=True)

    @property
    def a(self) -> float:
        """The exponent ``a``."""
        return self._a

    def _evaluate(self, delays: np.ndarray) -> np.ndarray:
        return np.power(delays + 1.0, -self._a)

    def __repr__(self) -> str:
        return f"PolynomialStaleness(a={self._a!r})"


class HingeStaleness(BaseStaleness):
    """``s(D) = 1`` if ``D <= b``, else ``1 / (a (D - b) + 1)`` (FedAsync's hinge).

    Args:
        a: Slope of the decay after the hinge, finite and > 0.
        b: Delay up to which results count fully, finite and >= 0.

    Raises:
        ConfigError: ``a`` or ``b`` breaks its rule.
    """

    def __init__(self, *, a: float, b: float) -> None:
        self._a = _check_number("hinge staleness slope a", a, allow_zero=False)
        self._b = _check_number("hinge staleness threshold b", b, allow_zero=True)

    @property
    def a(self) -> float:
        """The slope ``a``."""
        return self._a

    @property
    def b(self) -> float:
        """The threshold ``b``."""
        return self._b

    def _evaluate(self, delays: np.ndarray) -> np.ndarray:
        excess = np.maximum(delays - self._b, 0.0)
        return 1.0 / (self._a * excess + 1.0)

    def __repr__(self) -> str:
        return f"HingeStaleness(a={self._a!r}, b={self._b!r})"


STALENESS_FUNCTIONS: dict[str, type[BaseStaleness]] = {
    "constant": ConstantStaleness,
    "polynomial": PolynomialStaleness,
    "hinge": HingeStaleness,
}


def make_staleness(name: str, **params: Any) -> BaseStaleness:
    """Build a staleness function by name.

    Args:
        name: ``constant`` (no parameters), ``polynomial`` (``a``) or ``hinge``
            (``a``, ``b``).
        **params: The function's keyword parameters.

    Raises:
        ConfigError: Unknown name, or parameters missing, unknown or out of range.
    """
    cls = STALENESS_FUNCTIONS.get(name)
    if cls is None:
        raise ConfigError(
            f"staleness must be one of {', '.join(STALENESS_FUNCTIONS)}, got {name!r}"
        )
    try:
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"bad parameters {params!r} for staleness {name!r}: {exc}") from exc
