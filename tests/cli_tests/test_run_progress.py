"""``raysync run``'s progress bar: a run that ends past its budget draws no tqdm warning."""

from __future__ import annotations

import io
import warnings

import pytest

from raysync._cli import run as run_cli
from raysync.config import ClientSpec, RunConfig, ServiceTimeSpec, SystemConfig


def _config(run: RunConfig) -> SystemConfig:
    spec = ServiceTimeSpec(kind="exponential", rate=1.0)
    return SystemConfig(clients=(ClientSpec(service_time=spec),) * 2, concurrency=2, run=run)


@pytest.mark.parametrize(
    "run",
    [RunConfig(time_budget=2.0, time_scale=1.0), RunConfig(num_updates=10)],
    ids=["seconds", "updates"],
)
def test_progress_past_the_total_stops_at_the_total_without_a_warning(
    run: RunConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr(run_cli.sys, "stderr", stderr)
    bar = run_cli._Progress(_config(run), disable=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tqdm's "clamping frac to range [0, 1]"
        bar(5, 1.0)
        bar(12, 2.4)  # the last updates drain after the budget
        total = bar._bar.total
        assert bar._bar.n == total
        bar.close()
    assert "Warning" not in stderr.getvalue()


def test_a_resumed_run_starts_the_bar_at_its_version_not_as_progress(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A run resumed at version 9000 reports 9000+ at its first poll; counted as progress
    # made since the bar opened, tqdm's rate read thousands of updates per second.
    monkeypatch.setattr(run_cli.sys, "stderr", io.StringIO())
    bar = run_cli._Progress(_config(RunConfig(num_updates=10_000)), disable=False)
    bar(9000, 90.0)
    assert (bar._bar.initial, bar._bar.n) == (9000, 9000)
    bar(9050, 90.5)
    assert bar._bar.n == 9050
    # tqdm's rate is (n - initial) / elapsed: it counts the 50 updates of this session
    shown = bar._bar.format_dict
    assert shown["n"] - shown["initial"] == 50
    bar.close()


def test_a_resumed_run_says_so_once_under_way(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr(run_cli.sys, "stderr", stderr)
    bar = run_cli._Progress(_config(RunConfig(num_updates=10_000)), disable=True)  # --no-progress
    bar.announce = "raysync run: resumed from 'ck'"
    bar(9004, 90.0)
    bar(9050, 90.5)
    bar.close()
    assert stderr.getvalue() == "raysync run: resumed from 'ck', now at version 9004\n"
