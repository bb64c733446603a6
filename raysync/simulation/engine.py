"""Discrete-event simulation of an asynchronous FL system on a virtual clock.

The simulated system is docs/theory.md section 1 exactly: ``n`` clients, each a FIFO queue of
tasks served one at a time with its own service-time distribution; exactly ``C`` tasks in
flight; when a task completes at client ``i`` the server consumes its result (version
``k -> k+1`` when the strategy returns a new model), then the router names the client of the
one task that replaces it, which carries the model version current *after* the update.

Training mode computes each task's work (a minibatch gradient, or local steps) with
:func:`raysync.client.run_client_work`, the function the Ray actors call, on the model
version the task carried. The result does not depend on when it is computed, so it is
computed lazily at the task's completion: only the versions still referenced by tasks in
flight stay alive. Queue-only mode skips the model entirely (each completion advances the
version by one, as the SGD rules do, or every ``B`` completions for FedBuff's buffer of
``B``) and runs a tight loop of several hundred thousand updates per second.

Fleets of :data:`FLAT_MIN_CLIENTS` clients or more (10^4 .. 10^6) take the queue-only
*flat path* (:func:`_run_queue_only_flat`): O(log C) work per event whatever ``n``, about
28 bytes of simulator state per client in flat arrays (no per-client Python object), and
statistics kept per tier of exchangeable clients (same service spec and routing
probability), so each client reports its tier's estimate; its completion count is exact.

Randomness: :func:`run_generators` derives one generator per client for service times,
one minibatch stream per task (:class:`~raysync.simulation.minibatch.MinibatchStreams`,
the ``k``-th task of client ``i``: the Ray runtime draws the same) and one for the
router, all from ``numpy.random.SeedSequence(config.seed)``; the same seed gives the same
run, bit for bit.

Statistics: per-client completions, relative delays counted both in model versions
(``D = k - v``, what the strategy sees) and in completions (the queueing theory's unit;
the same count unless updates are buffered), each as a sum and a sum of squares,
the exact time integral of every queue length and every client's busy time are kept as
running sums and snapshotted on a grid of completion counts. After the run, a warm-up
(10 % of the completions by default) is dropped and the rest cut into batches of
consecutive completions; point estimates are ratios of totals and intervals come from
batch means (:func:`~raysync.simulation.result.batch_ratio_ci`).
"""

from __future__ import annotations

import heapq
import logging
import math
import os
import sys
import time as _time
from array import array
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np

from raysync.config import SystemConfig
from raysync.exceptions import ConfigError
from raysync.monitoring import MetricsSink
from raysync.simulation.minibatch import MinibatchStreams
from raysync.simulation.result import RunResult
from raysync.simulation.statistics import (
    DEFAULT_BLOCK,
    Snapshots,
    batch_statistics,
    service_stream,
    snapshot_capacity,
    snapshot_interval,
)

if TYPE_CHECKING:
    from raysync.routing._base import BaseRouter
    from raysync.simulation._dynamics import FleetDynamics
    from raysync.strategies._base import BaseStrategy
    from raysync.workload import Workload

__all__ = [
    "FLAT_MIN_CLIENTS",
    "MAX_EVALUATIONS",
    "MAX_SIMULATED_COMPLETIONS",
    "ProgressCallback",
    "SIMULATOR_TASK_BYTES",
    "check_evaluations",
    "check_first_completion",
    "check_simulation",
    "check_task_memory",
    "check_version_memory",
    "eval_failure",
    "RunGenerators",
    "queue_only_snapshots",
    "run_generators",
    "simulate",
    "throughput_bounds",
    "time_unit",
]

logger = logging.getLogger(__name__)

#: ``progress(updates, time)``: called now and then with the model version and the clock.
ProgressCallback = Callable[[int, float], None]

# SeedSequence spawn keys of the run's independent streams (stable: results depend on them).
# Key 1 keys the minibatch streams (raysync.simulation.minibatch).
_KEY_SERVICE = 0
_KEY_ROUTER = 2


@dataclass(frozen=True)
class RunGenerators:
    """The independent random streams of one run.

    Attributes:
        service: One generator per client for its service times.
        minibatch: The minibatch stream of every task (:class:`MinibatchStreams`: the
            ``k``-th task of client ``i`` draws from ``minibatch.task(i, k)``).
        router: The router's generator.
    """

    service: tuple[np.random.Generator, ...]
    minibatch: MinibatchStreams
    router: np.random.Generator


def run_generators(seed: int, num_clients: int) -> RunGenerators:
    """Derive a run's generators from its root seed (shared with the Ray runtime).

    Child ``(0, i)`` of ``SeedSequence(seed)`` drives client ``i``'s service times,
    ``(1,)`` keys the per-task minibatch streams (:class:`MinibatchStreams`) and ``(2,)``
    drives the router.

    Args:
        seed: Root seed (``SystemConfig.seed``).
        num_clients: Number of clients ``n``.

    Returns:
        Fresh, independent generators.
    """

    def child(*key: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))

    return RunGenerators(
        service=tuple(child(_KEY_SERVICE, i) for i in range(num_clients)),
        minibatch=MinibatchStreams(seed),
        router=child(_KEY_ROUTER),
    )


# --------------------------------------------------------------------------- recording


@dataclass
class _Curve:
    """Evaluation time series."""

    times: list[float]
    updates: list[int]
    test_loss: list[float]
    test_accuracy: list[float]
    val_loss: list[float]
    val_accuracy: list[float]


# --------------------------------------------------------------------------- the engine


def _check_inputs(
    config: SystemConfig,
    warmup_fraction: float,
    num_batches: int,
    confidence: float,
    block_size: int,
) -> None:
    if not 0.0 <= warmup_fraction < 1.0:
        raise ConfigError(f"warmup_fraction must be in [0, 1), got {warmup_fraction!r}")
    if num_batches < 2:
        raise ConfigError(f"num_batches must be >= 2, got {num_batches!r}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence!r}")
    if block_size < 1:
        raise ConfigError(f"block_size must be >= 1, got {block_size!r}")
    if not isinstance(config, SystemConfig):
        raise ConfigError(f"config must be a SystemConfig, got {type(config).__name__}")


def _preflight(
    config: SystemConfig, train: bool, strategy: BaseStrategy | None
) -> tuple[int, float, SystemConfig]:
    """The checks made before anything is allocated; ``(B, time unit, config in it)``."""
    from raysync.queueing.predict import buffer_size as config_buffer_size
    from raysync.simulation._network import has_network

    buffer = _buffer_size(strategy) if train else config_buffer_size(config)
    unit = time_unit(config)
    inner = in_time_unit(config, unit)
    _check_run_length(inner, buffer, unit)
    kind = "network" if has_network(config) else "train" if train else "queue_only"
    check_task_memory(config.concurrency, SIMULATOR_TASK_BYTES[kind], "the simulator")
    if train:
        check_evaluations(inner, buffer, unit)
    return buffer, unit, inner


#: ``simulate``'s default warm-up fraction, which :func:`check_simulation` assumes.
_WARMUP_FRACTION = 0.1


def check_simulation(config: SystemConfig, *, queue_only: bool | None = None) -> None:
    """Refuse what ``raysync simulate`` would refuse, without simulating.

    What :func:`simulate` checks before it allocates anything (the run's length against
    the simulator's limit of completions, its throughput and duration against the float
    range, the evaluations it asks for, its tasks' memory, the clients' presence) and a
    run so short that its default warm-up drops every completion, or that ends before any
    task can complete (:func:`check_first_completion`; the command's report would be
    NaN). The workload is not built (its checks are
    :func:`raysync.workload.check_workload`'s; the model versions' memory,
    :func:`check_version_memory`, needs the model's size). ``raysync simulate`` and
    ``raysync validate`` call it.

    Args:
        config: The system.
        queue_only: As in :func:`simulate` (None: ``not config.run.train``).

    Raises:
        ConfigError: One line naming the field, the rule and the value.
    """
    from raysync.simulation._dynamics import check_presence
    from raysync.strategies import make_strategy

    _check_inputs(config, _WARMUP_FRACTION, 30, 0.99, DEFAULT_BLOCK)
    train = config.run.train if queue_only is None else not queue_only
    buffer, _, _ = _preflight(config, train, make_strategy(config.algorithm) if train else None)
    check_presence(config)
    check_first_completion(config)
    if config.run.num_updates is not None:
        most = config.run.num_updates * buffer
        if most - math.ceil(_WARMUP_FRACTION * most) < 1:
            # simulate() returns such a run (its model is trained), but every statistic
            # of the queues is NaN: the warm-up drops every completion
            raise ConfigError(
                f"run.num_updates = {config.run.num_updates:,} (x B = {buffer}) is {most} "
                f"task completion(s), all dropped as the warm-up (the first "
                f"{_WARMUP_FRACTION:g} of them, rounded up), so there would be nothing to "
                "measure; set run.num_updates to at least 2"
            )


def check_first_completion(config: SystemConfig) -> None:
    """Refuse a ``run.time_budget`` that ends before any client can finish a task.

    A lower bound on the first completion (config seconds): each client's earliest
    service end after it joins
    (:meth:`~raysync.simulation.service_times.BaseServiceTime.earliest_finish`; 0 s of
    service for a law whose durations can be arbitrarily short), links and the server
    station left out. So a config refused here completes nothing, in the simulator or on
    Ray with emulation (a task lasts at least ``time_scale`` times its service time), and
    one that passes may still complete nothing (``raysync simulate`` then says so after
    the run). No budget: nothing to check.

    Raises:
        ConfigError: One line naming the budget and the earliest possible completion.
    """
    from raysync.simulation.service_times import make_service_time

    if config.run.time_budget is None:
        return
    budget = float(config.run.time_budget)

    laws: dict[Any, Any] = {}  # one law per distinct spec: a fleet shares a few
    earliest, who = math.inf, 0
    for i, client in enumerate(config.clients):
        spec = client.service_time
        if spec not in laws:
            laws[spec] = make_service_time(spec)
        end = laws[spec].earliest_finish(float(client.join_time))
        if end <= budget:
            return
        if end < earliest:
            earliest, who = end, i
    raise ConfigError(
        f"run.time_budget (--time-budget) = {budget:g} s ends before any task can be "
        f"completed: the earliest a client can finish one is {earliest:g} s (clients[{who}], "
        f"{config.clients[who].service_time.kind} service time, joining at "
        f"{float(config.clients[who].join_time):g} s), so there would be nothing to measure; "
        f"make run.time_budget longer than {earliest:g} s"
    )


def simulate(
    config: SystemConfig,
    *,
    workload: Workload | None = None,
    queue_only: bool | None = None,
    router: BaseRouter | None = None,
    strategy: BaseStrategy | None = None,
    sinks: Sequence[MetricsSink] = (),
    progress: ProgressCallback | None = None,
    warmup_fraction: float = _WARMUP_FRACTION,
    num_batches: int = 30,
    confidence: float = 0.99,
    block_size: int = DEFAULT_BLOCK,
) -> RunResult:
    """Simulate one run of an asynchronous FL system on a virtual clock.

    Args:
        config: The system: clients and their service times, concurrency, routing,
            algorithm, data, model, run length (``run.num_updates`` and/or
            ``run.time_budget`` in virtual seconds, whichever comes first) and seed.
        workload: Prebuilt training workload (dataset, partitions, model); built from
            ``config`` when None and training. Ignored in queue-only mode.
        queue_only: Skip training (no model, no strategy; every completion advances the
            version by one, or every ``B`` completions when the config's algorithm is
            FedBuff with ``buffer_size = B``). Defaults to ``not config.run.train``. With
            at least :data:`FLAT_MIN_CLIENTS` clients the run takes the flat path (see the
            module docstring): per-client statistics are their tier's pooled estimates and
            service times come from one stream per tier (same law, other values).
        router: Router to use instead of ``make_router(config.routing)`` (e.g. an
            adaptive one). It is bound here.
        strategy: Strategy to use instead of ``make_strategy(config.algorithm)``. It is
            bound here.
        sinks: Metrics sinks; each evaluation calls ``log_scalars(step, scalars,
            time=t)``, and the end of the run logs the summary statistics.
        progress: Called as ``progress(updates, virtual_time)`` now and then.
        warmup_fraction: Fraction of the completions dropped before measuring.
        num_batches: Batches of the batch-means intervals.
        confidence: Level of the intervals.
        block_size: Service times drawn per call of ``BaseServiceTime.sample``.

    Returns:
        The run's :class:`~raysync.simulation.result.RunResult` (``backend="simulation"``).

    Raises:
        ConfigError: A bad argument, or a workload that does not match the config.
    """
    _check_inputs(config, warmup_fraction, num_batches, confidence, block_size)
    from raysync.routing import make_router
    from raysync.simulation._dynamics import FleetDynamics
    from raysync.simulation.service_times import make_service_time
    from raysync.strategies import make_strategy

    wall_start = _time.perf_counter()
    n = config.num_clients
    train = config.run.train if queue_only is None else not queue_only
    if train and strategy is None:
        strategy = make_strategy(config.algorithm)
    buffer, unit, inner = _preflight(config, train, strategy)
    # A large queue-only fleet never builds per-client generators, streams or snapshots.
    from raysync.simulation._network import has_network, network_streams, run_network

    # Delays and a server station take the general loop (docs/network.md), never the flat path.
    if router is None:
        router = make_router(config.routing)
    # Feedback and non-stationary fleets take the per-client loops too.
    flat = (
        not train and n >= FLAT_MIN_CLIENTS and not has_network(config)
        and not FleetDynamics.needed(config, router)
    )  # fmt: skip
    gens = None if flat else run_generators(config.seed, n)
    if router is None:
        router = make_router(config.routing)
    router.bind(n, _router_generator(config.seed) if gens is None else gens.router)
    max_updates = inner.run.num_updates
    budget = inner.run.time_budget
    if progress is not None and unit != 1.0:
        outer_progress = progress

        def progress(updates: int, now: float) -> None:
            outer_progress(updates, now * unit)

    if flat:
        stats, final_row, curve, extra, _ = _simulate_flat(
            inner,
            router,
            buffer=buffer,
            max_updates=max_updates if max_updates is not None else math.inf,
            budget=budget if budget is not None else math.inf,
            progress=progress,
            warmup_fraction=warmup_fraction,
            num_batches=num_batches,
            confidence=confidence,
            block_size=block_size,
        )
        return _result(
            config, stats, final_row, curve, extra, router, unit, train, buffer, confidence,
            block_size, 0.0, extra["snapshot_interval"], sinks, wall_start,
        )  # fmt: skip
    assert gens is not None
    service_times = [make_service_time(c.service_time) for c in inner.clients]
    streams = [
        service_stream(st, rng, block_size)
        for st, rng in zip(service_times, gens.service, strict=True)
    ]
    dynamics = _dynamics(
        inner, router, service_times, streams, gens, strategy if train else None, sinks, unit,
        network=has_network(config),
    )  # fmt: skip
    capacity = snapshot_capacity(n)
    snapshots = Snapshots(snapshot_interval(max_updates, capacity), capacity)
    common: dict[str, Any] = {
        "config": inner,
        "router": router,
        "streams": streams,
        "snapshots": snapshots,
        "max_updates": max_updates if max_updates is not None else math.inf,
        "budget": budget if budget is not None else math.inf,
        "progress": progress,
    }
    if dynamics is not None:
        common["dynamics"] = dynamics
    eval_seconds = 0.0
    network = network_streams(config, block_size=block_size, unit=unit)
    if train:
        loop = _TrainingLoop(
            **common,
            workload=workload,
            strategy=strategy,
            minibatch_rngs=gens.minibatch,
            sinks=sinks,
            time_unit=unit,
        )
        # An update that overflows float32 makes the model non-finite, which the next task
        # or evaluation reports as one DivergenceError; numpy's overflow warnings from the
        # strategy's cast would only print ahead of it. One context for the whole run, not
        # one per update.
        with np.errstate(over="ignore", invalid="ignore"):
            if network is None:
                final_row, curve, extra = loop.run()
            else:
                final_row, curve, extra = run_network(
                    **common, network=network, trainer=loop
                )
        eval_seconds = extra["eval_seconds"]
    elif network is not None:
        final_row, curve, extra = run_network(**common, network=network, buffer_size=buffer)
    else:
        final_row, curve, extra = _run_queue_only(**common, buffer_size=buffer)
    stats = batch_statistics(
        snapshots.rows,
        final_row,
        num_clients=n,
        warmup_fraction=warmup_fraction,
        num_batches=num_batches,
        confidence=confidence,
        transient_end=int(extra["transient_end"]),
    )
    stats["warnings"] += _sampling_warnings(inner, stats["completed"], service_times)
    if network is not None and network.server is not None:
        from raysync.simulation._network import server_utilization

        extra["server_utilization"] = server_utilization(
            snapshots.rows, final_row, stats["warmup_updates"]
        )
    return _result(
        config, stats, final_row, curve, extra, router, unit, train, buffer, confidence,
        block_size, eval_seconds, snapshots.interval, sinks, wall_start,
    )  # fmt: skip


def _config_dict(config: SystemConfig) -> dict[str, Any]:
    """``config.to_dict()`` with runs of identical clients as one table with ``count``.

    The same mapping for fleets without repeats; for a fleet of 10^6 clients in tiers it
    is a few tables instead of 10^6 (which take a minute and a gigabyte to build), and it
    loads back to an equal config (:meth:`SystemConfig.from_dict` expands ``count``).
    """
    import dataclasses

    runs: list[list[Any]] = []
    for client in config.clients:
        if runs and (client is runs[-1][0] or client == runs[-1][0]):
            runs[-1][1] += 1
        else:
            runs.append([client, 1])
    if len(runs) == len(config.clients):
        return config.to_dict()
    out: dict[str, Any] = {}
    routing_p: list[float] | None = None
    for f in dataclasses.fields(config):
        if f.name == "clients":
            out[f.name] = [
                {**dataclasses.asdict(spec), **({"count": k} if k > 1 else {})} for spec, k in runs
            ]
        else:
            value = getattr(config, f.name)
            if f.name == "routing" and getattr(value, "p", None) is not None:
                # asdict walks a 10^6-entry tuple element by element; a list copy is enough.
                table = {g.name: getattr(value, g.name) for g in dataclasses.fields(value)}
                table["p"] = None  # set after _drop_none, which would walk its 10^6 entries
                routing_p = list(value.p)
                out[f.name] = table
            elif dataclasses.is_dataclass(value) and not isinstance(value, type):
                out[f.name] = dataclasses.asdict(value)
            else:
                out[f.name] = value
    compact = _drop_none(out)
    if routing_p is not None:
        compact["routing"]["p"] = routing_p
    return compact


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_drop_none(v) for v in value]
    return value


def _router_generator(seed: int) -> np.random.Generator:
    """The router's generator of :func:`run_generators`, without the per-client ones."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_KEY_ROUTER,)))


def _result(
    config: SystemConfig,
    stats: dict[str, Any],
    final_row: tuple[Any, ...],
    curve: _Curve,
    extra: dict[str, Any],
    router: BaseRouter,
    unit: float,
    train: bool,
    buffer: int,
    confidence: float,
    block_size: int,
    eval_seconds: float,
    interval: int,
    sinks: Sequence[MetricsSink],
    wall_start: float,
) -> RunResult:
    """Assemble the :class:`RunResult` of a finished run (time converted to seconds)."""
    from raysync.monitoring import summary_scalars

    n = config.num_clients
    if unit != 1.0:
        stats = _to_seconds(stats, unit)
    for message in stats["warnings"]:
        logger.warning("%s", message)
    end_time = float(final_row[1]) * unit
    if not math.isfinite(end_time):  # the guards above make this unreachable; never report inf
        raise ConfigError(f"the run's virtual duration overflowed ({final_row[1]!r} x {unit!r} s)")
    num_updates = int(final_row[2])
    wall = _time.perf_counter() - wall_start
    result = RunResult(
        backend="simulation",
        train=train,
        seed=config.seed,
        num_clients=n,
        concurrency=config.concurrency,
        num_updates=num_updates,
        num_completions=int(final_row[0]),
        elapsed=end_time,
        wall_time=wall,
        max_relative_delay=int(extra["max_delay"]),
        times=np.asarray(curve.times, dtype=np.float64) * unit,
        updates=np.asarray(curve.updates, dtype=np.int64),
        test_loss=np.asarray(curve.test_loss, dtype=np.float64),
        test_accuracy=np.asarray(curve.test_accuracy, dtype=np.float64),
        val_loss=np.asarray(curve.val_loss, dtype=np.float64),
        val_accuracy=np.asarray(curve.val_accuracy, dtype=np.float64),
        final_test_loss=float(curve.test_loss[-1]) if curve.test_loss else math.nan,
        final_test_accuracy=float(curve.test_accuracy[-1]) if curve.test_accuracy else math.nan,
        final_val_loss=float(curve.val_loss[-1]) if curve.val_loss else math.nan,
        final_val_accuracy=float(curve.val_accuracy[-1]) if curve.val_accuracy else math.nan,
        confidence=confidence,
        buffer_size=buffer,
        config=_config_dict(config),
        extras={
            "eval_seconds": eval_seconds,
            "max_completion_delay": int(extra["max_completion_delay"]),
            "transient_end": int(extra["transient_end"]),
            "snapshot_interval": interval,
            "block_size": block_size,
            **({k: extra[k] for k in ("server_utilization",) if k in extra}),
            "time_unit": unit,
            "routing_probabilities": (
                None
                if router.routing_probabilities() is None
                else [float(v) for v in np.asarray(router.routing_probabilities())]
            ),
        },
        **stats,
    )
    if sinks:
        scalars = summary_scalars(result)
        for sink in sinks:
            sink.log_scalars(num_updates, scalars, time=end_time)
    logger.debug("simulation done: %d updates in %.3f s wall", num_updates, wall)
    return result


#: Most completions one simulated run may need (about 5 hours of the queue-only loop);
#: a longer run is refused up front instead of running for days.
MAX_SIMULATED_COMPLETIONS = 10**10

#: Most evaluations one run may schedule with ``run.eval_every_seconds`` (each one
#: evaluates the model on the test set; an interval far below the run's length would also
#: stop the evaluation clock from advancing in floating point).
MAX_EVALUATIONS = 10**6

#: Service-time means within ``[2**-_SAFE_EXP, 2**_SAFE_EXP]`` seconds are simulated in
#: seconds; beyond, in a power-of-two time unit (see :func:`time_unit`).
_SAFE_EXP = 64


def _mean_durations(config: SystemConfig) -> np.ndarray:
    """Each client's mean service time, shape ``(n,)``; one computation per spec object."""
    seen: dict[int, float] = {}
    for client in config.clients:
        spec = client.service_time
        if id(spec) not in seen:
            seen[id(spec)] = spec.mean_duration
    return np.array([seen[id(c.service_time)] for c in config.clients], dtype=np.float64)


def time_unit(config: SystemConfig) -> float:
    """The power of two (in seconds) the simulator's clock counts in, 1.0 for usual fleets.

    The clock, the queue-length integrals (sums of instants, about ``completions x
    clock``) and the throughput must stay in the float range. With the slowest mean time
    of the fleet (service, downlink, uplink or server update) within ``2**-64 .. 2**64`` s
    they do for any run the simulator accepts; beyond (rates near ``1e308`` or ``1e-308``
    per second) the run is simulated in a unit ``2**e`` s in which the slowest mean is
    about 1 (an exact power of two: the durations are the same numbers, rescaled without
    rounding) and converted back. When a much faster client's rate would then leave
    :data:`~raysync.config.SERVICE_TIME_RANGE`, the unit is lowered until the slowest mean
    is up to ``2**64`` units, as far as the clock allows.
    """
    slowest = float(_mean_durations(config).max())
    links = _delay_specs(config)
    if links:
        slowest = max(slowest, max(spec.mean_duration for _, spec in links))
    if 2.0**-_SAFE_EXP <= slowest <= 2.0**_SAFE_EXP:
        return 1.0
    top = math.frexp(slowest)[1]
    exponent = top - 1  # slowest / unit in [1, 2)
    if slowest > 1.0:
        exponent = min(exponent, max(_largest_exponent(config), top - _SAFE_EXP))
    return math.ldexp(1.0, exponent)


def _delay_specs(config: SystemConfig) -> list[tuple[str, Any]]:
    """Each delay station's spec (downlink, uplink, server update), named by its field."""
    out = [
        (f"clients[{i}].{leg}", spec)
        for i, c in enumerate(config.clients)
        for leg, spec in (("downlink", c.downlink), ("uplink", c.uplink))
        if spec is not None
    ]
    if config.server is not None and config.server.update_time is not None:
        out.append(("server.update_time", config.server.update_time))
    return out


def _service_fields(spec: Any, where: str) -> list[tuple[str, str, float]]:
    """Every rate and time a service-time spec holds, as ``(field, kind, value)``.

    ``kind`` is ``"rate"`` (per second), ``"time"`` (a duration, seconds) or ``"until"``
    (a schedule instant, seconds); ``field`` is the path the user wrote.
    """
    if spec.kind == "schedule":
        out: list[tuple[str, str, float]] = []
        for j, seg in enumerate(spec.segments):
            here = f"{where}.segments[{j}]"
            out.extend(_service_fields(seg, here))
            if seg.until is not None:
                out.append((f"{here}.until", "until", float(seg.until)))
        return out
    if spec.kind == "exponential":
        return [(f"{where}.rate", "rate", float(spec.rate))]
    if spec.kind == "trace":
        return [(f"{where}.durations (shortest)", "time", float(min(spec.durations))),
                (f"{where}.durations (longest)", "time", float(max(spec.durations)))]  # fmt: skip
    if spec.mean is None:  # a user kind without a mean: nothing to rescale
        return []
    return [(f"{where}.mean", "time", float(spec.mean))]


def _in_range(kind: str, value: float, unit: float) -> bool:
    """Whether a rate or time of a spec is still valid once expressed in ``unit`` s."""
    from raysync.config import SERVICE_TIME_RANGE

    low, high = SERVICE_TIME_RANGE
    with np.errstate(over="ignore", under="ignore"):
        scaled = float(np.float64(value) * unit if kind == "rate" else np.float64(value) / unit)
    if kind == "until":
        return sys.float_info.min <= scaled < math.inf
    return low <= scaled <= high


def _largest_exponent(config: SystemConfig) -> int:
    """The largest ``e`` keeping the fastest service rates and times valid in ``2**e`` s.

    Each spec is validated again in the unit (:data:`~raysync.config.SERVICE_TIME_RANGE`);
    only the largest rate and the shortest duration can leave the range as ``e`` grows.
    """
    from raysync.config import SERVICE_TIME_RANGE

    low, high = SERVICE_TIME_RANGE
    seen: set[int] = set()
    fastest_rate, shortest = 0.0, math.inf
    for c in config.clients:
        if id(c.service_time) in seen:
            continue
        seen.add(id(c.service_time))
        for _, kind, value in _service_fields(c.service_time, ""):
            if kind == "rate":
                fastest_rate = max(fastest_rate, value)
            elif kind == "time":
                shortest = min(shortest, value)
    bounds = []
    if fastest_rate > 0:
        bounds.append(("rate", fastest_rate, math.log2(high) - math.log2(fastest_rate)))
    if shortest < math.inf:
        bounds.append(("time", shortest, math.log2(shortest) - math.log2(low)))
    exponent = 2**20
    for kind, value, log in bounds:
        # log2 can round either way at the boundary: settle it on the exact test
        # past +-1000 the bound cannot bind (the unit's exponent stays within (64, 1000))
        e = math.floor(min(max(log, -1000.0), 1000.0)) + 1
        while not _in_range(kind, value, math.ldexp(1.0, e)):
            e -= 1
        exponent = min(exponent, e)
    return exponent


def _as_written(where: str, spec: Any) -> str:
    """The field that sets a spec's mean time, as the user wrote it."""
    if spec.kind == "schedule":
        return _as_written(f"{where}.segments[0]", spec.segments[0])
    if spec.kind == "exponential":
        return f"{where}.rate = {spec.rate:g}"
    if spec.kind == "trace":
        return f"{where}.durations (mean {spec.mean_duration:g} s)"
    return f"{where}.mean = {spec.mean_duration:g} s"


def _slowest_station(config: SystemConfig) -> str:
    """The spec with the longest mean time (the one that sets the clock), as written."""
    specs = [(f"clients[{i}].service_time", c.service_time) for i, c in enumerate(config.clients)]
    specs += _delay_specs(config)
    where, spec = max(specs, key=lambda item: item[1].mean_duration)
    return _as_written(where, spec)


def _client_failure(exc: Exception, client: int, task_id: int) -> Exception:
    """A client task's error as one line naming the client and task (as the runtime does)."""
    from raysync.exceptions import RaySyncError, RuntimeFailure

    if isinstance(exc, RaySyncError):
        return type(exc)(f"client {client} failed on task {task_id}: {exc}")
    return RuntimeFailure(
        f"client {client} raised {type(exc).__name__} on task {task_id}: {exc}. Fix the "
        "client's data or model configuration"
    )


def eval_failure(exc: Exception, version: int) -> Exception:
    """An evaluation error as one line naming the model version (simulator and runtime)."""
    from raysync.exceptions import RaySyncError, RuntimeFailure

    if isinstance(exc, RaySyncError):
        return type(exc)(f"evaluating the model after update {version} failed: {exc}")
    return RuntimeFailure(
        f"evaluating the model after update {version} raised {type(exc).__name__}: {exc}. "
        "Fix the model, loss or metric"
    )


def in_time_unit(config: SystemConfig, unit: float) -> SystemConfig:
    """``config`` with every duration (service times, budget, eval period) in ``unit`` s."""
    if unit == 1.0:
        return config
    import dataclasses

    def scaled(spec: Any) -> Any:
        if spec.kind == "schedule":
            return dataclasses.replace(
                spec,
                segments=tuple(
                    dataclasses.replace(
                        scaled(seg), until=None if seg.until is None else seg.until / unit
                    )
                    for seg in spec.segments
                ),
            )
        if spec.kind == "exponential":
            return dataclasses.replace(spec, rate=spec.rate * unit)
        if spec.kind == "trace":
            return dataclasses.replace(spec, durations=tuple(d / unit for d in spec.durations))
        return dataclasses.replace(spec, mean=spec.mean / unit)

    for i, c in enumerate(config.clients):
        for field, kind, value in _service_fields(c.service_time, f"clients[{i}].service_time"):
            if not _in_range(kind, value, unit):
                given = f"{field} = {value:g}" + ("" if kind == "rate" else " s")
                raise ConfigError(
                    f"{given} and {_slowest_station(config)} are too far apart for the "
                    f"simulator's clock: it counts in one unit ({unit:.3g} s, set by the "
                    "slowest mean time) in which every service rate and duration must stay "
                    "within [1e-300, 1e300], so mean times may span a factor of at most "
                    "about 1.8e319"
                )
    run = config.run
    return config.replace(
        clients=tuple(
            dataclasses.replace(c, service_time=scaled(c.service_time)) for c in config.clients
        ),
        run=dataclasses.replace(
            run,
            time_budget=None if run.time_budget is None else run.time_budget / unit,
            eval_every_seconds=(
                None if run.eval_every_seconds is None else run.eval_every_seconds / unit
            ),
        ),
    )


def throughput_bounds(config: SystemConfig) -> tuple[float, float]:
    """Lower and upper bounds on the update throughput, in completions per time unit.

    Balanced job bounds of the closed network (Zahorjan et al., 1982) with demands
    ``rho_i = p_i E[S_i]``: ``C / (sum rho + (C - 1) max rho) <= Lambda <= min(C / sum
    rho, 1 / max rho)``; they hold for any service distribution with these means only
    approximately, which is all a size guard needs. Return to sender: ``sum mu`` exactly.
    """
    means = _mean_durations(config)
    p = config.routing_probabilities
    if p is None:
        total = float((1.0 / means).sum())
        return total, total
    rho = np.asarray(p, dtype=np.float64) * means
    c = config.concurrency
    total, top = float(rho.sum()), float(rho.max())
    return c / (total + (c - 1) * top), min(c / total, 1.0 / top)


def _check_run_length(inner: SystemConfig, buffer: int, unit: float) -> None:
    """Refuse a run whose length or throughput is beyond what can be simulated."""
    lower, upper = throughput_bounds(inner)
    if not math.isfinite(lower / unit):
        raise ConfigError(
            f"the fleet's update throughput (at least {lower:.3g} per {unit:.3g} s) is "
            f"beyond the float range (1.8e308 per second): service rates must be lower "
            f"(express them in a larger time unit)"
        )
    run = inner.run
    by_updates = math.inf if run.num_updates is None else run.num_updates * buffer
    if run.time_budget is None:
        with np.errstate(over="ignore"):
            shortest = by_updates / upper * unit  # seconds, at the highest throughput
        if not math.isfinite(shortest):
            raise ConfigError(
                f"run.num_updates = {run.num_updates:,} takes at least "
                f"{by_updates / upper:.3g} x {unit:.3g} s of virtual time at the fleet's "
                f"highest possible throughput, beyond the float range (1.8e308 s); set "
                f"fewer updates or faster service rates"
            )
    with np.errstate(over="ignore"):
        by_budget = math.inf if run.time_budget is None else run.time_budget * lower
    least = min(by_updates, by_budget)
    if least > MAX_SIMULATED_COMPLETIONS:
        # Name the limit that actually binds; with no num_updates it is always the budget
        # (even when ``time_budget * lower`` overflowed to inf).
        what = (
            f"run.num_updates = {run.num_updates:,} (x B = {buffer})"
            if run.num_updates is not None and by_updates <= by_budget
            else f"run.time_budget = {(run.time_budget or 0.0) * unit:.6g} s at the fleet's lowest "
            f"possible throughput ({lower / unit:.3g} completions/s)"
        )
        needs = f"at least {least:.3g}" if math.isfinite(least) else "beyond 1.8e308"
        raise ConfigError(
            f"{what} needs {needs} task completions, more than the "
            f"simulator's limit of {MAX_SIMULATED_COMPLETIONS:.0e}; set a smaller "
            f"run.num_updates or run.time_budget"
        )


def check_evaluations(config: SystemConfig, buffer: int, unit: float = 1.0) -> None:
    """Refuse an ``eval_every_seconds`` that asks for more than :data:`MAX_EVALUATIONS`.

    The run lasts at most ``run.time_budget``, or ``run.num_updates`` completions at the
    fleet's lowest possible throughput (:func:`throughput_bounds`).

    Args:
        config: The config, its times in ``unit`` seconds.
        buffer: Completions per model version (FedBuff's ``B``; 1 otherwise).
        unit: Seconds per time unit of ``config``.

    Raises:
        ConfigError: Too many evaluations; the message names the field and the count.
    """
    run = config.run
    if run.eval_every_seconds is None:
        return
    length = math.inf if run.time_budget is None else run.time_budget
    if run.num_updates is not None:
        with np.errstate(over="ignore", divide="ignore"):
            length = min(length, run.num_updates * buffer / throughput_bounds(config)[0])
    with np.errstate(over="ignore"):
        count = length / run.eval_every_seconds
    if count > MAX_EVALUATIONS:
        raise ConfigError(
            f"run.eval_every_seconds = {run.eval_every_seconds * unit:.6g} s asks for up to "
            f"{count:.3g} evaluations in a run of up to {length * unit:.6g} s, more than the "
            f"limit of {MAX_EVALUATIONS:.0e}; raise run.eval_every_seconds"
        )


def _sampling_warnings(
    config: SystemConfig, completed: np.ndarray, service_times: Sequence[Any]
) -> tuple[str, ...]:
    """Warnings for clients whose mean service time the run cannot have sampled.

    The sample mean of ``N`` draws has a relative standard error ``cv / sqrt(N)``; with
    ``cv^2 > N`` it exceeds 1, and for heavy-tailed (log-normal) service the typical
    sample mean is then far below the true mean, so measured throughputs and delays say
    nothing about the steady state.
    """
    out = []
    heavy = []
    for i, st in enumerate(service_times):
        # cv from the law itself, never variance / mean**2 (a tiny mean squares to 0)
        cv = float(st.cv)
        cv2 = cv * cv
        if cv2 > max(1.0, float(completed[i])):
            heavy.append((i, math.sqrt(cv2), int(completed[i])))
    if heavy:
        i, cv, done = heavy[0]
        more = f" (and {len(heavy) - 1} more clients)" if len(heavy) > 1 else ""
        out.append(
            f"service times too variable for this run length: client {i} has cv = {cv:.3g} "
            f"but completed only {done:,} tasks{more} (the rule: cv^2 <= completions, "
            f"else the sample mean's relative error exceeds 1); the throughput and delays "
            f"are not steady-state estimates; run at least {math.ceil(cv * cv):.3g} updates "
            f"per client"
        )
    del config
    return tuple(out)


def _memory_limit() -> int:
    """Half of this machine's physical memory in bytes (8 GiB when it cannot be read)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) // 2
    except (AttributeError, OSError, ValueError):
        return 8 * 2**30


#: Bytes of the simulator's state per task in flight, an upper bound of what tracemalloc
#: measured (2026-12-05, tests/simulation_tests/test_task_memory.py): about 125 with training
#: (each task's queue entry and the model version it holds a reference to), about 16
#: queue-only (a slot in the queue arrays), about 320 with link delays or a server station
#: (each task an event with its own record, training or not).
SIMULATOR_TASK_BYTES = {"train": 160, "queue_only": 32, "network": 400}


def check_task_memory(concurrency: int, bytes_per_task: int, where: str) -> None:
    """Refuse a concurrency whose tasks' bookkeeping alone would not fit in memory.

    Every one of the ``C`` tasks in flight is a record (the simulator's queue entry, the
    runtime's task object) from the start of the run, so memory grows linearly in ``C``
    whatever the run's length: ``C = 10**9`` would need hundreds of GiB and end in the
    operating system's out-of-memory killer, not in an error.

    Args:
        concurrency: ``C``, tasks in flight.
        bytes_per_task: The holder's bytes per task (:data:`SIMULATOR_TASK_BYTES`, the
            runtime's ``RUNTIME_TASK_BYTES``).
        where: Names the holder in the message (``"the simulator"``, ...).

    Raises:
        ConfigError: ``concurrency * bytes_per_task`` exceeds half this machine's memory.
    """
    need = concurrency * bytes_per_task
    limit = _memory_limit()
    if need > limit:
        raise ConfigError(
            f"concurrency = {concurrency:,} keeps {concurrency:,} tasks of about "
            f"{bytes_per_task} bytes each in {where} ({need / 2**30:.3g} GiB), more than the "
            f"{limit / 2**30:.3g} GiB allowed (half this machine's memory); lower the "
            "concurrency"
        )


def check_version_memory(
    config: SystemConfig,
    num_params: int,
    max_updates: float | None = None,
    where: str = "the simulator",
) -> None:
    """Refuse a training run whose tasks would keep more model versions than fit in memory.

    Every task in flight holds the model version it carries until it completes, so up to
    ``min(C, num_updates) + 1`` versions are alive at once, each a float32 copy of
    ``num_params`` parameters: in the simulator, and in the Ray runtime's server actor.

    Args:
        config: The system (its ``concurrency``).
        num_params: The model's parameter count.
        max_updates: The run's update count; ``None`` takes ``config.run.num_updates``
            (no limit for a time budget).
        where: Names the holder in the message.

    Raises:
        ConfigError: The versions need more than half this machine's memory.
    """
    if max_updates is None:
        updates = config.run.num_updates
        max_updates = math.inf if updates is None else updates
    size = int(num_params) * 4
    alive = min(config.concurrency, max_updates) + 1
    need = alive * size
    limit = _memory_limit()
    if need > limit:
        raise ConfigError(
            f"concurrency = {config.concurrency:,} keeps up to {int(alive):,} model versions "
            f"of {size:,} bytes alive in {where} ({need / 2**30:.3g} GiB), more than "
            f"the {limit / 2**30:.3g} GiB allowed (half this machine's memory); lower the "
            f"concurrency or use a smaller model"
        )


def _to_seconds(stats: dict[str, Any], unit: float) -> dict[str, Any]:
    """Convert the statistics of a run simulated in ``unit`` s back to seconds."""
    out = dict(stats)
    with np.errstate(over="ignore"):
        out["throughput"] = stats["throughput"] / unit
        out["throughput_ci"] = tuple(v / unit for v in stats["throughput_ci"])
        out["client_throughput"] = stats["client_throughput"] / unit
    if not math.isfinite(out["throughput"]) and math.isfinite(stats["throughput"]):
        raise ConfigError(
            f"the measured update throughput {stats['throughput']:.6g} per {unit:.3g} s is "
            f"beyond the float range per second: service rates must be lower"
        )
    return out


def _buffer_size(strategy: BaseStrategy | None) -> int:
    """Completions per model version of a strategy (FedBuff's ``B``; 1 otherwise)."""
    size = getattr(strategy, "buffer_size", 1)
    if isinstance(size, int | np.integer) and not isinstance(size, bool) and size >= 1:
        return int(size)
    return 1


def _timed_route(
    step: Callable[[int, float], int], heap: list[tuple[float, int, int]]
) -> Callable[[int], int]:
    """``route(i)`` for a run with :class:`FleetDynamics`, at no cost to the other runs.

    The loops call ``route`` for a completion before they touch the heap, so ``heap[0]`` is
    then that completion's event and ``heap[0][0]`` its time.
    """

    def route(i: int) -> int:
        return step(i, heap[0][0])

    return route


def _dynamics(
    inner: SystemConfig,
    router: BaseRouter,
    service_times: list[Any],
    streams: list[Iterator[float]],
    gens: RunGenerators,
    strategy: BaseStrategy | None,
    sinks: Sequence[MetricsSink],
    unit: float,
    *,
    network: bool,
) -> FleetDynamics | None:
    """The feedback/non-stationarity hooks of a run, or None when it needs none."""
    from raysync.simulation._dynamics import FleetDynamics

    if not FleetDynamics.needed(inner, router):
        return None
    if network:
        raise ConfigError(
            "adaptive routing, schedule service times and join/leave times are not "
            "supported together with network delays or a server station yet"
        )
    return FleetDynamics(
        config=inner, router=router, service_times=service_times, streams=streams,
        service_rngs=gens.service, strategy=strategy, sinks=sinks, time_unit=unit,
    )  # fmt: skip


def queue_only_snapshots(
    config: SystemConfig, *, block_size: int = DEFAULT_BLOCK
) -> tuple[list[tuple[Any, ...]], tuple[Any, ...]]:
    """The raw statistics snapshots of a queue-only simulation (for paired comparisons).

    :func:`simulate` returns only the summary; comparing another backend batch by batch
    with the very same sample path (the Ray runtime draws from the same streams) needs the
    cumulative snapshots themselves. The grid is the one :func:`simulate` and the runtime
    use (:func:`~raysync.simulation.statistics.snapshot_interval`), so two runs of the
    same length are cut into the same batches.

    Args:
        config: The system; ``run.num_updates`` and ``run.time_budget`` stop it.
        block_size: Service times drawn per call of ``BaseServiceTime.sample``.

    Returns:
        ``(rows, final_row)`` in the layout of :mod:`raysync.simulation.statistics`;
        ``rows`` ends with ``final_row`` when the end lies on the grid.
    """
    _check_inputs(config, 0.1, 30, 0.99, block_size)
    from raysync.routing import make_router
    from raysync.simulation.service_times import make_service_time

    n = config.num_clients
    gens = run_generators(config.seed, n)
    router = make_router(config.routing)
    router.bind(n, gens.router)
    streams = [
        service_stream(make_service_time(c.service_time), rng, block_size)
        for c, rng in zip(config.clients, gens.service, strict=True)
    ]
    max_updates = config.run.num_updates
    budget = config.run.time_budget
    capacity = snapshot_capacity(n)
    snapshots = Snapshots(snapshot_interval(max_updates, capacity), capacity)
    from raysync.queueing.predict import buffer_size

    final, _, _ = _run_queue_only(
        config=config,
        router=router,
        streams=streams,
        snapshots=snapshots,
        max_updates=max_updates if max_updates is not None else math.inf,
        budget=budget if budget is not None else math.inf,
        progress=None,
        buffer_size=buffer_size(config),
    )
    return snapshots.rows, final


def _initial_heap(
    queues: list[deque[Any]], nexts: list[Callable[[], float]], busy: list[float]
) -> tuple[list[tuple[float, int, int]], int]:
    heap: list[tuple[float, int, int]] = []
    seq = 0
    for i, q in enumerate(queues):
        if q:
            s = nexts[i]()
            busy[i] += s
            heap.append((s, seq, i))
            seq += 1
    heapq.heapify(heap)
    return heap, seq


def _run_queue_only(
    *,
    config: SystemConfig,
    router: BaseRouter,
    streams: list[Iterator[float]],
    snapshots: Snapshots,
    max_updates: float,
    budget: float,
    progress: ProgressCallback | None,
    buffer_size: int = 1,
    dynamics: FleetDynamics | None = None,
) -> tuple[tuple[Any, ...], _Curve, dict[str, Any]]:
    """The fast loop: versions only, running sums, no per-event allocation but the heap tuple.

    A queue holds, per task, the completion count at its dispatch ``m``. With a buffer of
    ``B`` completions per model version (FedBuff), the version after ``c`` completions is
    ``c // B``, so a task carries version ``m // B`` and is consumed at version
    ``c // B``: both delays follow from ``m`` without a second record.
    """
    n = config.num_clients
    big = buffer_size
    queues: list[deque[int]] = [deque() for _ in range(n)]
    arr = [0.0] * n
    timed = None if dynamics is None else dynamics.step
    starts = router if dynamics is None else dynamics
    for j in starts.initial_clients(config.concurrency):
        queues[j].append(0)  # every initial task is dispatched at completion 0, t = 0
    initial_left = config.concurrency
    transient_end = -1
    nexts = [s.__next__ for s in streams] if dynamics is None else dynamics.nexts
    cnt = [0] * n
    sd = [0] * n  # delays in completions
    sd2 = [0] * n
    sv = [0] * n  # delays in model versions (only kept apart when B > 1)
    sv2 = [0] * n
    dep = [0.0] * n
    busy = [0.0] * n
    heap, seq = _initial_heap(queues, nexts, busy)
    route = router.route if timed is None else _timed_route(timed, heap)
    heappop = heapq.heappop
    heapreplace = heapq.heapreplace
    heappush = heapq.heappush
    c = 0
    dmax = 0
    vmax = 0
    t = 0.0
    curve = _Curve([], [], [], [], [], [])
    buffered = big > 1

    def row(done: int, now: float) -> tuple[Any, ...]:
        vs, vs2 = (sv, sv2) if buffered else (sd, sd2)
        return (
            done, now, done // big, cnt[:], vs[:], vs2[:], dep[:], arr[:],
            [len(q) for q in queues], busy[:], heap[:], sd[:], sd2[:],
        )  # fmt: skip

    next_snap = snapshots.take(row(0, 0.0))
    stop_at = max_updates * big
    check = min(next_snap, stop_at)
    end_time = 0.0
    while True:
        t, _, i = heap[0]
        if t > budget:
            end_time = budget
            break
        q = queues[i]
        m = q.popleft()
        d = c - m
        if buffered:
            dv = c // big - m // big
            sv[i] += dv
            sv2[i] += dv * dv
            if dv > vmax:
                vmax = dv
        if not m:
            initial_left -= 1
            if not initial_left:
                transient_end = c + 1
        c += 1
        cnt[i] += 1
        sd[i] += d
        sd2[i] += d * d
        dep[i] += t
        if d > dmax:
            dmax = d
        j = route(i)
        qj = queues[j]
        qj.append(c)
        arr[j] += t
        if q:
            s = nexts[i]()
            busy[i] += s
            heapreplace(heap, (t + s, seq, i))
            seq += 1
            if j != i and len(qj) == 1:
                s = nexts[j]()
                busy[j] += s
                heappush(heap, (t + s, seq, j))
                seq += 1
        elif len(qj) == 1:
            s = nexts[j]()
            busy[j] += s
            heapreplace(heap, (t + s, seq, j))
            seq += 1
        else:
            heappop(heap)
        if c >= check:
            end_time = t
            if c >= stop_at:
                break
            next_snap = snapshots.take(row(c, t))
            check = min(next_snap, stop_at)
            curve.times.append(t)
            curve.updates.append(c // big)
            if progress is not None:
                progress(c // big, t)
    final = row(c, end_time)
    if c > snapshots.rows[-1][0] and c % snapshots.interval == 0:
        snapshots.take(final)  # the end lies on the grid: it closes the last batch
    curve.times.append(end_time)
    curve.updates.append(c // big)
    nan = [math.nan] * len(curve.times)
    curve.test_loss, curve.test_accuracy = nan, nan[:]
    curve.val_loss, curve.val_accuracy = nan[:], nan[:]
    if progress is not None:
        progress(c // big, end_time)
    return (
        final,
        curve,
        {
            "max_delay": vmax if buffered else dmax,
            "max_completion_delay": dmax,
            "transient_end": transient_end,
        },
    )


class _TrainingLoop:
    """The training loop: same events and statistics as the fast loop, plus the model."""

    def __init__(
        self,
        *,
        config: SystemConfig,
        router: BaseRouter,
        streams: list[Iterator[float]],
        snapshots: Snapshots,
        max_updates: float,
        budget: float,
        progress: ProgressCallback | None,
        workload: Workload | None,
        strategy: BaseStrategy | None,
        minibatch_rngs: MinibatchStreams,
        sinks: Sequence[MetricsSink],
        time_unit: float = 1.0,
        dynamics: FleetDynamics | None = None,
    ) -> None:
        from raysync.strategies import make_strategy
        from raysync.workload import build_workload

        self.config = config
        self.router = router
        self.dynamics = dynamics
        self.streams = streams
        self.snapshots = snapshots
        self.max_updates = max_updates
        self.budget = budget
        self.progress = progress
        self.sinks = sinks
        self.time_unit = time_unit
        self.minibatch_rngs = minibatch_rngs
        if workload is None:
            workload = build_workload(config)
        if workload.num_clients != config.num_clients:
            raise ConfigError(
                f"workload has {workload.num_clients} client partitions but the config has "
                f"{config.num_clients} clients"
            )
        self.workload = workload
        check_version_memory(config, int(np.asarray(workload.initial_params).size), max_updates)
        if strategy is None:
            strategy = make_strategy(config.algorithm)
        p = router.routing_probabilities()
        if p is not None and dynamics is not None:
            p = np.where(p > 0, p, 1.0 / p.size)  # absent clients: see FleetDynamics
        strategy.bind(config.num_clients, p)
        self.strategy = strategy
        self.curve = _Curve([], [], [], [], [], [])
        self.eval_seconds = 0.0

    def _evaluate(self, computer: Any, params: np.ndarray, now: float, version: int) -> None:
        start = _time.perf_counter()
        try:
            test_loss, test_acc = self.workload.evaluate(params, split="test", computer=computer)
            if self.workload.has_validation:
                val_loss, val_acc = self.workload.evaluate(params, split="val", computer=computer)
            else:
                val_loss, val_acc = math.nan, math.nan
        except Exception as exc:  # user model / loss / metric code
            raise eval_failure(exc, version) from exc
        self.eval_seconds += _time.perf_counter() - start
        curve = self.curve
        curve.times.append(now)
        curve.updates.append(version)
        curve.test_loss.append(float(test_loss))
        curve.test_accuracy.append(float(test_acc))
        curve.val_loss.append(float(val_loss))
        curve.val_accuracy.append(float(val_acc))
        scalars = {
            "test/loss": float(test_loss),
            "test/accuracy": float(test_acc),
            "val/loss": float(val_loss),
            "val/accuracy": float(val_acc),
        }
        for sink in self.sinks:
            sink.log_scalars(version, scalars, time=now * self.time_unit)

    def run(self) -> tuple[tuple[Any, ...], _Curve, dict[str, Any]]:
        """Run to the stop condition; return the final snapshot row, curve and extras."""
        from raysync.client import run_client_work
        from raysync.strategies._base import ClientResult

        config = self.config
        n = config.num_clients
        run_cfg = config.run
        workload = self.workload
        strategy = self.strategy
        router = self.router
        computer = workload.make_computer()
        work = strategy.client_work()
        data = [workload.client_data(i) for i in range(n)]
        stream = self.minibatch_rngs.task
        served = [0] * n  # tasks each client has started: the next one's stream
        params = np.array(workload.initial_params, dtype=np.float32)
        params.setflags(write=False)

        # Queues hold (task_id, base_version, completions at dispatch, params of that
        # version): the delay in versions is what the strategy sees, the delay in
        # completions is the unit of the queueing theory (they differ under FedBuff).
        queues: list[deque[tuple[int, int, int, np.ndarray]]] = [deque() for _ in range(n)]
        arr = [0.0] * n
        task_id = 0
        dynamics = self.dynamics
        timed = None if dynamics is None else dynamics.step
        starts = router if dynamics is None else dynamics
        for j in starts.initial_clients(config.concurrency):
            queues[j].append((task_id, 0, 0, params))
            task_id += 1
        initial_left = config.concurrency
        transient_end = -1
        nexts = [s.__next__ for s in self.streams] if dynamics is None else dynamics.nexts
        cnt = [0] * n
        sd = [0] * n
        sd2 = [0] * n
        scd = [0] * n
        scd2 = [0] * n
        dep = [0.0] * n
        busy = [0.0] * n
        heap, seq = _initial_heap(queues, nexts, busy)
        every_updates = run_cfg.eval_every_updates
        every_seconds = run_cfg.eval_every_seconds
        next_eval_time = every_seconds if every_seconds is not None else math.inf
        k = 0  # model version
        c = 0  # completions
        dmax = 0
        cmax = 0
        last_eval: tuple[float, int] | None = None

        def row(now: float) -> tuple[Any, ...]:
            return (
                c, now, k, cnt[:], sd[:], sd2[:], dep[:], arr[:],
                [len(q) for q in queues], busy[:], heap[:], scd[:], scd2[:],
            )  # fmt: skip

        budget = self.budget
        max_updates = self.max_updates
        take = self.snapshots.take
        progress = self.progress
        route = router.route if timed is None else _timed_route(timed, heap)
        apply = strategy.apply
        heappop = heapq.heappop
        heapreplace = heapq.heapreplace
        heappush = heapq.heappush
        float32 = np.float32
        ndarray = np.ndarray
        self._evaluate(computer, params, 0.0, 0)
        last_eval = (0.0, 0)
        next_snap = take(row(0.0))
        end_time = 0.0
        while True:
            t, _, i = heap[0]
            while next_eval_time <= t and next_eval_time <= budget:
                self._evaluate(computer, params, next_eval_time, k)
                last_eval = (next_eval_time, k)
                next_eval_time += every_seconds  # type: ignore[operator]
            if t > budget:
                end_time = budget
                break
            q = queues[i]
            tid, version, dispatched, task_params = q.popleft()
            x, y = data[i]
            try:
                output = run_client_work(
                    computer, work, task_params, x, y, stream(i, served[i])
                )
            except Exception as exc:  # user code: one line like the runtime's translate()
                raise _client_failure(exc, i, tid) from exc
            del task_params
            served[i] += 1
            d = k - version
            result = ClientResult(
                task_id=tid,
                client_id=i,
                base_version=version,
                current_version=k,
                payload=output.payload,
                loss=float(output.loss),
                num_samples=int(output.num_samples),
            )
            new_params = apply(params, result)
            advanced = new_params is not None
            if new_params is not None:
                if not isinstance(new_params, ndarray) or new_params.dtype != float32:
                    new_params = np.asarray(new_params, dtype=float32)
                new_params.setflags(write=False)
                params = new_params
                k += 1
            dc = c - dispatched
            if not dispatched:
                initial_left -= 1
                if not initial_left:
                    transient_end = c + 1
            c += 1
            cnt[i] += 1
            sd[i] += d
            sd2[i] += d * d
            scd[i] += dc
            scd2[i] += dc * dc
            dep[i] += t
            if d > dmax:
                dmax = d
            if dc > cmax:
                cmax = dc
            j = route(i)
            qj = queues[j]
            qj.append((task_id, k, c, params))
            task_id += 1
            arr[j] += t
            if q:
                s = nexts[i]()
                busy[i] += s
                heapreplace(heap, (t + s, seq, i))
                seq += 1
                if j != i and len(qj) == 1:
                    s = nexts[j]()
                    busy[j] += s
                    heappush(heap, (t + s, seq, j))
                    seq += 1
            elif len(qj) == 1:
                s = nexts[j]()
                busy[j] += s
                heapreplace(heap, (t + s, seq, j))
                seq += 1
            else:
                heappop(heap)
            end_time = t
            if advanced and every_updates is not None and k % every_updates == 0:
                self._evaluate(computer, params, t, k)
                last_eval = (t, k)
            if k >= max_updates:
                break
            if c >= next_snap:
                next_snap = take(row(t))
                if progress is not None:
                    progress(k, t)
        final = row(end_time)
        if c > self.snapshots.rows[-1][0] and c % self.snapshots.interval == 0:
            take(final)  # the end lies on the grid: it closes the last batch
        if last_eval != (end_time, k):
            self._evaluate(computer, params, end_time, k)
        if self.progress is not None:
            self.progress(k, end_time)
        return (
            final,
            self.curve,
            {
                "max_delay": dmax,
                "max_completion_delay": cmax,
                "transient_end": transient_end,
                "eval_seconds": self.eval_seconds,
            },
        )


# --------------------------------------------------------------------------- fleets of 10^6

#: Queue-only runs with at least this many clients take the flat path
#: (:func:`_simulate_flat`): per-client state in flat arrays, statistics kept per tier.
FLAT_MIN_CLIENTS = 10_000

# SeedSequence spawn key of the per-tier service streams of the flat path.
_KEY_TIER_SERVICE = 3


def _client_tiers(
    config: SystemConfig, p: np.ndarray | None
) -> tuple[array[int], list[Any], np.ndarray]:
    """Group the clients into tiers of identical service spec and routing probability.

    Returns:
        ``(tier_of, specs, counts)``: the tier of each client (a flat ``array('i')`` of
        length ``n``), each tier's service spec and its number of clients, shape ``(T,)``.
    """
    # Clients from one ``count = k`` table share one spec object: id() first, equality after.
    spec_ids: dict[int, int] = {}
    specs: list[Any] = []
    by_value: dict[Any, int] = {}
    for client in config.clients:
        spec = client.service_time
        if id(spec) not in spec_ids:
            k = spec_ids[id(spec)] = by_value.setdefault(spec, len(by_value))
            if k == len(specs):
                specs.append(spec)
    spec_index = np.array([spec_ids[id(c.service_time)] for c in config.clients], dtype=np.int64)
    if p is None:
        keys = spec_index
    else:
        _, p_index = np.unique(np.asarray(p, dtype=np.float64), return_inverse=True)
        keys = spec_index * (int(p_index.max()) + 1) + p_index.reshape(-1)
    uniq, first, inverse, counts = np.unique(
        keys, return_index=True, return_inverse=True, return_counts=True
    )
    del uniq
    tier_specs = [specs[int(spec_index[f])] for f in first]
    tier_of = array("i", inverse.reshape(-1).astype(np.int32).tobytes())
    return tier_of, tier_specs, counts.astype(np.int64)


def _run_queue_only_flat(
    *,
    config: SystemConfig,
    router: BaseRouter,
    tier_of: array[int],
    streams: list[Iterator[float]],
    snapshots: Snapshots,
    max_updates: float,
    budget: float,
    progress: ProgressCallback | None,
    buffer_size: int = 1,
) -> tuple[tuple[Any, ...], _Curve, dict[str, Any], array[int]]:
    """:func:`_run_queue_only` for fleets of 10^5-10^6 clients: O(log C) per event, flat memory.

    Same events, same law: every client is a FIFO queue served one task at a time, ``C``
    tasks in flight, the router names the next client. What changes is the bookkeeping:

    * the queues are linked lists threaded through ``C`` task slots (a completed task's
      slot carries its replacement, so there is no allocation), with per-client ``head``
      and ``tail`` slot indices in flat ``array('q')`` buffers (8 bytes each per client);
    * the statistics are running sums per *tier* (clients of identical service spec and
      routing probability, exchangeable in the model), so a snapshot costs O(T + C), not
      O(n); only the completion count is kept per client;
    * service times come from one stream per tier: a client's durations are still i.i.d.
      from its distribution and independent of the past (which client takes the next draw
      of the tier's stream depends only on the past), so the sample path has the same
      law as with one stream per client, though not the same values.

    Returns:
        ``(final_row, curve, extras, count)``: rows in the layout of
        :mod:`raysync.simulation.statistics` with the tiers as "clients" (see
        :func:`_tier_row`) and the per-client completion counts.
    """
    n = config.num_clients
    big = buffer_size
    tiers = len(streams)
    head = array("q", bytes(8 * n))  # slot of the first queued task + 1 (0: empty queue)
    tail = array("q", bytes(8 * n))
    cnt = array("q", bytes(8 * n))
    concurrency = config.concurrency
    slot_m = [0] * concurrency  # completions at the dispatch of the slot's task
    slot_next = [0] * concurrency  # next slot in the same queue + 1 (0: none)
    lens = [0] * tiers
    arr = [0.0] * tiers
    tcnt = [0] * tiers
    sd = [0] * tiers
    sd2 = [0] * tiers
    sv = [0] * tiers
    sv2 = [0] * tiers
    dep = [0.0] * tiers
    busy = [0.0] * tiers
    nexts = [s.__next__ for s in streams]
    heap: list[tuple[float, int, int]] = []
    seq = 0
    for slot, j in enumerate(router.initial_clients(concurrency)):
        lens[tier_of[j]] += 1
        if head[j]:
            slot_next[tail[j] - 1] = slot + 1
        else:
            head[j] = slot + 1
            k = tier_of[j]
            s = nexts[k]()
            busy[k] += s
            heap.append((s, seq, j))
            seq += 1
        tail[j] = slot + 1
    heapq.heapify(heap)
    initial_left = concurrency
    transient_end = -1
    route = router.route
    heappop = heapq.heappop
    heapreplace = heapq.heapreplace
    heappush = heapq.heappush
    c = 0
    dmax = 0
    vmax = 0
    t = 0.0
    curve = _Curve([], [], [], [], [], [])
    buffered = big > 1

    def row(done: int, now: float) -> tuple[Any, ...]:
        vs, vs2 = (sv, sv2) if buffered else (sd, sd2)
        # The heap is reduced to per-tier residuals now: a kept copy would hold C tuples.
        return _tier_row(
            (done, now, done // big, tcnt[:], vs[:], vs2[:], dep[:], arr[:], lens[:],
             busy, heap, sd[:], sd2[:]),
            tier_of, tiers,
        )  # fmt: skip

    next_snap = snapshots.take(row(0, 0.0))
    stop_at = max_updates * big
    check = min(next_snap, stop_at)
    end_time = 0.0
    while True:
        t, _, i = heap[0]
        if t > budget:
            end_time = budget
            break
        slot1 = head[i]
        slot = slot1 - 1
        m = slot_m[slot]
        rest = slot_next[slot]
        head[i] = rest
        d = c - m
        k = tier_of[i]
        if buffered:
            dv = c // big - m // big
            sv[k] += dv
            sv2[k] += dv * dv
            if dv > vmax:
                vmax = dv
        if not m:
            initial_left -= 1
            if not initial_left:
                transient_end = c + 1
        c += 1
        cnt[i] += 1
        tcnt[k] += 1
        sd[k] += d
        sd2[k] += d * d
        dep[k] += t
        lens[k] -= 1
        if d > dmax:
            dmax = d
        j = route(i)
        kj = tier_of[j]
        slot_m[slot] = c  # the completed task's slot carries its replacement
        slot_next[slot] = 0
        arr[kj] += t
        lens[kj] += 1
        if head[j]:
            slot_next[tail[j] - 1] = slot1
            tail[j] = slot1
            started = False
        else:
            head[j] = slot1
            tail[j] = slot1
            started = True
        if rest:
            s = nexts[k]()
            busy[k] += s
            heapreplace(heap, (t + s, seq, i))
            seq += 1
            if started:
                s = nexts[kj]()
                busy[kj] += s
                heappush(heap, (t + s, seq, j))
                seq += 1
        elif started:
            s = nexts[kj]()
            busy[kj] += s
            heapreplace(heap, (t + s, seq, j))
            seq += 1
        else:
            heappop(heap)
        if c >= check:
            end_time = t
            if c >= stop_at:
                break
            next_snap = snapshots.take(row(c, t))
            check = min(next_snap, stop_at)
            curve.times.append(t)
            curve.updates.append(c // big)
            if progress is not None:
                progress(c // big, t)
    final = row(c, end_time)
    if c > snapshots.rows[-1][0] and c % snapshots.interval == 0:
        snapshots.take(final)  # the end lies on the grid: it closes the last batch
    curve.times.append(end_time)
    curve.updates.append(c // big)
    nan = [math.nan] * len(curve.times)
    curve.test_loss, curve.test_accuracy = nan, nan[:]
    curve.val_loss, curve.val_accuracy = nan[:], nan[:]
    if progress is not None:
        progress(c // big, end_time)
    extras = {
        "max_delay": vmax if buffered else dmax,
        "max_completion_delay": dmax,
        "transient_end": transient_end,
    }
    return final, curve, extras, cnt


def _tier_row(row: tuple[Any, ...], tier_of: array[int], tiers: int) -> tuple[Any, ...]:
    """A flat-path row with the in-service residuals summed per tier into ``busy``.

    :func:`~raysync.simulation.statistics.snapshot_state` assigns one residual per
    "client" of the heap; several clients of a tier are in service at once, so the tier's
    residuals are summed here and the heap left empty.
    """
    busy = np.asarray(row[9], dtype=np.float64).copy()
    if row[10]:
        # (end, seq, client) per task in service; fromiter over the flattened tuples is
        # several times faster than np.array on a list of tuples.
        flat = chain.from_iterable(row[10])
        heap = np.fromiter(flat, dtype=np.float64, count=3 * len(row[10])).reshape(-1, 3)
        who = np.frombuffer(tier_of, dtype=np.int32)[heap[:, -1].astype(np.int64)]
        busy -= np.bincount(who, weights=heap[:, 0] - row[1], minlength=tiers)
    return (*row[:9], busy, [], *row[11:])


#: Per-client statistics that are tier totals in the flat path (divided by the tier size).
_PER_CLIENT_SHARE = (
    "client_throughput",
    "utilization",
    "utilization_ci",
    "mean_queue_length",
    "mean_queue_length_ci",
)
#: Per-client statistics that are per-task means (the tier's pooled value for each client).
_PER_CLIENT_MEAN = (
    "mean_relative_delay",
    "relative_delay_std",
    "relative_delay_ci",
    "mean_completion_delay",
    "completion_delay_std",
    "completion_delay_ci",
)


def _simulate_flat(
    inner: SystemConfig,
    router: BaseRouter,
    *,
    buffer: int,
    max_updates: float,
    budget: float,
    progress: ProgressCallback | None,
    warmup_fraction: float,
    num_batches: int,
    confidence: float,
    block_size: int,
) -> tuple[dict[str, Any], tuple[Any, ...], _Curve, dict[str, Any], list[Any]]:
    """Queue-only run of a large fleet; per-client statistics are tier-pooled estimates.

    Clients of one tier are exchangeable (same service law, same routing probability), so
    their steady-state quantities are equal; each client is given its tier's estimate
    (tier totals divided by the tier's size for rates, utilisations and queue lengths;
    the tier's per-task mean for delays), with the tier's batch-means interval. The
    completion counts are exact per client.

    Returns:
        ``(stats, final_row, curve, extras, tier_specs)``.
    """
    from raysync.simulation.service_times import make_service_time

    p = router.routing_probabilities()
    tier_of, specs, counts = _client_tiers(inner, None if p is None else np.asarray(p))
    tiers = len(specs)
    service_times = [make_service_time(spec) for spec in specs]
    streams = [
        service_stream(
            st,
            np.random.default_rng(
                np.random.SeedSequence(inner.seed, spawn_key=(_KEY_TIER_SERVICE, k))
            ),
            block_size,
        )
        for k, st in enumerate(service_times)
    ]
    # As few snapshots as the per-client path keeps for this n: each copies the heap (C).
    capacity = snapshot_capacity(inner.num_clients)
    snapshots = Snapshots(snapshot_interval(max_updates, capacity), capacity)
    from raysync.simulation import _flat_kernel

    flat_args: dict[str, Any] = {
        "config": inner,
        "router": router,
        "tier_of": tier_of,
        "snapshots": snapshots,
        "max_updates": max_updates,
        "budget": budget,
        "progress": progress,
        "buffer_size": buffer,
    }
    # The compiled event loop when it knows every feature of the run (issue 17); same law.
    why_not = _flat_kernel.unsupported(inner, router, service_times)
    if why_not is None:
        final_row, curve, extra, cnt = _flat_kernel.run_queue_only_flat(
            **flat_args, service_times=service_times
        )
    else:
        logger.debug("flat path in Python: %s", why_not)
        final_row, curve, extra, cnt = _run_queue_only_flat(**flat_args, streams=streams)
    extra["snapshot_interval"] = snapshots.interval
    extra["tiers"] = tiers
    stats = batch_statistics(
        snapshots.rows,
        final_row,
        num_clients=tiers,
        warmup_fraction=warmup_fraction,
        num_batches=num_batches,
        confidence=confidence,
        transient_end=int(extra["transient_end"]),
        servers=counts,
    )
    index = np.frombuffer(tier_of, dtype=np.int32)
    size = counts.astype(np.float64)
    for name in _PER_CLIENT_SHARE:
        value = np.asarray(stats[name], dtype=np.float64)
        share = size if value.ndim == 1 else size[:, None]
        stats[name] = (value / share)[index]
    for name in _PER_CLIENT_MEAN:
        stats[name] = np.asarray(stats[name], dtype=np.float64)[index]
    completed = np.frombuffer(cnt, dtype=np.int64).copy()
    stats["completed"] = completed
    # batch_statistics named idle *tiers*; say it per client, over the whole run.
    warnings = [w for w in stats["warnings"] if "completed no task in the measurement" not in w]
    idle = np.flatnonzero(completed == 0) if int(final_row[0]) > 0 else completed[:0]
    if idle.size:
        named = ", ".join(str(int(i)) for i in idle[:5]) + (", ..." if idle.size > 5 else "")
        warnings.append(
            f"{idle.size} client(s) completed no task in the run (clients {named}): their "
            f"statistics are their tier's pooled estimates, not their own; run longer"
        )
    # cv from each law, never variance / mean**2 (a tiny mean squares to 0)
    cv2 = np.array([float(st.cv) for st in service_times]) ** 2
    heavy = np.flatnonzero(cv2[index] > np.maximum(1.0, completed))
    if heavy.size:
        i = int(heavy[0])
        cv = math.sqrt(float(cv2[index[i]]))
        more = f" (and {heavy.size - 1} more clients)" if heavy.size > 1 else ""
        warnings.append(
            f"service times too variable for this run length: client {i} has cv = {cv:.3g} "
            f"but completed only {int(completed[i]):,} tasks{more} (the rule: cv^2 <= "
            f"completions, else the sample mean's relative error exceeds 1); the throughput "
            f"and delays are not steady-state estimates; run at least "
            f"{math.ceil(cv * cv):.3g} updates per client"
        )
    stats["warnings"] = tuple(warnings)
    return stats, final_row, curve, extra, specs
