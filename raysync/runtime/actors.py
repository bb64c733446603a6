"""The server and client actors of the Ray runtime (private: the coordinator owns them).

Neither class is decorated: the coordinator wraps them with ``ray.remote`` and sets every
resource explicitly through ``.options(...)`` (``num_cpus`` always, ``num_gpus`` and custom
``resources`` from each :class:`~raysync.config.ClientSpec`).

**Client actor** (:class:`ClientActor`). A plain synchronous actor with
``max_concurrency=1``: it executes one ``submit`` call at a time, and Ray executes the
calls of one caller on such an actor in submission order. The server is the only caller,
so the client serves its tasks first in, first out, in dispatch order: a client's queue in
THEORY.md is exactly the actor's pending calls. Per task it runs
:func:`raysync.client.run_client_work` on the model version the task carries (one
minibatch gradient, or local steps), then, when emulation is on, sleeps until the task has
lasted its sampled service time times ``run.time_scale`` (the sleep only blocks this
client's own actor). The client keeps an emulated FIFO clock (see
:meth:`ClientActor.submit`) so that Ray's per-call overhead does not lengthen the emulated
service times. The measured service time is ``max(compute, scaled sample)``; both it and
the compute time go back with the result.
Torch is limited to ``max(1, int(num_cpus))`` threads per client so that co-located
clients do not oversubscribe the cores they reserved. A client with ``num_gpus > 0``
computes on CUDA when the device is visible and falls back to the CPU with a warning.

**Server actor** (:class:`ServerActor`). An asyncio actor that owns the model, its
version, the router and the strategy, and keeps exactly ``C`` tasks in flight. Each
update costs one remote call: ``client.submit.remote(...)`` returns the result itself.
Completed calls are awaited as they finish and consumed in completion order:
``strategy.apply`` (which may bump the version), then ``router.route`` names the client of
the one replacement task, which carries the model current after the update (the call
order of :class:`~raysync.strategies.BaseStrategy` and
:class:`~raysync.routing.BaseRouter`, identical to the simulator). A model version below
:data:`~raysync.runtime._backend.INLINE_PARAMS_BYTES` travels inline in each call; a larger
one is ``ray.put`` once and its reference shared by every task of that version. Every task
has an id; a reply whose id is not in flight (a duplicate) is dropped, so client work may
be retried. Evaluation runs in one background thread on a snapshot of the model, so the
dispatch loop keeps going meanwhile.

Random streams follow the simulator (:func:`raysync.simulation.run_generators`): client
``i`` draws its service times from child ``(0, i)`` of ``SeedSequence(seed)`` in the
simulator's blocks, its minibatches from ``(1, i)``, and the router uses ``(2,)``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray

from raysync.config import ClientSpec, SystemConfig
from raysync.exceptions import RaySyncError, RuntimeFailure
from raysync.runtime._backend import (
    INLINE_PARAMS_BYTES,
    EvalPoint,
    ServerBook,
    ServerOutcome,
    TaskReply,
    wall_seconds,
)
from raysync.strategies._base import ClientResult, ClientWork

__all__ = ["ClientActor", "ClientSetup", "ServerActor", "ServerSetup"]

logger = logging.getLogger(__name__)

_FAILED = object()
_DEADLINE = object()
_STOP = object()


@dataclass(frozen=True, kw_only=True, eq=False)
class ClientSetup:
    """What a client actor needs, shipped once at construction.

    Attributes:
        client_id: Index of the client.
        spec: Its service time and resources.
        seed: The run's root seed.
        num_clients: ``n`` (to derive the same streams as the simulator).
        time_scale: Emulation factor (0: no emulation).
        train: Whether tasks compute anything.
        x: The client's inputs (None in queue-only runs).
        y: The client's labels.
        model: A :class:`~raysync.workload.ModelSpec` (None in queue-only runs).
    """

    client_id: int
    spec: ClientSpec
    seed: int
    num_clients: int
    time_scale: float
    train: bool
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    model: Any = None


def _torch_threads(num_cpus: float) -> int:
    return max(1, int(num_cpus))


class ClientActor:
    """One client: serves its tasks one at a time, first in, first out.

    Args:
        setup: Its data, model, service time and seeds.
    """

    def __init__(self, setup: ClientSetup) -> None:
        from raysync.simulation.engine import _DEFAULT_BLOCK, _service_stream, run_generators
        from raysync.simulation.service_times import make_service_time

        self._id = setup.client_id
        self._time_scale = float(setup.time_scale)
        self._train = setup.train
        gens = run_generators(setup.seed, setup.num_clients)
        service = make_service_time(setup.spec.service_time)
        self._service: Iterator[float] = _service_stream(
            service, gens.service[self._id], _DEFAULT_BLOCK
        )
        self._rng = gens.minibatch[self._id]
        self._x = setup.x
        self._y = setup.y
        self._free_at = 0.0  # wall-clock end of the previous task on the emulated clock
        self._device = "cpu"
        self._computer: Any = None
        if self._train:
            import torch

            torch.set_num_threads(_torch_threads(setup.spec.num_cpus))
            if setup.spec.num_gpus > 0:
                if torch.cuda.is_available():
                    self._device = "cuda"
                else:
                    message = (
                        f"client {self._id} requested num_gpus={setup.spec.num_gpus:g} but "
                        "CUDA is not available in its process; computing on the CPU"
                    )
                    warnings.warn(message, RuntimeWarning, stacklevel=2)
                    logger.warning(message)
            self._computer = setup.model.make_computer(device=self._device)

    def info(self) -> dict[str, Any]:
        """Where the client runs: node id, process id, torch device."""
        return {
            "client_id": self._id,
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "device": self._device,
        }

    def submit(
        self,
        task_id: int,
        version: int,
        params: np.ndarray | None,
        work: ClientWork | None,
        dispatched_at: float,
    ) -> TaskReply:
        """Serve one task: compute on the model it carries, then wait out its service time.

        Emulated clock (``time_scale > 0``): the task *arrives* at ``dispatched_at``, the
        wall-clock instant the server stamped on it (for a replacement task: the emulated
        end of the task whose completion triggered it), and its service *starts* at
        ``max(arrival, end of the previous task)``, first in, first out. It *ends* at
        ``start + max(scaled sample, compute time)``; the actor sleeps until then. So
        every task's emulated service time is exactly ``max(compute, scaled sample)``,
        and Ray's per-call overhead (about a millisecond per call, and the server's update)
        is absorbed by the waits instead of stretching the emulated cycle; when the
        overhead exceeds the slack the task returns late, but the lateness is not carried
        into the emulated timeline. Stamps from another node assume synchronised clocks.

        Args:
            task_id: The task's id (echoed back; the server drops duplicates).
            version: The model version ``params`` is (echoed back).
            params: The model (read-only flat float32), or None in queue-only runs.
            work: What to compute (None in queue-only runs).
            dispatched_at: Wall-clock instant (``time.time()``) of the dispatch.

        Returns:
            The reply, with the measured service and compute times.
        """
        begin = time.time()
        payload: np.ndarray | None = None
        loss = math.nan
        num_samples = 0
        if self._train and params is not None and work is not None:
            from raysync.client import run_client_work

            assert self._x is not None and self._y is not None
            output = run_client_work(self._computer, work, params, self._x, self._y, self._rng)
            payload, loss, num_samples = output.payload, output.loss, output.num_samples
        compute = time.time() - begin
        if self._time_scale > 0:
            start = max(min(dispatched_at, begin), self._free_at)
            service = max(next(self._service) * self._time_scale, compute)
            end = start + service
            remaining = end - time.time()
            if remaining > 0:
                time.sleep(remaining)
            self._free_at = end
        else:
            end = time.time()
            service = compute
        return TaskReply(
            task_id, self._id, version, payload, loss, num_samples, service, compute, end
        )


@dataclass(frozen=True, kw_only=True, eq=False)
class ServerSetup:
    """What the server actor needs, shipped once at construction.

    Attributes:
        config: The run's config.
        train: Whether to train (False: queue-only, the version advances per completion).
        initial_params: Initial flat float32 model (None in queue-only runs).
        model: :class:`~raysync.workload.ModelSpec` for evaluation (None: queue-only).
        x_test: Test inputs.
        y_test: Test labels.
        x_val: Validation inputs (may be empty).
        y_val: Validation labels.
        inline_bytes: Largest model sent inline with each task.
    """

    config: SystemConfig
    train: bool
    initial_params: np.ndarray | None = None
    model: Any = None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    inline_bytes: int = INLINE_PARAMS_BYTES


class ServerActor:
    """The central server: owns the model, applies updates, keeps ``C`` tasks in flight.

    Args:
        setup: Config, initial model and evaluation data.
        clients: Client actor handles, index ``i`` serving client ``i``.
    """

    def __init__(self, setup: ServerSetup, clients: Sequence[Any]) -> None:
        from raysync.routing import make_router
        from raysync.simulation.engine import run_generators
        from raysync.strategies import make_strategy

        config = setup.config
        self._setup = setup
        self._config = config
        self._clients = list(clients)
        n = config.num_clients
        self._router = make_router(config.routing)
        self._router.bind(n, run_generators(config.seed, n).router)
        self._strategy = None
        self._work: ClientWork | None = None
        self._params: np.ndarray | None = None
        if setup.train:
            import torch

            torch.set_num_threads(1)
            strategy = make_strategy(config.algorithm)
            strategy.bind(n, self._router.routing_probabilities())
            self._strategy = strategy
            self._work = strategy.client_work()
            params = np.array(setup.initial_params, dtype=np.float32)
            params.setflags(write=False)
            self._params = params
        self._book = ServerBook(n, config.run.num_updates)
        self._t0: float | None = None
        self._done: asyncio.Queue[tuple[Any, ...]] | None = None
        self._inflight: dict[int, tuple[int, int, Any]] = {}
        self._waiters: set[asyncio.Task[None]] = set()
        self._next_task = 0
        self._version_ref: tuple[int, Any] | None = None
        self._evals: list[EvalPoint] = []
        self._events: list[tuple[int, dict[str, float], float]] = []
        self._eval_pending = 0
        self._eval_seconds = 0.0
        self._duplicates = 0
        self._stop = False
        self._finished = False
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._eval_futures: list[asyncio.Future[tuple[EvalPoint, float]]] = []
        self._eval_computer: Any = None

    # ------------------------------------------------------------------ helpers

    def _now(self) -> float:
        assert self._t0 is not None
        return time.perf_counter() - self._t0

    def _payload(self) -> Any:
        """The current model as sent to clients: inline array, or one ref per version."""
        params = self._params
        if params is None:
            return None
        if params.nbytes < self._setup.inline_bytes:
            return params
        version = self._book.version
        if self._version_ref is None or self._version_ref[0] != version:
            self._version_ref = (version, ray.put(params))
        return self._version_ref[1]

    def _dispatch(self, client: int, now: float, stamp: float) -> None:
        task_id = self._next_task
        self._next_task += 1
        payload = self._payload()
        ref = self._clients[client].submit.remote(
            task_id, self._book.version, payload, self._work, stamp
        )
        self._inflight[task_id] = (client, self._book.version, now)
        self._book.dispatched(client, now)
        waiter = asyncio.ensure_future(self._await_reply(ref, task_id, client))
        self._waiters.add(waiter)
        waiter.add_done_callback(self._waiters.discard)

    async def _await_reply(self, ref: Any, task_id: int, client: int) -> None:
        assert self._done is not None
        try:
            reply = await ref
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # reported to the loop, which raises a domain error
            self._done.put_nowait((_FAILED, task_id, client, exc))
            return
        self._done.put_nowait((reply,))

    def _failure(self, task_id: int, client: int, exc: BaseException) -> RaySyncError:
        name = self._config.clients[client].name or f"client {client}"
        if isinstance(exc, ray.exceptions.RayTaskError):
            cause = getattr(exc, "cause", None)
            if isinstance(cause, RaySyncError):
                return type(cause)(f"{name} failed on task {task_id}: {cause}")
            return RuntimeFailure(
                f"{name} raised {type(cause or exc).__name__} on task {task_id}: "
                f"{cause or exc}. Fix the client's data or model configuration; the "
                "client's traceback is in the Ray worker logs"
            )
        if isinstance(exc, ray.exceptions.RayActorError):
            return RuntimeFailure(
                f"{name}'s actor died while serving task {task_id} ({type(exc).__name__}): "
                f"{str(exc).splitlines()[0] if str(exc) else 'no reason given'}. Check the "
                "node's memory and logs (`ray status`, `ray logs`) and run again; a client "
                "that cannot survive its node is not yet restarted automatically"
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
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="raysync-eval"
            )
        version = self._book.version
        params = self._params  # read-only snapshot: later updates make new arrays
        train_loss = self._book.pop_train_loss()
        loop = asyncio.get_running_loop()
        self._eval_pending += 1
        future = loop.run_in_executor(self._executor, self._evaluate, params, version, now)

        def done(fut: asyncio.Future[tuple[EvalPoint, float]]) -> None:
            # Runs on the event loop: no lock needed around the lists.
            self._eval_pending -= 1
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

    # ------------------------------------------------------------------ remote API

    async def run(self) -> ServerOutcome:
        """Run to the stop condition and return the measurements.

        Raises:
            RuntimeFailure: A client actor died or failed.
            RaySyncError: A client raised a domain error (re-raised with its name).
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
        next_eval_time = every_seconds
        self._t0 = time.perf_counter()
        if math.isfinite(budget):
            loop.call_at(loop.time() + budget, self._done.put_nowait, (_DEADLINE,))
        if self._params is not None:
            self._request_eval(0.0)
        stamp = time.time()
        for client in router.initial_clients(config.concurrency):
            self._dispatch(client, 0.0, stamp)
        emulate = run.time_scale > 0
        end_time = 0.0
        lag_sum, lag_max = 0.0, 0.0
        try:
            while not self._stop:
                item = await self._done.get()
                now = self._now()
                if item[0] is _DEADLINE:
                    end_time = budget
                    break
                if item[0] is _STOP:
                    end_time = now
                    break
                if item[0] is _FAILED:
                    _, task_id, client, exc = item
                    raise self._failure(task_id, client, exc) from exc
                reply: TaskReply = item[0]
                lag = time.time() - reply.finished_at
                lag_sum += lag
                lag_max = max(lag_max, lag)
                record = self._inflight.pop(reply.task_id, None)
                if record is None:
                    self._duplicates += 1
                    continue
                client, base_version, _ = record
                delay = book.version - base_version
                advanced = True
                if strategy is not None:
                    assert self._params is not None and reply.payload is not None
                    result = ClientResult(
                        task_id=reply.task_id,
                        client_id=client,
                        base_version=base_version,
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
                # With emulation the replacement is stamped as dispatched when the finished
                # task ended, so the return trip and the update do not stretch the emulated
                # cycle (the theory has no communication delay); see ClientActor.submit.
                self._dispatch(
                    router.route(client), now, reply.finished_at if emulate else time.time()
                )
                book.maybe_snapshot(now)
                end_time = now
                if self._params is not None:
                    if advanced and every_updates is not None and book.version % every_updates == 0:
                        self._request_eval(now)
                    elif now >= next_eval_time:
                        self._request_eval(now)
                    while next_eval_time <= now:
                        next_eval_time += every_seconds
                elif book.completions == book.snapshots.rows[-1][0]:
                    self._evals.append(
                        EvalPoint(now, book.version, math.nan, math.nan, math.nan, math.nan)
                    )
                if book.version >= max_updates:
                    break
        finally:
            for waiter in list(self._waiters):
                waiter.cancel()
            self._inflight.clear()
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
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._finished = True
        return ServerOutcome(
            rows=book.snapshots.rows,
            final_row=final_row,
            end_time=end_time,
            num_completions=book.completions,
            num_updates=book.version,
            max_delay=book.max_delay,
            evals=sorted(self._evals, key=lambda e: (e.version, e.time)),
            busy=book.busy[:],
            compute=book.compute[:],
            duplicates=self._duplicates,
            eval_seconds=self._eval_seconds,
            final_params=self._params,
            lag_mean=lag_sum / book.completions if book.completions else math.nan,
            lag_max=lag_max if book.completions else math.nan,
        )

    async def poll(self) -> tuple[int, float, list[tuple[int, dict[str, float], float]]]:
        """Progress and the metric events produced since the last poll.

        Returns:
            ``(version, seconds since start, events)``; each event is
            ``(step, scalars, time)``. Running measurements (throughput, staleness, queue
            lengths) are added only when no evaluation is pending, so steps never go back.
        """
        if self._t0 is None:
            return 0, 0.0, []
        now = self._now()
        events, self._events = self._events, []
        if self._eval_pending == 0 and not self._finished:
            live = self._book.live_scalars(now)
            if live:
                events.append((self._book.version, live, now))
        return self._book.version, now, events

    async def stop(self) -> None:
        """Ask the loop to stop after the completion it is processing."""
        self._stop = True
        if self._done is not None:
            self._done.put_nowait((_STOP,))
