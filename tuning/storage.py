"""Where a study lives: the journal file (default) or an SQLAlchemy database, and its lock.

:func:`make_storage` opens either

* an Optuna journal file (:class:`optuna.storages.journal.JournalFileBackend`), the default
  ``OUT/study.journal``, or any path ending in ``.journal`` / ``.log`` (or prefixed
  ``journal:``), relative to the working directory or absolute; its folder is created; or
* an SQLAlchemy URL (``sqlite:///study.db``, ``postgresql://...``), opened as an
  :class:`optuna.storages.RDBStorage` with heartbeats; for SQLite the database's folder is
  created like a journal's.

A problem with the path or the database (a file where a folder belongs, no permission, a
file that is not a journal, a missing driver) is a :class:`ConfigError` naming the storage
and the cause, never a traceback; passwords in URLs are never printed.

Surviving a kill at any moment (the journal case; an RDB is transactional):

* **The lock** (:class:`JournalLock`). Appends are serialised by a lock symlink next to the
  journal, ``study.journal.lock``, created atomically with ``symlink(2)``. Its *target is
  not a path*: it is the holder's stamp (host, pid, process start time, a random token), so
  a lock left by a killed driver is recognised at once when its driver is gone from this
  host (the pid is not running, or was reused by a process started later) and removed. A
  lock whose holder cannot be checked (another host, or a lock written by another program)
  is removed when it has not changed for :data:`JOURNAL_LOCK_GRACE` seconds; an append
  holds it for milliseconds. Waiting sleeps between attempts (never a busy loop), and a
  holder releases only a lock that still carries its own token. Optuna's own
  ``JournalFileSymlinkLock`` points the link at the journal path as given, so a relative
  path made a dangling link that ``stat`` could not follow and the waiter spun forever.
* **A torn append.** A driver killed in the middle of an append can leave a last line
  without its newline. Optuna skips such a line when reading, but the next append would be
  glued to it and the journal would become unreadable. :func:`make_storage` therefore
  cuts a torn tail (under the lock) before opening the journal, with a warning.

**Several drivers on one storage** (:func:`trial_slot_lock`). ``--trials`` caps the
study's evaluated trials, not each driver's: a driver counts the study's evaluated
trials plus the ones running for live drivers and asks a new one only while that total is
below ``--trials``. The count and the ask happen under a second lock next to the file
(``study.journal.trials.lock``, or ``<database>.trials.lock`` for SQLite), so two drivers
never both take the last slot. A server database (PostgreSQL, MySQL) has no file to lock
next to: drivers on different hosts can then overshoot by at most one trial per extra
driver.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raysync.exceptions import ConfigError

if TYPE_CHECKING:
    import optuna

__all__ = [
    "JOURNAL_NAME",
    "create_or_load_study",
    "is_journal_url",
    "journal_path",
    "make_storage",
    "process_alive",
    "process_stamp",
    "redact_url",
    "storage_label",
    "trial_slot_lock",
]

logger = logging.getLogger(__name__)

#: File name of the default journal inside ``--out``.
JOURNAL_NAME = "study.journal"


# --------------------------------------------------------------------------- processes
def _start_time(pid: int) -> float | None:
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:  # noqa: BLE001 - psutil missing, or no such process
        return None


def process_stamp() -> dict[str, Any]:
    """``{"host", "pid", "created"}`` of this process (``created``: start time, s)."""
    stamp: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
    created = _start_time(os.getpid())
    if created is not None:
        stamp["created"] = created
    return stamp


def process_alive(stamp: Any) -> bool | None:
    """Whether the process a stamp names is running.

    Args:
        stamp: A mapping from :func:`process_stamp` (anything else is unknown).

    Returns:
        True or False for a process of this host; None when it cannot be told (another
        host, or no stamp).
    """
    if not isinstance(stamp, dict) or stamp.get("host") != socket.gethostname():
        return None
    try:
        pid = int(stamp.get("pid", -1))
    except (TypeError, ValueError):
        return None
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    try:
        import psutil
    except ImportError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        proc = psutil.Process(pid)
        created = stamp.get("created")
        if created is not None and abs(proc.create_time() - float(created)) > 1.0:
            return False  # the pid was reused by a later process
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except Exception:  # noqa: BLE001 - AccessDenied and friends: it exists
        return True


# --------------------------------------------------------------------------- journal
def is_journal_url(url: str | None) -> bool:
    """Whether a ``--storage`` value names a journal file (None: the default journal)."""
    return url is None or url.endswith((".journal", ".log")) or url.startswith("journal:")


def journal_path(url: str | None, out: str | os.PathLike[str]) -> Path:
    """The journal file a ``--storage`` value names (``out/study.journal`` for None)."""
    if url is None:
        return Path(out) / JOURNAL_NAME
    return Path(url.removeprefix("journal://").removeprefix("journal:"))


def _open_journal(path: Path) -> Any:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    where = f"storage {str(path)!r}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise ConfigError(
            f"{where}: cannot create its folder {str(path.parent)!r}: a file is in the way"
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"{where}: cannot create its folder {str(path.parent)!r} ({_why(exc)})"
        ) from exc
    if path.is_dir():
        raise ConfigError(f"{where} is a directory; a journal storage must be a file")
    from tuning.journal import JournalLock, check_records, repair_journal

    lock = JournalLock(path)
    try:
        # Checked before the repair too: a file that is not a journal is refused unchanged.
        check_records(path, skip_torn_tail=True)
        repair_journal(path, lock)
        check_records(path)  # every line, named by number (Optuna's replay names none)
        storage = JournalStorage(JournalFileBackend(str(path), lock_obj=lock))
        storage.get_all_studies()  # read it now: a bad file is named here, not later
        return storage
    except OSError as exc:
        raise ConfigError(f"{where}: cannot open the journal ({_why(exc)})") from exc
    except (ValueError, KeyError, TypeError, AttributeError, AssertionError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{where} is not a readable Optuna journal ({first})") from exc


def _why(exc: OSError) -> str:
    return exc.strerror or errno.errorcode.get(exc.errno or 0, "") or str(exc)


# --------------------------------------------------------------------------- RDB
def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for messages and reports)."""
    if "://" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return str(make_url(url).render_as_string(hide_password=True))
    except Exception:  # noqa: BLE001 - not an SQLAlchemy URL: hide what looks like one
        scheme, rest = url.split("://", 1)
        if "@" in rest:
            creds, host = rest.rsplit("@", 1)
            user = creds.split(":", 1)[0]
            return f"{scheme}://{user}:***@{host}"
        return url


def _sqlite_file(url: str) -> Path | None:
    """The database file of an ``sqlite:///`` URL (None: another database or in memory)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)  # sqlalchemy.exc.ArgumentError for a malformed URL
    database = parsed.database
    if not parsed.drivername.startswith("sqlite") or not database or database == ":memory:":
        return None
    return None if database.startswith("file:") else Path(database)


def _prepare_sqlite(url: str) -> None:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.drivername.startswith("sqlite") and (
        database in ("", ":memory:") or "mode=memory" in database
    ):
        # Each connection would get its own empty database: nothing would be kept, and a
        # second driver or a rerun could not resume the study.
        raise ConfigError(
            f"storage {redact_url(url)!r} is an in-memory SQLite database: the study would "
            "be lost when the command exits; name a file (sqlite:///study.db)"
        )
    path = _sqlite_file(url)
    if path is None:
        return  # another database, in memory, or an SQLite URI (the driver's business)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise ConfigError(
            f"storage {redact_url(url)!r}: cannot create the database folder "
            f"{str(path.parent)!r}: a file is in the way"
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"storage {redact_url(url)!r}: cannot create the database folder "
            f"{str(path.parent)!r} ({_why(exc)})"
        ) from exc
    if path.is_dir():
        raise ConfigError(
            f"storage {redact_url(url)!r}: {str(path)!r} is a directory, not a database file"
        )


def _open_rdb(url: str, heartbeat_interval: int) -> Any:
    import optuna
    import sqlalchemy.exc

    shown = redact_url(url)
    if (
        isinstance(heartbeat_interval, bool)
        or not isinstance(heartbeat_interval, int)
        or (heartbeat_interval < 1)
    ):
        raise ConfigError(f"heartbeat_interval must be an integer >= 1, got {heartbeat_interval!r}")
    try:
        _prepare_sqlite(url)
    except sqlalchemy.exc.ArgumentError as exc:
        raise ConfigError(f"storage {shown!r} is not a valid SQLAlchemy URL ({exc})") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=heartbeat_interval, grace_period=4 * heartbeat_interval
            )
    except ImportError as exc:
        raise ConfigError(
            f"storage {url.split('://')[0]}:// needs its database driver: {exc} "
            "(e.g. pip install psycopg2-binary for postgresql://)"
        ) from exc
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, OSError) as exc:
        cause = getattr(exc, "orig", None) or exc
        first = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        raise ConfigError(f"storage {shown!r} cannot be opened: {first}") from exc


# --------------------------------------------------------------------------- entry points
def make_storage(
    url: str | None, out: str | os.PathLike[str], *, heartbeat_interval: int = 30
) -> Any:
    """Build the Optuna storage for a ``--storage`` value.

    Args:
        url: None (embedded journal ``out/study.journal``), a path ending in ``.journal``
            or ``.log`` or prefixed ``journal:`` (a journal file there, relative to the
            working directory or absolute), or an SQLAlchemy URL (``sqlite:///...``,
            ``postgresql://user:pw@host/db``, ``mysql://...``), opened as an
            :class:`optuna.storages.RDBStorage` with heartbeats.
        out: Output directory (for the default journal).
        heartbeat_interval: Seconds between heartbeats (RDB); the grace period is four
            intervals.

    Returns:
        The storage object (a journal file's has a :class:`JournalLock`).

    Raises:
        ConfigError: The URL is malformed, the folder cannot be created, the file is a
            directory or not a journal, the database cannot be opened, or its driver is
            missing.
    """
    if is_journal_url(url):
        return _open_journal(journal_path(url, out))
    assert url is not None
    if "://" not in url:
        raise ConfigError(
            f"storage must be an SQLAlchemy URL (sqlite:///study.db, postgresql://...) or a "
            f"path ending in .journal, got {url!r}"
        )
    return _open_rdb(url, heartbeat_interval)


@contextlib.contextmanager
def trial_slot_lock(url: str | None, out: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the lock under which a driver counts the study's trials and asks a new one.

    A lock symlink next to the journal or SQLite file (module docstring), taken like the
    journal's own lock (a dead holder's lock is removed at once); for a server database,
    no lock.

    Args:
        url: The ``--storage`` value (None: the default journal in ``out``).
        out: Output directory (for the default journal).
    """
    if is_journal_url(url):
        path: Path | None = journal_path(url, out)
    else:
        path = _sqlite_file(str(url))
    if path is None:
        yield
        return
    from tuning.journal import JournalLock

    lock = JournalLock(f"{path}.trials")
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def storage_label(url: str | None, out: str | os.PathLike[str]) -> str:
    """A printable name for a storage: the journal path, or the URL without its password."""
    if is_journal_url(url):
        return str(journal_path(url, out))
    assert url is not None
    return redact_url(url)


def create_or_load_study(
    *,
    storage: Any,
    study_name: str,
    directions: Sequence[str],
    metric_names: Sequence[str],
    seed: int = 0,
    pruner: str = "median",
    n_startup_trials: int = 10,
    pruner_startup: int = 4,
) -> optuna.Study:
    """Create the study, or load it (``load_if_exists=True``) with a fresh sampler.

    Args:
        storage: Storage object or URL.
        study_name: Name.
        directions: ``minimize`` / ``maximize`` per value.
        metric_names: Value names.
        seed: TPE sampler seed.
        pruner: ``median`` or ``none``; multi-objective studies never prune.
        n_startup_trials: Random trials before TPE starts modelling.
        pruner_startup: Trials finished before the median pruner acts.

    Returns:
        The study.

    Raises:
        ConfigError: An existing study with the same name has other directions.
    """
    import optuna

    from tuning.settings import sampler_seed

    sampler = optuna.samplers.TPESampler(
        seed=sampler_seed(seed), n_startup_trials=n_startup_trials
    )
    multi = len(directions) > 1
    chosen: optuna.pruners.BasePruner
    if pruner == "median" and not multi:
        chosen = optuna.pruners.MedianPruner(n_startup_trials=pruner_startup, n_warmup_steps=1)
    else:
        chosen = optuna.pruners.NopPruner()
    wanted = [optuna.study.StudyDirection[d.upper()] for d in directions]
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=study_name,
            sampler=sampler,
            pruner=chosen,
            directions=wanted,
            load_if_exists=True,
        )
    except ValueError as exc:  # Optuna: directions of an existing study differ
        raise ConfigError(f"study {study_name!r}: {str(exc).splitlines()[0]}") from exc
    from tuning.recovery import made_by_tune

    # Checked before anything is written to the study (metric names below, warm starts
    # later): a study another program made is refused unchanged.
    if not made_by_tune(study):
        raise ConfigError(
            f"study {study_name!r} in this storage was not created by raysync tune (its "
            f"{len(study.get_trials(deepcopy=False))} trials carry no raysync problem "
            "record) and is left unchanged; choose another --study name"
        )
    if list(study.directions) != wanted:
        stored = list(study.metric_names or [])
        metrics = (
            f" (it records {stored}, this run {list(metric_names)}: another --objective "
            "or --multi-objective)" if stored and stored != list(metric_names) else ""
        )
        raise ConfigError(
            f"study {study_name!r} exists with directions "
            f"{[d.name.lower() for d in study.directions]}, not {list(directions)}{metrics}; "
            "resume it with the flags it was created with, or choose another --study name"
        )
    if not study.metric_names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(metric_names))
    return study
