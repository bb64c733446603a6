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
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["build_command", "main", "run_submission", "submit_env"]

RUNTIME_ENV = Path(__file__).resolve().parent / "runtime_env.yaml"

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


def main(argv: Sequence[str] | None = None) -> int:
    """Build and run (or print) the submission command; return its exit code."""
    parser = argparse.ArgumentParser(prog="python -m cluster.submit", description=__doc__)
    parser.add_argument("config", help="config path relative to the working directory")
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
    args, extra = parser.parse_known_args(argv)
    if extra and extra[0] == "--":
        extra = extra[1:]
    # Checked here, where a typo is one line and exit 2, not a job failing on the cluster.
    from cluster.entrypoint import build_parser as entrypoint_parser

    entrypoint_parser().parse_args([args.config, "--out", args.out, *extra])
    cmd = build_command(
        address=args.address, config=args.config, out=args.out, extra=extra,
        working_dir=args.working_dir, python=args.python,
        submission_id=args.submission_id, no_wait=args.no_wait,
    )
    print("RAY_AUTH_MODE=token " + shlex.join(cmd), file=sys.stderr)
    if args.print:
        return 0
    return run_submission(cmd, submit_env())[0]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
