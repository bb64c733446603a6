"""Modules whose parameters cannot travel as the flat float32 vector: one line, by name."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from raysync.exceptions import ConfigError, DataError
from raysync.models import GradientComputer, get_flat_grad, get_flat_params, set_flat_params
from raysync.models.flat import check_model_tensors


def _meta() -> nn.Module:
    with torch.device("meta"):
        return nn.Linear(3, 2)


def _sparse_weight() -> nn.Module:
    m = nn.Linear(3, 2)
    m.weight = nn.Parameter(m.weight.detach().to_sparse())
    return m


def _complex_bias() -> nn.Module:
    m = nn.Linear(3, 2)
    m.bias = nn.Parameter(m.bias.detach().to(torch.complex64))
    return m


def _meta_buffer() -> nn.Module:
    m = nn.BatchNorm1d(3)
    m.register_buffer("running_mean", torch.empty(3, device="meta"))
    return m


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (_meta, "model Linear: parameter 'weight' (torch.float32, shape (2, 3)) is on the "
                "'meta' device, which has shapes but no values; build the model on the CPU"),
        (_sparse_weight, "model Linear: parameter 'weight' is a sparse tensor (layout "
                         "torch.sparse_coo); parameters travel as one dense flat float32 "
                         "vector"),
        (_complex_bias, "model Linear: parameter 'bias' is torch.complex64, not floating point"),
        (_meta_buffer, "model BatchNorm1d: buffer 'running_mean' (torch.float32, shape (3,)) "
                       "is on the 'meta' device"),
    ],
)  # fmt: skip
def test_every_flat_path_refuses_the_module_by_name(
    make: Callable[[], nn.Module], words: str
) -> None:
    calls: list[Callable[[nn.Module], object]] = [
        get_flat_params,
        get_flat_grad,
        lambda m: set_flat_params(m, np.zeros(sum(p.numel() for p in m.parameters()))),
        GradientComputer,
        check_model_tensors,
    ]
    for call in calls:
        with pytest.raises(ConfigError) as info:
            call(make())
        assert str(info.value).startswith(words) and "\n" not in str(info.value)


def test_the_caller_names_the_module() -> None:
    with pytest.raises(ConfigError, match=r"^model factory 'pkg:make': parameter 'weight'"):
        check_model_tensors(_meta(), "model factory 'pkg:make'")


def test_sparse_gradients_are_made_dense() -> None:
    # nn.Embedding(sparse=True) is a dense parameter with sparse gradients: it trains
    emb = nn.Embedding(5, 2, sparse=True)
    emb(torch.tensor([1, 3, 3])).sum().backward()
    assert emb.weight.grad is not None and emb.weight.grad.layout == torch.sparse_coo
    grad = get_flat_grad(emb)
    expected = np.zeros((5, 2), np.float32)
    expected[1], expected[3] = 1.0, 2.0
    assert grad.dtype == np.float32 and np.array_equal(grad, expected.reshape(-1))


def test_good_modules_pass_untouched() -> None:
    m = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)).to(torch.bfloat16)
    check_model_tensors(m)  # low-precision floats are floating point: converted on the wire
    assert get_flat_params(m).dtype == np.float32


# --------------------------------------------------------------------------- inputs of calls


def _computer() -> GradientComputer:
    torch.manual_seed(0)
    return GradientComputer(nn.Linear(3, 2))


def test_narrow_float_tensors_are_widened_for_a_computer() -> None:
    gc = _computer()
    x = torch.rand(4, 3).bfloat16()
    y = torch.tensor([0, 1, 1, 0])
    flat = torch.from_numpy(gc.get_params()).bfloat16()
    grad, loss = gc.compute_gradient(flat, x, y)
    again, same = gc.compute_gradient(flat.float().numpy(), x.float().numpy(), y.numpy())
    assert np.array_equal(grad, again) and loss == same


@pytest.mark.parametrize(
    ("x", "y", "words"),
    [
        (torch.empty(4, 3, device="meta"), np.zeros(4, np.int64),
         "x is a tensor on the 'meta' device (dtype torch.float32, shape (4, 3)), which has "
         "a shape but no values; pass it with its data"),
        (torch.rand(4, 3).to_sparse(), np.zeros(4, np.int64),
         "x is a sparse tensor (layout torch.sparse_coo, dtype torch.float32, shape (4, 3)); "
         "pass a dense tensor"),
        (torch.nested.nested_tensor([torch.rand(2, 3), torch.rand(2, 3)]), np.zeros(4, np.int64),
         "x is a nested tensor (rows of different shapes); pass one dense tensor"),
        (torch.quantize_per_tensor(torch.rand(4, 3), 0.1, 0, torch.qint8), np.zeros(4, np.int64),
         "x is a torch.qint8 tensor on cpu, which numpy cannot hold"),
        (np.zeros((4, 3)), torch.zeros(4, dtype=torch.int64).to_sparse(), "y is a sparse tensor"),
        (np.full((4, 3), 1e300), np.zeros(4, np.int64),
         "x holds 1e+300, which exceeds float32's range ±3.4e38"),
        (np.zeros((4, 3)), np.full(4, 2**63 + 1, np.uint64),
         "y holds label 9223372036854775809, beyond int64"),
        (np.array([["a"] * 3] * 4), np.zeros(4, np.int64), "x must be a numeric array"),
    ],
)  # fmt: skip
def test_bad_call_inputs_are_one_line(x: object, y: object, words: str) -> None:
    gc = _computer()
    with pytest.raises(DataError) as info:
        gc.compute_gradient(gc.get_params(), x, y)  # type: ignore[arg-type]
    assert words in str(info.value) and "\n" not in str(info.value)


def test_flat_vectors_beyond_float32_are_refused() -> None:
    gc = _computer()
    with pytest.raises(ConfigError, match=r"flat parameter vector holds 1e\+300, which exceeds"):
        gc.compute_gradient(np.full(8, 1e300), np.zeros((1, 3)), np.zeros(1, np.int64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bfloat16_tensors_reach_numpy() -> None:
    gc = GradientComputer(nn.Linear(3, 2), device="cuda")
    x = torch.rand(4, 3, device="cuda").bfloat16()
    grad, _ = gc.compute_gradient(gc.get_params(), x, torch.tensor([0, 1, 1, 0]))
    assert grad.dtype == np.float32 and np.isfinite(grad).all()
