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
    request = urllib.request.Request(
        f"{ray_head.dashboard}/api/jobs/{submission_id}",
        headers={"Authorization": f"Bearer {ray_head.token}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        job = json.loads(response.read())
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
