"""The journal file's lock and repair (see :mod:`tuning.storage` for the whole story).

* :class:`JournalLock`: a symlink whose target is the holder's stamp, so a lock left by a
  killed driver is removed at once when that driver is gone, and waiting never spins.
* :func:`repair_journal`: cuts a torn last record left by a driver killed mid-append.
* :func:`check_records`: names the first line that is not an Optuna journal operation
  (Optuna itself stops on it with ``AssertionError: Should not reach.``).

Imported lazily by :func:`tuning.storage.make_storage` (it imports Optuna).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from pathlib import Path

from optuna.storages.journal import JournalFileSymlinkLock

from tuning.storage import process_alive, process_stamp

__all__ = [
    "JOURNAL_LOCK_GRACE",
    "JournalLock",
    "check_last_record",
    "check_records",
    "repair_journal",
]

logger = logging.getLogger(__name__)

#: Seconds a lock whose holder cannot be checked must stay unchanged before it is removed.
JOURNAL_LOCK_GRACE = 10
_LOCK_SUFFIX = ".lock"
#: How every record of Optuna's journal begins (``JournalStorage._write_log`` puts
#: ``op_code`` first; ``JournalFileBackend.append_logs`` writes compact JSON).
_RECORD_START = b'{"op_code":'
_STAMP_KIND = "raysync-journal-lock"


class JournalLock(JournalFileSymlinkLock):
    """The journal's append lock: a symlink whose target is the holder's stamp.

    A subclass of Optuna's :class:`~optuna.storages.journal.JournalFileSymlinkLock` (so it
    is accepted wherever Optuna takes a lock object) with the same atomic ``symlink(2)``
    acquisition, but a lock left by a dead holder is recognised and removed (module
    docstring), the lock path is absolute, and waiting never spins.

    Args:
        journal: Path of the journal file (relative or absolute).
        grace_period: Seconds an unchanged lock of an unverifiable holder is respected.
        poll: Longest sleep between two attempts, seconds.
    """

    def __init__(
        self,
        journal: str | os.PathLike[str],
        *,
        grace_period: float = JOURNAL_LOCK_GRACE,
        poll: float = 0.05,
    ) -> None:
        path = os.path.abspath(os.fspath(journal))
        super().__init__(path, grace_period=max(3, int(grace_period)))
        self.grace = float(grace_period)
        self.poll = float(poll)
        self.path = path + _LOCK_SUFFIX
        self._held: str | None = None

    def _stamp(self) -> str:
        return json.dumps(
            {"kind": _STAMP_KIND, **process_stamp(), "token": uuid.uuid4().hex},
            separators=(",", ":"),
        )

    def _holder(self) -> tuple[str, tuple[int, int, int]] | None:
        """The lock's target and identity (inode, mtime), or None when there is no lock."""
        try:
            info = os.lstat(self.path)
            target = os.readlink(self.path)
        except FileNotFoundError:
            return None
        except OSError:
            # Not a symlink (another program's lock file): identity only.
            try:
                info = os.lstat(self.path)
            except FileNotFoundError:
                return None
            target = ""
        return target, (info.st_ino, info.st_mtime_ns, info.st_ctime_ns)

    @staticmethod
    def holder_alive(target: str) -> bool | None:
        """Whether the driver named by a lock target runs (None: cannot be told)."""
        try:
            stamp = json.loads(target)
        except (TypeError, ValueError):
            return None  # a path (Optuna's own lock) or garbage: no owner recorded
        if not isinstance(stamp, dict) or stamp.get("kind") != _STAMP_KIND:
            return None
        return process_alive(stamp)

    def acquire(self) -> bool:
        """Take the lock, removing a stale one; blocks (sleeping) while a live holder has it.

        Returns:
            True.
        """
        stamp = self._stamp()
        sleep = 0.001
        seen: tuple[str, tuple[int, int, int]] | None = None
        seen_since = time.monotonic()
        while True:
            try:
                os.symlink(stamp, self.path)
            except FileExistsError:
                pass
            else:
                self._held = stamp
                return True
            holder = self._holder()
            if holder is None:
                continue  # released between our two calls: try again at once
            if holder != seen:
                seen, seen_since = holder, time.monotonic()
            alive = self.holder_alive(holder[0])
            waited = time.monotonic() - seen_since
            if alive is False or (alive is None and waited > self.grace):
                self._break(
                    holder,
                    "its driver is gone" if alive is False else f"unchanged for {waited:.0f} s",
                )
                sleep = 0.001
                continue
            time.sleep(sleep)
            sleep = min(2 * sleep, self.poll)

    def _take_aside(self) -> str | None:
        aside = f"{self.path}.{uuid.uuid4().hex}.stale"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return None
        return aside

    def _put_back(self, aside: str) -> None:
        # link(2) never replaces an existing lock, so a lock taken meanwhile is kept.
        with contextlib.suppress(OSError):
            os.link(aside, self.path, follow_symlinks=False)
        with contextlib.suppress(OSError):
            os.unlink(aside)

    def _break(self, holder: tuple[str, tuple[int, int, int]], why: str) -> None:
        aside = self._take_aside()
        if aside is None:
            return
        try:
            target = os.readlink(aside)
        except OSError:
            target = ""
        if target != holder[0]:
            self._put_back(aside)  # not the lock we judged stale: someone else's fresh lock
            return
        with contextlib.suppress(OSError):
            os.unlink(aside)
        logger.warning("removed a stale journal lock %s (%s)", self.path, why)

    def release(self) -> None:
        """Release the lock if this object holds it (a lock taken over meanwhile is kept)."""
        held, self._held = self._held, None
        if held is None:
            return
        aside = self._take_aside()
        if aside is None:
            logger.warning("journal lock %s was removed while held", self.path)
            return
        try:
            target = os.readlink(aside)
        except OSError:
            target = ""
        if target == held:
            with contextlib.suppress(OSError):
                os.unlink(aside)
        else:
            self._put_back(aside)
            logger.warning("journal lock %s was taken over while held", self.path)


def repair_journal(path: str | os.PathLike[str], lock: JournalLock) -> int:
    """Cut a torn last record (no final newline) left by a driver killed mid-append.

    Only a tail that begins like a record (``{"op_code":``, or a prefix of it) is cut:
    any other unterminated last line is some other file's text, left as it is for
    :func:`check_records` to refuse. Call :func:`check_records` with
    ``skip_torn_tail=True`` first, so a file that is not a journal is never changed.

    Args:
        path: The journal file.
        lock: Its lock (held while the file is checked and cut).

    Returns:
        Bytes removed (0 when the journal ends cleanly or its tail is not a record's).
    """
    path = Path(path)
    if not _torn(path):
        return 0
    lock.acquire()
    try:
        if not _torn(path):
            return 0
        with open(path, "r+b") as f:
            size = f.seek(0, os.SEEK_END)
            end = size
            block = 1 << 16
            keep = 0
            while end > 0:
                start = max(0, end - block)
                f.seek(start)
                chunk = f.read(end - start)
                newline = chunk.rfind(b"\n")
                if newline >= 0:
                    keep = start + newline + 1
                    break
                end = start
            f.seek(keep)
            head = f.read(len(_RECORD_START))
            if head != _RECORD_START[: len(head)]:
                return 0  # not the beginning of a record Optuna writes: not ours to cut
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        removed = size - keep
        logger.warning(
            "journal %s ended in a torn record (a driver killed mid-append); removed its "
            "last %d byte(s)",
            path,
            removed,
        )
        return removed
    finally:
        lock.release()


def _torn(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            if f.seek(0, os.SEEK_END) == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except FileNotFoundError:
        return False


def check_last_record(path: str | os.PathLike[str], block: int = 1 << 16) -> None:
    """Raise ValueError when the journal's last complete line is not a JSON object.

    Optuna skips a bad *last* line when reading (it may be an append in progress) but fails
    on every read once anything is appended after it, so a file that is not a journal is
    named now instead.

    Args:
        path: The journal file (after :func:`repair_journal`).
        block: Bytes read from the end.

    Raises:
        ValueError: The last record does not parse.
    """
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            f.seek(max(0, size - block))
            tail = f.read()
    except FileNotFoundError:
        return  # a new journal
    lines = tail.rstrip(b"\n").rsplit(b"\n", 1)
    last = lines[-1]
    if len(lines) == 1 and size > block:
        return  # a record longer than the block: leave it to Optuna
    try:
        record = json.loads(last)
    except ValueError as exc:
        raise ValueError(f"its last record is not JSON ({exc})") from exc
    if not isinstance(record, dict) or "op_code" not in record:
        raise ValueError("its last record is not an Optuna journal operation")


def _operation_codes() -> frozenset[int]:
    from optuna.storages.journal._storage import JournalOperation

    return frozenset(int(op) for op in JournalOperation)


#: Fields Optuna's journal writer puts in every record of an operation and its replay reads
#: unconditionally (``optuna/storages/journal/_storage.py``, ``_write_log`` and
#: ``_apply_*``): a record without one stops the replay with a bare ``KeyError``. Keyed by
#: ``JournalOperation`` member name; an operation not listed (``DISCARD_TRIALS``) is skipped
#: by the replay.
_REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "CREATE_STUDY": ("worker_id", "study_name", "directions"),
    "DELETE_STUDY": ("worker_id", "study_id"),
    "SET_STUDY_USER_ATTR": ("worker_id", "study_id", "user_attr"),
    "SET_STUDY_SYSTEM_ATTR": ("worker_id", "study_id", "system_attr"),
    "CREATE_TRIAL": ("worker_id", "study_id", "datetime_start"),
    "SET_TRIAL_PARAM": (
        "worker_id",
        "trial_id",
        "param_name",
        "param_value_internal",
        "distribution",
    ),
    "SET_TRIAL_STATE_VALUES": ("worker_id", "trial_id", "state", "values"),
    "SET_TRIAL_INTERMEDIATE_VALUE": ("worker_id", "trial_id", "step", "intermediate_value"),
    "SET_TRIAL_USER_ATTR": ("worker_id", "trial_id", "user_attr"),
    "SET_TRIAL_SYSTEM_ATTR": ("worker_id", "trial_id", "system_attr"),
}


def _required_fields() -> dict[int, tuple[str, ...]]:
    from optuna.storages.journal._storage import JournalOperation

    return {int(op): _REQUIRED_FIELDS.get(op.name, ()) for op in JournalOperation}


def check_records(path: str | os.PathLike[str], *, skip_torn_tail: bool = False) -> None:
    """Raise ValueError naming the first line that is not an Optuna journal operation.

    Every line must be a JSON object whose ``op_code`` is one of Optuna's
    ``JournalOperation`` codes, with the fields that operation's replay reads: Optuna
    replays the whole file on every read and stops on any other line with an
    ``AssertionError`` (``Should not reach.``) or a ``KeyError`` that names no line. Run
    after :func:`repair_journal` (a torn last record is cut there, not refused here).

    Args:
        path: The journal file (a missing one is a new journal: nothing to check).
        skip_torn_tail: Leave out a last line without its newline (a torn append, which
            :func:`repair_journal` then cuts): the check before any repair.

    Raises:
        ValueError: ``line N: <why>``, N counted from 1.
    """
    codes = _operation_codes()
    required = _required_fields()
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below; FileNotFoundError is no error
    except FileNotFoundError:
        return
    with f:
        for number, line in enumerate(f, start=1):
            if skip_torn_tail and not line.endswith(b"\n"):
                break
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"line {number} is not JSON ({exc})") from exc
            code = record.get("op_code") if isinstance(record, dict) else None
            if isinstance(code, bool) or not isinstance(code, int) or code not in codes:
                shown = line.decode("utf-8", "replace").strip()
                shown = shown if len(shown) <= 60 else shown[:57] + "..."
                raise ValueError(
                    f"line {number} is not an Optuna journal operation (a JSON object with "
                    f"an integer op_code in 0..{max(codes)}): {shown}"
                )
            missing = [k for k in required[code] if k not in record]
            if missing:
                raise ValueError(
                    f"line {number} is an Optuna journal operation (op_code {code}) without "
                    f"its field(s) {', '.join(missing)}"
                )
