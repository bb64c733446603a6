"""Check raysync's import layering: the import-graph contracts plus dynamic imports.

Usage: ``python scripts/check_imports.py [--root DIR]`` (DIR: a checkout, default this one).

1. ``lint-imports`` checks the contracts of ``[tool.importlinter]`` in DIR/pyproject.toml on
   the static import graph (every ``import`` statement, module level or inside functions):
   raysync never imports tuning or cluster; the Ray-free core imports neither ray nor the
   runtime nor the CLI; only raysync.runtime imports ray directly.
2. The graph cannot see imports by name, so an AST scan of DIR/raysync rejects every call
   of ``importlib.import_module``, ``__import__``, ``importlib.util.find_spec`` (it imports
   the parents of a dotted name), ``importlib.reload`` or ``runpy`` whose module name is not
   a string literal, and every literal that names tuning or cluster (anywhere in raysync)
   or ray (outside raysync.runtime).

Exit code 0 when both pass, 1 otherwise, with one line per violation.
"""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
from pathlib import Path

# Calls that import a module whose name is their first argument.
DYNAMIC_IMPORTERS = frozenset(
    {"import_module", "__import__", "find_spec", "run_module", "reload", "import_string"}
)
NEVER_IN_RAYSYNC = ("tuning", "cluster")
ONLY_IN_RUNTIME = ("ray",)


def _names(value: str) -> str:
    return value.split(".")[0]


def _literal_module(node: ast.expr) -> str | None:
    """The module name a literal argument spells, or None when it is computed."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _callee(node: ast.Call) -> str | None:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _aliases(tree: ast.Module) -> set[str]:
    """Local names bound to the importing functions (``from importlib import x as y``)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in {
            "importlib", "importlib.util", "runpy", "builtins"
        }:
            for alias in node.names:
                if alias.name in DYNAMIC_IMPORTERS:
                    out.add(alias.asname or alias.name)
    return out


def scan_dynamic_imports(package_dir: Path) -> list[str]:
    """Violations of the dynamic-import rule in a package directory (``.../raysync``).

    Args:
        package_dir: The ``raysync`` package directory to scan.

    Returns:
        One ``path:line: message`` string per violation, sorted.
    """
    violations: list[str] = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir.parent)
        in_runtime = rel.parts[:2] == ("raysync", "runtime")
        tree = ast.parse(path.read_text(), filename=str(path))
        importers = DYNAMIC_IMPORTERS | _aliases(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or _callee(node) not in importers:
                continue
            where = f"{rel}:{node.lineno}"
            arg = node.args[0] if node.args else None
            for keyword in node.keywords:
                if keyword.arg in {"name", "mod_name"}:
                    arg = keyword.value
            name = None if arg is None else _literal_module(arg)
            if name is None:
                violations.append(
                    f"{where}: {_callee(node)}() with a computed module name cannot be "
                    "checked; import the module statically"
                )
                continue
            top = _names(name)
            if top in NEVER_IN_RAYSYNC:
                violations.append(f"{where}: raysync must never import {name!r} (by name)")
            elif top in ONLY_IN_RUNTIME and not in_runtime:
                violations.append(f"{where}: only raysync.runtime may import {name!r}")
    return violations


def run_contracts(root: Path) -> int:
    """Run ``lint-imports`` on ``root``'s pyproject.toml with ``root`` first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    code = (
        "import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=root, env=env, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    """Run both checks; 0 when the layering holds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1]))
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    failed = run_contracts(root) != 0
    violations = scan_dynamic_imports(root / "raysync")
    for line in violations:
        print(f"dynamic import: {line}")
    if violations:
        failed = True
    print("import layering: " + ("BROKEN" if failed else "kept"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
