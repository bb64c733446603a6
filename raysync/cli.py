"""Command-line interface: ``raysync <command> ...``.

Built-in commands live in ``raysync/_cli/<command>.py`` (``validate``, ``analyze``,
``simulate``, ``run``, ``optimize``) and are listed statically in :data:`BUILTIN_COMMANDS`.

Commands from other packages (``tune`` and ``demo`` come from the top-level ``tuning``
package, which depends on raysync; raysync never imports it) are contributed through the
entry-point group :data:`ENTRY_POINT_GROUP` (``raysync.commands``), the way pytest and
Optuna plugins register themselves. To add a command ``recommend`` from ``tuning``:

1. Write ``add_parser(subparsers) -> None`` in a module of your package (e.g.
   ``tuning/_cli_recommend.py``). It must call ``subparsers.add_parser("recommend", ...)``,
   declare the arguments, and ``parser.set_defaults(func=handler)`` where
   ``handler(args: argparse.Namespace) -> int`` returns the exit code.
2. Declare it in ``pyproject.toml``; the entry point's name is the command's name::

       [project.entry-points."raysync.commands"]
       recommend = "tuning._cli_recommend:add_parser"

3. Re-install so the metadata is regenerated: ``.venv/bin/pip install -e . --no-deps -q``
   (``scripts/setup.sh`` does this on CI).

The module is imported every time the parser is built, so keep heavy imports (optuna, ray,
torch) inside the handler. The handler reports bad input by raising :class:`ValueError` (or
:class:`~raysync.exceptions.ConfigError`); like every domain error it ends the program with
one line on stderr and exit code 2, never a traceback. A command whose module fails to
import is skipped with a one-line warning, so a broken plugin cannot take the others down;
a plugin cannot replace a built-in command.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import signal
import sys
from collections.abc import Iterable, Mapping, Sequence
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any, NoReturn, Protocol

from raysync import __version__
from raysync._cli import analyze, optimize, run, simulate, validate
from raysync._validation import describe_os_error, describe_typed_number
from raysync.exceptions import RaySyncError, RunInterrupted

__all__ = [
    "BUILTIN_COMMANDS",
    "ENTRY_POINT_GROUP",
    "CommandEntryPoint",
    "main",
    "plugin_commands",
    "print_json",
]

#: Entry-point group read for commands contributed by other installed packages.
ENTRY_POINT_GROUP = "raysync.commands"

#: The core's own commands, in ``--help`` order; each module exposes ``add_parser``.
BUILTIN_COMMANDS: tuple[tuple[str, ModuleType], ...] = (
    ("validate", validate),
    ("analyze", analyze),
    ("simulate", simulate),
    ("run", run),
    ("optimize", optimize),
)

EXIT_USAGE = 2

#: Exit status when the reader of stdout or stderr went away (``raysync ... | head``):
#: 128 + SIGPIPE, what a command killed by SIGPIPE reports, without a message.
EXIT_BROKEN_PIPE = 141


#: What a negative value looks like on the command line: argparse's own pattern takes only
#: ``-5`` and ``-.5``, so ``--budget -1e5``, ``--trials -inf`` or ``--mu -1,2`` failed with
#: "expected one argument" (the value read as an unknown option) instead of the flag's own
#: check refusing the value with its rule.
_NEGATIVE_VALUE = re.compile(r"^-(?:\d|\.\d|inf(?:inity)?$|nan$)", re.IGNORECASE)


#: Most digits an integer flag may have (seeds included).
_MAX_INT_DIGITS = 30


def _abbreviate(value: int) -> str:
    digits = str(abs(value))
    return f"{'-' if value < 0 else ''}{digits[:6]}... ({len(digits)} digits)"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (sub-parsers inherit the class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The command parsers by name (the top-level parser's; empty on a command's own).
        self.commands: Mapping[str, argparse.ArgumentParser] = {}
        # argparse has no public hook for this; the attribute is read in _parse_optional
        # (tests/cli_tests/test_limits.py checks every command still gets such values).
        self._negative_number_matcher = _NEGATIVE_VALUE

    def _get_values(self, action: argparse.Action, arg_strings: list[str]) -> Any:
        # argparse drops a lone "--" even from "--flag=--", leaving an option with a list
        # value where its type promised a number; read it as the literal text instead
        if action.nargs is None and arg_strings == ["--"] and action.option_strings:
            value = self._get_value(action, "--")
            self._check_value(action, value)
            return value
        return super()._get_values(action, arg_strings)

    def _get_value(self, action: argparse.Action, arg_string: str) -> Any:
        value = super()._get_value(action, arg_string)
        # Checked here, once for every command: float("1e309") is inf, so the command's own
        # check saw "inf" (not what was typed) and named its parameter instead of the flag.
        if action.type is float and not math.isfinite(value):
            raise argparse.ArgumentError(
                action, f"must be a finite number, got {describe_typed_number(arg_string)}"
            )
        # Every count, size and seed fits in 30 digits: a longer integer is a slip, refused
        # here so that no command's own range check echoes hundreds of digits back.
        if action.type is int and len(str(abs(value))) > _MAX_INT_DIGITS:
            raise argparse.ArgumentError(
                action, f"must be an integer of at most {_MAX_INT_DIGITS} digits, got "
                f"{_abbreviate(value)}"
            )
        return value

    def error(self, message: str) -> NoReturn:
        line = " ".join(message.split())
        self.exit(EXIT_USAGE, f"{self.prog}: error: {line} (see {self.prog} --help)\n")


def _one_line(exc: BaseException) -> str:
    """The message of an error that ends a command, on one line (with its path if any)."""
    if isinstance(exc, OSError | UnicodeError) and not isinstance(exc, RaySyncError):
        return describe_os_error(exc)
    if isinstance(exc, MemoryError):
        return "out of memory: the input needs more memory than this machine has"
    if isinstance(exc, RecursionError):
        return "input nested too deeply"
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


class CommandEntryPoint(Protocol):
    """What the parser needs of an entry point (:class:`importlib.metadata.EntryPoint`)."""

    @property
    def name(self) -> str:
        """The command's name."""

    @property
    def value(self) -> str:
        """``module:attribute`` of the ``add_parser`` callable."""

    def load(self) -> Any:
        """Import the module and return ``add_parser``."""


def plugin_commands() -> list[CommandEntryPoint]:
    """The installed entry points of :data:`ENTRY_POINT_GROUP`, sorted by command name."""
    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _warn(text: str) -> None:
    print(f"raysync: warning: {text}", file=sys.stderr)


def _add_plugin(subparsers: Any, entry: CommandEntryPoint) -> None:
    if entry.name in subparsers.choices:
        _warn(f"command {entry.name!r} from {entry.value} ignored: the name is taken")
        return
    try:
        add_parser = entry.load()
    except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the others
        _warn(f"command {entry.name!r} skipped: {entry.value} failed to load ({exc})")
        return
    add_parser(subparsers)
    if entry.name not in subparsers.choices:
        _warn(f"{entry.value} did not register a sub-command named {entry.name!r}")


def _build_parser(plugins: Iterable[CommandEntryPoint] | None = None) -> _Parser:
    """The top-level parser with the built-in commands and the plugins.

    Args:
        plugins: Entry points to register; the installed ones (:func:`plugin_commands`)
            when None.
    """
    parser = _Parser(
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
    parser.commands = subparsers.choices
    for _name, module in BUILTIN_COMMANDS:
        module.add_parser(subparsers)
    for entry in plugin_commands() if plugins is None else plugins:
        _add_plugin(subparsers, entry)
    return parser


def main(
    argv: Sequence[str] | None = None, *, plugins: Iterable[CommandEntryPoint] | None = None
) -> int:
    """Run the CLI.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when None.
        plugins: Command entry points to offer besides the built-ins; the installed
            ``raysync.commands`` entry points when None.

    Returns:
        The process exit code: 0 on success, 2 on bad input, :data:`EXIT_BROKEN_PIPE`
        (quietly) when stdout or stderr was closed by its reader.
    """
    try:
        return _main(argv, plugins)
    except BrokenPipeError:
        # The reader is gone (``| head``): nothing more can be said. Point both streams at
        # /dev/null so the interpreter's final flush does not fail again (the recipe of
        # the Python docs, "Note on SIGPIPE").
        _silence_closed_streams()
        return EXIT_BROKEN_PIPE


def _silence_closed_streams() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream in (sys.stdout, sys.stderr):
            try:
                os.dup2(devnull, stream.fileno())
            except (AttributeError, OSError, ValueError):
                pass  # not a real file (a test's capture): nothing will flush to a pipe
    finally:
        os.close(devnull)


def print_json(args: argparse.Namespace, text: str) -> None:
    """Print a command's ``--json`` output on the process's real stdout.

    While a command given ``--json`` runs, :func:`main` points ``sys.stdout`` at stderr, so
    what user code prints (a factory, a loss, a model's forward, a Ray worker's log lines)
    cannot corrupt the JSON; this writes to the stdout saved before that
    (``args.json_stdout``; ``sys.stdout`` when a handler is called directly).

    Args:
        args: The command's parsed arguments.
        text: The JSON text (one document).
    """
    print(text, file=getattr(args, "json_stdout", None) or sys.stdout)


def _exit_origin(exc: SystemExit) -> str:
    """``sys.exit(code) called from FILE:LINE (FUNCTION)``: where the exit was raised."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = ""
    if tb is not None:
        code = tb.tb_frame.f_code
        where = f" from {code.co_filename}:{tb.tb_lineno} ({code.co_name})"
    return (
        f"sys.exit({exc.code!r}) called{where}; code run by raysync (a factory, loss, "
        "metric or model) must return or raise, not exit"
    )


def _main(argv: Sequence[str] | None, plugins: Iterable[CommandEntryPoint] | None) -> int:
    parser = _build_parser(plugins)
    args, extra = parser.parse_known_args(argv)
    # -v after the command (`raysync validate x.toml -v`) means what it means before it.
    verbose = [a for a in extra if a == "--verbose" or re.fullmatch(r"-v+", a)]
    args.verbose += sum(1 if a == "--verbose" else len(a) - 1 for a in verbose)
    extra = [a for a in extra if a not in verbose]
    if extra:
        # parse_args would report these from the top-level parser ("raysync: error: ...");
        # they belong to the command, whose usage line says what it takes.
        parser.commands.get(args.command, parser).error(
            f"unrecognized arguments: {' '.join(extra)}"
        )
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        if getattr(args, "json", False):
            args.json_stdout = sys.stdout
            with contextlib.redirect_stdout(sys.stderr):
                code = int(args.func(args) or 0)
        else:
            code = int(args.func(args) or 0)
        # buffered output reaches a closed pipe here, inside main, not at interpreter exit
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        raise  # main's quiet exit, not "error: broken pipe" (an OSError)
    except (RaySyncError, ValueError, OSError, MemoryError, RecursionError) as exc:
        # bad input, a file that cannot be read or written, or an input too large for
        # the memory: one line naming the cause (and the path), never a traceback
        print(f"raysync {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:
        # No command handler exits (argparse's errors come before the try): this is user
        # code (a loss, metric or forward mid-run), which would end the command silently,
        # with exit code 0 for sys.exit(0).
        print(f"raysync {args.command}: error: {_exit_origin(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        if isinstance(exc, RunInterrupted) and exc.signum != signal.SIGINT:
            # the shell's convention for a process ended by a signal: 128 + its number
            print(f"raysync {args.command}: terminated ({exc.signal_name})", file=sys.stderr)
            return exc.exit_code
        print(f"raysync {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
