"""Nonsense in an adaptive or non-stationary config: one line naming it, exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from raysync.cli import main

BASE = """
concurrency = 3
[run]
num_updates = 200
train = false
"""


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (
            '[routing]\nkind = "adaptive"\nreoptimize_every = 0\n'
            '[[clients]]\nservice_time = { kind = "exponential", rate = 1.0 }\ncount = 2\n',
            "routing.reoptimize_every must be an integer >= 1, got 0",
        ),
        (
            '[[clients]]\nservice_time = { kind = "exponential", rate = -1.0 }\n',
            "service_time.rate must be > 0, got -1.0",
        ),
        (
            '[[clients]]\nservice_time = { kind = "schedule", segments = [\n'
            "  { until = 50.0, rate = 1.0 }, { until = 20.0, rate = 2.0 }, { rate = 1.0 } ] }\n",
            "segments[1].until must be > segments[0].until = 50",
        ),
        (
            '[[clients]]\nservice_time = { kind = "exponential", rate = 1.0 }\n'
            "leave_time = 10.0\n"
            '[[clients]]\nservice_time = { kind = "exponential", rate = 1.0 }\n'
            "join_time = 20.0\n",
            "every client has left at t = 10",
        ),
    ],
)
def test_nonsense_exits_2_with_one_line(
    body: str, match: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BASE + body, encoding="utf-8")
    code = main(["simulate", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert match in err
    assert len(err.splitlines()) == 1, err
