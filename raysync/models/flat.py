"""Flat-parameter helpers: a model's weights as one float32 numpy vector.

The flat vector is the wire format between server and clients: parameters in the order of
``model.parameters()``, each flattened in C order, concatenated, ``float32``. Buffers (e.g.
batch-norm statistics) are not part of it; the models of :mod:`raysync.models` have none.

:class:`GradientComputer` owns one module and evaluates gradients, local SGD steps and
test metrics at any flat parameter vector, so a worker can serve many logical clients.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from raysync._validation import check_int, float32_overflow, tensor_to_numpy
from raysync.exceptions import ConfigError, DataError

__all__ = [
    "LOSS_NAMES",
    "METRIC_NAMES",
    "GradientComputer",
    "check_model_tensors",
    "get_flat_grad",
    "get_flat_params",
    "num_parameters",
    "resolve_device",
    "resolve_loss",
    "set_flat_params",
]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

#: Built-in losses (``[model] loss``); anything else is a ``"package.module:function"``.
LOSS_NAMES: tuple[str, ...] = ("cross_entropy", "mse")
#: Built-in metrics (``[model] metric``); anything else is a ``"package.module:function"``.
#: Every metric is "higher is better" (the tuner maximises it), as scikit-learn's scorers:
#: ``neg_loss`` is the mean loss negated.
METRIC_NAMES: tuple[str, ...] = ("accuracy", "neg_loss")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # A regression head of shape (B, 1) against targets (B,): same numbers, no broadcast.
    if output.shape != target.shape and output.numel() == target.numel():
        output = output.reshape(target.shape)
    return F.mse_loss(output, target.to(output.dtype))


_LOSSES: dict[str, LossFn] = {"cross_entropy": F.cross_entropy, "mse": _mse}


def resolve_loss(loss: str | LossFn) -> tuple[LossFn, str]:
    """Turn a loss name, ``"package.module:function"`` or callable into ``(fn, name)``.

    Names: ``"cross_entropy"`` and ``"mse"``.
    A loss is called as ``loss(output, target)`` with the model's output ``(B, ...)`` and
    the batch's labels or targets ``(B, ...)``, and returns the batch mean as a scalar
    tensor.

    Raises:
        ConfigError: The reference cannot be imported or is not callable.
    """
    from raysync._validation import import_object

    if isinstance(loss, str) and loss in _LOSSES:
        return _LOSSES[loss], loss
    fn = import_object("loss", loss)
    name = loss if isinstance(loss, str) else getattr(fn, "__qualname__", repr(fn))
    return fn, name


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"{value!r} ({type(value).__name__})"


def num_parameters(model: nn.Module) -> int:
    """Return the number of scalar parameters, the length of the flat vector.

    Args:
        model: The model.

    Returns:
        ``sum(p.numel() for p in model.parameters())``.
    """
    return sum(p.numel() for p in model.parameters())


def _flat_ready(p: torch.Tensor) -> bool:
    return (
        not p.is_meta and not p.is_nested and p.layout == torch.strided
        and p.dtype.is_floating_point
    )  # fmt: skip


def check_model_tensors(model: nn.Module, what: str | None = None) -> None:
    """Refuse a module whose parameters cannot travel as the flat float32 vector.

    Every path that turns a user's module into flat parameters (or loads them into it)
    calls this first, so a bad module is one line instead of an error deep in torch.

    Args:
        model: The module.
        what: What the module is, the start of the message (e.g. ``"model factory
            'pkg.mod:make'"``); default ``"model <ClassName>"``.

    Raises:
        ConfigError: A parameter or buffer on the ``meta`` device (a shape without values:
            nothing to train or copy; moving it off ``meta`` fails), a sparse or nested
            parameter (the flat vector is dense), or a parameter that is not floating
            point (complex, integer or quantized); the message names the parameter, its
            dtype, layout and device, and the rule.
    """
    if all(_flat_ready(p) for p in model.parameters()) and not any(
        b.is_meta for b in model.buffers()
    ):
        return  # the common case, without building every parameter's dotted name
    who = what if what is not None else f"model {type(model).__name__}"
    for name, p in model.named_parameters():
        if p.device.type == "meta":
            raise ConfigError(
                f"{who}: parameter {name!r} ({p.dtype}, shape {tuple(p.shape)}) is on the "
                "'meta' device, which has shapes but no values; build the model on the CPU "
                "(or call .to_empty(device='cpu') and initialise its parameters)"
            )
        if p.is_nested or p.layout != torch.strided:
            kind = "nested tensor" if p.is_nested else f"sparse tensor (layout {p.layout})"
            raise ConfigError(
                f"{who}: parameter {name!r} is a {kind}; parameters travel as one "
                "dense flat float32 vector: make it dense (nn.Parameter(p.to_dense()))"
            )
        if not p.dtype.is_floating_point:
            raise ConfigError(
                f"{who}: parameter {name!r} is {p.dtype}, not floating point; parameters "
                "travel as flat float32"
            )
    for name, b in model.named_buffers():
        if b.device.type == "meta":
            raise ConfigError(
                f"{who}: buffer {name!r} ({b.dtype}, shape {tuple(b.shape)}) is on the "
                "'meta' device, which has shapes but no values; build the model on the CPU"
            )


#: Models that passed :func:`check_model_tensors`: the flat-vector calls run on every task,
#: and the check (a pass over parameters and buffers) cost 16-17 us per call on a small CNN,
#: +44-63 % on setting or getting its parameters (measured under load).
_CHECKED: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def _check_once(model: nn.Module) -> None:
    """:func:`check_model_tensors` the first time ``model`` is flattened or filled."""
    if model not in _CHECKED:
        check_model_tensors(model)
        _CHECKED.add(model)


def _flatten(tensors: list[torch.Tensor]) -> FloatArray:
    if not tensors:
        return np.empty(0, dtype=np.float32)
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    # cat made a fresh tensor, so the numpy view below is the only owner: a copy.
    return flat.to(device="cpu", dtype=torch.float32).numpy()


def get_flat_params(model: nn.Module) -> FloatArray:
    """Return a copy of the model's parameters as one float32 vector.

    Args:
        model: The model (any device).

    Returns:
        A new writable ``float32`` array of length :func:`num_parameters`.

    Raises:
        ConfigError: A parameter that cannot be flattened (see
            :func:`check_model_tensors`).
    """
    _check_once(model)
    return _flatten(list(model.parameters()))


def get_flat_grad(model: nn.Module) -> FloatArray:
    """Return a copy of the model's gradients as one float32 vector.

    Args:
        model: The model (any device); parameters without a gradient count as zero.
            Sparse gradients (``nn.Embedding(sparse=True)``) are made dense.

    Returns:
        A new ``float32`` array of length :func:`num_parameters`.

    Raises:
        ConfigError: A parameter that cannot be flattened (see
            :func:`check_model_tensors`).
    """
    _check_once(model)
    grads = []
    for p in model.parameters():
        g = p.grad
        if g is None:
            g = torch.zeros_like(p)
        elif g.layout != torch.strided:
            g = g.to_dense()  # same values: the flat vector is dense
        grads.append(g)
    return _flatten(grads)


def _copy_out(flat: torch.Tensor) -> FloatArray:
    """A float32 numpy copy of a flat buffer (the buffer is reused by the next call)."""
    if flat.device.type == "cpu":
        return flat.detach().numpy().copy()
    return flat.detach().to("cpu").numpy()


def _array_of(value: Any, what: str, error: type[Exception]) -> np.ndarray:
    """``value`` (array, tensor, list) as a numpy array, or one line saying why not.

    Tensors go through :func:`raysync._validation.tensor_to_numpy` (detached, on the CPU,
    narrow floats widened to float32).

    Raises:
        error: A tensor without usable values (see that function), or an object numpy
            cannot read.
    """
    if isinstance(value, torch.Tensor):
        return tensor_to_numpy(value, what, error, verb="pass")
    try:
        return np.asarray(value)
    except Exception as exc:  # the caller's object: __array__ may raise anything
        raise error(f"{what} is not an array: {type(exc).__name__}: {exc}") from exc


def _fits_float32(arr: np.ndarray, what: str, error: type[Exception]) -> None:
    """Refuse finite values a float32 cast would turn into infinity (checked as given)."""
    value = float32_overflow(arr)
    if value is not None:
        raise error(
            f"{what} holds {value}, which exceeds float32's range ±3.4e38 (raysync "
            "computes in float32)"
        )


def _as_flat_tensor(flat: npt.ArrayLike, expected: int) -> torch.Tensor:
    arr = _array_of(flat, "flat parameter vector", ConfigError)
    if arr.ndim != 1 or arr.shape[0] != expected:
        raise ConfigError(f"flat parameter vector must have shape ({expected},), got {arr.shape}")
    if arr.dtype.kind != "f":
        raise ConfigError(f"flat parameter vector must be floating point, got {arr.dtype}")
    _fits_float32(arr, "flat parameter vector", ConfigError)
    if arr.dtype == np.float32 and arr.flags.writeable and arr.flags.c_contiguous:
        return torch.from_numpy(arr)  # no copy
    # Read-only input (e.g. from Ray's object store) or other dtype: one copy, no warning.
    return torch.from_numpy(np.array(arr, dtype=np.float32, order="C"))


def set_flat_params(model: nn.Module, flat: npt.ArrayLike) -> None:
    """Copy a flat vector into the model's parameters, in place.

    Args:
        model: The model (any device).
        flat: A 1-D floating vector of length :func:`num_parameters`; read-only arrays are
            accepted and never modified.

    Raises:
        ConfigError: If the vector has the wrong shape or is not floating point, or a
            parameter cannot hold it (see :func:`check_model_tensors`; copying into a
            ``meta`` parameter would silently do nothing).
    """
    _check_once(model)
    params = list(model.parameters())
    src = _as_flat_tensor(flat, sum(p.numel() for p in params))
    if params and params[0].device != src.device:
        src = src.to(params[0].device)
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.copy_(src[offset : offset + n].view_as(p))
            offset += n


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"`` into a usable device.

    CUDA is used when it is asked for and available. A CUDA request on a machine without
    CUDA falls back to the CPU with a logged warning (``"auto"`` falls back silently), so
    one config runs on GPU and CPU-only machines alike.

    Args:
        device: The request.

    Returns:
        The torch device.

    Raises:
        ConfigError: If the string is not a CPU/CUDA device, or names a CUDA index that does
            not exist.
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device must be 'cpu', 'cuda[:i]' or 'auto', got {device!r}") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            logger.warning("device %r requested but CUDA is not available; using the CPU", device)
            return torch.device("cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {device!r} requested but only {torch.cuda.device_count()} "
                f"CUDA device(s) exist"
            )
    elif dev.type != "cpu":
        raise ConfigError(f"device must be 'cpu', 'cuda[:i]' or 'auto', got {device!r}")
    return dev


def _as_numpy(a: npt.ArrayLike, dtype: type[np.generic], what: str) -> np.ndarray:
    """``a`` as ``dtype`` (float32 inputs/targets or int64 labels); the rules as given.

    The common case, an array of ``dtype`` already, costs one ``np.asarray``.

    Raises:
        DataError: See :func:`_array_of`; a non-numeric dtype; labels that are not
            integers or exceed int64; floats beyond float32's range.
    """
    arr = _array_of(a, what, DataError)
    if arr.dtype != dtype:
        if arr.dtype.kind not in "biuf":
            raise DataError(f"{what} must be a numeric array, got dtype {arr.dtype}")
        if dtype is np.int64 and arr.size:
            if arr.dtype.kind not in "iu":
                raise DataError(f"{what} must be integer class labels, got dtype {arr.dtype}")
            if int(arr.max()) > np.iinfo(np.int64).max:  # a uint64 would wrap
                raise DataError(f"{what} holds label {int(arr.max())}, beyond int64")
        if dtype is np.float32:
            _fits_float32(arr, what, DataError)
        arr = arr.astype(dtype)
    return arr


def _to_tensor(arr: np.ndarray, device: torch.device) -> torch.Tensor:
    if not (arr.flags.writeable and arr.flags.c_contiguous):
        # torch.from_numpy warns on read-only arrays; a batch-sized copy is cheap.
        arr = np.array(arr, order="C")
    t = torch.from_numpy(arr)
    return t if device.type == "cpu" else t.to(device, non_blocking=True)


class GradientComputer:
    """Evaluate a model at arbitrary flat parameter vectors.

    One module instance is reused for every call: each call first copies the given flat
    vector into it, so the computer holds no client state and can serve many logical
    clients in turn. Inputs are numpy arrays (flat images ``(N, in_features)`` and
    ``int64`` labels); read-only arrays are accepted. Results are always ``float32`` numpy
    vectors on the CPU and Python floats. The loss is the cross-entropy, averaged over the
    batch. The thread count of torch is left to the caller. The built-in ``logreg`` model
    under the built-in cross-entropy gets its gradient in closed form rather than through
    autograd (same values to float32 rounding, about half the time per minibatch).

    Args:
        model: The module to use; it is moved to ``device`` and owned by the computer from
            then on (its current parameters are what :meth:`get_params` first returns).
        device: ``"cpu"`` (default), ``"cuda"``, ``"cuda:i"`` or ``"auto"``.

    Raises:
        ConfigError: If ``device`` is not a valid device (see :func:`resolve_device`), or
            the model's parameters cannot travel as a flat vector (see
            :func:`check_model_tensors`).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str | torch.device = "cpu",
        loss: str | LossFn = "cross_entropy",
        metric: str | LossFn | None = None,
    ) -> None:
        self._device = resolve_device(device)
        self._loss_fn, self._loss_name = resolve_loss(loss)
        self._classification = self._loss_name == "cross_entropy"
        if metric is None:
            metric = "accuracy" if self._classification else "neg_loss"
        self._metric_fn: LossFn | None = None
        if isinstance(metric, str) and metric in METRIC_NAMES:
            self._metric_name = metric
        else:
            from raysync._validation import import_object

            self._metric_fn = import_object("metric", metric)
            self._metric_name = metric if isinstance(metric, str) else repr(metric)
        check_model_tensors(model)  # before .to(): moving a meta module fails inside torch
        self._model = model.to(self._device)
        self._params = list(self._model.parameters())
        self._num_parameters = sum(p.numel() for p in self._params)
        self._flat: torch.Tensor | None = None
        self._flat_grad: torch.Tensor | None = None
        self._pointers: list[tuple[int, int]] = []
        self._bind_flat()
        # The built-in logistic regression under the built-in cross-entropy: its gradient
        # in closed form (see _softmax_regression_step), without autograd's graph.
        self._closed_form = self._softmax_regression()
        self._closed_form_numpy = True  # on the CPU (tests switch it off to cover torch's)
        #: Mean training loss over the steps of the last :meth:`local_steps` call.
        self.last_train_loss: float = math.nan

    @property
    def model(self) -> nn.Module:
        """The module the computer evaluates (on :attr:`device`)."""
        return self._model

    @property
    def device(self) -> torch.device:
        """The torch device computations run on."""
        return self._device

    @property
    def num_parameters(self) -> int:
        """Length of the flat parameter vector."""
        return self._num_parameters

    def _bind_flat(self) -> None:
        """Make every parameter and its gradient a view into one flat buffer each.

        Loading a flat vector is then one copy, reading the gradient one copy and an SGD
        step one fused ``add_`` instead of one call per tensor (the per-tensor calls were
        most of a small model's time per gradient). Models whose parameters differ in
        dtype or device keep the per-tensor path.
        """
        params = self._params
        if not params or any(
            p.dtype != torch.float32 or p.device != params[0].device for p in params
        ):
            self._flat = self._flat_grad = None
            return
        with torch.no_grad():
            flat = torch.cat([p.detach().reshape(-1) for p in params])
            grad = torch.zeros_like(flat)
            offset = 0
            for p in params:
                n = p.numel()
                p.data = flat[offset : offset + n].view_as(p)
                p.grad = grad[offset : offset + n].view_as(p)
                offset += n
        self._flat, self._flat_grad = flat, grad
        # Where each view starts; _intact() compares against these.
        self._pointers = [(p.data_ptr(), p.grad.data_ptr()) for p in params]  # type: ignore[union-attr]

    def _intact(self) -> bool:
        """Whether the parameters and gradients still view the flat buffers.

        A module may re-point them (``model.to``, a cuDNN RNN flattening its weights, a
        user setting ``p.grad = None``); the per-tensor path then reads them.
        """
        if self._flat is None:
            return False
        for p, (data, grad) in zip(self._params, self._pointers, strict=True):
            g = p.grad
            if p.data_ptr() != data or g is None or g.data_ptr() != grad:
                return False
        return True

    def _bound(self) -> bool:
        """:meth:`_intact`, binding the parameters again where they were re-pointed.

        Values are kept and gradients zeroed: only for callers about to overwrite both.
        """
        if self._intact():
            return True
        self._params = list(self._model.parameters())
        self._bind_flat()
        return self._flat is not None

    def get_params(self) -> FloatArray:
        """Return a copy of the module's current parameters as a flat float32 vector."""
        if self._intact():
            assert self._flat is not None
            return _copy_out(self._flat)
        return get_flat_params(self._model)

    def _load(self, flat_params: npt.ArrayLike) -> None:
        if not self._bound():
            set_flat_params(self._model, flat_params)
            return
        assert self._flat is not None
        src = _as_flat_tensor(flat_params, self._num_parameters)
        with torch.no_grad():
            self._flat.copy_(src)

    def _train_mode(self) -> None:
        # Module.train() walks every submodule; evaluate() is the only caller that leaves it.
        if not self._model.training:
            self._model.train()

    def _flat_gradient(self) -> FloatArray:
        if self._intact():
            assert self._flat_grad is not None
            return _copy_out(self._flat_grad)
        return get_flat_grad(self._model)

    @property
    def loss_name(self) -> str:
        """The loss: ``cross_entropy``, ``mse`` or the user's reference."""
        return self._loss_name

    @property
    def metric_name(self) -> str:
        """The metric :meth:`evaluate` returns: ``accuracy``, ``loss`` or the user's."""
        return self._metric_name

    def _batch(self, x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        xa = _as_numpy(x, np.float32, "x")
        if self._classification:
            ya = _as_numpy(y, np.int64, "y")
            ok = ya.ndim == 1
        else:
            # Regression targets or a custom loss: integer labels stay int64, real
            # targets travel as float32; any trailing shape is the loss's business.
            ya = _array_of(y, "y", DataError)
            ya = _as_numpy(ya, np.int64 if ya.dtype.kind in "iub" else np.float32, "y")
            ok = ya.ndim >= 1
        if not ok or xa.ndim < 2 or xa.shape[0] != ya.shape[0]:
            raise DataError(
                f"x must be (N, features) and y (N,) with the same N, got shapes "
                f"{xa.shape} and {ya.shape}"
            )
        return xa, ya

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The configured loss of one batch, checked to be a scalar tensor.

        Raises:
            DataError: The loss function returned something else than a one-element
                tensor (the batch mean).
        """
        value = self._loss_fn(output, target)
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise DataError(
                f"loss {self._loss_name!r} must return a scalar tensor (the batch mean), "
                f"got {_describe(value)} for a batch of {target.shape[0]}"
            )
        return value.reshape(())

    def _softmax_regression(self) -> nn.Linear | None:
        """The linear layer of a built-in ``logreg`` model under the built-in loss, else None.

        Only the exact built-in class qualifies (a subclass may change ``forward``).
        """
        from raysync.models.nets import LogisticRegression

        if type(self._model) is not LogisticRegression or self._loss_fn is not F.cross_entropy:
            return None
        linear = self._model.linear
        if type(linear) is not nn.Linear or linear.bias is None:
            return None
        return linear

    def _softmax_regression_step(self, xb: torch.Tensor, yb: torch.Tensor) -> float | None:
        """Mean cross-entropy of multinomial logistic regression and its exact gradient.

        For logits ``z = x W^T + b`` (``x``: ``(B, d)``, ``W``: ``(K, d)``), softmax ``P``
        and one-hot labels ``Y``: loss ``mean_n(logsumexp(z_n) - z_{n, y_n})``, gradient
        ``G = (P - Y) / B``, ``dW = G^T x``, ``db = sum_n G_n`` (e.g. Bishop, *Pattern
        Recognition and Machine Learning*, 2006, eq. 4.109). A few array operations instead
        of autograd's graph: a digits task took 164 instead of 306 us (measured 2026-12-01).
        Written into the flat gradient views. Returns None (the caller takes the autograd
        path) whenever that path could behave differently: hooks on the modules, frozen
        parameters, re-pointed views, labels outside ``[0, K)`` (``cross_entropy``'s own
        error or ``ignore_index``), or inputs that are not floating point.
        """
        linear = self._closed_form
        assert linear is not None
        model = self._model
        weight, bias = linear.weight, linear.bias
        if (
            model._forward_hooks or model._forward_pre_hooks or model._backward_hooks
            or linear._forward_hooks or linear._forward_pre_hooks or linear._backward_hooks
            or not (weight.requires_grad and bias.requires_grad)
            or not xb.is_floating_point() or xb.dtype != weight.dtype
            or yb.dtype != torch.int64 or yb.ndim != 1 or not self._intact()
        ):  # fmt: skip
            return None
        batch = xb.shape[0]
        x = xb.reshape(batch, -1)
        classes = weight.shape[0]
        if x.shape[1] != weight.shape[1] or batch == 0:
            return None
        assert weight.grad is not None and bias.grad is not None
        if xb.device.type == "cpu" and self._closed_form_numpy:
            # numpy on the tensors' own memory: a microsecond per operation where each
            # torch call costs several, and the minibatch is tiny.
            xn = x.numpy()
            yn = yb.numpy()
            if int(yn.min()) < 0 or int(yn.max()) >= classes:
                return None
            shifted = xn @ weight.detach().numpy().T
            shifted += bias.detach().numpy()
            shifted -= shifted.max(axis=1, keepdims=True)  # logits less their row maximum
            g = np.exp(shifted)
            total = g.sum(axis=1, keepdims=True)
            rows = np.arange(batch)
            loss = (float(np.log(total).sum()) - float(shifted[rows, yn].sum())) / batch
            g /= total
            g[rows, yn] -= 1.0
            g *= np.float32(1.0 / batch)
            np.matmul(g.T, xn, out=weight.grad.numpy())
            g.sum(axis=0, out=bias.grad.numpy())
            return loss
        with torch.no_grad():
            if int(yb.min()) < 0 or int(yb.max()) >= classes:
                return None
            logits = torch.addmm(bias, x, weight.t())
            lse = torch.logsumexp(logits, dim=1, keepdim=True)
            loss_t = (lse.squeeze(1) - logits.gather(1, yb.unsqueeze(1)).squeeze(1)).mean()
            g = torch.exp(logits - lse)
            g.scatter_add_(1, yb.unsqueeze(1), torch.full_like(lse, -1.0))
            g /= batch
            torch.mm(g.t(), x, out=weight.grad)
            torch.sum(g, dim=0, out=bias.grad)
        return float(loss_t)

    def _loss_grad_step(self, xb: torch.Tensor, yb: torch.Tensor) -> float:
        """Forward + backward on one batch; leaves gradients in ``p.grad``."""
        if self._closed_form is not None:
            closed = self._softmax_regression_step(xb, yb)
            if closed is not None:
                return closed
        if self._bound():
            assert self._flat_grad is not None
            # backward() accumulates into the existing (viewed) gradients in place.
            self._flat_grad.zero_()
        else:
            for p in self._params:
                p.grad = None
        loss = self.loss(self._model(xb), yb)
        if not loss.requires_grad:
            raise DataError(
                f"loss {self._loss_name!r} returned a tensor without a gradient "
                "(requires_grad is False): compute it from the model's output with torch "
                "operations, without .detach(), .item() or numpy"
            )
        loss.backward()
        return float(loss.detach())

    def compute_gradient(
        self, flat_params: npt.ArrayLike, x: npt.ArrayLike, y: npt.ArrayLike
    ) -> tuple[FloatArray, float]:
        """Return the gradient and value of the mean cross-entropy on one batch.

        Args:
            flat_params: Parameters to evaluate at, length :attr:`num_parameters`.
            x: Inputs ``(B, in_features)``, ``B >= 1``.
            y: Labels ``(B,)``.

        Returns:
            ``(grad, loss)``: the flat ``float32`` gradient and the loss as a float.

        Raises:
            ConfigError: If ``flat_params`` has the wrong length.
            DataError: If ``x`` and ``y`` do not match or are empty.
        """
        self._load(flat_params)
        xa, ya = self._batch(x, y)
        if ya.size == 0:
            raise DataError("compute_gradient needs a non-empty batch")
        self._train_mode()
        loss = self._loss_grad_step(_to_tensor(xa, self._device), _to_tensor(ya, self._device))
        return self._flat_gradient(), loss

    def local_steps(
        self,
        flat_params: npt.ArrayLike,
        x: npt.ArrayLike,
        y: npt.ArrayLike,
        *,
        steps: int,
        batch_size: int,
        lr: float,
        rng: np.random.Generator | int,
    ) -> FloatArray:
        """Run ``steps`` plain SGD steps from ``flat_params`` on a client's data.

        Minibatches are drawn without replacement from a random permutation of the data,
        reshuffled whenever it is used up (so the last batch of a pass may be smaller).
        Each step is ``w <- w - lr * grad`` of the mean cross-entropy on the batch. The
        mean loss over the steps is stored in :attr:`last_train_loss`.

        Args:
            flat_params: Starting parameters (e.g. the model received from the server).
            x: The client's inputs ``(N, in_features)``.
            y: The client's labels ``(N,)``.
            steps: Number of SGD steps ``E >= 0`` (0 returns a copy of ``flat_params``).
            batch_size: Minibatch size, ``>= 1`` (capped at ``N``).
            lr: Learning rate, ``> 0``.
            rng: Generator (advanced) or seed of the batch order.

        Returns:
            The new flat ``float32`` parameters.

        Raises:
            ConfigError: If a hyper-parameter is out of range or ``flat_params`` has the
                wrong length.
            DataError: If ``x`` and ``y`` do not match, or are empty while ``steps > 0``.
        """
        check_int("steps", steps, minimum=0)
        check_int("batch_size", batch_size, minimum=1)
        if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
            raise ConfigError(f"lr must be a finite number > 0, got {lr!r}")
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self._load(flat_params)
        xa, ya = self._batch(x, y)
        n = ya.shape[0]
        if steps > 0 and n == 0:
            raise DataError("local_steps needs at least one sample")
        self._train_mode()
        total = 0.0
        perm = np.empty(0, dtype=np.int64)
        pos = n  # forces a fresh permutation at the first step
        for _ in range(steps):
            if pos >= n:
                perm, pos = gen.permutation(n), 0
            idx = perm[pos : pos + batch_size]
            pos += batch_size
            # Fancy indexing yields fresh writable arrays: from_numpy needs no extra copy.
            total += self._loss_grad_step(
                _to_tensor(xa[idx], self._device), _to_tensor(ya[idx], self._device)
            )
            with torch.no_grad():
                if self._intact():
                    assert self._flat is not None and self._flat_grad is not None
                    self._flat.add_(self._flat_grad, alpha=-lr)
                else:
                    for p in self._params:
                        if p.grad is not None:
                            p.add_(p.grad, alpha=-lr)
        self.last_train_loss = total / steps if steps else math.nan
        return self.get_params()

    def evaluate(
        self,
        flat_params: npt.ArrayLike,
        x: npt.ArrayLike,
        y: npt.ArrayLike,
        batch_size: int = 2048,
    ) -> tuple[float, float]:
        """Return the mean cross-entropy and the accuracy on a dataset.

        Args:
            flat_params: Parameters to evaluate.
            x: Inputs ``(N, in_features)``, ``N >= 1``.
            y: Labels ``(N,)``.
            batch_size: Rows per forward pass (memory bound only; results do not depend on
                it beyond float rounding).

        Returns:
            ``(loss, metric)`` as floats: the mean loss and the mean of
            :attr:`metric_name`, higher is better (accuracy in ``[0, 1]`` by default for
            the cross-entropy, the negated loss for other losses, or the user's metric,
            a batch mean weighted by batch size).

        Raises:
            ConfigError: If ``batch_size < 1`` or ``flat_params`` has the wrong length.
            DataError: If ``x`` and ``y`` do not match or are empty.
        """
        check_int("batch_size", batch_size, minimum=1)
        self._load(flat_params)
        xa, ya = self._batch(x, y)
        n = ya.shape[0]
        if n == 0:
            raise DataError("evaluate needs at least one sample (is the split empty?)")
        self._model.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self._device)
        metric_sum = torch.zeros((), dtype=torch.float64, device=self._device)
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                xb = _to_tensor(xa[start : start + batch_size], self._device)
                yb = _to_tensor(ya[start : start + batch_size], self._device)
                out = self._model(xb)
                rows = yb.shape[0]
                if self._loss_name == "cross_entropy":
                    batch_loss = F.cross_entropy(out, yb, reduction="sum").double()
                else:
                    batch_loss = self.loss(out, yb).double() * rows
                loss_sum += batch_loss
                if self._metric_fn is not None:
                    metric_sum += self._metric_value(out, yb) * rows
                elif self._metric_name == "accuracy":
                    metric_sum += (out.argmax(dim=1) == yb).sum().double()
                else:  # neg_loss
                    metric_sum -= batch_loss
        self._model.train()
        return float(loss_sum) / n, float(metric_sum) / n

    def _metric_value(self, out: torch.Tensor, target: torch.Tensor) -> float:
        """The user's metric of one batch as a finite float.

        The metric contract: ``metric(output, target)`` returns the batch mean, higher is
        better, as a one-element tensor, a Python float or int, or a numpy scalar.

        Raises:
            DataError: Another type, or a NaN or infinite value.
        """
        fn = self._metric_fn
        if fn is None:
            raise ConfigError(f"metric {self._metric_name!r} is built in, not a function")
        value = fn(out, target)
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            number = float(value.reshape(()).double())
        elif isinstance(value, int | float | np.integer | np.floating) and not isinstance(
            value, bool
        ):
            number = float(value)
        else:
            raise DataError(
                f"metric {self._metric_name!r} must return a number (a one-element tensor, "
                f"float or numpy scalar: the batch mean), got {_describe(value)}"
            )
        if not math.isfinite(number):
            raise DataError(
                f"metric {self._metric_name!r} returned {number} (not finite) on a batch of "
                f"{target.shape[0]}"
            )
        return number

    def __repr__(self) -> str:
        return (
            f"GradientComputer(model={type(self._model).__name__}, "
            f"num_parameters={self._num_parameters}, device={self._device})"
        )
