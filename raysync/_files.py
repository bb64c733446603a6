"""Atomic file writes.

A reader, or a process killed mid-write, sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_write(
    path: str | Path, *, binary: bool = False, fsync: bool = False
) -> Iterator[IO[Any]]:
    """Open a fresh temporary file beside ``path``; on a clean exit it replaces ``path``.

    Each call gets its own ``mkstemp`` file, so concurrent writers of one path (threads or
    processes) never share a temporary file; the last ``os.replace`` wins. On any
    exception (``KeyboardInterrupt`` too) the temporary file is removed and ``path`` is
    left as it was. The file gets the mode an ordinary write would give it: the old
    file's, or ``0o666`` less the umask for a new one (``mkstemp`` alone makes it
    ``0o600``, unreadable to the user's group).

    Args:
        path: The file to write (through a symbolic link, not over it); its folder must
            exist.
        binary: Open the temporary file in ``"wb"`` (else ``"w"``, UTF-8).
        fsync: Flush and ``fsync`` the data before the rename (durable across a power
            loss, not only a kill).

    Yields:
        The open temporary file.

    Raises:
        OSError: The folder does not exist or cannot be written.
    """
    # Through a symbolic link, not over it: replacing the link would leave the file it
    # names stale (and, as root, `/dev/stdout` would be replaced by a regular file).
    target = Path(os.path.realpath(path))
    folder = target.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        handle = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")
        with handle:
            yield handle
            handle.flush()
            os.fchmod(handle.fileno(), _mode_for(target))
            if fsync:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _mode_for(target: Path) -> int:
    """The permission bits a plain ``open(target, "w")`` would leave on ``target``."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    # /proc gives the umask without setting it; os.umask must set it to read it, which
    # another thread could observe for an instant.
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
