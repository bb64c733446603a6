"""raysync's core must import without Ray; only raysync.runtime may import it."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import raysync

ROOT = Path(raysync.__file__).resolve().parent


def _core_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages([str(ROOT)], prefix="raysync."):
        if info.name.startswith("raysync.runtime") or info.name.startswith("raysync.testing"):
            continue
        names.append(info.name)
    return names


def test_core_modules_exist() -> None:
    names = _core_modules()
    assert "raysync.config" in names
    assert "raysync.cli" in names


def test_core_imports_without_ray_tuning_or_cluster() -> None:
    modules = _core_modules()
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'tuning', 'cluster'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "", f"core modules imported: {out.stdout.strip()}"


def test_library_never_imports_tuning_or_cluster() -> None:
    offenders = []
    for path in ROOT.rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            forbidden = ("import tuning", "from tuning", "import cluster", "from cluster")
            if stripped.startswith(forbidden):
                offenders.append(f"{path.relative_to(ROOT)}: {stripped}")
    assert offenders == []
