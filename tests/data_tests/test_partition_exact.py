"""Partitions are exact for every method and every valid parameter, extremes included.

Exact: every training sample is given to exactly one client and every client gets at
least one sample (``min_size = 1``, what configs use). The parameters range over their
whole valid domain: Dirichlet ``alpha`` from 1e-300 to 1e300, log-normal spread ``sigma``
up to 1e308 (weights like ``exp(1e308 * z)`` must neither overflow nor lose samples),
any number of shards per client that fits.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raysync.config import (
    ClientSpec,
    DataConfig,
    RunConfig,
    ServiceTimeSpec,
    SystemConfig,
)
from raysync.data import PARTITION_METHODS, partition, unequal_partition
from raysync.workload import build_workload

SETTINGS = settings(max_examples=80, deadline=None, derandomize=True)


def assert_exact(parts: list[np.ndarray], n: int, k: int) -> None:
    assert len(parts) == k
    sizes = np.array([p.size for p in parts])
    assert sizes.min() >= 1, f"empty client: sizes {sizes.tolist()}"
    everything = np.concatenate(parts)
    assert everything.size == n, f"{everything.size} slots for {n} samples"
    assert np.array_equal(np.sort(everything), np.arange(n))


@st.composite
def problems(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    n = draw(st.integers(1, 400))
    classes = draw(st.integers(1, 12))
    # labels from a drawn seed: cheap to generate and to shrink
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    labels = rng.integers(0, classes, size=n).astype(np.int64)
    k = draw(st.integers(1, n))
    return labels, k


_POSITIVE = st.one_of(
    st.floats(min_value=1e-300, max_value=1e300),
    st.sampled_from([1e-300, 1e-12, 1e-3, 0.1, 1.0, 1e3, 1e12, 1e13, 1e300, 1.7e308]),
)


@SETTINGS
@given(problem=problems(), method=st.sampled_from(PARTITION_METHODS), data=st.data())
def test_every_method_and_parameter_gives_an_exact_partition(
    problem: tuple[np.ndarray, int], method: str, data: st.DataObject
) -> None:
    labels, k = problem
    n = labels.size
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    params: dict[str, float | int] = {}
    if method == "dirichlet":
        params["alpha"] = data.draw(_POSITIVE, label="alpha")
    elif method == "shards":
        params["shards_per_client"] = data.draw(st.integers(1, n // k), label="shards")
    elif method == "unequal":
        params["sigma"] = data.draw(st.one_of(st.just(0.0), _POSITIVE), label="sigma")
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no inf or NaN
        parts = partition(labels, k, method=method, seed=seed, **params)
    assert_exact(parts, n, k)


@pytest.mark.parametrize("sigma", [0.0, 1.0, 1000.0, 1e300, 1.7e308])
def test_unequal_huge_spread_is_exact_and_keeps_its_limit(sigma: float) -> None:
    # the reported case: 20 clients over 1,259 samples with size_spread = 1000 gave 1,271
    # slots (exp(1000 z) overflowed); in the limit one client holds all but the minimum
    parts = unequal_partition(1259, 20, seed=0, sigma=sigma)
    assert_exact(parts, 1259, 20)
    sizes = sorted(p.size for p in parts)
    if sigma >= 1000:
        assert sizes[:-1] == [1] * 19 and sizes[-1] == 1259 - 19


def test_unequal_sizes_follow_the_weights_for_moderate_spread() -> None:
    # sigma = 0 is the equal split; larger sigma spreads the sizes (log-normal weights)
    equal = sorted(p.size for p in unequal_partition(1000, 10, seed=1, sigma=0.0))
    assert equal == [100] * 10
    spread = [p.size for p in unequal_partition(100_000, 10, seed=1, sigma=2.0)]
    assert max(spread) / min(spread) > 5


@pytest.mark.parametrize("method", PARTITION_METHODS)
def test_config_workload_partition_is_exact(method: str) -> None:
    config = SystemConfig(
        clients=tuple(ClientSpec(service_time=ServiceTimeSpec(rate=1.0)) for _ in range(20)),
        concurrency=20,
        data=DataConfig(partition=method, size_spread=1000.0, alpha=1e-3, shards_per_client=3),
        run=RunConfig(num_updates=10),
    )
    workload = build_workload(config)
    parts = [np.asarray(p) for p in workload.client_indices]
    assert_exact(parts, workload.dataset.num_train, 20)
