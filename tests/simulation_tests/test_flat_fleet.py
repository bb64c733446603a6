"""The queue-only simulator's flat path for large fleets (issue 17, "a million clients").

Fleets of at least ``FLAT_MIN_CLIENTS`` clients run with per-client state in flat arrays
and statistics per tier (clients of identical service spec and routing probability).
Checked here: agreement with the exact tiered analysis (:func:`raysync.queueing.
analyze_tiered`), agreement with the per-client path on the same small fleet, exact
per-client completion counts, and a result config that loads back to the run's config.

Level: as in ``test_theory_agreement``, each network is ONE family of ``3T + 1`` intervals
(throughput, and per tier delay, queue length, utilisation) at family-wise level 99 %
(Bonferroni: each interval at ``1 - 0.01 / (3T + 1)``), so a correct simulator fails with
probability at most 1 % per network whatever the seed. Seeds were fixed before the first
run (0). Batches hold ~2,000 consecutive completions, far more than the ``C`` tasks in
flight, the scale of the network's relaxation, so batch means are close to independent.
"""

from __future__ import annotations

import numpy as np
import pytest

from raysync.config import ClientSpec, RoutingConfig, RunConfig, ServiceTimeSpec, SystemConfig
from raysync.queueing import TieredNetwork, analyze_tiered
from raysync.simulation import engine, simulate

FAMILY_LEVEL = 0.99


def tiered_config(
    counts: list[int], mu: list[float], *, concurrency: int, updates: int, seed: int = 0
) -> tuple[SystemConfig, TieredNetwork]:
    """A fleet in tiers routed ``p_j`` proportional to ``sqrt(mu_j)``, and its network."""
    weights = np.sqrt(np.asarray(mu, dtype=np.float64))
    p_tier = weights / float(np.dot(counts, weights))
    clients: list[ClientSpec] = []
    p: list[float] = []
    for m, rate, pj in zip(counts, mu, p_tier, strict=True):
        clients += [ClientSpec(service_time=ServiceTimeSpec(kind="exponential", rate=rate))] * m
        p += [float(pj)] * m
    config = SystemConfig(
        clients=tuple(clients),
        concurrency=concurrency,
        routing=RoutingConfig(kind="fixed", p=tuple(p)),
        run=RunConfig(num_updates=updates, train=False),
        seed=seed,
    )
    network = TieredNetwork(
        counts=np.asarray(counts, dtype=np.int64),
        mu=np.asarray(mu, dtype=np.float64),
        p=p_tier,
        concurrency=concurrency,
    )
    return config, network


def misses(lo: np.ndarray, hi: np.ndarray, target: np.ndarray) -> np.ndarray:
    return np.flatnonzero((np.asarray(target) < lo) | (np.asarray(target) > hi))


def test_flat_path_agrees_with_tiered_analysis() -> None:
    counts, mu = [4_000, 4_000, 4_000], [1.0, 3.0, 10.0]
    config, network = tiered_config(counts, mu, concurrency=200, updates=60_000)
    assert config.num_clients >= engine.FLAT_MIN_CLIENTS  # the flat path runs
    tiers = len(counts)
    level = 1.0 - (1.0 - FAMILY_LEVEL) / (3 * tiers + 1)
    result = simulate(config, confidence=level)
    theory = analyze_tiered(network)
    first = np.cumsum([0, *counts[:-1]])  # one client of each tier

    lo, hi = result.throughput_ci
    assert lo <= theory.throughput <= hi, (result.throughput, theory.throughput)
    ci = result.relative_delay_ci[first]
    bad = misses(ci[:, 0], ci[:, 1], theory.mean_relative_delay)
    assert not bad.size, (result.mean_relative_delay[first], theory.mean_relative_delay)
    ci = result.mean_queue_length_ci[first]
    bad = misses(ci[:, 0], ci[:, 1], theory.mean_queue_length)
    assert not bad.size, (result.mean_queue_length[first], theory.mean_queue_length)
    ci = result.utilization_ci[first]
    bad = misses(ci[:, 0], ci[:, 1], theory.utilization)
    assert not bad.size, (result.utilization[first], theory.utilization)
    # Clients of a tier get the tier's estimate; completions are their own, and exact.
    assert np.all(result.mean_relative_delay[: counts[0]] == result.mean_relative_delay[0])
    assert int(result.completed.sum()) == result.num_completions == 60_000
    assert len(set(result.completed[: counts[0]].tolist())) > 1


def test_flat_path_agrees_with_per_client_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same small fleet both ways: the two estimates' intervals overlap.

    The paths draw service times from different streams (one per tier, one per client),
    so they are two independent runs of the same system, not the same sample path.
    Each interval at ``1 - 0.01 / 2`` makes the pair's joint coverage at least 99 %, and
    two intervals that both cover the true value overlap.
    """
    config, _ = tiered_config([10, 10], [1.0, 4.0], concurrency=20, updates=40_000)
    level = 1.0 - (1.0 - FAMILY_LEVEL) / 2
    per_client = simulate(config, confidence=level)
    monkeypatch.setattr(engine, "FLAT_MIN_CLIENTS", 1)
    flat = simulate(config, confidence=level)
    assert flat.config == per_client.config  # no repeated spec object: same mapping
    lo = max(per_client.throughput_ci[0], flat.throughput_ci[0])
    hi = min(per_client.throughput_ci[1], flat.throughput_ci[1])
    assert lo <= hi, (per_client.throughput_ci, flat.throughput_ci)
    assert int(flat.completed.sum()) == flat.num_completions == 40_000
    # Same seed, same path: the flat path is deterministic.
    again = simulate(config, confidence=level)
    assert again.throughput == flat.throughput
    assert np.array_equal(again.completed, flat.completed)


def test_flat_result_config_loads_back_compact() -> None:
    config, _ = tiered_config([6_000, 6_000], [1.0, 2.0], concurrency=50, updates=2_000)
    result = simulate(config)
    assert len(result.config["clients"]) == 2  # one table per tier, with its count
    assert [entry["count"] for entry in result.config["clients"]] == [6_000, 6_000]
    assert SystemConfig.from_dict(result.config) == config


def test_flat_path_time_budget_and_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run length by time budget; FedBuff's buffer of B: B completions per version."""
    from raysync.config import AlgorithmConfig

    monkeypatch.setattr(engine, "FLAT_MIN_CLIENTS", 1)
    config, network = tiered_config([5, 5], [1.0, 2.0], concurrency=8, updates=3_000)
    config = config.replace(
        algorithm=AlgorithmConfig(name="fedbuff", lr=0.1, batch_size=8, buffer_size=4)
    )
    result = simulate(config)
    assert result.num_completions == 4 * result.num_updates == 12_000
    budget = config.replace(run=RunConfig(num_updates=None, time_budget=50.0, train=False))
    timed = simulate(budget)
    assert timed.elapsed == pytest.approx(50.0)
    assert 0 < timed.num_completions == int(timed.completed.sum())
