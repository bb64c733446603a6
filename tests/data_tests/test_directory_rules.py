"""load_directory applies the data factory's rules, and never opens a non-regular file.

A FIFO is refused by name before anything opens it: the tests make every ``open`` of the
FIFO fail at once, so a regression fails here instead of hanging on a read with no writer.
"""

from __future__ import annotations

import builtins
import io
import os
import struct
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from raysync.data import dataset_from_output, load_directory, read_idx
from raysync.exceptions import DataError


@pytest.fixture(autouse=True)
def warnings_are_errors() -> Iterator[None]:
    # numpy's RuntimeWarning (overflow in cast, invalid value) must never reach the user
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def _arrays(n: int = 30, side: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, side, side), dtype=np.uint8)
    y = (np.arange(n) % 3).astype(np.uint8)
    return {"x_train": x, "y_train": y, "x_test": x[:6], "y_test": y[:6]}


def _npz(folder: Path, name: str = "d.npz", **arrays: Any) -> Path:
    path = folder / name
    np.savez(path, **arrays)
    return path


def _idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


_IDX = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def _idx_folder(folder: Path, arrays: dict[str, np.ndarray]) -> Path:
    folder.mkdir(exist_ok=True)
    for key, stem in _IDX.items():
        _idx(folder / stem, arrays[key])
    return folder


def _refusal(path: Path, **kwargs: Any) -> str:
    with pytest.raises(DataError) as info:
        load_directory(path, **kwargs)
    text = str(info.value)
    assert "\n" not in text
    return text


# --------------------------------------------------------------------------- non-regular files


@pytest.fixture
def never_open(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], Path]:
    """Mark paths that no ``open`` may touch: opening one fails the test at once."""
    marked: set[str] = set()

    def guard(real: Callable[..., Any]) -> Callable[..., Any]:
        def opener(file: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(file, str | os.PathLike) and os.path.realpath(file) in marked:
                raise AssertionError(f"{file} was opened")
            return real(file, *args, **kwargs)

        return opener

    monkeypatch.setattr(builtins, "open", guard(builtins.open))
    monkeypatch.setattr(io, "open", guard(io.open))
    monkeypatch.setattr(os, "open", guard(os.open))

    def mark(path: Path) -> Path:
        marked.add(os.path.realpath(path))
        return path

    return mark


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def test_a_fifo_as_the_dataset_path_is_refused_unopened(
    tmp_path: Path, never_open: Callable[[Path], Path]
) -> None:
    fifo = never_open(_fifo(tmp_path / "data.npz"))
    text = _refusal(fifo)
    assert f"dataset path {str(fifo)!r} is not a regular file or a folder (it is a FIFO" in text


def test_a_fifo_in_the_folder_is_refused_unopened(
    tmp_path: Path, never_open: Callable[[Path], Path]
) -> None:
    never_open(_fifo(tmp_path / "x.npz"))
    assert _refusal(tmp_path) == (
        f"npz file {tmp_path / 'x.npz'} is not a regular file (it is a FIFO); datasets are "
        "read from regular files only"
    )
    idx = _idx_folder(tmp_path / "idx", _arrays())
    (idx / _IDX["x_train"]).unlink()
    fifo = never_open(_fifo(idx / _IDX["x_train"]))
    # found by name, not skipped as missing
    assert f"IDX file {fifo} is not a regular file (it is a FIFO)" in _refusal(idx)
    with pytest.raises(DataError, match="is not a regular file"):
        read_idx(fifo)


def test_folders_and_dangling_links_named_like_data(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.npz").mkdir()
    assert "x.npz is not a regular file (it is a folder)" in _refusal(tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.npz").symlink_to(tmp_path / "nowhere.npz")
    assert "x.npz is a symbolic link to a missing file" in _refusal(tmp_path / "b")


def test_a_file_swapped_after_its_check_is_refused_by_its_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # os.stat says "regular file" but the path is a folder by the time it is opened: the
    # descriptor's own fstat catches it (a FIFO would be opened non-blocking the same way)
    folder = tmp_path / "swapped.npz"
    folder.mkdir()
    regular = os.stat(_npz(tmp_path, "real.npz", **_arrays()))
    real_stat = os.stat

    def lying_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        return regular if os.fspath(path) == str(folder) else real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", lying_stat)
    assert "swapped.npz is not a regular file (it is a folder)" in _refusal(folder)


def test_an_npy_file_named_npz_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "one.npy", np.zeros(3))
    (tmp_path / "one.npy").rename(tmp_path / "one.npz")
    assert "holds a single array (.npy format), not an npz archive" in _refusal(
        tmp_path / "one.npz"
    )


# --------------------------------------------------------------------------- the factory's rules


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: {**d, "x_test": d["x_test"][:0], "y_test": d["y_test"][:0]},
         "the test set is empty (x_test has 0 rows); every split given needs >= 1 sample"),
        (lambda d: {**d, "x_train": d["x_train"][:0], "y_train": d["y_train"][:0]},
         "the training set is empty (x_train has 0 rows)"),
        (lambda d: {**d, "x_val": d["x_test"][:0], "y_val": d["y_test"][:0]},
         "the validation set is empty (x_val has 0 rows)"),
        (lambda d: {**d, "y_test": np.where(np.arange(6) == 0, 9, d["y_test"])},
         "y_test holds label 9 but y_train's labels lie in [0, 2]"),
        (lambda d: {**d, "x_val": d["x_test"], "y_val": d["y_test"] + 4},
         "y_val holds label 6 but y_train's labels lie in [0, 2]"),
        (lambda d: {**d, "x_val": d["x_test"]}, "x_val and y_val must be given together"),
    ],
)  # fmt: skip
def test_files_break_the_same_rules_as_a_factory(
    tmp_path: Path, change: Callable[[dict], dict], words: str
) -> None:
    arrays = change(_arrays())
    path = _npz(tmp_path, **arrays)
    assert _refusal(path).startswith(f"{path}: {words}")
    # the same arrays from a data factory (pixels scaled as the directory does)
    scaled = {k: v / 255.0 if k.startswith("x_") else v for k, v in arrays.items()}
    with pytest.raises(DataError) as info:
        dataset_from_output(scaled, source="m:f")
    assert str(info.value).startswith(f"data factory 'm:f': {words}")


def test_idx_folders_break_the_same_rules(tmp_path: Path) -> None:
    arrays = _arrays()
    empty = _idx_folder(tmp_path / "empty", {**arrays, "x_test": arrays["x_test"][:0],
                                             "y_test": arrays["y_test"][:0]})  # fmt: skip
    assert _refusal(empty) == (
        f"{empty}: the test set is empty (x_test has 0 rows); every split given needs >= 1 "
        "sample"
    )
    above = _idx_folder(tmp_path / "above", {**arrays, "y_test": arrays["y_test"] + 5})
    assert "y_test holds label 7 but y_train's labels lie in [0, 2]; pass num_classes" in (
        _refusal(above)
    )
    # a class that exists without training samples: declared, it is fine
    assert load_directory(above, num_classes=8).num_classes == 8


@pytest.mark.parametrize(
    ("shape", "shown"),
    [
        (np.array(["a", "b"]), "['a', 'b'] (dtype <U1)"),
        (np.array([-1, -16]), "[-1, -16] (dtype int64)"),
        (np.array([4.7, 4.2]), "[4.7, 4.2] (dtype float64)"),
        (np.array([0, 16]), "[0, 16]"),
        (np.array([]), "[] (dtype float64)"),
        (np.array([np.nan, 16.0]), "[nan, 16.0]"),
        (np.array([[1, 4, 4]]), "[[1, 4, 4]]"),
        (np.array([True, True]), "[True, True] (dtype bool)"),
    ],
)
def test_bad_image_shapes_are_named(tmp_path: Path, shape: np.ndarray, shown: str) -> None:
    path = _npz(tmp_path, **_arrays(), image_shape=shape)
    assert _refusal(path).startswith(
        f"{path}: image_shape must list positive whole numbers, e.g. [1, 28, 28] "
        f"(channels, height, width), got {shown}"
    )


def test_whole_float_image_shape_is_accepted(tmp_path: Path) -> None:
    path = _npz(tmp_path, **_arrays(), image_shape=np.array([1.0, 2.0, 8.0]))
    assert load_directory(path).image_shape == (1, 2, 8)


def test_unknown_arrays_are_refused(tmp_path: Path) -> None:
    path = _npz(tmp_path, **_arrays(), extra=np.zeros(3))
    assert _refusal(path) == (
        f"{path}: unknown array 'extra'; an npz dataset holds x_train, y_train, x_test, "
        "y_test (and optionally x_val, y_val, image_shape)"
    )
    arrays = _arrays()
    path = _npz(tmp_path, "typo.npz", **arrays, x_vall=arrays["x_test"])
    assert "unknown array 'x_vall' (did you mean 'x_val'?)" in _refusal(path)


@pytest.mark.parametrize(
    ("labels", "words"),
    [
        (np.arange(30).reshape(15, 2) % 3, "y_train must be 1-D class labels of shape (N,), "
                                            "got shape (15, 2)"),
        ((np.arange(30) % 3).reshape(30, 1), "got shape (30, 1)"),
        (np.full(30, 1e20), "y_train: class labels must be < 100,000 (one model output per "
                            "class), got a label 1e+20"),
        (np.where(np.arange(30) == 0, np.uint64(2**63 + 9), np.uint64(1)),
         "got a label 9,223,372,036,854,775,817"),
        (np.full(30, -1e20), "y_train must be non-negative class labels, got min -1e+20"),
        (np.where(np.arange(30) == 3, np.nan, 1.0),
         "y_train must hold integer class labels, got nan (dtype float64)"),
        (np.where(np.arange(30) == 3, 0.5, 1.0), "got 0.5 (dtype float64)"),
    ],
)  # fmt: skip
def test_labels_are_checked_as_given(tmp_path: Path, labels: np.ndarray, words: str) -> None:
    path = _npz(tmp_path, **{**_arrays(), "y_train": labels})
    assert words in _refusal(path)


def test_float64_pixels_beyond_float32_are_shown_as_given(tmp_path: Path) -> None:
    arrays = _arrays()
    x = arrays["x_train"] / 255.0
    x[0, 0, 0] = 1e300
    path = _npz(tmp_path, **{**arrays, "x_train": x})
    assert "float pixels must lie in [0, 1] (scale them first), got range [0, 1e+300]" in (
        _refusal(path)
    )


def test_image_layouts_must_agree_without_image_shape(tmp_path: Path) -> None:
    arrays = _arrays(side=4)
    other = np.zeros((6, 2, 8), np.uint8)  # 16 pixels too, another layout
    path = _npz(tmp_path, **{**arrays, "x_test": other})
    assert _refusal(path) == (
        f"{path}: x_test images have shape (2, 8) but x_train images have (4, 4)"
    )
    # a channel axis or flat rows of the same image are the same layout
    for same in (arrays["x_test"][:, None], arrays["x_test"].reshape(6, 16)):
        path = _npz(tmp_path, "same.npz", **{**arrays, "x_test": same})
        assert load_directory(path).image_shape == (1, 4, 4)
