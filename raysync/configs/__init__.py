"""Configs shipped inside the package (``raysync/configs/*.toml``, also in the wheel).

* ``demo``: the main demo's fleet, 12 clients in three speed tiers on MNIST
  (``raysync demo`` with no argument).

Example::

    from raysync.config import load_config
    from raysync.configs import packaged_config

    config = load_config(packaged_config("demo"))
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["names", "packaged_config"]

_HERE = Path(__file__).resolve().parent


def names() -> tuple[str, ...]:
    """Names of the packaged configs (file names without ``.toml``), sorted."""
    return tuple(sorted(p.stem for p in _HERE.glob("*.toml")))


def packaged_config(name: str = "demo") -> Path:
    """The path of a packaged config.

    Args:
        name: One of :func:`names`.

    Returns:
        The path of ``raysync/configs/<name>.toml``.

    Raises:
        ValueError: ``name`` is not a packaged config.
    """
    available = names()
    if name not in available:
        raise ValueError(
            f"packaged config must be one of {', '.join(available) or '(none)'}, got {name!r}"
        )
    return _HERE / f"{name}.toml"
