"""Validation helpers shared by the numeric modules and the CLI.

Messages name the field, the rule and the value; file errors name the file.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import numpy as np

from raysync.exceptions import ConfigError

__all__ = [
    "check_input_dir",
    "check_number",
    "check_output_dir",
    "check_output_file",
    "describe_os_error",
    "read_text_file",
]


def check_number(name: str, value: object, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float after checking it is a finite, positive number.

    Args:
        name: Field name used in the message.
        value: The value to check (Python or numpy number; bools are refused).
        allow_zero: Accept 0 (the rule becomes ``>= 0``).

    Raises:
        ConfigError: The value is not a number, not finite, or not positive.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be finite, got {number!r}")
    if allow_zero and number < 0:
        raise ConfigError(f"{name} must be >= 0, got {number!r}")
    if not allow_zero and number <= 0:
        raise ConfigError(f"{name} must be > 0, got {number!r}")
    return number


def _reason(exc: OSError) -> str:
    """``[Errno 13] Permission denied: 'x'`` -> ``permission denied``."""
    text = exc.strerror or type(exc).__name__
    return text[:1].lower() + text[1:]


def read_text_file(path: str | os.PathLike[str], what: str, *, max_bytes: int) -> str:
    """Read a UTF-8 text file, turning every way it can fail into one clear line.

    Args:
        path: The file.
        what: What the file is, for the message (e.g. ``"config file"``).
        max_bytes: Refuse files larger than this (a config is small; this keeps a
            wrong path such as a data set from filling the memory).

    Returns:
        The text, without a leading UTF-8 byte-order mark if the file starts with one.

    Raises:
        ConfigError: The path does not exist, is a directory or another non-regular file
            (a FIFO or a device would block or never end), cannot be read, is larger than
            ``max_bytes``, or is not UTF-8. The message names the path.
    """
    shown = repr(os.fspath(path))
    try:
        info = os.stat(path)
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} {shown} does not exist") from exc
    except (OSError, ValueError) as exc:  # ValueError: embedded NUL in the path
        reason = _reason(exc) if isinstance(exc, OSError) else str(exc)
        raise ConfigError(f"{what} {shown} cannot be read: {reason}") from exc
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{what} {shown} is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{what} {shown} is not a regular file")
    if info.st_size > max_bytes:
        raise ConfigError(
            f"{what} {shown} is {info.st_size:,} bytes, more than the {max_bytes:,} allowed"
        )
    try:
        with open(path, "rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(f"{what} {shown} cannot be read: {_reason(exc)}") from exc
    if len(raw) > max_bytes:
        raise ConfigError(f"{what} {shown} is more than the {max_bytes:,} bytes allowed")
    try:
        # A leading byte-order mark (Windows editors write one) is dropped: TOML parsers
        # would otherwise reject it as an invalid statement on line 1.
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} {shown} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start})"
        ) from exc


def _dir_problem(directory: Path) -> str | None:
    """Why files cannot be written under ``directory`` (created if missing), or None."""
    probe = directory
    while True:
        try:
            info = probe.stat()
        except (FileNotFoundError, NotADirectoryError):
            parent = probe.parent
            if parent == probe:
                return None
            probe = parent
            continue
        except OSError as exc:
            return f"{str(probe)!r}: {_reason(exc)}"
        if not stat.S_ISDIR(info.st_mode):
            if probe == directory:
                return "it is an existing file, not a directory"
            return f"{str(probe)!r} is a file, not a directory"
        if not os.access(probe, os.W_OK | os.X_OK):
            return f"permission denied on {str(probe)!r}"
        return None


def check_output_dir(path: str | os.PathLike[str], flag: str) -> Path:
    """Check that ``path`` can be (or already is) a directory to write into.

    Nothing is created. A missing directory is fine when its nearest existing ancestor
    is a writable directory (the command creates it).

    Args:
        path: The directory.
        flag: The option that named it, for the message (e.g. ``"--out"``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: ``path`` is empty, holds a NUL, is an existing file, sits under a
            file, or cannot be written.
    """
    text = os.fspath(path)
    if not text or "\x00" in text:
        raise ConfigError(f"{flag} must be a directory path, got {text!r}")
    problem = _dir_problem(Path(text))
    if problem is not None:
        raise ConfigError(f"{flag} {text!r} cannot be used as a directory: {problem}")
    return Path(text)


def check_output_file(path: str | os.PathLike[str], flag: str) -> Path:
    """Check that ``path`` names a file that can be written (its folder may be missing).

    Raises:
        ConfigError: ``path`` is empty, holds a NUL, is a directory, or its folder cannot
            be created or written.
    """
    text = os.fspath(path)
    if not text or "\x00" in text:
        raise ConfigError(f"{flag} must be a file path, got {text!r}")
    target = Path(text)
    if target.is_dir():
        raise ConfigError(f"{flag} {text!r} is a directory, not a file")
    if target.exists() and not os.access(target, os.W_OK):
        raise ConfigError(f"{flag} {text!r} is not writable: permission denied")
    problem = _dir_problem(target.parent)
    if problem is not None:
        folder = str(target.parent)
        problem = problem.replace("it is an existing file", f"{folder!r} is a file")
        raise ConfigError(f"{flag} {text!r} cannot be written: {problem}")
    return target


def describe_os_error(exc: OSError | UnicodeError) -> str:
    """One line for an OS or decoding error that escaped a command, naming the path."""
    if isinstance(exc, UnicodeDecodeError):
        return f"cannot decode text as {exc.encoding}: {exc.reason} at byte {exc.start}"
    if isinstance(exc, UnicodeError):
        return f"text cannot be encoded: {exc}"
    names = [n for n in (exc.filename, exc.filename2) if n is not None]
    where = " -> ".join(repr(os.fsdecode(n)) for n in names)
    reason = _reason(exc)
    return f"{where}: {reason}" if where else reason


def check_input_dir(path: str | os.PathLike[str], flag: str) -> Path:
    """Check that ``path`` is an existing, readable directory.

    Raises:
        ConfigError: ``path`` is empty, holds a NUL, does not exist, is a file, or cannot
            be listed.
    """
    text = os.fspath(path)
    if not text or "\x00" in text:
        raise ConfigError(f"{flag} must be a directory path, got {text!r}")
    try:
        info = os.stat(text)
    except FileNotFoundError as exc:
        raise ConfigError(f"{flag} {text!r} does not exist") from exc
    except OSError as exc:
        raise ConfigError(f"{flag} {text!r} cannot be used: {_reason(exc)}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{flag} {text!r} is a file, not a directory")
    if not os.access(text, os.R_OK | os.X_OK):
        raise ConfigError(f"{flag} {text!r} cannot be read: permission denied")
    return Path(text)
