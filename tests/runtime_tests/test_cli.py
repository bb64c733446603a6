"""``raysync run CONFIG``: the command end to end on the session's Ray instance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raysync.cli import main
from raysync.config import dump_config

from ._helpers import queue_config

pytestmark = pytest.mark.ray


def test_raysync_run_is_lazy() -> None:
    import raysync.runtime

    assert raysync.run is raysync.runtime.run
    with pytest.raises(AttributeError):
        _ = raysync.not_there  # type: ignore[attr-defined]


def test_run_prints_results_next_to_the_theory(
    ray_session,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],  # noqa: ANN001
) -> None:
    config = queue_config((0.01, 0.02, 0.1), (0.5, 0.3, 0.2), 3, 5000)
    path = tmp_path / "system.toml"
    dump_config(config, path)
    code = main(["run", str(path), "--num-updates", "150", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "150 updates" in out
    assert "theory" in out
    assert "throughput" in out
    lines = [line.split() for line in out.splitlines()]
    table = [row for row in lines if row and row[0] in ("0", "1", "2")]
    assert len(table) == 3


def test_run_json_and_overrides(
    ray_session,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],  # noqa: ANN001
) -> None:
    config = queue_config((0.01, 0.02), None, 2, 5000)
    path = tmp_path / "system.toml"
    dump_config(config, path)
    code = main(["run", str(path), "--time-budget", "0.5", "--json", "--logdir", str(tmp_path)])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["backend"] == "ray"
    assert payload["config"]["run"]["time_budget"] == 0.5
    assert "num_updates" not in payload["config"]["run"]  # the budget alone decides
    # The 0.5 s budget ended the run, not its 5000 updates (~25 s of service at C = 2); how
    # long after the budget the last task returned depends on the machine's load.
    assert payload["elapsed"] >= 0.45
    assert 0 < payload["num_updates"] < 5000
    assert payload["theory"]["mean_staleness"] == pytest.approx(1.0)
    assert len(payload["theory"]["mean_relative_delay"]) == 2
    assert any(p.is_dir() for p in tmp_path.iterdir())  # the TensorBoard run directory


def test_run_says_why_a_theory_is_left_out(
    ray_session,  # noqa: ANN001
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Beyond the solver's limit the run goes on without its theory column, as in simulate,
    # and says why (it used to drop the column without a word). The limit is lowered so
    # that 3 clients at C = 3 (3 x 4099 steps) stand in for C = 10**7.
    from raysync.queueing import analysis

    monkeypatch.setattr(analysis, "MAX_SOLVER_STEPS", 1000)
    config = queue_config((0.01, 0.02, 0.1), (0.5, 0.3, 0.2), 3, 5000)
    path = tmp_path / "system.toml"
    dump_config(config, path)
    assert main(["run", str(path), "--num-updates", "40", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert (
        "theory: none here, its analysis was not computed (concurrency C=3 with n=3 clients "
        "needs C*(n+4096) = 1.23e+04 solver steps, more than the 1e+03 allowed" in out
    ), out
    header = next(line for line in out.splitlines() if line.split()[:2] == ["client", "completed"])
    assert "theory" not in header
    assert main(["run", str(path), "--num-updates", "40", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["theory"]["unavailable"].startswith("its analysis was not computed")
