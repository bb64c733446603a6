"""benchmarks/ray_end_phase.py: the simulation stopped at Ray's count and near the end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ._benchmarks import load_benchmark

E = load_benchmark("ray_end_phase", "bench_ray_end_phase")


def test_end_phase_stops_at_the_ray_count_and_sweeps_the_last_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from raysync.objectives import DesignPoint
    from tuning.recommend import measure

    monkeypatch.setattr(E, "RESULTS", tmp_path)
    point = DesignPoint(rule="asyncsgd", concurrency=20, p=None, lr=0.1)
    cell = {"partition": "speed_skew", "tiers": "1:10:100", "budget": 0.5, "seed": 2}
    source = {**cell, "max_train": 300, "model": "logreg",
              "arms": {"asyncsgd": {"point": point.to_dict()}}}
    (tmp_path / "src.json").write_text(json.dumps({"records": [source]}))
    ray_arm = {"test_accuracy": 0.5, "updates": 150, "sim_test_accuracy": 0.6,
               "sim_updates": 160}
    (tmp_path / "src_ray.json").write_text(json.dumps({
        "command": "benchmarks/recommend.py --ray-from src --ray-seeds 3",
        "records": [{**cell, "arms": {"asyncsgd": ray_arm}}]}))
    out = E.end_phase("src_ray", "asyncsgd", 0.1, 2)
    assert out["source_stem"] == "src"
    (row,) = out["seeds"]
    # Stopped by run.num_updates at the Ray run's count, not by the budget.
    assert row["sim_at_ray_count_updates"] == 150
    budgets = [s["budget"] for s in row["sweep"]]
    assert budgets == pytest.approx([0.4, 0.45, 0.5])
    counts = [s["updates"] for s in row["sweep"]]
    assert counts == sorted(counts) and counts[0] < counts[-1]
    # The stop at T is the benchmark's own measurement of the design (tuning.recommend).
    cfg = E.base_config("speed_skew", "1:10:100", 2, 300)
    direct = measure(cfg, point, budget=0.5, workload=E.make_workload(cfg, "speed_skew"),
                     seed=2, num_evals=8)
    assert row["sweep"][-1]["test_accuracy"] == direct["test_accuracy"]
    assert row["sweep"][-1]["updates"] == direct["num_updates"]
    accs = [s["test_accuracy"] for s in row["sweep"]]
    assert row["sweep_range"] == pytest.approx(max(accs) - min(accs))
    out.update(command="x", wall_seconds=60.0, load_average_1min=0.5)
    text = E.markdown(out)
    assert "| speed_skew, 1:10:100, T=0.5 | 2 | 50.00 (150) | 60.00 (160) |" in text
    assert "Ray - sim to T -10.00 ± nan" in text
    E.plot(out, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0


def test_a_missing_stem_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(E, "RESULTS", tmp_path)
    with pytest.raises(SystemExit) as exc:
        E.main(["--ray-stem", "nope"])
    assert exc.value.code == 2


def test_main_writes_json_markdown_and_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    import _common  # benchmarks/ is on sys.path once a benchmark is loaded

    monkeypatch.setattr(E, "RESULTS", tmp_path)
    monkeypatch.setattr(_common, "RESULTS", tmp_path)
    (tmp_path / "src_ray.json").write_text("{}")
    row = {"partition": "iid", "tiers": "1:5:25", "budget": 1.0, "seed": 0,
           "ray_test_accuracy": 0.5, "ray_updates": 9, "sim_test_accuracy": 0.6,
           "sim_updates": 10, "sim_at_ray_count": 0.55, "sweep_range": 0.1, "sweep_sd": 0.05,
           "sweep": [{"budget": 1.0, "test_accuracy": 0.6, "updates": 10}]}
    monkeypatch.setattr(E, "end_phase", lambda *a: {
        "ray_stem": "src_ray", "source_stem": "src", "arm": "asyncsgd", "window": 0.1,
        "steps": 1, "seeds": [row]})
    assert E.main(["--ray-stem", "src_ray"]) == 0
    text = (tmp_path / "src_ray_end_phase.md").read_text()
    assert text in capsys.readouterr().out and "| iid, 1:5:25, T=1 | 0 |" in text
    saved = json.loads((tmp_path / "src_ray_end_phase.json").read_text())
    assert saved["seeds"] == [row] and saved["command"].endswith("--ray-stem src_ray")
    assert (tmp_path / "src_ray_end_phase.png").stat().st_size > 0
