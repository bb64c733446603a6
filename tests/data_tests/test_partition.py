from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raysync.data import (
    PARTITION_METHODS,
    dirichlet_partition,
    iid_partition,
    label_counts,
    load_digits_dataset,
    partition,
    shard_partition,
    unequal_partition,
)
from raysync.exceptions import ConfigError

FAST = settings(max_examples=60, deadline=None)


@pytest.fixture(scope="module")
def digits_labels() -> np.ndarray:
    return load_digits_dataset(seed=0).y_train


def assert_covers(parts: list[np.ndarray], n: int) -> None:
    """Every sample is used exactly once, and the arrays have the documented form."""
    for p in parts:
        assert p.dtype == np.int64
        assert p.ndim == 1
        assert np.all(np.diff(p) > 0)  # sorted, no duplicates within a client
    allidx = np.concatenate(parts) if parts else np.empty(0, np.int64)
    assert np.array_equal(np.sort(allidx), np.arange(n))


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@st.composite
def labels_and_clients(draw: st.DrawFn, min_per_client: int = 1) -> tuple[np.ndarray, int]:
    n = draw(st.integers(1, 400))
    classes = draw(st.integers(1, 10))
    seed = draw(st.integers(0, 2**32 - 1))
    labels = np.random.default_rng(seed).integers(0, classes, size=n)
    k = draw(st.integers(1, max(1, n // min_per_client)))
    return labels, k


# --------------------------------------------------------------------- coverage (property)


@FAST
@given(n=st.integers(1, 2000), data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_iid_covers_and_balanced(n: int, data: st.DataObject, seed: int) -> None:
    k = data.draw(st.integers(1, n))
    parts = iid_partition(n, k, seed=seed)
    assert len(parts) == k
    assert_covers(parts, n)
    sizes = [p.size for p in parts]
    assert max(sizes) - min(sizes) <= 1


@FAST
@given(
    lk=labels_and_clients(),
    alpha=st.sampled_from([0.01, 0.1, 1.0, 100.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_dirichlet_covers_and_min_size(lk: tuple[np.ndarray, int], alpha: float, seed: int) -> None:
    labels, k = lk
    parts = dirichlet_partition(labels, k, alpha=alpha, seed=seed, min_size=1)
    assert len(parts) == k
    assert_covers(parts, labels.size)
    assert min(p.size for p in parts) >= 1


@FAST
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_shards_covers(data: st.DataObject, seed: int) -> None:
    labels, k = data.draw(labels_and_clients(min_per_client=3))
    s = data.draw(st.integers(1, max(1, labels.size // k)))
    parts = shard_partition(labels, k, shards_per_client=s, seed=seed)
    assert len(parts) == k
    assert_covers(parts, labels.size)


@FAST
@given(
    n=st.integers(1, 2000),
    data=st.data(),
    sigma=st.floats(0.0, 3.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_unequal_covers(n: int, data: st.DataObject, sigma: float, seed: int) -> None:
    k = data.draw(st.integers(1, n))
    parts = unequal_partition(n, k, seed=seed, sigma=sigma)
    assert len(parts) == k
    assert_covers(parts, n)
    assert min(p.size for p in parts) >= 1


# --------------------------------------------------------------------- determinism


@pytest.mark.parametrize("method", PARTITION_METHODS)
def test_determinism(method: str, digits_labels: np.ndarray) -> None:
    params = {"dirichlet": {"alpha": 0.5}, "shards": {"shards_per_client": 2}}.get(method, {})
    a = partition(digits_labels, 10, method=method, seed=3, **params)
    b = partition(digits_labels, 10, method=method, seed=3, **params)
    c = partition(digits_labels, 10, method=method, seed=4, **params)
    assert same(a, b)
    assert not same(a, c)
    # A Generator is advanced: the same state gives the same partition, the next differs.
    g1, g2 = np.random.default_rng(7), np.random.default_rng(7)
    first = partition(digits_labels, 10, method=method, seed=g1, **params)
    assert same(first, partition(digits_labels, 10, method=method, seed=g2, **params))
    assert not same(first, partition(digits_labels, 10, method=method, seed=g1, **params))


def test_no_global_rng_use(digits_labels: np.ndarray) -> None:
    state = np.random.get_state()
    np.random.seed(123)
    a = dirichlet_partition(digits_labels, 10, alpha=0.3, seed=1)
    np.random.seed(999)
    b = dirichlet_partition(digits_labels, 10, alpha=0.3, seed=1)
    np.random.set_state(state)
    assert same(a, b)


# --------------------------------------------------------------------- statistics


def test_iid_class_proportions_close_to_global(digits_labels: np.ndarray) -> None:
    counts = label_counts(digits_labels, iid_partition(digits_labels.size, 10, seed=0))
    shares = counts / counts.sum(axis=1, keepdims=True)
    glob = np.bincount(digits_labels) / digits_labels.size
    # ~126 samples per client; a class share (~0.1) then has standard deviation
    # sqrt(0.1 * 0.9 / 126) ~ 0.027, so 0.1 is a > 3.5 sigma bound (and the seed is fixed).
    assert np.abs(shares - glob).max() < 0.1


def mean_max_share(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    counts = label_counts(labels, parts, num_classes=10)
    return float((counts.max(axis=1) / counts.sum(axis=1)).mean())


def test_dirichlet_small_alpha_skews(digits_labels: np.ndarray) -> None:
    skewed = mean_max_share(
        digits_labels, dirichlet_partition(digits_labels, 10, alpha=0.1, seed=0)
    )
    near_iid = mean_max_share(
        digits_labels, dirichlet_partition(digits_labels, 10, alpha=100.0, seed=0)
    )
    # IID shares are ~0.1 per class (max over 10 classes ~0.15); Dir(0.1) puts most of a
    # client's data in one or two classes.
    assert near_iid < 0.2
    assert skewed > 0.5
    assert skewed > 2.5 * near_iid


def test_dirichlet_repair_meets_min_size(digits_labels: np.ndarray) -> None:
    # 100 clients with alpha=0.01: most clients get no class at all in a raw draw, so the
    # documented repair must kick in.
    parts = dirichlet_partition(digits_labels, 100, alpha=0.01, seed=0, min_size=5, max_retries=3)
    assert_covers(parts, digits_labels.size)
    assert min(p.size for p in parts) >= 5


def test_dirichlet_min_size_zero_allows_empty() -> None:
    labels = np.repeat(np.arange(2), 5)
    parts = dirichlet_partition(labels, 10, alpha=0.01, seed=0, min_size=0)
    assert_covers(parts, 10)


def test_shards_limit_classes(digits_labels: np.ndarray) -> None:
    for s in (2, 3, 5):
        # The bound needs every class to hold at least one shard (then a contiguous shard
        # spans at most two classes); digits classes hold >= 120 training samples.
        assert np.bincount(digits_labels).min() >= -(-digits_labels.size // (10 * s))
        parts = shard_partition(digits_labels, 10, shards_per_client=s, seed=0)
        assert_covers(parts, digits_labels.size)
        classes = (label_counts(digits_labels, parts) > 0).sum(axis=1)
        assert classes.max() <= 2 * s
        sizes = [p.size for p in parts]
        assert max(sizes) - min(sizes) <= s  # shards differ in size by at most one
    one = shard_partition(digits_labels, 10, shards_per_client=1, seed=0)
    assert (label_counts(digits_labels, one) > 0).sum(axis=1).mean() < 2.5


def test_unequal_sizes() -> None:
    equal = unequal_partition(1000, 10, seed=0, sigma=0.0)
    assert {p.size for p in equal} == {100}
    spread = [p.size for p in unequal_partition(1000, 10, seed=0, sigma=1.5, min_size=5)]
    assert sum(spread) == 1000
    assert min(spread) >= 5
    assert max(spread) > 3 * min(spread)
    given_sizes = [1, 2, 997]
    parts = unequal_partition(1000, 3, seed=0, sizes=given_sizes)
    assert [p.size for p in parts] == given_sizes
    assert_covers(parts, 1000)


# --------------------------------------------------------------------- validation


@pytest.mark.parametrize("k", [0, -1, 11, True, 2.0])
def test_bad_num_clients(k: object) -> None:
    with pytest.raises(ConfigError, match="num_clients"):
        iid_partition(10, k, seed=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_alpha(alpha: float) -> None:
    with pytest.raises(ConfigError, match="alpha"):
        dirichlet_partition(np.zeros(10, dtype=int), 2, alpha=alpha, seed=0)


def test_other_validation() -> None:
    y = np.arange(10) % 3
    with pytest.raises(ConfigError, match="min_size"):
        dirichlet_partition(y, 4, alpha=1.0, seed=0, min_size=3)
    with pytest.raises(ConfigError, match="shards_per_client"):
        shard_partition(y, 4, shards_per_client=3, seed=0)
    with pytest.raises(ConfigError, match="shards_per_client"):
        shard_partition(y, 4, shards_per_client=0, seed=0)
    with pytest.raises(ConfigError, match="sum to num_samples=10"):
        unequal_partition(10, 2, seed=0, sizes=[3, 3])
    with pytest.raises(ConfigError, match="sizes"):
        unequal_partition(10, 2, seed=0, sizes=[10])
    with pytest.raises(ConfigError, match="sigma"):
        unequal_partition(10, 2, seed=0, sigma=-1.0)
    with pytest.raises(ConfigError, match="labels"):
        partition(np.zeros((2, 2), dtype=int), 1, method="iid", seed=0)
    with pytest.raises(ConfigError, match="labels"):
        partition(np.array([0.5, 1.0]), 1, method="iid", seed=0)
    with pytest.raises(ConfigError, match="seed"):
        iid_partition(10, 2, seed=-1)
    with pytest.raises(ConfigError, match="seed"):
        iid_partition(10, 2, seed=None)  # type: ignore[arg-type]


def test_dispatcher(digits_labels: np.ndarray) -> None:
    assert same(
        partition(digits_labels, 5, method="shard", seed=1, shards_per_client=2),
        shard_partition(digits_labels, 5, shards_per_client=2, seed=1),
    )
    assert same(
        partition(digits_labels, 5, method="IID", seed=1),
        iid_partition(digits_labels.size, 5, seed=1),
    )
    with pytest.raises(ConfigError, match="unknown partition method 'pathological'"):
        partition(digits_labels, 5, method="pathological", seed=0)
    with pytest.raises(ConfigError, match="alpha"):
        partition(digits_labels, 5, method="dirichlet", seed=0)  # alpha missing
    with pytest.raises(ConfigError, match="bad parameters"):
        partition(digits_labels, 5, method="iid", seed=0, alpha=1.0)
