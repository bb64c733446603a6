from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from raysync.data import Dataset, load_digits_dataset
from raysync.exceptions import ConfigError, DataError
from raysync.models import (
    GradientComputer,
    build_model,
    get_flat_grad,
    get_flat_params,
    num_parameters,
    resolve_device,
    set_flat_params,
)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_digits_dataset(seed=0)


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    # These models are tiny: intra-op threads only add synchronisation, and on a loaded
    # 2-core machine they made the training tests 15-70x slower. Restored afterwards.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def readonly(a: np.ndarray) -> np.ndarray:
    b = a.copy()
    b.flags.writeable = False
    return b


def tiny_mlp(seed: int = 0) -> torch.nn.Module:
    return build_model(
        "mlp", in_features=5, num_classes=3, image_shape=(5,), hidden=(4,), seed=seed
    )


# --------------------------------------------------------------------------- flat helpers


@pytest.mark.parametrize("name", ["logreg", "mlp", "cnn"])
def test_flatten_roundtrip(name: str) -> None:
    kw = {"in_features": 64, "num_classes": 10, "image_shape": (1, 8, 8)}
    src, dst = build_model(name, seed=1, **kw), build_model(name, seed=2, **kw)
    flat = get_flat_params(src)
    assert flat.dtype == np.float32 and flat.shape == (num_parameters(src),)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "non-writable array" warning from torch
        set_flat_params(dst, readonly(flat))
    for p, q in zip(src.parameters(), dst.parameters(), strict=True):
        assert torch.equal(p, q)
    # get_flat_params returns a copy: editing it leaves the model alone.
    flat[:] = 0
    assert np.abs(get_flat_params(dst)).sum() > 0
    # float64 vectors are accepted (cast); wrong lengths and dtypes are refused.
    set_flat_params(dst, np.zeros(num_parameters(dst)))
    assert not get_flat_params(dst).any()
    with pytest.raises(ConfigError, match=rf"shape \({num_parameters(dst)},\)"):
        set_flat_params(dst, np.zeros(num_parameters(dst) + 1, np.float32))
    with pytest.raises(ConfigError, match="floating"):
        set_flat_params(dst, np.zeros(num_parameters(dst), np.int64))


def test_flat_grad_zero_without_backward() -> None:
    model = tiny_mlp()
    assert not get_flat_grad(model).any()
    model(torch.ones(2, 5)).sum().backward()
    g = get_flat_grad(model)
    assert g.dtype == np.float32 and g.shape == (num_parameters(model),) and g.any()


# --------------------------------------------------------------------------- gradients


def test_gradient_matches_autograd(digits: Dataset) -> None:
    model = build_model("mlp", in_features=64, num_classes=10, image_shape=(1, 8, 8), seed=3)
    reference = build_model("mlp", in_features=64, num_classes=10, image_shape=(1, 8, 8), seed=3)
    gc = GradientComputer(model)
    w = get_flat_params(reference) + np.float32(0.01)
    x, y = digits.x_train[:32], digits.y_train[:32]
    w_before = w.copy()
    grad, loss = gc.compute_gradient(readonly(w), readonly(x), readonly(y))
    assert grad.dtype == np.float32 and isinstance(loss, float)
    assert np.array_equal(w, w_before)  # the input is not modified

    set_flat_params(reference, w)
    ref_loss = F.cross_entropy(reference(torch.from_numpy(x)), torch.from_numpy(y))
    ref_loss.backward()
    np.testing.assert_allclose(grad, get_flat_grad(reference), rtol=1e-5, atol=1e-7)
    assert loss == pytest.approx(float(ref_loss.detach()), rel=1e-6)


def test_gradient_matches_finite_differences() -> None:
    model = tiny_mlp(seed=4)
    gc = GradientComputer(model)
    rng = np.random.default_rng(0)
    x = rng.random((7, 5)).astype(np.float32)
    y = rng.integers(0, 3, size=7)
    w = gc.get_params()
    grad, loss = gc.compute_gradient(w, x, y)

    # Central differences of the same loss in float64 on a double copy of the model.
    double = tiny_mlp(seed=4).double()
    names = [n for n, _ in double.named_parameters()]
    shapes = [p.shape for p in double.parameters()]
    xt, yt = torch.from_numpy(x.astype(np.float64)), torch.from_numpy(y)

    def f(vec: np.ndarray) -> float:
        params, off = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            n = int(np.prod(shape))
            params[name] = torch.from_numpy(vec[off : off + n].reshape(shape))
            off += n
        with torch.no_grad():
            return float(F.cross_entropy(functional_call(double, params, (xt,)), yt))

    w64 = w.astype(np.float64)
    eps = 1e-6
    fd = np.empty_like(w64)
    for i in range(w64.size):
        e = np.zeros_like(w64)
        e[i] = eps
        fd[i] = (f(w64 + e) - f(w64 - e)) / (2 * eps)
    assert loss == pytest.approx(f(w64), rel=1e-6)
    np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-6)


def test_compute_gradient_errors(digits: Dataset) -> None:
    gc = GradientComputer(tiny_mlp())
    w = gc.get_params()
    with pytest.raises(DataError, match="same N"):
        gc.compute_gradient(w, np.zeros((3, 5), np.float32), np.zeros(2, np.int64))
    with pytest.raises(DataError, match="non-empty"):
        gc.compute_gradient(w, np.zeros((0, 5), np.float32), np.zeros(0, np.int64))
    with pytest.raises(ConfigError, match="shape"):
        gc.compute_gradient(w[:-1], np.zeros((3, 5), np.float32), np.zeros(3, np.int64))


# --------------------------------------------------------------------------- local steps


def test_local_steps_is_sgd() -> None:
    gc = GradientComputer(tiny_mlp())
    rng = np.random.default_rng(1)
    x = rng.random((6, 5)).astype(np.float32)
    y = rng.integers(0, 3, size=6)
    w0 = gc.get_params()
    assert np.array_equal(gc.local_steps(w0, x, y, steps=0, batch_size=4, lr=0.1, rng=0), w0)
    # With a full batch the order does not matter: two steps of w <- w - lr * grad.
    expected = w0.copy()
    for _ in range(2):
        g, _ = gc.compute_gradient(expected, x, y)
        expected = expected - np.float32(0.1) * g
    got = gc.local_steps(w0, readonly(x), readonly(y), steps=2, batch_size=6, lr=0.1, rng=0)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    assert np.isfinite(gc.last_train_loss)


def test_local_steps_deterministic(digits: Dataset) -> None:
    gc = GradientComputer(
        build_model("logreg", in_features=64, num_classes=10, image_shape=(1, 8, 8), seed=0)
    )
    w0 = gc.get_params()
    kw = {"steps": 5, "batch_size": 8, "lr": 0.1}
    a = gc.local_steps(w0, digits.x_train, digits.y_train, rng=3, **kw)
    b = gc.local_steps(w0, digits.x_train, digits.y_train, rng=np.random.default_rng(3), **kw)
    c = gc.local_steps(w0, digits.x_train, digits.y_train, rng=4, **kw)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    with pytest.raises(ConfigError, match="lr"):
        gc.local_steps(w0, digits.x_train, digits.y_train, steps=1, batch_size=8, lr=0.0, rng=0)
    with pytest.raises(ConfigError, match="batch_size"):
        gc.local_steps(w0, digits.x_train, digits.y_train, steps=1, batch_size=0, lr=1, rng=0)
    with pytest.raises(ConfigError, match="steps"):
        gc.local_steps(w0, digits.x_train, digits.y_train, steps=-1, batch_size=8, lr=1, rng=0)


# Plain SGD, batch 32, fixed seeds. One epoch on the 1,259 training digits is only 40 steps
# and reaches ~0.84-0.87 (logreg) / ~0.75-0.80 (MLP) test accuracy; a few epochs clear 0.85
# with margin for every seed tried (0..4): logreg 3 epochs >= 0.89, MLP 10 epochs >= 0.91,
# CNN 10 epochs >= 0.86.
@pytest.mark.parametrize(
    ("name", "lr", "epochs", "threshold"),
    [("logreg", 0.5, 3, 0.85), ("mlp", 0.3, 10, 0.85), ("cnn", 0.3, 10, 0.8)],
)
def test_training_reaches_accuracy(
    digits: Dataset, name: str, lr: float, epochs: int, threshold: float
) -> None:
    model = build_model(name, in_features=64, num_classes=10, image_shape=(1, 8, 8), seed=0)
    gc = GradientComputer(model)
    w = gc.get_params()
    loss0, acc0 = gc.evaluate(w, digits.x_test, digits.y_test)
    steps = epochs * -(-digits.num_train // 32)
    w = gc.local_steps(w, digits.x_train, digits.y_train, steps=steps, batch_size=32, lr=lr, rng=0)
    loss, acc = gc.evaluate(w, digits.x_test, digits.y_test)
    assert acc0 < 0.3 and acc > threshold and loss < loss0


# --------------------------------------------------------------------------- evaluate


def test_evaluate_matches_manual(digits: Dataset) -> None:
    model = build_model("mlp", in_features=64, num_classes=10, image_shape=(1, 8, 8), seed=0)
    gc = GradientComputer(model)
    w = gc.local_steps(
        gc.get_params(), digits.x_train, digits.y_train, steps=30, batch_size=32, lr=0.3, rng=0
    )
    loss, acc = gc.evaluate(readonly(w), readonly(digits.x_test), digits.y_test, batch_size=50)
    loss_big, acc_big = gc.evaluate(w, digits.x_test, digits.y_test)
    assert acc == acc_big and loss == pytest.approx(loss_big, rel=1e-6)
    set_flat_params(model, w)
    with torch.no_grad():
        logits = model(torch.from_numpy(digits.x_test))
    y = torch.from_numpy(digits.y_test)
    assert loss == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-5)
    assert acc == pytest.approx(float((logits.argmax(1) == y).double().mean()))
    with pytest.raises(DataError, match="empty"):
        gc.evaluate(w, digits.x_val[:0], digits.y_val[:0])
    with pytest.raises(ConfigError, match="batch_size"):
        gc.evaluate(w, digits.x_test, digits.y_test, batch_size=0)


# --------------------------------------------------------------------------- devices


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cuda").type == expected  # falls back to the CPU without CUDA
    with pytest.raises(ConfigError, match="device"):
        resolve_device("tpu")
    with pytest.raises(ConfigError, match="device"):
        resolve_device("not a device")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(digits: Dataset) -> None:
    def run(device: str) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
        model = build_model("cnn", in_features=64, num_classes=10, image_shape=(1, 8, 8), seed=0)
        gc = GradientComputer(model, device=device)
        w0 = gc.get_params()
        g, _ = gc.compute_gradient(w0, digits.x_train[:32], digits.y_train[:32])
        w = gc.local_steps(
            w0, digits.x_train, digits.y_train, steps=20, batch_size=32, lr=0.1, rng=0
        )
        return g, w, gc.evaluate(w, digits.x_test, digits.y_test)

    g_cpu, w_cpu, m_cpu = run("cpu")
    g_gpu, w_gpu, m_gpu = run("cuda")
    assert g_gpu.dtype == np.float32 and isinstance(g_gpu, np.ndarray)
    np.testing.assert_allclose(g_gpu, g_cpu, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(w_gpu, w_cpu, rtol=1e-3, atol=1e-4)
    assert m_gpu[0] == pytest.approx(m_cpu[0], rel=1e-3)


# --------------------------------------------------------------------------- flat buffers


def _per_tensor_computer(name: str, seed: int) -> GradientComputer:
    """A computer forced onto the per-tensor path: the reference for the flat buffers."""
    kw = {"in_features": 64, "num_classes": 10, "image_shape": (1, 8, 8)}
    gc = GradientComputer(build_model(name, seed=seed, **kw))
    gc._flat = gc._flat_grad = None
    gc._bind_flat = lambda: None  # type: ignore[method-assign]
    assert not gc._intact()
    return gc


@pytest.mark.parametrize("name", ["logreg", "mlp", "cnn"])
def test_flat_buffers_bit_identical_to_per_tensor_path(name: str, digits: Dataset) -> None:
    # The parameters (and gradients) of the computer are views of one buffer each; every
    # result must equal, bit for bit, the per-tensor loads, reads and SGD steps.
    kw = {"in_features": 64, "num_classes": 10, "image_shape": (1, 8, 8)}
    fast = GradientComputer(build_model(name, seed=5, **kw))
    fast._closed_form = None  # the closed-form logreg gradient has its own tests below
    slow = _per_tensor_computer(name, seed=5)
    assert fast._intact()
    w = fast.get_params()
    assert np.array_equal(w, slow.get_params())
    rng = np.random.default_rng(1)
    for _ in range(3):
        idx = rng.choice(len(digits.y_train), 16, replace=False)
        x, y = digits.x_train[idx], digits.y_train[idx]
        (g1, l1), (g2, l2) = fast.compute_gradient(w, x, y), slow.compute_gradient(w, x, y)
        assert np.array_equal(g1, g2) and l1 == l2
        w1 = fast.local_steps(w, x, y, steps=4, batch_size=5, lr=0.1, rng=7)
        w2 = slow.local_steps(w, x, y, steps=4, batch_size=5, lr=0.1, rng=7)
        assert np.array_equal(w1, w2) and fast.last_train_loss == slow.last_train_loss
        assert fast.evaluate(w1, digits.x_test, digits.y_test) == slow.evaluate(
            w1, digits.x_test, digits.y_test
        )
        w = w1 - np.float32(0.01) * g1
    # Results are copies: the next call must not change a returned gradient or vector.
    g, _ = fast.compute_gradient(w, digits.x_train[:8], digits.y_train[:8])
    before = g.copy()
    fast.compute_gradient(w * 2, digits.x_train[8:16], digits.y_train[8:16])
    assert np.array_equal(g, before)


def test_flat_buffers_survive_repointed_parameters(digits: Dataset) -> None:
    # A user (or a module) may replace p.grad or p.data; the computer must notice, read the
    # tensors as they are, and bind them again at the next load.
    gc = GradientComputer(tiny_mlp(seed=6))
    w = gc.get_params()
    x, y = np.ones((4, 5), np.float32), np.array([0, 1, 2, 0])
    g_ref, _ = GradientComputer(tiny_mlp(seed=6)).compute_gradient(w, x, y)
    for p in gc.model.parameters():
        p.grad = None
    assert not gc._intact()
    g, _ = gc.compute_gradient(w, x, y)
    assert np.array_equal(g, g_ref) and gc._intact()
    # Re-pointed data (e.g. a module re-allocating its weights): values are kept.
    first = next(gc.model.parameters())
    first.data = first.data.clone() + 1
    assert not gc._intact()
    shifted = gc.get_params()  # read per tensor while unbound
    assert np.array_equal(shifted[: first.numel()], w[: first.numel()] + 1)
    g2, _ = gc.compute_gradient(w, x, y)  # loads w: bound again, w restored
    assert gc._intact() and np.array_equal(g2, g_ref)
    assert np.array_equal(gc.get_params(), w)


def test_flat_buffers_fall_back_for_mixed_dtypes() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    model[0].bias.data = model[0].bias.data.double()
    gc = GradientComputer(model, loss="mse")
    assert gc._flat is None and not gc._intact()
    w = gc.get_params()
    assert w.dtype == np.float32 and w.shape == (8,)


# --------------------------------------------------------------------------- closed form


def _logreg_pair(seed: int = 2) -> tuple[GradientComputer, GradientComputer]:
    """The built-in logreg with its closed-form gradient, and the same on autograd."""
    kw = {"in_features": 64, "num_classes": 10, "image_shape": ()}
    fast = GradientComputer(build_model("logreg", seed=seed, **kw))
    slow = GradientComputer(build_model("logreg", seed=seed, **kw))
    assert fast._closed_form is not None
    slow._closed_form = None
    return fast, slow


@pytest.mark.parametrize("numpy_path", [True, False], ids=["numpy", "torch"])
@pytest.mark.parametrize("scale", [1.0, 300.0])
@pytest.mark.parametrize("batch", [1, 7, 32])
def test_closed_form_logreg_gradient_matches_autograd(
    digits: Dataset, batch: int, scale: float, numpy_path: bool
) -> None:
    # scale 300: logits in the thousands, where a naive softmax overflows float32. The
    # torch branch (what a CUDA device runs) is exercised here on CPU tensors.
    fast, slow = _logreg_pair()
    fast._closed_form_numpy = numpy_path
    rng = np.random.default_rng(batch)
    w = (fast.get_params() * np.float32(scale)).astype(np.float32)
    for _ in range(5):
        idx = rng.choice(len(digits.y_train), batch, replace=False)
        x, y = readonly(digits.x_train[idx]), readonly(digits.y_train[idx])
        (g1, l1), (g2, l2) = fast.compute_gradient(w, x, y), slow.compute_gradient(w, x, y)
        assert np.isfinite(g1).all() and np.isfinite(l1)
        np.testing.assert_allclose(g1, g2, rtol=1e-4, atol=1e-6 * max(1.0, np.abs(g2).max()))
        assert l1 == pytest.approx(l2, rel=1e-5, abs=1e-6)
        w = w - np.float32(0.1) * g1


def test_closed_form_logreg_gradient_matches_float64_formula() -> None:
    # Independent of torch: the textbook gradient (P - Y)^T x / B in float64.
    fast, _ = _logreg_pair(seed=9)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(13, 64)).astype(np.float32)
    y = np.array([0, 9, 3, 3, 3, 1, 2, 8, 7, 6, 5, 4, 9])
    w = rng.normal(size=fast.num_parameters).astype(np.float32)
    grad, loss = fast.compute_gradient(w, x, y)
    weight, bias = w[:640].reshape(10, 64).astype(np.float64), w[640:].astype(np.float64)
    z = x.astype(np.float64) @ weight.T + bias
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(10)[y]
    want = np.concatenate([((p - onehot).T @ x / 13).ravel(), (p - onehot).sum(0) / 13])
    np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-6)
    assert loss == pytest.approx(float(np.mean(-np.log(p[np.arange(13), y]))), rel=1e-5)


def test_closed_form_local_steps_follow_autograd(digits: Dataset) -> None:
    fast, slow = _logreg_pair(seed=4)
    w = fast.get_params()
    x, y = digits.x_train[:200], digits.y_train[:200]
    w1 = fast.local_steps(w, x, y, steps=20, batch_size=16, lr=0.3, rng=3)
    w2 = slow.local_steps(w, x, y, steps=20, batch_size=16, lr=0.3, rng=3)
    np.testing.assert_allclose(w1, w2, rtol=1e-4, atol=1e-5)
    assert fast.last_train_loss == pytest.approx(slow.last_train_loss, rel=1e-5)


def test_closed_form_steps_aside_where_autograd_would_differ(digits: Dataset) -> None:
    fast, slow = _logreg_pair()
    w = fast.get_params()
    x = digits.x_train[:8]
    # Labels outside [0, K): the same error as the autograd path (cross_entropy's).
    bad = np.array([0, 1, 2, 3, 4, 5, 6, 10])
    with pytest.raises(Exception) as a:
        fast.compute_gradient(w, x, bad)
    with pytest.raises(Exception) as b:
        slow.compute_gradient(w, x, bad)
    assert type(a.value) is type(b.value) and str(a.value) == str(b.value)
    # A forward hook that changes the logits, and a frozen bias: autograd's answer.
    y = digits.y_train[:8]
    for computer in (fast, slow):
        computer.model.linear.register_forward_hook(lambda _m, _i, out: out * 2)
        computer.model.linear.bias.requires_grad_(False)
    (g1, _), (g2, _) = fast.compute_gradient(w, x, y), slow.compute_gradient(w, x, y)
    assert np.array_equal(g1, g2)
    assert np.all(g1[640:] == 0)  # the frozen bias gets no gradient
    # A subclass may change forward: not the built-in class, no closed form.
    from raysync.models.nets import LogisticRegression

    class Scaled(LogisticRegression):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 3 * super().forward(x)

    assert GradientComputer(Scaled(64, 10))._closed_form is None
    assert GradientComputer(build_model("logreg", in_features=64, num_classes=10,
                                        image_shape=(), seed=0), loss="mse")._closed_form is None
