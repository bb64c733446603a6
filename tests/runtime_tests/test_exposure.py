"""A local run is reachable from this machine only, and its token is private.

Ray 2.60 starts a local instance on the machine's external address and binds its GCS,
raylets, workers and metrics endpoints to all interfaces; raysync's local instances take
the loopback address (:func:`~raysync.runtime.coordinator.local_instance_settings`).
Token authentication (on by default) reads ``~/.ray/auth_token``, which Ray would write
world-readable; raysync creates it with mode 0600 first.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from raysync.runtime.coordinator import ensure_private_token, local_instance_settings

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}

_SCRIPT = """
import json, logging, pathlib, psutil, ray
logging.basicConfig(level=logging.INFO)
from raysync.runtime import connect
assert connect() is True
me = psutil.Process()
listen = []
for proc in [me, *me.children(recursive=True)]:
    try:
        conns = proc.net_connections(kind="inet")
        name = proc.name()
    except psutil.Error:
        continue
    listen += [[c.laddr.ip, c.laddr.port, name] for c in conns if c.status == psutil.CONN_LISTEN]
token = pathlib.Path.home() / ".ray" / "auth_token"
print("REPORT " + json.dumps({"listen": listen, "mode": token.stat().st_mode & 0o777,
                              "token": token.read_text()}))
ray.shutdown()
"""


@pytest.mark.ray
def test_a_local_instance_listens_on_loopback_only_with_a_private_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(tmp_path)  # a fresh ~/.ray: the token is created by this run
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        capture_output=True,
        text=True,
        timeout=900,  # a hang guard: Ray's start-up on a loaded machine is slow
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("REPORT ")]
    report = json.loads(lines[-1].removeprefix("REPORT "))
    names = {name for _, _, name in report["listen"]}
    assert any("gcs_server" in n for n in names) and any("raylet" in n for n in names), names
    exposed = [row for row in report["listen"] if row[0] not in LOOPBACK]
    assert exposed == [], exposed
    assert report["mode"] == 0o600
    # The token never appears in what the run prints or logs.
    token = report["token"]
    assert len(token) == 64
    logged = out.stderr + "\n".join(
        line for line in out.stdout.splitlines() if not line.startswith("REPORT ")
    )
    assert token not in logged


def test_the_token_file_is_created_private_and_an_open_one_is_narrowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(key, raising=False)
    path = ensure_private_token()
    assert path == tmp_path / ".ray" / "auth_token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_text()
    assert len(first) == 64 and int(first, 16) >= 0
    assert ensure_private_token() == path and path.read_text() == first  # kept
    path.chmod(0o644)
    ensure_private_token()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert ensure_private_token() is None


def test_loopback_settings_are_scoped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from ray._private import ray_constants

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    before = ray_constants.ENABLE_RAY_CLUSTER
    with local_instance_settings():
        assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
        assert ray_constants.ENABLE_RAY_CLUSTER is False
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ
    assert ray_constants.ENABLE_RAY_CLUSTER == before
