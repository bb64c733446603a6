from __future__ import annotations

import numpy as np
import pytest

from raysync.exceptions import ConfigError
from raysync.strategies import (
    ConstantStaleness,
    HingeStaleness,
    PolynomialStaleness,
    make_staleness,
)


def test_constant() -> None:
    s = ConstantStaleness()
    assert s(0) == 1.0 and s(10) == 1.0
    np.testing.assert_array_equal(s(np.array([0, 1, 4, 10])), np.ones(4))


@pytest.mark.parametrize(
    ("a", "delay", "expected"),
    [
        (0.5, 0, 1.0),
        (0.5, 1, 2**-0.5),
        (0.5, 3, 0.5),  # (3 + 1) ** -0.5
        (0.5, 8, 1 / 3),  # 9 ** -0.5
        (1.0, 4, 0.2),  # 5 ** -1
        (2.0, 10, 1 / 121),
        (0.0, 10, 1.0),
    ],
)
def test_polynomial_values(a: float, delay: int, expected: float) -> None:
    assert PolynomialStaleness(a=a)(delay) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize(
    ("a", "b", "delay", "expected"),
    [
        (10.0, 4.0, 0, 1.0),
        (10.0, 4.0, 1, 1.0),
        (10.0, 4.0, 4, 1.0),  # D <= b
        (10.0, 4.0, 5, 1 / 11),  # 1 / (10 * 1 + 1)
        (10.0, 4.0, 10, 1 / 61),  # 1 / (10 * 6 + 1)
        (0.5, 0.0, 0, 1.0),
        (0.5, 0.0, 4, 1 / 3),  # 1 / (0.5 * 4 + 1)
        (0.5, 0.0, 10, 1 / 6),
    ],
)
def test_hinge_values(a: float, b: float, delay: int, expected: float) -> None:
    assert HingeStaleness(a=a, b=b)(delay) == pytest.approx(expected, rel=1e-15)


def test_vectorised_over_arrays() -> None:
    delays = np.array([0, 1, 4, 10])
    poly = PolynomialStaleness(a=1.0)(delays)
    assert isinstance(poly, np.ndarray) and poly.dtype == np.float64
    np.testing.assert_allclose(poly, [1.0, 0.5, 0.2, 1 / 11], rtol=1e-15)
    hinge = HingeStaleness(a=10.0, b=4.0)(delays)
    np.testing.assert_allclose(hinge, [1.0, 1.0, 1.0, 1 / 61], rtol=1e-15)
    np.testing.assert_allclose(
        HingeStaleness(a=2.0, b=1.0)(delays.reshape(2, 2)), [[1.0, 1.0], [1 / 7, 1 / 19]]
    )


def test_scalar_gives_float() -> None:
    assert isinstance(PolynomialStaleness(a=1.0)(3), float)
    assert isinstance(HingeStaleness(a=1.0, b=1.0)(np.int64(3)), float)


@pytest.mark.parametrize("bad", [-1, float("nan"), np.array([0, -2])])
def test_rejects_negative_delay(bad: object) -> None:
    with pytest.raises(ValueError, match="staleness D must be finite and >= 0"):
        PolynomialStaleness(a=1.0)(bad)  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (
            lambda: PolynomialStaleness(a=-0.5),
            r"exponent a must be a finite number >= 0, got -0\.5",
        ),
        (lambda: PolynomialStaleness(a="x"), r"exponent a must be a finite number, got 'x'"),
        (lambda: HingeStaleness(a=0.0, b=1.0), r"slope a must be a finite number > 0, got 0\.0"),
        (lambda: HingeStaleness(a=1.0, b=-1.0), r"threshold b must be a finite number >= 0"),
        (lambda: HingeStaleness(a=float("inf"), b=1.0), r"slope a must be a finite number > 0"),
    ],
)
def test_bad_parameters(build: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build()  # type: ignore[operator]


def test_keyword_only() -> None:
    with pytest.raises(TypeError):
        PolynomialStaleness(0.5)  # type: ignore[misc]


def test_make_staleness() -> None:
    assert isinstance(make_staleness("constant"), ConstantStaleness)
    poly = make_staleness("polynomial", a=0.5)
    assert isinstance(poly, PolynomialStaleness) and poly.a == 0.5
    hinge = make_staleness("hinge", a=3.0, b=2.0)
    assert isinstance(hinge, HingeStaleness) and (hinge.a, hinge.b) == (3.0, 2.0)
    with pytest.raises(ConfigError, match="staleness must be one of constant, polynomial, hinge"):
        make_staleness("exponential")
    with pytest.raises(ConfigError, match="bad parameters .* for staleness 'hinge'"):
        make_staleness("hinge", a=1.0)
    with pytest.raises(ConfigError, match="for staleness 'constant'"):
        make_staleness("constant", a=1.0)
    assert repr(hinge) == "HingeStaleness(a=3.0, b=2.0)"
