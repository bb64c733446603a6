"""Command-line interface: ``raysync <command> ...``.

Each command lives in ``raysync/_cli/<command>.py`` and exposes ``add_parser(subparsers)``,
which registers its sub-parser and sets ``func(args) -> int`` as the handler. Bad input
(a :class:`ValueError`, including :class:`~raysync.exceptions.ConfigError`) and domain
errors end the program with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from raysync import __version__
from raysync.exceptions import RaySyncError

__all__ = ["main"]

# Commands are imported lazily by name so `raysync --help` stays fast and a broken optional
# command cannot take the others down.
_COMMANDS: tuple[str, ...] = (
    "validate",
    "analyze",
    "simulate",
    "run",
    "optimize",
    "tune",
    "demo",
)

EXIT_USAGE = 2


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raysync",
        description=(
            "Asynchronous federated learning on Ray, tuned by queueing theory. "
            "Analyse a fleet as a closed Jackson network, simulate it on a virtual clock, "
            "run it on Ray, and choose concurrency and routing."
        ),
    )
    parser.add_argument("--version", action="version", version=f"raysync {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"raysync._cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"raysync._cli.{name}":
                continue  # command not built yet
            raise
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when None.

    Returns:
        The process exit code: 0 on success, 2 on bad input.
    """
    parser = _build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (RaySyncError, ValueError, FileNotFoundError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"raysync {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"raysync {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
