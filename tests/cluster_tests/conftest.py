"""A private Ray head for job-submission tests (never the session's in-process instance)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

_PORTS = (
    "port", "dashboard", "client", "agent_http", "agent_grpc", "runtime_env", "metrics",
    "node_manager", "object_manager",
)  # fmt: skip


def _free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Head:
    """A ``ray start --head --block`` process in its own session, with token auth."""

    proc: subprocess.Popen[bytes]
    temp_dir: Path
    token: str
    ports: dict[str, int]
    env: dict[str, str]

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.ports['dashboard']}"

    def client_env(self) -> dict[str, str]:
        """Environment of a job client: token auth on, this head's token."""
        env = dict(os.environ)
        for key in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
            env.pop(key, None)
        env["RAY_AUTH_MODE"] = "token"
        env["RAY_AUTH_TOKEN"] = self.token
        return env


def _session_members(sid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            if os.getsid(pid) != sid:
                continue
            with open(f"/proc/{pid}/stat") as handle:
                state = handle.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":  # zombies are gone already (waiting to be reaped)
            out.append(pid)
    return out


def _stop(head: Head) -> None:
    """Stop only this head: SIGTERM to ``ray start --block`` (it stops its processes), then
    SIGKILL whatever is left in its session (workers, the job driver). Never ``ray stop``,
    which would stop every Ray instance on the machine, the test session's included."""
    sid = head.proc.pid
    if head.proc.poll() is None:
        head.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _session_members(sid):
        head.proc.poll()  # reap the ray start process itself
        time.sleep(0.2)
    for pid in _session_members(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    try:
        head.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


@pytest.fixture(scope="module")
def ray_head() -> Iterator[Head]:
    """A fresh Ray head (2 CPUs, dashboard + job server, token auth) on free ports."""
    temp_dir = Path(tempfile.mkdtemp(prefix="rsh-", dir="/tmp"))  # short: unix socket paths
    token = secrets.token_hex(32)
    ports = dict(zip(_PORTS, _free_ports(len(_PORTS)), strict=True))
    bindir = Path(sys.executable).parent
    env = dict(os.environ)
    for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
        env.pop(key, None)
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
        PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}",
        RAY_USAGE_STATS_ENABLED="0",
        # `ray job stop` waits this long after SIGTERM before SIGKILL (default 3 s): a
        # loaded 2-core machine may need longer for the stopped run's checkpoint
        RAY_JOB_STOP_WAIT_TIME_S="60",
    )
    cmd = [
        str(bindir / "ray"), "start", "--head", "--block",
        f"--port={ports['port']}", "--num-cpus=2", "--num-gpus=0",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1",
        f"--dashboard-port={ports['dashboard']}",
        f"--ray-client-server-port={ports['client']}",
        f"--dashboard-agent-listen-port={ports['agent_http']}",
        f"--dashboard-agent-grpc-port={ports['agent_grpc']}",
        f"--runtime-env-agent-port={ports['runtime_env']}",
        f"--metrics-export-port={ports['metrics']}",
        f"--node-manager-port={ports['node_manager']}",
        f"--object-manager-port={ports['object_manager']}",
        f"--temp-dir={temp_dir}", "--disable-usage-stats",
    ]  # fmt: skip
    log = (temp_dir / "ray-start.log").open("wb")
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    head = Head(proc=proc, temp_dir=temp_dir, token=token, ports=ports, env=env)
    try:
        url = f"{head.dashboard}/api/version"
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"ray start exited with {proc.returncode}: "
                    + (temp_dir / "ray-start.log").read_text()[-2000:]
                )
            try:
                request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
                with urllib.request.urlopen(request, timeout=2) as response:
                    json.loads(response.read())
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield head
    finally:
        _stop(head)
        log.close()
