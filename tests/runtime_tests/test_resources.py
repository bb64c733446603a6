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

from ._helpers import actor_ids, alive_actor_ids, queue_config

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
@pytest.mark.timeout(120)  # a run waiting for resources that never come fails, not hangs
def test_run_fails_fast_on_the_session_cluster(ray_session, bad: ClientSpec) -> None:  # noqa: ANN001
    config = queue_config((0.01, 0.01), None, 2, 10)
    config = config.replace(clients=(config.clients[0], bad))
    before = alive_actor_ids()
    known = actor_ids()
    with pytest.raises(ResourceUnavailableError, match="client 1 requests"):
        run(config)
    # Refused while planning, before any actor was asked for (not created, then killed).
    assert actor_ids() - known == set()
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


def test_unreachable_address_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    # One bounded connection attempt per check (ray.init would retry for minutes): counted
    # here rather than timed, so the test holds on a loaded machine.
    import socket

    from raysync.exceptions import RuntimeFailure
    from raysync.runtime.coordinator import check_reachable

    attempts: list[tuple[object, object]] = []
    real = socket.create_connection

    def counting(target: tuple[str, int], timeout: float | None = None, *a: object) -> object:
        attempts.append((target, timeout))
        return real(target, timeout, *a)

    monkeypatch.setattr(socket, "create_connection", counting)
    with pytest.raises(RuntimeFailure, match="cannot reach the Ray cluster at '127.0.0.1:1'"):
        check_reachable("127.0.0.1:1")
    with pytest.raises(RuntimeFailure, match="ray start --head"):
        check_reachable("ray://127.0.0.1:1")
    assert attempts == [(("127.0.0.1", 1), 5.0), (("127.0.0.1", 1), 5.0)]
    check_reachable("auto")  # left to Ray
    assert len(attempts) == 2


def test_a_port_that_is_not_ray_fails_fast_and_a_grpc_server_passes() -> None:
    # ray.init on a port where a web server listens retried for minutes (measured: killed
    # after 150 s). The probe's handshake fails there however loaded the machine is (an
    # HTTP/1.1 server never answers HTTP/2), and passes on any gRPC server, which is what
    # Ray's GCS and client server are; the generous timeout only bounds a stalled server.
    import http.server
    import threading
    from concurrent import futures

    import grpc

    from raysync.exceptions import RuntimeFailure
    from raysync.runtime.coordinator import check_reachable

    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=web.serve_forever, daemon=True)
    thread.start()
    try:
        address = f"127.0.0.1:{web.server_address[1]}"
        not_ray = rf"^'{address}' accepts connections but is not a Ray cluster"
        with pytest.raises(RuntimeFailure, match=not_ray):
            check_reachable(address, timeout=0.5)
        with pytest.raises(RuntimeFailure, match="ray://host:10001"):
            check_reachable(f"ray://{address}", timeout=0.5)
    finally:
        web.shutdown()
        web.server_close()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        check_reachable(f"127.0.0.1:{port}", timeout=60.0)
        check_reachable(f"ray://127.0.0.1:{port}", timeout=60.0)
    finally:
        server.stop(None)


def test_the_probe_passes_a_real_ray_gcs(ray_session) -> None:  # noqa: ANN001
    # The session's instance uses token authentication: the handshake needs no token.
    from raysync.runtime.coordinator import check_reachable

    check_reachable(ray_session.get_runtime_context().gcs_address, timeout=60.0)


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
