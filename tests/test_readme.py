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
