"""docs/: the theory the docstrings cite exists, with its sources, and every citation resolves."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THEORY = ROOT / "docs" / "theory.md"
# Python and Markdown files that may cite the theory.
SOURCES = ("raysync", "tuning", "cluster", "tests", "benchmarks", "docs")


def _sections() -> set[str]:
    return set(re.findall(r"^## (\d+)\. ", THEORY.read_text(), flags=re.M))


def _equations() -> set[str]:
    return set(re.findall(r"\*\*\((T\d+)\)\*\*", THEORY.read_text()))


def test_theory_names_its_sources_and_sections() -> None:
    text = THEORY.read_text()
    for arxiv in ("2502.08206", "2405.00017", "1903.03934", "2106.06639"):
        assert arxiv in text
    assert _sections() == {str(i) for i in range(1, 7)}
    assert len(_equations()) >= 20


def test_every_citation_of_the_theory_resolves() -> None:
    bad = []
    cite = re.compile(r"docs/theory\.md,?\s+(?:section|sec\.|sections?)\s+(\d+)")
    for folder in SOURCES:
        for path in (ROOT / folder).rglob("*"):
            if path.suffix not in {".py", ".md"} or not path.is_file():
                continue
            text = path.read_text(errors="replace")
            for match in cite.finditer(text):
                if match.group(1) not in _sections():
                    bad.append(f"{path.relative_to(ROOT)}: {match.group(0)}")
            for eq in re.findall(r"docs/theory\.md \((T\d+)\)", text):
                if eq not in _equations():
                    bad.append(f"{path.relative_to(ROOT)}: {eq}")
    assert bad == []


def test_no_reference_to_the_old_theory_file_is_left() -> None:
    # The theory used to live outside the repository; every pointer now goes to docs/.
    left = [
        str(path.relative_to(ROOT))
        for folder in ("raysync", "tuning", "cluster")
        for path in (ROOT / folder).rglob("*.py")
        if "THEORY.md" in path.read_text()
    ]
    assert left == []
