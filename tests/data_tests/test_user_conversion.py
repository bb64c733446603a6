"""The guarded conversion of a data factory's arrays and tensors: one line, never a traceback.

Every array or tensor a factory returns goes through one path: half-precision tensors are
widened to float32 (exactly), tensors without usable values are refused by dtype, layout or
device, and the rules are checked on the values as given, so a message never shows a value
that a cast made (a wrapped uint64, an infinity from float64 overflow) and numpy prints no
warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import pytest
import torch

from raysync.data import dataset_from_output
from raysync.exceptions import DataError


@pytest.fixture(autouse=True)
def warnings_are_errors() -> Iterator[None]:
    # numpy's RuntimeWarning (overflow in cast, invalid value) must never reach the user
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def _arrays(n: int = 40) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    x = rng.random((n, 4)).astype(np.float32)
    y = np.arange(n) % 3
    return {"x_train": x, "y_train": y, "x_test": x[:9], "y_test": y[:9]}


def _refusal(out: Any) -> str:
    with pytest.raises(DataError) as info:
        dataset_from_output(out, source="m:f", seed=0)
    text = str(info.value)
    assert "\n" not in text and text.startswith("data factory 'm:f'")
    return text


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float8_e4m3fn])
@pytest.mark.parametrize("key", ["x_train", "x_test"])
def test_narrow_float_tensors_are_widened_to_float32_exactly(dtype: torch.dtype, key: str) -> None:
    out = _arrays()
    tensor = torch.from_numpy(out[key]).to(dtype)
    out[key] = tensor.requires_grad_(True) if dtype != torch.float8_e4m3fn else tensor
    ds = dataset_from_output(out, source="m:f", seed=0)
    got = ds.x_test if key == "x_test" else np.concatenate([ds.x_train, ds.x_val])
    assert got.dtype == np.float32
    # every value of the narrow type is a float32: the widening loses nothing
    expected = tensor.detach().float().numpy()
    assert np.array_equal(np.sort(got, axis=0), np.sort(expected, axis=0))


def test_bfloat16_in_client_train_and_in_a_torch_dataset() -> None:
    out = _arrays()
    out["client_train"] = torch.arange(40, dtype=torch.bfloat16) % 4
    text = _refusal(out)
    # the dtype as given, not the float32 it was widened to
    assert "client_train must hold one integer client id" in text and "torch.bfloat16" in text
    raw = _arrays()
    train = torch.utils.data.TensorDataset(
        torch.from_numpy(raw["x_train"]).bfloat16(), torch.from_numpy(raw["y_train"])
    )
    ds = dataset_from_output(
        {"train": train, "x_test": raw["x_test"], "y_test": raw["y_test"]}, source="m:f"
    )
    assert ds.x_train.dtype == np.float32 and ds.num_train + ds.num_val == 40


def _sparse(t: torch.Tensor) -> torch.Tensor:
    return t.to_sparse()


@pytest.mark.parametrize(
    ("key", "make", "words"),
    [
        ("x_train", lambda a: torch.empty(a.shape, device="meta"),
         "x_train is a tensor on the 'meta' device (dtype torch.float32, shape (40, 4)), "
         "which has a shape but no values"),
        ("x_train", lambda a: _sparse(torch.from_numpy(a)),
         "x_train is a sparse tensor (layout torch.sparse_coo, dtype torch.float32, "
         "shape (40, 4)); return a dense tensor"),
        ("y_train", lambda a: _sparse(torch.from_numpy(a)),
         "y_train is a sparse tensor (layout torch.sparse_coo, dtype torch.int64"),
        ("client_train", lambda a: _sparse(torch.arange(40) % 4), "client_train is a sparse"),
        ("x_test", lambda a: torch.from_numpy(a).to_sparse_csr(), "layout torch.sparse_csr"),
        ("y_test", lambda a: torch.empty(9, dtype=torch.int64, device="meta"),
         "y_test is a tensor on the 'meta' device"),
        ("x_train", lambda a: torch.quantize_per_tensor(torch.from_numpy(a), 0.1, 0,
                                                        torch.qint8),
         "x_train is a torch.qint8 tensor on cpu, which numpy cannot hold"),
        ("x_train", lambda a: torch.nested.nested_tensor([torch.from_numpy(r) for r in a]),
         "x_train is a nested tensor (rows of different shapes); return one dense tensor"),
        ("x_train", lambda a: np.ma.masked_array(a, mask=a > 0.5),
         "x_train is a masked array with"),
    ],
)  # fmt: skip
def test_tensors_without_usable_values_are_refused_by_name(
    key: str, make: Callable[[np.ndarray], Any], words: str
) -> None:
    out = _arrays()
    with warnings.catch_warnings():
        # torch's beta/deprecation notices for sparse CSR and quantized tensors
        warnings.simplefilter("ignore", UserWarning)
        out[key] = make(out.get(key, np.zeros(1)))
    assert words in _refusal(out)


def test_a_mapping_or_object_that_raises_is_one_line() -> None:
    class Broken(Mapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            raise RuntimeError("getitem broke")

        def __iter__(self) -> Iterator[str]:
            return iter(["x_train"])

        def __len__(self) -> int:
            return 1

    assert "returned a mapping that cannot be read: RuntimeError: getitem broke" in _refusal(
        Broken()
    )

    class NoArray:
        def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
            raise OSError("device unplugged")

    out = _arrays()
    out["x_test"] = NoArray()
    assert "x_test is not an array: OSError: device unplugged" in _refusal(out)


def test_ragged_torch_dataset_names_the_items() -> None:
    class Ragged(torch.utils.data.Dataset[tuple[np.ndarray, int]]):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
            return np.zeros(3 + i % 2, np.float32), 1

    raw = _arrays()
    text = _refusal({"train": Ragged(), "x_test": raw["x_test"], "y_test": raw["y_test"]})
    assert "the 'train' Dataset's x must have one shape for every item, but item 0 has " \
           "shape (3,) and item 1 has (4,)" in text  # fmt: skip


@pytest.mark.parametrize(
    ("change", "words"),
    [
        # values as given: not the int64 they would wrap to
        (lambda d: {**d, "y_train": np.where(np.arange(40) == 0, np.uint64(2**63 + 5),
                                             d["y_train"].astype(np.uint64))},
         "y_train holds label 9,223,372,036,854,775,813; class labels must be < 100,000"),
        (lambda d: {**d, "client_train": np.where(np.arange(40) == 0, np.uint64(2**63 + 1),
                                                  np.uint64(1))},
         "client_train holds client id 9,223,372,036,854,775,809, beyond int64"),
        (lambda d: {**d, "y_test": np.full(9, 10**9)},
         "y_test holds label 1,000,000,000; class labels must be < 100,000"),
        # finite float64 beyond float32: not "must be finite"
        (lambda d: {**d, "x_train": np.where(np.arange(4) == 1, 1e300,
                                             d["x_train"].astype(np.float64))},
         "x_train holds 1e+300, which exceeds float32's range ±3.4e38"),
        (lambda d: {**d, "x_test": np.full((9, 4), -1e39)},
         "x_test holds -1e+39, which exceeds float32's range ±3.4e38"),
        (lambda d: {**d, "x_train": torch.full((40, 4), 1e300, dtype=torch.float64)},
         "x_train holds 1e+300, which exceeds float32's range"),
        (lambda d: {**d, "y_train": np.full(40, 1e20), "y_test": np.full(9, 1e300)},
         "y_test holds 1e+300, which exceeds float32's range"),
        (lambda d: {**d, "x_train": np.where(np.arange(4) == 2, np.nan, d["x_train"])},
         "x_train must be finite (it holds 40 NaN or infinite value(s), e.g. nan)"),
    ],
)  # fmt: skip
def test_messages_show_the_value_as_given(change: Callable[[dict], dict], words: str) -> None:
    assert words in _refusal(change(_arrays()))


def test_float32_range_edges_are_accepted() -> None:
    out = _arrays()
    top = float(np.finfo(np.float32).max)
    out["x_train"] = out["x_train"].astype(np.float64)
    out["x_train"][0, 0], out["x_train"][1, 0] = top, -top
    out["x_train"][2, 0] = 1e-300  # underflows to 0 as any float32 rounding does
    ds = dataset_from_output(out, source="m:f", seed=0)
    everything = np.concatenate([ds.x_train, ds.x_val])
    assert everything.max() == np.float32(top) and everything.min() == -np.float32(top)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bfloat16_tensors_are_copied_and_widened() -> None:
    out = {k: torch.as_tensor(v, device="cuda") for k, v in _arrays().items()}
    out["x_train"] = out["x_train"].bfloat16()
    ds = dataset_from_output(out, source="m:f", seed=0)
    assert ds.x_train.dtype == np.float32 and ds.num_train + ds.num_val == 40
