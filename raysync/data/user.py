"""The data half of the workload contract: what a data factory returns, and its checks.

A *data factory* is any callable (``[data] factory = "package.module:function"``, called
with the keyword arguments of ``[data.kwargs]``) returning either a
:class:`~raysync.data.Dataset` or a mapping with

* ``x_train``, ``y_train``, ``x_test``, ``y_test`` (required): numpy arrays, torch
  tensors or nested lists. Inputs ``x`` have shape ``(N, ...)`` and become ``float32``
  (kept in the shape given: the model receives ``(B, ...)`` batches of it). Targets
  ``y`` of an integer (or boolean) dtype are class labels, shape ``(N,)``, ``int64``, in
  ``[0, 100,000)`` (``MAX_CLASSES``); floating targets, shape ``(N, ...)``, become ``float32``
  (regression). Floating values must be finite and within float32's range (``±3.4e38``).
  Tensors are detached and copied to the CPU; floating tensors narrower than float32
  (``bfloat16``, ``float16``, ``float8``) are widened to float32, which holds each of
  their values exactly. Sparse and nested tensors, tensors on the ``meta`` device and
  masked arrays with masked entries are refused (one line naming the key and the rule);
* ``x_val``, ``y_val`` (optional, together): else a seeded 10 % split of the training set
  (stratified by class for labels) becomes the validation set;
* ``client_train`` (optional): one integer client id per training sample, the natural
  partition used by ``[data] partition = "natural"``;
* ``num_classes`` (optional): number of classes (default: largest label plus one) or, for
  real targets, of outputs (default: the product of ``y_train.shape[1:]``);
* ``name`` (optional): a display name.

Instead of the array pairs, ``train``, ``test`` and optionally ``val`` may each be a
``torch.utils.data.Dataset`` of ``(x, y)`` pairs (it is read once, item by item).

The built-in datasets are data factories of this contract too (:data:`DATASET_FACTORIES`):
``[data] dataset = "digits"`` is ``factory = "raysync.data.sources:load_digits_dataset"``,
and ``dataset = "directory"`` reads the user's files through the same rules
(:func:`dataset_from_arrays`).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from raysync._validation import first_line, float32_overflow, tensor_to_numpy
from raysync.data.sources import MAX_CLASSES, Dataset, stratified_split
from raysync.exceptions import DataError

__all__ = ["DATASET_FACTORIES", "VAL_FRACTION", "dataset_from_arrays", "dataset_from_output"]

#: Built-in dataset name -> its factory reference (the registry of ``data.dataset``).
DATASET_FACTORIES: dict[str, str] = {
    "digits": "raysync.data.sources:load_digits_dataset",
    "mnist": "raysync.data.sources:load_mnist",
    "directory": "raysync.data.sources:load_directory",
}

#: Share of the training set moved to validation when a factory gives no ``x_val``.
VAL_FRACTION = 0.1

_REQUIRED = ("x_train", "y_train", "x_test", "y_test")
#: Every key the mapping may hold: any other is a typo (``x_valid``) that would
#: otherwise be dropped without a word.
_KNOWN = frozenset((*_REQUIRED, "x_val", "y_val", "client_train", "num_classes", "name",
                    "train", "val", "test"))


def _to_numpy(value: Any, what: str, who: str) -> np.ndarray:
    """A numpy array of ``value`` (array, tensor, nested list) with a real numeric dtype.

    Raises:
        DataError: ``value`` cannot become an array (the user's object raised, ragged
            lists), a tensor without usable values (see
            :func:`raysync._validation.tensor_to_numpy`), a masked array with masked
            entries, or a dtype other than bool, integer or float.
    """
    torch = sys.modules.get("torch")  # a tensor implies torch is imported: no import here
    if torch is not None and isinstance(value, torch.Tensor):
        arr = tensor_to_numpy(value, f"{who}: {what}", DataError, verb="return")
    elif isinstance(value, np.ma.MaskedArray) and np.ma.is_masked(value):
        # np.asarray drops the mask and keeps whatever values lie under it
        raise DataError(
            f"{who}: {what} is a masked array with {int(np.ma.count_masked(value)):,} masked "
            "entries; fill them (.filled(value)) or drop those rows"
        )
    else:
        try:
            arr = np.asarray(value)
        except Exception as exc:  # the user's __array__/__len__/__getitem__ may raise anything
            raise DataError(
                f"{who}: {what} is not an array: {type(exc).__name__}: {first_line(exc)}"
            ) from exc
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise DataError(f"{who}: {what} must be a numeric array, got dtype {arr.dtype}")
    return arr


def _given_dtype(value: Any, arr: np.ndarray) -> str:
    """The dtype the user gave (a tensor's own, before any widening), for messages."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return str(value.dtype)
    return str(arr.dtype)


def _as_float32(arr: np.ndarray, what: str, who: str) -> np.ndarray:
    """``arr`` as a contiguous float32 array, refusing NaN, infinity and float32 overflow.

    The checks run on the values as given, before the cast: a finite float64 beyond
    float32's range would otherwise become infinity (with numpy's overflow warning) and be
    reported as if the user had given one. Values too small for float32 round to zero, as
    any float32 rounding does.

    Raises:
        DataError: A NaN or infinite value, or a value beyond ``±3.4e38``.
    """
    if arr.dtype.kind == "f" and arr.size:
        finite = np.isfinite(arr)
        if not finite.all():
            bad = int(finite.size - np.count_nonzero(finite))
            first = arr.reshape(-1)[int(np.argmin(finite.reshape(-1)))]
            raise DataError(
                f"{who}: {what} must be finite (it holds {bad:,} NaN or infinite value(s), "
                f"e.g. {first})"
            )
        value = float32_overflow(arr)
        if value is not None:
            raise DataError(
                f"{who}: {what} holds {value}, which exceeds float32's range ±3.4e38 "
                "(raysync computes in float32): rescale it"
            )
    return np.ascontiguousarray(arr, dtype=np.float32)


def _inputs(value: Any, what: str, who: str) -> np.ndarray:
    x = _to_numpy(value, what, who)
    if x.ndim < 2:
        raise DataError(
            f"{who}: {what} must have shape (N, ...) with one row per sample, got shape "
            f"{x.shape}"
        )
    return _as_float32(x, what, who)


def _targets(value: Any, what: str, who: str) -> np.ndarray:
    y = _to_numpy(value, what, who)
    if y.ndim < 1:
        raise DataError(f"{who}: {what} must have shape (N, ...), got a scalar")
    if y.dtype.kind in "biu":
        if y.ndim != 1:
            raise DataError(f"{who}: integer labels {what} must have shape (N,), got {y.shape}")
        if y.size:
            # min/max in the given dtype: a uint64 label >= 2**63 would wrap in int64
            low, high = int(y.min()), int(y.max())
            if low < 0:
                raise DataError(f"{who}: {what} must be class labels >= 0, got {low}")
            if high >= MAX_CLASSES:
                raise DataError(
                    f"{who}: {what} holds label {high:,}; class labels must be < "
                    f"{MAX_CLASSES:,} (one model output per class)"
                )
        return y.astype(np.int64)
    return _as_float32(y, what, who)


def _stack(items: list[np.ndarray], what: str, who: str) -> np.ndarray:
    first = items[0].shape
    for i, item in enumerate(items):
        if item.shape != first:
            raise DataError(
                f"{who}: {what} must have one shape for every item, but item 0 has shape "
                f"{first} and item {i} has {item.shape}"
            )
    return np.stack(items)


def _from_torch_dataset(ds: Any, split: str, who: str) -> tuple[Any, Any]:
    try:
        n = len(ds)
        pairs = [ds[i] for i in range(n)]
    except Exception as exc:  # the user's __getitem__/__len__
        raise DataError(
            f"{who}: reading the {split!r} Dataset failed: {type(exc).__name__}: {exc}"
        ) from exc
    if n == 0:
        return np.empty((0, 1), np.float32), np.empty(0, np.int64)
    if not all(isinstance(p, tuple | list) and len(p) == 2 for p in pairs):
        raise DataError(f"{who}: the {split!r} Dataset must yield (x, y) pairs")
    xs = [_to_numpy(p[0], f"{split}[{i}][0]", who) for i, p in enumerate(pairs)]
    ys = [_to_numpy(p[1], f"{split}[{i}][1]", who) for i, p in enumerate(pairs)]
    x = _stack(xs, f"the {split!r} Dataset's x", who)
    return x, _stack(ys, f"the {split!r} Dataset's y", who)


def _check_rows(who: str, x: np.ndarray, y: np.ndarray, split: str) -> None:
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"{who}: x_{split} has {x.shape[0]} rows but y_{split} has {y.shape[0]}; every "
            "input needs exactly one label"
        )


def _val_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if y.dtype == np.int64:
        train, val = stratified_split(y, [fraction], seed=seed)
        return train, val
    perm = np.random.default_rng(seed).permutation(y.shape[0])
    cut = int(round(fraction * y.shape[0]))
    return np.sort(perm[cut:]), np.sort(perm[:cut])


_SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}


def dataset_from_output(output: Any, *, source: str, seed: int = 0) -> Dataset:
    """Check a data factory's return value and turn it into a :class:`Dataset`.

    Every array and tensor goes through one guarded conversion: torch tensors are
    detached and copied to the CPU, and floating tensors narrower than float32
    (``bfloat16``, ``float16``, ``float8``) are widened to float32, exactly. Sparse and
    nested tensors, tensors on the ``meta`` device, masked arrays with masked entries and
    non-numeric dtypes are refused.

    Args:
        output: What the factory returned (see the module docstring).
        source: The factory's name, for messages.
        seed: Seed of the validation split when the output has no ``x_val``.

    Returns:
        The dataset (inputs float32 in their own shape; labels int64 or targets float32).

    Raises:
        DataError: Wrong return type, a mapping that cannot be read, an unknown or missing
            key, a non-numeric array or an unusable tensor (above), mismatched lengths,
            NaN or infinite inputs or targets, values beyond float32's range (``±3.4e38``),
            labels and targets mixed across splits, labels below 0 or at or above
            :data:`~raysync.data.sources.MAX_CLASSES`, a ``client_train`` of the wrong
            length or with negative ids, an empty split, labels at or above
            ``num_classes``, or (without ``num_classes``) test/validation labels above
            every training label; one line naming the factory, the rule and the value as
            given.
    """
    if isinstance(output, Dataset):
        return output
    who = f"data factory {source!r}"
    if not isinstance(output, Mapping):
        raise DataError(
            f"{who} must return a mapping with {', '.join(_REQUIRED)} (or a raysync "
            f"Dataset), got {type(output).__name__}"
        )
    try:
        out = dict(output)
    except Exception as exc:  # the user's Mapping: its __iter__/__getitem__ may raise
        raise DataError(
            f"{who} returned a mapping that cannot be read: {type(exc).__name__}: "
            f"{first_line(exc)}"
        ) from exc
    unknown = sorted((k for k in out if k not in _KNOWN), key=str)
    if unknown:
        import difflib

        close = difflib.get_close_matches(str(unknown[0]), sorted(_KNOWN), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise DataError(
            f"{who} returned unknown key {unknown[0]!r}{hint} (the mapping holds "
            f"{', '.join(_REQUIRED)}, optionally x_val, y_val, client_train, num_classes, "
            "name; or train, test, val as torch Datasets)"
        )
    for split in ("train", "val", "test"):
        if split in out and f"x_{split}" not in out:
            out[f"x_{split}"], out[f"y_{split}"] = _from_torch_dataset(out[split], split, who)
    missing = [k for k in _REQUIRED if k not in out]
    if missing:
        raise DataError(
            f"{who} returned no {', '.join(missing)}; the mapping needs "
            f"{', '.join(_REQUIRED)} (optionally x_val, y_val, client_train, num_classes); "
            f"got keys {sorted(map(str, out))}"
        )
    name = out.get("name")
    return dataset_from_arrays(
        out, who=who, name=str(name) if name is not None else source, seed=seed
    )


def dataset_from_arrays(
    arrays: Mapping[str, Any],
    *,
    who: str,
    name: str,
    seed: int = 0,
    val_fraction: float = VAL_FRACTION,
    image_shape: tuple[int, ...] | None = None,
    num_classes_hint: str = "return num_classes",
) -> Dataset:
    """The rules of the data contract on arrays, shared by data factories and files.

    :func:`dataset_from_output` calls it for a factory's mapping and
    :func:`~raysync.data.sources.load_directory` for the arrays of the user's files, so
    both refuse the same things with the same words.

    Args:
        arrays: ``x_train, y_train, x_test, y_test`` (required), ``x_val, y_val``
            (optional, together), ``client_train`` and ``num_classes`` (optional); values
            as in the module docstring. Other keys are ignored: callers check them.
        who: What supplied the arrays, the start of every message (``"data factory
            'm:f'"``, a file's path).
        name: The dataset's name.
        seed: Seed of the validation split when there is no ``x_val``.
        val_fraction: Share of the training set moved to validation when there is no
            ``x_val``, in ``[0, 1)``; 0 leaves the validation set empty.
        image_shape: The dataset's ``image_shape``; default: the samples' shape
            ``x_train.shape[1:]``. Its product must equal the features per sample.
        num_classes_hint: How the supplier declares ``num_classes``, for the message
            about a test label above every training label.

    Returns:
        The dataset.

    Raises:
        DataError: As :func:`dataset_from_output`, after its checks of the mapping
            itself (type, keys).
    """
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise DataError(f"{who}: x_val and y_val must be given together")
    xs: dict[str, np.ndarray] = {}
    ys: dict[str, np.ndarray] = {}
    for split in ("train", "val", "test"):
        if f"x_{split}" not in arrays:
            continue
        xs[split] = _inputs(arrays[f"x_{split}"], f"x_{split}", who)
        ys[split] = _targets(arrays[f"y_{split}"], f"y_{split}", who)
        _check_rows(who, xs[split], ys[split], split)
    sample_shape = xs["train"].shape[1:]
    kinds = {split: y.dtype == np.int64 for split, y in ys.items()}
    for split, x in xs.items():
        if x.shape[1:] != sample_shape and x.shape[0]:
            raise DataError(
                f"{who}: x_{split} samples have shape {x.shape[1:]} but x_train samples have "
                f"{sample_shape}"
            )
        if kinds[split] != kinds["train"] and ys[split].size:
            raise DataError(
                f"{who}: y_{split} is {ys[split].dtype} but y_train is {ys['train'].dtype}; "
                "use integer labels or real targets in every split"
            )
    for split in ys:
        if ys[split].shape[0] == 0:
            # an empty test/val split only fails later, in the first evaluation
            raise DataError(
                f"{who}: the {_SPLIT_NAMES[split]} set is empty (x_{split} has 0 rows); "
                "every split given needs >= 1 sample"
            )
    client: np.ndarray | None = None
    if arrays.get("client_train") is not None:
        given = arrays["client_train"]
        client = _to_numpy(given, "client_train", who)
        if client.dtype.kind not in "iu" or client.shape != (ys["train"].shape[0],):
            raise DataError(
                f"{who}: client_train must hold one integer client id per training sample, "
                f"shape ({ys['train'].shape[0]},), got {_given_dtype(given, client)} with "
                f"shape {client.shape}"
            )
        # min/max in the given dtype: a uint64 id >= 2**63 would wrap in int64
        low, high = int(client.min()), int(client.max())
        if low < 0:
            raise DataError(f"{who}: client_train must hold client ids >= 0, got {low}")
        if high > np.iinfo(np.int64).max:
            raise DataError(
                f"{who}: client_train holds client id {high:,}, beyond int64; client ids "
                "lie in [0, number of clients)"
            )
        client = client.astype(np.int64)
    factory_splits = set(xs)
    if "val" not in xs:
        if val_fraction > 0 and ys["train"].shape[0] >= 2:
            train, val = _val_split(ys["train"], val_fraction, seed)
        else:
            train, val = np.arange(ys["train"].shape[0]), np.empty(0, np.int64)
        xs["val"], ys["val"] = xs["train"][val], ys["train"][val]
        xs["train"], ys["train"] = xs["train"][train], ys["train"][train]
        if client is not None:
            client = client[train]
    classification = kinds["train"]
    num_classes = arrays.get("num_classes")
    if num_classes is None:
        if classification:
            num_classes = 1 + max(int(y.max()) for y in ys.values() if y.size)
        else:
            num_classes = int(math.prod(ys["train"].shape[1:]))
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer):
        raise DataError(f"{who}: num_classes must be an int, got {num_classes!r}")
    if not 1 <= int(num_classes) <= MAX_CLASSES:
        raise DataError(
            f"{who}: num_classes must be in [1, {MAX_CLASSES:,}], got {int(num_classes):,}"
        )
    if classification:
        given_classes = arrays.get("num_classes") is not None
        train_top = int(ys["train"].max()) if ys["train"].size else -1
        for split in ("train", "val", "test"):
            y = ys[split]
            top = int(y.max()) if y.size else -1
            if given_classes and top >= int(num_classes):
                raise DataError(
                    f"{who}: y_{split} labels must lie in [0, num_classes = "
                    f"{int(num_classes)}), got {top}"
                )
            if not given_classes and split in factory_splits and top > train_top:
                # a class the clients never see would silently widen the model's output
                raise DataError(
                    f"{who}: y_{split} holds label {top} but y_train's labels lie in "
                    f"[0, {train_top}]; {num_classes_hint} if that class exists, or fix the "
                    "split"
                )
    return Dataset(
        name=name,
        x_train=xs["train"],
        y_train=ys["train"],
        x_val=xs["val"],
        y_val=ys["val"],
        x_test=xs["test"],
        y_test=ys["test"],
        num_classes=int(num_classes),
        image_shape=(
            tuple(int(s) for s in sample_shape) if image_shape is None else tuple(image_shape)
        ),
        client_train=client,
    )
