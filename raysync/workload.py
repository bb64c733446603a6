"""The training workload of a run: data, per-client partitions, the model and its loss.

:func:`build_workload` turns a :class:`~raysync.config.SystemConfig` (or a config plus
callables built in code) into a :class:`Workload`, shared by the simulator and the Ray
runtime so both train on exactly the same partitions from exactly the same initial
parameters.

The workload plug-in contract (docs: README "Bring your own model"):

* **Model factory** (``[model] factory = "package.module:function"``, keyword arguments
  from ``[model.kwargs]``; or a callable given to :func:`build_workload`): returns a
  ``torch.nn.Module`` mapping a batch of inputs ``(B, *sample_shape)`` to outputs
  ``(B, ...)``. The factory may also name any of the keyword arguments
  ``in_features`` (``prod(sample_shape)``), ``num_classes`` (classes or outputs),
  ``input_shape`` / ``image_shape`` (``sample_shape``) and ``seed``; raysync fills in
  those it names. A factory without ``seed`` is called with torch's RNG seeded by the
  run's model seed inside ``torch.random.fork_rng`` (the global RNG is left as it was),
  so the same config gives the same initial parameters in any process. Parameters travel
  as one flat float32 vector on the CPU (buffers such as BatchNorm statistics do not
  travel: prefer GroupNorm/LayerNorm).
* **Data factory** (``[data] factory``, ``[data.kwargs]``): see :mod:`raysync.data.user`.
* **Loss** (``[model] loss``): ``"cross_entropy"`` (int64 labels, outputs ``(B, K)``),
  ``"mse"`` (float targets with as many numbers per sample as outputs) or
  ``"package.module:function"`` called as ``loss(output, target)`` and returning the
  batch mean as a scalar tensor. **Metric** (``[model] metric``): ``"accuracy"``
  (default with the cross-entropy), ``"neg_loss"`` (the loss negated; default otherwise)
  or a reference with the loss's signature, averaged over samples. Higher is better for
  every metric (the tuner maximises it; scikit-learn's scorer convention), so a user
  metric such as a mean absolute error is returned negated.

The built-in models and datasets are the first users of this contract: ``name = "cnn"``
is ``factory = "raysync.models.nets:cnn_factory"`` and ``dataset = "digits"`` is
``factory = "raysync.data.sources:load_digits_dataset"``. :func:`check_workload` probes
a workload (output shape against the labels, scalar and finite loss, finite gradient)
before any client runs; every failure is one line naming the factory, the rule and the
value.

Seeding (stable; results depend on it): the dataset's own train/validation/test split is
part of the problem, not of the run, so it uses a fixed seed (0); the run's root seed
``config.seed`` drives, through ``numpy.random.SeedSequence(config.seed,
spawn_key=(10, j))``, the training subsample (``j = 0``, when ``data.max_train_samples``
caps the training set), the partition over clients (``j = 1``) and the model's
initialisation (``j = 2``). The simulator's own streams use other spawn keys.

Shipping: a :class:`Workload` holds the whole dataset; the runtime sends each client actor
only its :class:`ClientShard` (its rows) and the :class:`ModelSpec` (a few integers), both
cheap to pickle.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from raysync._validation import first_line, import_object
from raysync.config import SystemConfig
from raysync.exceptions import (
    LOWER_THE_STEP,
    ConfigError,
    DataError,
    DivergenceError,
    RaySyncError,
)

if TYPE_CHECKING:
    import torch

    from raysync.data import Dataset
    from raysync.models import GradientComputer

__all__ = [
    "ClientShard",
    "ModelSpec",
    "Workload",
    "build_workload",
    "builtin_num_params",
    "check_finite_loss",
    "check_finite_params",
    "check_workload",
    "load_config_dataset",
]

logger = logging.getLogger(__name__)

#: Keyword arguments raysync fills in when a model factory names them.
MODEL_CONTEXT_KEYS: tuple[str, ...] = (
    "in_features",
    "num_classes",
    "input_shape",
    "image_shape",
    "seed",
)

_KEY_WORKLOAD = 10
_SPLIT_SEED = 0


def _workload_rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_KEY_WORKLOAD, stream)))


def _describe_ref(ref: str | Callable[..., Any]) -> str:
    if isinstance(ref, str):
        return ref
    module = getattr(ref, "__module__", None) or "?"
    return f"{module}:{getattr(ref, '__qualname__', type(ref).__name__)}"


def _accepted(fn: Callable[..., Any]) -> set[str] | None:
    """Keyword names ``fn`` accepts (None when its signature cannot be read)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    return {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def call_factory(
    what: str,
    ref: str | Callable[..., Any],
    kwargs: Mapping[str, Any],
    context: Mapping[str, Any] | None = None,
) -> tuple[Any, bool]:
    """Import and call a user factory with its keyword arguments.

    Args:
        what: ``"model factory"`` or ``"data factory"`` (for messages).
        ref: ``"package.module:function"`` or a callable.
        kwargs: The user's keyword arguments (``[model.kwargs]`` / ``[data.kwargs]``).
        context: Values raysync passes to the keywords the factory names, unless the
            user gave them in ``kwargs``.

    Returns:
        ``(value, took_seed)``: what the factory returned, and whether it received
        ``seed`` from ``context``.

    Raises:
        ConfigError: The factory cannot be imported, does not accept the keyword
            arguments, or raised (the message names it and carries its error).
    """
    name = _describe_ref(ref)
    fn = import_object(what, ref)
    call = dict(kwargs)
    accepted = _accepted(fn)
    took_seed = False
    for key, value in (context or {}).items():
        if key not in call and accepted is not None and key in accepted:
            call[key] = value
            took_seed = took_seed or key == "seed"
    try:
        inspect.signature(fn).bind(**call)
    except TypeError as exc:
        raise ConfigError(
            f"{what} {name!r} cannot be called with keyword arguments {sorted(call)}: {exc}"
        ) from exc
    except ValueError:  # no readable signature (a builtin): let the call decide
        pass
    seed = (context or {}).get("seed")
    try:
        if took_seed or seed is None:
            return fn(**call), took_seed
        import torch

        # Seed the user's default initialisation without touching the caller's RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return fn(**call), False
    except RaySyncError:
        raise
    except SystemExit as exc:  # would end the command silently, even with exit code 0
        raise ConfigError(
            f"{what} {name!r} called sys.exit({exc.code!r}); a factory must return or raise"
        ) from None
    except Exception as exc:  # the user's code failed: name it, keep the cause
        raise ConfigError(f"{what} {name!r} raised {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """Everything needed to build the run's model (and its loss) in any process.

    Attributes:
        name: The built-in name (``logreg``, ``mlp``, ``cnn``) or the factory reference.
        in_features: Length of one flattened input, ``prod(image_shape)``.
        num_classes: Number of classes (or outputs, for real targets).
        image_shape: Shape of one input sample, e.g. ``(1, 28, 28)``.
        hidden: Hidden widths of the built-in MLP.
        seed: Initialisation seed (the same seed gives the same parameters anywhere).
        factory: The model factory, ``"package.module:function"`` or a callable (which
            must pickle to reach Ray actors); empty: the built-in ``name``.
        kwargs: Keyword arguments of the factory.
        loss: ``"cross_entropy"``, ``"mse"``, a reference or a callable.
        metric: ``"accuracy"``, ``"neg_loss"``, a reference, a callable, or None (default
            for the loss).
    """

    name: str
    in_features: int
    num_classes: int
    image_shape: tuple[int, ...]
    hidden: tuple[int, ...] = (128,)
    seed: int = 0
    factory: str | Callable[..., Any] = ""
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    loss: str | Callable[..., Any] = "cross_entropy"
    metric: str | Callable[..., Any] | None = None

    @property
    def factory_ref(self) -> str | Callable[..., Any]:
        """The factory to call: :attr:`factory`, or the built-in model's factory."""
        if self.factory:
            return self.factory
        from raysync.models import MODEL_FACTORIES

        if self.name not in MODEL_FACTORIES:
            raise ConfigError(
                f"unknown model {self.name!r}; choose one of {list(MODEL_FACTORIES)} or "
                "give a model factory"
            )
        return MODEL_FACTORIES[self.name]

    @property
    def factory_name(self) -> str:
        """The factory as text, for messages."""
        return _describe_ref(self.factory_ref)

    def build(self) -> torch.nn.Module:
        """Build the model with its deterministic initial parameters (CPU, float32).

        Raises:
            ConfigError: The factory cannot be imported or called, does not return a
                ``torch.nn.Module``, or returns one without floating-point parameters.
        """
        import torch

        kwargs = dict(self.kwargs)
        if not self.factory and self.name == "mlp":
            kwargs.setdefault("hidden", tuple(self.hidden))
        context = {
            "in_features": self.in_features,
            "num_classes": self.num_classes,
            "input_shape": tuple(self.image_shape),
            "image_shape": tuple(self.image_shape),
            "seed": self.seed,
        }
        model, _ = call_factory("model factory", self.factory_ref, kwargs, context)
        name = self.factory_name
        if not isinstance(model, torch.nn.Module):
            raise ConfigError(
                f"model factory {name!r} must return a torch.nn.Module, got {type(model).__name__}"
            )
        from raysync.models.flat import check_model_tensors

        # before any .to(): moving a meta-device module fails inside torch, in its words
        check_model_tensors(model, f"model factory {name!r}")
        params = list(model.parameters())
        if not params:
            raise ConfigError(f"model factory {name!r} returned a module without parameters")
        bad = [n for n, p in model.named_parameters() if not p.dtype.is_floating_point]
        if bad:
            raise ConfigError(
                f"model factory {name!r}: parameter {bad[0]!r} is not floating point; "
                "parameters travel as flat float32"
            )
        if any(p.dtype != torch.float32 for p in params):
            model = model.float()  # the wire format is float32
        return model.to("cpu").train()

    def make_computer(self, *, device: str = "cpu") -> GradientComputer:
        """A :class:`~raysync.models.GradientComputer` around a freshly built model."""
        from raysync.models import GradientComputer

        return GradientComputer(self.build(), device=device, loss=self.loss, metric=self.metric)


@dataclass(frozen=True, kw_only=True, eq=False)
class ClientShard:
    """One client's training data, what a client actor needs.

    Attributes:
        client_id: Index of the client.
        x: Its inputs, shape ``(N_i, in_features)``, float32.
        y: Its labels, shape ``(N_i,)``, int64.
    """

    client_id: int
    x: np.ndarray
    y: np.ndarray

    @property
    def num_samples(self) -> int:
        """``N_i``."""
        return int(self.y.shape[0])


def check_finite_params(params: np.ndarray) -> None:
    """Refuse a model whose flat parameters hold NaN or infinity (a diverged run).

    The simulator's and the runtime's evaluations both call it, so a run that diverges,
    even in its very last update, ends with the same one line on either backend.

    Raises:
        DivergenceError: Some entry of ``params`` is not finite (the count is named).
    """
    finite = np.isfinite(params)
    if not finite.all():
        raise DivergenceError(
            f"the model's parameters are not finite ({int((~finite).sum())} of "
            f"{np.size(params)} entries): training diverged; {LOWER_THE_STEP}"
        )


def check_finite_loss(loss: float, *, split: str, loss_name: str) -> None:
    """Refuse an evaluation whose mean loss on ``split`` is NaN or infinite.

    Raises:
        DivergenceError: ``loss`` is not finite (names the split and the loss).
    """
    if not math.isfinite(loss):
        raise DivergenceError(
            f"the {split} loss {loss_name!r} is {loss}: training diverged or the "
            f"loss is not finite on this split; {LOWER_THE_STEP}, or check the loss"
        )


@dataclass(frozen=True, kw_only=True, eq=False)
class Workload:
    """A run's data, partitions and initial model.

    Attributes:
        dataset: The dataset (training set already capped by ``max_train_samples``).
        client_indices: One sorted index array into ``dataset.x_train`` per client.
        model: How to build the model.
        initial_params: The model's initial flat float32 parameters (read-only).
    """

    dataset: Dataset
    client_indices: tuple[np.ndarray, ...]
    model: ModelSpec
    initial_params: np.ndarray

    def __post_init__(self) -> None:
        indices = tuple(np.asarray(ix, dtype=np.int64) for ix in self.client_indices)
        num_train = self.dataset.num_train
        for i, ix in enumerate(indices):
            if ix.ndim != 1:
                raise DataError(f"client_indices[{i}] must be 1-D, got shape {ix.shape}")
            if ix.size and (int(ix.min()) < 0 or int(ix.max()) >= num_train):
                raise DataError(
                    f"client_indices[{i}] must index the {num_train} training samples, got "
                    f"range [{int(ix.min())}, {int(ix.max())}]"
                )
            ix.setflags(write=False)
        object.__setattr__(self, "client_indices", indices)
        params = np.array(self.initial_params, dtype=np.float32)
        params.setflags(write=False)
        object.__setattr__(self, "initial_params", params)

    @property
    def num_clients(self) -> int:
        """Number of clients (partitions)."""
        return len(self.client_indices)

    @property
    def client_sizes(self) -> np.ndarray:
        """Training samples per client, shape ``(n,)``."""
        return np.array([ix.size for ix in self.client_indices], dtype=np.int64)

    @property
    def has_validation(self) -> bool:
        """Whether the dataset has a non-empty validation split."""
        return self.dataset.num_val > 0

    def client_data(self, client: int) -> tuple[np.ndarray, np.ndarray]:
        """Client ``client``'s training data ``(x, y)`` (fresh contiguous copies)."""
        if not 0 <= client < self.num_clients:
            raise ValueError(f"client must be in [0, {self.num_clients}), got {client!r}")
        ix = self.client_indices[client]
        return self.dataset.x_train[ix], self.dataset.y_train[ix]

    def client_shard(self, client: int) -> ClientShard:
        """Client ``client``'s data as a small picklable object for its actor."""
        x, y = self.client_data(client)
        return ClientShard(client_id=client, x=x, y=y)

    def make_computer(self, *, device: str = "cpu") -> GradientComputer:
        """A fresh :class:`~raysync.models.GradientComputer` for this model."""
        return self.model.make_computer(device=device)

    def split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of ``"train"``, ``"val"`` or ``"test"``.

        Raises:
            ValueError: Unknown split name.
        """
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be one of train, val, test, got {split!r}")
        return getattr(self.dataset, f"x_{split}"), getattr(self.dataset, f"y_{split}")

    def evaluate(
        self,
        params: np.ndarray,
        *,
        split: str = "test",
        computer: GradientComputer | None = None,
    ) -> tuple[float, float]:
        """Mean loss and metric (accuracy by default) of flat ``params`` on a split.

        Args:
            params: Flat float32 parameters.
            split: ``"test"`` (default), ``"val"`` or ``"train"``.
            computer: Reuse this computer (built fresh when None).

        Returns:
            ``(loss, metric)``; the metric is the accuracy for the cross-entropy unless
            ``[model] metric`` says otherwise.

        Raises:
            DataError: The split is empty, or ``params`` or the loss is not finite (the
                run diverged: a NaN curve is an error, not a result).
        """
        x, y = self.split(split)
        if y.size == 0:
            raise DataError(f"the {split!r} split of {self.dataset.name!r} is empty")
        check_finite_params(params)
        if computer is None:
            computer = self.make_computer()
        loss, acc = computer.evaluate(params, x, y)
        check_finite_loss(loss, split=split, loss_name=computer.loss_name)
        return float(loss), float(acc)

    def __repr__(self) -> str:
        return (
            f"Workload(dataset={self.dataset!r}, clients={self.num_clients}, "
            f"sizes={self.client_sizes.tolist()}, model={self.model.name!r}, "
            f"num_params={self.initial_params.size})"
        )


def _data_factory(config: SystemConfig) -> tuple[str | Callable[..., Any], dict[str, Any]]:
    """The data factory a config names and its keyword arguments (built-ins included)."""
    from raysync.data import DATASET_FACTORIES

    data = config.data
    if data.factory is not None:
        return data.factory, dict(data.kwargs)
    if data.dataset == "digits":
        return DATASET_FACTORIES["digits"], {"seed": _SPLIT_SEED}
    if data.dataset == "directory":
        return DATASET_FACTORIES["directory"], {"path": data.path, "seed": _SPLIT_SEED}
    return DATASET_FACTORIES[data.dataset], {}


def load_config_dataset(
    config: SystemConfig,
    *,
    factory: str | Callable[..., Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
) -> Dataset:
    """Load the dataset a config names, through its data factory.

    Args:
        config: The run's config (``data.factory``/``data.kwargs`` or ``data.dataset``).
        factory: Use this data factory (a callable or reference) instead of the config's.
        kwargs: Its keyword arguments (default: ``data.kwargs``).

    Raises:
        ConfigError: The factory cannot be imported or called, or raised.
        DataError: The data cannot be found or read, or the factory's output breaks the
            contract of :mod:`raysync.data.user`.
    """
    from raysync.data import dataset_from_output

    if factory is None:
        factory, default_kwargs = _data_factory(config)
    else:
        default_kwargs = dict(config.data.kwargs)
    call = dict(default_kwargs if kwargs is None else kwargs)
    output, _ = call_factory("data factory", factory, call)
    return dataset_from_output(output, source=_describe_ref(factory), seed=_SPLIT_SEED)


def builtin_num_params(config: SystemConfig) -> int | None:
    """The parameter count of a config's built-in model on its built-in dataset.

    Known without loading the data (:data:`raysync.data.sources.BUILTIN_SHAPES`) and
    equal to ``build_workload(config).initial_params.size``; ``raysync validate`` checks
    the simulator's model versions against memory with it when it does not build the
    workload.

    Returns:
        The count, or None with a model or data factory or the ``directory`` dataset
        (the size is known only once the user's code or files are read).

    Raises:
        ConfigError: The built-in model cannot be built on the dataset's shape.
    """
    from raysync.data.sources import BUILTIN_SHAPES

    mc, data = config.model, config.data
    if mc.factory or data.factory or data.dataset not in BUILTIN_SHAPES:
        return None
    shape, classes = BUILTIN_SHAPES[data.dataset]
    spec = ModelSpec(
        name=mc.name,
        in_features=math.prod(shape),
        num_classes=classes,
        image_shape=shape,
        hidden=tuple(mc.hidden),
        seed=0,
        factory="",
        kwargs=dict(mc.kwargs),
    )
    from raysync.models.flat import num_parameters

    return num_parameters(spec.build())


def build_workload(
    config: SystemConfig,
    *,
    dataset: Dataset | None = None,
    model_factory: str | Callable[..., Any] | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    data_factory: str | Callable[..., Any] | None = None,
    data_kwargs: Mapping[str, Any] | None = None,
    loss: str | Callable[..., Any] | None = None,
    metric: str | Callable[..., Any] | None = None,
    check: bool = True,
) -> Workload:
    """Build the training workload a config describes (or code overrides).

    The Python side of the plug-in contract: every argument after ``dataset`` replaces
    the config's ``[model]`` / ``[data]`` entry with a callable (no import path needed)
    or a reference, and goes through the same code path as the config.

    Args:
        config: The run's config (``data``, ``model``, ``seed`` and the number of
            clients are used).
        dataset: Use this dataset instead of loading ``config.data`` (tests, or to load
            MNIST once for many runs). ``max_train_samples`` still applies.
        model_factory: Model factory instead of ``model.factory`` / ``model.name``.
        model_kwargs: Its keyword arguments (default: ``model.kwargs``).
        data_factory: Data factory instead of ``data.factory`` / ``data.dataset``.
        data_kwargs: Its keyword arguments (default: ``data.kwargs``).
        loss: Loss instead of ``model.loss``.
        metric: Metric instead of ``model.metric``.
        check: Probe the model, loss and data with :func:`check_workload`.

    Returns:
        The workload: capped training set, one partition per client, initial params.

    Raises:
        ConfigError: The partition cannot be made (e.g. more clients than samples), or a
            factory cannot be imported, called, or returns the wrong type.
        DataError: The data cannot be loaded, break the data contract, leave a client
            without samples, or do not fit the model and loss (see
            :func:`check_workload`).
    """
    from raysync.data import natural_partition, partition
    from raysync.models import get_flat_params

    if dataset is None:
        dataset = load_config_dataset(config, factory=data_factory, kwargs=data_kwargs)
    data = config.data
    source = _describe_ref(data_factory or data.factory or data.dataset)
    cap = data.max_train_samples
    if cap is not None and cap < dataset.num_train:
        rng = _workload_rng(config.seed, 0)
        keep = np.sort(rng.choice(dataset.num_train, size=cap, replace=False))
        dataset = dataclasses.replace(
            dataset,
            x_train=dataset.x_train[keep],
            y_train=dataset.y_train[keep],
            client_train=None if dataset.client_train is None else dataset.client_train[keep],
        )
    n = config.num_clients
    if n > dataset.num_train:
        raise ConfigError(
            f"cannot partition {dataset.num_train} training samples over {n} clients "
            "([[clients]]: at most one client per training sample)"
        )
    if data.partition == "natural":
        if dataset.client_train is None:
            raise DataError(
                f"data.partition = 'natural' needs the data factory {source!r} to return "
                "client_train (one client id per training sample)"
            )
        parts = natural_partition(dataset.client_train, n, source=f"data factory {source!r}")
    else:
        params: dict[str, float | int] = {}
        if data.partition == "dirichlet":
            params["alpha"] = data.alpha
        elif data.partition == "shards":
            params["shards_per_client"] = data.shards_per_client
        elif data.partition == "unequal":
            params["sigma"] = data.size_spread
        labels = dataset.y_train
        if not dataset.is_classification:
            if data.partition in ("dirichlet", "shards"):
                raise DataError(
                    f"data.partition = {data.partition!r} splits by class label, but the data "
                    f"factory {source!r} returns real targets ({dataset.y_train.dtype}); use "
                    "iid, unequal or natural"
                )
            labels = np.zeros(dataset.num_train, dtype=np.int64)
        if data.partition == "shards" and n * data.shards_per_client > dataset.num_train:
            raise ConfigError(
                f"data.shards_per_client must be at most training samples / clients = "
                f"{dataset.num_train} / {n} = {dataset.num_train // n} (a shard holds a sample "
                f"at least), got {data.shards_per_client}"
            )
        try:
            parts = partition(
                labels, n, method=data.partition, seed=_workload_rng(config.seed, 1), **params
            )
        except ConfigError as exc:  # the partition's own rule, named after the config's field
            raise ConfigError(f"data.partition = {data.partition!r}: {exc}") from None
    sizes = [int(np.asarray(p).size) for p in parts]
    if min(sizes) == 0:
        empty = sizes.index(0)
        raise DataError(
            f"client {empty} has no training samples under partition {data.partition!r} "
            f"({sizes.count(0)} of {n} clients are empty); every client needs >= 1"
        )
    model_seed = int(
        np.random.SeedSequence(config.seed, spawn_key=(_KEY_WORKLOAD, 2)).generate_state(1)[0]
    )
    mc = config.model
    factory = model_factory if model_factory is not None else (mc.factory or "")
    spec = ModelSpec(
        name=_describe_ref(factory) if factory else mc.name,
        in_features=dataset.in_features,
        num_classes=dataset.num_classes,
        image_shape=tuple(dataset.image_shape),
        hidden=tuple(mc.hidden),
        seed=model_seed,
        factory=factory,
        kwargs=dict(mc.kwargs if model_kwargs is None else model_kwargs),
        loss=mc.loss if loss is None else loss,
        metric=mc.metric if metric is None else metric,
    )
    if spec.loss == "cross_entropy" and not dataset.is_classification:
        raise DataError(
            f"loss 'cross_entropy' needs integer class labels, but the data factory "
            f"{source!r} returns {dataset.y_train.dtype} targets; use loss = 'mse' or your own"
        )
    if spec.loss == "mse" and dataset.is_classification:
        raise DataError(
            f"loss 'mse' needs real targets, but the data factory {source!r} returns integer "
            f"labels ({dataset.y_train.dtype}); use loss = 'cross_entropy', or return float "
            "targets"
        )
    initial = get_flat_params(spec.build())
    workload = Workload(
        dataset=dataset, client_indices=tuple(parts), model=spec, initial_params=initial
    )
    if check:
        check_workload(workload, batch_size=config.algorithm.batch_size)
    return workload


_PROBE_ROWS = 4
#: Rows of the evaluation probe: one batch of :meth:`GradientComputer.evaluate`.
_EVAL_PROBE_ROWS = 2048


def _user_call(what: str, fn: Callable[[], Any], where: str) -> Any:
    """Run one call into user code; any error becomes one line naming ``what``.

    Warnings the call emits (torch's, the user's) are held until it returns: shown then,
    dropped when it fails, since the one line says what failed (a torch ``UserWarning`` of
    three lines came before it).
    """
    with warnings.catch_warnings(record=True) as held:
        warnings.simplefilter("always")
        try:
            result = fn()
        except RaySyncError:
            raise
        except SystemExit as exc:  # would end the command silently, even with exit code 0
            raise DataError(f"{what} called sys.exit({exc.code!r}) {where}") from None
        except Exception as exc:  # the user's code failed: name it, keep the cause
            raise DataError(
                f"{what} raised {type(exc).__name__} {where}: {first_line(exc)}"
            ) from exc
    for w in held:
        try:  # the caller's filters apply now: "error" makes it the call's failure, as before
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
        except Warning as exc:
            raise DataError(
                f"{what} raised {type(exc).__name__} {where}: {first_line(exc)}"
            ) from exc
    return result


def check_workload(workload: Workload, *, batch_size: int | None = None) -> dict[str, Any]:
    """Probe a workload before any client runs: model output, loss, gradient and metric.

    On a batch of the first ``batch_size`` training samples (the run's minibatch; 4 when
    not given), at the initial parameters: the model must run; with the cross-entropy its
    output must be ``(B, K)`` with ``K`` at least the number of classes; with ``mse`` it
    must hold as many numbers as the targets; the loss must be a finite scalar tensor
    attached to the model's output (it has a gradient); the gradient must be finite. The
    metric is then evaluated on up to one evaluation batch (2048 rows) of the test split,
    so code that breaks only on larger batches fails here, not mid-run. Every call into
    user code (model factory, forward, loss, backward, metric) is wrapped: an exception
    becomes one line naming the callable. The probe of a workload runs once; later calls
    without ``batch_size`` return its summary (no repeated warnings).

    Args:
        workload: The workload.
        batch_size: Rows of the training probe (``algorithm.batch_size``), ``>= 1``.

    Returns:
        A summary: ``num_params``, ``output_shape``, ``loss``, ``metric`` (name) and
        ``metric_value`` on the probe batch.

    Raises:
        ConfigError: The model fails on a batch.
        DataError: User code raised, output shape and labels disagree, the loss is not a
            finite scalar with a gradient, the gradient is not finite, or the metric is
            not a finite number; one line naming the factory or function, rule and value.
    """
    import torch

    cached = getattr(workload, "_probe", None)
    if cached is not None and batch_size in (None, cached[0]):
        return dict(cached[1])
    spec = workload.model
    name = spec.factory_name
    computer = workload.make_computer()
    loss_what = f"loss {computer.loss_name!r}"
    x, y = workload.dataset.x_train, workload.dataset.y_train
    rows = min(_PROBE_ROWS if batch_size is None else int(batch_size), len(y))
    xb = np.ascontiguousarray(x[:rows])
    yb = np.ascontiguousarray(y[:rows])
    model = computer.model
    try:
        with torch.no_grad():
            out = model(torch.from_numpy(xb))
    except Exception as exc:  # the user's forward
        raise ConfigError(
            f"model factory {name!r}: the model fails on a batch of shape {xb.shape}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(out, torch.Tensor):
        raise DataError(
            f"model factory {name!r}: the model must return a tensor, got {type(out).__name__}"
        )
    shape = tuple(out.shape)
    k = workload.dataset.num_classes
    if computer.loss_name == "cross_entropy":
        if len(shape) != 2 or shape[0] != rows or shape[1] < k:
            raise DataError(
                f"model factory {name!r}: output shape {shape} for a batch of {rows} does not "
                f"match the labels: loss 'cross_entropy' needs ({rows}, K) with K >= {k} "
                f"classes"
            )
        if shape[1] > k:
            # Allowed (labels may be a subset of the model's classes), but a width typo
            # looks the same: said once.
            logger.warning(
                "model factory %r outputs %d logits for %d classes (labels 0..%d): the "
                "extra %d are never a label; set num_classes in the data if they are meant",
                name, shape[1], k, k - 1, shape[1] - k,
            )
        labels = np.unique(workload.dataset.y_train)
        if labels.size < 2:
            logger.warning(
                "the training labels hold one class only (%s): any model that predicts it "
                "scores accuracy 1; check the data",
                ", ".join(map(str, labels.tolist())) or "none",
            )
    elif computer.loss_name == "mse":
        if shape[:1] != (rows,) or out.numel() != int(np.asarray(yb).size):
            raise DataError(
                f"model factory {name!r}: output shape {shape} does not match targets of "
                f"shape {tuple(np.asarray(yb).shape)} for loss 'mse'"
            )
    where = f"on a batch of {rows} training samples at the initial parameters"
    grad, loss = _user_call(
        loss_what, lambda: computer.compute_gradient(workload.initial_params, xb, yb), where
    )
    if not math.isfinite(loss):
        raise DataError(
            f"{loss_what} returned {loss} (not finite) at the initial parameters on {rows} "
            "training samples"
        )
    if not np.isfinite(grad).all():
        raise DataError(
            f"{loss_what}: the gradient at the initial parameters is not finite "
            f"({int((~np.isfinite(grad)).sum())} of {grad.size} entries)"
        )
    xe, ye = workload.split("test") if workload.dataset.num_test else (xb, yb)
    xe, ye = xe[:_EVAL_PROBE_ROWS], ye[:_EVAL_PROBE_ROWS]
    metric_what = f"evaluating the model (metric {computer.metric_name!r})"
    _, metric_value = _user_call(
        metric_what,
        lambda: computer.evaluate(workload.initial_params, xe, ye),
        f"on {len(ye)} test samples at the initial parameters",
    )
    if not math.isfinite(metric_value):
        raise DataError(
            f"metric {computer.metric_name!r} returned {metric_value} (not finite) on "
            f"{len(ye)} test samples at the initial parameters"
        )
    buffers = [n for n, b in model.named_buffers() if b.dtype.is_floating_point]
    if buffers:
        logger.warning(
            "model factory %r has floating buffers (%s); they are not part of the flat "
            "parameters and stay local to each process (prefer GroupNorm/LayerNorm)",
            name,
            buffers[0],
        )
    summary = {
        "model": name,
        "num_params": int(workload.initial_params.size),
        "output_shape": shape,
        "loss_name": computer.loss_name,
        "loss": float(loss),
        "metric": computer.metric_name,
        "metric_value": float(metric_value),
    }
    # Workload is frozen; the probe is a cache, not part of its value.
    object.__setattr__(workload, "_probe", (batch_size, dict(summary)))
    return summary
