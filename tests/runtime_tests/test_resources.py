"""Resource requests: fail fast with a clear error instead of hanging."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from raysync.cli import main
from raysync.config import ClientSpec, SystemConfig, dump_config
from raysync.exceptions import ResourceUnavailableError
from raysync.runtime import check_resources, client_request, run

from ._helpers import alive_actor_ids, queue_config

pytestmark = pytest.mark.ray

NODES = [
    {"CPU": 1.0},
    {"CPU": 1.0, "tier_fast": 2.0},
    {"CPU": 2.0, "GPU": 1.0, "tier_slow": 2.0},
]


def _config(*clients: ClientSpec) -> SystemConfig:
    return SystemConfig(clients=clients, concurrency=len(clients))


def test_client_request_names_every_resource() -> None:
    spec = ClientSpec(num_cpus=0.5, num_gpus=0.25, resources={"tier_fast": 1})
    assert client_request(spec) == {"CPU": 0.5, "GPU": 0.25, "tier_fast": 1.0}
    assert client_request(ClientSpec(num_cpus=0)) == {"CPU": 0.0}


def test_feasible_requests_pass() -> None:
    check_resources(
        _config(
            ClientSpec(num_cpus=0.5, resources={"tier_fast": 1}),
            ClientSpec(num_cpus=0.5, resources={"tier_fast": 1}),
            ClientSpec(num_cpus=1, num_gpus=1, resources={"tier_slow": 2}),
        ),
        NODES,
    )


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (ClientSpec(resources={"tier_tpu": 1}), ["client 1", "tier_tpu: 1", "tier_tpu: 0"]),
        (ClientSpec(num_gpus=4), ["client 1", "GPU: 4", "GPU: 1"]),
        (ClientSpec(num_cpus=3), ["client 1", "CPU: 3", "CPU: 2"]),
        # Each resource exists somewhere, but no single node holds both.
        (ClientSpec(resources={"tier_fast": 1, "tier_slow": 1}), ["no single node"]),
        (ClientSpec(name="edge", resources={"tier_tpu": 1}), ["client 1 (edge)"]),
    ],
)
def test_unsatisfiable_request_names_client_request_and_offer(
    spec: ClientSpec, words: list[str]
) -> None:
    config = _config(ClientSpec(), spec)
    with pytest.raises(ResourceUnavailableError) as info:
        check_resources(config, NODES)
    for word in words:
        assert word in str(info.value)


def test_total_requests_beyond_the_cluster_fail() -> None:
    config = _config(*[ClientSpec(num_cpus=1) for _ in range(5)])
    with pytest.raises(ResourceUnavailableError, match=r"together request CPU=5"):
        check_resources(config, NODES)
    fits = _config(*[ClientSpec(num_cpus=1) for _ in range(4)])
    check_resources(fits, NODES)  # exactly the cluster's 4 CPUs
    with pytest.raises(ResourceUnavailableError, match="CPU=5"):
        check_resources(fits, NODES, server_num_cpus=1)  # not with a 1-CPU server


def test_no_alive_node() -> None:
    with pytest.raises(ResourceUnavailableError, match="no alive node"):
        check_resources(_config(ClientSpec()), [])


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
