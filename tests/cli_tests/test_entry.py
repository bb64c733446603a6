"""How the CLI is entered and left: ``python -m raysync``, and a reader that goes away."""

from __future__ import annotations

import subprocess
import sys

from raysync import __version__
from raysync.cli import EXIT_BROKEN_PIPE

ANALYZE = [sys.executable, "-m", "raysync", "analyze", "--mu", "1,2", "-C", "3"]


def test_python_dash_m_runs_the_same_main() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "raysync", "--version"], capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert __version__ in done.stdout
    bad = subprocess.run(
        [*ANALYZE[:-2], "-C", "0"], capture_output=True, text=True, timeout=120, check=False
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("raysync analyze: error: ")


def _closed_reader(args: list[str], stream: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``args`` with ``stream`` a pipe whose reader closes before anything is written
    (the child is still importing when the parent closes its end)."""
    pipes = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
    pipes[stream] = subprocess.PIPE
    proc = subprocess.Popen(args, **pipes)  # type: ignore[call-overload]
    getattr(proc, stream).close()
    other = proc.stderr if stream == "stdout" else None
    err = other.read() if other is not None else b""
    proc.wait(timeout=120)
    return subprocess.CompletedProcess(args, proc.returncode, b"", err)


def test_a_closed_stdout_exits_quietly() -> None:
    done = _closed_reader(ANALYZE, "stdout")
    assert done.returncode == EXIT_BROKEN_PIPE
    assert done.stderr == b""  # no "error: broken pipe", no "Exception ignored" traceback


def test_a_closed_stderr_exits_quietly() -> None:
    """The one-line error of bad input cannot be written: the exit is still quiet."""
    done = _closed_reader([*ANALYZE[:-2], "-C", "0"], "stderr")
    assert done.returncode == EXIT_BROKEN_PIPE
