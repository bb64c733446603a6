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
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["build_command", "main", "submit_env"]

RUNTIME_ENV = Path(__file__).resolve().parent / "runtime_env.yaml"


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
    cmd = build_command(
        address=args.address, config=args.config, out=args.out, extra=extra,
        working_dir=args.working_dir, python=args.python,
        submission_id=args.submission_id, no_wait=args.no_wait,
    )
    print("RAY_AUTH_MODE=token " + shlex.join(cmd), file=sys.stderr)
    if args.print:
        return 0
    return subprocess.run(cmd, env=submit_env(), check=False).returncode


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
