"""dataset_from_output: what a data factory may return, and one line for what it may not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raysync.data import VAL_FRACTION, Dataset, dataset_from_output, natural_partition
from raysync.exceptions import DataError


def _arrays(n: int = 50, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((n, 3, 2))
    y = rng.integers(0, 3, size=n)
    return {"x_train": x, "y_train": y, "x_test": x[:10], "y_test": y[:10]}


def test_numpy_and_tensors_become_float32_inputs_and_int64_labels() -> None:
    raw = _arrays()
    tensors = {k: torch.as_tensor(v) for k, v in raw.items()}
    a = dataset_from_output(raw, source="f", seed=0)
    b = dataset_from_output(tensors, source="f", seed=0)
    for ds in (a, b):
        assert ds.x_train.dtype == np.float32 and ds.x_train.shape[1:] == (3, 2)
        assert ds.y_train.dtype == np.int64 and ds.num_classes == 3
        assert ds.image_shape == (3, 2) and ds.in_features == 6
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_val, b.y_val)


def test_missing_validation_is_a_seeded_stratified_split() -> None:
    ds = dataset_from_output(_arrays(200), source="f", seed=3)
    again = dataset_from_output(_arrays(200), source="f", seed=3)
    other = dataset_from_output(_arrays(200), source="f", seed=4)
    assert ds.num_train + ds.num_val == 200
    # rounded per class: within 0.5 of VAL_FRACTION * n_c for each of the 3 classes
    assert abs(ds.num_val - VAL_FRACTION * 200) <= 1.5
    assert np.array_equal(ds.x_val, again.x_val)
    assert not np.array_equal(ds.x_val, other.x_val)
    given = dataset_from_output({**_arrays(), "x_val": np.zeros((4, 3, 2)),
                                 "y_val": np.zeros(4, int)}, source="f")  # fmt: skip
    assert given.num_val == 4 and given.num_train == 50


def test_client_train_follows_the_validation_split() -> None:
    raw = _arrays(120)
    raw["client_train"] = np.arange(120) % 4
    raw["x_train"][:, 0, 0] = np.arange(120)  # tag each row with its index
    ds = dataset_from_output(raw, source="f", seed=0)
    assert ds.client_train is not None
    rows = ds.x_train[:, 0, 0].astype(int)
    assert np.array_equal(ds.client_train, rows % 4)  # ids stayed with their rows
    parts = natural_partition(ds.client_train, 4)
    assert [set(rows[p] % 4) for p in parts] == [{0}, {1}, {2}, {3}]


def test_torch_datasets_per_split() -> None:
    raw = _arrays(30)
    train = torch.utils.data.TensorDataset(
        torch.as_tensor(raw["x_train"]), torch.as_tensor(raw["y_train"])
    )
    test = torch.utils.data.TensorDataset(
        torch.as_tensor(raw["x_test"]), torch.as_tensor(raw["y_test"])
    )
    ds = dataset_from_output({"train": train, "test": test}, source="f")
    assert ds.num_train + ds.num_val == 30 and ds.num_test == 10
    assert ds.x_test.shape == (10, 3, 2)


def test_real_targets_are_regression() -> None:
    raw = _arrays()
    raw["y_train"] = raw["x_train"].sum(axis=(1, 2))
    raw["y_test"] = raw["y_train"][:10]
    ds = dataset_from_output(raw, source="f")
    assert not ds.is_classification and ds.y_train.dtype == np.float32
    assert ds.num_classes == 1  # one output per sample


def test_a_dataset_passes_through() -> None:
    ds = dataset_from_output(_arrays(), source="f")
    assert dataset_from_output(ds, source="g") is ds
    assert isinstance(ds, Dataset)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: [1, 2], "data factory 'f' must return a mapping"),
        (lambda d: {k: v for k, v in d.items() if k != "y_test"}, "returned no y_test"),
        (lambda d: {**d, "y_train": d["y_train"][:-1]}, "x_train has 50 rows but y_train has 49"),
        (lambda d: {**d, "x_train": np.array(["a"] * 50)[:, None]}, "must be a numeric array"),
        (lambda d: {**d, "x_train": d["x_train"][:, 0, 0]}, "x_train must have shape (N, ...)"),
        (lambda d: {**d, "x_test": np.full((10, 3, 2), np.nan)}, "x_test must be finite"),
        (lambda d: {**d, "y_train": -d["y_train"] - 1}, "class labels >= 0"),
        (lambda d: {**d, "x_test": d["x_test"][:, :2]}, "x_test samples have shape (2, 2)"),
        (lambda d: {**d, "y_test": d["y_test"] + 0.5}, "y_test is float32 but y_train is int64"),
        (lambda d: {**d, "client_train": np.arange(10)}, "client_train must hold one integer"),
        (lambda d: {**d, "client_train": -np.ones(50, int)}, "client ids >= 0, got -1"),
        (lambda d: {**d, "x_val": d["x_test"]}, "x_val and y_val must be given together"),
        (lambda d: {**d, "x_valid": d["x_test"], "y_valid": d["y_test"]},
         "returned unknown key 'x_valid'; did you mean 'x_val'?"),
        (lambda d: {**d, 3: 1}, "returned unknown key 3 ("),
        (lambda d: {**d, "num_classes": 2},
         "data factory 'f': y_train labels must lie in [0, num_classes = 2), got 2"),
        (lambda d: {**d, "x_train": d["x_train"][:0], "y_train": d["y_train"][:0]},
         "training set is empty"),
        (lambda d: {**d, "x_test": d["x_test"][:0], "y_test": d["y_test"][:0]},
         "data factory 'f': the test set is empty (x_test has 0 rows)"),
        (lambda d: {**d, "x_val": d["x_test"][:0], "y_val": d["y_test"][:0]},
         "the validation set is empty (x_val has 0 rows)"),
        (lambda d: {**d, "y_test": np.where(np.arange(10) == 0, 7, d["y_test"])},
         "y_test holds label 7 but y_train's labels lie in [0, 2]"),
        (lambda d: {**d, "x_val": d["x_test"], "y_val": d["y_test"] + 5, "num_classes": 4},
         "y_val labels must lie in [0, num_classes = 4), got 7"),
    ],
)  # fmt: skip
def test_bad_output_is_one_line(change, words: str) -> None:  # noqa: ANN001
    with pytest.raises(DataError) as info:
        dataset_from_output(change(_arrays()), source="f")
    assert words in str(info.value) and "\n" not in str(info.value)


def test_natural_partition_refuses_ids_beyond_the_fleet_and_empty_clients() -> None:
    with pytest.raises(DataError, match=r"client ids must lie in \[0, 3\).*range \[0, 3\]"):
        natural_partition(np.array([0, 1, 2, 3]), 3)
    with pytest.raises(DataError, match=r"client 1 has no training samples"):
        natural_partition(np.array([0, 0, 2]), 3)


def test_a_test_class_unseen_in_training_is_fine_when_num_classes_says_so() -> None:
    d = _arrays()
    d["y_test"] = np.where(np.arange(10) == 0, 4, d["y_test"])
    ds = dataset_from_output({**d, "num_classes": 5}, source="f")
    assert ds.num_classes == 5 and int(ds.y_test.max()) == 4
