"""Submit cluster/entrypoint.py to a private Ray head with token authentication ON."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cluster.submit import build_command, run_submission, submit_env

ROOT = Path(__file__).resolve().parents[2]

TINY = """
seed = 0
concurrency = 3

[routing]
kind = "uniform"

[algorithm]
name = "generalized_asyncsgd"
lr = 0.2
batch_size = 16

[data]
dataset = "digits"

[run]
num_updates = 60
eval_every_updates = 20
time_scale = 0.01

[[clients]]
service_time = { kind = "exponential", rate = 1.0 }
num_cpus = 0.25
count = 2

[[clients]]
service_time = { kind = "exponential", rate = 4.0 }
num_cpus = 0.25
"""

pytestmark = [pytest.mark.ray]


def test_dashboard_rejects_requests_without_the_token(ray_head) -> None:
    request = urllib.request.Request(f"{ray_head.dashboard}/api/jobs/")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 401


def test_submit_entrypoint_with_token_auth(ray_head, tmp_path: Path) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    out = tmp_path / "out"
    submission_id = f"raysync-test-{int(time.time())}"
    cmd = build_command(
        address=ray_head.dashboard,
        config=str(config),
        out=str(out),
        python=sys.executable,
        submission_id=submission_id,
    )
    env = submit_env(ray_head.client_env())
    assert env["RAY_AUTH_MODE"] == "token"
    code, output = run_submission(cmd, env, cwd=ROOT, timeout=240, echo=False)
    assert code == 0, output[-8000:]
    job = _job(ray_head, submission_id)
    assert job["status"] == "SUCCEEDED", job

    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "run"
    assert results["num_updates"] == 60
    assert 0.0 <= results["final_test_accuracy"] <= 1.0
    assert results["cluster_resources"]["CPU"] == 2.0
    events = sorted((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert "test/accuracy" in acc.Tags()["scalars"]


def _job(head, submission_id: str, what: str = "", method: str = "GET") -> dict:  # noqa: ANN001
    request = urllib.request.Request(
        f"{head.dashboard}/api/jobs/{submission_id}{what}",
        headers={"Authorization": f"Bearer {head.token}"},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _wait_for(check, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1.0)


def test_ray_job_stop_checkpoints_and_a_resubmission_resumes(ray_head, tmp_path: Path) -> None:
    # The pre-emption path a cluster user meets: `ray job stop` sends the entrypoint
    # SIGTERM; the run must stop after an update, checkpoint it and say how to go on.
    from raysync.runtime.checkpoint import peek_version

    ckpt = tmp_path / "ck"
    config = tmp_path / "long.toml"
    config.write_text(TINY.replace("num_updates = 60", "num_updates = 1000000").replace(
        "eval_every_updates = 20", f"eval_every_updates = 20\ncheckpoint_dir = '{ckpt}'"))
    out = tmp_path / "out"
    env = submit_env(ray_head.client_env())
    first = f"raysync-stop-{int(time.time())}"
    cmd = build_command(address=ray_head.dashboard, config=str(config), out=str(out),
                        python=sys.executable, submission_id=first, no_wait=True)
    code, output = run_submission(cmd, env, cwd=ROOT, timeout=240, echo=False)
    assert code == 0, output[-8000:]

    def evaluated() -> bool:  # the server loop runs: evaluations reach TensorBoard
        assert _job(ray_head, first)["status"] in ("PENDING", "RUNNING")
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        runs = [p for p in (out / "tensorboard").glob("*") if p.is_dir()]
        if not runs:
            return False
        acc = EventAccumulator(str(runs[0]))
        acc.Reload()
        return "test/accuracy" in acc.Tags()["scalars"] and len(acc.Scalars("test/accuracy")) > 1

    _wait_for(evaluated, 180, "the run's evaluations")
    _job(ray_head, first, "/stop", method="POST")
    _wait_for(lambda: _job(ray_head, first)["status"] == "STOPPED", 120, "the job to stop")
    logs = _job(ray_head, first, "/logs")["logs"]
    line = next((x for x in logs.splitlines() if "run stopped by SIGTERM" in x), None)
    assert line is not None, logs[-4000:]
    version = peek_version(ckpt)
    assert version is not None and version >= 20
    assert line == (
        f"cluster.entrypoint: run stopped by SIGTERM at version {version}; its checkpoint is "
        f"in {str(ckpt)!r}: submit the same command with --resume {ckpt} to continue it")
    assert not (out / "results.json").exists()

    second = f"{first}-resumed"
    cmd = build_command(address=ray_head.dashboard, config=str(config), out=str(out),
                        python=sys.executable, submission_id=second,
                        extra=["--resume", str(ckpt), "--num-updates", str(version + 40)])
    code, output = run_submission(cmd, env, cwd=ROOT, timeout=240, echo=False)
    assert code == 0, output[-8000:]
    assert _job(ray_head, second)["status"] == "SUCCEEDED"
    results = json.loads((out / "results.json").read_text())
    assert results["num_updates"] == version + 40
    assert results["result"]["extras"]["resumed_from_version"] == version
