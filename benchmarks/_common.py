"""Helpers shared by the benchmark scripts (imported as ``_common``: run them as scripts).

``python benchmarks/bench_X.py`` puts ``benchmarks/`` first on ``sys.path``, so each
script reads ``from _common import ...``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RESULTS", "best_of", "machine", "rel", "save_results"]

#: Where every benchmark writes its JSON, Markdown and PNG.
RESULTS = Path(__file__).resolve().parent / "results"


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    """The shortest wall time of ``repeats`` calls of ``fn`` (seconds)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def rel(a: np.ndarray | float, b: np.ndarray | float) -> float:
    """Largest relative difference of ``a`` from the reference ``b`` (elementwise)."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def machine(*, load: bool = False) -> dict[str, Any]:
    """The machine the figures were measured on (with the 1-minute load if ``load``)."""
    info: dict[str, Any] = {"cpu_count": os.cpu_count()}
    if load:
        info["load_average_1min"] = os.getloadavg()[0]
    info.update(
        platform=platform.platform(), python=sys.version.split()[0], numpy=np.__version__
    )
    return info


def save_results(
    name: str,
    payload: dict[str, Any],
    markdown: Callable[[dict[str, Any], Path], None],
    plot: Callable[[dict[str, Any], Path], None] | None,
    *,
    default: Callable[[Any], Any] | None = None,
    results: Path | None = None,
) -> None:
    """Write ``results/<name>.json`` and, through the script's writers, its ``.md`` and ``.png``.

    ``plot`` None: no ``.png``. ``default``: :func:`json.dumps`'s, for the values JSON has no
    type for (``float`` writes numpy scalars as numbers). ``results``: the folder instead of
    :data:`RESULTS` (a script passes its own ``RESULTS``, so a test that patches it holds).
    """
    folder = RESULTS if results is None else results
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(payload, indent=2, default=default))
    markdown(payload, folder / f"{name}.md")
    if plot is not None:
        plot(payload, folder / f"{name}.png")
