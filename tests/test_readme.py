"""README.md states the set-up and test commands; .ci/run must run exactly those."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _code_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = _code_blocks(readme.split("---")[0])
    assert len(blocks) == 3, "README must start with set-up, test and main-job commands"
    setup, test, _main_job = blocks
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"SETUP_CMD='{setup}'" in ci
    assert f"TEST_CMD='{test}'" in ci
    assert "pytest" in test


def test_ci_runs_the_layering_docs_and_wheel_checks() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    for command in (
        ".venv/bin/python scripts/check_imports.py",
        ".venv/bin/mkdocs build --strict",
        "bash scripts/check_wheel.sh",
    ):
        assert command in ci, f".ci/run must run {command!r}"
        # before the tests, so that a failure stops CI with its own message
        assert ci.index(command) < ci.index('eval "$TEST_CMD"')
    for script in ("check_imports.py", "check_wheel.sh"):
        assert (ROOT / "scripts" / script).is_file()
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert '-e ".[dev,bench]"' in setup  # the dev extra brings import-linter and mkdocs
