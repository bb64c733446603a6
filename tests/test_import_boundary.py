"""The import layering: raysync never imports tuning or cluster; only raysync.runtime, Ray.

The rule is checked on the import graph by import-linter (contracts in pyproject.toml) and,
for imports by name that the graph cannot see, by an AST scan; both run through
``scripts/check_imports.py``, which .ci/run calls too. The planting tests prove the check
fails: each copies the packages into a temporary directory, adds one forbidden import to a
raysync module and expects the check to reject it.
"""

from __future__ import annotations

import importlib.util
import pkgutil
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import raysync

REPO = Path(__file__).resolve().parents[1]
ROOT = Path(raysync.__file__).resolve().parent
CHECK = REPO / "scripts" / "check_imports.py"
# raysync modules allowed to reach Ray (lazily): the package root (raysync.run), the CLI,
# and the runtime itself.
RAY_LAYERS = {"raysync", "raysync.__main__", "raysync.cli", "raysync._cli", "raysync.runtime"}


def _contracts() -> dict[str, dict]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c for c in config["contracts"]}


def _check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHECK), "--root", str(root)],
        capture_output=True, text=True, timeout=300, check=False,
    )


def _load_checker():
    spec = importlib.util.spec_from_file_location("check_imports", CHECK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_this_checkout_keeps_the_layering() -> None:
    result = _check(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(_contracts())} kept, 0 broken" in result.stdout
    assert "import layering: kept" in result.stdout


def test_every_raysync_module_is_in_a_checked_layer() -> None:
    # A new top-level module must be added to the Ray-free core contract (or be a Ray layer),
    # otherwise nothing would check it against importing Ray.
    core = set(_contracts()["ray-free-core"]["source_modules"])
    children = {f"raysync.{m.name}" for m in pkgutil.iter_modules([str(ROOT)])}
    unclassified = sorted(children - core - RAY_LAYERS)
    assert unclassified == [], f"add to [tool.importlinter] ray-free-core: {unclassified}"
    assert core <= children, f"contract names missing modules: {sorted(core - children)}"


def test_core_imports_without_ray_tuning_or_cluster() -> None:
    core = _contracts()["ray-free-core"]["source_modules"]
    modules = [
        info.name
        for info in pkgutil.walk_packages([str(ROOT)], prefix="raysync.")
        if any(info.name == c or info.name.startswith(c + ".") for c in core)
    ]
    assert "raysync.config" in modules and "raysync.queueing.network" in modules
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


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("raysync", "tuning", "cluster"):
        shutil.copytree(REPO / package, root / package, ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


PLANTS = {
    "module-level import": ("raysync/queueing/network.py", "import tuning\n"),
    "from-import in a function": (
        "raysync/simulation/engine.py",
        "def _planted():\n    from tuning.study import run_study\n    return run_study\n",
    ),
    "cluster from the CLI": ("raysync/cli.py", "def _planted():\n    import cluster.submit\n"),
    "importlib.import_module": (
        "raysync/objectives/bounds.py",
        "import importlib\n\ndef _planted():\n    return importlib.import_module('tuning.cli')\n",
    ),
    "__import__": ("raysync/routing/fixed.py", "_planted = __import__('cluster')\n"),
    "aliased import_module": (
        "raysync/config.py",
        "from importlib import import_module as _load\n\n_planted = _load('tuning')\n",
    ),
    "computed name": (
        "raysync/strategies/fedbuff.py",
        "import importlib\n\n_planted = importlib.import_module('tun' + 'ing')\n",
    ),
    "ray in the core": ("raysync/simulation/engine.py", "def _planted():\n    import ray\n"),
    "ray by name in the core": (
        "raysync/data/sources.py",
        "import importlib\n\ndef _planted():\n    return importlib.import_module('ray.util')\n",
    ),
    "runtime from the core": (
        "raysync/monitoring/__init__.py",
        "def _planted():\n    from raysync.runtime import run\n",
    ),
}


@pytest.mark.parametrize("kind", sorted(PLANTS))
def test_the_check_fails_on_a_planted_import(tmp_path, kind) -> None:
    relpath, code = PLANTS[kind]
    root = _copy(tmp_path)
    path = root / relpath
    path.write_text(path.read_text() + "\n\n" + code)
    result = _check(root)
    assert result.returncode == 1, f"{kind} not caught:\n{result.stdout}{result.stderr}"
    assert "import layering: BROKEN" in result.stdout


def test_dynamic_scan_names_file_line_and_rule(tmp_path) -> None:
    package = tmp_path / "raysync"
    (package / "runtime").mkdir(parents=True)
    (package / "a.py").write_text(
        "import importlib\nimportlib.import_module('tuning')\n"
        "importlib.util.find_spec('mnist')\n"
    )
    (package / "runtime" / "b.py").write_text("__import__('ray')\n__import__('cluster.x')\n")
    found = _load_checker().scan_dynamic_imports(package)
    assert found == [
        "raysync/a.py:2: raysync must never import 'tuning' (by name)",
        "raysync/runtime/b.py:2: raysync must never import 'cluster.x' (by name)",
    ]
