"""Atomic file writes.

A reader, or a process killed mid-write, sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
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
    left as it was.

    Args:
        path: The file to write; its folder must exist.
        binary: Open the temporary file in ``"wb"`` (else ``"w"``, UTF-8).
        fsync: Flush and ``fsync`` the data before the rename (durable across a power
            loss, not only a kill).

    Yields:
        The open temporary file.

    Raises:
        OSError: The folder does not exist or cannot be written.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        handle = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")
        with handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
