"""``python -m cluster.entrypoint``: a refused job exits 2 with one line and writes nothing.

These refusals happen before ``ray.init``, so no cluster is needed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.entrypoint import main

from .._configs import write_config

CONFIG = """
concurrency = 2
[routing]
kind = "uniform"
[algorithm]
name = "generalized_asyncsgd"
[run]
num_updates = 10
train = false
[[clients]]
count = 2
service_time = { kind = "exponential", rate = 1.0 }
"""


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("cluster.entrypoint: error: ")
    assert expected in err


def test_bad_config_leaves_no_output_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write_config(tmp_path, CONFIG.replace("concurrency = 2", "concurrency = 0"), "bad.toml")
    out = tmp_path / "job" / "out"
    _refused(capsys, [str(bad), "--out", str(out)], "concurrency")
    assert not (tmp_path / "job").exists()  # before: OUT was made, then the job failed
    _refused(capsys, [str(tmp_path / "missing.toml"), "--out", str(out)], "does not exist")
    assert not (tmp_path / "job").exists()


def test_unusable_out_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write_config(tmp_path, CONFIG, "good.toml")
    (tmp_path / "a_file").write_text("x")
    _refused(capsys, [str(good), "--out", str(tmp_path / "a_file")], "--out")
    _refused(capsys, [str(good), "--out", str(tmp_path / "a_file" / "sub")], "--out")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    _refused(capsys, [str(good), "--out", str(tmp_path / "dangling")],
             "broken symbolic link")
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--num-updates", "0"], "argument --num-updates: run.num_updates must be"),
        (["--time-budget", "-1"], "argument --time-budget: run.time_budget must be > 0"),
        (["--time-scale", "-2"], "argument --time-scale: run.time_scale"),
        (["--seed", "-1"], "argument --seed: seed must be"),
    ],
)
def test_a_bad_override_names_its_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], expected: str
) -> None:
    good = write_config(tmp_path, CONFIG, "good.toml")
    out = tmp_path / "out"
    _refused(capsys, [str(good), "--out", str(out), *flags], expected)
    assert not out.exists()
