from __future__ import annotations

import json
from pathlib import Path

import pytest

from raysync.cli import main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny.toml"


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "validate" in capsys.readouterr().out


def test_validate_prints_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and "concurrency: 6" in out
    assert "0.4000" in out


def test_validate_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLE), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["concurrency"] == 6 and len(data["clients"]) == 4


def test_bad_config_gives_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace("concurrency = 6", "concurrency = 0"))
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "concurrency must be an integer >= 1, got 0" in err


def test_missing_config_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
