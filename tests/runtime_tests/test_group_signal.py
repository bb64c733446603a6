"""SIGTERM to the whole process group: Ray's own processes die with the driver's signal.

``kill -- -PGID`` and Slurm's ``scancel`` signal every process of the job, so the local
Ray instance a run started (GCS, raylet, the actors' workers) is gone by the time the
driver asks its server for a checkpoint. The driver used to wait for a reply that could
not come until Ray's core worker aborted it (measured: 60 s, exit 1, no resume hint). It
now sees the GCS refuse connections, keeps the last periodic checkpoint and ends as an
interrupted run (exit 143, the resume command).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from raysync.config import dump_config
from raysync.runtime import coordinator
from raysync.runtime.checkpoint import MANIFEST

from ._helpers import spawn_run, wait_for_file
from .test_checkpoint import _resumable_config

pytestmark = pytest.mark.ray


def test_a_refused_gcs_is_gone_and_a_listening_or_silent_one_is_not(
    ray_session, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    assert coordinator._gcs_alive()  # the session's own GCS
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        context = type("Context", (), {"gcs_address": f"127.0.0.1:{port}"})()
        monkeypatch.setattr(coordinator.ray, "get_runtime_context", lambda: context)
        assert not coordinator._gcs_alive()
        sock.listen()
        assert coordinator._gcs_alive()
    # only a refusal is proof: a timeout (a loaded machine, a remote head) or an
    # unreachable network is not
    for error in (TimeoutError("timed out"), OSError(101, "Network is unreachable")):

        def failing(*args: object, error: OSError = error, **kwargs: object) -> None:
            raise error

        monkeypatch.setattr(coordinator.socket, "create_connection", failing)
        assert coordinator._gcs_alive()


def test_the_stop_wait_ends_when_the_gcs_is_gone(
    ray_session, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    ray = ray_session

    @ray.remote(num_cpus=0)
    def never() -> None:
        time.sleep(3600)

    ref = never.remote()
    group = coordinator.ActorGroup(None, [], [], None)  # type: ignore[arg-type]
    try:
        # alive: the wait runs to its timeout, in one-second steps
        with pytest.raises(ray.exceptions.GetTimeoutError):
            group._await_stop(ref, 0.5)
        # gone: the first step's probe ends it, whatever the timeout
        monkeypatch.setattr(coordinator, "_gcs_alive", lambda timeout=1.0: False)
        with pytest.raises(coordinator._RayGone):
            group._await_stop(ref, 3600.0)
        # a reply that arrives is returned
        assert group._await_stop(ray.put(7), 3600.0) == 7
    finally:
        ray.cancel(ref, force=True)
    group.ray_gone = True
    group.shutdown()  # kills nothing (no GCS to ask): it must not block


@pytest.mark.slow  # its own Ray instance in a subprocess: tens of seconds
def test_sigterm_to_the_process_group_ends_as_an_interrupted_run(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    config = _resumable_config(ckpt)
    config = config.replace(run=dataclasses.replace(config.run, num_updates=10**6))
    path = tmp_path / "system.toml"
    dump_config(config, path)
    # its own process group, as a job's
    proc = spawn_run(path, stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_for_file(proc, ckpt / MANIFEST)
        os.killpg(proc.pid, signal.SIGTERM)
        # Before the fix: Ray's core worker aborted the driver after 60 s, exit 1. The
        # bound is a hang guard for a loaded machine; the exit code is the check.
        code = proc.wait(timeout=600)
        err = proc.stderr.read().decode() if proc.stderr else ""
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        if proc.stderr:
            proc.stderr.close()
    assert code == 143, err[-3000:]
    assert "SIGTERM reached Ray's own processes too" in err, err[-3000:]
    saved = json.loads((ckpt / MANIFEST).read_text())["body"]["version"]
    assert saved >= 50 and saved % 50 == 0
    assert f"the last checkpoint (version {saved}) is in" in err, err[-3000:]
    assert f"--resume {ckpt}" in err
