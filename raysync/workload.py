"""The training workload of a run: data, per-client partitions and the initial model.

:func:`build_workload` turns a :class:`~raysync.config.SystemConfig` into a
:class:`Workload`, shared by the simulator and the Ray runtime so both train on exactly the
same partitions from exactly the same initial parameters.

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
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from raysync.config import SystemConfig
from raysync.exceptions import ConfigError, DataError

if TYPE_CHECKING:
    import torch

    from raysync.data import Dataset
    from raysync.models import GradientComputer

__all__ = ["ClientShard", "ModelSpec", "Workload", "build_workload", "load_config_dataset"]

_KEY_WORKLOAD = 10
_SPLIT_SEED = 0


def _workload_rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_KEY_WORKLOAD, stream)))


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """Everything needed to build the run's model in any process.

    Attributes:
        name: ``logreg``, ``mlp`` or ``cnn``.
        in_features: Length of a flat input.
        num_classes: Number of classes.
        image_shape: ``(channels, height, width)`` of one input.
        hidden: Hidden widths of the MLP.
        seed: Initialisation seed (the same seed gives the same parameters anywhere).
    """

    name: str
    in_features: int
    num_classes: int
    image_shape: tuple[int, ...]
    hidden: tuple[int, ...] = (128,)
    seed: int = 0

    def build(self) -> torch.nn.Module:
        """Build the model with its deterministic initial parameters."""
        from raysync.models import build_model

        return build_model(
            self.name,
            in_features=self.in_features,
            num_classes=self.num_classes,
            image_shape=self.image_shape,
            hidden=self.hidden,
            seed=self.seed,
        )

    def make_computer(self, *, device: str = "cpu") -> GradientComputer:
        """A :class:`~raysync.models.GradientComputer` around a freshly built model."""
        from raysync.models import GradientComputer

        return GradientComputer(self.build(), device=device)


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
        """Mean cross-entropy and accuracy of flat ``params`` on a split.

        Args:
            params: Flat float32 parameters.
            split: ``"test"`` (default), ``"val"`` or ``"train"``.
            computer: Reuse this computer (built fresh when None).

        Returns:
            ``(loss, accuracy)``.

        Raises:
            DataError: The split is empty.
        """
        x, y = self.split(split)
        if y.size == 0:
            raise DataError(f"the {split!r} split of {self.dataset.name!r} is empty")
        if computer is None:
            computer = self.make_computer()
        loss, acc = computer.evaluate(params, x, y)
        return float(loss), float(acc)

    def __repr__(self) -> str:
        return (
            f"Workload(dataset={self.dataset!r}, clients={self.num_clients}, "
            f"sizes={self.client_sizes.tolist()}, model={self.model.name!r}, "
            f"num_params={self.initial_params.size})"
        )


def load_config_dataset(config: SystemConfig) -> Dataset:
    """Load the dataset a config names (the split is seeded with a fixed seed).

    Raises:
        ConfigError: Unknown dataset or bad arguments.
        DataError: The data cannot be found or read.
    """
    from raysync.data import load_dataset

    data = config.data
    if data.dataset == "digits":
        return load_dataset("digits", seed=_SPLIT_SEED)
    if data.dataset == "directory":
        return load_dataset("directory", path=data.path, seed=_SPLIT_SEED)
    return load_dataset(data.dataset)


def build_workload(config: SystemConfig, *, dataset: Dataset | None = None) -> Workload:
    """Build the training workload a config describes.

    Args:
        config: The run's config (``data``, ``model``, ``seed`` and the number of
            clients are used).
        dataset: Use this dataset instead of loading ``config.data.dataset`` (tests,
            or to load MNIST once for many runs). ``max_train_samples`` still applies.

    Returns:
        The workload: capped training set, one partition per client, initial params.

    Raises:
        ConfigError: The partition cannot be made (e.g. more clients than samples).
        DataError: The data cannot be loaded.
    """
    from raysync.data import partition
    from raysync.models import get_flat_params

    if dataset is None:
        dataset = load_config_dataset(config)
    data = config.data
    cap = data.max_train_samples
    if cap is not None and cap < dataset.num_train:
        rng = _workload_rng(config.seed, 0)
        keep = np.sort(rng.choice(dataset.num_train, size=cap, replace=False))
        dataset = dataclasses.replace(
            dataset, x_train=dataset.x_train[keep], y_train=dataset.y_train[keep]
        )
    n = config.num_clients
    if n > dataset.num_train:
        raise ConfigError(f"cannot partition {dataset.num_train} training samples over {n} clients")
    params: dict[str, float | int] = {}
    if data.partition == "dirichlet":
        params["alpha"] = data.alpha
    elif data.partition == "shards":
        params["shards_per_client"] = data.shards_per_client
    elif data.partition == "unequal":
        params["sigma"] = data.size_spread
    parts = partition(
        dataset.y_train, n, method=data.partition, seed=_workload_rng(config.seed, 1), **params
    )
    model_seed = int(
        np.random.SeedSequence(config.seed, spawn_key=(_KEY_WORKLOAD, 2)).generate_state(1)[0]
    )
    spec = ModelSpec(
        name=config.model.name,
        in_features=dataset.in_features,
        num_classes=dataset.num_classes,
        image_shape=tuple(dataset.image_shape),
        hidden=tuple(config.model.hidden),
        seed=model_seed,
    )
    initial = get_flat_params(spec.build())
    return Workload(
        dataset=dataset, client_indices=tuple(parts), model=spec, initial_params=initial
    )
