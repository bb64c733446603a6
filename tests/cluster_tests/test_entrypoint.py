"""``python -m cluster.entrypoint``: a refused job exits 2 with one line and writes nothing.

These refusals happen before ``ray.init``, so no cluster is needed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.entrypoint import main

from .._configs import QUEUE_ONLY_PAIR, write_config

CONFIG = QUEUE_ONLY_PAIR


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


@pytest.fixture
def fake_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ray.init`` and friends as no-ops: the entrypoint's own logic, no cluster."""
    import ray

    monkeypatch.setattr(ray, "init", lambda **kwargs: None)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})


@pytest.mark.usefixtures("fake_cluster")
def test_a_job_stopped_by_sigterm_says_how_to_resume_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal

    import raysync
    from raysync.exceptions import RunInterrupted

    good = write_config(tmp_path, CONFIG, "good.toml")
    ckpt = tmp_path / "ck"
    calls: list[object] = []

    def stopped(config: object, **kwargs: object) -> None:
        calls.append(kwargs["resume_from"])
        raise RunInterrupted(str(ckpt), 420, signum=signal.SIGTERM)

    monkeypatch.setattr(raysync, "run", stopped)
    out = tmp_path / "out"
    assert main([str(good), "--out", str(out)]) == 143  # 128 + SIGTERM, as the shell says
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"cluster.entrypoint: run stopped by SIGTERM at version 420; its checkpoint is in "
        f"{str(ckpt)!r}: submit the same command with --resume {ckpt} to continue it")
    assert not (out / "results.json").exists()
    ckpt.mkdir()
    assert main([str(good), "--out", str(out), "--resume", str(ckpt)]) == 143
    assert calls == [None, str(ckpt)]  # the resume reached raysync.run


def test_resume_is_refused_for_a_study_and_for_a_missing_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_config(tmp_path, CONFIG, "good.toml")
    out = tmp_path / "out"
    _refused(capsys, [str(good), "--out", str(out), "--tune", "--resume", str(tmp_path)],
             "--resume continues a run, not a study")
    _refused(capsys, [str(good), "--out", str(out), "--resume", str(tmp_path / "nowhere")],
             "--resume")
    assert not out.exists()
