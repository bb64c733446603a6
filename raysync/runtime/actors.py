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
*starts* at ``max(arrival, free_at)`` and *ends* at ``start + max(scaled sample, compute)``
(compute is 0 for a queue-only task, which computes nothing); the executor awaits that
instant with ``asyncio.sleep``, which holds no compute slot.
Computation runs in a bounded thread pool (``max(1, int(num_cpus))`` threads; one thread
when the executor serves a single client, with that many torch threads), so an executor
serves many waiting tasks concurrently while never computing on more cores than it
reserved. Without emulation (``time_scale = 0``) an executor with one compute thread has
nothing to wait for: it is a :class:`SyncExecutorActor`, a plain Ray actor that runs one
call at a time on its own thread (the same order, without the event-loop and thread-pool
hand-offs per task). The sampled service time is drawn by the server from the client's stream, and
Ray's per-call overhead and the round trip between two tasks of a client are absorbed by
the waits instead of stretching the emulated timeline.

**Server actor** (:class:`ServerActor`), split by job as Ray Train v2 splits its
controller: :mod:`~raysync.runtime._dispatch` moves tasks (per-client FIFO, pick, send,
re-issue), :mod:`~raysync.runtime._failures` is the failure policy (what a Ray error
means, executor health, the user's message), :mod:`~raysync.runtime._evaluation`
evaluates, :mod:`~raysync.runtime._state` names the checkpoint state (versioned schema)
and writes it; this module keeps the loop that calls them. An asyncio actor that owns
the model, its version,
the router, the strategy, every logical client's state and the statistics, and keeps
exactly ``C`` tasks in existence. Each update costs one remote call
(``executor.submit.remote(task, params)`` returns the result itself; with batched calls,
below, one call serves several). Completed calls are
consumed in completion order: ``strategy.apply`` (which may bump the version), then the
client's next queued task is sent, then ``router.route`` names the client of the one
replacement task, which carries the model current after the update (the call order of
:class:`~raysync.strategies.BaseStrategy` and :class:`~raysync.routing.BaseRouter`,
identical to the simulator). A model version below
:data:`~raysync.runtime._backend.INLINE_PARAMS_BYTES` travels inline in each call; a larger
one is ``ray.put`` once and its reference shared by every task of that version.

**Batched calls** (``runtime.max_batch > 1``, runs without emulation only). Ray's cost
per remote call (submission at the server, receipt and reply at the executor) is paid
once for several tasks: a task assigned to an executor waits in that executor's outbox
at the server until the loop's current step ends, then leaves with the other tasks there
as one ``submit_many`` call while the executor has fewer than two calls outstanding (one
runs while the next waits in Ray's queue at the actor). The executor serves them in
order and returns their replies together; the server consumes each reply as if it came
alone (same apply path, counters, timeouts and re-issues; a lost call re-issues each of
its tasks once). Tasks of one model version send it once per call. **Where this touches
the queueing model: nowhere the theory looks.** The theory's station is the logical
client (docs/theory.md): its FIFO queue, its service, and the staleness of a task as the
updates between its creation (the model version it carries) and its application. A batch
holds at most one task per client (a client's next task is sent only once the previous
one is applied), every task is created at the same completion with the same version as
without batching, and staleness is counted at application as before; what changes is how
tasks queue at an *executor*, a shared resource of the pool that the theory does not
model (without batching they queue in Ray's actor queue instead). Emulated runs, whose
measured throughput is compared with the theory, never batch: a batch would hold each
reply until the batch's last emulated wait ends, delaying completions. Tested:
``tests/runtime_tests/test_batching.py`` (bit-identical model, per-client orders and
staleness on a fixed schedule; emulated runs make one call per task).

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

**Checkpoints.** Every ``run.checkpoint_every_updates`` updates (at the end, and at
Ctrl-C: the driver calls :meth:`ServerActor.interrupt`, the loop stops after the update it
is applying and the checkpoint is the one that update would have written) the server
captures its whole state and writes it from a background thread with
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
uses ``(2,)``, and the ``k``-th task of client ``i`` draws its minibatches from the
per-task stream :meth:`MinibatchStreams.task(i, k)
<raysync.simulation.minibatch.MinibatchStreams.task>`, as in the simulator.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import heapq
import logging
import math
import os
import queue
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import ray

from raysync.config import SystemConfig
from raysync.runtime._backend import (
    INLINE_PARAMS_BYTES,
    EvalPoint,
    ExecutorNotReady,
    FaultPlan,
    ServerBook,
    ServerOutcome,
    TaskReply,
    TaskSpec,
    executor_device,
    from_wire,
    to_wire,
    wall_seconds,
)
from raysync.runtime._dispatch import DEADLINE, FAILED, LOST, NO_EXECUTOR, STOP, Dispatcher, Task
from raysync.runtime._evaluation import Evaluator
from raysync.runtime._failures import out_of_restarts, translate
from raysync.runtime._state import SCHEMA_VERSION, CheckpointManager, Key
from raysync.simulation.minibatch import MinibatchStreams
from raysync.strategies._base import ClientResult, ClientWork

__all__ = [
    "Event",
    "ExecutorActor",
    "ExecutorSetup",
    "ServerActor",
    "ServerSetup",
    "SyncExecutorActor",
]

#: A metric event for the driver's sinks: ``(step, scalars, seconds since the start)``.
Event = tuple[int, dict[str, float], float]

#: Loop item: an update whose emulated uplink and server time are over (docs/network.md).
_UPDATE = object()
#: Smallest positive step of the clock that stamps service times (seconds).
_CLOCK_RESOLUTION = max(time.get_clock_info("time").resolution, 1e-9)
#: Emulated service times: past ``run.time_budget`` the server goes on applying the tasks
#: that ended by it (the simulator applies them) while they keep coming; it gives up after
#: this many wall seconds without one (a lost executor), not after a fixed total, so a
#: loaded machine whose replies lag the emulated timeline still applies every one.
DEADLINE_GRACE = 10.0

logger = logging.getLogger(__name__)


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
        self._streams = MinibatchStreams(setup.seed)
        cores = max(1, int(setup.num_cpus))
        self._threads = 1 if self._single else cores
        self._device = "cpu"
        # Ray's assignment (fractional requests share an id); recorded even when no
        # training runs so that placement can be checked.
        self._gpu_ids = [str(g) for g in ray.get_gpu_ids()] if setup.num_gpus > 0 else []
        self._data: dict[int, tuple[Any, np.ndarray]] = {}
        self._computers: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        if self._train:
            import torch

            torch.set_num_threads(max(1, cores // self._threads))
            self._device = executor_device(
                setup.num_gpus,
                self._gpu_ids,
                cuda_available=torch.cuda.is_available(),
                cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
            )
            if setup.num_gpus > 0:
                if self._device == "cpu":
                    who = f"client {setup.client}" if self._single else f"tier {setup.tier}"
                    message = (
                        f"{who} requested num_gpus={setup.num_gpus:g} and Ray assigned GPU "
                        f"id(s) {self._gpu_ids} but CUDA is not available in its executor "
                        "process; computing on the CPU"
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
        return self._info()

    def _info(self) -> dict[str, Any]:
        return {
            "executor_id": self._setup.executor_id,
            "tier": self._setup.tier,
            "node_id": ray.get_runtime_context().get_node_id(),
            "actor_id": ray.get_runtime_context().get_actor_id(),
            "pid": os.getpid(),
            "device": self._device,
            "gpu_ids": list(self._gpu_ids),
        }

    async def _load(self, shared: Sequence[Any]) -> None:
        self._install(await shared[0])

    def _install(self, dataset: Any) -> None:
        """Keep this executor's clients' rows of the shared training set."""
        setup = self._setup
        x_all, y_all, indices, tiers = dataset
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
            rng = self._streams.task(task.client_id, task.ordinal)
            assert setup.work is not None
            out = run_client_work(computer, setup.work, params, cast(np.ndarray, x), y, rng)
        finally:
            self._computers.put(computer)
        return out.payload, out.loss, out.num_samples

    async def submit(
        self, task: TaskSpec, params: bytes | np.ndarray | None
    ) -> list[Any]:
        """Serve one task: compute on the model it carries, then wait out its service time.

        Emulated clock (``time_scale > 0``): service starts at ``max(arrival, free_at)``
        (both stamped by the server) and ends ``max(scaled sample, compute time)`` later
        (the scaled sample for a queue-only task);
        the executor awaits that instant without holding a compute thread. When the
        return trip exceeds the slack the task returns late, but the lateness is not
        carried into the emulated timeline. Stamps from another node assume synchronised
        clocks.

        Args:
            task: The task (id, client, version, emulation stamps, service draw, seed).
            params: The model: :func:`~raysync.runtime._backend.to_wire` bytes (inline) or
                a read-only flat float32 array (from the object store); None in
                queue-only runs.

        Returns:
            The reply, with the measured service and compute times, as a list of
            :class:`~raysync.runtime._backend.TaskReply`'s fields, the payload as
            :func:`~raysync.runtime._backend.to_wire` bytes (Ray packs a list of numbers
            and bytes with msgpack; a tuple, a NamedTuple or an array goes to its pickle
            fallback; the task arrives as such a list too).
        """
        begin = time.time()
        task = TaskSpec._make(task)
        stall = self._injected(task)
        params = from_wire(params)
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
            # A queue-only task computes nothing: the time measured is the actor's own
            # latency (seconds on a loaded machine), which only delays the reply, as the
            # return trip does, and is not carried into the emulated timeline.
            computed = payload is not None
            service = max(task.sample * self._scale, compute if computed else 0.0)
            end = start + service
        else:
            start = begin
            end = time.time()
            service = compute
        remaining = max(end, begin + stall) - time.time()
        if remaining > 0:
            await asyncio.sleep(remaining)
        return _reply(task, payload, loss, num_samples, service, compute, start, end, begin)

    async def submit_many(
        self, tasks: Sequence[Sequence[Any]], index: Sequence[int], *models: Any
    ) -> list[list[Any]]:
        """Serve several tasks of one call in order (``runtime.max_batch > 1``).

        Args:
            tasks: The tasks, each as :meth:`submit` takes it.
            index: ``models[index[k]]`` is task ``k``'s model (tasks of one version share it).
            models: The distinct models of the batch (None in queue-only runs).

        Returns:
            The replies, in the tasks' order, as :meth:`submit` returns each; every reply
            is stamped as received when the call began and returned when it ended.

        Raises:
            ValueError: The run emulates service times (a batch would hold every reply
                until its last wait ends; the dispatcher never batches those runs).
        """
        if self._scale > 0:
            raise ValueError("batched calls serve runs without emulation (time_scale = 0)")
        begin = time.time()
        replies = []
        for task, k in zip(tasks, index, strict=True):
            try:
                replies.append(await self.submit(cast(TaskSpec, task), models[k]))
            except Exception as exc:
                _name_task(exc, task)
                raise
        return _batch_replies(replies, begin)

    def _injected(self, task: TaskSpec) -> float:
        """Injected faults (tests): exit mid-task, or the task's extra stall in seconds."""
        faults = self._faults
        if faults is None or task.attempt != 0:
            return 0.0
        if (
            task.task_id in faults.exit_on_tasks
            or (task.client_id, task.ordinal) in faults.exit_on_ordinals
        ):
            os._exit(1)  # injected crash mid-task (tests)
        return float(faults.delay_tasks.get(task.task_id, 0.0))


class SyncExecutorActor(ExecutorActor):
    """An executor of a run without emulation that computes on one thread.

    Such an executor never waits (no emulated service time) and computes one task at a
    time anyway, so it is a plain Ray actor (the coordinator starts it with
    ``max_concurrency = 1``): Ray runs each call on the actor's own thread, as a bare-Ray
    worker's, without the async executor's hand-offs to its event loop and compute
    thread (two thread switches and GIL transfers per task; profiled in
    ``benchmarks/bench_runtime.py --profile``). The replies are the async executor's. A
    health probe (``prepare``) waits behind the calls already queued.

    Args:
        setup: As :class:`ExecutorActor`'s (``time_scale`` must be 0).
    """

    def __init__(self, setup: ExecutorSetup) -> None:
        if setup.time_scale != 0:
            raise ValueError(
                f"SyncExecutorActor serves runs without emulation: time_scale must be 0, "
                f"got {setup.time_scale!r}"
            )
        super().__init__(setup)

    def prepare(self, shared: Sequence[Any] | None) -> dict[str, Any]:  # type: ignore[override]
        """:meth:`ExecutorActor.prepare`, blocking (one call at a time: no one else waits)."""
        if not self._ready and shared is not None:
            self._load(shared)
        return self._info()

    def _load(self, shared: Sequence[Any]) -> None:  # type: ignore[override]
        # Ray makes an actor async when any method is a coroutine function: none here.
        self._install(ray.get(shared[0]))

    def submit(  # type: ignore[override]
        self, task: TaskSpec, params: bytes | np.ndarray | None
    ) -> list[Any]:
        """:meth:`ExecutorActor.submit` without emulation, on the calling thread."""
        begin = time.time()
        task = TaskSpec._make(task)
        stall = self._injected(task)
        params = from_wire(params)
        payload: np.ndarray | None = None
        loss = math.nan
        num_samples = 0
        if self._train and params is not None:
            if not self._ready:
                raise ExecutorNotReady(
                    f"executor {self._setup.executor_id} has no training data yet (restarted)"
                )
            payload, loss, num_samples = self._compute(task, params)
        end = time.time()
        compute = end - begin
        remaining = begin + stall - time.time()
        if remaining > 0:
            time.sleep(remaining)
        return _reply(task, payload, loss, num_samples, compute, compute, begin, end, begin)

    def submit_many(  # type: ignore[override]
        self, tasks: Sequence[Sequence[Any]], index: Sequence[int], *models: Any
    ) -> list[list[Any]]:
        """:meth:`ExecutorActor.submit_many` on the calling thread, one task after another."""
        begin = time.time()
        replies = []
        for task, k in zip(tasks, index, strict=True):
            try:
                replies.append(self.submit(cast(TaskSpec, task), models[k]))
            except Exception as exc:
                _name_task(exc, task)
                raise
        return _batch_replies(replies, begin)


def _name_task(exc: BaseException, task: Sequence[Any]) -> None:
    """Mark a batched task's error with its task id (the server names the task)."""
    try:
        exc.raysync_task_id = int(task[0])  # type: ignore[attr-defined]
    except AttributeError:  # an exception type without a __dict__
        pass


def _batch_replies(replies: list[list[Any]], begin: float) -> list[list[Any]]:
    """A batch's replies, stamped as received at the call's start and returned at its end.

    The server measures the call's communication as its round trip minus the executor's
    span (``returned_at - received_at``); the span of a batched call is the whole call.
    """
    returned = time.time()
    return [[*reply[:11], begin, returned] for reply in replies]


def _reply(
    task: TaskSpec,
    payload: np.ndarray | None,
    loss: float,
    num_samples: int,
    service: float,
    compute: float,
    start: float,
    end: float,
    received: float,
) -> list[Any]:
    """An executor's reply as a list (msgpack), stamped as it returns (``returned_at``)."""
    return [  # TaskReply's fields, in order
        task.task_id,
        task.client_id,
        task.base_version,
        task.attempt,
        None if payload is None else to_wire(payload),
        loss,
        num_samples,
        service,
        compute,
        start,
        end,
        received,
        time.time(),
    ]


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
        record: Keep per-task records for tests (applied ids, service intervals, the
            executor and the staleness of each applied task).
        executor_actor_ids: Ray actor id of each executor (to read its restart count).
        executor_pids: Process id of each executor at start-up.
        virtual_clock: Tests: apply completions in the order of their emulated ends (a
            completion waits until no task in flight can end before it), and keep the
            statistics on the emulated timeline, so that a run's sample path does not
            depend on how fast Ray delivers the replies. Without emulation
            (``run.time_scale = 0``): apply completions in the order their tasks were
            first sent (the order one executor serves them; Ray may deliver two replies
            of one executor out of order), so the sample path is fixed by the seed
            alone, batched calls (``runtime.max_batch``) or not.
        router: Unbound router to use instead of ``make_router(config.routing)``
            (:func:`raysync.run`'s ``router``; pickled to the server).
        strategy: Unbound strategy to use instead of ``make_strategy(config.algorithm)``.
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
    router: Any = None
    strategy: Any = None


class ServerActor:
    """The central server: the run loop, calling dispatch, evaluation and checkpoints.

    The jobs live in their own modules (the split of Ray Train v2's controller):
    :class:`~raysync.runtime._dispatch.Dispatcher` moves tasks (per-client FIFO, pick,
    send, re-issue), :mod:`~raysync.runtime._failures` decides what an error means and
    keeps the executors' health, :class:`~raysync.runtime._evaluation.Evaluator`
    evaluates, :class:`~raysync.runtime._state.CheckpointManager` writes checkpoints of
    the state named by :class:`~raysync.runtime._state.Key`. The actor owns the model,
    the router, the strategy and the statistics, and runs the loop that applies each
    completion.

    Args:
        setup: Config, initial model, evaluation data, executor layout, resume state.
        executors: Executor actor handles, index ``e`` serving executor ``e``.
    """

    def __init__(self, setup: ServerSetup, executors: Sequence[Any]) -> None:
        from raysync.queueing.predict import buffer_size
        from raysync.routing import make_router
        from raysync.simulation.engine import run_generators
        from raysync.strategies import make_strategy

        config = setup.config
        self._setup = setup
        self._config = config
        n = config.num_clients
        gens = run_generators(config.seed, n)
        self._router = setup.router if setup.router is not None else make_router(config.routing)
        self._router.bind(n, gens.router)
        self._counters = {
            "executor_calls": 0,
            "duplicates_dropped": 0,
            "reissued_tasks": 0,
            "timed_out_tasks": 0,
            "actor_restarts": 0,
            "executors_dead": 0,
            "resumed_tasks": 0,
            "checkpoints_written": 0,
            "compute_bound_tasks": 0,
            "compute_bound_past_budget": 0,
            "late_replies_applied": 0,
            "late_replies_given_up": 0,
        }
        self._dispatch = Dispatcher(
            config,
            executors,
            executor_tiers=setup.executor_tiers,
            client_tiers=setup.client_tiers,
            client_executor=setup.client_executor,
            service_rngs=gens.service,
            counters=self._counters,
            inline_bytes=setup.inline_bytes,
            dataset=setup.dataset,
            actor_ids=setup.executor_actor_ids,
            pids=setup.executor_pids,
            label=self._label,
        )
        self._strategy = None
        self._params: np.ndarray | None = None
        if setup.train:
            import torch

            torch.set_num_threads(1)
            strategy = (
                setup.strategy if setup.strategy is not None else make_strategy(config.algorithm)
            )
            strategy.bind(n, self._router.routing_probabilities())
            self._strategy = strategy
            params = np.array(setup.initial_params, dtype=np.float32)
            params.setflags(write=False)
            self._params = params
        # Queue-only runs of a FedBuff config apply one version per B completions, as the
        # simulator does, so that staleness in versions means the same on both backends.
        self._queue_buffer = buffer_size(config)
        self._init_links(config, setup)
        self._init_presence(config)
        self._book = ServerBook(n, config.run.num_updates)
        self._evaluator = Evaluator(
            setup.model, setup.x_test, setup.y_test, setup.x_val, setup.y_val
        )
        if setup.train:
            self._evaluator.warm()
        self._next_eval_time = wall_seconds(config.run.eval_every_seconds, config.run.time_scale)
        self._checkpoints = CheckpointManager(
            config.run, setup.fingerprint, setup.fingerprint_fields
        )
        self._t0: float | None = None
        self._elapsed0 = 0.0
        self._done: asyncio.Queue[tuple[Any, ...]] | None = None
        self._lag = [0.0, 0.0, 0]  # sum, max, count
        self._stop = False
        self._interrupted = False
        self._loop_ended = False
        # Emulated service times: the wall-clock instant of run.time_budget, and whether
        # the loop is past it (applying only the tasks that ended by then).
        self._deadline = math.inf
        self._budget = math.inf  # run.time_budget in wall seconds
        self._closing = False
        self._network_due = 0  # emulated network events scheduled by the deadline
        self._resumed_from: int | None = None
        self._origin = 0.0
        self._applied: list[int] = []
        self._services: list[tuple[int, int, float, float]] = []
        self._served_by: list[int] = []
        self._delays: list[int] = []  # staleness of each applied task (record)
        self._rejoined: list[tuple[int, int]] = []  # (executor, tasks applied by then)
        if setup.record:
            self._dispatch.rejoin_hook = lambda e: self._rejoined.append((e, len(self._applied)))
        if setup.resume is not None:
            self._restore(setup.resume)

    # ------------------------------------------------------------------ network emulation

    def _init_links(self, config: SystemConfig, setup: ServerSetup) -> None:
        """Streams of the emulated downlink, uplink and server stations (docs/network.md).

        They come from the simulator's generators (children ``(4, i)``, ``(5, i)`` and
        ``(6,)`` of the seed) and are scaled by ``run.time_scale`` like service times.
        """
        from raysync.exceptions import ConfigError
        from raysync.simulation._network import network_streams

        self._links = network_streams(config, block_size=256)
        self._scale = config.run.time_scale
        self._server_queue: list[tuple[TaskReply, int, float]] = []
        self._server_free = 0.0
        self.server_busy = 0.0
        if self._links is None:
            return
        if config.run.time_scale <= 0:
            raise ConfigError(
                "downlink/uplink delays and [server] update_time are emulated in the Ray "
                "runtime: run.time_scale must be > 0, got 0"
            )
        if setup.virtual_clock:
            raise ConfigError(
                "the virtual clock (a test mode) does not support emulated delays or a "
                "server update time; use the simulator for exact orderings"
            )

    def _downlink_arrival(self, client: int, sent_at: float) -> float | None:
        """Wall-clock instant a task sent at ``sent_at`` reaches ``client`` (None: no delay)."""
        links = self._links
        stream = None if links is None else links.downlink[client]
        return None if stream is None else sent_at + next(stream) * self._scale

    def _returned(self, reply: TaskReply, executor: int) -> None:
        """The client is free at its emulated end; its result travels the uplink."""
        assert self._links is not None
        task = self._dispatch.tasks[reply.task_id]
        self._dispatch.finished(task.client, reply.finished_at)
        stream = self._links.uplink[task.client]
        arrival = reply.finished_at + (0.0 if stream is None else next(stream) * self._scale)
        self._call_at(arrival, self._reached_server, reply, executor, arrival)

    def _call_at(self, when: float, callback: Any, *args: Any) -> None:
        loop = asyncio.get_running_loop()
        if when <= self._deadline < math.inf:
            # Counted until it fires: the loop, past the deadline, waits for it.
            self._network_due += 1
            callback = functools.partial(self._due_fired, callback)
        loop.call_later(max(0.0, when - time.time()), callback, *args)

    def _due_fired(self, callback: Any, *args: Any) -> None:
        self._network_due -= 1
        callback(*args)

    def _reached_server(self, reply: TaskReply, executor: int, arrival: float) -> None:
        """A result reached the server: apply it now, or queue for the server station."""
        assert self._links is not None and self._done is not None
        if self._links.server is None:
            self._done.put_nowait((_UPDATE, reply, executor, arrival))
            return
        self._server_queue.append((reply, executor, arrival))
        if len(self._server_queue) == 1:
            self._serve_head()

    def _serve_head(self) -> None:
        """Start the server station on the oldest result (single server, FIFO)."""
        assert self._links is not None and self._links.server is not None
        reply, executor, arrival = self._server_queue[0]
        start = max(arrival, self._server_free)
        service = next(self._links.server) * self._scale
        self._server_free = start + service
        self.server_busy += service
        assert self._done is not None
        self._call_at(
            self._server_free, self._done.put_nowait, (_UPDATE, reply, executor, self._server_free)
        )

    # ------------------------------------------------------------------ helpers

    def _observe(self, client: int, reply: TaskReply, now: float) -> None:
        """Feed an adaptive router the task's service time, in config seconds.

        With emulation the service is the emulated one (compute + wait, divided by
        ``time_scale``); without, the measured compute. A swap of ``p`` re-binds the
        strategy (its importance weights follow the routing), as in the simulator.
        """
        duration = reply.finished_at - reply.started_at
        scale = self._config.run.time_scale
        if scale > 0:
            duration, now = duration / scale, now / scale
        # A zero-length step of a coarse timer still counts as a completion: the router
        # pairs every route with an observe to know which tasks are in service.
        duration = max(duration, _CLOCK_RESOLUTION)
        router = self._router
        version = router.routing_version
        router.observe(client, duration, now)
        if router.routing_version != version:
            self._rebind_strategy()

    def _rebind_strategy(self) -> None:
        """Bind the strategy to the router's current ``p`` (absent clients: ``1 / n``)."""
        p = self._router.routing_probabilities()
        if p is not None and self._strategy is not None:
            n = p.size
            self._strategy.bind(n, np.where(p > 0, p, 1.0 / n))

    def _init_presence(self, config: SystemConfig) -> None:
        """Clients that join or leave (docs/adaptive.md): the router routes to present ones."""
        from raysync.simulation._dynamics import Presence

        self._presence: Presence | None = None
        if any(c.join_time > 0 or c.leave_time is not None for c in config.clients):
            self._presence = Presence(config, self._router)
            if self._presence.start():
                self._rebind_strategy()

    def _now(self) -> float:
        assert self._t0 is not None
        return time.perf_counter() - self._t0

    def _label(self, client: int) -> str:
        name = self._config.clients[client].name
        return f"client {client} ({name})" if name else f"client {client}"

    def _restart_count(self) -> int:
        return self._dispatch.health.restart_count()

    def _request_eval(self, now: float) -> None:
        """Evaluate the current model in the background (in request order)."""
        if self._params is None:
            return
        # The model is a read-only snapshot: later updates make new arrays.
        self._evaluator.request(now, self._book.version, self._book.pop_train_loss(), self._params)

    # ------------------------------------------------------------------ checkpoints

    def _capture(self, now: float, *, reopen: bool = False) -> dict[str, Any]:
        """The server's whole state as a checkpoint tree (arrays are snapshots).

        ``reopen``: store the evaluations done of the current version as not finished
        (:meth:`Evaluator.capture`), as a capture in that version's update has them.
        """
        counters = dict(self._counters)
        counters["actor_restarts"] = self._restart_count()
        # The count a run resumed from this checkpoint starts from: the writes before it
        # (in order: a failed one fails the run) and this one.
        counters["checkpoints_written"] = self._checkpoints.scheduled + 1
        return {
            Key.SCHEMA: SCHEMA_VERSION,
            Key.VERSION: self._book.version,
            Key.ELAPSED: now,
            Key.PARAMS: self._params,
            Key.ROUTER: self._router.state_dict(),
            Key.STRATEGY: self._strategy.state_dict() if self._strategy is not None else None,
            Key.BOOK: self._book.state(),
            Key.COUNTERS: counters,
            Key.LAG: list(self._lag),
            Key.NEXT_EVAL_TIME: self._next_eval_time,
            # TensorBoard: a resumed run appends to this run's directory; its steps are
            # model versions, so they continue from this one.
            Key.RUN_NAME: self._setup.run_name,
            Key.TENSORBOARD_STEP: self._book.version,
            **self._dispatch.capture(),
            **self._evaluator.capture(
                (self._book.version, self._params)
                if reopen and self._params is not None
                else None
            ),
        }

    async def _checkpoint_interrupted(self, at: float) -> None:
        """Ctrl-C: the checkpoint the update that reached this version would have written.

        ``at`` is that update's time (the wait for Ctrl-C is not run time). The
        evaluations of earlier versions are finished first, so the driver logs them once
        and the resumed run does not redo them; this version's are redone on resume.
        """
        if not self._checkpoints.final_due(self._book.version):
            return  # checkpointing off, or the periodic checkpoint of this version exists
        if self._params is not None:
            await self._evaluator.drain()
        self._checkpoints.write(self._capture(at, reopen=True))

    def _restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint tree (validated by the coordinator)."""
        book = self._book
        book.load(state[Key.BOOK])
        if self._strategy is not None:
            params = np.array(state[Key.PARAMS], dtype=np.float32)
            params.setflags(write=False)
            self._params = params
            if state.get(Key.STRATEGY) is not None:
                self._strategy.load_state_dict(state[Key.STRATEGY])
        self._router.load_state_dict(state[Key.ROUTER])
        self._dispatch.restore(state, train=self._strategy is not None)
        for key, value in dict(state.get(Key.COUNTERS, {})).items():
            if key in self._counters:
                self._counters[key] = int(value)
        # Restarts are counted per actor by Ray; this run's actors are new.
        self._dispatch.health.restarts_before = self._counters["actor_restarts"]
        self._counters["executors_dead"] = 0
        self._checkpoints.written = self._checkpoints.scheduled = self._counters[
            "checkpoints_written"
        ]
        self._evaluator.restore(state)
        lag = state.get(Key.LAG, [0.0, 0.0, 0])
        self._lag = [float(lag[0]), float(lag[1]), int(lag[2])]
        every = wall_seconds(self._config.run.eval_every_seconds, self._config.run.time_scale)
        saved = float(state.get(Key.NEXT_EVAL_TIME, math.inf))
        self._next_eval_time = saved if math.isfinite(every) and math.isfinite(saved) else every
        self._elapsed0 = float(state[Key.ELAPSED])
        self._resumed_from = book.version
        self._checkpoints.last = book.version

    # ------------------------------------------------------------------ the loop

    def _apply(
        self, reply: TaskReply, executor: int, now: float, applied_at: float | None = None
    ) -> None:
        """Consume one completion: update, FIFO, replacement, evaluation, checkpoint.

        The call order of :class:`~raysync.strategies.BaseStrategy` and
        :class:`~raysync.routing.BaseRouter` is the simulator's. ``applied_at``: emulated
        network (docs/network.md): the wall-clock instant the update is applied (after
        the uplink and the server station); the client was freed when its reply came.
        """
        run = self._config.run
        book = self._book
        strategy = self._strategy
        dispatch = self._dispatch
        task = dispatch.take(reply.task_id)
        client = task.client
        if not math.isnan(task.arrived_at):  # measured: see Dispatcher.answered
            book.communicated(
                client, task.sent_at, task.arrived_at, reply.received_at, reply.returned_at
            )
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
            # As in the simulator: an overflowing update is reported by the next task's
            # DivergenceError, without numpy's warnings ahead of it.
            with np.errstate(over="ignore", invalid="ignore"):
                new_params = strategy.apply(self._params, result)
            advanced = new_params is not None
            if new_params is not None:
                params = np.asarray(new_params, dtype=np.float32)
                params.setflags(write=False)
                self._params = params
        book.completed(reply, delay, now)
        if self._compute_excess(task, reply) > 0:
            self._counters["compute_bound_tasks"] += 1  # it ended after its emulated end
        if self._closing:
            self._counters["late_replies_applied"] += 1
        if advanced:
            book.version += 1
        if self._setup.record:
            self._applied.append(reply.task_id)
            self._services.append((reply.task_id, client, reply.started_at, reply.finished_at))
            self._served_by.append(executor)
            self._delays.append(delay)
        # The client's server is free: its next queued task goes first (FIFO).
        if applied_at is None:
            dispatch.finished(client, reply.finished_at)
        # With emulation the replacement is stamped as arriving when the finished task
        # ended, so the return trip and the update do not stretch the emulated cycle
        # (the theory has no communication delay unless the config names one).
        stamp = reply.finished_at if dispatch.emulate else time.time()
        presence = self._presence
        if presence is not None and presence.changes_ahead:
            scale = self._config.run.time_scale
            if presence.advance(now / scale if scale > 0 else now):
                self._rebind_strategy()
        if self._router.observes_service_times:
            self._observe(client, reply, now)
        replacement = self._router.route(client) if presence is None else presence.route(client)
        arrive_at = None
        if applied_at is not None:
            stamp = applied_at
            arrive_at = self._downlink_arrival(replacement, applied_at)
        dispatch.create(replacement, book.version, self._params, now, stamp, arrive_at=arrive_at)
        book.dispatched(replacement, now)
        book.maybe_snapshot(now)
        if self._params is not None:
            every_updates = run.eval_every_updates
            if advanced and every_updates is not None and book.version % every_updates == 0:
                self._request_eval(now)
            elif self._next_eval_time <= now < self._budget:
                # At the budget the run's final evaluation covers the instant (with the
                # updates that end by it and reply after it).
                self._request_eval(now)
            every_seconds = wall_seconds(run.eval_every_seconds, run.time_scale)
            while self._next_eval_time <= now:
                self._next_eval_time += every_seconds
        elif book.completions == book.snapshots.rows[-1][0]:
            self._evaluator.points.append(
                EvalPoint(now, book.version, math.nan, math.nan, math.nan, math.nan)
            )
        if self._checkpoints.due(book.version, advanced):
            self._checkpoints.write(self._capture(now))

    def _compute_excess(self, task: Task, reply: TaskReply) -> float:
        """Wall seconds by which a task's computation outlasted its scaled service sample.

        Positive: the task ended later than the simulator's clock. At most 0: it did not,
        or the run does not emulate service times.
        """
        if not self._dispatch.emulate:
            return 0.0
        return reply.service_time - task.sample * self._config.run.time_scale

    async def _grace_item(self, held_back: int) -> tuple[Any, ...] | None:
        """Past the deadline: the next loop item, or None when nothing is left to apply.

        Left to apply: an item already queued, a task whose emulated end is at or
        before the deadline (sent, on its downlink, or re-issued after a loss), or an
        emulated uplink or server event due by then. (Virtual clock: a completion held
        back waits for a task in flight that ends before it, so that task is left too.)
        None also when nothing came for :data:`DEADLINE_GRACE` seconds: what is lost is
        counted (:meth:`_give_up`; ``held_back``: replies taken and not applied yet).
        """
        assert self._done is not None
        deadline = self._deadline
        if self._done.empty():
            if self._dispatch.expected_bound() > deadline and self._network_due == 0:
                return None
        try:
            return await asyncio.wait_for(self._done.get(), DEADLINE_GRACE)
        except TimeoutError:
            self._give_up(held_back)
            return None

    def _give_up(self, held_back: int) -> None:
        """Nothing came for :data:`DEADLINE_GRACE` s past the deadline: count what is lost.

        ``held_back``: replies taken and not applied yet (virtual clock), each of a task
        that ended by the deadline.
        """
        lost = self._dispatch.due_by(self._deadline) + held_back
        self._counters["late_replies_given_up"] = lost
        logger.warning(
            "%d tasks that ended by run.time_budget sent nothing for %g s; "
            "the run ends without them (a lost or stalled executor)",
            lost,
            DEADLINE_GRACE,
        )

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
        dispatch = self._dispatch
        self._done = asyncio.Queue()
        dispatch.start(self._done)
        loop = asyncio.get_running_loop()
        max_updates = run.num_updates if run.num_updates is not None else math.inf
        budget = wall_seconds(run.time_budget, run.time_scale)
        self._budget = budget
        self._t0 = time.perf_counter() - self._elapsed0
        stamp = time.time()
        self._origin = stamp - self._elapsed0
        if math.isfinite(budget):
            remaining = max(0.0, budget - self._elapsed0)
            loop.call_at(loop.time() + remaining, self._done.put_nowait, (DEADLINE,))
            if dispatch.emulate:
                self._deadline = self._origin + budget
        if self._resumed_from is None:
            if self._params is not None:
                self._request_eval(0.0)
            starts = self._router if self._presence is None else self._presence
            for client in starts.initial_clients(config.concurrency):
                arrive_at = self._downlink_arrival(client, stamp)
                dispatch.create(client, book.version, self._params, 0.0, stamp, arrive_at=arrive_at)
                book.dispatched(client, 0.0)
        else:
            self._counters["resumed_tasks"] += dispatch.resume(stamp)
            self._evaluator.resume()
        end_time = self._elapsed0
        lag = self._lag
        virtual = dispatch.emulate and self._setup.virtual_clock
        in_send_order = not dispatch.emulate and self._setup.virtual_clock
        expect = 0  # in_send_order: the next task (by first send) to apply
        setup_mode_is_pool = self._setup.client_executor is None
        ready: list[tuple[float, int, TaskReply, int]] = []
        deadline = self._deadline
        try:
            while not self._stop and book.version < max_updates:
                if self._closing:
                    item = await self._grace_item(len(ready))
                    if item is None:
                        break
                else:
                    item = await self._done.get()
                # A reply taken after the budget's instant counts at it (the run ends there).
                now = min(self._now(), budget)
                kind = item[0]
                if kind is DEADLINE:
                    end_time = budget
                    if not dispatch.emulate:
                        break
                    # As in the simulator, every task that ended by the deadline counts:
                    # wait (a bounded time) for the replies still travelling back.
                    self._closing = True
                    continue
                if kind is STOP:
                    if not self._interrupted:
                        end_time = now
                    break
                if kind is FAILED:
                    _, task_id, executor, exc = item
                    task = dispatch.tasks.get(task_id)
                    who = self._label(task.client) if task is not None else f"executor {executor}"
                    raise translate(exc, "serving a task", who=who, task_id=task_id) from exc
                if kind is NO_EXECUTOR:
                    raise out_of_restarts(
                        config,
                        dispatch.who_died(item[1]),
                        restarts=self._restart_count(),
                        version=book.version,
                        plural=setup_mode_is_pool,
                    )
                if kind is LOST:
                    _, task_id, attempt, executor, exc = item
                    dispatch.lost(task_id, attempt, executor, exc)
                    continue
                if kind is _UPDATE:
                    # Statistics on the emulated timeline (as the virtual clock keeps them):
                    # a loop stalled by machine load catches up in bursts, which wall-clock
                    # instants would count as extra throughput.
                    _, update, executor, applied_at = item
                    if applied_at > deadline:
                        continue  # after the deadline: in flight at the run's end
                    emulated = applied_at - self._origin
                    self._apply(update, executor, emulated, applied_at=applied_at)
                    end_time = emulated
                    if self._server_queue:
                        self._server_queue.pop(0)
                        if self._server_queue:
                            self._serve_head()
                    continue
                reply: TaskReply = kind
                executor = item[1]
                arrived = item[2]
                delta = time.time() - reply.finished_at
                lag[0] += delta
                lag[2] += 1
                if delta > lag[1]:
                    lag[1] = delta
                answered = dispatch.answered(reply, executor, arrived)
                if answered is None:
                    continue  # a late duplicate
                if reply.finished_at > deadline:
                    # Ended after the deadline: in flight at the run's end. Counted when
                    # its computation, not its service, took it past the deadline (the
                    # simulator applies it): its client is behind the simulator's.
                    excess = self._compute_excess(answered, reply)
                    if excess > 0 and reply.finished_at - excess <= deadline:
                        self._counters["compute_bound_past_budget"] += 1
                    continue
                if not virtual and self._links is not None:
                    self._returned(reply, executor)
                    continue
                if in_send_order:
                    heapq.heappush(ready, (answered.seq, reply.task_id, reply, executor))
                    while ready and ready[0][0] == expect:
                        if book.version >= max_updates or self._stop:
                            break
                        _, _, first, where = heapq.heappop(ready)
                        self._apply(first, where, now)
                        expect += 1
                    end_time = now
                    continue
                if not virtual:
                    self._apply(reply, executor, now)
                    end_time = now
                    continue
                # Virtual clock: apply completions in the order of their emulated ends,
                # each once no task still in flight can end before it.
                heapq.heappush(ready, (reply.finished_at, reply.task_id, reply, executor))
                while ready and book.version < max_updates and not self._stop:
                    if ready[0][0] > dispatch.expected_bound():
                        break
                    finished, _, first, where = heapq.heappop(ready)
                    end_time = finished - self._origin
                    self._apply(first, where, end_time)
            if self._closing:
                end_time = budget
        finally:
            dispatch.stop()
            # The driver logs the run's summary at the final version, under the live
            # scalars' tags: a live event of that version would repeat the step.
            self._loop_ended = True
        if self._interrupted:
            await self._checkpoint_interrupted(end_time)
        final_row = book.finish(end_time)
        evaluator = self._evaluator
        if self._interrupted:
            logger.info("interrupted at version %d", book.version)  # no final evaluation
        elif self._params is not None:
            await evaluator.drain()
            last = evaluator.last()
            if last is None or last.version != book.version:
                self._request_eval(end_time)
                await evaluator.drain()
        else:
            evaluator.points.append(
                EvalPoint(end_time, book.version, math.nan, math.nan, math.nan, math.nan)
            )
        if self._checkpoints.final_due(book.version):
            self._checkpoints.write(self._capture(end_time))
        await self._checkpoints.flush()
        evaluator.shutdown()
        self._counters["actor_restarts"] = self._restart_count()
        self._counters["checkpoints_written"] = self._checkpoints.written
        debug: dict[str, Any] = {}
        if self._setup.record:
            debug = {
                "applied_task_ids": self._applied,
                "services": self._services,
                "executors": self._served_by,
                "delays": self._delays,
                "rejoined": self._rejoined,
            }
        pending = sorted(dispatch.tasks)
        dispatch.tasks.clear()
        return ServerOutcome(
            rows=book.snapshots.rows,
            final_row=final_row,
            end_time=end_time,
            num_completions=book.completions,
            num_updates=book.version,
            max_delay=book.max_delay,
            evals=sorted(evaluator.points, key=lambda e: (e.version, e.time)),
            busy=book.busy.tolist(),
            compute=book.compute.tolist(),
            counters=dict(self._counters),
            eval_seconds=evaluator.seconds,
            final_params=self._params,
            lag_mean=lag[0] / lag[2] if lag[2] else math.nan,
            lag_max=lag[1] if lag[2] else math.nan,
            next_task_id=dispatch.next_task,
            pending_tasks=pending,
            resumed_from_version=self._resumed_from,
            resumed_from_elapsed=self._elapsed0,
            communication=book.communication(),
            server_node=ray.get_runtime_context().get_node_id(),
            debug=debug,
        )

    async def poll(
        self,
    ) -> tuple[int, float, list[Event], Event | None]:
        """Progress and the metric events produced since the last poll.

        Returns:
            ``(version, seconds since start, events, live)``; each event is
            ``(step, scalars, time)``: ``events`` the evaluations finished, ``live`` the
            running measurements (throughput, staleness, queue lengths) now, or None
            (no sinks, an evaluation pending, or the loop ended). The driver logs a live
            event once a later version's arrives (:class:`LiveEvents`).
        """
        if self._t0 is None:
            return self._book.version, self._elapsed0, [], None
        now = self._now()
        evaluator = self._evaluator
        events, evaluator.events = evaluator.events, []
        if not self._setup.want_events:
            return self._book.version, now, [], None
        live: Event | None = None
        if evaluator.pending == 0 and not self._loop_ended:
            scalars = self._book.live_scalars(now)
            if scalars:
                live = (self._book.version, scalars, now)
        return self._book.version, now, events, live

    async def stop(self) -> None:
        """Ask the loop to stop after the completion it is processing."""
        self._stop = True
        if self._done is not None:
            self._done.put_nowait((STOP,))

    async def interrupt(self) -> None:
        """Stop for Ctrl-C: as :meth:`stop`, without the final evaluation.

        With ``run.checkpoint_dir`` set, :meth:`run` then writes a checkpoint of the
        version reached (unless one of it exists) before it returns.
        """
        self._interrupted = True
        await self.stop()
