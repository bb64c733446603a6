"""Datasets that load without internet, and seeded partitions over federated clients.

Loaders return a :class:`Dataset` of flat ``float32`` images in ``[0, 1]`` and ``int64``
labels; partitioners return one index array into the training set per client.
"""

from __future__ import annotations

from raysync.data.partition import (
    PARTITION_METHODS,
    dirichlet_partition,
    iid_partition,
    label_counts,
    natural_partition,
    partition,
    shard_partition,
    unequal_partition,
)
from raysync.data.sources import (
    DATASET_NAMES,
    MNIST_WHEEL,
    Dataset,
    default_cache_dir,
    load_dataset,
    load_digits_dataset,
    load_directory,
    load_mnist,
    read_idx,
    stratified_split,
)
from raysync.data.user import DATASET_FACTORIES, VAL_FRACTION, dataset_from_output

__all__ = [
    "DATASET_FACTORIES",
    "DATASET_NAMES",
    "MNIST_WHEEL",
    "PARTITION_METHODS",
    "VAL_FRACTION",
    "Dataset",
    "default_cache_dir",
    "dataset_from_output",
    "dirichlet_partition",
    "iid_partition",
    "label_counts",
    "load_dataset",
    "load_digits_dataset",
    "load_directory",
    "load_mnist",
    "natural_partition",
    "partition",
    "read_idx",
    "shard_partition",
    "stratified_split",
    "unequal_partition",
]
