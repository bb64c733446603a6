from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from raysync.client import ClientOutput, run_client_work
from raysync.exceptions import ConfigError, DataError, DivergenceError
from raysync.models import GradientComputer, build_model
from raysync.strategies import ClientWork


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # Tiny models: intra-op threads only add overhead (50x slower on a busy 2-core box).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return x[:300], y[:300].astype(np.int64)


@pytest.fixture(scope="module")
def computer() -> GradientComputer:
    model = build_model("logreg", in_features=64, num_classes=10, image_shape=(1, 8, 8), seed=0)
    return GradientComputer(model)


@pytest.fixture()
def params(computer: GradientComputer) -> np.ndarray:
    w = computer.get_params()
    w.setflags(write=False)
    return w


def test_gradient_equals_model_gradient_on_same_minibatch(
    computer: GradientComputer, params: np.ndarray, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = digits
    work = ClientWork(kind="gradient", batch_size=16)
    out = run_client_work(computer, work, params, x, y, np.random.default_rng(5))
    idx = np.random.default_rng(5).choice(len(y), size=16, replace=False)
    assert len(set(idx.tolist())) == 16
    grad, loss = computer.compute_gradient(params, x[idx], y[idx])
    np.testing.assert_array_equal(out.payload, grad)
    assert out.loss == loss
    assert out.num_samples == 16
    assert out.payload.dtype == np.float32 and out.payload.shape == params.shape


def test_gradient_uses_all_rows_of_small_partition(
    computer: GradientComputer, params: np.ndarray, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = digits
    work = ClientWork(kind="gradient", batch_size=64)
    out = run_client_work(computer, work, params, x[:10], y[:10], np.random.default_rng(0))
    grad, _ = computer.compute_gradient(params, x[:10], y[:10])
    np.testing.assert_allclose(out.payload, grad, rtol=1e-6, atol=1e-7)
    assert out.num_samples == 10


@pytest.mark.parametrize("kind", ["params", "delta"])
def test_local_steps_reduce_loss(
    kind: str,
    computer: GradientComputer,
    params: np.ndarray,
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = digits
    work = ClientWork(kind=kind, batch_size=32, local_steps=30, local_lr=0.5)  # type: ignore[arg-type]
    before = params.copy()
    out = run_client_work(computer, work, params, x, y, np.random.default_rng(1))
    np.testing.assert_array_equal(params, before)  # input untouched
    new = out.payload if kind == "params" else params + out.payload
    loss_before, _ = computer.evaluate(params, x, y)
    loss_after, acc_after = computer.evaluate(new, x, y)
    assert loss_after < 0.7 * loss_before
    assert acc_after > 0.7
    assert np.isfinite(out.loss)
    # 30 steps of 32 over 300 rows: passes of 9 full batches + one of 12.
    assert out.num_samples == 3 * 300


def test_params_and_delta_agree(
    computer: GradientComputer, params: np.ndarray, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = digits
    kwargs = {"batch_size": 20, "local_steps": 4, "local_lr": 0.1}
    a = run_client_work(
        computer, ClientWork(kind="params", **kwargs), params, x, y, np.random.default_rng(3)
    )
    b = run_client_work(
        computer, ClientWork(kind="delta", **kwargs), params, x, y, np.random.default_rng(3)
    )
    np.testing.assert_array_equal(b.payload, a.payload - params)
    assert a.loss == b.loss and a.num_samples == b.num_samples == 80


@pytest.mark.parametrize("kind", ["gradient", "params", "delta"])
def test_deterministic(
    kind: str,
    computer: GradientComputer,
    params: np.ndarray,
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = digits
    work = ClientWork(kind=kind, batch_size=8, local_steps=3, local_lr=0.1)  # type: ignore[arg-type]
    first = run_client_work(computer, work, params, x, y, np.random.default_rng(42))
    second = run_client_work(computer, work, params, x, y, np.random.default_rng(42))
    np.testing.assert_array_equal(first.payload, second.payload)
    assert first.loss == second.loss
    other = run_client_work(computer, work, params, x, y, np.random.default_rng(43))
    assert not np.array_equal(first.payload, other.payload)


def test_num_samples_counts_short_last_batch(
    computer: GradientComputer, params: np.ndarray, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = digits
    # 25 rows, batches of 10: a pass is 10 + 10 + 5; 4 steps = one pass + 10 rows.
    work = ClientWork(kind="params", batch_size=10, local_steps=4, local_lr=0.1)
    out = run_client_work(computer, work, params, x[:25], y[:25], np.random.default_rng(0))
    assert out.num_samples == 35


def test_errors(
    computer: GradientComputer, params: np.ndarray, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = digits
    with pytest.raises(DataError, match="no training samples"):
        run_client_work(
            computer,
            ClientWork(kind="gradient", batch_size=4),
            params,
            x[:0],
            y[:0],
            np.random.default_rng(0),
        )
    bad = ClientWork(kind="weights", batch_size=4)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="work.kind must be one of gradient, params, delta"):
        run_client_work(computer, bad, params, x, y, np.random.default_rng(0))


def test_output_is_frozen() -> None:
    out = ClientOutput(payload=np.zeros(2, dtype=np.float32), loss=1.0, num_samples=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.loss = 2.0  # type: ignore[misc]


@pytest.mark.parametrize("kind", ["gradient", "params", "delta"])
def test_overflow_is_one_divergence_error_without_numpy_warnings(
    kind: str, computer: GradientComputer, params: np.ndarray, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    # Finite weights near float32's limit (3.4e38): the logits x W^T overflow to inf and
    # their shifted softmax to NaN, as after a step of 1e39 (the old output: three numpy
    # RuntimeWarnings printed ahead of the error line).
    x, y = digits
    huge = np.full_like(params, 3e38)
    huge[: huge.size // 2] = -3e38
    assert np.isfinite(huge).all()
    work = ClientWork(kind=kind, batch_size=16, local_steps=2, local_lr=0.1)  # type: ignore[arg-type]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        with pytest.raises(DivergenceError, match="not finite|is nan|is inf"):
            run_client_work(computer, work, huge, x, y, np.random.default_rng(0))
    # the caller's numpy error state is what it was
    assert np.geterr()["over"] == "warn" and np.geterr()["invalid"] == "warn"
