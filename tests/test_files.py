"""``raysync._files.atomic_write``: the old file or the new one, never half, never a stray."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from raysync._files import atomic_write


def _strays(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_writes_text_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    target.write_text("old")
    with atomic_write(target) as handle:
        handle.write("new ü")
        assert target.read_text() == "old"  # not replaced before the block ends
    assert target.read_text(encoding="utf-8") == "new ü"
    assert _strays(tmp_path) == []


def test_binary_with_fsync(tmp_path: Path) -> None:
    target = tmp_path / "b.bin"
    with atomic_write(target, binary=True, fsync=True) as handle:
        handle.write(bytes(range(256)))
    assert target.read_bytes() == bytes(range(256))
    assert _strays(tmp_path) == []


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path,
                                                               error: type) -> None:
    target = tmp_path / "c.toml"
    target.write_text("old")
    with pytest.raises(error), atomic_write(target) as handle:
        handle.write("half")
        raise error("killed")
    assert target.read_text() == "old"
    assert _strays(tmp_path) == []


def test_a_missing_folder_is_an_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError), atomic_write(tmp_path / "nope" / "d.txt"):
        pass


def test_concurrent_writers_each_get_their_own_temporary(tmp_path: Path) -> None:
    """Eight threads replace one file at once: none fails, and the file is one whole payload
    (a shared temporary name made the second ``os.replace`` fail, tuning/study.py's bug)."""
    target = tmp_path / "study.json"
    payloads = [str(k) * 100_000 for k in range(8)]
    barrier = threading.Barrier(len(payloads))
    errors: list[BaseException] = []

    def write(text: str) -> None:
        try:
            with atomic_write(target) as handle:
                barrier.wait()
                handle.write(text)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert target.read_text() in payloads
    assert _strays(tmp_path) == []


def test_a_new_file_gets_the_umask_mode_and_an_old_file_keeps_its_own(tmp_path: Path) -> None:
    """``mkstemp`` makes 0o600 files; the written file has the mode a plain write gives."""
    import os
    import stat

    old_mask = os.umask(0o027)
    try:
        fresh = tmp_path / "new.toml"
        with atomic_write(fresh) as handle:
            handle.write("x")
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o640
        kept = tmp_path / "old.toml"
        kept.write_text("old")
        kept.chmod(0o604)
        with atomic_write(kept) as handle:
            handle.write("new")
        assert stat.S_IMODE(kept.stat().st_mode) == 0o604
    finally:
        os.umask(old_mask)
