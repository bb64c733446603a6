"""Server checkpoints: atomic files, safe loading, clear errors, resume after a kill."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from raysync.cli import main
from raysync.config import RunConfig, RuntimeConfig, SystemConfig, dump_config
from raysync.exceptions import CheckpointError, ConfigError, RunInterrupted
from raysync.runtime._state import STATE_KEYS, Key
from raysync.runtime.checkpoint import (
    MANIFEST,
    Checkpoint,
    check_server_state,
    config_fingerprint,
    fingerprint_fields,
    peek_version,
    read_checkpoint,
    write_checkpoint,
)
from raysync.runtime.coordinator import _execute

from ._helpers import digits_config, queue_config, spawn_run, wait_for_file

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
    # a changed fleet names the client's field, with the old and the new value
    slower = queue_config((0.01, 0.05), None, 2, 100)
    with pytest.raises(
        CheckpointError,
        match=r"different run: clients\[1\]\.service_time\.rate 50\.0 \(checkpoint\) vs "
        r"20\.0 \(config\)\. Resume",
    ):
        _read(tmp_path, slower)
    more_cpus = dataclasses.replace(config.clients[1], num_cpus=1.0)
    fewer_cpus = config.replace(clients=(config.clients[0], more_cpus))
    with pytest.raises(
        CheckpointError, match=r"clients\[1\]\.num_cpus 0\.25 \(checkpoint\) vs 1(\.0)? \(config\)"
    ):
        _read(tmp_path, fewer_cpus)


def test_a_fleet_too_large_to_store_is_compared_by_its_named_facts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from raysync.runtime import checkpoint as module

    monkeypatch.setattr(module, "MAX_STORED_CONFIG_BYTES", 10)
    config = queue_config((0.01, 0.02), None, 2, 100)
    assert "config" not in fingerprint_fields(config, 5)
    _write(tmp_path, config)
    with pytest.raises(CheckpointError, match=r"seed 0 \(checkpoint\) vs 9 \(config\)"):
        _read(tmp_path, config.replace(seed=9))
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
    proc = spawn_run(path, "--logdir", str(logdir), stderr=subprocess.PIPE)
    tree: list[psutil.Process] = []
    try:
        wait_for_file(proc, ckpt / MANIFEST)
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
    # The run's clock goes on from the checkpoint's: its elapsed time is the report's
    # "of run time", the rest "since the checkpoint".
    before = resumed.extras["resumed_from_elapsed"]
    assert 0 < before < resumed.elapsed
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
    # TensorBoard continues in the interrupted run's directory, each step once and in
    # order: what the killed session logged after its checkpoint is gone.
    (run_dir,) = [p for p in logdir.iterdir() if p.is_dir()]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "test/accuracy" in tags
    for tag in tags:
        steps = [e.step for e in acc.Scalars(tag)]
        assert steps == sorted(set(steps)), tag


@pytest.mark.ray
def test_ctrl_c_checkpoints_the_version_reached_and_resumes_to_the_uninterrupted_result(
    ray_session,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    # Periodic checkpoints only at 2000: a checkpoint below it was written at the Ctrl-C.
    def config_for(checkpoint_dir: Path | None) -> SystemConfig:
        config = _resumable_config(checkpoint_dir)
        return config.replace(run=dataclasses.replace(
            config.run,
            num_updates=3000,
            eval_every_updates=25,
            checkpoint_every_updates=2000 if checkpoint_dir else None,
        ))

    ckpt = tmp_path / "ckpt"
    logdir = tmp_path / "tb"
    seen: list[int] = []

    def ctrl_c(updates: int, seconds: float) -> None:
        seen.append(updates)
        if updates >= 20:
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted) as info:
        _execute(config_for(ckpt), progress=ctrl_c, poll_interval=0.05, logdir=logdir)
    saved = info.value.checkpoint_version
    assert info.value.checkpoint_dir == str(ckpt.resolve())
    assert saved is not None and seen[-1] <= saved < 2000
    assert peek_version(ckpt) == saved
    resumed, _ = _execute(config_for(ckpt), resume_from=ckpt, record=True, logdir=logdir)
    # TensorBoard has every evaluation of the two sessions once: those finished between
    # the last progress poll and the Ctrl-C were logged before the actors were killed.
    (run_dir,) = [p for p in logdir.iterdir() if p.is_dir()]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    logged = [e.step for e in acc.Scalars("test/accuracy")]
    assert logged == [int(v) for v in resumed.updates]
    for tag in acc.Tags()["scalars"]:
        steps = [e.step for e in acc.Scalars(tag)]
        assert steps == sorted(set(steps)), tag
    assert list(resumed.updates) == list(range(0, 3001, 25))
    reference, _ = _execute(config_for(None), record=True)
    assert resumed.extras["resumed_from_version"] == saved
    # Nothing applied before Ctrl-C is lost or applied twice, and the model is the
    # uninterrupted run's, bit for bit.
    applied_after = resumed.extras["debug"]["applied_task_ids"]
    assert applied_after == reference.extras["debug"]["applied_task_ids"][saved:]
    assert resumed.extras["task_ids"] == reference.extras["task_ids"]
    assert resumed.num_updates == reference.num_updates == 3000
    # the run's checkpoints over both sessions: at the Ctrl-C, at 2000 and at the end
    assert resumed.extras["checkpoints_written"] == 3
    assert resumed.final_test_loss == reference.final_test_loss


def _dir_only_config(ckpt: Path) -> SystemConfig:
    """3000 updates with ``run.checkpoint_dir`` alone: checkpoints at the end and on signals."""
    base = _resumable_config(None)
    return base.replace(run=dataclasses.replace(base.run, num_updates=3000,
                                                checkpoint_dir=str(ckpt)))


def test_a_checkpoint_dir_alone_checkpoints_at_ctrl_c_and_at_the_end(
    ray_session,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    ckpt = tmp_path / "ckpt"
    config = _dir_only_config(ckpt)

    def ctrl_c(updates: int, seconds: float) -> None:
        if updates >= 20:
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted) as info:
        _execute(config, progress=ctrl_c, poll_interval=0.05)
    saved = info.value.checkpoint_version
    assert saved is not None and 20 <= saved < 3000 and peek_version(ckpt) == saved
    shorter = config.replace(run=dataclasses.replace(config.run, num_updates=saved + 50))
    resumed, _ = _execute(shorter, resume_from=ckpt)
    assert resumed.num_updates == saved + 50
    assert peek_version(ckpt) == saved + 50  # and one at the end


def test_without_checkpointing_ctrl_c_names_no_checkpoint(
    ray_session,  # noqa: ANN001
) -> None:
    def ctrl_c(updates: int, seconds: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(RunInterrupted) as info:
        _execute(_resumable_config(None), progress=ctrl_c, poll_interval=0.05)
    assert info.value.checkpoint_dir is None and info.value.checkpoint_version is None
    # the loop was stopped before the actors were killed (so their deaths are not taken
    # for failures): it reports where it stopped
    assert info.value.version is not None and 0 <= info.value.version < 1500
    assert info.value.signum == signal.SIGINT


def test_sigterm_checkpoints_like_ctrl_c_and_restores_the_handler(
    ray_session,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    # kill, `ray job stop` and schedulers send SIGTERM; ray.init makes it sys.exit, which
    # would kill the actors and lose every update since the last periodic checkpoint.
    ckpt = tmp_path / "ckpt"
    config = _dir_only_config(ckpt)
    before = signal.getsignal(signal.SIGTERM)
    seen: list[int] = []

    def terminate(updates: int, seconds: float) -> None:
        seen.append(updates)
        if updates >= 20 and not sent:
            # sent from another thread a moment later, so it lands (most likely) inside
            # ray.wait, whose signal check replaces the handler's exception with its own
            sent.append(threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGTERM)))
            sent[0].start()

    sent: list[threading.Timer] = []
    with pytest.raises(RunInterrupted) as info:
        _execute(config, progress=terminate, poll_interval=1.0)
    assert info.value.signum == signal.SIGTERM and info.value.exit_code == 143
    saved = info.value.checkpoint_version
    assert saved is not None and seen[-1] <= saved < 3000
    assert info.value.version == saved == peek_version(ckpt)
    assert signal.getsignal(signal.SIGTERM) is before
    resumed, _ = _execute(config, resume_from=ckpt)
    assert resumed.extras["resumed_from_version"] == saved
    assert resumed.num_updates == 3000
    assert resumed.extras["checkpoints_written"] == 2  # at the SIGTERM and at the end


def test_sigterm_during_the_start_up_ends_the_run_as_during_its_loop(
    ray_session,  # noqa: ANN001
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Before: Ray's handlers ended such a run with exit 15, 1 or an abort (C++ stack dump),
    # depending on the instant, with no line saying what happened.
    from raysync.runtime import coordinator

    before = signal.getsignal(signal.SIGTERM)
    create = coordinator.ActorGroup.create

    def create_then_terminated(*args: Any, **kwargs: Any) -> Any:
        os.kill(os.getpid(), signal.SIGTERM)  # while the actors start
        return create(*args, **kwargs)

    monkeypatch.setattr(coordinator.ActorGroup, "create", create_then_terminated)
    config = _dir_only_config(tmp_path / "ckpt")
    with pytest.raises(RunInterrupted) as info:
        _execute(config, poll_interval=0.05)
    assert (info.value.signum, info.value.version, info.value.checkpoint_version) == (
        signal.SIGTERM, None, None)
    assert info.value.checkpoint_dir == str((tmp_path / "ckpt").resolve())
    assert signal.getsignal(signal.SIGTERM) is before

    # while ray.init runs its own handler is in force: sys.exit(SIGTERM)
    def connect(address: str | None = None) -> bool:
        raise SystemExit(signal.SIGTERM)

    monkeypatch.setattr(coordinator, "connect", connect)
    with pytest.raises(RunInterrupted) as info:
        _execute(config, poll_interval=0.05)
    assert info.value.signum == signal.SIGTERM and info.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is before


# ---------------------------------------------------------------- checks before Ray starts


class _RayStarted(Exception):
    """Raised by the patched connect: the run got past its up-front checks."""


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to reach Ray fail loudly (proves a refusal happens before it)."""
    from raysync.runtime import coordinator

    def connect(address: str | None = None) -> bool:
        raise _RayStarted(address)

    monkeypatch.setattr(coordinator, "connect", connect)


def _checkpointed(
    config: SystemConfig, checkpoint_dir: Path, num_updates: int, **run: Any
) -> SystemConfig:
    """``config`` run on the pool without emulation, checkpointing every 50 updates."""
    return config.replace(
        run=RunConfig(
            num_updates=num_updates,
            time_scale=0.0,
            checkpoint_every_updates=50,
            checkpoint_dir=str(checkpoint_dir),
            **run,
        ),
        runtime=RuntimeConfig(mode="pool", executors_per_tier=2),
    )


def _evaluated_config(checkpoint_dir: Path, num_updates: int) -> SystemConfig:
    # C = 1 without emulation (deterministic); an evaluation and a checkpoint every 50
    # updates, so the evaluation at a checkpoint's version is always in flight when the
    # checkpoint is captured (it is requested in the same step).
    base = digits_config(num_updates).replace(concurrency=1)
    return _checkpointed(base, checkpoint_dir, num_updates, eval_every_updates=50)


def _queue_checkpoint_config(checkpoint_dir: Path, num_updates: int = 100) -> SystemConfig:
    base = queue_config((0.01, 0.02), None, 2, num_updates)
    return _checkpointed(base, checkpoint_dir, num_updates, train=False)


def _written_at_100(factory: pytest.TempPathFactory, name: str, make: Any) -> Path:
    """The checkpoint a real run of ``make(directory, 100)`` leaves (at version 100)."""
    directory = factory.mktemp(name) / "ckpt"
    result, _ = _execute(make(directory, 100))
    assert result.num_updates == 100
    assert json.loads((directory / MANIFEST).read_text())["body"]["version"] == 100
    return directory


@pytest.fixture(scope="module")
def real_checkpoint(ray_session, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: ANN001
    """A checkpoint at version 100 written by a real run (read-only for the tests)."""
    return _written_at_100(tmp_path_factory, "real", _evaluated_config)


@pytest.fixture(scope="module")
def queue_checkpoint(ray_session, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: ANN001
    """A queue-only (``train = false``) checkpoint at version 100 written by a real run."""
    return _written_at_100(tmp_path_factory, "queue", _queue_checkpoint_config)


def _rewrite(checkpoint: Checkpoint, directory: Path, state: dict) -> Path:
    """Write ``state`` as ``checkpoint``'s: every checksum valid, only the content differs."""
    write_checkpoint(
        directory,
        state,
        version=checkpoint.version,
        fingerprint=checkpoint.fingerprint,
        fields=checkpoint.fields,
    )
    return directory


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_every_scheduled_evaluation_happens_once_across_a_resume(
    real_checkpoint: Path, tmp_path: Path
) -> None:
    ckpt = _copy(real_checkpoint, tmp_path / "ckpt")
    state = read_checkpoint(ckpt).state
    # The evaluation at version 100 was in flight when the checkpoint was captured (and
    # maybe earlier ones: one thread evaluates while training runs ahead).
    pending = [row[1] for row in state["eval_pending"]]
    done = [row[1] for row in state["evals"]]
    assert 100 in pending
    assert sorted(pending + done) == [0, 50, 100]
    resumed, _ = _execute(_evaluated_config(ckpt, 200), resume_from=ckpt)
    assert resumed.extras["resumed_from_version"] == 100
    assert list(resumed.updates) == [0, 50, 100, 150, 200]
    assert np.all(np.isfinite(resumed.test_loss))


@pytest.mark.usefixtures("no_ray")
def test_resuming_at_or_past_the_target_is_refused_before_ray_starts(
    real_checkpoint: Path,
) -> None:
    for target in (100, 60):
        config = _evaluated_config(real_checkpoint, target)
        with pytest.raises(
            CheckpointError, match=rf"version 100, at or past run.num_updates = {target}"
        ):
            _execute(config, resume_from=real_checkpoint)
    with pytest.raises(_RayStarted):  # a later target passes the checks
        _execute(_evaluated_config(real_checkpoint, 150), resume_from=real_checkpoint)


@pytest.mark.usefixtures("no_ray")
def test_a_checkpoint_dir_in_use_by_another_run_is_refused(
    real_checkpoint: Path, tmp_path: Path
) -> None:
    import filelock

    from raysync.runtime.coordinator import RUN_LOCK

    ckpt = _copy(real_checkpoint, tmp_path / "ckpt")
    config = _evaluated_config(ckpt, 300)
    # another run (here: another open of the lock file) holds it: a job started twice,
    # or two resumes of one checkpoint, would overwrite each other's checkpoints
    other = filelock.FileLock(ckpt / RUN_LOCK)
    with other:
        with pytest.raises(CheckpointError, match=r"^--resume '.*' is in use by another run"):
            _execute(config, resume_from=ckpt)
        # resumed into another directory (a relative run.checkpoint_dir taken from another
        # working directory): still the live run's history, continued twice
        forked = _evaluated_config(tmp_path / "elsewhere", 300)
        with pytest.raises(CheckpointError, match=r"^--resume '.*' is in use by another run"):
            _execute(forked, resume_from=ckpt)
        for overwrite in (True, False):  # the lock is named first, not "already holds"
            with pytest.raises(CheckpointError,
                               match=r"^run.checkpoint_dir '.*' is in use by another run"):
                _execute(config, overwrite_checkpoint=overwrite)
    # free again, and released by a run that failed after taking it
    for _ in range(2):
        with pytest.raises(_RayStarted):
            _execute(config, resume_from=ckpt)
    with other:  # the failed runs released it
        pass


@pytest.mark.usefixtures("no_ray")
def test_a_fork_and_another_configs_checkpoint_are_named(
    real_checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ckpt = _copy(real_checkpoint, tmp_path / "ckpt")
    forked = _evaluated_config(tmp_path / "elsewhere", 300)
    with caplog.at_level("WARNING", logger="raysync.runtime.coordinator"):
        with pytest.raises(_RayStarted):
            _execute(forked, resume_from=ckpt)
    (line,) = [r.getMessage() for r in caplog.records if "but checkpointing to" in r.getMessage()]
    assert f"resuming from {ckpt.resolve()} (version 100) but checkpointing to " in line
    assert "left at version 100" in line
    # a fresh run of another config into that directory: "resume it" would be refused
    other = _evaluated_config(ckpt, 300).replace(seed=12345)
    with pytest.raises(CheckpointError) as info:
        _execute(other)
    assert "already holds a checkpoint of another config (version 100)" in str(info.value)
    assert "resume it" not in str(info.value)


@pytest.mark.usefixtures("no_ray")
def test_resuming_into_another_logdir_says_where_the_curves_start(
    real_checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ckpt = _copy(real_checkpoint, tmp_path / "ckpt")
    config = _evaluated_config(ckpt, 300)
    elsewhere = tmp_path / "tb"
    with caplog.at_level("WARNING", logger="raysync.runtime.coordinator"):
        with pytest.raises(_RayStarted):
            _execute(config, resume_from=ckpt, logdir=elsewhere)
    (line,) = [r.getMessage() for r in caplog.records if "resuming into" in r.getMessage()]
    named = re.search(rf"--logdir {re.escape(str(elsewhere))}, which has no run '(.+)':", line)
    assert named is not None and "start at version 100" in line
    caplog.clear()
    (elsewhere / named.group(1)).mkdir(parents=True)  # the checkpoint's run is there
    with caplog.at_level("WARNING", logger="raysync.runtime.coordinator"):
        with pytest.raises(_RayStarted):
            _execute(config, resume_from=ckpt, logdir=elsewhere)
    assert not [r for r in caplog.records if "resuming into" in r.getMessage()]


@pytest.mark.usefixtures("no_ray")
def test_an_existing_checkpoint_is_not_overwritten_by_a_fresh_run(
    real_checkpoint: Path, tmp_path: Path
) -> None:
    config = _evaluated_config(real_checkpoint, 300)
    with pytest.raises(CheckpointError, match=r"already holds a checkpoint \(version 100\)"):
        _execute(config)
    with pytest.raises(_RayStarted):
        _execute(config, overwrite_checkpoint=True)
    with pytest.raises(_RayStarted):
        _execute(config, resume_from=real_checkpoint)  # resuming it is the point
    # resuming from a directory without a checkpoint: that is what is named, not the
    # checkpoint_dir the run would have overwritten
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"^no checkpoint in .*empty.* is missing"):
        _execute(config, resume_from=empty)
    # A file where the checkpoint directory belongs.
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ConfigError, match=r"run.checkpoint_dir must be a directory"):
        _execute(_evaluated_config(afile, 300))


def test_cli_refuses_to_overwrite_in_one_line(
    real_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "system.toml"
    dump_config(_evaluated_config(real_checkpoint, 300), path)
    code = main(["run", str(path), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1
    assert "already holds a checkpoint (version 100)" in err[0]
    assert "--overwrite-checkpoint" in err[0]


def _damage(state: dict, how: str) -> str:
    """Damage a state tree in one way; return the field the refusal must name."""
    if how == "nan_params":
        state["params"] = state["params"].copy()
        state["params"][3] = np.nan
        return "params"
    if how == "short_params":
        state["params"] = state["params"][:-1]
        return "params"
    if how == "float_ordinals":
        state["ordinals"] = state["ordinals"].astype(np.float64)
        return "ordinals"
    if how == "string_version":
        state["version"] = "100"
        return "version"
    if how == "extra_task":
        state["next_task_id"] += 5
        return "ordinals"
    if how == "queue_lengths":
        state["book"]["lengths"] = state["book"]["lengths"] + 1
        return "book.lengths"
    if how == "inf_elapsed":
        state["elapsed"] = float("inf")
        return "elapsed"
    if how == "router":
        state["router"] = {"rng": "not a generator state"}
        return "router"
    if how == "nan_strategy":
        for key, value in state["strategy"].items():
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                state["strategy"][key] = np.full_like(value, np.inf)
                return f"strategy.{key}"
        state["strategy"]["injected"] = float("nan")
        return "strategy.injected"
    if how == "missing_book":
        del state["book"]["count"]
        return "book.count"
    raise AssertionError(how)


@pytest.mark.usefixtures("no_ray")
@pytest.mark.parametrize(
    "how",
    [
        "nan_params",
        "short_params",
        "float_ordinals",
        "string_version",
        "extra_task",
        "queue_lengths",
        "inf_elapsed",
        "router",
        "nan_strategy",
        "missing_book",
    ],
)
def test_a_checkpoint_that_makes_no_sense_is_refused_naming_the_field(
    real_checkpoint: Path, tmp_path: Path, how: str
) -> None:
    config = _evaluated_config(tmp_path / "unused", 300)
    checkpoint = read_checkpoint(real_checkpoint)
    state = checkpoint.state
    field = _damage(state, how)
    damaged = _rewrite(checkpoint, tmp_path / "damaged", state)
    with pytest.raises(CheckpointError) as info:
        _execute(config, resume_from=damaged)
    message = str(info.value)
    assert "\n" not in message
    assert f"'{field}'" in message, message


def _wrongly_typed(value: object) -> object:
    """A value of a type no field of the schema accepts in place of ``value``."""
    return 7 if isinstance(value, str) else "7"


def _schema_fields(state: dict) -> list[str]:
    """Every field of the state schema: top-level entries and the book's and pending's."""
    nested = [f"{top}.{k}" for top in (Key.BOOK, Key.PENDING) for k in state[top]]
    return [*state, *nested]


def _refusal(checkpoint: Checkpoint, state: dict, config: SystemConfig, train: bool) -> str:
    damaged = Checkpoint(
        checkpoint.directory, checkpoint.version, checkpoint.fingerprint, checkpoint.fields, state
    )
    with pytest.raises(CheckpointError) as info:
        check_server_state(
            damaged,
            num_clients=config.num_clients,
            num_params=checkpoint.state[Key.PARAMS].size if train else None,
            config=config,
        )
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("train", [True, False], ids=["train", "queue-only"])
def test_every_field_of_the_state_schema_is_type_checked(
    request: pytest.FixtureRequest, tmp_path: Path, train: bool
) -> None:
    import copy

    fixture = "real_checkpoint" if train else "queue_checkpoint"
    checkpoint = read_checkpoint(request.getfixturevalue(fixture))
    config = (_evaluated_config if train else _queue_checkpoint_config)(tmp_path, 300)
    # the sweep covers the whole schema: a server that stores a new entry must name it
    # in Key, and then it is swept here
    assert set(checkpoint.state) == STATE_KEYS
    check_server_state(  # the intact state passes
        checkpoint,
        num_clients=config.num_clients,
        num_params=checkpoint.state[Key.PARAMS].size if train else None,
        config=config,
    )
    fields = _schema_fields(checkpoint.state)
    assert len(fields) > 40
    for field in fields:
        state = copy.deepcopy(checkpoint.state)
        *parents, leaf = field.split(".")
        node = state
        for part in parents:
            node = node[part]
        node[leaf] = _wrongly_typed(node[leaf])
        message = _refusal(checkpoint, state, config, train)
        assert f"'{field}'" in message, (field, message)
    # inside the rows and lists: each column is checked and named
    cases = [
        (lambda s: s[Key.EVAL_PENDING][0].__setitem__(2, "abc"), "eval_pending[0].train_loss"),
        (lambda s: s[Key.EVAL_PENDING][0].__setitem__(1, 1.5), "eval_pending[0].version"),
        (lambda s: s[Key.LAG].__setitem__(2, 1.5), "lag.count"),
        (lambda s: s[Key.LAG].__setitem__(0, float("nan")), "lag.sum"),
        (lambda s: s[Key.COUNTERS].__setitem__("restarts", "1"), "counters.restarts"),
        (lambda s: s.__setitem__(Key.TENSORBOARD_STEP, s[Key.VERSION] - 1), "tensorboard_step"),
        (lambda s: s.__setitem__(Key.RUN_NAME, ""), "run_name"),
        # a key raysync does not write (a tree from elsewhere, a hand edit) is not dropped
        (lambda s: s.__setitem__("injected_key", 1), "injected_key"),
    ]
    if train:
        cases.append((lambda s: s[Key.BASE_PARAMS].__setitem__("x", s[Key.PARAMS]), "base_params"))
    else:
        # a queue-only run has no model: a value there is refused, not silently ignored
        cases += [
            (lambda s: s.__setitem__(Key.PARAMS, "abc"), "params"),
            (lambda s: s.__setitem__(Key.PARAMS, np.zeros(3, np.float32)), "params"),
            (lambda s: s.__setitem__(Key.STRATEGY, {}), "strategy"),
            (lambda s: s[Key.EVAL_PARAMS].__setitem__("3", np.zeros(3)), "eval_params"),
        ]
    for damage, field in cases:
        state = copy.deepcopy(checkpoint.state)
        if field.startswith("eval_pending") and not state[Key.EVAL_PENDING]:
            state[Key.EVAL_PENDING] = [[0.0, 0, 0.5]]
        damage(state)
        message = _refusal(checkpoint, state, config, train)
        assert f"'{field}'" in message, (field, message)


@pytest.mark.usefixtures("no_ray")
def test_a_queue_only_checkpoint_with_a_model_is_refused_before_ray_starts(
    queue_checkpoint: Path, tmp_path: Path
) -> None:
    checkpoint = read_checkpoint(queue_checkpoint)
    state = checkpoint.state
    state["params"] = "abc"
    state["tensorboard_step"] = "7"
    damaged = _rewrite(checkpoint, tmp_path / "damaged", state)
    with pytest.raises(CheckpointError, match=r"field 'params' must be null in a run without"):
        _execute(_queue_checkpoint_config(tmp_path / "unused", 300), resume_from=damaged)
    state["params"] = None
    _rewrite(checkpoint, damaged, state)
    with pytest.raises(CheckpointError, match=r"field 'tensorboard_step' must be an integer"):
        _execute(_queue_checkpoint_config(tmp_path / "unused", 300), resume_from=damaged)


def test_a_diverged_model_is_not_checkpointed_over_a_good_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A run at lr 1e300 wrote its NaN parameters as checkpoint v6, which --resume then
    called corrupt; the last finite checkpoint is kept instead, and the log says why."""
    import asyncio
    import dataclasses
    import logging

    from raysync.runtime._state import CheckpointManager

    config = queue_config((0.01, 0.02), None, 2, 100)
    run = dataclasses.replace(config.run, checkpoint_dir=str(tmp_path))
    manager = CheckpointManager(run, config_fingerprint(config, 5), fingerprint_fields(config, 5))
    bad = {**TREE, "version": 13, "params": np.array([1, np.nan, 0, 0, 0], dtype=np.float32)}
    stale = {**TREE, "version": 14, "base_params": {"13": np.full(5, np.inf, dtype=np.float32)}}

    async def checkpoint() -> None:
        manager.write({**TREE, "version": 12})
        await manager.flush()
        with caplog.at_level(logging.WARNING, logger="raysync.runtime._state"):
            manager.write(bad)
            manager.write(stale)
        await manager.flush()

    asyncio.run(checkpoint())
    assert _read(tmp_path, config)["version"] == 12 and manager.last == 12
    assert manager.written == 1
    assert "checkpoint of version 13 not written: params is not finite" in caplog.text
    assert "base_params[13] is not finite (training diverged); the last checkpoint, version 12" \
        in caplog.text
