"""Driver side of the Ray runtime: connect, check resources, own the actors, report.

:func:`run` is the entry point (re-exported as :func:`raysync.run`). It

1. reads and verifies the checkpoint to resume from, if any (before touching Ray);
2. connects to Ray (joins ``address``, reuses an initialised session, or starts a fresh
   local instance with ``address="local"`` that it shuts down at the end);
3. chooses how logical clients map onto executor actors (``runtime.mode``: one executor
   per client, or a pool of executors per resource tier) and checks that the cluster can
   ever hold them (:func:`check_resources`): some single alive node must offer each
   executor's whole request, and the cluster's totals must cover all executors at once;
4. builds an :class:`ActorGroup` (executor actors, then the server actor) with
   :meth:`ActorGroup.create`, which cleans up what it started if anything fails;
5. runs the server's loop, polling it twice a second for progress and metric events that
   it forwards to the sinks (sinks live on the driver: one TensorBoard writer per run);
6. kills every actor it created, on success, on error and on ``KeyboardInterrupt`` (Ctrl-C,
   and SIGTERM from the start-up on: a running loop is stopped, and checkpointed, first).

Callers never see actor handles or object references: they get a
:class:`~raysync.simulation.result.RunResult` with ``backend="ray"``, and domain errors
(:class:`~raysync.exceptions.ResourceUnavailableError`,
:class:`~raysync.exceptions.RuntimeFailure`, :class:`~raysync.exceptions.CheckpointError`)
that name the cause and the fix, raised from the Ray error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import filelock
import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from raysync._validation import same_directory
from raysync.config import SystemConfig
from raysync.exceptions import (
    CheckpointError,
    ConfigError,
    ResourceUnavailableError,
    RunInterrupted,
    RuntimeFailure,
)
from raysync.monitoring import MetricsSink
from raysync.placement import (
    ExecutorPlan,
    check_resources,
    choose_plan,
    client_request,
    executor_label,
    format_resources,
    plan_executors,
)
from raysync.runtime._backend import (
    FaultPlan,
    ServerOutcome,
    assemble_result,
    communication_scalars,
    wall_seconds,
)
from raysync.runtime._failures import translate
from raysync.runtime.actors import (
    Event,
    ExecutorActor,
    ExecutorSetup,
    ServerActor,
    ServerSetup,
    SyncExecutorActor,
)
from raysync.runtime.checkpoint import (
    MANIFEST,
    check_server_state,
    config_fingerprint,
    fingerprint_fields,
    peek_fingerprint,
    peek_version,
    read_checkpoint,
)
from raysync.simulation.engine import ProgressCallback, check_first_completion
from raysync.simulation.result import RunResult

if TYPE_CHECKING:
    from raysync.routing import BaseRouter
    from raysync.strategies import BaseStrategy
    from raysync.workload import Workload

__all__ = [
    "ActorGroup",
    "ClientPlacement",
    "ExecutorPlacement",
    "ExecutorPlan",
    "check_resources",
    "check_run_config",
    "choose_plan",
    "client_request",
    "plan_executors",
    "run",
]

logger = logging.getLogger(__name__)


def _alive_node_resources() -> list[dict[str, float]]:
    return [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]


@dataclass(frozen=True)
class ClientPlacement:
    """Where one client's executor runs (``per_client`` mode).

    Attributes:
        client_id: Index of the client.
        node_id: Hex id of the Ray node.
        pid: Process id of the actor.
        device: Torch device it computes on.
    """

    client_id: int
    node_id: str
    pid: int
    device: str


@dataclass(frozen=True)
class ExecutorPlacement:
    """Where one executor actor runs.

    Attributes:
        executor_id: Index of the executor.
        tier: Its tier.
        node_id: Hex id of the Ray node.
        pid: Process id of the actor.
        device: Torch device it computes on.
    """

    executor_id: int
    tier: int
    node_id: str
    pid: int
    device: str


class LiveEvents:
    """The server's running measurements, logged once per model version.

    A poll between two updates sees the version of the last one again, and a run's
    summary (logged by :func:`run` at its final version under the same tags) supersedes
    the measurement of that version: each is held until an event of a later version
    arrives, and the last one is dropped at the end when the summary takes its step.

    Args:
        sinks: Where to log.
    """

    def __init__(self, sinks: Sequence[MetricsSink]) -> None:
        self._sinks = sinks
        self._held: Event | None = None

    def offer(self, event: Event) -> None:
        """Hold ``event``; log the one held if it is of an earlier version."""
        held = self._held
        if held is not None and held[0] < event[0]:
            self._log(held)
        self._held = event  # the same version: the later measurement replaces it

    def flush(self, *, unless_step: int | None = None) -> None:
        """Log the event held, unless it is of version ``unless_step``."""
        held, self._held = self._held, None
        if held is not None and held[0] != unless_step:
            self._log(held)

    def _log(self, event: Event) -> None:
        _log_event(self._sinks, event)


def _log_event(sinks: Sequence[MetricsSink], event: Event) -> None:
    step, scalars, at = event
    for sink in sinks:
        sink.log_scalars(step, scalars, time=at)


class ActorGroup:
    """The executor actors and the server actor of one run, owned as a unit.

    Build it with :meth:`create`; always :meth:`shutdown` it (it is a context manager).
    Handles and object references never leave the group.
    """

    def __init__(
        self,
        server: Any,
        executors: list[Any],
        placements: list[ExecutorPlacement],
        plan: ExecutorPlan,
        dataset_ref: Any = None,
        checkpoint_dir: str | None = None,
    ) -> None:
        self._server = server
        self._executors = executors
        self._placements = placements
        self._plan = plan
        self._dataset_ref = dataset_ref
        self._checkpoint_dir = checkpoint_dir
        #: Set when an interruption found Ray's processes stopped (see _await_stop).
        self.ray_gone = False

    @property
    def placements(self) -> list[ExecutorPlacement]:
        """Where each executor runs (node id, process, device)."""
        return list(self._placements)

    @property
    def client_placements(self) -> list[ClientPlacement] | None:
        """``per_client`` mode: where each client's executor runs (else None)."""
        if self._plan.client_executor is None:
            return None
        return [
            ClientPlacement(
                client_id=i,
                node_id=self._placements[e].node_id,
                pid=self._placements[e].pid,
                device=self._placements[e].device,
            )
            for i, e in enumerate(self._plan.client_executor)
        ]

    @classmethod
    def create(
        cls,
        config: SystemConfig,
        *,
        workload: Workload | None,
        train: bool,
        plan: ExecutorPlan | None = None,
        startup_timeout: float = 600.0,
        server_num_cpus: float = 0.0,
        server_options: Mapping[str, Any] | None = None,
        faults: FaultPlan | None = None,
    ) -> ActorGroup:
        """Start the executor actors, wait until they are up, then start the server.

        Args:
            config: The run's config.
            workload: Data and model (None in queue-only runs).
            train: Whether tasks train.
            plan: The executors (default: :func:`plan_executors` for ``runtime.mode``,
                ``auto`` meaning ``per_client``).
            startup_timeout: Seconds to wait for every executor to start.
            server_num_cpus: CPUs reserved by the server actor (0: it mostly waits).
            server_options: Extra fields of the :class:`ServerSetup` (resume state,
                fingerprint, run name, ...).
            faults: Injected executor faults (tests only).

        Returns:
            The group, every actor alive.

        Raises:
            ResourceUnavailableError: Some executors did not start within the timeout.
            RuntimeFailure: An actor failed to start.
        """
        if plan is None:
            plan = plan_executors(config, "pool" if config.runtime.mode == "pool" else "per_client")
        executors: list[Any] = []
        server: Any = None
        dataset_ref: Any = None
        try:
            async_cls = ray.remote(ExecutorActor)
            sync_cls = ray.remote(SyncExecutorActor)
            if train and workload is not None:
                # One copy of the training set in the object store, shared read-only by
                # every executor on a node, with each client's rows and tier (constructor
                # arguments stay small: see ExecutorActor).
                x_train, y_train = workload.split("train")
                tier_of = np.asarray(plan.client_tiers, dtype=np.int64)
                dataset_ref = ray.put((x_train, y_train, workload.client_indices, tier_of))
            work = None
            if train:
                from raysync.strategies import make_strategy

                given = (server_options or {}).get("strategy")
                work = (given or make_strategy(config.algorithm)).client_work()
            for e, tier_index in enumerate(plan.executor_tiers):
                tier = plan.tiers[tier_index]
                spec = tier.spec
                setup = ExecutorSetup(
                    executor_id=e,
                    tier=tier_index,
                    client=plan.executor_clients[e][0] if plan.mode == "per_client" else None,
                    num_cpus=spec.num_cpus,
                    num_gpus=spec.num_gpus,
                    time_scale=config.run.time_scale,
                    train=train,
                    seed=config.seed,
                    model=workload.model if (train and workload is not None) else None,
                    work=work,
                    faults=faults,
                )
                # Without emulation an executor with one compute thread never waits:
                # a plain actor, one call at a time (SyncExecutorActor).
                one_thread = plan.mode == "per_client" or int(spec.num_cpus) <= 1
                sync = config.run.time_scale == 0 and one_thread
                executor_cls = sync_cls if sync else async_cls
                options: dict[str, Any] = {
                    "num_cpus": spec.num_cpus,
                    "num_gpus": spec.num_gpus,
                    "max_restarts": config.runtime.max_restarts,
                    "max_task_retries": 0,
                    "max_concurrency": 1 if sync else max(1000, 4 * config.concurrency),
                    # One task per update: Ray's per-task event records (state API,
                    # dashboard) would grow the GCS's memory with the run's length.
                    "enable_task_events": False,
                }
                if spec.resources:
                    options["resources"] = dict(spec.resources)
                executors.append(executor_cls.options(**options).remote(setup))
            shared = None if dataset_ref is None else [dataset_ref]
            refs = [x.prepare.remote(shared) for x in executors]
            ready, pending = ray.wait(refs, num_returns=len(refs), timeout=startup_timeout)
            if pending:
                pending_set = set(pending)
                late = [e for e, ref in enumerate(refs) if ref in pending_set]
                labels = ", ".join(executor_label(config, plan, e) for e in late[:5])
                more = f" and {len(late) - 5} more" if len(late) > 5 else ""
                raise ResourceUnavailableError(
                    f"{labels}{more} did not start within {startup_timeout:g} s: the cluster "
                    "cannot place them now (resources held by other work, or requests that "
                    "do not pack onto the nodes, e.g. "
                    f"{format_resources(plan.requests()[late[0]])}); free resources, "
                    "lower the requests or add nodes"
                )
            try:
                infos = ray.get(refs)
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as exc:
                raise translate(exc, "starting the executor actors") from exc
            placements = [
                ExecutorPlacement(
                    executor_id=int(info["executor_id"]),
                    tier=int(info["tier"]),
                    node_id=str(info["node_id"]),
                    pid=int(info["pid"]),
                    device=str(info["device"]),
                )
                for info in infos
            ]
            server_setup = _server_setup(
                config,
                workload,
                train,
                plan,
                {
                    **(server_options or {}),
                    "dataset": shared,
                    "executor_actor_ids": tuple(str(info["actor_id"]) for info in infos),
                    "executor_pids": tuple(int(info["pid"]) for info in infos),
                },
            )
            server = (
                ray.remote(ServerActor)
                .options(
                    num_cpus=server_num_cpus,
                    max_restarts=0,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(
                        node_id=ray.get_runtime_context().get_node_id(), soft=True
                    ),
                )
                .remote(server_setup, executors)
            )
            try:
                ray.get(server.poll.remote(), timeout=startup_timeout)
            except ray.exceptions.GetTimeoutError as exc:
                raise ResourceUnavailableError(
                    f"the server actor did not start within {startup_timeout:g} s "
                    f"(it requests CPU={server_num_cpus:g}); free resources on the driver's node"
                ) from exc
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as exc:
                raise translate(exc, "starting the server actor") from exc
        except BaseException:
            _kill([server, *executors] if server is not None else executors)
            raise
        return cls(
            server, executors, placements, plan, dataset_ref,
            checkpoint_dir=config.run.checkpoint_dir,
        )  # fmt: skip

    def run(
        self,
        *,
        sinks: Sequence[MetricsSink] = (),
        progress: ProgressCallback | None = None,
        poll_interval: float = 0.5,
    ) -> ServerOutcome:
        """Run the server's loop to its stop condition, forwarding progress and metrics.

        Raises:
            RuntimeFailure: An actor died or failed.
            RaySyncError: A client raised a domain error.
            RunInterrupted: Ctrl-C or SIGTERM, once the server loop stopped; with
                ``run.checkpoint_dir`` set, after the checkpoint of the version reached is
                written (:meth:`_stop_on_interrupt`).
        """
        run_ref = self._server.run.remote()
        live = LiveEvents(sinks)
        with _Signals() as received:
            try:
                while True:
                    ready, _ = ray.wait([run_ref], timeout=poll_interval)
                    version, now = self._forward_events(sinks, live)
                    if progress is not None:
                        progress(version, now)
                    if ready:
                        outcome: ServerOutcome = ray.get(run_ref)
                        # the run's summary is logged at its final version, under these tags
                        live.flush(unless_step=outcome.num_updates)
                        return outcome
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as exc:
                raise translate(exc, "running the server loop") from exc
            except KeyboardInterrupt:
                signum = received.cause()
                stopped_at = self._stop_on_interrupt(run_ref, sinks, live, signum)
                live.flush()
                written = stopped_at if self._checkpoint_dir is not None else None
                raise RunInterrupted(
                    self._checkpoint_dir, written, version=stopped_at, signum=signum
                ) from None

    def _forward_events(self, sinks: Sequence[MetricsSink], live: LiveEvents) -> tuple[int, float]:
        """Log the server's new metric events to ``sinks``; its version and seconds."""
        version, now, events, latest = ray.get(self._server.poll.remote())
        for event in events:
            _log_event(sinks, event)
        if latest is not None:
            live.offer(latest)
        return version, now

    def _stop_on_interrupt(
        self, run_ref: Any, sinks: Sequence[MetricsSink], live: LiveEvents, signum: int
    ) -> int | None:
        """Stop the server loop (and wait for its checkpoint); the version it stopped at.

        The loop stops after the update it is applying. With ``run.checkpoint_dir`` it then
        writes a checkpoint of that version, waited for at most
        :data:`INTERRUPT_CHECKPOINT_TIMEOUT` seconds; without, the wait is at most
        :data:`INTERRUPT_STOP_TIMEOUT` seconds. Stopping the loop before the actors are
        killed keeps the server from taking their deaths for failures (it would log
        "executor lost" and re-issue tasks). A second Ctrl-C or SIGTERM abandons the wait
        (None; the checkpoints on disk stay as they were: each is written atomically).
        The evaluations finished since the last poll are logged: they are in the
        checkpoint as done, so the resumed run will not log them.
        """
        if self._server is None:
            return None
        cause = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        checkpointing = self._checkpoint_dir is not None
        if checkpointing:
            logger.warning(
                "%s: writing a checkpoint of the updates applied so far to %s "
                "(Ctrl-C or SIGTERM again to stop waiting for it)",
                cause,
                self._checkpoint_dir,
            )
        timeout = INTERRUPT_CHECKPOINT_TIMEOUT if checkpointing else INTERRUPT_STOP_TIMEOUT
        try:
            self._server.interrupt.remote()
            outcome = self._await_stop(run_ref, timeout)
        except _RayGone:
            self.ray_gone = True
            logger.warning(
                "%s reached Ray's own processes too (the signal went to the whole process "
                "group, as `kill -- -PGID` and Slurm's scancel send it): %s",
                cause,
                "no checkpoint at the interruption; the last periodic one on disk is kept"
                if checkpointing else "the run ends here",
            )
            return None
        except KeyboardInterrupt:
            if checkpointing:
                logger.warning("interrupted again: not waiting for the checkpoint")
            return None
        except ray.exceptions.GetTimeoutError:
            what = "the checkpoint at the interruption was not written"
            logger.warning(
                "%s within %g s",
                what if checkpointing else "the server loop did not stop",
                timeout,
            )
            return None
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as exc:
            # e.g. the write failed: the user should see why, but the run stays interrupted
            logger.warning("no checkpoint at the interruption: %s", translate(exc, "stopping"))
            return None
        with contextlib.suppress(ray.exceptions.RayActorError, ray.exceptions.RayTaskError):
            self._forward_events(sinks, live)
        return int(outcome.num_updates)

    def _await_stop(self, run_ref: Any, timeout: float) -> ServerOutcome:
        """``ray.get(run_ref)`` within ``timeout`` s, checking each second that Ray is alive.

        A signal sent to the whole process group stops Ray's local processes too: the GCS
        is then gone, no reply or actor death can arrive, and Ray's core worker would abort
        this process after a minute of retries (exit 1, measured 60 s).

        Raises:
            _RayGone: This driver's GCS refuses connections.
            ray.exceptions.GetTimeoutError: ``timeout`` s passed.
        """
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                return ray.get(run_ref, timeout=max(min(1.0, left), 0.0))
            except ray.exceptions.GetTimeoutError:
                if not _gcs_alive():
                    raise _RayGone from None
                if left <= 1.0:
                    raise

    def shutdown(self) -> None:
        """Kill every actor of the group (idempotent; nothing to kill once Ray is gone)."""
        if not self.ray_gone:
            _kill([self._server, *self._executors])
        self._server = None
        self._executors = []
        self._dataset_ref = None

    def __enter__(self) -> ActorGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class _RayGone(Exception):
    """This driver's Ray instance stopped under it (its GCS refuses connections)."""


def _gcs_alive(timeout: float = 1.0) -> bool:
    """False only when this driver's GCS refuses connections (its process is gone).

    A connection that times out (a loaded machine, a remote head) counts as alive: only a
    refusal is proof.
    """
    try:
        target = _host_port(str(ray.get_runtime_context().gcs_address))
    except Exception:  # not connected: nothing to tell
        return True
    if target is None:
        return True
    try:
        with socket.create_connection(target, timeout=timeout):
            return True
    except ConnectionRefusedError:
        return False
    except OSError:
        return True


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``host:port`` or ``[v6]:port``; None without a numeric port."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _kill(handles: Sequence[Any]) -> None:
    for handle in handles:
        if handle is None:
            continue
        try:
            ray.kill(handle, no_restart=True)
        except Exception:  # already dead, or Ray is going away
            logger.debug("could not kill actor %r", handle, exc_info=True)


def _server_setup(
    config: SystemConfig,
    workload: Workload | None,
    train: bool,
    plan: ExecutorPlan,
    options: Mapping[str, Any],
) -> ServerSetup:
    common: dict[str, Any] = {
        "config": config,
        "mode": plan.mode,
        "executor_tiers": plan.executor_tiers,
        "client_tiers": plan.client_tiers,
        "client_executor": plan.client_executor,
        **options,
    }
    if not train or workload is None:
        return ServerSetup(train=False, **common)
    x_test, y_test = workload.split("test")
    x_val, y_val = workload.split("val")
    return ServerSetup(
        train=True,
        initial_params=workload.initial_params,
        model=workload.model,
        x_test=x_test,
        y_test=y_test,
        x_val=x_val,
        y_val=y_val,
        **common,
    )


#: What :func:`check_reachable` suggests when nothing listens (a ``run`` or ``tune`` flag).
_START_HINT = (
    "Start it with `ray start --head` (or check the address and the firewall), or omit "
    "--address to run on a local Ray instance"
)


def check_reachable(address: str, timeout: float = 5.0, *, fix: str = _START_HINT) -> None:
    """Fail fast when ``host:port`` is not a Ray endpoint (``ray.init`` would retry for minutes).

    Two bounded checks: a TCP connection, then a gRPC (HTTP/2) handshake, since Ray's GCS and
    its client server (``ray://``) both speak gRPC and ``ray.init`` hangs on a port where
    something else listens (a web server, a database). The handshake needs no
    credentials, so it passes on clusters with token authentication. Commands that write
    files before they join the cluster call this first, so a wrong address leaves nothing
    behind. ``"auto"``, ``"local"`` and addresses without a port are left to Ray, and so is
    the handshake when ``RAY_USE_TLS`` is set (the probe speaks plain gRPC).

    Args:
        address: A Ray address, ``host:port`` or ``ray://host:port``.
        timeout: Seconds to wait for the TCP connection, and again for the handshake.
        fix: The advice after "cannot reach" (the caller's flags differ).

    Raises:
        RuntimeFailure: Nothing accepts connections at ``host:port``, or what does is not a
            gRPC server.
    """
    target = address.removeprefix("ray://")
    host_port = _host_port(target)
    if host_port is None:
        return
    try:
        with socket.create_connection(host_port, timeout=timeout):
            pass
    except OSError as exc:
        raise RuntimeFailure(f"cannot reach the Ray cluster at {address!r} ({exc}). {fix}") from exc
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return
    if not _speaks_grpc(target, timeout):
        raise RuntimeFailure(
            f"{address!r} accepts connections but is not a Ray cluster (no gRPC handshake "
            f"within {timeout:g} s): give the head node's GCS address (`ray start --head` "
            "prints it, port 6379 by default) or its client address (ray://host:10001)"
        )


def _speaks_grpc(target: str, timeout: float) -> bool:
    """True when an HTTP/2 (gRPC) connection to ``target`` becomes ready within ``timeout`` s."""
    import grpc  # a dependency of ray[default]; imported here, where it is needed

    channel = grpc.insecure_channel(target)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        return False
    finally:
        channel.close()
    return True


def connect(address: str | None = None) -> bool:
    """Connect to Ray; return True when this call started a local instance.

    Without ``address`` a *fresh* local instance is started (``address="local"``), even
    when a cluster started with ``ray start --head`` runs on this machine (plain
    ``ray.init()`` would join that one and reject ``num_cpus``); only ``address`` joins a
    cluster.
    """
    if ray.is_initialized():
        if address is not None:
            logger.info("Ray is already initialised; ignoring address=%r", address)
        return False
    if address is not None:
        check_reachable(address)
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise RuntimeFailure(
                f"cannot connect to the Ray cluster at {address!r}: {exc}. Start it with "
                "`ray start --head` (or check the address), or omit --address to run locally"
            ) from exc
        return False
    with local_instance_settings():
        try:
            ray.init(
                address="local",
                include_dashboard=False,
                num_cpus=os.cpu_count() or 1,
                logging_level=logging.WARNING,
            )
        except BaseException:
            # Ctrl-C (or a failure) half-way through the start: the processes started so
            # far (dashboard and runtime-env agents) outlived the driver by a minute.
            ray.shutdown()
            raise
    return True


#: Ray reads this at import time: when false, a new local instance takes the loopback
#: address as its node IP, and its GCS, raylet, workers, agents and metrics endpoints
#: then listen on 127.0.0.1 only (Linux default: the machine's external address and
#: all interfaces).
_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def local_instance_settings() -> Iterator[None]:
    """Settings for starting a single-machine Ray instance: loopback only, private token.

    * Every Ray process started inside the block listens on the loopback interface only
      (GCS, raylet, core workers, dashboard agent, runtime-env agent and the metrics
      endpoints): nothing of a local run is reachable from the network. Ray takes the
      node's IP from ``ray._private.ray_constants.ENABLE_RAY_CLUSTER`` (the
      ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` variable, read when Ray is imported), so the
      block sets both and restores them after; child processes inherit the variable at
      start-up.
    * Ray's token authentication (on by default for new local instances) reads
      ``~/.ray/auth_token`` and, when it is missing, writes a new one readable by
      everyone; the block creates it first with mode 0600 (and narrows an existing
      token file of this user to 0600). The token is never logged.

    Multi-node clusters are started with ``ray start`` and joined with ``address``: this
    block is not used for them.
    """
    from ray._private import ray_constants

    ensure_private_token()
    previous_env = os.environ.get(_CLUSTER_ENV)
    previous_flag = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_CLUSTER_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = previous_flag
        if previous_env is None:
            os.environ.pop(_CLUSTER_ENV, None)
        else:
            os.environ[_CLUSTER_ENV] = previous_env


def ensure_private_token() -> Path | None:
    """Make Ray's default token file exist with mode 0600 (create it if missing).

    Nothing is done when token authentication is off (``RAY_AUTH_MODE=disabled``) or the
    token comes from ``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH``.

    Returns:
        The token file's path, or None when Ray does not read the default file.
    """
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return None
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return None
    path = Path.home() / ".ray" / "auth_token"
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            if path.stat().st_mode & 0o077 and path.stat().st_uid == os.getuid():
                path.chmod(0o600)
                logger.info("narrowed the permissions of %s to 0600", path)
        else:
            with os.fdopen(fd, "w") as handle:
                # Ray's own format: 256 random bits as hex.
                handle.write(secrets.token_hex(32))
    except OSError as exc:
        # Ray then creates the file itself; the run goes on, the user is told.
        logger.warning("could not create %s with mode 0600 (%s)", path, exc)
    return path


def run(
    config: SystemConfig,
    *,
    address: str | None = None,
    logdir: str | Path | None = None,
    sinks: Sequence[MetricsSink] = (),
    progress: ProgressCallback | None = None,
    run_name: str | None = None,
    workload: Workload | None = None,
    resume_from: str | Path | None = None,
    warmup_fraction: float = 0.1,
    num_batches: int = 30,
    confidence: float = 0.99,
    startup_timeout: float = 600.0,
    server_num_cpus: float = 0.0,
    poll_interval: float = 0.5,
    overwrite_checkpoint: bool = False,
    router: BaseRouter | None = None,
    strategy: BaseStrategy | None = None,
) -> RunResult:
    """Run an asynchronous FL system for real on Ray.

    Each logical client has its own resources, data partition, service-time distribution
    and random streams; it serves its tasks one at a time, first in, first out, on an
    executor actor: its own (``runtime.mode = "per_client"``) or one of a pool per
    resource tier (``"pool"``: thousands of clients on a few actors). The server actor
    applies every completed task with the config's strategy and dispatches the next one
    with its router, keeping ``config.concurrency`` tasks in flight (docs/theory.md section 1).
    With ``run.time_scale > 0`` each task lasts at least its sampled service time times
    ``time_scale`` (heterogeneity emulation); 0 runs at compute speed. Executors that die
    are restarted and their tasks re-issued; ``run.task_timeout`` re-issues stragglers;
    ``run.checkpoint_dir`` keeps checkpoints (at the end, at Ctrl-C and every
    ``run.checkpoint_every_updates`` updates) that ``resume_from`` continues.

    Args:
        config: The system to run. ``run.num_updates`` and ``run.time_budget`` stop it
            (the budget is in config seconds: ``time_budget * time_scale`` wall seconds
            with emulation; both count from the start of the original run when
            resuming). ``run.train = False`` runs queue-only (clients only wait).
        address: Ray cluster to join (``"auto"``, ``"ray://host:10001"``, ...). When
            None, an initialised Ray session is reused, otherwise a fresh local instance
            is started (and shut down at the end).
        logdir: Write TensorBoard events to ``logdir/<run_name>``.
        sinks: More metrics sinks (not closed here).
        progress: Called as ``progress(updates, seconds)`` about twice a second.
        run_name: TensorBoard run directory name (default: time, algorithm, ``C``; when
            resuming, the checkpointed run's name).
        workload: Prebuilt data and model (built from ``config`` when None and training).
        resume_from: A checkpoint directory (``run.checkpoint_dir`` of an earlier run of
            the same config) to continue from: model, version, statistics, random
            streams and the tasks pending at the checkpoint, re-issued with their ids.
        warmup_fraction: Fraction of completions dropped before measuring.
        num_batches: Batches of the batch-means confidence intervals.
        confidence: Level of the intervals.
        startup_timeout: Seconds to wait for the actors to start (default 600 s: requests
            that can never fit the cluster are refused up front by the resource check, so
            this only bounds waiting for resources held by other work; starting worker
            processes on a loaded 2-core machine took more than 120 s).
        server_num_cpus: CPUs the server actor reserves (default 0: it mostly waits on
            the network; set 1 on a busy cluster to keep a core for it).
        poll_interval: Seconds between progress polls.
        overwrite_checkpoint: Let a fresh run replace the checkpoint that
            ``run.checkpoint_dir`` already holds (default: refused, so that no
            checkpoint is lost silently; resuming from that directory is always allowed).
        router: Router to use instead of ``make_router(config.routing)`` (e.g. an adaptive
            one), exactly as :func:`~raysync.simulation.simulate` takes it: unbound, it is
            pickled to the server actor and bound there.
        strategy: Strategy to use instead of ``make_strategy(config.algorithm)``, likewise.

    Returns:
        A :class:`~raysync.simulation.result.RunResult` with ``backend="ray"``; times are
        wall-clock seconds. ``extras`` holds ``runtime_mode``, ``executor_nodes``
        (``client_nodes`` and ``client_devices`` in ``per_client`` mode), measured
        ``service_time_mean`` and ``compute_time_mean`` per client (wall seconds),
        ``time_scale`` and ``throughput_config_units`` (throughput per config second,
        comparable with the theory and the simulator), and the fault counters
        ``reissued_tasks``, ``timed_out_tasks``, ``duplicates_dropped``,
        ``actor_restarts``, ``checkpoints_written`` and ``task_ids`` (``next``: ids
        below it were created; ``pending``: those not applied; every other id was
        applied exactly once), ``executor_calls``, the remote calls made to
        executors (one per task sent; fewer with ``runtime.max_batch > 1``), and with
        emulated service times ``compute_bound_tasks`` (tasks whose computation outlasted
        their scaled service time: the emulated clock fell behind by the excess),
        ``compute_bound_past_budget`` (tasks such computation took past
        ``run.time_budget``: the simulator applies them, the run does not),
        ``late_replies_applied`` (tasks that ended by ``run.time_budget``, applied after
        its instant) and ``late_replies_given_up`` (tasks that ended by it and were not
        applied: nothing came for ``DEADLINE_GRACE`` = 10 wall seconds, a lost or
        stalled executor).

    Raises:
        ConfigError: A bad argument.
        CheckpointError: ``resume_from`` is missing, corrupt, from another config, or
            already at or past the run's target (``run.num_updates``, ``run.time_budget``);
            or ``run.checkpoint_dir`` holds a checkpoint that a fresh run would replace.
        ResourceUnavailableError: The cluster can never hold a client's request, or all
            executors together, or the actors did not start in time.
        RuntimeFailure: An executor could not be restarted or a client failed; the
            message names the fix.
        RunInterrupted: Ctrl-C (a ``KeyboardInterrupt``), or SIGTERM from Ray's start-up
            on (``signum`` says which; from the main thread only, as Python's signals go).
            The server first stops after the update it is applying (``version``); with
            ``run.checkpoint_dir`` set it writes a checkpoint of that version
            (``checkpoint_version``), so ``resume_from`` loses nothing; a second Ctrl-C
            stops waiting for it.
    """
    result, _ = _execute(
        config,
        address=address,
        logdir=logdir,
        sinks=sinks,
        progress=progress,
        run_name=run_name,
        workload=workload,
        resume_from=resume_from,
        warmup_fraction=warmup_fraction,
        num_batches=num_batches,
        confidence=confidence,
        startup_timeout=startup_timeout,
        server_num_cpus=server_num_cpus,
        poll_interval=poll_interval,
        overwrite_checkpoint=overwrite_checkpoint,
        router=router,
        strategy=strategy,
    )
    return result


def _absolute_checkpoint_dir(config: SystemConfig) -> SystemConfig:
    """The config with ``run.checkpoint_dir`` made absolute (the server's cwd may differ)."""
    directory = config.run.checkpoint_dir
    if directory is None or os.path.isabs(directory):
        return config
    run_cfg = dataclasses.replace(config.run, checkpoint_dir=str(Path(directory).resolve()))
    return config.replace(run=run_cfg)


def _check_checkpoint_dir(
    config: SystemConfig,
    resume_from: str | Path | None,
    overwrite: bool,
    fingerprint: str | None = None,
) -> None:
    """Refuse a ``run.checkpoint_dir`` that is a file, in use, or whose checkpoint would be lost.

    A fresh run writes its first checkpoint over the one already in the directory; that
    is refused unless the run resumes from this very directory or ``overwrite`` is set.
    A directory another run holds (:data:`RUN_LOCK`) is named as such first: resuming it
    would be refused too. ``fingerprint`` (the run's :func:`config_fingerprint`) tells a
    checkpoint of this config, which can be resumed, from another config's.

    Raises:
        ConfigError: The path exists and is not a directory.
        CheckpointError: Another run holds it, or it holds a checkpoint and the run would
            replace it.
    """
    directory = config.run.checkpoint_dir
    if directory is None:
        return
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"run.checkpoint_dir must be a directory, got {directory!r}, which is a file"
        )
    if _held_by_another_run(path):
        raise _in_use("run.checkpoint_dir", directory)
    if overwrite or not (path / MANIFEST).is_file():
        return
    if resume_from is not None and same_directory(resume_from, path):
        return
    version = peek_version(path)
    shown = "unknown" if version is None else version
    saved = peek_fingerprint(path)
    if fingerprint is not None and saved is not None and saved != fingerprint:
        raise CheckpointError(
            f"run.checkpoint_dir {directory!r} already holds a checkpoint of another config "
            f"(version {shown}) that this run would overwrite; choose another "
            "run.checkpoint_dir, or pass --overwrite-checkpoint (raysync.run: "
            "overwrite_checkpoint=True)"
        )
    raise CheckpointError(
        f"run.checkpoint_dir {directory!r} already holds a checkpoint "
        f"(version {shown}) "
        f"that this run would overwrite; resume it (--resume {directory}), choose another "
        "run.checkpoint_dir, or pass --overwrite-checkpoint (raysync.run: "
        "overwrite_checkpoint=True)"
    )


def _try_lock(directory: Path) -> filelock.BaseFileLock | None:
    """``directory``'s :data:`RUN_LOCK`, acquired; None when a running run holds it.

    Raises:
        OSError: The lock file cannot be created or opened.
    """
    lock = filelock.FileLock(directory / RUN_LOCK, timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        return None
    return lock


def _held_by_another_run(directory: Path) -> bool:
    """Whether a running run holds ``directory``'s :data:`RUN_LOCK` (a dead one's is free)."""
    if not (directory / RUN_LOCK).is_file():
        return False
    try:
        probe = _try_lock(directory)
    except OSError:
        return False  # unreadable: the lock taken for the run says why, if it matters
    if probe is None:
        return True
    probe.release()
    return False


def _in_use(what: str, directory: str | Path) -> CheckpointError:
    return CheckpointError(
        f"{what} {str(directory)!r} is in use by another run (it holds {RUN_LOCK} locked); "
        "wait for that run to end or stop it"
        + (", or choose another run.checkpoint_dir" if what == "run.checkpoint_dir" else
           ": resuming it now would continue the same updates twice")
    )


class _Signals:
    """Raise ``KeyboardInterrupt`` on SIGTERM while entered, as Ctrl-C does; count them.

    So a ``kill``, ``ray job stop`` or a scheduler's pre-emption stops (and checkpoints)
    the run instead of losing it: ``ray.init`` makes SIGTERM ``sys.exit``, and the core
    worker it starts installs a handler that dumps a C++ stack and aborts. The count says
    which signal a ``KeyboardInterrupt`` stands for: Ray's blocking calls catch any
    ``KeyboardInterrupt`` raised by a handler and raise a plain one in its place, so the
    exception itself cannot carry it. Handlers can only be set from the main thread;
    elsewhere nothing changes. Leaving restores the handler found on entering.
    """

    def __init__(self) -> None:
        self.terminated = 0
        self._active = False
        self._previous: Any = None

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGTERM)
            self._active = True
            self.install()
        return self

    def install(self) -> None:
        """(Re)install the handler: ``ray.init`` replaces it with its own."""
        if self._active:
            signal.signal(signal.SIGTERM, self._handler)

    def _handler(self, signum: int, frame: Any) -> None:
        self.terminated += 1
        raise KeyboardInterrupt

    def __exit__(self, *exc_info: object) -> None:
        if self._active:
            previous = self._previous
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
            self._active = False

    def cause(self) -> int:
        """The signal the block's ``KeyboardInterrupt`` stands for."""
        return signal.SIGTERM if self.terminated else signal.SIGINT


#: The file in ``run.checkpoint_dir`` a run holds locked while it runs.
RUN_LOCK = "run.lock"


def _lock_checkpoint_dir(directory: str | None) -> filelock.BaseFileLock | None:
    """Lock ``run.checkpoint_dir`` for this run (None without one).

    Two runs checkpointing into one directory (a job started twice, two resumes of one
    checkpoint) would overwrite each other's checkpoints. The lock is the operating
    system's (``flock``, through :mod:`filelock`): it is released when the run ends, and
    by the OS if the driver dies, so a killed run never leaves the directory locked.

    Raises:
        ConfigError: The directory cannot be created.
        CheckpointError: Another run holds it.
    """
    if directory is None:
        return None
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"run.checkpoint_dir {directory!r} cannot be created ({exc.strerror or exc})"
        ) from exc
    try:
        lock = _try_lock(path)
    except OSError as exc:
        raise ConfigError(
            f"run.checkpoint_dir {directory!r} cannot be locked ({exc.strerror or exc})"
        ) from exc
    if lock is None:
        raise _in_use("run.checkpoint_dir", directory)
    return lock


#: Seconds :class:`ActorGroup` waits, after Ctrl-C, for the server's checkpoint of the
#: version reached (the loop stops after one update; the write is one model and the state).
INTERRUPT_CHECKPOINT_TIMEOUT = 120.0

#: Seconds :class:`ActorGroup` waits, after Ctrl-C without ``run.checkpoint_dir``, for
#: the server loop to stop (it stops after one update) before the actors are killed.
INTERRUPT_STOP_TIMEOUT = 10.0

#: Longest wall-clock time budget or task timeout a run accepts (about 31.7 years): a
#: run asked to last longer could never end.
MAX_WALL_SECONDS = 1e9

#: Bytes the server actor keeps per task created and not applied (its ``Task`` record, the
#: task table's entry and its place in the client's queue): an upper bound of the 325 that
#: tracemalloc measured (2026-12-05, tests/runtime_tests/test_task_memory.py).
RUNTIME_TASK_BYTES = 400

#: Shortest wall-clock task timeout a run accepts: about the latency of one Ray call, so
#: a shorter one would fire while replies are still in transit and re-issue every task.
MIN_TASK_TIMEOUT = 1e-3


def _longest_mean(spec: Any) -> float:
    """The longest mean service time of a spec (of any segment for ``schedule``)."""
    if spec.kind == "schedule":
        return max(_longest_mean(seg) for seg in spec.segments)
    return float(spec.mean_duration)


def _check_task_waits(config: SystemConfig) -> None:
    """Refuse an emulation in which one mean task would outlast :data:`MAX_WALL_SECONDS`.

    Each task lasts ``time_scale`` times its service and transit times. The budget is
    capped at :data:`MAX_WALL_SECONDS` wall seconds, so no run could see such a task
    complete, and a run without a budget would wait for it forever.
    """
    from raysync.queueing.predict import station_parameters

    scale = config.run.time_scale
    latency, server_rate = station_parameters(config)
    seen: dict[int, float] = {}  # ``count`` tables share one spec
    for c in config.clients:
        if id(c.service_time) not in seen:
            seen[id(c.service_time)] = _longest_mean(c.service_time)
    means = np.array([seen[id(c.service_time)] for c in config.clients])
    if latency is not None:
        means = means + latency
    i = int(np.argmax(means))
    longest, what = float(means[i]), f"a mean task of clients[{i}] (service and transit"
    if server_rate is not None and 1.0 / server_rate > longest:
        longest, what = 1.0 / server_rate, "a mean server update (server.update_time"
    wall = longest * scale
    if wall > MAX_WALL_SECONDS:
        shown = f"{wall:.3g}" if math.isfinite(wall) else "beyond 1.8e308"
        raise ConfigError(
            f"run.time_scale = {scale:g} makes {what}: {longest:.3g} config seconds) last "
            f"{shown} wall seconds, more than the {MAX_WALL_SECONDS:.0e} (31.7 years) a run "
            "can last; set a smaller run.time_scale or faster service times"
        )


def _check_run_clock(config: SystemConfig) -> None:
    """Refuse time-like ``[run]`` fields the wall clock cannot honour, before Ray starts.

    Raises:
        ConfigError: ``time_budget``, ``task_timeout`` or ``eval_every_seconds`` times
            ``time_scale`` overflows; a budget or timeout longer than
            :data:`MAX_WALL_SECONDS`; a timeout shorter than :data:`MIN_TASK_TIMEOUT`;
            a mean emulated task longer than :data:`MAX_WALL_SECONDS`; without a budget,
            more task completions than the simulator allows; more evaluations than
            the simulator allows; or more tasks in flight than the server's memory holds
            (:data:`RUNTIME_TASK_BYTES` each).
    """
    from raysync.queueing.predict import buffer_size
    from raysync.simulation.engine import (
        MAX_SIMULATED_COMPLETIONS,
        check_evaluations,
        check_task_memory,
    )

    run = config.run
    scale = f" x run.time_scale = {run.time_scale:g}" if run.time_scale > 0 else ""
    for name in ("time_budget", "task_timeout", "eval_every_seconds"):
        value = getattr(run, name)
        if value is None:
            continue
        wall = wall_seconds(value, run.time_scale)
        if not math.isfinite(wall):
            raise ConfigError(
                f"run.{name} = {value:g} config seconds{scale} overflows the clock "
                f"(beyond 1.8e308 wall seconds); set a smaller run.{name} or time_scale"
            )
        if name != "eval_every_seconds" and wall > MAX_WALL_SECONDS:
            raise ConfigError(
                f"run.{name} = {value:g} config seconds{scale} is {wall:.3g} wall seconds, "
                f"more than the {MAX_WALL_SECONDS:.0e} (31.7 years) a run can last; set a "
                f"smaller run.{name}"
                + (" or leave it out (no timeout)" if name == "task_timeout" else "")
            )
        if name == "task_timeout" and wall < MIN_TASK_TIMEOUT:
            raise ConfigError(
                f"run.task_timeout = {value!r} config seconds{scale} is {wall:.3g} wall "
                f"seconds, less than the {MIN_TASK_TIMEOUT:g} s a run accepts (about one Ray "
                "call: every task would time out and be re-issued at once); set a larger "
                "run.task_timeout or leave it out (no timeout)"
            )
        if name == "time_budget" and wall < MIN_TASK_TIMEOUT:
            # Ray started for a run over before one call could return (the simulator
            # refuses it only after simulating: no task completed)
            raise ConfigError(
                f"run.time_budget = {value!r} config seconds{scale} is {wall:.3g} wall "
                f"seconds, less than the {MIN_TASK_TIMEOUT:g} s a run accepts (about one Ray "
                "call: no task could complete); set a longer run.time_budget"
            )
    if run.time_scale > 0:
        _check_task_waits(config)
    buffer = buffer_size(config)
    # Without a budget the run waits for every update; a budget ends it anyway, as in the
    # simulator, which refuses the same count only when the updates bind.
    if run.num_updates is not None and run.time_budget is None:
        completions = run.num_updates * buffer
        if completions > MAX_SIMULATED_COMPLETIONS:
            raise ConfigError(
                f"run.num_updates = {run.num_updates:,} (x B = {buffer}) needs {completions:,} "
                f"task completions, more than the limit of {MAX_SIMULATED_COMPLETIONS:.0e} "
                "a run may ask for (as in the simulator); set a smaller run.num_updates, or "
                "stop the run by run.time_budget alone"
            )
    if run.train:
        check_evaluations(config, buffer)
    check_task_memory(config.concurrency, RUNTIME_TASK_BYTES, "the server actor")


def _check_network(config: SystemConfig, virtual_clock: bool) -> None:
    """Refuse, before Ray starts, delays the runtime cannot emulate (docs/network.md).

    Raises:
        ConfigError: The config has link delays or a server update time and
            ``run.time_scale`` is 0 (nothing is emulated), or the test-only virtual clock
            is asked for (it does not order emulated delays).
    """
    from raysync.simulation._network import has_network

    if not has_network(config):
        return
    if config.run.time_scale <= 0:
        raise ConfigError(
            "downlink/uplink delays and [server] update_time are emulated in the Ray "
            "runtime: run.time_scale must be > 0, got 0"
        )
    if virtual_clock:
        raise ConfigError(
            "the virtual clock (a test mode) does not support emulated delays or a server "
            "update time; use the simulator for exact orderings"
        )


def _check_nonstationary(config: SystemConfig) -> None:
    """Refuse, before Ray starts, fleet changes the runtime cannot emulate.

    Raises:
        ConfigError: A ``schedule`` service time without emulation (``run.time_scale =
            0``: real compute times have no schedule), or a moment with no client present
            (docs/adaptive.md).
    """
    from raysync.simulation._dynamics import check_presence

    check_presence(config)
    for i, c in enumerate(config.clients):
        if c.service_time.kind == "schedule" and config.run.time_scale <= 0:
            raise ConfigError(
                f"clients[{i}]: a schedule service time is emulated on Ray: run.time_scale "
                f"must be > 0, got {config.run.time_scale:g}"
            )


def check_run_config(config: SystemConfig, *, virtual_clock: bool = False) -> None:
    """Refuse what :func:`run` would refuse before Ray starts, without starting it.

    The wall clock's limits on ``[run]`` (budget, timeout, evaluations, emulated task
    lengths), the tasks' memory in the server actor, emulated delays and fleet changes
    (``run.time_scale`` > 0); the workload is not built. ``raysync validate`` calls it.

    Args:
        config: The system.
        virtual_clock: The test-only virtual clock of :func:`run`.

    Raises:
        ConfigError: One line naming the field, the rule and the value.
    """
    _check_run_clock(config)
    _check_network(config, virtual_clock)
    _check_nonstationary(config)
    if config.run.time_scale > 0:  # emulated: no task is shorter than its service time
        check_first_completion(config)


def _check_target_ahead(config: SystemConfig, directory: Path, state: Mapping[str, Any]) -> None:
    """Refuse to resume a checkpoint already at or past the run's stop condition.

    Raises:
        CheckpointError: ``version >= run.num_updates``, or the checkpoint's elapsed
            time already spends ``run.time_budget``.
    """
    run_cfg = config.run
    version = int(state["version"])
    if run_cfg.num_updates is not None and version >= run_cfg.num_updates:
        raise CheckpointError(
            f"checkpoint {str(directory)!r} is at version {version}, at or past "
            f"run.num_updates = {run_cfg.num_updates}: nothing is left to run; raise "
            f"run.num_updates (--num-updates) above {version} to continue it"
        )
    budget = wall_seconds(run_cfg.time_budget, run_cfg.time_scale)
    elapsed = float(state["elapsed"])
    if math.isfinite(budget) and elapsed >= budget:
        raise CheckpointError(
            f"checkpoint {str(directory)!r} has already run {elapsed:.6g} wall seconds, at "
            f"or past run.time_budget = {run_cfg.time_budget:g} config seconds "
            f"({budget:.6g} wall seconds): nothing is left to run; raise run.time_budget "
            "(--time-budget) to continue it"
        )


def _check_arguments(
    *,
    address: object,
    logdir: object,
    sinks: object,
    progress: object,
    run_name: object,
    resume_from: object,
    warmup_fraction: object,
    num_batches: object,
    confidence: object,
    startup_timeout: object,
    server_num_cpus: object,
    poll_interval: object,
    flags: Mapping[str, object],
    router: object,
    strategy: object,
) -> None:
    """Refuse :func:`run`'s bad keyword arguments before anything starts, by name.

    Before, ``overwrite_checkpoint="no"`` (truthy) replaced a checkpoint, and other wrong
    types or values failed after Ray's start-up in Python's or Ray's words.

    Raises:
        ConfigError: One line naming the argument, the rule and the value.
    """
    from raysync._validation import check_number, check_output_dir
    from raysync.config import RESOURCE_UNIT
    from raysync.routing import BaseRouter
    from raysync.strategies import BaseStrategy

    def text(name: str, value: object, what: str) -> None:
        if value is not None and not (isinstance(value, str) and value.strip()):
            raise ConfigError(f"{name} must be None or {what}, got {value!r}")

    text("address", address, "a Ray address string (e.g. 'auto', 'ray://host:10001')")
    text("run_name", run_name, "a non-blank directory name")
    for name, path in (("logdir", logdir), ("resume_from", resume_from)):
        if path is not None and not (
            isinstance(path, str | os.PathLike) and str(os.fspath(path)).strip()
        ):
            raise ConfigError(f"{name} must be None or a non-blank directory path, got {path!r}")
    if isinstance(logdir, str | os.PathLike):
        check_output_dir(logdir, "logdir")
    for name, flag in flags.items():
        if not isinstance(flag, bool):
            raise ConfigError(f"{name} must be True or False, got {flag!r}")
    for name, value in (("warmup_fraction", warmup_fraction), ("confidence", confidence)):
        check_number(name, value, allow_zero=True)
    if isinstance(num_batches, bool) or not isinstance(num_batches, int | np.integer):
        raise ConfigError(f"num_batches must be an integer >= 2, got {num_batches!r}")
    check_number("startup_timeout", startup_timeout)
    check_number("poll_interval", poll_interval)
    cpus = check_number("server_num_cpus", server_num_cpus, allow_zero=True)
    if 0 < cpus < RESOURCE_UNIT:
        raise ConfigError(f"server_num_cpus must be 0 or at least {RESOURCE_UNIT:g} (Ray's "
                          f"resource granularity), got {cpus!r}")  # fmt: skip
    if progress is not None and not callable(progress):
        raise ConfigError(f"progress must be None or a callable, got {progress!r}")
    if isinstance(sinks, str | bytes) or not isinstance(sinks, Sequence):
        raise ConfigError(f"sinks must be a sequence of MetricsSink, got {sinks!r}")
    for i, sink in enumerate(sinks):
        if not isinstance(sink, MetricsSink):
            raise ConfigError(f"sinks[{i}] must be a MetricsSink, got {sink!r}")
    for name, value, kind in (("router", router, BaseRouter),
                              ("strategy", strategy, BaseStrategy)):  # fmt: skip
        if value is not None and not isinstance(value, kind):
            raise ConfigError(f"{name} must be None or a {kind.__name__}, got {value!r}")


def _execute(
    config: SystemConfig,
    *,
    address: str | None = None,
    logdir: str | Path | None = None,
    sinks: Sequence[MetricsSink] = (),
    progress: ProgressCallback | None = None,
    run_name: str | None = None,
    workload: Workload | None = None,
    resume_from: str | Path | None = None,
    warmup_fraction: float = 0.1,
    num_batches: int = 30,
    confidence: float = 0.99,
    startup_timeout: float = 600.0,
    server_num_cpus: float = 0.0,
    poll_interval: float = 0.5,
    faults: FaultPlan | None = None,
    record: bool = False,
    overwrite_checkpoint: bool = False,
    virtual_clock: bool = False,
    router: BaseRouter | None = None,
    strategy: BaseStrategy | None = None,
) -> tuple[RunResult, ServerOutcome]:
    """:func:`run`, also returning the server's raw outcome (statistics snapshots).

    ``faults`` injects executor crashes and stragglers, ``record`` keeps per-task
    records (``extras["debug"]``) and ``virtual_clock`` applies completions in the order
    of their emulated ends, or without emulation in the order their tasks were sent
    (:class:`~raysync.runtime.actors.ServerSetup`): for tests.
    """
    from raysync.monitoring.tensorboard import (
        TensorBoardSink,
        default_run_name,
        run_hparams,
        summary_scalars,
        theory_scalars,
    )

    if not isinstance(config, SystemConfig):
        raise ConfigError(f"config must be a SystemConfig, got {type(config).__name__}")
    _check_arguments(
        address=address, logdir=logdir, sinks=sinks, progress=progress, run_name=run_name,
        resume_from=resume_from, warmup_fraction=warmup_fraction, num_batches=num_batches,
        confidence=confidence, startup_timeout=startup_timeout,
        server_num_cpus=server_num_cpus, poll_interval=poll_interval,
        flags={"record": record, "overwrite_checkpoint": overwrite_checkpoint,
               "virtual_clock": virtual_clock},
        router=router, strategy=strategy,
    )  # fmt: skip
    if not 0.0 <= warmup_fraction < 1.0:
        raise ConfigError(f"warmup_fraction must be in [0, 1), got {warmup_fraction!r}")
    if num_batches < 2:
        raise ConfigError(f"num_batches must be >= 2, got {num_batches!r}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence!r}")
    wall_start = time.perf_counter()
    config = _absolute_checkpoint_dir(config)
    train = config.run.train
    if train and workload is None:
        from raysync.workload import build_workload

        workload = build_workload(config)
    if train and workload is not None and workload.num_clients != config.num_clients:
        raise ConfigError(
            f"workload has {workload.num_clients} client partitions but the config has "
            f"{config.num_clients} clients"
        )
    num_params = int(workload.initial_params.size) if (train and workload is not None) else None
    fingerprint = config_fingerprint(config, num_params)
    fields = fingerprint_fields(config, num_params)
    check_run_config(config, virtual_clock=virtual_clock)
    if num_params is not None:
        from raysync.simulation.engine import check_version_memory

        check_version_memory(config, num_params, where="the server actor")
    resume_state: dict[str, Any] | None = None
    if resume_from is not None:
        if _held_by_another_run(Path(resume_from)):
            raise _in_use("--resume", resume_from)
        # first: a --resume directory without a usable checkpoint is the problem to name,
        # not the checkpoint_dir it would then have overwritten
        checkpoint = read_checkpoint(resume_from, fingerprint=fingerprint, fields=fields)
        resume_state = check_server_state(
            checkpoint, num_clients=config.num_clients, num_params=num_params, config=config
        )
        _check_target_ahead(config, checkpoint.directory, resume_state)
        if run_name is None and resume_state.get("run_name"):
            run_name = str(resume_state["run_name"])
    _check_checkpoint_dir(config, resume_from, overwrite_checkpoint, fingerprint)
    if resume_state is not None:
        logger.info("resuming from %s at version %d", checkpoint.directory, checkpoint.version)
        target = config.run.checkpoint_dir
        if target is not None and not same_directory(target, checkpoint.directory):
            # a fork: the checkpoint resumed from stays where it is
            logger.warning(
                "resuming from %s (version %d) but checkpointing to %s (run.checkpoint_dir; "
                "a relative path is taken from the current directory): the checkpoint "
                "resumed from is left at version %d",
                checkpoint.directory, checkpoint.version, target, checkpoint.version,
            )  # fmt: skip
    if run_name is None and (logdir is not None or config.run.checkpoint_dir is not None):
        run_name = default_run_name(config)

    if resume_state is not None and logdir is not None and run_name is not None:
        earlier = Path(logdir) / run_name
        if not earlier.is_dir():
            logger.warning(
                "resuming into --logdir %s, which has no run %r: its TensorBoard curves will "
                "start at version %d (the earlier sessions' events are under the logdir the "
                "checkpoint's run wrote to; pass that one to continue its curves)",
                logdir, run_name, int(resume_state["version"]),
            )  # fmt: skip
    lock = _lock_checkpoint_dir(config.run.checkpoint_dir)
    started = False
    own_sinks: list[MetricsSink] = []
    group: ActorGroup | None = None
    # SIGTERM during the start-up (Ray, the actors) ends the run as during its loop
    # (RunInterrupted, the shell's 143), not with Ray's exit 15 or its abort
    signals = _Signals().__enter__()
    try:
        try:
            started = connect(address)
        except SystemExit as exc:
            # ray.init's own SIGTERM handler, in force while it runs
            if exc.code != signal.SIGTERM:
                raise
            raise RunInterrupted(config.run.checkpoint_dir, None, signum=signal.SIGTERM) from None
        signals.install()  # ray.init replaced it
        plan = choose_plan(config, _alive_node_resources(), server_num_cpus=server_num_cpus)
        if logdir is not None:
            own_sinks.append(
                TensorBoardSink(
                    logdir,
                    run_name=run_name or default_run_name(config),
                    append=resume_state is not None,
                    resume_at=None if resume_state is None else (
                        int(resume_state["version"]), float(resume_state["elapsed"])
                    ),
                )
            )
        all_sinks = [*sinks, *own_sinks]
        theory = theory_scalars(config, time_unit=config.run.time_scale) if all_sinks else {}
        for sink in all_sinks:
            if theory and resume_state is None:
                sink.log_scalars(0, theory, time=0.0)
        group = ActorGroup.create(
            config,
            workload=workload,
            train=train,
            plan=plan,
            startup_timeout=startup_timeout,
            server_num_cpus=server_num_cpus,
            server_options={
                "fingerprint": fingerprint,
                "fingerprint_fields": fields,
                "run_name": run_name,
                "resume": resume_state,
                "want_events": bool(all_sinks),
                "record": record,
                "virtual_clock": virtual_clock,
                # instances given to run(), as simulate() takes them (None: from config)
                **{k: v for k, v in (("router", router), ("strategy", strategy)) if v is not None},
            },
            faults=faults,
        )
        resume_state = None  # shipped to the server; free the driver's copy
        placements = group.placements
        clients = group.client_placements
        outcome = group.run(sinks=all_sinks, progress=progress, poll_interval=poll_interval)
        group.shutdown()
        group = None
        extras: dict[str, Any] = {
            "runtime_mode": plan.mode,
            "num_executors": plan.num_executors,
            "tiers": [
                {"label": t.label, "num_clients": len(t.clients), "request": dict(t.request)}
                for t in plan.tiers
            ],
            "executor_tiers": list(plan.executor_tiers),
            "executor_nodes": [p.node_id for p in placements],
            "executor_devices": [p.device for p in placements],
            "routing_probabilities": (
                None
                if config.routing_probabilities is None
                else [float(v) for v in config.routing_probabilities]
            ),
        }
        if clients is not None:
            extras["client_nodes"] = [p.node_id for p in clients]
            extras["client_devices"] = [p.device for p in clients]
        result = assemble_result(
            outcome,
            config,
            train=train,
            wall_time=time.perf_counter() - wall_start,
            warmup_fraction=warmup_fraction,
            num_batches=num_batches,
            confidence=confidence,
            extras=extras,
        )
        if all_sinks:
            final = {
                **summary_scalars(result),
                **communication_scalars(result.extras.get("communication", {})),
                **theory,
            }
            metrics = {
                "hparam/throughput": result.throughput,
                "hparam/mean_staleness": result.mean_staleness,
                "hparam/final_test_accuracy": result.final_test_accuracy,
                "hparam/final_test_loss": result.final_test_loss,
            }
            for sink in all_sinks:
                sink.log_scalars(result.num_updates, final, time=result.elapsed)
                sink.log_hparams(run_hparams(config), metrics)
        logger.info(
            "ray run done: %d updates in %.3f s (%.1f updates/s)",
            result.num_updates,
            result.elapsed,
            result.throughput,
        )
        return result, outcome
    except KeyboardInterrupt as exc:
        if isinstance(exc, RunInterrupted) or not signals.terminated:
            raise
        # SIGTERM before the loop ran: nothing applied in this session to checkpoint
        raise RunInterrupted(config.run.checkpoint_dir, None, signum=signal.SIGTERM) from None
    finally:
        if group is not None:
            group.shutdown()
        for sink in own_sinks:
            sink.close()
        if started and not (group is not None and group.ray_gone):
            ray.shutdown()
        signals.__exit__()
        if lock is not None:
            lock.release()
