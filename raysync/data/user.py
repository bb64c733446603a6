"""The data half of the workload contract: what a data factory returns, and its checks.

A *data factory* is any callable (``[data] factory = "package.module:function"``, called
with the keyword arguments of ``[data.kwargs]``) returning either a
:class:`~raysync.data.Dataset` or a mapping with

* ``x_train``, ``y_train``, ``x_test``, ``y_test`` (required): numpy arrays, torch
  tensors or nested lists. Inputs ``x`` have shape ``(N, ...)`` and become ``float32``
  (kept in the shape given: the model receives ``(B, ...)`` batches of it). Targets
  ``y`` of an integer (or boolean) dtype are class labels, shape ``(N,)``, ``int64``;
  floating targets, shape ``(N, ...)``, become ``float32`` (regression);
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
``[data] dataset = "digits"`` is ``factory = "raysync.data.sources:load_digits_dataset"``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from raysync.data.sources import MAX_CLASSES, Dataset, stratified_split
from raysync.exceptions import DataError

__all__ = ["DATASET_FACTORIES", "VAL_FRACTION", "dataset_from_output"]

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


def _to_numpy(value: Any, what: str, source: str) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise DataError(f"data factory {source!r}: {what} is not an array: {exc}") from exc
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise DataError(
            f"data factory {source!r}: {what} must be a numeric array, got dtype {arr.dtype}"
        )
    return arr


def _inputs(value: Any, what: str, source: str) -> np.ndarray:
    x = _to_numpy(value, what, source)
    if x.ndim < 2:
        raise DataError(
            f"data factory {source!r}: {what} must have shape (N, ...) with one row per "
            f"sample, got shape {x.shape}"
        )
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.size and not np.isfinite(x).all():
        raise DataError(f"data factory {source!r}: {what} must be finite (it holds NaN or inf)")
    return x


def _targets(value: Any, what: str, source: str) -> np.ndarray:
    y = _to_numpy(value, what, source)
    if y.ndim < 1:
        raise DataError(f"data factory {source!r}: {what} must have shape (N, ...), got a scalar")
    if y.dtype.kind in "biu":
        if y.ndim != 1:
            raise DataError(
                f"data factory {source!r}: integer labels {what} must have shape (N,), "
                f"got {y.shape}"
            )
        y = y.astype(np.int64)
        if y.size and int(y.min()) < 0:
            raise DataError(
                f"data factory {source!r}: {what} must be class labels >= 0, got {int(y.min())}"
            )
        return y
    y = np.ascontiguousarray(y, dtype=np.float32)
    if y.size and not np.isfinite(y).all():
        raise DataError(f"data factory {source!r}: {what} must be finite (it holds NaN or inf)")
    return y


def _from_torch_dataset(ds: Any, split: str, source: str) -> tuple[Any, Any]:
    try:
        n = len(ds)
        pairs = [ds[i] for i in range(n)]
    except Exception as exc:  # the user's __getitem__/__len__
        raise DataError(
            f"data factory {source!r}: reading the {split!r} Dataset failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if n == 0:
        return np.empty((0, 1), np.float32), np.empty(0, np.int64)
    if not all(isinstance(p, tuple | list) and len(p) == 2 for p in pairs):
        raise DataError(f"data factory {source!r}: the {split!r} Dataset must yield (x, y) pairs")
    xs = [_to_numpy(p[0], f"{split}[i][0]", source) for p in pairs]
    ys = [_to_numpy(p[1], f"{split}[i][1]", source) for p in pairs]
    return np.stack(xs), np.stack(ys)


def _check_rows(source: str, x: np.ndarray, y: np.ndarray, split: str) -> None:
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"data factory {source!r}: x_{split} has {x.shape[0]} rows but y_{split} has "
            f"{y.shape[0]}; every input needs exactly one label"
        )


def _val_split(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if y.dtype == np.int64:
        train, val = stratified_split(y, [VAL_FRACTION], seed=seed)
        return train, val
    perm = np.random.default_rng(seed).permutation(y.shape[0])
    cut = int(round(VAL_FRACTION * y.shape[0]))
    return np.sort(perm[cut:]), np.sort(perm[:cut])


_SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}


def dataset_from_output(output: Any, *, source: str, seed: int = 0) -> Dataset:
    """Check a data factory's return value and turn it into a :class:`Dataset`.

    Args:
        output: What the factory returned (see the module docstring).
        source: The factory's name, for messages.
        seed: Seed of the validation split when the output has no ``x_val``.

    Returns:
        The dataset (inputs float32 in their own shape; labels int64 or targets float32).

    Raises:
        DataError: Wrong return type, a missing or non-numeric array, mismatched lengths,
            labels and targets mixed across splits, a ``client_train`` of the wrong
            length or with negative ids, an empty split, labels at or above
            ``num_classes``, or (without ``num_classes``) test/validation labels above
            every training label; one line naming the factory, the rule and the value.
    """
    if isinstance(output, Dataset):
        return output
    if not isinstance(output, Mapping):
        raise DataError(
            f"data factory {source!r} must return a mapping with "
            f"{', '.join(_REQUIRED)} (or a raysync Dataset), got {type(output).__name__}"
        )
    out = dict(output)
    unknown = sorted((k for k in out if k not in _KNOWN), key=str)
    if unknown:
        import difflib

        close = difflib.get_close_matches(str(unknown[0]), sorted(_KNOWN), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise DataError(
            f"data factory {source!r} returned unknown key {unknown[0]!r}{hint} (the mapping "
            f"holds {', '.join(_REQUIRED)}, optionally x_val, y_val, client_train, "
            "num_classes, name; or train, test, val as torch Datasets)"
        )
    for split in ("train", "val", "test"):
        if split in out and f"x_{split}" not in out:
            out[f"x_{split}"], out[f"y_{split}"] = _from_torch_dataset(out[split], split, source)
    missing = [k for k in _REQUIRED if k not in out]
    if missing:
        raise DataError(
            f"data factory {source!r} returned no {', '.join(missing)}; the mapping needs "
            f"{', '.join(_REQUIRED)} (optionally x_val, y_val, client_train, num_classes); "
            f"got keys {sorted(map(str, out))}"
        )
    if ("x_val" in out) != ("y_val" in out):
        raise DataError(f"data factory {source!r}: x_val and y_val must be given together")
    xs: dict[str, np.ndarray] = {}
    ys: dict[str, np.ndarray] = {}
    for split in ("train", "val", "test"):
        if f"x_{split}" not in out:
            continue
        xs[split] = _inputs(out[f"x_{split}"], f"x_{split}", source)
        ys[split] = _targets(out[f"y_{split}"], f"y_{split}", source)
        _check_rows(source, xs[split], ys[split], split)
    sample_shape = xs["train"].shape[1:]
    kinds = {split: y.dtype == np.int64 for split, y in ys.items()}
    for split, x in xs.items():
        if x.shape[1:] != sample_shape and x.shape[0]:
            raise DataError(
                f"data factory {source!r}: x_{split} samples have shape {x.shape[1:]} but "
                f"x_train samples have {sample_shape}"
            )
        if kinds[split] != kinds["train"] and ys[split].size:
            raise DataError(
                f"data factory {source!r}: y_{split} is {ys[split].dtype} but y_train is "
                f"{ys['train'].dtype}; use integer labels or real targets in every split"
            )
    for split in ys:
        if ys[split].shape[0] == 0:
            # an empty test/val split only fails later, in the first evaluation
            raise DataError(
                f"data factory {source!r}: the {_SPLIT_NAMES[split]} set is empty "
                f"(x_{split} has 0 rows); every split given needs >= 1 sample"
            )
    client: np.ndarray | None = None
    if out.get("client_train") is not None:
        client = _to_numpy(out["client_train"], "client_train", source)
        if client.dtype.kind not in "iu" or client.shape != (ys["train"].shape[0],):
            raise DataError(
                f"data factory {source!r}: client_train must hold one integer client id per "
                f"training sample, shape ({ys['train'].shape[0]},), got {client.dtype} with "
                f"shape {client.shape}"
            )
        client = client.astype(np.int64)
        if int(client.min()) < 0:
            raise DataError(
                f"data factory {source!r}: client_train must hold client ids >= 0, got "
                f"{int(client.min())}"
            )
    factory_splits = set(xs)
    if "val" not in xs:
        if ys["train"].shape[0] >= 2:
            train, val = _val_split(ys["train"], seed)
        else:
            train, val = np.arange(ys["train"].shape[0]), np.empty(0, np.int64)
        xs["val"], ys["val"] = xs["train"][val], ys["train"][val]
        xs["train"], ys["train"] = xs["train"][train], ys["train"][train]
        if client is not None:
            client = client[train]
    classification = kinds["train"]
    num_classes = out.get("num_classes")
    if num_classes is None:
        if classification:
            num_classes = 1 + max(int(y.max()) for y in ys.values() if y.size)
        else:
            num_classes = int(math.prod(ys["train"].shape[1:]))
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer):
        raise DataError(f"data factory {source!r}: num_classes must be an int, got {num_classes!r}")
    if not 1 <= int(num_classes) <= MAX_CLASSES:
        raise DataError(
            f"data factory {source!r}: num_classes must be in [1, {MAX_CLASSES:,}], got "
            f"{int(num_classes):,}"
        )
    if classification:
        given = out.get("num_classes") is not None
        train_top = int(ys["train"].max()) if ys["train"].size else -1
        for split in ("train", "val", "test"):
            y = ys[split]
            top = int(y.max()) if y.size else -1
            if given and top >= int(num_classes):
                raise DataError(
                    f"data factory {source!r}: y_{split} labels must lie in "
                    f"[0, num_classes = {int(num_classes)}), got {top}"
                )
            if not given and split in factory_splits and top > train_top:
                # a class the clients never see would silently widen the model's output
                raise DataError(
                    f"data factory {source!r}: y_{split} holds label {top} but y_train's "
                    f"labels lie in [0, {train_top}]; return num_classes if that class "
                    "exists, or fix the split"
                )
    name = out.get("name")
    return Dataset(
        name=str(name) if name is not None else source,
        x_train=xs["train"],
        y_train=ys["train"],
        x_val=xs["val"],
        y_val=ys["val"],
        x_test=xs["test"],
        y_test=ys["test"],
        num_classes=int(num_classes),
        image_shape=tuple(int(s) for s in sample_shape),
        client_train=client,
    )
