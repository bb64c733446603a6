r"""Submit the raysync entrypoint as a Ray job, with token authentication on.

A thin wrapper around the ``ray job submit`` CLI that builds the documented command::

    python -m cluster.submit --address http://127.0.0.1:8265 \\
        examples/cluster_fleet.toml --out /tmp/raysync-run [-- extra entrypoint args]

runs::

    RAY_AUTH_MODE=token ray job submit --address ADDRESS \\
        --runtime-env cluster/runtime_env.yaml --working-dir . -- \\
        python -m cluster.entrypoint CONFIG --out OUT [extra args]

and exits with its status (0 when the job SUCCEEDED). The token is whatever Ray's client
finds: ``RAY_AUTH_TOKEN``, the file named by ``RAY_AUTH_TOKEN_PATH``, or
``~/.ray/auth_token`` (``ray get-auth-token --generate`` creates it). ``--print`` shows the
command without running it.

Before anything is submitted (and before ``--print`` shows it) what can be checked here is:
the flags, ``--working-dir``, the config (loaded with raysync's own loader, relative to
``--working-dir``), and the entrypoint's arguments (its own parser, overrides and tuning
settings). Then, unless ``--print``, the dashboard is asked for its version with the token
(at most ``--connect-timeout`` seconds per step). Any refusal is one line on stderr and exit
code 2, with nothing submitted.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "CONNECT_TIMEOUT",
    "build_command",
    "check_address",
    "check_dashboard",
    "main",
    "run_submission",
    "submit_env",
]

RUNTIME_ENV = Path(__file__).resolve().parent / "runtime_env.yaml"

#: The repository root: the dashboard check's process imports this module from it.
ROOT = Path(__file__).resolve().parents[1]

#: Default seconds the dashboard check waits to connect, and then for the answer
#: (``--connect-timeout``).
CONNECT_TIMEOUT = 10.0
#: Largest ``--connect-timeout``, seconds: the check must end.
MAX_CONNECT_TIMEOUT = 600.0
#: Seconds the check's process may take beyond ``--connect-timeout``: starting Python and
#: importing Ray (a second or two, more on a loaded machine), and Ray's own lookup of the
#: dashboard behind a cluster (GCS) or Ray Client address, which gives up after about 30 s.
PROBE_STARTUP_S = 30.0

#: The line the check's process prints its verdict on (its other output is Ray's logging).
_PROBE_MARK = "cluster.submit probe: "

#: What ``--address`` may be, as ``ray job submit`` reads it (for the messages).
_ADDRESS_RULE = (
    "must be the Ray dashboard's URL http://HOST:PORT (or https://...), a Ray Client "
    "address ray://HOST:PORT, a cluster (GCS) address HOST:PORT, or auto"
)
_HOST_NAME = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$")

#: Where to look when the dashboard is not reached (Ray's address variables win over
#: ``--address``; see :func:`_probe`).
_REACH_HINT = "is the cluster up? (RAY_ADDRESS / --address)"
_TOKEN_HINT = (
    "give the cluster's token in RAY_AUTH_TOKEN, in a file named by RAY_AUTH_TOKEN_PATH, or "
    "in ~/.ray/auth_token"
)

# What the dashboard answers (HTTP 500) while the head node's job agent has not registered
# yet: it waits only 10 s for it (ray.dashboard.consts.WAIT_AVAILABLE_AGENT_TIMEOUT), and on
# a freshly started or loaded head the agent can take longer. No job is created then, so
# submitting again is safe.
AGENT_NOT_READY = "No available agent to submit job"


def build_command(
    *,
    address: str,
    config: str,
    out: str,
    extra: Sequence[str] = (),
    working_dir: str = ".",
    runtime_env: str | Path = RUNTIME_ENV,
    python: str = "python",
    submission_id: str | None = None,
    no_wait: bool = False,
    ray: str | None = None,
) -> list[str]:
    """The ``ray job submit`` command line for the entrypoint.

    Args:
        address: Dashboard address of the cluster, e.g. ``http://127.0.0.1:8265``.
        config: Config path, relative to the working directory (or absolute on the head).
        out: Output directory on the node running the job driver.
        extra: More entrypoint arguments.
        working_dir: Directory uploaded as the job's working directory.
        runtime_env: Runtime-environment YAML.
        python: Interpreter the job runs on the cluster.
        submission_id: Optional job id.
        no_wait: Return after submission instead of following the logs.
        ray: Path of the ``ray`` executable (default: next to this interpreter, or PATH).

    Returns:
        The argument list.
    """
    if ray is None:
        local = Path(sys.executable).with_name("ray")
        ray = str(local) if local.exists() else (shutil.which("ray") or "ray")
    cmd = [
        ray, "job", "submit", "--address", address,
        "--runtime-env", str(runtime_env), "--working-dir", working_dir,
    ]  # fmt: skip
    if submission_id:
        cmd += ["--submission-id", submission_id]
    if no_wait:
        cmd.append("--no-wait")
    cmd += ["--", python, "-m", "cluster.entrypoint", config, "--out", out, *extra]
    return cmd


def submit_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The client environment: ``base`` (or ``os.environ``) with ``RAY_AUTH_MODE=token``."""
    env = dict(os.environ if base is None else base)
    env["RAY_AUTH_MODE"] = "token"
    return env


def run_submission(
    cmd: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    cwd: str | Path | None = None,
    attempts: int = 12,
    retry_delay: float = 5.0,
    timeout: float | None = None,
    echo: bool = True,
) -> tuple[int, str]:
    """Run a ``ray job submit`` command, submitting again while the job agent is not ready.

    The command's output is echoed line by line (``echo``) and kept. Only the dashboard's
    "no available agent" refusal is retried (no job exists then); any other failure, and
    a job that ran and failed, is returned at once.

    Args:
        cmd: The command (:func:`build_command`).
        env: Its environment (:func:`submit_env`).
        cwd: Its working directory.
        attempts: Submissions at most (``>= 1``).
        retry_delay: Seconds between two submissions.
        timeout: Seconds for each attempt; ``subprocess.TimeoutExpired`` past it.
        echo: Copy the output to this process's stderr as it comes.

    Returns:
        ``(exit code of the last attempt, output of all attempts)``.

    Raises:
        ValueError: ``attempts < 1`` or ``retry_delay < 0``.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts!r}")
    if not retry_delay >= 0:
        raise ValueError(f"retry_delay must be >= 0 seconds, got {retry_delay!r}")
    output: list[str] = []
    code = 0
    for attempt in range(1, attempts + 1):
        proc = subprocess.run(
            list(cmd), env=None if env is None else dict(env), cwd=cwd, capture_output=True,
            text=True, timeout=timeout, check=False,
        )  # fmt: skip
        text = proc.stdout + proc.stderr
        output.append(text)
        if echo:
            sys.stderr.write(text)
        code = proc.returncode
        if code == 0 or AGENT_NOT_READY not in text or attempt == attempts:
            break
        if echo:
            print(
                f"the cluster's job agent is not ready yet; submitting again in {retry_delay:g} s "
                f"(attempt {attempt + 1} of {attempts})",
                file=sys.stderr,
            )
        time.sleep(retry_delay)
    return code, "".join(output)


def check_address(address: str) -> None:
    """Refuse an ``--address`` that is no Ray address, before anything is sent.

    Accepted, as ``ray job submit`` reads them: the dashboard's URL
    ``http(s)://HOST[:PORT][/PATH]``, a Ray Client address ``ray://HOST:PORT``, a cluster
    (GCS) address ``HOST:PORT``, and ``auto``. Whether anything answers there is
    :func:`check_dashboard`'s question.

    Raises:
        ValueError: ``address`` is empty, holds spaces or control characters, has another
            scheme, no host, an invalid host, or a port that is not 1 to 65535 (one line
            naming the value and the rule).
    """
    if address == "auto":
        return
    if not address or not address.isprintable() or any(c.isspace() for c in address):
        raise ValueError(f"--address {_ADDRESS_RULE}, got {address!r}")
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "", address
    elif scheme not in ("http", "https", "ray"):
        # Ray would try to import a module named after the scheme and fail with a traceback
        raise ValueError(
            f"--address {address!r}: scheme {scheme + '://'!r} is not http://, https:// or "
            f"ray://; --address {_ADDRESS_RULE}"
        )
    parts = urlsplit("//" + rest)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        given = parts.netloc.rpartition(":")[2]
        raise ValueError(
            f"--address {address!r}: port {given!r} is not a number from 1 to 65535"
        )
    if not (_HOST_NAME.match(host) or _is_ipv6(host)):
        raise ValueError(f"--address {address!r} names no valid host; --address {_ADDRESS_RULE}")
    if scheme in ("", "ray") and (port is None or rest.rstrip("/") != parts.netloc):
        what = "a Ray Client address" if scheme else "without http://, a cluster (GCS) address"
        raise ValueError(
            f"--address {address!r}: {what} must be {scheme + '://' if scheme else ''}"
            f"HOST:PORT; for the dashboard give http://HOST:PORT (default port 8265)"
        )


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


def _gcs_hint(address: str) -> str:
    """For an address without a scheme: how Ray reads it (a common slip for the dashboard)."""
    if "://" in address or address == "auto":
        return ""
    return (" (without http://, Ray reads HOST:PORT as the cluster's GCS address and looks "
            "the dashboard up there; the dashboard itself is http://HOST:8265)")


def _one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line, at most ``limit`` characters (Ray's messages run to pages)."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _first_sentence(text: str) -> str:
    """The first sentence of a Ray message (the rest is advice for another CLI)."""
    line = _one_line(text.strip().split("\n\n")[0], limit=10_000)
    head, sep, _ = line.partition(". ")
    return _one_line(head if sep else line.rstrip("."))


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from, outermost first."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and not any(current is e for e in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _unreachable_cause(chain: Sequence[BaseException], timeout: float) -> str | None:
    """Why a request reached no dashboard, in a few words, or None if it is not that."""
    import requests

    for exc in chain:
        # ConnectTimeout is also a ConnectionError: tested first, as is every specific cause
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return f"no connection within {timeout:g} s"
        if isinstance(exc, requests.exceptions.ReadTimeout):
            return f"connected, but no answer within {timeout:g} s"
        if isinstance(exc, requests.exceptions.InvalidURL):
            return "not a valid URL"
        if isinstance(exc, requests.exceptions.SSLError):
            return f"TLS handshake failed ({_one_line(str(exc), 160)})"
        if isinstance(exc, requests.exceptions.ProxyError):
            return f"the HTTP proxy failed ({_one_line(str(exc), 160)})"
    for exc in chain:
        if isinstance(exc, ConnectionRefusedError):
            return "connection refused"
        if isinstance(exc, socket.gaierror):
            return f"the host name does not resolve ({exc.strerror or exc})"
    for exc in chain:
        if isinstance(exc, OSError) and exc.strerror:  # e.g. no route to host
            return exc.strerror[:1].lower() + exc.strerror[1:]
    if any(isinstance(exc, requests.exceptions.ConnectionError) for exc in chain):
        return _one_line(str(chain[-1]), 160)
    return None


def _probe(address: str, timeout: float) -> str | None:
    """Ask the dashboard behind ``address`` for its version, as ``ray job submit`` would.

    Runs in the check's own process (:func:`check_dashboard`), in the submission's
    environment: Ray's address variables, ``RAY_AUTH_MODE=token`` and the token are read
    there exactly as the ``ray`` CLI reads them, and this process's Ray is left alone.

    Args:
        address: ``--address`` (checked by :func:`check_address`).
        timeout: Seconds to wait to connect, and then for the answer.

    Returns:
        None when a Ray dashboard answered with the token; else one line naming the
        address and why it cannot take the job.
    """
    where = used = address
    # Ray reads these before --address (ray.dashboard.utils.get_address_for_submission_client)
    for var in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        value = os.environ.get(var)
        if value:
            if value != address:
                where, used = f"{value} (from {var}, which overrides --address)", value
            break
    try:
        from ray.dashboard.modules.dashboard_sdk import SubmissionClient
        from ray.dashboard.utils import get_address_for_submission_client
        from ray.exceptions import AuthenticationError
    except Exception as exc:  # noqa: BLE001 - any import failure is the same answer
        return (f"cannot submit to {where}: Ray cannot be imported here "
                f"({type(exc).__name__}: {_one_line(str(exc), 160)})")
    if not used.startswith(("http://", "https://")):
        # A cluster (GCS) or Ray Client address: Ray's lookup retries for ~30 s where
        # nothing, or something other than Ray, listens; a TCP connection and a gRPC
        # handshake tell within the timeout.
        from raysync.exceptions import RuntimeFailure
        from raysync.runtime.coordinator import check_reachable

        try:
            check_reachable(used, timeout, fix=_REACH_HINT[:1].upper() + _REACH_HINT[1:])
        except RuntimeFailure as exc:
            return f"cannot find the Ray dashboard through {where}: {exc}{_gcs_hint(address)}"
    try:
        # a cluster (GCS) or Ray Client address is looked up in the cluster: another round trip
        url = get_address_for_submission_client(address)
    except Exception as exc:  # noqa: BLE001 - Ray raises many types here; all are one line
        return (f"cannot find the Ray dashboard through {where}: "
                f"{_one_line(str(exc), 200) or type(exc).__name__}{_gcs_hint(address)}; "
                f"{_REACH_HINT}")
    if url.rstrip("/") != used.rstrip("/"):
        where = f"{url} (found through {where})"
    try:
        client = SubmissionClient(address=url)
        response = client._do_request("GET", "/api/version", timeout=(timeout, timeout))
    except AuthenticationError as exc:
        return (f"token authentication with the Ray dashboard at {where} failed: "
                f"{_first_sentence(str(exc))}; {_TOKEN_HINT}")
    except Exception as exc:  # noqa: BLE001 - classified below; never a traceback
        chain = _chain(exc)
        cause = _unreachable_cause(chain, timeout)
        if cause is not None:
            return f"cannot reach the Ray dashboard at {where}: {cause}; {_REACH_HINT}"
        return (f"cannot use the Ray dashboard at {where}: {type(exc).__name__}: "
                f"{_one_line(str(exc), 200)}")
    status = int(response.status_code)
    if status == 404:
        return (f"{where} is not a Ray dashboard: GET /api/version answered HTTP 404; give "
                f"the dashboard's address in --address (port 8265 unless changed)")
    if status != 200:
        return (f"the Ray dashboard at {where} answered HTTP {status} "
                f"{_one_line(str(response.reason or ''), 80)} to GET /api/version; "
                f"is the cluster healthy?")
    try:
        version: Any = response.json()["ray_version"]
    except Exception:  # noqa: BLE001 - not JSON, not a dict, no key: all "not Ray"
        version = None
    if not isinstance(version, str):
        return (f"{where} is not a Ray dashboard: GET /api/version answered no Ray version; "
                f"give the dashboard's address in --address (port 8265 unless changed)")
    return None


def _probe_main() -> None:
    """Entry of the check's process: ``ADDRESS TIMEOUT`` in ``sys.argv``, verdict on stdout."""
    problem = _probe(sys.argv[1], float(sys.argv[2]))
    print(_PROBE_MARK + json.dumps({"problem": problem}), flush=True)


def _probe_command(address: str, timeout: float) -> list[str]:
    """The command of the check's process: this interpreter running :func:`_probe_main`."""
    script = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
        "from cluster.submit import _probe_main; _probe_main()"
    )
    return [sys.executable, "-c", script, address, repr(float(timeout))]


def check_dashboard(
    address: str, env: Mapping[str, str] | None = None, *, timeout: float = CONNECT_TIMEOUT
) -> str | None:
    """Check that a Ray dashboard at ``address`` answers with the token, before submitting.

    Asks for ``/api/version`` as ``ray job submit`` does first, in a separate process with
    the submission's environment (:func:`_probe`), so that the address Ray really uses
    (``RAY_API_SERVER_ADDRESS`` and ``RAY_ADDRESS`` override ``--address``) and the token it
    finds are the ones checked. The whole check ends within
    ``timeout + PROBE_STARTUP_S`` seconds.

    Args:
        address: ``--address`` (checked by :func:`check_address`).
        env: The submission's environment (:func:`submit_env`).
        timeout: Seconds to wait to connect, and then for the answer (> 0).

    Returns:
        None when the dashboard answered; else one line naming the address and the cause
        (unreachable, not a Ray dashboard, token refused or missing).
    """
    limit = timeout + PROBE_STARTUP_S
    try:
        proc = subprocess.run(
            _probe_command(address, timeout),
            env=None if env is None else dict(env), stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=limit, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return (f"cannot reach the Ray dashboard at {address}: no answer within {limit:g} s"
                f"{_gcs_hint(address)}; {_REACH_HINT}")
    except OSError as exc:
        return f"cannot check the Ray dashboard at {address}: {sys.executable}: {exc.strerror}"
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_PROBE_MARK):
            try:
                problem = json.loads(line[len(_PROBE_MARK) :])["problem"]
            except (ValueError, KeyError, TypeError):
                break
            return None if problem is None else str(problem)
    tail = next((x for x in reversed(proc.stderr.splitlines()) if x.strip()), "")
    return (f"cannot check the Ray dashboard at {address}: the check exited with code "
            f"{proc.returncode}: {_one_line(tail, 200)}")


def _config_path(config: str, working_dir: str) -> Path:
    """Where the job will read CONFIG, here: under ``--working-dir`` unless absolute.

    Raises:
        ConfigError: CONFIG is blank, or a relative path that leaves the working directory
            (only that directory is uploaded).
    """
    from raysync.exceptions import ConfigError

    if not config.strip():
        raise ConfigError(f"CONFIG must be a TOML file path, got {config!r}")
    if os.path.isabs(config):
        return Path(config)
    if os.path.normpath(config).split(os.sep)[0] == os.pardir:
        raise ConfigError(
            f"config {config!r} is outside --working-dir {working_dir!r}: only that directory "
            "is uploaded and the job reads the config from it; move the config into it"
        )
    return Path(working_dir) / config


def _check_locally(args: argparse.Namespace, extra: Sequence[str]) -> None:
    """Check everything the submission needs that can be checked on this machine.

    The entrypoint's own code does the checking (its parser, its overrides, the tuning
    settings it builds), so a refusal here is the one the job would end with. Not
    checkable here: ``--resume`` and ``--out`` themselves (paths on the driver's node).

    Raises:
        SystemExit: The entrypoint's parser refused the arguments (code 2, one line).
        RaySyncError: A value breaks a rule; ``ConfigError`` also for the config file.
        ValueError: A value breaks a rule (one line naming the value and the rule).
    """
    from raysync._validation import check_input_dir, check_number
    from raysync.config import load_config
    from raysync.exceptions import ConfigError

    check_address(args.address)
    check_number("--connect-timeout", args.connect_timeout)
    if args.connect_timeout > MAX_CONNECT_TIMEOUT:
        raise ConfigError(f"--connect-timeout must be at most {MAX_CONNECT_TIMEOUT:g} s, "
                          f"got {args.connect_timeout:g}")
    # The entrypoint would take "" as ".", the job's temporary working directory.
    if not args.out.strip():
        raise ConfigError(
            f"--out must be a directory path on the node that runs the job, got {args.out!r}"
        )
    if not args.python.strip():
        raise ConfigError(f"--python must name the cluster's interpreter, got {args.python!r}")
    from cluster.entrypoint import _overrides
    from cluster.entrypoint import build_parser as entrypoint_parser

    entry = entrypoint_parser().parse_args([args.config, "--out", args.out, *extra])
    check_input_dir(args.working_dir, "--working-dir")
    config = load_config(_config_path(args.config, args.working_dir))
    if entry.resume is not None and entry.tune:
        # entrypoint.main's first check (inline there), with its message
        raise ValueError(
            "--resume continues a run, not a study: a --tune job resumes from its "
            "storage (--storage, or OUT/tune) when submitted again with the same --study"
        )
    config = _overrides(config, entry)
    if entry.tune:
        from cluster.entrypoint import tune_settings

        tune_settings(entry, config)


def main(argv: Sequence[str] | None = None) -> int:
    """Check, then build and run (or print) the submission command; return its exit code.

    Returns:
        The exit code of ``ray job submit`` (0 when the job SUCCEEDED); 0 after ``--print``;
        2 on bad input or when no dashboard answers (one line on stderr, nothing submitted).

    Raises:
        SystemExit: Code 2 with one line, for arguments the parser (this one or the
            entrypoint's) refuses; 0 after ``--help``.
    """
    from raysync.cli import _Parser
    from raysync.exceptions import RaySyncError

    # raysync's parser: one-line usage errors, finite numbers (as the entrypoint's)
    parser = _Parser(prog="python -m cluster.submit", description=__doc__)
    parser.add_argument(
        "config",
        help="config path relative to --working-dir (or absolute: then on this machine and "
        "the head); it is loaded and checked here first",
    )
    parser.add_argument("--out", required=True, help="output directory on the head node")
    parser.add_argument(
        "--address",
        default=os.environ.get("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:8265"),
        help="dashboard address (default $RAY_API_SERVER_ADDRESS or http://127.0.0.1:8265)",
    )
    parser.add_argument("--working-dir", default=".", help="uploaded working directory")
    parser.add_argument("--python", default="python", help="interpreter on the cluster")
    parser.add_argument("--submission-id", default=None)
    parser.add_argument("--no-wait", action="store_true")
    parser.add_argument("--print", action="store_true", help="print the command only")
    parser.add_argument(
        "--connect-timeout", type=float, default=CONNECT_TIMEOUT, metavar="SECONDS",
        help=f"seconds to wait for the dashboard before submitting (default {CONNECT_TIMEOUT:g})",
    )  # fmt: skip
    args, extra = parser.parse_known_args(argv)
    if extra and extra[0] == "--":
        extra = extra[1:]
    # Checked here, where a slip is one line and exit 2, not a job failing on the cluster.
    try:
        _check_locally(args, extra)
    except (RaySyncError, ValueError) as exc:
        print(f"cluster.submit: error: {_one_line(str(exc), 10_000)}", file=sys.stderr)
        return 2
    cmd = build_command(
        address=args.address, config=args.config, out=args.out, extra=extra,
        working_dir=args.working_dir, python=args.python,
        submission_id=args.submission_id, no_wait=args.no_wait,
    )
    env = submit_env()
    if not args.print:
        # Before the command line is shown: an unreachable cluster is the one line printed.
        problem = check_dashboard(args.address, env, timeout=args.connect_timeout)
        if problem is not None:
            print(f"cluster.submit: error: {problem}", file=sys.stderr)
            return 2
    print("RAY_AUTH_MODE=token " + shlex.join(cmd), file=sys.stderr)
    if args.print:
        return 0
    return run_submission(cmd, env)[0]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
