"""The p column of analyze, simulate and validate: one format, small probabilities shown."""

from __future__ import annotations

import re

import pytest

from raysync._validation import format_probability
from raysync.cli import main

# 20,000 uniform clients: p = 5e-05, which ".4f" printed as 0.0000 (analyze) and 0.0001
# (simulate, 5.0000000000000002e-05 rounded up).
FLEET = """concurrency = 4
seed = 0
[routing]
kind = "uniform"
[run]
num_updates = 200
[[clients]]
count = 20000
service_time = { kind = "exponential", rate = 1.0 }
"""


@pytest.mark.parametrize(
    ("p", "shown"),
    [
        (0.25, "0.2500"),
        (1.0, "1.0000"),
        (0.0, "0.0000"),
        (0.001, "0.0010"),
        (0.0012345, "0.0012"),
        (5e-05, "5e-05"),
        (0.00012345, "0.00012"),
        (1e-300, "1e-300"),
    ],
)
def test_format_probability(p: float, shown: str) -> None:
    assert format_probability(p) == shown
    assert len(shown) <= 7  # the width of simulate's p column


@pytest.mark.parametrize("command", [["analyze"], ["simulate", "--queue-only"], ["validate"]])
def test_the_p_of_20000_uniform_clients_is_shown(
    command: list[str], tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(FLEET)
    assert main([command[0], str(path), *command[1:]]) == 0
    out = capsys.readouterr().out
    row = re.search(r"^\s*0\s+(?:exponential\s+)?1\s+(\S+)", out, re.MULTILINE)
    assert row is not None, out[:2000]
    assert row.group(1) == "5e-05"
