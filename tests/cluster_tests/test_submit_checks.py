"""``python -m cluster.submit`` refuses bad input in one line, exit 2, with nothing submitted.

No Ray is started here. The dashboard check runs in its own process against addresses that
answer deterministically: a bound port that does not listen (connection refused), a local
HTTP server that answers what a test needs, and a listening socket that never answers.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

import cluster.submit as submit
from cluster.submit import check_address, check_dashboard, main

from .._configs import QUEUE_ONLY_PAIR, write_config

TOKEN = "0123456789abcdef" * 4

CONFIG = QUEUE_ONLY_PAIR


@pytest.fixture
def client_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client environment that reads the same everywhere: no address variables (they
    override --address), a token in RAY_AUTH_TOKEN, no proxy between us and 127.0.0.1."""
    for key in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(key, raising=False)
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                "all_proxy"):  # fmt: skip
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)


@pytest.fixture
def submitted(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """``run_submission`` replaced: records the commands it is given, submits nothing."""
    calls: list[list[str]] = []

    def record(cmd: list[str], env: object = None, **kwargs: object) -> tuple[int, str]:
        calls.append(list(cmd))
        return 0, ""

    monkeypatch.setattr(submit, "run_submission", record)
    return calls


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A working directory holding a valid config, ``tiny.toml``."""
    write_config(tmp_path, CONFIG, "tiny.toml")
    return tmp_path


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port bound on 127.0.0.1 that does not listen: a connection to it is refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


class _Dashboard(ThreadingHTTPServer):
    status = 200
    body = json.dumps({"ray_version": "2.60.0"})
    seen_auth: list[str | None]


class _Handler(BaseHTTPRequestHandler):
    server: _Dashboard

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.seen_auth.append(self.headers.get("Authorization"))
        data = self.server.body.encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def dashboard() -> Iterator[_Dashboard]:
    """A local HTTP server standing in for the dashboard's ``/api/version``."""
    server = _Dashboard(("127.0.0.1", 0), _Handler)
    server.seen_auth = []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _url(server: _Dashboard) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def _one_error_line(capsys: pytest.CaptureFixture[str], prefix: str) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(prefix), lines[0]
    assert captured.out == ""
    return lines[0]


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str) -> str:
    assert main(argv) == 2
    line = _one_error_line(capsys, "cluster.submit: error: ")
    assert expected in line, line
    return line


# ---- 1. no dashboard answers: one line naming the address and the cause --------------------


@pytest.mark.usefixtures("client_env")
def test_a_refused_connection_is_one_line_and_nothing_is_submitted(
    workdir: Path, refused_port: int, submitted: list[list[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    address = f"http://127.0.0.1:{refused_port}"
    _refused(capsys, ["tiny.toml", "--out", "/tmp/o", "--working-dir", str(workdir),
                      "--address", address, "--connect-timeout", "5"],
             f"cannot reach the Ray dashboard at {address}: connection refused; "
             "is the cluster up? (RAY_ADDRESS / --address)")  # fmt: skip
    assert submitted == []


@pytest.mark.usefixtures("client_env")
def test_ray_address_overriding_address_is_named(
    workdir: Path, refused_port: int, submitted: list[list[str]],
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # ray job submit reads RAY_ADDRESS before --address: the check asks where Ray will go
    actual = f"http://127.0.0.1:{refused_port}"
    monkeypatch.setenv("RAY_ADDRESS", actual)
    _refused(capsys, ["tiny.toml", "--out", "/tmp/o", "--working-dir", str(workdir),
                      "--address", "http://127.0.0.1:8265", "--connect-timeout", "5"],
             f"at {actual} (from RAY_ADDRESS, which overrides --address): connection refused")
    assert submitted == []


@pytest.mark.usefixtures("client_env")
def test_a_token_file_that_cannot_be_read_is_named(
    workdir: Path, refused_port: int, submitted: list[list[str]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    missing = tmp_path / "no" / "token"
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(missing))
    address = f"http://127.0.0.1:{refused_port}"
    line = _refused(
        capsys, ["tiny.toml", "--out", "/tmp/o", "--working-dir", str(workdir),
                 "--address", address, "--connect-timeout", "5"],
        f"token authentication with the Ray dashboard at {address} failed: ",
    )  # fmt: skip
    assert str(missing) in line and "RAY_AUTH_TOKEN" in line
    assert submitted == []


@pytest.mark.usefixtures("client_env")
@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (404, "", "is not a Ray dashboard: GET /api/version answered HTTP 404"),
        (401, "Unauthorized: Missing authentication token",
         "token authentication with the Ray dashboard at http://127.0.0.1:"),
        (200, "<html>hello</html>", "is not a Ray dashboard: GET /api/version answered no Ray"),
    ],
)  # fmt: skip
def test_an_answer_that_is_not_a_usable_dashboard_is_one_line(
    workdir: Path, dashboard: _Dashboard, submitted: list[list[str]],
    capsys: pytest.CaptureFixture[str], status: int, body: str, expected: str,
) -> None:  # fmt: skip
    dashboard.status, dashboard.body = status, body
    line = _refused(capsys, ["tiny.toml", "--out", "/tmp/o", "--working-dir", str(workdir),
                             "--address", _url(dashboard), "--connect-timeout", "5"],
                    expected)  # fmt: skip
    assert _url(dashboard) in line
    assert submitted == []


@pytest.mark.usefixtures("client_env")
def test_a_dashboard_that_answers_is_submitted_to_with_the_token(
    workdir: Path, dashboard: _Dashboard, submitted: list[list[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    argv = ["tiny.toml", "--out", "/tmp/o", "--working-dir", str(workdir),
            "--address", _url(dashboard), "--connect-timeout", "5",
            "--", "--seed", "3"]  # fmt: skip
    assert main(argv) == 0
    assert dashboard.seen_auth == [f"Bearer {TOKEN}"]  # RAY_AUTH_MODE=token reached the check
    assert len(submitted) == 1 and submitted[0][-2:] == ["--seed", "3"]
    assert capsys.readouterr().err.startswith("RAY_AUTH_MODE=token ")


@pytest.mark.usefixtures("client_env")
def test_a_dashboard_that_never_answers_is_bounded_by_the_timeout() -> None:
    # Listening, never accepting: the connection is made, no answer ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = f"http://127.0.0.1:{silent.getsockname()[1]}"
        problem = check_dashboard(address, submit.submit_env(), timeout=0.5)
    assert problem == (f"cannot reach the Ray dashboard at {address}: connected, but no "
                       "answer within 0.5 s; is the cluster up? (RAY_ADDRESS / --address)")


def test_a_check_that_does_not_end_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(submit, "_probe_command",
                        lambda address, timeout: [sys.executable, "-c",
                                                  "import time; time.sleep(60)"])  # fmt: skip
    monkeypatch.setattr(submit, "PROBE_STARTUP_S", 0.2)
    problem = check_dashboard("http://h:8265", timeout=0.1)
    assert problem is not None
    assert problem.startswith("cannot reach the Ray dashboard at http://h:8265: no answer within")
    # without a scheme Ray reads a GCS address: the likely slip is named
    problem = check_dashboard("h:8265", timeout=0.1)
    assert problem is not None and "without http://, Ray reads HOST:PORT as" in problem


def test_a_check_that_crashes_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(submit, "_probe_command",
                        lambda address, timeout: [sys.executable, "-c",
                                                  "raise SystemExit('boom')"])  # fmt: skip
    assert check_dashboard("http://h:8265", timeout=1.0) == (
        "cannot check the Ray dashboard at http://h:8265: the check exited with code 1: boom")


def _raised(exc: BaseException, cause: BaseException) -> BaseException:
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(
    ("exc", "cause"),
    [
        (_raised(requests.exceptions.ConnectionError("pool"),
                 socket.gaierror(-2, "Name or service not known")),
         "the host name does not resolve (Name or service not known)"),
        (_raised(requests.exceptions.ConnectionError("pool"), OSError(113, "No route to host")),
         "no route to host"),
        (requests.exceptions.ConnectTimeout("slow"), "no connection within 2 s"),
        (requests.exceptions.InvalidURL("Failed to parse"), "not a valid URL"),
    ],
)  # fmt: skip
def test_causes_are_named_in_a_few_words(exc: BaseException, cause: str) -> None:
    assert submit._unreachable_cause(submit._chain(exc), 2.0) == cause


def test_print_does_not_contact_the_cluster(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_check(*args: object, **kwargs: object) -> None:
        raise AssertionError("checked the dashboard")

    monkeypatch.setattr(submit, "check_dashboard", no_check)
    assert main(["tiny.toml", "--out", "/tmp/o", "--working-dir", str(workdir),
                 "--address", "http://127.0.0.1:1", "--print"]) == 0  # fmt: skip
    assert capsys.readouterr().err.startswith("RAY_AUTH_MODE=token ")


# ---- 2. the helper's own usage errors are one line ------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "the following arguments are required: config, --out"),
        (["tiny.toml"], "the following arguments are required: --out"),
        (["tiny.toml", "--out", "/o", "--connect-timeout", "nan"],
         "argument --connect-timeout: must be a finite number, got 'nan'"),
    ],
)  # fmt: skip
def test_usage_errors_are_one_line(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    line = _one_error_line(capsys, "python -m cluster.submit: error: ")
    assert expected in line


# ---- 3. what can be checked here is checked before anything is submitted or printed ---------


_LOCAL_REFUSALS = [
    pytest.param(["missing.toml"], "", "missing.toml' does not exist", id="missing"),
    pytest.param([""], "", "CONFIG must be a TOML file path, got ''", id="empty-config"),
    pytest.param(["sub"], "", "is a directory, not a file", id="directory"),
    pytest.param(["bad.toml"], "", "bad.toml' is not valid TOML", id="not-toml"),
    pytest.param(["binary.toml"], "", "is not UTF-8 text (byte 0xff at offset 0)", id="binary"),
    pytest.param(["rule.toml"], "", "concurrency", id="config-rule"),
    pytest.param(["../tiny.toml"], "", "is outside --working-dir", id="outside-working-dir"),
    pytest.param(["tiny.toml", "--out", ""], "",
                 "--out must be a directory path on the node that runs the job, got ''",
                 id="empty-out"),
    pytest.param(["tiny.toml", "--address", ""], "", "--address must be the Ray dashboard's "
                 "URL http://HOST:PORT", id="empty-address"),
    pytest.param(["tiny.toml", "--address", "not a url"], "", "got 'not a url'",
                 id="address-with-spaces"),
    pytest.param(["tiny.toml", "--address", "garbage"], "",
                 "'garbage': without http://, a cluster (GCS) address must be HOST:PORT",
                 id="address-no-port"),
    pytest.param(["tiny.toml", "--address", "ftp://h:21"], "",
                 "scheme 'ftp://' is not http://, https:// or ray://", id="address-scheme"),
    pytest.param(["tiny.toml", "--address", "http://127.0.0.1:99999"], "",
                 "port '99999' is not a number from 1 to 65535", id="address-port"),
    pytest.param(["tiny.toml", "--address", "http://:8265"], "", "names no valid host",
                 id="address-no-host"),
    pytest.param(["tiny.toml", "--working-dir", "WORKDIR/nowhere"], "", "does not exist",
                 id="missing-working-dir"),
    pytest.param(["tiny.toml", "--python", " "], "", "--python must name", id="blank-python"),
    pytest.param(["tiny.toml", "--connect-timeout", "0"], "",
                 "--connect-timeout must be > 0", id="zero-timeout"),
    pytest.param(["tiny.toml", "--", "--num-updates", "-5"], "",
                 "argument --num-updates: run.num_updates must be an integer >= 1, got -5",
                 id="num-updates"),
    pytest.param(["tiny.toml", "--", "--tune", "--parallel", "0"], "",
                 "parallel must be an integer >= 1, got 0", id="parallel"),
    pytest.param(["tiny.toml", "--", "--tune", "--trials", "0"], "",
                 "trials must be an integer >= 1, got 0", id="trials"),
    pytest.param(["tiny.toml", "--", "--tune", "--resume", "/ck"], "",
                 "--resume continues a run, not a study", id="resume-a-study"),
]  # fmt: skip


@pytest.mark.parametrize("dry_run", [False, True], ids=["submit", "print"])
@pytest.mark.parametrize(("args", "what", "expected"), _LOCAL_REFUSALS)
def test_local_refusals_submit_and_print_nothing(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    submitted: list[list[str]], args: list[str], what: str, expected: str, dry_run: bool,
) -> None:  # fmt: skip
    def no_check(*a: object, **k: object) -> None:
        raise AssertionError("checked the dashboard")

    monkeypatch.setattr(submit, "check_dashboard", no_check)
    (workdir / "sub").mkdir()
    (workdir / "bad.toml").write_text("x = [\n")
    (workdir / "binary.toml").write_bytes(b"\xff\xfe\x00")
    write_config(workdir, CONFIG.replace("concurrency = 2", "concurrency = 0"), "rule.toml")
    args = [a.replace("WORKDIR", str(workdir)) for a in args]
    config, rest = args[0], args[1:]
    argv = [config, "--out", "/tmp/o", "--working-dir", str(workdir),
            "--address", "http://127.0.0.1:1", *rest]  # fmt: skip
    if dry_run:
        argv.insert(1, "--print")
    # the last --out / --address / --working-dir given wins, as argparse reads them
    _refused(capsys, argv, f"{what} {expected}".strip())
    assert submitted == []


def test_the_config_is_read_relative_to_the_working_directory(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workdir.parent)  # tiny.toml is not here: it is under --working-dir
    assert main(["tiny.toml", "--out", "/tmp/o", "--working-dir", str(workdir), "--print"]) == 0
    assert capsys.readouterr().err.rstrip().endswith(
        "cluster.entrypoint tiny.toml --out /tmp/o")
    # A path under the working directory that climbs out and back in stays inside it.
    (workdir / "sub").mkdir()
    assert main(["sub/../tiny.toml", "--out", "/tmp/o", "--working-dir", str(workdir),
                 "--print"]) == 0  # fmt: skip


@pytest.mark.parametrize(
    "address",
    ["http://127.0.0.1:8265", "https://ray.example.com/dashboard", "http://[::1]:8265",
     "ray://head:10001", "10.0.0.1:6379", "auto", "http://head-node_1:8265/"],
)  # fmt: skip
def test_ray_addresses_are_accepted(address: str) -> None:
    check_address(address)


def test_a_tune_job_one_trial_at_a_time_is_accepted(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The entrypoint's own --address (default auto, its ray.init) is not the study's: passed
    on, it refused --parallel 1 (an address is for trials on Ray), on the cluster too."""
    from cluster.entrypoint import build_parser, tune_settings
    from raysync.config import load_config

    argv = ["tiny.toml", "--out", "/tmp/o", "--working-dir", str(workdir), "--print", "--",
            "--tune", "--parallel", "1", "--trials", "2", "--budget", "5"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    args = build_parser().parse_args([str(workdir / "tiny.toml"), "--out", "/tmp/o", "--tune",
                                      "--parallel", "1", "--budget", "5"])  # fmt: skip
    settings = tune_settings(args, load_config(workdir / "tiny.toml"))
    assert settings.address is None and settings.parallel == 1


@pytest.mark.usefixtures("client_env")
def test_a_gcs_address_where_no_ray_listens_is_refused_within_the_timeout(
    refused_port: int,
) -> None:
    # Ray's lookup of the dashboard through a GCS or Ray Client address retried for ~30 s
    # (measured: 40 s to the check's own limit) where nothing, or a web server, listened.
    address = f"127.0.0.1:{refused_port}"
    problem = check_dashboard(address, submit.submit_env(), timeout=5.0)
    assert problem is not None
    assert problem.startswith(
        f"cannot find the Ray dashboard through {address}: cannot reach the Ray cluster at "
        f"'{address}' ([Errno 111] Connection refused). Is the cluster up? (RAY_ADDRESS / "
        "--address) (without http://, Ray reads HOST:PORT as the cluster's GCS address"
    ), problem
    with socket.socket() as web:  # listening: the TCP connection is made, no gRPC follows
        web.bind(("127.0.0.1", 0))
        web.listen(8)
        for address in (f"127.0.0.1:{web.getsockname()[1]}",
                        f"ray://127.0.0.1:{web.getsockname()[1]}"):  # fmt: skip
            problem = check_dashboard(address, submit.submit_env(), timeout=0.5)
            assert problem == (
                f"cannot find the Ray dashboard through {address}: {address!r} accepts "
                "connections but is not a Ray cluster (no gRPC handshake within 0.5 s): give "
                "the head node's GCS address (`ray start --head` prints it, port 6379 by "
                "default) or its client address (ray://host:10001)" + submit._gcs_hint(address)
            ), problem
