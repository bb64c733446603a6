from __future__ import annotations

import dataclasses
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from raysync.data import (
    load_dataset,
    load_digits_dataset,
    load_directory,
    read_idx,
    stratified_split,
)
from raysync.exceptions import ConfigError, DataError

# --------------------------------------------------------------------------- digits


def test_digits_shapes_and_split() -> None:
    d = load_digits_dataset(seed=0)
    assert d.name == "digits" and d.num_classes == 10 and d.image_shape == (1, 8, 8)
    assert d.in_features == 64
    assert d.num_train + d.num_val + d.num_test == 1797
    for x, y in ((d.x_train, d.y_train), (d.x_val, d.y_val), (d.x_test, d.y_test)):
        assert x.dtype == np.float32 and x.shape[1] == 64
        assert y.dtype == np.int64 and y.shape == (x.shape[0],)
        assert 0.0 <= x.min() and x.max() <= 1.0
    assert d.x_train.max() == 1.0  # 16/16
    # Fractions hold per class (rounded): ~20% test, ~10% validation.
    assert abs(d.num_test - 0.2 * 1797) <= 10 and abs(d.num_val - 0.1 * 1797) <= 10
    all_counts = np.bincount(np.concatenate([d.y_train, d.y_val, d.y_test]))
    assert all_counts.sum() == 1797
    test_share = np.bincount(d.y_test, minlength=10) / all_counts
    assert np.all(np.abs(test_share - 0.2) < 0.01)


def test_digits_split_disjoint_and_seeded() -> None:
    from sklearn.datasets import load_digits

    raw = load_digits().data.astype(np.float32) / 16
    a, b, c = load_digits_dataset(seed=1), load_digits_dataset(seed=1), load_digits_dataset(seed=2)
    assert np.array_equal(a.x_test, b.x_test) and np.array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.x_test, c.x_test)
    # Every image appears exactly once across the three splits.
    rows = np.concatenate([a.x_train, a.x_val, a.x_test])
    order = np.lexsort(rows.T[::-1])
    ref = np.lexsort(raw.T[::-1])
    assert np.array_equal(rows[order], raw[ref])


def test_digits_no_validation_and_bad_fraction() -> None:
    d = load_digits_dataset(val_fraction=0.0)
    assert d.num_val == 0 and d.x_val.shape == (0, 64)
    with pytest.raises(ConfigError, match="test_fraction"):
        load_digits_dataset(test_fraction=1.0)
    with pytest.raises(ConfigError, match="sum to < 1"):
        load_digits_dataset(test_fraction=0.6, val_fraction=0.5)


def test_dataset_is_frozen_and_checked() -> None:
    d = load_digits_dataset()
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.name = "x"  # type: ignore[misc]
    with pytest.raises(DataError, match="labels must lie in"):
        dataclasses.replace(d, num_classes=5)
    with pytest.raises(DataError, match="features"):
        dataclasses.replace(d, image_shape=(1, 4, 4))
    with pytest.raises(DataError, match="float32"):
        dataclasses.replace(d, x_test=d.x_test.astype(np.float64))
    merged = d.merge_validation()
    assert merged.num_train == d.num_train + d.num_val and merged.num_val == 0
    assert "digits" in repr(d)


def test_stratified_split_covers() -> None:
    y = np.repeat(np.arange(3), [10, 20, 30])
    rest, a, b = stratified_split(y, [0.2, 0.1], seed=0)
    assert np.array_equal(np.sort(np.concatenate([rest, a, b])), np.arange(60))
    assert np.array_equal(np.bincount(y[a]), [2, 4, 6])
    assert np.array_equal(np.bincount(y[b]), [1, 2, 3])


# --------------------------------------------------------------------------- IDX / npz

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}


def write_idx(path: Path, arr: np.ndarray, *, gz: bool = False) -> Path:
    header = struct.pack(">BBBB", 0, 0, IDX_CODES[arr.dtype], arr.ndim)
    header += struct.pack(f">{arr.ndim}I", *arr.shape)
    payload = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def make_images(n: int, seed: int, side: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, side, side), dtype=np.uint8)
    y = rng.integers(0, 10, size=n).astype(np.uint8)
    y[:10] = np.arange(10)  # every class present
    return x, y


def write_mnist_dir(folder: Path, *, gz: bool) -> tuple[np.ndarray, ...]:
    xtr, ytr = make_images(40, 0)
    xte, yte = make_images(12, 1)
    write_idx(folder / "train-images-idx3-ubyte", xtr, gz=gz)
    write_idx(folder / "train-labels-idx1-ubyte", ytr, gz=gz)
    write_idx(folder / "t10k-images-idx3-ubyte", xte, gz=gz)
    write_idx(folder / "t10k-labels-idx1-ubyte", yte, gz=gz)
    return xtr, ytr, xte, yte


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_directory(tmp_path: Path, gz: bool) -> None:
    xtr, ytr, xte, yte = write_mnist_dir(tmp_path, gz=gz)
    d = load_directory(tmp_path)
    assert d.image_shape == (1, 6, 6) and d.num_classes == 10
    assert d.x_train.shape == (40, 36) and d.x_train.dtype == np.float32
    assert d.y_train.dtype == np.int64
    np.testing.assert_allclose(d.x_train, xtr.reshape(40, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(d.y_test, yte)
    assert d.num_val == 0 and d.name == tmp_path.name
    split = load_directory(tmp_path, val_fraction=0.25, seed=0)
    assert split.num_val > 0 and split.num_train + split.num_val == 40
    assert load_dataset("directory", path=tmp_path).num_test == 12


def test_read_idx_roundtrip_dtypes(tmp_path: Path) -> None:
    for arr in (
        np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 5,
        np.linspace(0, 1, 6, dtype=np.float32).reshape(3, 2),
    ):
        back = read_idx(write_idx(tmp_path / "a.idx", arr))
        assert back.dtype == arr.dtype.newbyteorder("=")
        np.testing.assert_array_equal(back, arr)


def test_idx_errors(tmp_path: Path) -> None:
    write_mnist_dir(tmp_path, gz=False)
    bad = tmp_path / "train-labels-idx1-ubyte"
    raw = bad.read_bytes()
    bad.write_bytes(b"\x08\x03" + raw[2:])
    with pytest.raises(DataError, match="bad IDX magic"):
        load_directory(tmp_path)
    bad.write_bytes(raw[:-3])
    with pytest.raises(DataError, match="data bytes"):
        load_directory(tmp_path)
    # Label count differs from image count.
    write_idx(bad, np.zeros(39, dtype=np.uint8))
    with pytest.raises(DataError, match="40 images but y_train has 39 labels"):
        load_directory(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        load_directory(tmp_path)
    with pytest.raises(DataError, match=r"dataset path '.*nope' does not exist \(looked for "
                       r"'.*nope'; data.path in a config\)"):
        load_directory(tmp_path / "nope")
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "nope")


def test_load_npz(tmp_path: Path) -> None:
    xtr, ytr = make_images(30, 0, side=4)
    xte, yte = make_images(10, 1, side=4)
    np.savez(tmp_path / "mine.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    d = load_directory(tmp_path / "mine.npz")
    assert d.name == "mine" and d.image_shape == (1, 4, 4) and d.num_val == 0
    np.testing.assert_allclose(d.x_test, xte.reshape(10, -1) / 255.0, rtol=1e-6)
    # A folder holding one npz works too; float pixels in [0, 1] are kept as they are.
    sub = tmp_path / "flat"
    sub.mkdir()
    xf = (xtr.reshape(30, -1) / 255.0).astype(np.float64)
    np.savez(
        sub / "data.npz",
        x_train=xf,
        y_train=ytr,
        x_test=xf[:5],
        y_test=ytr[:5],
        x_val=xf[5:8],
        y_val=ytr[5:8],
    )
    flat = load_directory(sub)
    assert flat.image_shape == (1, 4, 4) and flat.num_val == 3
    np.testing.assert_allclose(flat.x_train, xf, rtol=1e-6)


@pytest.mark.parametrize(
    ("x", "words"),
    [
        (np.full((30, 16), 2.5), "x_train: float pixels must lie in [0, 1] (scale them first), "
                                 "got range [2.5, 2.5]"),
        (np.full((30, 16), np.nan), "x_train: float pixels must be finite, got 480 NaN or "
                                    "infinite value(s)"),
    ],
)
def test_float_pixels_out_of_range_name_the_file(tmp_path: Path, x, words: str) -> None:  # noqa: ANN001
    _, ytr = make_images(30, 0, side=4)
    path = tmp_path / "tabular.npz"
    np.savez(path, x_train=x, y_train=ytr, x_test=x[:5], y_test=ytr[:5])
    with pytest.raises(DataError) as info:
        load_directory(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and words in text and "\n" not in text
    assert "needs a [data] factory" in text


def test_npz_errors(tmp_path: Path) -> None:
    xtr, ytr = make_images(30, 0, side=4)
    np.savez(tmp_path / "a.npz", x_train=xtr, y_train=ytr)
    with pytest.raises(DataError, match="missing arrays"):
        load_directory(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", x_train=xtr * 2.0, y_train=ytr, x_test=xtr, y_test=ytr)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        load_directory(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", x_train=xtr, y_train=ytr[:-1], x_test=xtr, y_test=ytr)
    with pytest.raises(DataError, match="30 images but y_train has 29"):
        load_directory(tmp_path / "c.npz")
    np.savez(tmp_path / "d.npz", x_train=xtr, y_train=ytr, x_test=xtr, y_test=ytr, x_val=xtr)
    with pytest.raises(DataError, match="together"):
        load_directory(tmp_path / "d.npz")
    (tmp_path / "e.txt").write_text("x")
    with pytest.raises(DataError, match="npz"):
        load_directory(tmp_path / "e.txt")
    with pytest.raises(DataError, match="several .npz"):
        load_directory(tmp_path)


def test_load_dataset_dispatch() -> None:
    d = load_dataset("digits", seed=0, val_fraction=0.0)
    assert d.name == "digits" and d.num_val == 0
    with pytest.raises(ConfigError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")
    with pytest.raises(ConfigError, match="path"):
        load_dataset("directory")
    with pytest.raises(ConfigError, match="bad arguments"):
        load_dataset("digits", bogus=1)
