"""Validation helpers shared by the numeric modules (messages name field, rule, value)."""

from __future__ import annotations

import math

import numpy as np

from raysync.exceptions import ConfigError

__all__ = ["check_number"]


def check_number(name: str, value: object, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float after checking it is a finite, positive number.

    Args:
        name: Field name used in the message.
        value: The value to check (Python or numpy number; bools are refused).
        allow_zero: Accept 0 (the rule becomes ``>= 0``).

    Raises:
        ConfigError: The value is not a number, not finite, or not positive.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be finite, got {number!r}")
    if allow_zero and number < 0:
        raise ConfigError(f"{name} must be >= 0, got {number!r}")
    if not allow_zero and number <= 0:
        raise ConfigError(f"{name} must be > 0, got {number!r}")
    return number
