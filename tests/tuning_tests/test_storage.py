"""Storages survive kills: stale locks, torn appends, relative paths, missing folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import optuna
import pytest

from raysync.cli import main
from raysync.exceptions import ConfigError
from tuning.journal import JournalLock, repair_journal
from tuning.storage import make_storage, redact_url, storage_label

from .conftest import CONSTANTS

optuna.logging.set_verbosity(optuna.logging.WARNING)

C_TEXT = f"{CONSTANTS.L},{CONSTANTS.sigma2},{CONSTANTS.M2},{CONSTANTS.A}"

# A driver that dies while it holds the journal lock (as a kill -9 mid-append would).
DIE_HOLDING_LOCK = (
    "import os, sys\n"
    "from tuning.storage import make_storage\n"
    "make_storage(None, sys.argv[1])._backend._lock.acquire()\n"
    "os._exit(9)\n"
)


def _bound_args(tiny_path, out: str, trials: int, *extra: str) -> list[str]:
    return [
        "tune", str(tiny_path), "--objective", "bound", "--budget", "60", "--trials",
        str(trials), "--study", "L", "--out", out, "--no-plots", "--no-progress",
        "--no-tensorboard", "--constants", C_TEXT, *extra,
    ]  # fmt: skip


def _run_cli(args: list[str], cwd) -> subprocess.CompletedProcess[str]:
    # A subprocess with a generous limit: a regression (a spin on the lock) fails the test
    # instead of hanging the suite; the limit is not a speed requirement.
    code = "import sys\nfrom raysync.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_rerun_after_a_driver_died_holding_the_lock_relative_out(tiny_path, tmp_path) -> None:
    assert _run_cli(_bound_args(tiny_path, "tune_e", 20), tmp_path).returncode == 0
    died = subprocess.run(
        [sys.executable, "-c", DIE_HOLDING_LOCK, "tune_e"], cwd=tmp_path, timeout=600
    )
    assert died.returncode == 9
    lock = tmp_path / "tune_e" / "study.journal.lock"
    assert lock.is_symlink()
    rerun = _run_cli(_bound_args(tiny_path, "tune_e", 40), tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "removed a stale journal lock" in rerun.stderr and "its driver is gone" in rerun.stderr
    assert not os.path.lexists(lock)
    report = json.loads((tmp_path / "tune_e" / "study.json").read_text())
    assert report["evaluated"] == 40 and report["counts"] == {"COMPLETE": 40}


def test_lock_of_a_live_holder_is_waited_for(tmp_path) -> None:
    journal = tmp_path / "study.journal"
    first, second = JournalLock(journal), JournalLock(journal)
    first.acquire()
    got = threading.Event()

    def take() -> None:
        second.acquire()
        got.set()

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    # The holder is this (live) process: the waiter must not take the lock while it is held.
    assert not got.wait(0.3)
    first.release()
    assert got.wait(120)
    thread.join(120)
    second.release()
    assert not os.path.lexists(str(journal) + ".lock")


def test_a_lock_of_an_unknown_holder_is_removed_after_the_grace_period(tmp_path) -> None:
    journal = tmp_path / "study.journal"
    journal.touch()
    # Optuna's own lock with a relative target: a dangling link seen from inside the folder.
    os.symlink("tune_e/study.journal", str(journal) + ".lock")
    lock = JournalLock(journal, grace_period=0.2)
    assert lock.acquire() is True
    target = os.readlink(str(journal) + ".lock")
    assert json.loads(target)["pid"] == os.getpid()
    lock.release()
    assert not os.path.lexists(str(journal) + ".lock")


def test_release_keeps_a_lock_taken_over_by_someone_else(tmp_path) -> None:
    journal = tmp_path / "study.journal"
    lock = JournalLock(journal)
    lock.acquire()
    os.unlink(str(journal) + ".lock")
    os.symlink("someone else", str(journal) + ".lock")
    lock.release()  # not ours any more: left in place
    assert os.readlink(str(journal) + ".lock") == "someone else"


def test_torn_append_is_cut_and_the_study_stays_readable(tmp_path) -> None:
    storage = make_storage(None, tmp_path)
    study = optuna.create_study(study_name="s", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    journal = tmp_path / "study.journal"
    size = journal.stat().st_size
    with open(journal, "ab") as f:
        f.write(b'{"op_code": 5, "trial_id": 1, "par')  # a kill in the middle of a write
    storage = make_storage(None, tmp_path)
    assert journal.stat().st_size == size
    study = optuna.load_study(study_name="s", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    reread = optuna.load_study(study_name="s", storage=make_storage(None, tmp_path))
    assert len(reread.trials) == 5
    assert repair_journal(journal, JournalLock(journal)) == 0  # clean: nothing to cut


@pytest.mark.parametrize(
    "text",
    [
        b"only one line, no newline",  # no complete line: the tail is not a record
        b"my important notes line1\nline2 no newline",  # a complete line that is not one
        b'{"a": 1}',  # JSON, but not the start of an Optuna record
    ],
)
def test_a_file_that_is_not_a_journal_is_refused_unchanged(tmp_path, text: bytes) -> None:
    notes = tmp_path / "notes.journal"
    notes.write_bytes(text)
    with pytest.raises(ConfigError, match=r"notes.journal' is not a readable Optuna journal"):
        make_storage(str(notes), tmp_path)
    assert notes.read_bytes() == text


def test_a_torn_first_record_is_cut(tmp_path) -> None:
    journal = tmp_path / "study.journal"
    journal.write_bytes(b'{"op_')  # killed while writing the study's first record
    optuna.create_study(study_name="s", storage=make_storage(str(journal), tmp_path))
    assert journal.read_bytes().startswith(b'{"op_code":0,')


def test_relative_journal_and_sqlite_paths_in_missing_folders(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    journal = make_storage("deep/er/x.journal", "unused")
    optuna.create_study(study_name="j", storage=journal).optimize(
        lambda t: t.suggest_float("x", 0, 1), n_trials=1
    )
    assert (tmp_path / "deep" / "er" / "x.journal").is_file()
    rdb = make_storage("sqlite:///missing/sub/x.db", "unused")
    optuna.create_study(study_name="r", storage=rdb)
    assert (tmp_path / "missing" / "sub" / "x.db").is_file()
    absolute = make_storage(f"sqlite:///{tmp_path}/abs/dir/y.db", "unused")
    optuna.create_study(study_name="a", storage=absolute)
    assert (tmp_path / "abs" / "dir" / "y.db").is_file()


@pytest.mark.parametrize(
    ("make", "url", "message"),
    [
        (lambda p: (p / "afile").touch(), "sqlite:///{p}/afile/sub/x.db", "a file is in the way"),
        (lambda p: (p / "adir.db").mkdir(), "sqlite:///{p}/adir.db", "is a directory"),
        (lambda p: (p / "afile").touch(), "{p}/afile/x.journal", "a file is in the way"),
        (lambda p: (p / "d.journal").mkdir(), "{p}/d.journal", "is a directory"),
        (lambda p: (p / "g.journal").write_text("garbage\n"), "{p}/g.journal", "not a readable"),
        (lambda p: (p / "b.journal").write_bytes(b"\xff\xfe\n"), "{p}/b.journal", "not a readable"),
        (lambda p: None, "nosuchscheme", "must be an SQLAlchemy URL"),
        (lambda p: None, "sqlite+nodriver:///x.db", "cannot be opened"),
    ],
)
def test_unusable_storages_are_one_line(tmp_path, make, url, message) -> None:
    make(tmp_path)
    with pytest.raises(ConfigError, match=message) as info:
        make_storage(url.format(p=tmp_path), tmp_path)
    assert "\n" not in str(info.value)


def test_sqlite_in_a_missing_folder_from_the_cli(tiny_path, tmp_path, capsys) -> None:
    url = f"sqlite:///{tmp_path}/missing/sub/x.db"
    code = main(_bound_args(tiny_path, str(tmp_path / "out"), 6, "--storage", url))
    assert code == 0
    assert (tmp_path / "missing" / "sub" / "x.db").is_file()
    capsys.readouterr()
    (tmp_path / "file").touch()
    code = main(_bound_args(tiny_path, str(tmp_path / "file"), 6))
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a file is in the way" in err[0]


def test_passwords_are_never_printed() -> None:
    url = "postgresql://user:s3cret@127.0.0.1:1/optuna"
    assert "s3cret" not in redact_url(url) and "user" in redact_url(url)
    assert "s3cret" not in storage_label(url, "out")
    with pytest.raises(ConfigError) as info:
        make_storage(url, "out")
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (b'{"op_code": "nan", "x": NaN}', "is not an Optuna journal operation"),
        (b'{"op_code": 99}', "is not an Optuna journal operation"),
        (b"[4]", "is not an Optuna journal operation"),
        (b"not json", "is not JSON"),
        # a valid op_code without the fields its replay reads: Optuna's bare KeyError
        (
            b'{"op_code": 5, "worker_id": "w", "trial_id": 0}',
            "is an Optuna journal operation (op_code 5) without its field(s) param_name, "
            "param_value_internal, distribution",
        ),
        (
            b'{"op_code": 0}',
            "is an Optuna journal operation (op_code 0) without its field(s) worker_id, "
            "study_name, directions",
        ),
    ],
)
def test_a_bad_line_inside_the_journal_is_named_by_number(
    tiny_path, tmp_path, capsys, bad: bytes, why: str
) -> None:
    """Optuna stops on such a line with 'AssertionError: Should not reach.' (rc 1); the
    CLI names the journal and the line instead, exit 2."""
    out = tmp_path / "out"
    assert main(_bound_args(tiny_path, str(out), 3)) == 0
    journal = out / "study.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    assert len(lines) > 4
    journal.write_bytes(b"".join([*lines[:3], bad + b"\n", *lines[3:]]))
    capsys.readouterr()
    assert main(_bound_args(tiny_path, str(out), 5)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert str(journal) in err[0] and f"line 4 {why}" in err[0], err[0]
