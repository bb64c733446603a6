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
