"""benchmarks/_common.py: ``save_results``, the json/md/png writer every benchmark shares."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ._benchmarks import load_benchmark

C = load_benchmark("_common", "bench_common")


def _markdown(payload: dict[str, Any], path: Path) -> None:
    path.write_text(f"# {payload['name']}\n")


def _plot(payload: dict[str, Any], path: Path) -> None:
    path.write_bytes(b"png")


def test_default_writes_numpy_scalars_as_numbers(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(C, "RESULTS", tmp_path / "results")
    # float32 and int64 are no Python floats or ints: json.dumps refuses them without default.
    payload = {"name": "x", "wall_seconds": np.float32(1.5), "seeds": np.int64(3),
               "rows": [{"mean": np.float64(0.25)}]}
    with pytest.raises(TypeError, match="float32"):
        C.save_results("bench_x", payload, _markdown, _plot)
    C.save_results("bench_x", payload, _markdown, _plot, default=float)
    text = (tmp_path / "results" / "bench_x.json").read_text()
    assert text == json.dumps(payload, indent=2, default=float)  # indent=2, as before
    assert json.loads(text) == {"name": "x", "wall_seconds": 1.5, "seeds": 3.0,
                                "rows": [{"mean": 0.25}]}
    assert (tmp_path / "results" / "bench_x.md").read_text() == "# x\n"
    assert (tmp_path / "results" / "bench_x.png").read_bytes() == b"png"


def test_results_folder_and_no_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(C, "RESULTS", tmp_path / "default")
    C.save_results("only_text", {"name": "y"}, _markdown, None, results=tmp_path / "own")
    assert sorted(p.name for p in (tmp_path / "own").iterdir()) == ["only_text.json",
                                                                    "only_text.md"]
    assert not (tmp_path / "default").exists()
