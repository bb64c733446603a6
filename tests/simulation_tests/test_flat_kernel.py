"""The compiled event loop of the flat queue-only path (issue 17, ">= 500k updates/s").

Checked here:

* exactness: given the same random draws, the kernel reproduces the engine's Python flat
  loop bit for bit (every snapshot row, the final row, the curve, the extras, the
  per-client counts), and the numba-compiled kernel equals its pure-Python form
  (``py_func``) on the same inputs;
* law: with its own streams, the kernel's throughput and per-tier staleness, queue length
  and utilisation agree with :func:`raysync.queueing.analyze_tiered`, and with the Python
  flat path on the same config;
* the dispatch rule: a router, service time or config feature the kernel does not know
  sends the run to the Python loop.

Statistical level: each network is one family of intervals at family-wise level 99 %
(Bonferroni), as in ``test_flat_fleet``, so a correct kernel fails with probability at
most 1 % per network whatever the seed; seeds were fixed before the first run.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from raysync.config import (
    AlgorithmConfig,
    ClientSpec,
    RoutingConfig,
    RunConfig,
    ServerConfig,
    ServiceTimeSpec,
    SystemConfig,
)
from raysync.queueing import TieredNetwork, analyze_tiered
from raysync.routing import FixedRouter, ReturnToSenderRouter, UniformRouter, make_router
from raysync.simulation import _flat_kernel, engine, simulate
from raysync.simulation.service_times import BaseServiceTime, make_service_time
from raysync.simulation.statistics import (
    Snapshots,
    service_stream,
    snapshot_capacity,
    snapshot_interval,
)

FAMILY_LEVEL = 0.99

pytestmark = pytest.mark.skipif(_flat_kernel._numba() is None, reason="numba not installed")


def tiered(
    counts: list[int],
    specs: list[ServiceTimeSpec],
    *,
    concurrency: int,
    updates: int | None,
    routing: str = "fixed",
    seed: int = 0,
    **extra: Any,
) -> SystemConfig:
    """A fleet in tiers; with ``fixed`` routing ``p_j`` is proportional to ``sqrt(mu_j)``."""
    mu = np.array([1.0 / make_service_time(s).mean for s in specs])
    weights = np.sqrt(mu)
    p_tier = weights / float(np.dot(counts, weights))
    clients: list[ClientSpec] = []
    p: list[float] = []
    for m, spec, pj in zip(counts, specs, p_tier, strict=True):
        clients += [ClientSpec(service_time=spec)] * m
        p += [float(pj)] * m
    route = (
        RoutingConfig(kind="fixed", p=tuple(p))
        if routing == "fixed"
        else RoutingConfig(kind=routing)
    )
    return SystemConfig(
        clients=tuple(clients),
        concurrency=concurrency,
        routing=route,
        run=RunConfig(num_updates=updates, train=False),
        seed=seed,
        **extra,
    )


def expo(rate: float) -> ServiceTimeSpec:
    return ServiceTimeSpec(kind="exponential", rate=rate)


def both_loops(
    config: SystemConfig, *, buffer: int = 1, budget: float = math.inf
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Run the Python flat loop and the kernel on the very same draws.

    The kernel's service draws are pulled from copies of the Python loop's per-tier
    streams and its routing draws from the same router the Python loop routes with
    (the kernel takes the initial clients from it too), so both see identical numbers.
    """
    outputs = []
    for use_kernel in (False, True):
        router = make_router(config.routing)
        router.bind(config.num_clients, engine._router_generator(config.seed))
        p = router.routing_probabilities()
        tier_of, specs, _ = engine._client_tiers(config, None if p is None else np.asarray(p))
        service_times = [make_service_time(s) for s in specs]
        streams = [
            service_stream(
                st,
                np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(3, k))),
                64,
            )
            for k, st in enumerate(service_times)
        ]
        capacity = snapshot_capacity(config.num_clients)
        updates = config.run.num_updates
        snapshots = Snapshots(snapshot_interval(updates, capacity), capacity)
        common: dict[str, Any] = {
            "config": config,
            "router": router,
            "tier_of": tier_of,
            "snapshots": snapshots,
            "max_updates": math.inf if updates is None else updates,
            "budget": budget,
            "progress": None,
            "buffer_size": buffer,
        }
        if use_kernel:

            def pull(stream: Any) -> Any:
                return lambda size: np.fromiter(itertools.islice(stream, size), np.float64, size)

            def routed(size: int, router: Any = router) -> np.ndarray:
                return np.array([router.route(-1) for _ in range(size)], dtype=np.int64)

            draws = _flat_kernel.Draws([pull(s) for s in streams], None if p is None else routed)
            out = _flat_kernel.run_queue_only_flat(
                **common, service_times=service_times, draws=draws
            )
        else:
            out = engine._run_queue_only_flat(**common, streams=streams)
        outputs.append((snapshots.rows, *out))
    return outputs[0], outputs[1]


def assert_rows_equal(a: tuple[Any, ...], b: tuple[Any, ...]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            assert np.array_equal(np.asarray(x), np.asarray(y))
        else:
            assert x == y, (x, y)


def assert_same_run(py: tuple[Any, ...], kernel: tuple[Any, ...]) -> None:
    rows_py, final_py, curve_py, extras_py, cnt_py = py
    rows_k, final_k, curve_k, extras_k, cnt_k = kernel
    assert len(rows_py) == len(rows_k) > 2
    for a, b in zip(rows_py, rows_k, strict=True):
        assert_rows_equal(a, b)
    assert_rows_equal(final_py, final_k)
    assert curve_py.times == curve_k.times
    assert curve_py.updates == curve_k.updates
    assert extras_py == extras_k
    assert np.array_equal(np.frombuffer(cnt_py, np.int64), np.frombuffer(cnt_k, np.int64))


@pytest.mark.parametrize(
    ("label", "routing", "buffer", "budget"),
    [
        ("fixed p", "fixed", 1, math.inf),
        ("FedBuff B=3", "fixed", 3, math.inf),
        ("uniform, time budget", "uniform", 1, 150.0),
    ],
)
def test_kernel_replays_the_python_flat_loop(
    label: str, routing: str, buffer: int, budget: float
) -> None:
    """Same draws in, same events and statistics out: the kernel is the Python loop."""
    specs = [expo(1.0), ServiceTimeSpec(kind="lognormal", mean=0.5, cv=2.0), expo(8.0)]
    config = tiered([6, 9, 4], specs, concurrency=15, updates=4_000, routing=routing)
    py, kernel = both_loops(config, buffer=buffer, budget=budget)
    assert_same_run(py, kernel)
    if budget < math.inf:
        assert kernel[1][1] == budget and kernel[1][0] < 4_000 * buffer  # stopped by time
    else:
        assert kernel[1][0] == 4_000 * buffer


def test_kernel_replays_return_to_sender() -> None:
    specs = [expo(1.0), ServiceTimeSpec(kind="deterministic", mean=0.3)]
    config = tiered([7, 5], specs, concurrency=12, updates=3_000, routing="return_to_sender")
    py, kernel = both_loops(config)
    assert_same_run(py, kernel)


def test_compiled_kernel_equals_its_pure_python_form() -> None:
    """numba and ``py_func`` on identical inputs (the kernel's own streams) agree exactly."""
    specs = [
        expo(2.0),
        ServiceTimeSpec(kind="trace", durations=(0.1, 0.5, 2.0)),
        ServiceTimeSpec(kind="lognormal", mean=1.0, cv=0.5),
    ]
    config = tiered([5, 8, 3], specs, concurrency=10, updates=1_500, seed=11)
    outputs = []
    for compiled in (True, False):
        router = make_router(config.routing)
        router.bind(config.num_clients, engine._router_generator(config.seed))
        tier_of, tier_specs, _ = engine._client_tiers(config, router.routing_probabilities())
        snapshots = Snapshots(25, 160)
        out = _flat_kernel.run_queue_only_flat(
            config=config,
            router=router,
            tier_of=tier_of,
            service_times=[make_service_time(s) for s in tier_specs],
            snapshots=snapshots,
            max_updates=1_500,
            budget=math.inf,
            progress=None,
            buffer_size=2,
            compiled=compiled,
        )
        outputs.append((snapshots.rows, *out))
    assert_same_run(outputs[0], outputs[1])


def test_two_word_delay_sums_are_exact_beyond_int64() -> None:
    """Sums of D^2 overflow int64 on long runs; the kernel keeps them exactly in two words."""
    rng = np.random.default_rng(5)
    delays = np.concatenate(
        [rng.integers(0, 2**31, 500), rng.integers(2**31, 2**40, 500), [2**31, 2**40 - 1]]
    )
    lo = np.zeros((1, 1), dtype=np.int64)
    hi = np.zeros((1, 1), dtype=np.int64)
    for d in delays.tolist():
        _flat_kernel._add_square(lo, hi, 0, 0, d)
    total = sum(d * d for d in delays.tolist())
    assert total > 2**63  # the case int64 alone gets wrong
    assert int(hi[0, 0]) * 2**62 + int(lo[0, 0]) == total
    assert 0 <= int(lo[0, 0]) < 2**62


def test_kernel_agrees_with_tiered_analysis(monkeypatch: pytest.MonkeyPatch) -> None:
    counts, mu = [3_000, 3_000, 3_000, 3_000], [1.0, 2.0, 5.0, 20.0]
    config = tiered(counts, [expo(m) for m in mu], concurrency=300, updates=200_000)
    calls = spy_kernel(monkeypatch)
    tiers = len(counts)
    level = 1.0 - (1.0 - FAMILY_LEVEL) / (3 * tiers + 1)
    result = simulate(config, confidence=level)
    assert calls == [1]  # the compiled loop ran
    weights = np.sqrt(np.asarray(mu))
    theory = analyze_tiered(
        TieredNetwork(
            counts=np.asarray(counts, dtype=np.int64),
            mu=np.asarray(mu),
            p=weights / float(np.dot(counts, weights)),
            concurrency=300,
        )
    )
    first = np.cumsum([0, *counts[:-1]])
    lo, hi = result.throughput_ci
    assert lo <= theory.throughput <= hi, (result.throughput, theory.throughput)
    for name, expected in (
        ("relative_delay_ci", theory.mean_relative_delay),
        ("mean_queue_length_ci", theory.mean_queue_length),
        ("utilization_ci", theory.utilization),
    ):
        ci = getattr(result, name)[first]
        inside = (ci[:, 0] <= expected) & (expected <= ci[:, 1])
        assert inside.all(), (name, ci, expected)
    assert int(result.completed.sum()) == result.num_completions == 200_000


def spy_kernel(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the kernel's runs (the real kernel still runs)."""
    calls: list[int] = []
    real = _flat_kernel.run_queue_only_flat

    def counted(**kwargs: Any) -> Any:
        calls.append(1)
        return real(**kwargs)

    monkeypatch.setattr(_flat_kernel, "run_queue_only_flat", counted)
    return calls


def test_kernel_and_python_flat_path_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same config through both loops: two independent runs of one system.

    Each interval at ``1 - 0.01 / 6`` (throughput and two tiers' delays, two runs): all six
    cover the truth with probability >= 99 %, and intervals that cover it overlap.
    """
    counts = [6_000, 6_000]
    config = tiered(counts, [expo(1.0), expo(4.0)], concurrency=100, updates=60_000, seed=2)
    level = 1.0 - (1.0 - FAMILY_LEVEL) / 6
    calls = spy_kernel(monkeypatch)
    kernel = simulate(config, confidence=level)
    assert calls == [1]
    monkeypatch.setattr(_flat_kernel, "unsupported", lambda *a: "forced Python path")
    python = simulate(config, confidence=level)
    assert calls == [1]  # the second run took the Python loop
    assert kernel.num_completions == python.num_completions == 60_000
    assert max(kernel.throughput_ci[0], python.throughput_ci[0]) <= min(
        kernel.throughput_ci[1], python.throughput_ci[1]
    )
    for i in (0, counts[0]):
        a, b = kernel.relative_delay_ci[i], python.relative_delay_ci[i]
        assert max(a[0], b[0]) <= min(a[1], b[1]), (i, a, b)
    assert kernel.throughput != python.throughput  # other streams, other values


class _Halving(BaseServiceTime):
    """A service law the kernel does not know (stands in for time-varying schedules)."""

    mean = 1.0
    variance = 1.0

    def sample(self, rng: np.random.Generator, size: int | None = None) -> Any:
        return rng.exponential(1.0, size=size)


class _Sticky(FixedRouter):
    """A fixed router that overrides ``route`` (stands in for adaptive routing)."""

    def route(self, finished_client: int) -> int:
        return finished_client if finished_client >= 0 else super().route(finished_client)


@dataclass(frozen=True, kw_only=True)
class _FutureClient(ClientSpec):
    """A client spec with a field the kernel does not know."""

    churn: float = 0.0


def bound(router: Any, n: int) -> Any:
    router.bind(n, np.random.default_rng(0))
    return router


def test_dispatch_rule_names_what_the_kernel_does_not_know(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = tiered([3, 3], [expo(1.0), expo(2.0)], concurrency=6, updates=100)
    p = np.full(6, 1 / 6)
    known = [make_service_time(expo(1.0)), make_service_time(expo(2.0))]
    unsupported = _flat_kernel.unsupported
    for router in (FixedRouter(p=p), UniformRouter(), ReturnToSenderRouter()):
        assert unsupported(config, bound(router, 6), known) is None
    reason = unsupported(config, bound(_Sticky(p=p), 6), known)
    assert reason is not None and "_Sticky" in reason
    reason = unsupported(config, bound(FixedRouter(p=p), 6), [*known, _Halving()])
    assert reason is not None and "_Halving" in reason
    delayed = config.replace(
        clients=(
            ClientSpec(
                service_time=expo(1.0),
                downlink=ServiceTimeSpec(kind="deterministic", mean=0.1),
            ),
            *config.clients[1:],
        )
    )
    reason = unsupported(delayed, bound(FixedRouter(p=p), 6), known)
    assert reason is not None and "downlink" in reason
    served = config.replace(
        server=ServerConfig(update_time=ServiceTimeSpec(kind="deterministic", mean=0.01))
    )
    reason = unsupported(served, bound(FixedRouter(p=p), 6), known)
    assert reason is not None and "server" in reason
    # A client field added later (churn, say) is refused unless it holds its default.
    churned = config.replace(
        clients=(_FutureClient(service_time=expo(1.0), churn=0.5),), routing=RoutingConfig()
    )
    reason = unsupported(churned, bound(FixedRouter(p=[1.0]), 1), known[:1])
    assert reason is not None and "churn" in reason
    idle = churned.replace(clients=(_FutureClient(service_time=expo(1.0)),))
    assert unsupported(idle, bound(FixedRouter(p=[1.0]), 1), known[:1]) is None
    monkeypatch.setattr(_flat_kernel, "MAX_KERNEL_TIERS", 1)
    reason = unsupported(config, bound(FixedRouter(p=p), 6), known)
    assert reason is not None and "tiers" in reason
    monkeypatch.setattr(_flat_kernel, "_numba", lambda: None)
    reason = unsupported(config, bound(FixedRouter(p=p), 6), known)
    assert reason is not None and "numba" in reason


def test_unknown_router_takes_the_python_flat_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    counts = [5_000, 5_000]
    config = tiered(counts, [expo(1.0), expo(3.0)], concurrency=50, updates=3_000)
    calls = spy_kernel(monkeypatch)
    assert config.routing.p is not None
    sticky = simulate(config, router=_Sticky(p=config.routing.p))
    assert calls == []  # the kernel never ran
    assert sticky.num_completions == 3_000
    # Every replacement goes back to its sender: only the initial clients ever complete.
    assert np.count_nonzero(sticky.completed) <= 50
    simulate(config)
    assert calls == [1]


def test_kernel_runs_fedbuff_budget_and_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "FLAT_MIN_CLIENTS", 1)
    config = tiered([4, 4], [expo(1.0), expo(2.0)], concurrency=6, updates=2_000)
    config = config.replace(
        algorithm=AlgorithmConfig(name="fedbuff", lr=0.1, batch_size=8, buffer_size=4)
    )
    calls = spy_kernel(monkeypatch)
    seen: list[tuple[int, float]] = []
    result = simulate(config, progress=lambda u, t: seen.append((u, t)))
    assert calls == [1]
    assert result.num_completions == 4 * result.num_updates == 8_000
    assert seen[-1] == (2_000, pytest.approx(result.elapsed))
    assert [u for u, _ in seen] == sorted(u for u, _ in seen) and len(seen) > 10
    assert result.max_relative_delay <= result.extras["max_completion_delay"]
    timed = simulate(config.replace(run=RunConfig(num_updates=None, time_budget=30.0, train=False)))
    assert calls == [1, 1]
    assert timed.elapsed == pytest.approx(30.0)
    assert 0 < timed.num_completions == int(timed.completed.sum())


def test_heapify_equals_heapq_on_a_large_heap_with_ties() -> None:
    """CPython heapifies large lists in another order; the resulting array is the same."""
    import heapq

    rng = np.random.default_rng(9)
    size = 6_000  # above CPython's 2,500-entry switch to its cache-friendly heapify
    ends = rng.integers(0, 50, size).astype(np.float64)  # many ties, broken by seq
    clients = rng.integers(0, 10**6, size)
    heap = [(float(e), s, int(c)) for s, (e, c) in enumerate(zip(ends, clients, strict=True))]
    heapq.heapify(heap)
    ht, hs, hc = ends.copy(), np.arange(size, dtype=np.int64), clients.astype(np.int64)
    _flat_kernel._heapify(ht, hs, hc, size)
    assert [(float(a), int(b), int(c)) for a, b, c in zip(ht, hs, hc, strict=True)] == heap
