"""Dispatch: logical clients' FIFO queues, picking an executor, sending and re-issuing.

:class:`Dispatcher` owns every logical client's state at the server (the task in
service, the queue behind it, the emulated instant its server is free again, its
service-time stream and its task count) and the tasks not applied yet. It

* creates a task for a client (its model version, service draw and minibatch ordinal
  fixed at creation, so every re-issue is identical) and sends it when the client is
  idle, else queues it behind the client's task in service (per-client FIFO: a client
  is a single server, wherever its tasks run);
* picks the executor: the client's own (``per_client``), or the least-loaded healthy
  one of its tier (``pool``), never a dead one;
* sends with one remote call and awaits the reply in the background, reporting it (or
  its error, classified by the failure policy) to the server's loop through one queue;
* with ``runtime.max_batch > 1`` (runs without emulation), sends several tasks of
  different clients as one call (:meth:`Dispatcher._flush`): a task assigned to an
  executor waits in that executor's outbox until the server's loop yields, then goes out
  with the others in the outbox as long as the executor has fewer than
  :data:`CALLS_PER_EXECUTOR` calls outstanding; each task keeps its own model version,
  attempt, timer and reply, so the server handles each reply as if it came alone;
* re-issues a task whose executor died (:meth:`lost`) or that timed out, with the same
  id, and parks it while no healthy executor can take it
  (:class:`~raysync.runtime._failures.ExecutorHealth`).

The loop (:class:`~raysync.runtime.actors.ServerActor`) decides what a completion does;
this module only moves tasks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import ray

from raysync.config import SystemConfig
from raysync.exceptions import RuntimeFailure
from raysync.runtime._backend import (
    ServiceDraws,
    TaskReply,
    reply_from_wire,
    service_block,
    to_wire,
    wall_seconds,
)
from raysync.runtime._failures import ExecutorHealth, classify, first_line
from raysync.runtime._state import PENDING_COLUMNS, Key
from raysync.runtime.checkpoint import pack_generators, unpack_generators

__all__ = [
    "CALLS_PER_EXECUTOR",
    "DEADLINE",
    "FAILED",
    "LOST",
    "NO_EXECUTOR",
    "STOP",
    "Dispatcher",
    "Task",
]

logger = logging.getLogger(__name__)

#: Kinds of the items the loop reads from the dispatcher's queue (a reply is the other).
FAILED = object()
LOST = object()
NO_EXECUTOR = object()
DEADLINE = object()
STOP = object()

#: Re-issues of one task after lost executors before the run gives up (plus max_restarts).
_EXTRA_LOSS_ATTEMPTS = 5
#: Timeout re-issues of one task; beyond this the server just keeps waiting.
_MAX_TIMEOUT_REISSUES = 8
#: Batched calls (``runtime.max_batch > 1``) outstanding per executor: two keep it busy
#: (one runs while the next waits in Ray's queue at the actor) while the tasks created
#: meanwhile gather in its outbox for the call after.
CALLS_PER_EXECUTOR = 2


class Task:
    """A task the server created and has not applied yet (queued or in flight)."""

    __slots__ = (
        "arrived_at",
        "attempt",
        "base_version",
        "client",
        "created",
        "executor",
        "ordinal",
        "params",
        "replied",
        "sample",
        "sent_at",
        "seq",
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
        self.seq = -1  # position in the order of first sends (virtual clock without emulation)
        # Real communication (docs/network.md, "Real delays"): time.time() at the server
        # when the latest attempt's call was issued and when the reply measured arrived.
        self.sent_at = math.nan
        self.arrived_at = math.nan


class Dispatcher:
    """Moves the tasks of the logical clients to the executors and back.

    Args:
        config: The run's config.
        executors: Executor actor handles.
        executor_tiers: Tier of each executor.
        client_tiers: Tier of each client.
        client_executor: ``per_client`` mode: the executor of each client (else None).
        service_rngs: Each client's service-time generator (child ``(0, i)`` of the seed).
        counters: The server's fault counters (``reissued_tasks``, ``timed_out_tasks``).
        inline_bytes: Largest model sent inline with each task.
        dataset: What a restarted executor is handed (its training data).
        actor_ids: Ray actor id of each executor.
        pids: Process id of each executor at start-up.
        label: Names a client in messages.
    """

    def __init__(
        self,
        config: SystemConfig,
        executors: Sequence[Any],
        *,
        executor_tiers: Sequence[int],
        client_tiers: Sequence[int],
        client_executor: Sequence[int] | None,
        service_rngs: Sequence[np.random.Generator],
        counters: dict[str, int],
        inline_bytes: int,
        dataset: Any,
        actor_ids: Sequence[str],
        pids: Sequence[int],
        label: Callable[[int], str],
    ) -> None:
        from raysync.simulation.service_times import make_service_time

        n = config.num_clients
        self._config = config
        self._executors = list(executors)
        self._client_tier = list(client_tiers)
        self._client_executor = list(client_executor) if client_executor is not None else None
        num_tiers = max(executor_tiers) + 1 if executor_tiers else 0
        self._tier_executors: list[list[int]] = [[] for _ in range(num_tiers)]
        for e, tier in enumerate(executor_tiers):
            self._tier_executors[tier].append(e)
        self._load = [0] * len(self._executors)
        self._rr = 0
        self._counters = counters
        self._inline_bytes = inline_bytes
        self._label = label
        self.emulate = config.run.time_scale > 0
        self._scale = config.run.time_scale
        block = service_block(n)
        self._service_rngs = list(service_rngs)
        self._draws = [
            ServiceDraws(make_service_time(spec.service_time), rng, block)
            for spec, rng in zip(config.clients, self._service_rngs, strict=True)
        ]
        # Logical clients: the task in service (-1: idle), the queue behind it, the
        # emulated end of the previous task, the number of tasks created so far.
        self._active = [-1] * n
        self._queues: dict[int, deque[Task]] = {}
        self.free_at = [0.0] * n
        self._ordinals = [0] * n
        self.tasks: dict[int, Task] = {}
        self.next_task = 0
        self._timeout = wall_seconds(config.run.task_timeout, config.run.time_scale)
        self._max_loss_attempts = config.runtime.max_restarts + _EXTRA_LOSS_ATTEMPTS
        self._version_wire: tuple[int, Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Queue[tuple[Any, ...]] | None = None
        # Emulated service times: each task's emulated end, sent and not answered (the
        # executor stamps the same instant, TaskReply.finished_at).
        self._expected: dict[int, float] = {}
        self._restored: list[Task] = []
        self._next_seq = 0
        self._in_transit: dict[int, asyncio.TimerHandle] = {}  # emulated downlinks
        # Batched calls: a batch would hold each emulated reply until the batch's last
        # wait ends (a wait holds no compute slot), so emulated runs call once per task.
        self._max_batch = config.runtime.max_batch if not self.emulate else 1
        # Per executor: tasks assigned and not sent yet (with the attempt assigned) and
        # batched calls outstanding.
        self._outbox: list[deque[tuple[Task, int]]] = [deque() for _ in self._executors]
        self._calls = [0] * len(self._executors)
        self._flush_due = False
        #: Called with each executor back in rotation (tests record when).
        self.rejoin_hook: Callable[[int], None] | None = None
        self.health = ExecutorHealth(
            self._executors,
            actor_ids,
            pids,
            dataset,
            on_back=self._back,
            on_dead=self._dead,
        )

    # ------------------------------------------------------------------ sending

    def start(self, done: asyncio.Queue[tuple[Any, ...]]) -> None:
        """Report replies and errors to ``done`` from now on."""
        self._done = done
        self._loop = asyncio.get_running_loop()

    def create(
        self,
        client: int,
        version: int,
        params: np.ndarray | None,
        now: float,
        stamp: float,
        *,
        arrive_at: float | None = None,
    ) -> Task:
        """Create a task for ``client`` carrying ``params`` (``version``); send it if idle.

        ``arrive_at``: emulated downlink (docs/network.md): the task reaches its client
        at this wall-clock instant and only then joins the client's FIFO queue (tasks
        join in arrival order, as in the simulator); its arrival stamp is that instant.
        """
        if arrive_at is not None:
            stamp = arrive_at
        task = Task(
            self.next_task,
            client,
            version,
            params,
            now,
            stamp,
            self._draws[client].next(now / self._scale) if self.emulate else math.nan,
            self._ordinals[client],
        )
        self.next_task += 1
        self._ordinals[client] += 1
        self.tasks[task.task_id] = task
        wait = 0.0 if arrive_at is None else arrive_at - time.time()
        if wait > 0:
            handle = asyncio.get_running_loop().call_later(wait, self._arrived, task)
            self._in_transit[task.task_id] = handle
        else:
            self._enqueue(task)
        return task

    def _arrived(self, task: Task) -> None:
        self._in_transit.pop(task.task_id, None)
        if task.task_id in self.tasks and not self.health.stopped:
            self._enqueue(task)

    def _enqueue(self, task: Task) -> None:
        if self._active[task.client] < 0:
            self.send(task)
        else:
            self._queues.setdefault(task.client, deque()).append(task)

    def finished(self, client: int, end: float) -> None:
        """``client``'s task was applied: record its emulated end, send its next task."""
        self._active[client] = -1
        if self.emulate:
            self.free_at[client] = end
        waiting = self._queues.get(client)
        if waiting:
            nxt = waiting.popleft()
            if not waiting:
                del self._queues[client]
            self.send(nxt)

    def _payload(self, task: Task) -> Any:
        """The model a task carries: inline bytes, or an object-store ref.

        Small models travel as :func:`~raysync.runtime._backend.to_wire` bytes, larger ones
        as one ``ray.put`` reference; either is made once per version (the newest
        version's tasks share it; a run's model size, hence its form, never changes).
        """
        params = task.params
        if params is None:
            return None
        version = task.base_version
        cached = self._version_wire
        if cached is not None and cached[0] == version:
            return cached[1]
        wire = to_wire(params) if params.nbytes < self._inline_bytes else ray.put(params)
        if cached is None or version > cached[0]:
            self._version_wire = (version, wire)
        return wire

    def pick(self, client: int, avoid: int) -> int:
        """The executor of a client's next call: its own, or the tier's least loaded.

        Returns -1 when no executor that can serve the client is alive.
        """
        health = self.health
        if self._client_executor is not None:
            e = self._client_executor[client]
            return -1 if health.dead[e] else e
        candidates = [
            e for e in self._tier_executors[self._client_tier[client]] if not health.dead[e]
        ]
        if not candidates:
            return -1
        k = len(candidates)
        best, best_key = candidates[0], (True, True, math.inf)
        self._rr += 1
        for j in range(k):
            e = candidates[(self._rr + j) % k]
            key = (e == avoid and k > 1, health.suspect[e], self._load[e])
            if key < best_key:
                best, best_key = e, key
        return best

    def send(self, task: Task, avoid: int = -1) -> None:
        """Send (or re-send) a task to an executor and await its reply in the background."""
        if task.task_id not in self.tasks:
            return  # applied meanwhile (a delayed re-issue)
        assert self._done is not None
        client = task.client
        self._active[client] = task.task_id
        e = self.pick(client, avoid)
        if e < 0:
            self._done.put_nowait((NO_EXECUTOR, client))
            return
        task.executor = e
        self._load[e] += 1
        if task.seq < 0:
            task.seq = self._next_seq
            self._next_seq += 1
        if self._max_batch > 1:
            self._outbox[e].append((task, task.attempt))
            if not self._flush_due:
                # After the loop's current step: the replies it is applying create more
                # tasks, which join this call.
                self._flush_due = True
                asyncio.get_running_loop().call_soon(self._flush)
            self._arm_timer(task)
            return
        payload = self._payload(task)
        task.sent_at = time.time()
        self._counters["executor_calls"] += 1
        ref = self._executors[e].submit.remote(self._wire_spec(task), payload)
        # The reply is taken from Ray's completion callback straight onto the loop: no
        # coroutine and asyncio task per call (profiled: that machinery cost more than
        # the server's own bookkeeping).
        ref.future().add_done_callback(
            functools.partial(self._from_ray, ref, task.task_id, task.attempt, e)
        )
        if self.emulate:
            self._expected[task.task_id] = self._emulated_end(task, self.free_at[client])
        self._arm_timer(task)

    def _wire_spec(self, task: Task) -> list[Any]:
        """The :class:`TaskSpec` fields of ``task``'s call, as a list.

        A list of ints and floats: Ray packs it with msgpack, whereas a tuple (a
        NamedTuple too) goes to its pickle fallback.
        """
        return [  # TaskSpec's fields, in order
            task.task_id,
            task.client,
            task.base_version,
            task.attempt,
            task.stamp,
            self.free_at[task.client],
            task.sample,
            task.ordinal,
        ]

    def _arm_timer(self, task: Task) -> None:
        # The timeout runs from the assignment, as an unbatched call's includes its wait
        # behind the calls queued at the executor.
        if math.isfinite(self._timeout):
            loop = asyncio.get_running_loop()
            task.timer = loop.call_later(
                self._timeout, self._on_timeout, task.task_id, task.attempt
            )

    def _flush(self) -> None:
        """Send each executor's outbox, up to ``max_batch`` tasks per call.

        An executor gets a new call only while it has fewer than
        :data:`CALLS_PER_EXECUTOR` outstanding. Entries whose task was applied meanwhile
        or re-issued since (a newer attempt exists) are dropped.
        """
        self._flush_due = False
        if self.health.stopped:
            return
        for e, outbox in enumerate(self._outbox):
            while outbox and self._calls[e] < CALLS_PER_EXECUTOR:
                batch: list[Task] = []
                while outbox and len(batch) < self._max_batch:
                    task, attempt = outbox.popleft()
                    if self.tasks.get(task.task_id) is task and task.attempt == attempt:
                        batch.append(task)
                    else:
                        self._load[e] -= 1
                if batch:
                    self._call(e, batch)

    def _call(self, e: int, batch: list[Task]) -> None:
        """One remote call carrying ``batch`` (tasks of distinct clients) to executor ``e``.

        Tasks that carry the same model version send it once: ``payloads`` holds each
        distinct model once and ``index[k]`` names task ``k``'s.
        """
        specs = []
        index: list[int] = []
        payloads: list[Any] = []
        seen: dict[int, int] = {}
        sent_at = time.time()
        for task in batch:
            specs.append(self._wire_spec(task))
            slot = seen.get(task.base_version)
            if slot is None:
                slot = seen[task.base_version] = len(payloads)
                payloads.append(self._payload(task))
            index.append(slot)
            task.sent_at = sent_at
        self._calls[e] += 1
        self._counters["executor_calls"] += 1
        # Models as trailing arguments: Ray resolves object-store references there (not
        # inside a list) before the call runs.
        ref = self._executors[e].submit_many.remote(specs, index, *payloads)
        members = [(task.task_id, task.attempt) for task in batch]
        ref.future().add_done_callback(functools.partial(self._from_ray_many, ref, members, e))

    def _from_ray_many(
        self,
        ref: Any,
        members: list[tuple[int, int]],
        executor: int,
        future: concurrent.futures.Future[Any],
    ) -> None:
        """A batched call completed (on a Ray thread): hand it to the loop (see _from_ray)."""
        arrived = time.time()
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._received_many, future, members, executor, arrived)
        except RuntimeError:  # the loop is closed: the run is over
            pass

    def _received_many(
        self,
        future: concurrent.futures.Future[Any],
        members: list[tuple[int, int]],
        executor: int,
        arrived: float,
    ) -> None:
        """Report each task of a completed batched call, as :meth:`_received` one call's.

        A lost call (dead executor) loses every task in it: each is reported LOST and
        re-issued once. A failed computation names the task that raised it.
        """
        self._calls[executor] -= 1
        if self.health.stopped or self._done is None:
            return
        done = self._done
        exc = future.exception()
        if exc is None:
            for reply in future.result():
                done.put_nowait((reply_from_wire(reply), executor, arrived))
        elif classify(exc) == "lost":
            for task_id, attempt in members:
                done.put_nowait((LOST, task_id, attempt, executor, exc))
            # Tasks assigned to this executor and not sent: to a healthy one, or parked.
            self._reassign(executor)
        else:
            cause = getattr(exc, "cause", None)
            task_id = getattr(cause, "raysync_task_id", members[0][0])
            done.put_nowait((FAILED, task_id, executor, exc))
        if self._outbox[executor] and not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _reassign(self, executor: int) -> None:
        """Move the unsent tasks of an executor that lost a call (they lose no attempt)."""
        outbox = self._outbox[executor]
        entries = list(outbox)
        outbox.clear()
        self._load[executor] -= len(entries)
        for task, attempt in entries:
            if self.tasks.get(task.task_id) is not task or task.attempt != attempt:
                continue
            if task.timer is not None:
                task.timer.cancel()
                task.timer = None
            if self._client_executor is None and any(
                self.health.healthy(e)
                for e in self._tier_executors[self._client_tier[task.client]]
                if e != executor
            ):
                self.send(task, avoid=executor)
            else:
                self.health.park(executor, task)

    def _from_ray(
        self,
        ref: Any,
        task_id: int,
        attempt: int,
        executor: int,
        future: concurrent.futures.Future[Any],
    ) -> None:
        """A call completed (on a Ray thread): hand it to the loop, stamped on arrival.

        ``ref`` is held here until the call completes. The arrival is stamped before the
        reply waits for the loop (that backlog is the server's, not the network's: see
        the server's lag).
        """
        arrived = time.time()
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._received, future, task_id, attempt, executor, arrived)
        except RuntimeError:  # the loop is closed: the run is over
            pass

    def _received(
        self,
        future: concurrent.futures.Future[Any],
        task_id: int,
        attempt: int,
        executor: int,
        arrived: float,
    ) -> None:
        """Report a completed call to the server's loop (ignored once the run stopped)."""
        if self.health.stopped or self._done is None:
            return
        exc = future.exception()
        if exc is not None:
            if classify(exc) == "lost":  # died, unreachable or restarted: re-issue
                self._done.put_nowait((LOST, task_id, attempt, executor, exc))
            else:  # the computation failed: a domain error ends the run
                self._done.put_nowait((FAILED, task_id, executor, exc))
            return
        self._done.put_nowait((reply_from_wire(future.result()), executor, arrived))

    def answered(self, reply: TaskReply, executor: int, arrived: float) -> Task | None:
        """A reply came back at ``arrived``: the task, or None when it is a late duplicate.

        The task keeps ``arrived`` for the real-delay measurement when the reply answers
        its latest attempt (an earlier attempt's reply, after a time-out re-issue, does
        not match the call time kept, so it is not measured).
        """
        self._load[executor] -= 1
        self.health.answered(executor)
        task = self.tasks.get(reply.task_id)
        if task is None or task.replied:
            self._counters["duplicates_dropped"] += 1
            return None
        task.replied = True
        if reply.attempt == task.attempt and not math.isnan(reply.received_at):
            task.arrived_at = arrived
        if task.timer is not None:
            task.timer.cancel()
        self._expected.pop(reply.task_id, None)
        return task

    def take(self, task_id: int) -> Task:
        """Remove an answered task for applying it."""
        return self.tasks.pop(task_id)

    def expected_bound(self) -> float:
        """Emulated service times: the earliest a task not answered yet can end.

        A wall-clock instant (``time.time()``; inf: no task is left). A task sent ends at
        its expected end; one still on its emulated downlink starts no earlier than it
        arrives; one queued behind its client's task ends after that task.
        """
        bound = min(self._expected.values(), default=math.inf)
        for task_id in self._in_transit:
            task = self.tasks.get(task_id)
            if task is not None:
                bound = min(bound, task.stamp)
        return bound

    def _emulated_end(self, task: Task, free_at: float) -> float:
        """``task``'s emulated end when its client is free from ``free_at`` (FIFO)."""
        return max(task.stamp, free_at) + task.sample * self._scale

    def due_by(self, deadline: float) -> int:
        """Emulated service times: the tasks not answered yet that end by ``deadline``.

        ``deadline`` is a wall-clock instant (``time.time()``). A task sent ends at its
        expected end; the tasks queued behind it and those still on their emulated
        downlink (in arrival order) end as the simulator would end them, each
        ``sample x time_scale`` after the later of its arrival and its client's
        previous end. 0 without emulation.
        """
        if not self.emulate:
            return 0
        free = list(self.free_at)
        count = 0
        for task_id, end in self._expected.items():
            task = self.tasks.get(task_id)
            if task is not None and not task.replied:
                free[task.client] = end
                count += end <= deadline
        travelling = (self.tasks.get(task_id) for task_id in self._in_transit)
        arriving = sorted(
            (t for t in travelling if t is not None), key=lambda t: (t.stamp, t.task_id)
        )
        later = [task for queue in self._queues.values() for task in queue] + arriving
        for task in later:
            end = self._emulated_end(task, free[task.client])
            free[task.client] = end
            count += end <= deadline
        return count

    # ------------------------------------------------------------------ faults

    def _on_timeout(self, task_id: int, attempt: int) -> None:
        """A task took longer than ``run.task_timeout``: re-issue it to the same client."""
        task = self.tasks.get(task_id)
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
        self.send(task, avoid=task.executor)

    def lost(self, task_id: int, attempt: int, executor: int, exc: BaseException) -> None:
        """An executor died (or is unreachable) with a task in flight: re-issue the task.

        Raises:
            RuntimeFailure: The task was lost more often than restarts can explain.
        """
        self._load[executor] -= 1
        if self.health.lost(executor, exc):
            logger.warning(
                "executor %d lost task %d (%s: %s); re-issuing its tasks",
                executor,
                task_id,
                type(exc).__name__,
                first_line(exc),
            )
        task = self.tasks.get(task_id)
        if task is None or task.attempt != attempt:
            return  # applied already, or a newer attempt is in flight
        if task.timer is not None:
            task.timer.cancel()
            task.timer = None
        if task.attempt >= self._max_loss_attempts:
            raise RuntimeFailure(
                f"{self._label(task.client)}'s task {task_id} was lost {task.attempt + 1} "
                f"times (last: {type(exc).__name__}: {first_line(exc)}); its executor died "
                "and could not be restarted (runtime.max_restarts = "
                f"{self._config.runtime.max_restarts}). Check the node's memory and logs "
                "(`ray status`, `ray logs`) and resume from the last checkpoint"
            ) from exc
        task.attempt += 1
        self._counters["reissued_tasks"] += 1
        health = self.health
        healthy = self._client_executor is None and any(
            health.healthy(e) for e in self._tier_executors[self._client_tier[task.client]]
        )
        if healthy:
            self.send(task, avoid=executor)
        elif health.dead[executor]:
            self.send(task)  # another executor of the tier, or the run ends
        else:
            # No healthy executor can serve it: wait for this one's probe (it answers
            # after Ray restarted it, or is declared dead), however long a restart takes.
            health.park(executor, task)

    def _back(self, executor: int) -> None:
        if self.rejoin_hook is not None:
            self.rejoin_hook(executor)
        for task in self.health.take_parked(executor):
            self.send(task)

    def _dead(self, executor: int) -> None:
        self._counters["executors_dead"] += 1
        clients = (
            [c for c, e in enumerate(self._client_executor) if e == executor]
            if self._client_executor is not None
            else [c for c, t in enumerate(self._client_tier) if t in self._tiers_of(executor)]
        )
        if clients and self.pick(clients[0], -1) < 0 and self._done is not None:
            self._done.put_nowait((NO_EXECUTOR, clients[0]))
            return
        for task in self.health.take_parked(executor):
            self.send(task)

    def _tiers_of(self, executor: int) -> set[int]:
        return {t for t, members in enumerate(self._tier_executors) if executor in members}

    def who_died(self, client: int) -> str:
        """Names the executors a client has lost (for the out-of-restarts message)."""
        if self._client_executor is not None:
            return f"{self._label(client)}'s executor"
        tier = self._client_tier[client]
        k = len(self._tier_executors[tier])
        return f"all {k} executor(s) of tier {tier} (serving {self._label(client)})"

    def stop(self) -> None:
        """Cancel every reply waiter, probe and timer (the run is over)."""
        self.health.stopped = True
        for waiter in self.health.probes():
            waiter.cancel()
        for task in self.tasks.values():
            if task.timer is not None:
                task.timer.cancel()
        for handle in self._in_transit.values():
            handle.cancel()
        self._in_transit.clear()
        for outbox in self._outbox:
            outbox.clear()
        self._version_wire = None

    # ------------------------------------------------------------------ checkpoints

    def capture(self) -> dict[str, Any]:
        """The clients' state and the tasks not applied (with the models they carry)."""
        pending = sorted(self.tasks.values(), key=lambda t: t.task_id)
        base_params: dict[str, np.ndarray] = {}
        for task in pending:
            if task.params is not None and str(task.base_version) not in base_params:
                base_params[str(task.base_version)] = task.params
        unconsumed = [d.state()["pending"] for d in self._draws]
        lengths = np.array([len(p) for p in unconsumed], dtype=np.int64)
        flat = [v for p in unconsumed for v in p]
        columns = {
            "task_id": (np.int64, lambda t: t.task_id),
            "client": (np.int64, lambda t: t.client),
            "base_version": (np.int64, lambda t: t.base_version),
            "created": (np.float64, lambda t: t.created),
            "sample": (np.float64, lambda t: t.sample),
            "ordinal": (np.int64, lambda t: t.ordinal),
        }
        assert tuple(columns) == PENDING_COLUMNS
        return {
            Key.NEXT_TASK_ID: self.next_task,
            Key.BASE_PARAMS: base_params,
            Key.PENDING: {
                name: np.array([get(t) for t in pending], dtype=dtype)
                for name, (dtype, get) in columns.items()
            },
            Key.ORDINALS: np.array(self._ordinals, dtype=np.int64),
            Key.SERVICE_RNG: pack_generators(self._service_rngs),
            Key.SERVICE_PENDING: np.array(flat, dtype=np.float64),
            Key.SERVICE_PENDING_LEN: lengths,
        }

    def restore(self, state: Mapping[str, Any], train: bool) -> None:
        """Continue from :meth:`capture`'s entries (validated by the coordinator)."""
        n = len(self._draws)
        self.next_task = int(state[Key.NEXT_TASK_ID])
        self._ordinals = [int(v) for v in state[Key.ORDINALS]]
        unpack_generators(np.asarray(state[Key.SERVICE_RNG]), self._service_rngs)
        flat = np.asarray(state[Key.SERVICE_PENDING], dtype=np.float64).tolist()
        offsets = np.concatenate([[0], np.cumsum(state[Key.SERVICE_PENDING_LEN])]).astype(int)
        for i in range(n):
            self._draws[i].load(
                {
                    "rng": self._service_rngs[i].bit_generator.state,
                    "pending": flat[offsets[i] : offsets[i + 1]],
                }
            )
        base_params = state.get(Key.BASE_PARAMS) or {}
        pending = state[Key.PENDING]
        for j in range(len(pending["task_id"])):
            version = int(pending["base_version"][j])
            base: np.ndarray | None = None
            if train:
                base = np.array(base_params[str(version)], dtype=np.float32)
                base.setflags(write=False)
            self._restored.append(
                Task(
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

    def resume(self, stamp: float) -> int:
        """Re-issue the restored pending tasks with their ids; return how many."""
        count = len(self._restored)
        for task in self._restored:
            task.stamp = stamp
            self.tasks[task.task_id] = task
            self._enqueue(task)
        self._restored = []
        return count
