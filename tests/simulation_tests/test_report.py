"""The ``raysync simulate`` report at large ``n``: a cut per-client table, built in O(n)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from raysync.config import SystemConfig
from raysync.simulation import simulate
from raysync.simulation.report import (
    dumps_json,
    format_report,
    table_rows,
    theory_prediction,
)

from .._configs import load_text


def _two_tiers(per_tier: int, algorithm: str = 'name = "generalized_asyncsgd"') -> str:
    # The tiers are listed slow then fast, so the first rows alone would show one tier.
    return f"""
seed = 0
concurrency = 50
[routing]
kind = "uniform"
[algorithm]
{algorithm}
[run]
num_updates = 2000
train = false
[[clients]]
count = {per_tier}
service_time = {{ kind = "exponential", rate = 1.0 }}
[[clients]]
count = {per_tier}
service_time = {{ kind = "exponential", rate = 5.0 }}
"""


def _count_accesses(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """Wrap a ``SystemConfig`` property so each access is counted."""
    original = getattr(SystemConfig, name)
    calls: list[int] = []

    def counted(self: SystemConfig) -> Any:
        calls.append(1)
        return original.fget(self)

    monkeypatch.setattr(SystemConfig, name, property(counted))
    return calls


def _client_rows(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        cells = line.split()
        if line.startswith("  ") and cells and cells[0].isdigit():
            rows.append(cells)
    return rows


def test_table_rows_follow_the_analyze_rule_plus_both_ends() -> None:
    mu = [1.0, 1.0, 1.0, 0.5, 1.0, 9.0, 1.0]
    assert table_rows(mu, 0) == (list(range(7)), 0)
    assert table_rows(mu, 7) == (list(range(7)), 0)
    # First two rows, then the slowest (3) and the fastest (5); 3 of 7 left out.
    assert table_rows(mu, 2) == ([0, 1, 3, 5], 3)
    # An end already among the first rows is not repeated.
    assert table_rows(mu, 4) == ([0, 1, 2, 3, 5], 2)
    with pytest.raises(ValueError, match="max_rows must be >= 1 .* or 0 .*, got -1"):
        table_rows(mu, -1)


def test_report_of_20000_clients_is_short_and_linear(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 20_000
    config = load_text(tmp_path, _two_tiers(n // 2))
    result = simulate(config, queue_only=True)
    theory = theory_prediction(config)
    rates = _count_accesses(monkeypatch, "service_rates")
    probabilities = _count_accesses(monkeypatch, "routing_probabilities")
    text = format_report(config, result, theory, max_rows=10)
    # Each property builds an n-tuple; one access per row made the report O(n^2).
    assert len(rates) <= 1 and len(probabilities) <= 1
    lines = text.splitlines()
    assert len(lines) <= 10 + 2 + 12  # the rows, both ends, and the fixed header lines
    rows = _client_rows(text)
    assert [int(r[0]) for r in rows] == [*range(10), n // 2]  # slowest is 0, fastest n/2
    assert [float(r[1]) for r in rows] == [1.0] * 10 + [5.0]
    assert lines[-1] == f"  ... {n - 11} more clients (--max-rows 0 or --json shows all)"
    everything = format_report(config, result, theory, max_rows=0)
    assert len(_client_rows(everything)) == n and "more clients" not in everything


def test_buffered_report_is_cut_the_same_way(tmp_path: Path) -> None:
    config = load_text(tmp_path, _two_tiers(30, 'name = "fedbuff"\nbuffer_size = 5'))
    result = simulate(config, queue_only=True)
    text = format_report(config, result, theory_prediction(config), max_rows=5)
    assert "in completions | in model versions" in text
    assert [int(r[0]) for r in _client_rows(text)] == [0, 1, 2, 3, 4, 30]
    assert text.splitlines()[-1] == "  ... 54 more clients (--max-rows 0 or --json shows all)"


def test_json_keeps_every_client_on_one_line_per_key() -> None:
    n = 50_000
    payload = {
        "num_clients": n,
        "mean_relative_delay": [0.5] * n,
        "relative_delay_ci": [[0.25, 0.75]] * n,
        "theory": {"units": {"throughput": "completions/s"}, "x": math.nan, "none": None},
        "warnings": [],
        "empty": {},
    }
    text = dumps_json(payload)
    back = json.loads(text)
    assert back["relative_delay_ci"] == payload["relative_delay_ci"]
    assert back["mean_relative_delay"] == payload["mean_relative_delay"]
    assert back["theory"]["x"] == "nan" and back["theory"]["none"] is None
    # One line per key, however long the lists (indent=2 gave one line per number).
    assert len(text.splitlines()) == 14
    assert '  "theory": {\n    "units": {\n      "throughput": "completions/s"\n    },' in text


def _strict_loads(text: str) -> object:
    def refuse(token: str) -> None:
        raise AssertionError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_json_is_strict_with_non_finite_numbers() -> None:
    # json.dumps writes NaN/Infinity tokens, which jq and JavaScript refuse; result.json
    # writes such a number as a string, and so does every --json output.
    payload = {
        "per_client": [1.5, math.nan, math.inf, -math.inf, 2],
        "nested": {"ci": [(0.25, math.nan)], "rate": -math.inf, "n": 3},
        "finite": [0.1, 1e-300, 1e300],
        "top": math.nan,
    }
    back = _strict_loads(dumps_json(payload))
    assert back == {
        "per_client": [1.5, "nan", "inf", "-inf", 2],
        "nested": {"ci": [[0.25, "nan"]], "rate": "-inf", "n": 3},
        "finite": [0.1, 1e-300, 1e300],
        "top": "nan",
    }
    assert _strict_loads(dumps_json(math.inf)) == "inf"


def test_a_run_too_short_for_intervals_prints_n_a_not_nan_brackets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # 2 updates: 1 in the measurement window, fewer than the batches an interval needs
    from raysync.cli import main

    tiny = Path(__file__).resolve().parents[2] / "examples" / "tiny.toml"
    assert main(["simulate", str(tiny), "--queue-only", "--no-progress", "--num-updates",
                 "2"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "[nan" not in out and "nan]" not in out
    assert "(99% CI n/a)" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("       ")]
    assert len(rows) == 4 and all(row[5] == "n/a" for row in rows)


def test_format_interval() -> None:
    from raysync.simulation.result import format_interval

    assert format_interval(2.3141, 2.5812) == "[2.314, 2.581]"
    assert format_interval(2.3141, 2.5812, 6) == "[2.3141, 2.5812]"
    assert format_interval(1e300, 3e300) == "[1e+300, 3e+300]"
    assert format_interval(math.nan, 1.0) == "n/a"
    assert format_interval(0.0, math.inf) == "n/a"


@pytest.mark.parametrize(
    ("value", "spec", "shown"),
    [(2.45056, ".4g", "2.451"), (0.98765, ".3f", "0.988"), (math.nan, ".4g", "n/a"),
     (math.inf, ".4g", "inf"), (-math.inf, ".3f", "-inf")],
)
def test_format_measured(value: float, spec: str, shown: str) -> None:
    from raysync.simulation.result import format_measured

    # NaN is "not measured"; an infinity is a value (simulate's and run's reports).
    assert format_measured(value, spec) == shown
