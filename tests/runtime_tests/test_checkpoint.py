"""Server checkpoints: atomic files, safe loading, clear errors, resume after a kill."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from raysync.cli import main
from raysync.config import RunConfig, RuntimeConfig, SystemConfig, dump_config
from raysync.exceptions import CheckpointError
from raysync.runtime.checkpoint import (
    MANIFEST,
    config_fingerprint,
    fingerprint_fields,
    read_checkpoint,
    write_checkpoint,
)
from raysync.runtime.coordinator import _execute

from ._helpers import digits_config, queue_config

TREE = {
    "version": 12,
    "params": np.arange(5, dtype=np.float32),
    "router": {"rng": {"state": {"state": 2**100 + 7, "inc": 3}}, "pending": [1, 0, 2]},
    "strategy": {"count": 2, "sum": np.ones(5)},
    "nothing": None,
    "nan": float("nan"),
}


def _write(directory: Path, config: SystemConfig, version: int = 12) -> None:
    write_checkpoint(
        directory,
        {**TREE, "version": version},
        version=version,
        fingerprint=config_fingerprint(config, 5),
        fields=fingerprint_fields(config, 5),
    )


def _read(directory: Path, config: SystemConfig) -> dict:
    return read_checkpoint(
        directory,
        fingerprint=config_fingerprint(config, 5),
        fields=fingerprint_fields(config, 5),
    ).state


def test_round_trip_is_exact_and_old_files_are_replaced(tmp_path: Path) -> None:
    config = queue_config((0.01, 0.02), None, 2, 100)
    _write(tmp_path, config, version=12)
    _write(tmp_path, config, version=24)
    state = _read(tmp_path, config)
    assert state["version"] == 24
    np.testing.assert_array_equal(state["params"], TREE["params"])
    assert state["params"].dtype == np.float32
    assert state["router"]["rng"]["state"]["state"] == 2**100 + 7
    assert state["strategy"]["count"] == 2
    assert state["nothing"] is None and np.isnan(state["nan"])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["arrays-000000024.npz", MANIFEST, "state-000000024.json"]
    # Only [run] and [runtime] may change between a run and its resume.
    longer = config.replace(
        run=RunConfig(num_updates=5000, train=False, task_timeout=2.0),
        runtime=RuntimeConfig(mode="pool"),
    )
    assert _read(tmp_path, longer)["version"] == 24


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate_arrays", r"arrays-000000012.npz has \d+ bytes, expected \d+ \(truncated\?\)"),
        ("flip_state", r"state-000000012.json does not match its SHA-256 checksum"),
        ("flip_manifest", r"manifest.json (does not match its checksum|is unreadable)"),
        ("drop_arrays", r"arrays-000000012.npz is missing"),
        ("drop_manifest", r"no checkpoint in .*manifest.json is missing"),
    ],
)
def test_corrupt_checkpoints_are_rejected(tmp_path: Path, damage: str, message: str) -> None:
    config = queue_config((0.01, 0.02), None, 2, 100)
    _write(tmp_path, config)
    arrays = tmp_path / "arrays-000000012.npz"
    state = tmp_path / "state-000000012.json"
    manifest = tmp_path / MANIFEST
    if damage == "truncate_arrays":
        arrays.write_bytes(arrays.read_bytes()[:-10])
    elif damage == "flip_state":
        data = bytearray(state.read_bytes())
        data[len(data) // 2] ^= 0x01
        state.write_bytes(bytes(data))
    elif damage == "flip_manifest":
        text = manifest.read_text().replace('"version": 12', '"version": 13')
        manifest.write_text(text)
    elif damage == "drop_arrays":
        arrays.unlink()
    else:
        manifest.unlink()
    with pytest.raises(CheckpointError, match=message):
        _read(tmp_path, config)


def test_a_checkpoint_of_another_config_is_rejected_naming_the_difference(
    tmp_path: Path,
) -> None:
    config = queue_config((0.01, 0.02), None, 2, 100)
    _write(tmp_path, config)
    other = queue_config((0.01, 0.02, 0.03), None, 2, 100)
    with pytest.raises(CheckpointError, match=r"num_clients 2 \(checkpoint\) vs 3 \(config\)"):
        _read(tmp_path, other)
    reseeded = config.replace(seed=9)
    with pytest.raises(CheckpointError, match=r"seed 0 \(checkpoint\) vs 9 \(config\)"):
        _read(tmp_path, reseeded)
    slower = queue_config((0.01, 0.05), None, 2, 100)
    with pytest.raises(CheckpointError, match=r"different run: client specs"):
        _read(tmp_path, slower)


def test_cli_reports_a_bad_checkpoint_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = queue_config((0.01, 0.02), None, 2, 100)
    path = tmp_path / "system.toml"
    dump_config(config, path)
    ckpt = tmp_path / "ckpt"
    _write(ckpt, config)
    (ckpt / "state-000000012.json").write_text("{}")
    code = main(["run", str(path), "--resume", str(ckpt), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1
    assert err[0].startswith("raysync run: error: checkpoint")
    assert "corrupt" in err[0]


def _resumable_config(checkpoint_dir: Path | None) -> SystemConfig:
    # C = 1 without emulation: the schedule is deterministic, so a resumed run must end
    # exactly where an uninterrupted one does.
    config = digits_config(1500, eval_every_updates=None)
    return config.replace(
        concurrency=1,
        run=RunConfig(
            num_updates=1500,
            time_scale=0.0,
            eval_every_updates=None,
            checkpoint_every_updates=50 if checkpoint_dir else None,
            checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None,
        ),
        runtime=RuntimeConfig(mode="pool", executors_per_tier=2),
    )


@pytest.mark.ray
def test_killed_driver_resumes_to_the_uninterrupted_result(
    ray_session,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    ckpt = tmp_path / "ckpt"
    logdir = tmp_path / "tb"
    config = _resumable_config(ckpt)
    path = tmp_path / "system.toml"
    dump_config(config, path)
    cli = "import sys; from raysync.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [sys.executable, "-c", cli, "run", str(path), "--no-progress", "--logdir", str(logdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    tree: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while not (ckpt / MANIFEST).exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:] if proc.stderr else ""
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        # The driver and the local Ray instance it started (its server and executor
        # actors) die at once, mid-run, without any cleanup.
        tree = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)
        for child in tree:
            with contextlib.suppress(psutil.Error):
                child.kill()
    finally:
        proc.kill()
        proc.wait(timeout=60)
        psutil.wait_procs(tree, timeout=30)
        if proc.stderr:
            proc.stderr.close()
    saved = json.loads((ckpt / MANIFEST).read_text())["body"]["version"]
    assert 50 <= saved < 1500 and saved % 50 == 0
    resumed, _ = _execute(config, resume_from=ckpt, logdir=logdir, record=True)
    reference, _ = _execute(_resumable_config(None), record=True)
    assert resumed.extras["resumed_from_version"] == saved
    assert resumed.num_updates == reference.num_updates == 1500
    # Tasks applied after the checkpoint: exactly the uninterrupted run's, in order.
    applied_after = resumed.extras["debug"]["applied_task_ids"]
    assert applied_after == reference.extras["debug"]["applied_task_ids"][saved:]
    assert resumed.extras["task_ids"] == reference.extras["task_ids"]
    np.testing.assert_array_equal(resumed.completed, reference.completed)
    # The same model, bit for bit, and the run's statistics continue across the resume.
    assert resumed.final_test_loss == reference.final_test_loss
    assert resumed.num_completions == reference.num_completions
    assert resumed.elapsed > 0
    # TensorBoard continues in the interrupted run's directory.
    assert len([p for p in logdir.iterdir() if p.is_dir()]) == 1
