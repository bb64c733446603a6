"""The exit code of one ``raysync`` command line, as the console script would end."""

from __future__ import annotations

from collections.abc import Sequence

from raysync.cli import main


def exit_code(argv: Sequence[str]) -> int:
    """Run ``raysync ARGV``: ``main``'s return value, or the code of argparse's exit.

    A usage error (a flag's value refused by its type) ends through ``SystemExit`` like
    any argparse program; the process exit code is the same 2 either way.
    """
    try:
        return main(list(argv))
    except SystemExit as stop:
        assert isinstance(stop.code, int)
        return stop.code
