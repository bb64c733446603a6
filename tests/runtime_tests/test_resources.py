"""Resource requests on a live cluster: fail fast with a clear error instead of hanging.

(The checks themselves are Ray-free: ``tests/placement_tests``.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from raysync.cli import main
from raysync.config import ClientSpec, dump_config
from raysync.exceptions import ResourceUnavailableError
from raysync.runtime import run

from ._helpers import alive_actor_ids, queue_config

pytestmark = pytest.mark.ray


def _wait_until_gone(before: set[str], timeout: float = 20.0) -> set[str]:
    deadline = time.monotonic() + timeout
    while True:
        leaked = alive_actor_ids() - before
        if not leaked or time.monotonic() > deadline:
            return leaked
        time.sleep(0.2)


@pytest.mark.parametrize(
    "bad",
    [
        ClientSpec(num_cpus=0.25, resources={"tier_tpu": 1}),
        ClientSpec(num_cpus=0.25, num_gpus=4),
    ],
)
def test_run_fails_fast_on_the_session_cluster(ray_session, bad: ClientSpec) -> None:  # noqa: ANN001
    config = queue_config((0.01, 0.01), None, 2, 10)
    config = config.replace(clients=(config.clients[0], bad))
    before = alive_actor_ids()
    start = time.monotonic()
    with pytest.raises(ResourceUnavailableError, match="client 1 requests"):
        run(config)
    assert time.monotonic() - start < 10
    assert _wait_until_gone(before) == set()


def test_cli_reports_one_line_and_exit_2(
    ray_session,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],  # noqa: ANN001
) -> None:
    config = queue_config((0.01, 0.01), None, 2, 10)
    config = config.replace(
        clients=(config.clients[0], ClientSpec(num_cpus=0.25, resources={"tier_tpu": 1}))
    )
    path = tmp_path / "bad.toml"
    dump_config(config, path)
    code = main(["run", str(path), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1
    assert err[0].startswith("raysync run: error: client 1 requests")
    assert "tier_tpu" in err[0]


def test_unreachable_address_fails_fast() -> None:
    from raysync.exceptions import RuntimeFailure
    from raysync.runtime.coordinator import _check_reachable

    start = time.monotonic()
    with pytest.raises(RuntimeFailure, match="cannot reach the Ray cluster at '127.0.0.1:1'"):
        _check_reachable("127.0.0.1:1")
    with pytest.raises(RuntimeFailure, match="ray start --head"):
        _check_reachable("ray://127.0.0.1:1")
    assert time.monotonic() - start < 10
    _check_reachable("auto")  # left to Ray


def test_local_runs_start_a_fresh_instance_and_only_address_joins(monkeypatch) -> None:  # noqa: ANN001
    # A cluster started with `ray start --head` on this machine must not be joined by a
    # run without --address (ray.init() would, and then reject num_cpus).
    import ray

    from raysync.runtime import coordinator

    calls: list[dict] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    assert coordinator.connect(None) is True
    assert calls[-1]["address"] == "local"
    assert calls[-1]["num_cpus"] >= 1
    assert coordinator.connect("auto") is False
    assert calls[-1]["address"] == "auto"
    assert "num_cpus" not in calls[-1]
