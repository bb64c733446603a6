"""Driver side of the Ray runtime: connect, check resources, own the actors, report.

:func:`run` is the entry point (re-exported as :func:`raysync.run`). It

1. connects to Ray (joins ``address``, reuses an initialised session, or starts a local
   instance that it shuts down at the end);
2. checks that the cluster can ever hold every client (:func:`check_resources`): some
   single alive node must offer each client's whole request, and the cluster's totals must
   cover all requests at once, because the ``C`` tasks are spread over the clients and
   every client actor must be alive at the same time (clients never share a slot);
3. builds an :class:`ActorGroup` (client actors, then the server actor) with
   :meth:`ActorGroup.create`, which cleans up what it started if anything fails;
4. runs the server's loop, polling it twice a second for progress and metric events that
   it forwards to the sinks (sinks live on the driver: one TensorBoard writer per run);
5. kills every actor it created, on success, on error and on ``KeyboardInterrupt``.

Callers never see actor handles or object references: they get a
:class:`~raysync.simulation.result.RunResult` with ``backend="ray"``, and domain errors
(:class:`~raysync.exceptions.ResourceUnavailableError`,
:class:`~raysync.exceptions.RuntimeFailure`) that name the cause and the fix, raised from
the Ray error.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from raysync.config import ClientSpec, SystemConfig
from raysync.exceptions import ConfigError, RaySyncError, ResourceUnavailableError, RuntimeFailure
from raysync.monitoring import MetricsSink
from raysync.runtime._backend import ServerOutcome, assemble_result
from raysync.runtime.actors import ClientActor, ClientSetup, ServerActor, ServerSetup
from raysync.simulation.engine import ProgressCallback
from raysync.simulation.result import RunResult

if TYPE_CHECKING:
    from raysync.workload import Workload

__all__ = ["ActorGroup", "ClientPlacement", "check_resources", "client_request", "run"]

logger = logging.getLogger(__name__)

_EPS = 1e-9


def client_request(spec: ClientSpec) -> dict[str, float]:
    """The Ray resources one client's actor reserves (zero amounts omitted, CPU always)."""
    request = {"CPU": float(spec.num_cpus)}
    if spec.num_gpus > 0:
        request["GPU"] = float(spec.num_gpus)
    for key, amount in spec.resources.items():
        request[key] = float(amount)
    return request


def _fmt(resources: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in resources.items()) + "}"


def _client_label(config: SystemConfig, i: int) -> str:
    name = config.clients[i].name
    return f"client {i} ({name})" if name else f"client {i}"


def check_resources(
    config: SystemConfig,
    nodes: Sequence[Mapping[str, float]],
    *,
    server_num_cpus: float = 0.0,
) -> None:
    """Fail fast when the cluster can never run every client at once.

    Two checks, on the *total* resources of the alive nodes:

    * each client's request (``num_cpus``, ``num_gpus`` and every custom resource) must
      fit on one single node, since an actor cannot span nodes;
    * the sum of all requests (plus the server's CPUs) must fit in the cluster, since all
      client actors must be alive together (the ``C`` tasks are spread over them).

    Passing both does not prove that the requests can be packed onto the nodes; the
    actor group then reports clients that do not start within its start-up timeout.

    Args:
        config: The run's config.
        nodes: The total resources of each alive node (``ray.nodes()[k]["Resources"]``).
        server_num_cpus: CPUs reserved by the server actor.

    Raises:
        ResourceUnavailableError: Naming the client, its request and what the largest
            node (or the whole cluster) offers.
    """
    if not nodes:
        raise ResourceUnavailableError("the Ray cluster has no alive node")
    for i, spec in enumerate(config.clients):
        request = client_request(spec)
        if any(all(node.get(k, 0.0) + _EPS >= v for k, v in request.items()) for node in nodes):
            continue
        largest = {k: max(float(node.get(k, 0.0)) for node in nodes) for k in request}
        missing = [k for k, v in request.items() if largest[k] + _EPS < v]
        if missing:
            detail = f"the largest node offers {_fmt(largest)}"
        else:
            detail = (
                f"no single node holds all of it (largest amount of each on any node: "
                f"{_fmt(largest)})"
            )
        raise ResourceUnavailableError(
            f"{_client_label(config, i)} requests {_fmt(request)} but {detail}; add a node "
            "that offers it (custom resources: `ray start --resources='{...}'`) or lower the "
            "client's num_cpus/num_gpus/resources in the config"
        )
    totals: dict[str, float] = {"CPU": float(server_num_cpus)}
    for spec in config.clients:
        for key, value in client_request(spec).items():
            totals[key] = totals.get(key, 0.0) + value
    cluster = {k: math.fsum(float(node.get(k, 0.0)) for node in nodes) for k in totals}
    short = {k: v for k, v in totals.items() if v > cluster[k] + _EPS}
    if short:
        key = next(iter(short))
        raise ResourceUnavailableError(
            f"the {config.num_clients} clients together request {key}={totals[key]:g} but the "
            f"cluster offers {key}={cluster[key]:g} in total (all requests: {_fmt(totals)}; "
            f"cluster: {_fmt(cluster)}); every client actor must be alive at the same time, "
            "so lower the per-client requests (e.g. num_cpus = 0.25) or add nodes"
        )


def _alive_node_resources() -> list[dict[str, float]]:
    return [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]


def _domain_error(exc: BaseException, what: str) -> RaySyncError:
    """Translate a Ray error met while ``what`` into a domain error naming cause and fix."""
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, RaySyncError):
            return type(cause)(str(cause))
        return RuntimeFailure(
            f"{what} failed with {type(cause or exc).__name__}: {cause or exc}. "
            "See the Ray worker logs for the traceback"
        )
    if isinstance(exc, ray.exceptions.RayActorError):
        first = str(exc).strip().splitlines()
        return RuntimeFailure(
            f"an actor died while {what} ({type(exc).__name__}: "
            f"{first[0] if first else 'no reason given'}). Check the node's memory and logs "
            "(`ray status`, `ray logs`) and run again"
        )
    return RuntimeFailure(f"{what} failed: {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class ClientPlacement:
    """Where one client actor runs.

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


class ActorGroup:
    """The client actors and the server actor of one run, owned as a unit.

    Build it with :meth:`create`; always :meth:`shutdown` it (it is a context manager).
    Handles never leave the group.
    """

    def __init__(self, server: Any, clients: list[Any], placements: list[ClientPlacement]):
        self._server = server
        self._clients = clients
        self._placements = placements

    @property
    def placements(self) -> list[ClientPlacement]:
        """Where each client runs (node id, process, device)."""
        return list(self._placements)

    @classmethod
    def create(
        cls,
        config: SystemConfig,
        *,
        workload: Workload | None,
        train: bool,
        startup_timeout: float = 120.0,
        server_num_cpus: float = 0.0,
    ) -> ActorGroup:
        """Start the client actors, wait until they are up, then start the server.

        Args:
            config: The run's config.
            workload: Data and model (None in queue-only runs).
            train: Whether tasks train.
            startup_timeout: Seconds to wait for every client actor to start.
            server_num_cpus: CPUs reserved by the server actor (0: it mostly waits).

        Returns:
            The group, every actor alive.

        Raises:
            ResourceUnavailableError: Some clients did not start within the timeout.
            RuntimeFailure: An actor failed to start.
        """
        clients: list[Any] = []
        server: Any = None
        try:
            client_cls = ray.remote(ClientActor)
            for i, spec in enumerate(config.clients):
                x = y = None
                if train and workload is not None:
                    x, y = workload.client_data(i)
                setup = ClientSetup(
                    client_id=i,
                    spec=spec,
                    seed=config.seed,
                    num_clients=config.num_clients,
                    time_scale=config.run.time_scale,
                    train=train,
                    x=x,
                    y=y,
                    model=workload.model if (train and workload is not None) else None,
                )
                options: dict[str, Any] = {
                    "num_cpus": spec.num_cpus,
                    "num_gpus": spec.num_gpus,
                    "max_concurrency": 1,
                    "max_restarts": 0,
                }
                if spec.resources:
                    options["resources"] = dict(spec.resources)
                clients.append(client_cls.options(**options).remote(setup))
            refs = [c.info.remote() for c in clients]
            ready, pending = ray.wait(refs, num_returns=len(refs), timeout=startup_timeout)
            if pending:
                late = [i for i, ref in enumerate(refs) if ref in set(pending)]
                labels = ", ".join(_client_label(config, i) for i in late[:5])
                more = f" and {len(late) - 5} more" if len(late) > 5 else ""
                raise ResourceUnavailableError(
                    f"{labels}{more} did not start within {startup_timeout:g} s: the cluster "
                    "cannot place them now (resources held by other work, or requests that "
                    "do not pack onto the nodes, e.g. "
                    f"{_fmt(client_request(config.clients[late[0]]))}); free resources, "
                    "lower the requests or add nodes"
                )
            try:
                infos = ray.get(refs)
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as exc:
                raise _domain_error(exc, "starting the client actors") from exc
            placements = [
                ClientPlacement(
                    client_id=int(info["client_id"]),
                    node_id=str(info["node_id"]),
                    pid=int(info["pid"]),
                    device=str(info["device"]),
                )
                for info in infos
            ]
            server_setup = _server_setup(config, workload, train)
            server = (
                ray.remote(ServerActor)
                .options(
                    num_cpus=server_num_cpus,
                    max_restarts=0,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(
                        node_id=ray.get_runtime_context().get_node_id(), soft=True
                    ),
                )
                .remote(server_setup, clients)
            )
            try:
                ray.get(server.poll.remote(), timeout=startup_timeout)
            except ray.exceptions.GetTimeoutError as exc:
                raise ResourceUnavailableError(
                    f"the server actor did not start within {startup_timeout:g} s "
                    f"(it requests CPU={server_num_cpus:g}); free resources on the driver's node"
                ) from exc
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as exc:
                raise _domain_error(exc, "starting the server actor") from exc
        except BaseException:
            _kill([server, *clients] if server is not None else clients)
            raise
        return cls(server, clients, placements)

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
        """
        run_ref = self._server.run.remote()
        try:
            while True:
                ready, _ = ray.wait([run_ref], timeout=poll_interval)
                version, now, events = ray.get(self._server.poll.remote())
                for step, scalars, at in events:
                    for sink in sinks:
                        sink.log_scalars(step, scalars, time=at)
                if progress is not None:
                    progress(version, now)
                if ready:
                    return ray.get(run_ref)
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as exc:
            raise _domain_error(exc, "running the server loop") from exc

    def shutdown(self) -> None:
        """Kill every actor of the group (idempotent)."""
        _kill([self._server, *self._clients])
        self._server = None
        self._clients = []

    def __enter__(self) -> ActorGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _kill(handles: Sequence[Any]) -> None:
    for handle in handles:
        if handle is None:
            continue
        try:
            ray.kill(handle, no_restart=True)
        except Exception:  # already dead, or Ray is going away
            logger.debug("could not kill actor %r", handle, exc_info=True)


def _server_setup(config: SystemConfig, workload: Workload | None, train: bool) -> ServerSetup:
    if not train or workload is None:
        return ServerSetup(config=config, train=False)
    x_test, y_test = workload.split("test")
    x_val, y_val = workload.split("val")
    return ServerSetup(
        config=config,
        train=True,
        initial_params=workload.initial_params,
        model=workload.model,
        x_test=x_test,
        y_test=y_test,
        x_val=x_val,
        y_val=y_val,
    )


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast when ``host:port`` does not accept connections (``ray.init`` would retry).

    ``"auto"``, ``"local"`` and addresses without a port are left to Ray.
    """
    target = address.removeprefix("ray://")
    host, sep, port_text = target.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port_text)), timeout=timeout):
            pass
    except OSError as exc:
        raise RuntimeFailure(
            f"cannot reach the Ray cluster at {address!r} ({exc}). Start it with "
            "`ray start --head` (or check the address and the firewall), or omit "
            "--address to run on a local Ray instance"
        ) from exc


def _connect(address: str | None) -> bool:
    """Connect to Ray; return True when this call started a local instance."""
    if ray.is_initialized():
        if address is not None:
            logger.info("Ray is already initialised; ignoring address=%r", address)
        return False
    if address is not None:
        _check_reachable(address)
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise RuntimeFailure(
                f"cannot connect to the Ray cluster at {address!r}: {exc}. Start it with "
                "`ray start --head` (or check the address), or omit --address to run locally"
            ) from exc
        return False
    ray.init(
        include_dashboard=False,
        num_cpus=os.cpu_count() or 1,
        logging_level=logging.WARNING,
    )
    return True


def run(
    config: SystemConfig,
    *,
    address: str | None = None,
    logdir: str | Path | None = None,
    sinks: Sequence[MetricsSink] = (),
    progress: ProgressCallback | None = None,
    run_name: str | None = None,
    workload: Workload | None = None,
    warmup_fraction: float = 0.1,
    num_batches: int = 30,
    confidence: float = 0.99,
    startup_timeout: float = 120.0,
    server_num_cpus: float = 0.0,
    poll_interval: float = 0.5,
) -> RunResult:
    """Run an asynchronous FL system for real on Ray.

    Each client is an actor with its own resources, data partition, service-time
    distribution and random streams; the server actor applies every completed task with
    the config's strategy and dispatches the next one with its router, keeping
    ``config.concurrency`` tasks in flight (THEORY.md section 1). With
    ``run.time_scale > 0`` each task lasts at least its sampled service time times
    ``time_scale`` (heterogeneity emulation); 0 runs at compute speed.

    Args:
        config: The system to run. ``run.num_updates`` and ``run.time_budget`` stop it
            (the budget is in config seconds: ``time_budget * time_scale`` wall seconds
            with emulation). ``run.train = False`` runs queue-only (clients only wait).
        address: Ray cluster to join (``"auto"``, ``"ray://host:10001"``, ...). When
            None, an initialised Ray session is reused, otherwise a local instance is
            started (and shut down at the end).
        logdir: Write TensorBoard events to ``logdir/<run_name>``.
        sinks: More metrics sinks (not closed here).
        progress: Called as ``progress(updates, seconds)`` about twice a second.
        run_name: TensorBoard run directory name (default: time, algorithm, ``C``).
        workload: Prebuilt data and model (built from ``config`` when None and training).
        warmup_fraction: Fraction of completions dropped before measuring.
        num_batches: Batches of the batch-means confidence intervals.
        confidence: Level of the intervals.
        startup_timeout: Seconds to wait for the actors to start.
        server_num_cpus: CPUs the server actor reserves (default 0: it mostly waits on
            the network; set 1 on a busy cluster to keep a core for it).
        poll_interval: Seconds between progress polls.

    Returns:
        A :class:`~raysync.simulation.result.RunResult` with ``backend="ray"``; times are
        wall-clock seconds. ``extras`` holds ``client_nodes`` (node id of each client),
        ``client_devices``, measured ``service_time_mean`` and ``compute_time_mean`` per
        client (wall seconds), ``time_scale`` and ``throughput_config_units``
        (throughput per config second, comparable with the theory and the simulator).

    Raises:
        ConfigError: A bad argument.
        ResourceUnavailableError: The cluster can never hold a client's request, or all
            requests together, or the actors did not start in time.
        RuntimeFailure: An actor died or a client failed; the message names the fix.
    """
    result, _ = _execute(
        config,
        address=address,
        logdir=logdir,
        sinks=sinks,
        progress=progress,
        run_name=run_name,
        workload=workload,
        warmup_fraction=warmup_fraction,
        num_batches=num_batches,
        confidence=confidence,
        startup_timeout=startup_timeout,
        server_num_cpus=server_num_cpus,
        poll_interval=poll_interval,
    )
    return result


def _execute(
    config: SystemConfig,
    *,
    address: str | None = None,
    logdir: str | Path | None = None,
    sinks: Sequence[MetricsSink] = (),
    progress: ProgressCallback | None = None,
    run_name: str | None = None,
    workload: Workload | None = None,
    warmup_fraction: float = 0.1,
    num_batches: int = 30,
    confidence: float = 0.99,
    startup_timeout: float = 120.0,
    server_num_cpus: float = 0.0,
    poll_interval: float = 0.5,
) -> tuple[RunResult, ServerOutcome]:
    """:func:`run`, also returning the server's raw outcome (statistics snapshots)."""
    from raysync.monitoring.tensorboard import (
        TensorBoardSink,
        default_run_name,
        run_hparams,
        summary_scalars,
        theory_scalars,
    )

    if not isinstance(config, SystemConfig):
        raise ConfigError(f"config must be a SystemConfig, got {type(config).__name__}")
    if not 0.0 <= warmup_fraction < 1.0:
        raise ConfigError(f"warmup_fraction must be in [0, 1), got {warmup_fraction!r}")
    if num_batches < 2:
        raise ConfigError(f"num_batches must be >= 2, got {num_batches!r}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence!r}")
    wall_start = time.perf_counter()
    train = config.run.train
    if train and workload is None:
        from raysync.workload import build_workload

        workload = build_workload(config)
    if train and workload is not None and workload.num_clients != config.num_clients:
        raise ConfigError(
            f"workload has {workload.num_clients} client partitions but the config has "
            f"{config.num_clients} clients"
        )

    started = _connect(address)
    own_sinks: list[MetricsSink] = []
    group: ActorGroup | None = None
    try:
        check_resources(config, _alive_node_resources(), server_num_cpus=server_num_cpus)
        if logdir is not None:
            own_sinks.append(TensorBoardSink(logdir, run_name=run_name or default_run_name(config)))
        all_sinks = [*sinks, *own_sinks]
        theory = theory_scalars(config, time_unit=config.run.time_scale)
        for sink in all_sinks:
            if theory:
                sink.log_scalars(0, theory, time=0.0)
        group = ActorGroup.create(
            config,
            workload=workload,
            train=train,
            startup_timeout=startup_timeout,
            server_num_cpus=server_num_cpus,
        )
        placements = group.placements
        outcome = group.run(sinks=all_sinks, progress=progress, poll_interval=poll_interval)
        group.shutdown()
        group = None
        result = assemble_result(
            outcome,
            config,
            train=train,
            wall_time=time.perf_counter() - wall_start,
            warmup_fraction=warmup_fraction,
            num_batches=num_batches,
            confidence=confidence,
            extras={
                "client_nodes": [p.node_id for p in placements],
                "client_devices": [p.device for p in placements],
                "routing_probabilities": (
                    None
                    if config.routing_probabilities is None
                    else [float(v) for v in config.routing_probabilities]
                ),
            },
        )
        final = {**summary_scalars(result), **theory}
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
    finally:
        if group is not None:
            group.shutdown()
        for sink in own_sinks:
            sink.close()
        if started:
            ray.shutdown()
