"""Seeded partitions of a training set over federated clients.

Every partitioner returns one sorted ``int64`` array of training-set indices per client;
together they use every sample exactly once (a partition of ``range(N)``). Randomness
comes only from the ``seed`` argument: an ``int`` (a fresh
``numpy.random.default_rng(seed)``) or a ``numpy.random.Generator`` (which is advanced).

* :func:`iid_partition`: a random permutation cut into near-equal parts.
* :func:`dirichlet_partition`: label skew; each class is spread over the clients with
  proportions drawn from ``Dirichlet(alpha)`` (small ``alpha``: few classes per client).
* :func:`shard_partition`: sort by label, cut into shards, deal ``shards_per_client``
  random shards to each client (McMahan et al., 2017).
* :func:`unequal_partition`: IID content, unequal sizes (given, or log-normal spread).
* :func:`partition`: dispatch on a method name, for configs.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from raysync._validation import check_int
from raysync.exceptions import ConfigError, DataError

__all__ = [
    "PARTITION_METHODS",
    "dirichlet_partition",
    "iid_partition",
    "label_counts",
    "natural_partition",
    "partition",
    "shard_partition",
    "unequal_partition",
]

IntArray = npt.NDArray[np.int64]
SeedLike = int | np.random.Generator


def _rng(seed: SeedLike) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a non-negative int or a numpy Generator, got {seed!r}")
    return np.random.default_rng(int(seed))


def _check_int(name: str, value: Any, *, low: int, high: int | None = None) -> int:
    return check_int(name, value, minimum=low, maximum=high)


def _check_clients(num_clients: Any, num_samples: int) -> int:
    return _check_int(
        f"num_clients (with num_samples={num_samples})", num_clients, low=1, high=num_samples
    )


def _check_labels(labels: npt.ArrayLike) -> IntArray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ConfigError(f"labels must be a 1-D array, got shape {y.shape}")
    if y.size == 0:
        raise ConfigError("labels must not be empty")
    if y.dtype.kind not in "iu":
        raise ConfigError(f"labels must be integers, got dtype {y.dtype}")
    if int(y.min()) < 0:
        raise ConfigError(f"labels must be non-negative, got min {int(y.min())}")
    return y.astype(np.int64, copy=False)


def _finish(parts: Sequence[npt.ArrayLike]) -> list[IntArray]:
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def iid_partition(num_samples: int, num_clients: int, *, seed: SeedLike) -> list[IntArray]:
    """Split ``range(num_samples)`` uniformly at random into near-equal parts.

    Args:
        num_samples: Size ``N`` of the training set.
        num_clients: Number of clients ``K``, in ``[1, N]``.
        seed: Seed or generator.

    Returns:
        ``K`` sorted index arrays whose sizes differ by at most one.

    Raises:
        ConfigError: If ``num_samples < 1`` or ``num_clients`` is out of range.
    """
    n = _check_int("num_samples", num_samples, low=1)
    k = _check_clients(num_clients, n)
    perm = _rng(seed).permutation(n)
    return _finish(np.array_split(perm, k))


def dirichlet_partition(
    labels: npt.ArrayLike,
    num_clients: int,
    *,
    alpha: float,
    seed: SeedLike,
    min_size: int = 1,
    max_retries: int = 100,
) -> list[IntArray]:
    """Split with label skew: each class's share of the clients is ``Dirichlet(alpha)``.

    For every class ``c``, proportions ``q ~ Dir(alpha, ..., alpha)`` over the ``K``
    clients are drawn and the (shuffled) samples of ``c`` are cut at ``cumsum(q) * n_c``
    (Hsu et al., 2019). Small ``alpha`` (e.g. 0.1) gives each client few classes;
    large ``alpha`` (e.g. 100) approaches IID.

    Clients must get at least ``min_size`` samples. The whole draw is repeated up to
    ``max_retries`` times until that holds (which keeps the Dirichlet law, conditioned on the
    constraint). If it still fails, the last draw is repaired: while some client is short,
    one random sample of the currently largest client moves to it. The repair changes the
    label mix only slightly and only when ``K * min_size`` is close to what ``alpha`` allows.

    Args:
        labels: Class label of each training sample, shape ``(N,)``.
        num_clients: Number of clients ``K``, in ``[1, N // min_size]``.
        alpha: Concentration, ``> 0``.
        seed: Seed or generator.
        min_size: Smallest allowed client size, ``>= 0``.
        max_retries: Number of fresh draws before repairing, ``>= 1``.

    Returns:
        ``K`` sorted index arrays, each of size ``>= min_size``.

    Raises:
        ConfigError: If ``alpha <= 0`` or not finite, ``num_clients`` is out of range or
            ``num_clients * min_size > N``.
    """
    y = _check_labels(labels)
    n = int(y.size)
    k = _check_clients(num_clients, n)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float | np.floating):
        raise ConfigError(f"alpha must be a positive number, got {alpha!r}")
    if not (math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"alpha must be > 0 and finite, got {alpha}")
    min_size = _check_int("min_size", min_size, low=0)
    if k * min_size > n:
        raise ConfigError(
            f"num_clients * min_size must be <= num_samples, got {k} * {min_size} > {n}"
        )
    max_retries = _check_int("max_retries", max_retries, low=1)
    rng = _rng(seed)
    by_class = [np.flatnonzero(y == c) for c in np.unique(y)]
    conc = np.full(k, float(alpha))
    # A Dirichlet with a huge concentration is the uniform split in the limit (numpy's
    # gamma draws lose all precision there, or overflow).
    uniform_limit = float(alpha) > 1e12

    chunks: list[list[np.ndarray]] = []
    for _ in range(max_retries):
        chunks = [[] for _ in range(k)]
        for idx in by_class:
            idx = rng.permutation(idx)
            q = np.full(k, 1.0 / k) if uniform_limit else rng.dirichlet(conc)
            if not np.all(np.isfinite(q)) or q.sum() <= 0:
                # alpha -> 0 limit (can underflow): the whole class goes to one client.
                q = np.zeros(k)
                q[rng.integers(k)] = 1.0
            cuts = np.minimum((np.cumsum(q)[:-1] * idx.size).astype(np.int64), idx.size)
            for client, chunk in enumerate(np.split(idx, cuts)):
                chunks[client].append(chunk)
        if min(sum(c.size for c in cs) for cs in chunks) >= min_size:
            return _finish([np.concatenate(cs) for cs in chunks])

    # Repair the last draw: move random samples from the largest client to short ones.
    parts: list[list[int]] = [np.concatenate(cs).tolist() for cs in chunks]
    sizes = np.array([len(p) for p in parts])
    for client in range(k):
        while sizes[client] < min_size:
            donor = int(np.argmax(sizes))
            pos = int(rng.integers(sizes[donor]))
            parts[donor][pos], parts[donor][-1] = parts[donor][-1], parts[donor][pos]
            parts[client].append(parts[donor].pop())
            sizes[donor] -= 1
            sizes[client] += 1
    return _finish(parts)


def shard_partition(
    labels: npt.ArrayLike, num_clients: int, *, shards_per_client: int = 2, seed: SeedLike
) -> list[IntArray]:
    """Split by label shards: sort by label, cut into shards, deal them out at random.

    The samples (shuffled within each class) are sorted by label and cut into
    ``K * shards_per_client`` contiguous shards of near-equal size; each client gets
    ``shards_per_client`` shards drawn without replacement. When every class has at least
    one shard's worth of samples, a shard spans at most two classes, so a client sees at
    most ``2 * shards_per_client`` classes.

    Args:
        labels: Class label of each training sample, shape ``(N,)``.
        num_clients: Number of clients ``K``.
        shards_per_client: Shards per client, ``>= 1``; ``K * shards_per_client <= N``.
        seed: Seed or generator.

    Returns:
        ``K`` sorted index arrays.

    Raises:
        ConfigError: If ``num_clients`` or ``shards_per_client`` is out of range.
    """
    y = _check_labels(labels)
    n = int(y.size)
    k = _check_clients(num_clients, n)
    s = _check_int("shards_per_client", shards_per_client, low=1)
    if k * s > n:
        raise ConfigError(
            f"num_clients * shards_per_client must be <= num_samples, got {k} * {s} > {n}"
        )
    rng = _rng(seed)
    order = rng.permutation(n)
    order = order[np.argsort(y[order], kind="stable")]
    shards = np.array_split(order, k * s)
    deal = rng.permutation(k * s)
    return _finish(
        [np.concatenate([shards[j] for j in deal[i * s : (i + 1) * s]]) for i in range(k)]
    )


def unequal_partition(
    num_samples: int,
    num_clients: int,
    *,
    seed: SeedLike,
    sizes: Sequence[int] | None = None,
    sigma: float = 1.0,
    min_size: int = 1,
) -> list[IntArray]:
    """Split IID in content but with unequal client sizes.

    Sizes are either given, or ``min_size`` plus a share of the remaining samples
    proportional to log-normal weights ``exp(N(0, sigma^2))`` (largest-remainder rounding),
    so ``sigma = 0`` gives equal sizes and larger ``sigma`` a wider spread. Samples are
    assigned by a random permutation.

    Args:
        num_samples: Size ``N`` of the training set.
        num_clients: Number of clients ``K``.
        seed: Seed or generator.
        sizes: Explicit non-negative sizes, ``K`` of them, summing to ``N``.
        sigma: Log-normal spread, ``>= 0`` (ignored when ``sizes`` is given).
        min_size: Smallest client size with log-normal sizes, ``K * min_size <= N``.

    Returns:
        ``K`` sorted index arrays.

    Raises:
        ConfigError: If sizes do not match ``K`` or ``N``, or a parameter is out of range.
    """
    n = _check_int("num_samples", num_samples, low=1)
    k = _check_clients(num_clients, n)
    rng = _rng(seed)
    if sizes is not None:
        counts = np.asarray(sizes)
        if counts.shape != (k,) or counts.dtype.kind not in "iu":
            raise ConfigError(f"sizes must be {k} ints (one per client), got {list(sizes)!r}")
        if int(counts.min()) < 0 or int(counts.sum()) != n:
            raise ConfigError(
                f"sizes must be non-negative and sum to num_samples={n}, "
                f"got sum={int(counts.sum())}, min={int(counts.min())}"
            )
        counts = counts.astype(np.int64)
    else:
        if isinstance(sigma, bool) or not (
            isinstance(sigma, int | float | np.floating) and math.isfinite(sigma) and sigma >= 0
        ):
            raise ConfigError(f"sigma must be a finite number >= 0, got {sigma!r}")
        min_size = _check_int("min_size", min_size, low=0)
        if k * min_size > n:
            raise ConfigError(
                f"num_clients * min_size must be <= num_samples, got {k} * {min_size} > {n}"
            )
        rest = n - k * min_size
        with np.errstate(over="ignore"):  # a huge sigma: _largest_remainder takes the limit
            log_weights = float(sigma) * rng.standard_normal(k)
        counts = _largest_remainder(log_weights, rest) + min_size
    perm = rng.permutation(n)
    return _finish(np.split(perm, np.cumsum(counts)[:-1]))


def _largest_remainder(log_weights: npt.NDArray[np.float64], total: int) -> IntArray:
    """Split ``total`` into integers proportional to ``exp(log_weights)``, exactly.

    The weights are normalised in log space (a softmax), so a huge spread (``sigma`` of
    1000 gives weights like ``exp(3000)``) neither overflows nor loses the total: every
    share is in ``[0, total]``, the floors sum to at most ``total``, and the remainder is
    dealt one unit at a time to the largest fractional parts (cycling if rounding left
    more units than clients).

    Returns:
        Non-negative counts summing to ``total``.
    """
    k = log_weights.size
    top = np.max(log_weights)
    with np.errstate(invalid="ignore", over="ignore"):
        shifted = log_weights - top
    if np.isfinite(top):
        with np.errstate(under="ignore"):  # a weight below 1e-308 of the largest is 0
            weights = np.exp(shifted)  # in [0, 1], the largest is exactly 1
    else:  # sigma * z overflowed: in the limit the largest weights take everything
        weights = (log_weights == top).astype(np.float64)
    share = weights / math.fsum(weights.tolist()) * total
    counts = np.minimum(np.floor(share), total).astype(np.int64)
    leftover = total - int(counts.sum())
    while leftover < 0:  # float rounding of the shares can only overshoot by a few units
        counts[int(np.argmax(counts))] -= 1
        leftover += 1
    order = np.argsort(-(share - counts), kind="stable")
    while leftover > 0:
        step = min(leftover, k)
        counts[order[:step]] += 1
        leftover -= step
    return counts


def label_counts(
    labels: npt.ArrayLike, parts: Sequence[np.ndarray], num_classes: int | None = None
) -> npt.NDArray[np.int64]:
    """Count each client's samples per class.

    Args:
        labels: Class label of each training sample.
        parts: One index array per client, as returned by the partitioners.
        num_classes: Number of classes; defaults to the largest label plus one.

    Returns:
        An ``(num_clients, num_classes)`` array of counts.
    """
    y = _check_labels(labels)
    c = int(y.max()) + 1 if num_classes is None else int(num_classes)
    return np.stack([np.bincount(y[p], minlength=c)[:c] for p in parts]).astype(np.int64)


_METHODS: dict[str, Callable[..., list[IntArray]]] = {
    "iid": iid_partition,
    "dirichlet": dirichlet_partition,
    "shards": shard_partition,
    "unequal": unequal_partition,
}

#: Method names accepted by :func:`partition`.
PARTITION_METHODS: tuple[str, ...] = tuple(_METHODS)


def natural_partition(
    client_ids: npt.ArrayLike, num_clients: int, *, source: str = "client_train"
) -> list[IntArray]:
    """The partition the data came with: client ``i`` holds the samples labelled ``i``.

    Args:
        client_ids: Client id of each training sample, integers in ``[0, num_clients)``.
        num_clients: Number of clients.
        source: Where the ids come from, for messages (e.g. the data factory).

    Returns:
        One sorted ``int64`` index array per client.

    Raises:
        DataError: An id outside ``[0, num_clients)``, or a client with no sample.
    """
    ids = np.asarray(client_ids)
    k = _check_int("num_clients", num_clients, low=1)
    if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
        raise DataError(f"{source}: client ids must be a 1-D integer array, got {ids.dtype}")
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= k):
        raise DataError(
            f"{source}: client ids must lie in [0, {k}) for the config's {k} clients, got "
            f"range [{int(ids.min())}, {int(ids.max())}]"
        )
    counts = np.bincount(ids.astype(np.int64), minlength=k)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise DataError(
            f"{source}: client {int(empty[0])} has no training samples under the natural "
            f"partition ({empty.size} of {k} clients are empty); every client needs >= 1"
        )
    order = np.argsort(ids, kind="stable").astype(np.int64)
    return [np.sort(part) for part in np.split(order, np.cumsum(counts)[:-1])]


def partition(
    labels: npt.ArrayLike, num_clients: int, *, method: str, seed: SeedLike, **params: Any
) -> list[IntArray]:
    """Partition a training set by method name, for configs.

    Args:
        labels: Class label of each training sample (only its length is used by ``"iid"``
            and ``"unequal"``).
        num_clients: Number of clients.
        method: ``"iid"``, ``"dirichlet"``, ``"shards"`` or ``"unequal"``.
        seed: Seed or generator.
        **params: Extra keyword arguments of the method (e.g. ``alpha=0.5`` for
            ``"dirichlet"``, ``shards_per_client=2`` for ``"shards"``).

    Returns:
        One sorted ``int64`` index array per client.

    Raises:
        ConfigError: If the method is unknown, a parameter is not accepted by it, or a value
            is out of range.
    """
    key = method.lower().strip() if isinstance(method, str) else method
    if key == "shard":
        key = "shards"
    if key not in _METHODS:
        raise ConfigError(
            f"unknown partition method {method!r}; choose one of {list(PARTITION_METHODS)}"
        )
    fn = _METHODS[key]
    y = _check_labels(labels)
    first: Any = int(y.size) if key in ("iid", "unequal") else y
    try:
        inspect.signature(fn).bind(first, num_clients, seed=seed, **params)
    except TypeError as exc:
        raise ConfigError(f"bad parameters for partition method {key!r}: {exc}") from exc
    return fn(first, num_clients, seed=seed, **params)
