"""The report's "approximate: ..." note gives the real reason (issue 16 verifier finding).

An all-exponential schedule with adaptive routing was labelled "service times are not all
exponential", which was false.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from raysync.simulation.report import theory_prediction

from .._configs import load_text

FAST = "[[clients]]\nservice_time = { rate = 2.0 }\n"
SCHEDULE = (
    '[[clients]]\nservice_time = { kind = "schedule", segments = '
    "[{ until = 5.0, rate = 1.0 }, { rate = 3.0 }] }\n"
)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (f"concurrency = 3\n{FAST}{FAST}", None),
        (
            f'concurrency = 3\n{FAST}[[clients]]\nservice_time = {{ kind = "schedule", '
            "segments = [{ rate = 1.0 }] }\n",
            None,
        ),
        (
            f'concurrency = 3\n{FAST}[[clients]]\nservice_time = {{ kind = "deterministic", '
            "mean = 1.0 }\n",
            "service times are not all exponential",
        ),
        (
            f'concurrency = 3\n{FAST}[[clients]]\nservice_time = {{ kind = "schedule", '
            'segments = [{ until = 5.0, rate = 1.0 }, { kind = "deterministic", mean = 1.0 }] }\n',
            "service times are not all exponential",
        ),
        (
            f'concurrency = 3\n[routing]\nkind = "adaptive"\n{FAST}{SCHEDULE}',
            "service rates change over time (schedule)",
        ),
        (
            f'concurrency = 3\n[routing]\nkind = "adaptive"\n{FAST}{FAST}',
            "the adaptive router changes p during the run",
        ),
        (
            f"concurrency = 3\n{FAST}{FAST}leave_time = 9.0\n",
            "clients join or leave during the run",
        ),
        (
            f'concurrency = 3\n[server]\nupdate_time = {{ kind = "deterministic", mean = 0.1 }}\n'
            f"{FAST}{FAST}",
            "service times are not all exponential",
        ),
    ],
)
def test_approximation_reason(tmp_path: Path, text: str, reason: str | None) -> None:
    theory = theory_prediction(load_text(tmp_path, text))
    assert theory["approximate"] == reason
    assert theory["exact"] is (reason is None)
