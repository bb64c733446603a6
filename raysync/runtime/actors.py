"""The server and executor actors of the Ray runtime (private: the coordinator owns them).

Neither class is decorated: the coordinator wraps them with ``ray.remote`` and sets every
resource explicitly through ``.options(...)`` (``num_cpus`` always, ``num_gpus`` and custom
``resources`` from the tier's :class:`~raysync.config.ClientSpec`).

**Logical clients and executors.** A *logical client* is docs/theory.md's client: a FIFO
single-server queue with its own service-time distribution, data partition and random
streams. Its state lives in the server, never in an actor: the queue of its tasks, the
emulated instant its server is free again (``free_at``), its service-time stream and the
number of tasks it has served (which seeds each task's minibatch stream). An *executor*
(:class:`ExecutorActor`) is a stateless async actor that serves whatever task it is sent.
In ``per_client`` mode each client has its own executor with the client's own resources;
in ``pool`` mode clients with identical resource requests form a tier, and each tier's
clients are multiplexed on ``runtime.executors_per_tier`` executors that each request the
tier's resources (Flower's virtual clients, with per-tier resources).

**Per-client FIFO.** The server sends a logical client's tasks one at a time, in the order
they were created: a task routed to a busy client waits in that client's queue at the
server and is sent when the previous one has returned, even if other executors are free.
So every client is a single server, first in, first out, wherever its tasks run.

**Emulated clock** (``run.time_scale > 0``). A task *arrives* at its client at a
wall-clock stamp (the emulated end of the task whose completion created it); its service
*starts* at ``max(arrival, free_at)`` and *ends* at ``start + max(scaled sample, compute)``;
the executor awaits that instant with ``asyncio.sleep``, which holds no compute slot.
Computation runs in a bounded thread pool (``max(1, int(num_cpus))`` threads; one thread
when the executor serves a single client, with that many torch threads), so an executor
serves many waiting tasks concurrently while never computing on more cores than it
reserved. The sampled service time is drawn by the server from the client's stream, and
Ray's per-call overhead and the round trip between two tasks of a client are absorbed by
the waits instead of stretching the emulated timeline.

**Server actor** (:class:`ServerActor`). An asyncio actor that owns the model, its version,
the router, the strategy, every logical client's state and the statistics, and keeps
exactly ``C`` tasks in existence. Each update costs one remote call
(``executor.submit.remote(task, params)`` returns the result itself). Completed calls are
consumed in completion order: ``strategy.apply`` (which may bump the version), then the
client's next queued task is sent, then ``router.route`` names the client of the one
replacement task, which carries the model current after the update (the call order of
:class:`~raysync.strategies.BaseStrategy` and :class:`~raysync.routing.BaseRouter`,
identical to the simulator). A model version below
:data:`~raysync.runtime._backend.INLINE_PARAMS_BYTES` travels inline in each call; a larger
one is ``ray.put`` once and its reference shared by every task of that version.

**Faults.** Every task has an id and is idempotent (its model version, service-time draw
and minibatch seed are fixed when it is created). An executor that dies mid-task is
restarted by Ray (``runtime.max_restarts``); the server catches ``RayActorError``
(``ActorDiedError``, ``ActorUnavailableError``) for each task in flight there and
re-issues it with the same id, on another executor of the tier when there is one. With
``run.task_timeout``, a task unanswered that long is re-issued to the same logical client
(another executor if possible); whichever copy answers first is applied, and the server
drops the late duplicate, so each task id is applied at most once and the run ends with
exactly the configured number of updates. An error raised by the client's computation
itself (bad data, a bug) is not retried: it ends the run with a domain error.

**Checkpoints.** Every ``run.checkpoint_every_updates`` updates (and at the end) the
server captures its whole state and writes it from a background thread with
:func:`~raysync.runtime.checkpoint.write_checkpoint`: the model and its version, the
strategy's and the router's state dicts (the router's generator state and pre-drawn
routes), the statistics (running sums and snapshots) and counters, every client's
service-time generator state with its unconsumed draws and its task count (which seeds
the minibatch streams), the next task id and the tasks not yet applied (id, client, model
version, service draw; the applied ids are all others below the next id), the models of
the versions those tasks carry, the evaluations, and the TensorBoard run name and step. A
resumed server continues from it: the pending tasks are re-issued with their ids, and its
clock continues from the checkpoint's (the downtime is not counted).

Random streams follow the simulator (:func:`raysync.simulation.run_generators`): client
``i`` draws its service times from child ``(0, i)`` of ``SeedSequence(seed)``, the router
uses ``(2,)``, and the ``k``-th task of client ``i`` draws its minibatches from child
``(1, i, k)`` (:func:`~raysync.runtime._backend.minibatch_generator`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import logging
import math
import os
import queue
import time
import warnings
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import ray

from raysync.config import SystemConfig
from raysync.exceptions import CheckpointError, RaySyncError, RuntimeFailure
from raysync.runtime._backend import (
    INLINE_PARAMS_BYTES,
    EvalPoint,
    ExecutorNotReady,
    FaultPlan,
    ServerBook,
    ServerOutcome,
    ServiceDraws,
    TaskReply,
    TaskSpec,
    minibatch_generator,
    service_block,
    wall_seconds,
)
from raysync.runtime.checkpoint import pack_generators, unpack_generators, write_checkpoint
from raysync.strategies._base import ClientResult, ClientWork

__all__ = ["ExecutorActor", "ExecutorSetup", "ServerActor", "ServerSetup"]

logger = logging.getLogger(__name__)

_FAILED = object()
_FATAL = object()
_LOST = object()
_DEADLINE = object()
_STOP = object()

#: Re-issues of one task after lost executors before the run gives up (plus max_restarts).
_EXTRA_LOSS_ATTEMPTS = 5
#: Timeout re-issues of one task; beyond this the server just keeps waiting.
_MAX_TIMEOUT_REISSUES = 8


# =========================================================================== executor


@dataclass(frozen=True, kw_only=True, eq=False)
class ExecutorSetup:
    """What an executor actor needs, shipped once at construction.

    Attributes:
        executor_id: Index of the executor.
        tier: Its tier.
        client: ``per_client`` mode: the one logical client it serves (it keeps that
            client's rows as a contiguous copy); None: every client of its tier (pool).
        num_cpus: CPUs it reserved (sizes its compute thread pool).
        num_gpus: GPUs it reserved (computes on CUDA when > 0 and visible).
        time_scale: Emulation factor (0: no emulation).
        train: Whether tasks compute anything.
        seed: The run's root seed (seeds each task's minibatch stream).
        model: A :class:`~raysync.workload.ModelSpec` (None in queue-only runs).
        work: What a task computes (None in queue-only runs).
        faults: Injected faults (tests only).
    """

    executor_id: int
    tier: int
    client: int | None
    num_cpus: float
    num_gpus: float
    time_scale: float
    train: bool
    seed: int
    model: Any = None
    work: ClientWork | None = None
    faults: FaultPlan | None = None


class _Rows:
    """The rows of a shared (read-only) array selected by an index array, gathered lazily.

    Used as a pool client's inputs: a minibatch gathers only its own rows from the shared
    training set, and ``np.asarray`` gathers the whole partition (local steps).
    """

    __slots__ = ("_base", "_index")

    def __init__(self, base: np.ndarray, index: np.ndarray) -> None:
        self._base = base
        self._index = index

    def __len__(self) -> int:
        return len(self._index)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self._index), *self._base.shape[1:])

    @property
    def ndim(self) -> int:
        return int(self._base.ndim)

    def __getitem__(self, key: Any) -> np.ndarray:
        return self._base[self._index[key]]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        rows = self._base[self._index]
        return rows if dtype is None else rows.astype(dtype, copy=False)


class ExecutorActor:
    """Serves tasks of logical clients: compute on the model a task carries, then wait.

    The training set reaches the executor through :meth:`prepare`, not the constructor
    (an object-store argument of a restartable actor's constructor must outlive it): the
    coordinator calls ``prepare`` once the actor is up, and a restarted executor answers
    its first task with :class:`~raysync.runtime._backend.ExecutorNotReady`, upon which
    the server calls ``prepare`` again and re-sends the task.

    Args:
        setup: Its clients, data indices, model and emulation factor.
    """

    def __init__(self, setup: ExecutorSetup) -> None:
        self._setup = setup
        self._scale = float(setup.time_scale)
        self._train = setup.train
        self._faults = setup.faults
        self._ready = not self._train
        self._preparing: asyncio.Event | None = None
        self._single = setup.client is not None
        cores = max(1, int(setup.num_cpus))
        self._threads = 1 if self._single else cores
        self._device = "cpu"
        self._data: dict[int, tuple[Any, np.ndarray]] = {}
        self._computers: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        if self._train:
            import torch

            torch.set_num_threads(max(1, cores // self._threads))
            if setup.num_gpus > 0:
                if torch.cuda.is_available():
                    self._device = "cuda"
                else:
                    who = f"client {setup.client}" if self._single else f"tier {setup.tier}"
                    message = (
                        f"{who} requested num_gpus={setup.num_gpus:g} but CUDA is not "
                        "available in its executor process; computing on the CPU"
                    )
                    warnings.warn(message, RuntimeWarning, stacklevel=2)
                    logger.warning(message)

    async def prepare(self, shared: Sequence[Any] | None) -> dict[str, Any]:
        """Fetch the shared training set (once) and report where the executor runs.

        Args:
            shared: A one-element sequence holding the object-store reference of the
                training data ``(x, y, client_indices, client_tiers)`` (read-only, not
                copied: every executor on a node maps the same memory), or None in
                queue-only runs.

        Returns:
            Executor id, tier, node id, process id and torch device.
        """
        if not self._ready and shared is not None:
            if self._preparing is not None:
                await self._preparing.wait()
            else:
                self._preparing = asyncio.Event()
                try:
                    await self._load(shared)
                finally:
                    self._preparing.set()
                    self._preparing = None
        return {
            "executor_id": self._setup.executor_id,
            "tier": self._setup.tier,
            "node_id": ray.get_runtime_context().get_node_id(),
            "actor_id": ray.get_runtime_context().get_actor_id(),
            "pid": os.getpid(),
            "device": self._device,
        }

    async def _load(self, shared: Sequence[Any]) -> None:
        setup = self._setup
        x_all, y_all, indices, tiers = await shared[0]
        if setup.client is not None:
            clients = [setup.client]
        else:
            clients = np.flatnonzero(np.asarray(tiers) == setup.tier).tolist()
        for client in clients:
            idx = indices[client]
            x = x_all[idx] if self._single else _Rows(x_all, idx)
            self._data[client] = (x, y_all[idx])
        self._computers.put(setup.model.make_computer(device=self._device))
        self._ready = True

    def _compute(self, task: TaskSpec, params: np.ndarray) -> tuple[np.ndarray, float, int]:
        """Run the task's work (in a compute thread); one model replica per thread."""
        from raysync.client import run_client_work

        setup = self._setup
        try:
            computer = self._computers.get_nowait()
        except queue.Empty:
            computer = setup.model.make_computer(device=self._device)
        try:
            x, y = self._data[task.client_id]
            rng = minibatch_generator(setup.seed, task.client_id, task.ordinal)
            assert setup.work is not None
            out = run_client_work(computer, setup.work, params, cast(np.ndarray, x), y, rng)
        finally:
            self._computers.put(computer)
        return out.payload, out.loss, out.num_samples

    async def submit(self, task: TaskSpec, params: np.ndarray | None) -> TaskReply:
        """Serve one task: compute on the model it carries, then wait out its service time.

        Emulated clock (``time_scale > 0``): service starts at ``max(arrival, free_at)``
        (both stamped by the server) and ends ``max(scaled sample, compute time)`` later;
        the executor awaits that instant without holding a compute thread. When the
        return trip exceeds the slack the task returns late, but the lateness is not
        carried into the emulated timeline. Stamps from another node assume synchronised
        clocks.

        Args:
            task: The task (id, client, version, emulation stamps, service draw, seed).
            params: The model (read-only flat float32), or None in queue-only runs.

        Returns:
            The reply, with the measured service and compute times.
        """
        begin = time.time()
        stall = 0.0
        faults = self._faults
        if faults is not None and task.attempt == 0:
            if (
                task.task_id in faults.exit_on_tasks
                or (task.client_id, task.ordinal) in faults.exit_on_ordinals
            ):
                os._exit(1)  # injected crash mid-task (tests)
            stall = float(faults.delay_tasks.get(task.task_id, 0.0))
        payload: np.ndarray | None = None
        loss = math.nan
        num_samples = 0
        if self._train and params is not None:
            if not self._ready and self._preparing is not None:
                await self._preparing.wait()
            if not self._ready:
                raise ExecutorNotReady(
                    f"executor {self._setup.executor_id} has no training data yet (restarted)"
                )
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self._threads, thread_name_prefix="raysync-compute"
                )
            loop = asyncio.get_running_loop()
            payload, loss, num_samples = await loop.run_in_executor(
                self._pool, self._compute, task, params
            )
        compute = time.time() - begin
        if self._scale > 0:
            start = max(min(task.arrival, begin), task.free_at)
            service = max(task.sample * self._scale, compute)
            end = start + service
        else:
            start = begin
            end = time.time()
            service = compute
        remaining = max(end, begin + stall) - time.time()
        if remaining > 0:
            await asyncio.sleep(remaining)
        return TaskReply(
            task.task_id,
            task.client_id,
            task.base_version,
            task.attempt,
            payload,
            loss,
            num_samples,
            service,
            compute,
            start,
            end,
        )


# =========================================================================== server


@dataclass(frozen=True, kw_only=True, eq=False)
class ServerSetup:
    """What the server actor needs, shipped once at construction.

    Attributes:
        config: The run's config.
        train: Whether to train (False: queue-only, the version advances per completion).
        mode: ``per_client`` or ``pool``.
        executor_tiers: Tier of each executor.
        client_tiers: Tier of each client.
        client_executor: ``per_client`` mode: the executor of each client.
        initial_params: Initial flat float32 model (None in queue-only runs).
        model: :class:`~raysync.workload.ModelSpec` for evaluation (None: queue-only).
        x_test: Test inputs.
        y_test: Test labels.
        x_val: Validation inputs (may be empty).
        y_val: Validation labels.
        inline_bytes: Largest model sent inline with each task.
        fingerprint: The run's config fingerprint (stored in checkpoints).
        fingerprint_fields: Its named facts.
        run_name: TensorBoard run name (stored in checkpoints).
        dataset: One-element list holding the training set's object-store reference,
            handed to a restarted executor (None in queue-only runs).
        resume: A checkpoint's state tree to continue from (None: fresh run).
        want_events: Whether the driver forwards live metrics (sinks present).
        record: Keep per-task records for tests (applied ids, service intervals).
        executor_actor_ids: Ray actor id of each executor (to read its restart count).
        executor_pids: Process id of each executor at start-up.
        virtual_clock: Tests: apply completions in the order of their emulated ends (a
            completion waits until no task in flight can end before it), and keep the
            statistics on the emulated timeline, so that a run's sample path does not
            depend on how fast Ray delivers the replies (needs ``run.time_scale > 0``).
    """

    config: SystemConfig
    train: bool
    mode: str
    executor_tiers: tuple[int, ...]
    client_tiers: tuple[int, ...]
    client_executor: tuple[int, ...] | None = None
    initial_params: np.ndarray | None = None
    model: Any = None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    inline_bytes: int = INLINE_PARAMS_BYTES
    fingerprint: str = ""
    fingerprint_fields: dict[str, Any] = field(default_factory=dict)
    run_name: str | None = None
    dataset: list[Any] | None = None
    resume: dict[str, Any] | None = None
    want_events: bool = True
    record: bool = False
    executor_actor_ids: tuple[str, ...] = ()
    executor_pids: tuple[int, ...] = ()
    virtual_clock: bool = False


class _Task:
    """A task the server created and has not applied yet (queued or in flight)."""

    __slots__ = (
        "attempt",
        "base_version",
        "client",
        "created",
        "executor",
        "ordinal",
        "params",
        "replied",
        "sample",
        "stamp",
        "task_id",
        "timer",
    )

    def __init__(
        self,
        task_id: int,
        client: int,
        base_version: int,
        params: np.ndarray | None,
        created: float,
        stamp: float,
        sample: float,
        ordinal: int,
    ) -> None:
        self.task_id = task_id
        self.client = client
        self.base_version = base_version
        self.params = params
        self.created = created
        self.stamp = stamp
        self.sample = sample
        self.ordinal = ordinal
        self.attempt = 0
        self.executor = -1
        self.replied = False
        self.timer: asyncio.TimerHandle | None = None


class ServerActor:
    """The central server: owns the model and every logical client's state.

    Args:
        setup: Config, initial model, evaluation data, executor layout, resume state.
        executors: Executor actor handles, index ``e`` serving executor ``e``.
    """

    def __init__(self, setup: ServerSetup, executors: Sequence[Any]) -> None:
        from raysync.routing import make_router
        from raysync.simulation.engine import run_generators
        from raysync.simulation.service_times import make_service_time
        from raysync.strategies import make_strategy

        config = setup.config
        self._setup = setup
        self._config = config
        n = config.num_clients
        self._executors = list(executors)
        self._client_tier = list(setup.client_tiers)
        self._client_executor = (
            list(setup.client_executor) if setup.client_executor is not None else None
        )
        num_tiers = max(setup.executor_tiers) + 1 if setup.executor_tiers else 0
        self._tier_executors: list[list[int]] = [[] for _ in range(num_tiers)]
        for e, tier in enumerate(setup.executor_tiers):
            self._tier_executors[tier].append(e)
        self._load = [0] * len(self._executors)
        # Executor health: suspect after a lost task (picked last) until it answers a
        # probe; dead once Ray gives up restarting it (never picked again).
        self._suspect = [False] * len(self._executors)
        self._dead = [False] * len(self._executors)
        self._probes: dict[int, asyncio.Future[None]] = {}
        self._parked: dict[int, list[_Task]] = {}  # tasks waiting for a suspect executor
        self._pids = list(setup.executor_pids) or [0] * len(self._executors)
        self._observed_restarts = 0
        self._restarts_before = 0  # restarts of the runs this one resumes
        self._rr = 0
        gens = run_generators(config.seed, n)
        self._router = make_router(config.routing)
        self._router.bind(n, gens.router)
        self._emulate = config.run.time_scale > 0
        block = service_block(n)
        self._service_rngs = list(gens.service)
        self._draws = [
            ServiceDraws(make_service_time(spec.service_time), rng, block)
            for spec, rng in zip(config.clients, gens.service, strict=True)
        ]
        self._strategy = None
        # Queue-only runs of a FedBuff config apply one version per B completions, as the
        # simulator does, so that staleness in versions means the same on both backends.
        from raysync.queueing.predict import buffer_size

        self._queue_buffer = buffer_size(config)
        self._params: np.ndarray | None = None
        if setup.train:
            import torch

            torch.set_num_threads(1)
            strategy = make_strategy(config.algorithm)
            strategy.bind(n, self._router.routing_probabilities())
            self._strategy = strategy
            params = np.array(setup.initial_params, dtype=np.float32)
            params.setflags(write=False)
            self._params = params
        self._book = ServerBook(n, config.run.num_updates)
        # Logical clients: the task in service (-1: idle), the queue behind it, the
        # emulated end of the previous task, the number of tasks created so far.
        self._active = [-1] * n
        self._queues: dict[int, deque[_Task]] = {}
        self._free_at = [0.0] * n
        self._ordinals = [0] * n
        self._tasks: dict[int, _Task] = {}
        self._next_task = 0
        self._timeout = wall_seconds(config.run.task_timeout, config.run.time_scale)
        self._max_loss_attempts = config.runtime.max_restarts + _EXTRA_LOSS_ATTEMPTS
        self._t0: float | None = None
        self._elapsed0 = 0.0
        self._done: asyncio.Queue[tuple[Any, ...]] | None = None
        self._waiters: set[asyncio.Future[None]] = set()
        self._version_ref: tuple[int, Any] | None = None
        self._evals: list[EvalPoint] = []
        self._events: list[tuple[int, dict[str, float], float]] = []
        self._eval_pending = 0
        self._eval_seconds = 0.0
        self._next_eval_time = wall_seconds(config.run.eval_every_seconds, config.run.time_scale)
        self._counters = {
            "duplicates_dropped": 0,
            "reissued_tasks": 0,
            "timed_out_tasks": 0,
            "actor_restarts": 0,
            "executors_dead": 0,
            "resumed_tasks": 0,
            "checkpoints_written": 0,
        }
        self._lag = [0.0, 0.0, 0]  # sum, max, count
        self._stop = False
        self._finished = False
        self._eval_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._eval_futures: list[asyncio.Future[tuple[EvalPoint, float]]] = []
        # Requested evaluations not finished yet, by request number: (time, version,
        # train loss, model). A checkpoint stores them, so a resumed run does them.
        self._eval_requests: dict[int, tuple[float, int, float, np.ndarray]] = {}
        self._eval_seq = 0
        self._restored_evals: list[tuple[float, int, float, np.ndarray | None]] = []
        self._eval_computer: Any = None
        self._ckpt_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._ckpt_futures: list[asyncio.Future[Any]] = []
        self._last_checkpoint = -1
        self._resumed_from: int | None = None
        self._restored: list[_Task] = []
        self._applied: list[int] = []
        self._services: list[tuple[int, int, float, float]] = []
        self._served_by: list[int] = []
        self._rejoined: list[tuple[int, int]] = []  # (executor, tasks applied by then)
        # Virtual clock (tests): completions applied in emulated-end order; the expected
        # emulated end of every task sent and not answered (a lower bound of its end).
        self._virtual = setup.virtual_clock and self._emulate
        self._expected: dict[int, float] = {}
        self._origin = 0.0
        if setup.resume is not None:
            self._restore(setup.resume)

    # ------------------------------------------------------------------ helpers

    def _now(self) -> float:
        assert self._t0 is not None
        return time.perf_counter() - self._t0

    def _label(self, client: int) -> str:
        name = self._config.clients[client].name
        return f"client {client} ({name})" if name else f"client {client}"

    def _payload(self, task: _Task) -> Any:
        """The model a task carries: inline array, or one object-store ref per version."""
        params = task.params
        if params is None:
            return None
        if params.nbytes < self._setup.inline_bytes:
            return params
        version = task.base_version
        if self._version_ref is not None and self._version_ref[0] == version:
            return self._version_ref[1]
        ref = ray.put(params)
        if version == self._book.version:
            self._version_ref = (version, ref)
        return ref

    def _pick(self, client: int, avoid: int) -> int:
        """The executor of a client's next call: its own, or the tier's least loaded.

        Returns -1 when no executor that can serve the client is alive.
        """
        if self._client_executor is not None:
            e = self._client_executor[client]
            return -1 if self._dead[e] else e
        candidates = [
            e for e in self._tier_executors[self._client_tier[client]] if not self._dead[e]
        ]
        if not candidates:
            return -1
        k = len(candidates)
        best, best_key = candidates[0], (True, True, math.inf)
        self._rr += 1
        for j in range(k):
            e = candidates[(self._rr + j) % k]
            key = (e == avoid and k > 1, self._suspect[e], self._load[e])
            if key < best_key:
                best, best_key = e, key
        return best

    def _create(self, client: int, now: float, stamp: float) -> None:
        """Create a task for ``client`` carrying the current model; send it if idle."""
        task = _Task(
            self._next_task,
            client,
            self._book.version,
            self._params,
            now,
            stamp,
            self._draws[client].next() if self._emulate else math.nan,
            self._ordinals[client],
        )
        self._next_task += 1
        self._ordinals[client] += 1
        self._tasks[task.task_id] = task
        self._book.dispatched(client, now)
        if self._active[client] < 0:
            self._send(task)
        else:
            self._queues.setdefault(client, deque()).append(task)

    def _send(self, task: _Task, avoid: int = -1) -> None:
        """Send (or re-send) a task to an executor and await its reply in the background."""
        if task.task_id not in self._tasks:
            return  # applied meanwhile (a delayed re-issue)
        client = task.client
        self._active[client] = task.task_id
        e = self._pick(client, avoid)
        if e < 0:
            assert self._done is not None
            self._done.put_nowait((_FATAL, self._out_of_restarts(client)))
            return
        task.executor = e
        self._load[e] += 1
        spec = TaskSpec(
            task.task_id,
            client,
            task.base_version,
            task.attempt,
            task.stamp,
            self._free_at[client],
            task.sample,
            task.ordinal,
        )
        ref = self._executors[e].submit.remote(spec, self._payload(task))
        waiter = asyncio.ensure_future(self._await_reply(ref, task.task_id, task.attempt, e))
        self._waiters.add(waiter)
        waiter.add_done_callback(self._waiters.discard)
        if self._virtual:
            scale = self._config.run.time_scale
            start = max(task.stamp, self._free_at[client])
            self._expected[task.task_id] = start + task.sample * scale
        if math.isfinite(self._timeout):
            loop = asyncio.get_running_loop()
            task.timer = loop.call_later(
                self._timeout, self._on_timeout, task.task_id, task.attempt
            )

    async def _await_reply(self, ref: Any, task_id: int, attempt: int, executor: int) -> None:
        assert self._done is not None
        try:
            reply = await ref
        except asyncio.CancelledError:
            raise
        except ray.exceptions.RayActorError as exc:  # died or unavailable: re-issue
            self._done.put_nowait((_LOST, task_id, attempt, executor, exc))
            return
        except ray.exceptions.RayTaskError as exc:
            if isinstance(getattr(exc, "cause", None), ExecutorNotReady):
                # A restarted executor: hand it the data, then re-issue the task.
                self._done.put_nowait((_LOST, task_id, attempt, executor, exc))
            else:  # the computation failed: a domain error ends the run
                self._done.put_nowait((_FAILED, task_id, executor, exc))
            return
        except Exception as exc:
            self._done.put_nowait((_FAILED, task_id, executor, exc))
            return
        self._done.put_nowait((reply, executor))

    def _on_timeout(self, task_id: int, attempt: int) -> None:
        """A task took longer than ``run.task_timeout``: re-issue it to the same client."""
        task = self._tasks.get(task_id)
        if task is None or task.attempt != attempt:
            return
        task.timer = None
        self._counters["timed_out_tasks"] += 1
        if task.attempt >= _MAX_TIMEOUT_REISSUES:
            logger.warning(
                "task %d of %s timed out %d times; waiting for it without re-issuing "
                "(is run.task_timeout too short?)",
                task_id,
                self._label(task.client),
                task.attempt + 1,
            )
            return
        task.attempt += 1
        self._counters["reissued_tasks"] += 1
        self._send(task, avoid=task.executor)

    def _lost(self, task_id: int, attempt: int, executor: int, exc: BaseException) -> None:
        """An executor died (or is unreachable) with a task in flight: re-issue the task."""
        self._load[executor] -= 1
        if isinstance(getattr(exc, "cause", None), ExecutorNotReady):
            # Restarted without its data (calls to one actor run in order: this first).
            self._executors[executor].prepare.remote(self._setup.dataset)
        if not self._suspect[executor]:
            self._suspect[executor] = True
            self._start_probe(executor)
            first = str(exc).strip().splitlines()
            logger.warning(
                "executor %d lost task %d (%s: %s); re-issuing its tasks",
                executor,
                task_id,
                type(exc).__name__,
                first[0] if first else "no reason given",
            )
        task = self._tasks.get(task_id)
        if task is None or task.attempt != attempt:
            return  # applied already, or a newer attempt is in flight
        if task.timer is not None:
            task.timer.cancel()
            task.timer = None
        if task.attempt >= self._max_loss_attempts:
            reason = str(exc).strip().splitlines()
            raise RuntimeFailure(
                f"{self._label(task.client)}'s task {task_id} was lost {task.attempt + 1} "
                f"times (last: {type(exc).__name__}: {reason[0] if reason else ''}); "
                "its executor died and could not be restarted (runtime.max_restarts = "
                f"{self._config.runtime.max_restarts}). Check the node's memory and logs "
                "(`ray status`, `ray logs`) and resume from the last checkpoint"
            ) from exc
        task.attempt += 1
        self._counters["reissued_tasks"] += 1
        healthy = self._client_executor is None and any(
            not self._suspect[e] and not self._dead[e]
            for e in self._tier_executors[self._client_tier[task.client]]
        )
        if healthy:
            self._send(task, avoid=executor)
        elif self._dead[executor]:
            self._send(task)  # another executor of the tier, or the run ends
        else:
            # No healthy executor can serve it: wait for this one's probe (it answers
            # after Ray restarted it, or is declared dead), however long a restart takes.
            self._parked.setdefault(executor, []).append(task)

    # ------------------------------------------------------------------ executor health

    def _start_probe(self, executor: int) -> None:
        """Probe a suspect executor until it answers (back in rotation) or is dead."""
        if executor in self._probes or self._dead[executor]:
            return
        probe = asyncio.ensure_future(self._probe(executor))
        self._probes[executor] = probe
        probe.add_done_callback(lambda _: self._probes.pop(executor, None))

    async def _probe(self, executor: int) -> None:
        # ``prepare`` is cheap on a live executor and hands a restarted one its data.
        delay = 0.05
        while not self._finished:
            try:
                info = await self._executors[executor].prepare.remote(self._setup.dataset)
            except asyncio.CancelledError:
                raise
            except ray.exceptions.RayActorError as exc:
                if self._gone_for_good(executor, exc):
                    self._mark_dead(executor, exc)
                    return
            except Exception as exc:  # prepare itself failed: keep it out, say why
                logger.warning("executor %d failed its health probe: %s", executor, exc)
            else:
                pid = int(info["pid"])
                if pid != self._pids[executor]:
                    self._observed_restarts += 1
                    self._pids[executor] = pid
                self._suspect[executor] = False
                logger.info("executor %d answers again (pid %d): back in rotation", executor, pid)
                if self._setup.record:
                    self._rejoined.append((executor, len(self._applied)))
                for task in self._parked.pop(executor, []):
                    self._send(task)
                return
            await asyncio.sleep(delay)
            delay = min(2.0, 2 * delay)

    def _gcs_actors(self) -> dict[str, dict[str, Any]] | None:
        """The GCS's record of each executor actor (None when it cannot be read)."""
        ids = self._setup.executor_actor_ids
        if len(ids) != len(self._executors):
            return None
        try:
            # The public state API (ray.util.state) needs the dashboard, which local
            # runs do not start; the GCS accessor behind it does not.
            from ray._private import state as gcs_state

            return {actor_id: dict(gcs_state.actors(actor_id=actor_id)) for actor_id in ids}
        except Exception:
            logger.debug("cannot read the actor table", exc_info=True)
            return None

    def _gone_for_good(self, executor: int, exc: BaseException) -> bool:
        """Whether Ray will not restart ``executor`` (its restarts are used up)."""
        table = self._gcs_actors()
        if table is not None:
            return table[self._setup.executor_actor_ids[executor]].get("State") == "DEAD"
        return isinstance(exc, ray.exceptions.ActorDiedError)

    def _mark_dead(self, executor: int, exc: BaseException) -> None:
        self._dead[executor] = True
        self._counters["executors_dead"] += 1
        logger.warning(
            "executor %d is gone for good (runtime.max_restarts = %d used up): %s",
            executor,
            self._config.runtime.max_restarts,
            type(exc).__name__,
        )
        clients = (
            [c for c, e in enumerate(self._client_executor) if e == executor]
            if self._client_executor is not None
            else [
                c
                for c, tier in enumerate(self._client_tier)
                if tier == self._setup.executor_tiers[executor]
            ]
        )
        if clients and self._pick(clients[0], -1) < 0 and self._done is not None:
            self._done.put_nowait((_FATAL, self._out_of_restarts(clients[0])))
            return
        for task in self._parked.pop(executor, []):
            self._send(task)

    def _out_of_restarts(self, client: int) -> RuntimeFailure:
        """The error ending a run whose client has no live executor left."""
        max_restarts = self._config.runtime.max_restarts
        if self._client_executor is not None:
            who = f"{self._label(client)}'s executor"
        else:
            tier = self._client_tier[client]
            k = len(self._tier_executors[tier])
            who = f"all {k} executor(s) of tier {tier} (serving {self._label(client)})"
        ckpt = self._config.run.checkpoint_dir
        resume = (
            f"then resume from the last checkpoint (raysync run CONFIG --resume {ckpt})"
            if ckpt
            else "then run again (set run.checkpoint_every_updates and run.checkpoint_dir "
            "to be able to resume)"
        )
        return RuntimeFailure(
            f"{who} died and Ray will not restart them: runtime.max_restarts = "
            f"{max_restarts} restarts per executor are used up ({self._restart_count()} "
            f"restarts in this run, at version {self._book.version}). Find out why the "
            "executors die (`ray status`, `ray logs`: memory, a crash in the client), "
            f"raise runtime.max_restarts if the faults are expected, {resume}"
        )

    def _restart_count(self) -> int:
        """Executor restarts Ray made, this run and the runs it resumes (GCS count)."""
        table = self._gcs_actors()
        if table is None:  # fall back on the restarts the probes saw
            return self._restarts_before + self._observed_restarts
        return self._restarts_before + sum(int(a.get("NumRestarts", 0)) for a in table.values())

    def _failure(self, task_id: int, executor: int, exc: BaseException) -> RaySyncError:
        task = self._tasks.get(task_id)
        name = self._label(task.client) if task is not None else f"executor {executor}"
        if isinstance(exc, ray.exceptions.RayTaskError):
            cause = getattr(exc, "cause", None)
            if isinstance(cause, RaySyncError):
                return type(cause)(f"{name} failed on task {task_id}: {cause}")
            return RuntimeFailure(
                f"{name} raised {type(cause or exc).__name__} on task {task_id}: "
                f"{cause or exc}. Fix the client's data or model configuration; the "
                "client's traceback is in the Ray worker logs"
            )
        return RuntimeFailure(
            f"{name} failed on task {task_id}: {type(exc).__name__}: {exc}. "
            "See the Ray logs for the cause and run again"
        )

    # ------------------------------------------------------------------ evaluation

    def _request_eval(self, now: float) -> None:
        """Evaluate the current model in the background thread (in request order)."""
        if self._params is None:
            return
        # The model is a read-only snapshot: later updates make new arrays.
        self._submit_eval(now, self._book.version, self._book.pop_train_loss(), self._params)

    def _submit_eval(self, now: float, version: int, train_loss: float, params: Any) -> None:
        if self._eval_executor is None:
            self._eval_executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="raysync-eval"
            )
        loop = asyncio.get_running_loop()
        self._eval_pending += 1
        seq = self._eval_seq
        self._eval_seq += 1
        self._eval_requests[seq] = (now, version, train_loss, params)
        future = loop.run_in_executor(self._eval_executor, self._evaluate, params, version, now)

        def done(fut: asyncio.Future[tuple[EvalPoint, float]]) -> None:
            # Runs on the event loop: no lock needed around the lists.
            self._eval_pending -= 1
            self._eval_requests.pop(seq, None)
            if fut.cancelled() or fut.exception() is not None:
                return
            point, seconds = fut.result()
            self._eval_seconds += seconds
            self._evals.append(point)
            scalars = point.scalars()
            if not math.isnan(train_loss):
                scalars["train/loss"] = train_loss
            self._events.append((version, scalars, now))

        future.add_done_callback(done)
        self._eval_futures = [f for f in self._eval_futures if not f.done()]
        self._eval_futures.append(future)

    def _evaluate(self, params: np.ndarray, version: int, now: float) -> tuple[EvalPoint, float]:
        """Test (and validation) loss and accuracy of ``params``; runs in the eval thread."""
        start = time.perf_counter()
        setup = self._setup
        if self._eval_computer is None:
            self._eval_computer = setup.model.make_computer()
        computer = self._eval_computer
        test_loss, test_acc = computer.evaluate(params, setup.x_test, setup.y_test)
        if setup.y_val is not None and len(setup.y_val) > 0:
            val_loss, val_acc = computer.evaluate(params, setup.x_val, setup.y_val)
        else:
            val_loss, val_acc = math.nan, math.nan
        point = EvalPoint(
            now, version, float(test_loss), float(test_acc), float(val_loss), float(val_acc)
        )
        return point, time.perf_counter() - start

    # ------------------------------------------------------------------ checkpoints

    def _capture(self, now: float) -> dict[str, Any]:
        """The server's whole state as a checkpoint tree (arrays are snapshots)."""
        pending = sorted(self._tasks.values(), key=lambda t: t.task_id)
        base_params: dict[str, np.ndarray] = {}
        for task in pending:
            if task.params is not None and str(task.base_version) not in base_params:
                base_params[str(task.base_version)] = task.params
        unconsumed = [d.state()["pending"] for d in self._draws]
        lengths = np.array([len(p) for p in unconsumed], dtype=np.int64)
        flat = [v for p in unconsumed for v in p]
        evals = [
            [e.time, e.version, e.test_loss, e.test_accuracy, e.val_loss, e.val_accuracy]
            for e in sorted(self._evals, key=lambda e: (e.version, e.time))
        ]
        # Evaluations requested and not finished: a resumed run does them (exactly once).
        eval_pending = [[t, v, loss] for t, v, loss, _ in self._eval_requests.values()]
        eval_params = {str(v): m for _, v, _, m in self._eval_requests.values()}
        counters = dict(self._counters)
        counters["actor_restarts"] = self._restart_count()
        return {
            "version": self._book.version,
            "next_task_id": self._next_task,
            "elapsed": now,
            "params": self._params,
            "base_params": base_params,
            "pending": {
                "task_id": np.array([t.task_id for t in pending], dtype=np.int64),
                "client": np.array([t.client for t in pending], dtype=np.int64),
                "base_version": np.array([t.base_version for t in pending], dtype=np.int64),
                "created": np.array([t.created for t in pending], dtype=np.float64),
                "sample": np.array([t.sample for t in pending], dtype=np.float64),
                "ordinal": np.array([t.ordinal for t in pending], dtype=np.int64),
            },
            "ordinals": np.array(self._ordinals, dtype=np.int64),
            "service_rng": pack_generators(self._service_rngs),
            "service_pending": np.array(flat, dtype=np.float64),
            "service_pending_len": lengths,
            "router": self._router.state_dict(),
            "strategy": self._strategy.state_dict() if self._strategy is not None else None,
            "book": self._book.state(),
            "evals": evals,
            "eval_pending": eval_pending,
            "eval_params": eval_params,
            "counters": counters,
            "lag": list(self._lag),
            "eval_seconds": self._eval_seconds,
            "next_eval_time": self._next_eval_time,
            # TensorBoard: a resumed run appends to this run's directory; its steps are
            # model versions, so they continue from this one.
            "run_name": self._setup.run_name,
            "tensorboard_step": self._book.version,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint tree (validated by the coordinator)."""
        n = self._config.num_clients
        book = self._book
        book.load(state["book"])
        if self._strategy is not None:
            params = np.array(state["params"], dtype=np.float32)
            params.setflags(write=False)
            self._params = params
            if state.get("strategy") is not None:
                self._strategy.load_state_dict(state["strategy"])
        self._router.load_state_dict(state["router"])
        self._next_task = int(state["next_task_id"])
        self._ordinals = [int(v) for v in state["ordinals"]]
        unpack_generators(np.asarray(state["service_rng"]), self._service_rngs)
        flat = np.asarray(state["service_pending"], dtype=np.float64).tolist()
        offsets = np.concatenate([[0], np.cumsum(state["service_pending_len"])]).astype(int)
        for i in range(n):
            draws = self._draws[i]
            draws.load(
                {
                    "rng": self._service_rngs[i].bit_generator.state,
                    "pending": flat[offsets[i] : offsets[i + 1]],
                }
            )
        for key, value in dict(state.get("counters", {})).items():
            if key in self._counters:
                self._counters[key] = int(value)
        # Restarts are counted by the GCS per actor; this run's actors are new.
        self._restarts_before = self._counters["actor_restarts"]
        self._counters["executors_dead"] = 0
        eval_params = state.get("eval_params") or {}
        for row in state.get("eval_pending", []):
            version = int(row[1])
            model = eval_params.get(str(version))
            if model is not None:
                model = np.array(model, dtype=np.float32)
                model.setflags(write=False)
            self._restored_evals.append((float(row[0]), version, float(row[2]), model))
        lag = state.get("lag", [0.0, 0.0, 0])
        self._lag = [float(lag[0]), float(lag[1]), int(lag[2])]
        self._eval_seconds = float(state.get("eval_seconds", 0.0))
        self._evals = [
            EvalPoint(float(e[0]), int(e[1]), *(float(v) for v in e[2:6]))
            for e in state.get("evals", [])
        ]
        every = wall_seconds(self._config.run.eval_every_seconds, self._config.run.time_scale)
        saved = float(state.get("next_eval_time", math.inf))
        self._next_eval_time = saved if math.isfinite(every) and math.isfinite(saved) else every
        self._elapsed0 = float(state["elapsed"])
        base_params = state.get("base_params") or {}
        pending = state["pending"]
        for j in range(len(pending["task_id"])):
            version = int(pending["base_version"][j])
            base: np.ndarray | None = None
            if self._strategy is not None:
                base = np.array(base_params[str(version)], dtype=np.float32)
                base.setflags(write=False)
            self._restored.append(
                _Task(
                    int(pending["task_id"][j]),
                    int(pending["client"][j]),
                    version,
                    base,
                    float(pending["created"][j]),
                    0.0,
                    float(pending["sample"][j]),
                    int(pending["ordinal"][j]),
                )
            )
        self._resumed_from = book.version
        self._last_checkpoint = book.version

    def _checkpoint(self, now: float) -> None:
        """Capture the state now and write it in the background (writes stay ordered)."""
        run = self._config.run
        if run.checkpoint_dir is None:
            return
        self._last_checkpoint = self._book.version
        state = self._capture(now)
        if self._ckpt_executor is None:
            self._ckpt_executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="raysync-checkpoint"
            )
        setup = self._setup

        def write() -> None:
            write_checkpoint(
                run.checkpoint_dir,  # type: ignore[arg-type]
                state,
                version=int(state["version"]),
                fingerprint=setup.fingerprint,
                fields=setup.fingerprint_fields,
            )

        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._ckpt_executor, write)

        def done(fut: asyncio.Future[Any]) -> None:
            if not fut.cancelled() and fut.exception() is None:
                self._counters["checkpoints_written"] += 1

        future.add_done_callback(done)
        failed = [f for f in self._ckpt_futures if f.done() and f.exception() is not None]
        if failed:
            raise cast(BaseException, failed[0].exception())
        self._ckpt_futures = [f for f in self._ckpt_futures if not f.done()]
        self._ckpt_futures.append(future)

    # ------------------------------------------------------------------ remote API

    async def run(self) -> ServerOutcome:
        """Run to the stop condition and return the measurements.

        Raises:
            RuntimeFailure: An executor could not be restarted, or a client failed.
            RaySyncError: A client raised a domain error (re-raised with its name).
            CheckpointError: A checkpoint could not be written.
        """
        config = self._config
        run = config.run
        book = self._book
        router = self._router
        strategy = self._strategy
        self._done = asyncio.Queue()
        loop = asyncio.get_running_loop()
        max_updates = run.num_updates if run.num_updates is not None else math.inf
        budget = wall_seconds(run.time_budget, run.time_scale)
        every_updates = run.eval_every_updates
        every_seconds = wall_seconds(run.eval_every_seconds, run.time_scale)
        every_ckpt = run.checkpoint_every_updates
        self._t0 = time.perf_counter() - self._elapsed0
        if math.isfinite(budget):
            remaining = max(0.0, budget - self._elapsed0)
            loop.call_at(loop.time() + remaining, self._done.put_nowait, (_DEADLINE,))
        emulate = self._emulate
        stamp = time.time()
        self._origin = stamp - self._elapsed0
        if self._resumed_from is None:
            if self._params is not None:
                self._request_eval(0.0)
            for client in router.initial_clients(config.concurrency):
                self._create(client, 0.0, stamp)
        else:
            for restored in self._restored:
                restored.stamp = stamp
                self._tasks[restored.task_id] = restored
                self._counters["resumed_tasks"] += 1
                if self._active[restored.client] < 0:
                    self._send(restored)
                else:
                    self._queues.setdefault(restored.client, deque()).append(restored)
            self._restored = []
            for at, version, train_loss, model in self._restored_evals:
                if model is not None:
                    self._submit_eval(at, version, train_loss, model)
            self._restored_evals = []
        end_time = self._elapsed0
        lag = self._lag
        record = self._setup.record

        def apply(reply: TaskReply, executor: int, now: float) -> float:
            """Consume one completion: update, FIFO, replacement, evaluation, checkpoint."""
            task = self._tasks.pop(reply.task_id)
            client = task.client
            delay = book.version - task.base_version
            advanced = True
            if strategy is None and self._queue_buffer > 1:
                advanced = (book.completions + 1) % self._queue_buffer == 0
            if strategy is not None:
                assert self._params is not None and reply.payload is not None
                result = ClientResult(
                    task_id=reply.task_id,
                    client_id=client,
                    base_version=task.base_version,
                    current_version=book.version,
                    payload=reply.payload,
                    loss=float(reply.loss),
                    num_samples=int(reply.num_samples),
                )
                new_params = strategy.apply(self._params, result)
                advanced = new_params is not None
                if new_params is not None:
                    params = np.asarray(new_params, dtype=np.float32)
                    params.setflags(write=False)
                    self._params = params
            book.completed(reply, delay, now)
            if advanced:
                book.version += 1
            if record:
                self._applied.append(reply.task_id)
                self._services.append((reply.task_id, client, reply.started_at, reply.finished_at))
                self._served_by.append(executor)
            # The client's server is free: its next queued task goes first (FIFO).
            self._active[client] = -1
            if emulate:
                self._free_at[client] = reply.finished_at
            waiting = self._queues.get(client)
            if waiting:
                nxt = waiting.popleft()
                if not waiting:
                    del self._queues[client]
                self._send(nxt)
            # With emulation the replacement is stamped as arriving when the finished
            # task ended, so the return trip and the update do not stretch the
            # emulated cycle (the theory has no communication delay).
            self._create(router.route(client), now, reply.finished_at if emulate else time.time())
            book.maybe_snapshot(now)
            if self._params is not None:
                if advanced and every_updates is not None and book.version % every_updates == 0:
                    self._request_eval(now)
                elif now >= self._next_eval_time:
                    self._request_eval(now)
                while self._next_eval_time <= now:
                    self._next_eval_time += every_seconds
            elif book.completions == book.snapshots.rows[-1][0]:
                self._evals.append(
                    EvalPoint(now, book.version, math.nan, math.nan, math.nan, math.nan)
                )
            if advanced and every_ckpt is not None and book.version % every_ckpt == 0:
                self._checkpoint(now)
            return now

        ready: list[tuple[float, int, TaskReply, int]] = []
        try:
            while not self._stop and book.version < max_updates:
                item = await self._done.get()
                now = self._now()
                kind = item[0]
                if kind is _DEADLINE:
                    end_time = budget
                    break
                if kind is _STOP:
                    end_time = now
                    break
                if kind is _FAILED:
                    _, task_id, executor, exc = item
                    raise self._failure(task_id, executor, exc) from exc
                if kind is _FATAL:
                    raise item[1]
                if kind is _LOST:
                    _, task_id, attempt, executor, exc = item
                    self._lost(task_id, attempt, executor, exc)
                    continue
                reply: TaskReply = kind
                executor = item[1]
                self._load[executor] -= 1
                self._suspect[executor] = False
                delta = time.time() - reply.finished_at
                lag[0] += delta
                lag[2] += 1
                if delta > lag[1]:
                    lag[1] = delta
                task = self._tasks.get(reply.task_id)
                if task is None or task.replied:
                    self._counters["duplicates_dropped"] += 1
                    continue
                task.replied = True
                if task.timer is not None:
                    task.timer.cancel()
                if not self._virtual:
                    end_time = apply(reply, executor, now)
                    continue
                # Virtual clock: apply completions in the order of their emulated ends,
                # each once no task still in flight can end before it.
                self._expected.pop(reply.task_id, None)
                heapq.heappush(ready, (reply.finished_at, reply.task_id, reply, executor))
                while ready and book.version < max_updates and not self._stop:
                    bound = min(self._expected.values(), default=math.inf)
                    if ready[0][0] > bound:
                        break
                    finished, _, first, where = heapq.heappop(ready)
                    end_time = apply(first, where, finished - self._origin)
        finally:
            for waiter in [*self._waiters, *self._probes.values()]:
                waiter.cancel()
            for task in self._tasks.values():
                if task.timer is not None:
                    task.timer.cancel()
            self._version_ref = None
        final_row = book.finish(end_time)
        if self._params is not None:
            if self._eval_futures:
                await asyncio.gather(*self._eval_futures)
            last = self._evals[-1] if self._evals else None
            if last is None or last.version != book.version:
                self._request_eval(end_time)
                await asyncio.gather(*self._eval_futures)
        else:
            self._evals.append(
                EvalPoint(end_time, book.version, math.nan, math.nan, math.nan, math.nan)
            )
        if run.checkpoint_every_updates is not None and self._last_checkpoint != book.version:
            self._checkpoint(end_time)
        if self._ckpt_futures:
            results = await asyncio.gather(*self._ckpt_futures, return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                error = errors[0]
                if isinstance(error, RaySyncError):
                    raise error
                raise CheckpointError(f"writing a checkpoint failed: {error}") from error
        for pool in (self._eval_executor, self._ckpt_executor):
            if pool is not None:
                pool.shutdown(wait=True)
        self._counters["actor_restarts"] = self._restart_count()
        self._finished = True
        debug: dict[str, Any] = {}
        if record:
            debug = {
                "applied_task_ids": self._applied,
                "services": self._services,
                "executors": self._served_by,
                "rejoined": self._rejoined,
            }
        pending = sorted(self._tasks)
        self._tasks.clear()
        return ServerOutcome(
            rows=book.snapshots.rows,
            final_row=final_row,
            end_time=end_time,
            num_completions=book.completions,
            num_updates=book.version,
            max_delay=book.max_delay,
            evals=sorted(self._evals, key=lambda e: (e.version, e.time)),
            busy=book.busy.tolist(),
            compute=book.compute.tolist(),
            counters=dict(self._counters),
            eval_seconds=self._eval_seconds,
            final_params=self._params,
            lag_mean=lag[0] / lag[2] if lag[2] else math.nan,
            lag_max=lag[1] if lag[2] else math.nan,
            next_task_id=self._next_task,
            pending_tasks=pending,
            resumed_from_version=self._resumed_from,
            debug=debug,
        )

    async def poll(self) -> tuple[int, float, list[tuple[int, dict[str, float], float]]]:
        """Progress and the metric events produced since the last poll.

        Returns:
            ``(version, seconds since start, events)``; each event is
            ``(step, scalars, time)``. Running measurements (throughput, staleness, queue
            lengths) are added only when no evaluation is pending, so steps never go back.
        """
        if self._t0 is None:
            return self._book.version, self._elapsed0, []
        now = self._now()
        events, self._events = self._events, []
        if self._setup.want_events and self._eval_pending == 0 and not self._finished:
            live = self._book.live_scalars(now)
            if live:
                events.append((self._book.version, live, now))
        if not self._setup.want_events:
            events = []
        return self._book.version, now, events

    async def stop(self) -> None:
        """Ask the loop to stop after the completion it is processing."""
        self._stop = True
        if self._done is not None:
            self._done.put_nowait((_STOP,))
