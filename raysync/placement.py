"""Placement planning: which executor actors serve which logical clients (Ray-free).

Clients with identical resource requests (``num_cpus``, ``num_gpus``, custom resources)
form a :class:`Tier`. A run's :class:`ExecutorPlan` maps the logical clients onto
executor actors: one per client (``runtime.mode = "per_client"``) or a pool of
``runtime.executors_per_tier`` executors per tier (``"pool"``); :func:`check_resources`
proves, before any actor starts, that the cluster's alive nodes can ever hold the plan
(each executor's request on one node, all requests together in the cluster), and
:func:`choose_plan` resolves ``mode = "auto"``.

Nothing here imports Ray: the runtime (:mod:`raysync.runtime`) passes the nodes' total
resources in (``ray.nodes()[k]["Resources"]``), so the planning is tested without a
cluster and can be used by tools that never start one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from raysync.config import AUTO_PER_CLIENT_MAX, ClientSpec, SystemConfig
from raysync.exceptions import ConfigError, ResourceUnavailableError

__all__ = [
    "ExecutorPlan",
    "Tier",
    "check_resources",
    "choose_plan",
    "client_request",
    "client_tiers",
    "executor_label",
    "format_resources",
    "plan_executors",
    "resolve_mode",
]

_EPS = 1e-9


def client_request(spec: ClientSpec) -> dict[str, float]:
    """The Ray resources one client's executor reserves (zero amounts omitted, CPU always)."""
    request = {"CPU": float(spec.num_cpus)}
    if spec.num_gpus > 0:
        request["GPU"] = float(spec.num_gpus)
    for key, amount in spec.resources.items():
        request[key] = float(amount)
    return request


@dataclass(frozen=True)
class Tier:
    """Clients with identical resource requests, served by the same executor pool.

    Attributes:
        index: Tier number (order of first appearance in the config).
        spec: A representative client spec (its ``num_cpus``, ``num_gpus`` and
            ``resources`` are the tier's; service times may differ between clients).
        request: The Ray resources of one executor of this tier.
        clients: The tier's client ids, ascending.
    """

    index: int
    spec: ClientSpec
    request: Mapping[str, float]
    clients: tuple[int, ...]

    @property
    def label(self) -> str:
        """Human-readable name, e.g. ``tier 1 {CPU: 0.5, tier_fast: 1}``."""
        inside = ", ".join(f"{k}: {v:g}" for k, v in self.request.items())
        return f"tier {self.index} {{{inside}}}"


def client_tiers(config: SystemConfig) -> list[Tier]:
    """Group the clients by identical resource request (``num_cpus``, ``num_gpus``, custom)."""
    groups: dict[tuple[tuple[str, float], ...], list[int]] = {}
    first: dict[tuple[tuple[str, float], ...], ClientSpec] = {}
    for i, spec in enumerate(config.clients):
        key = tuple(sorted(client_request(spec).items()))
        groups.setdefault(key, []).append(i)
        first.setdefault(key, spec)
    return [
        Tier(index=t, spec=first[key], request=client_request(first[key]), clients=tuple(ids))
        for t, (key, ids) in enumerate(groups.items())
    ]


def resolve_mode(config: SystemConfig, per_client_fits: bool) -> str:
    """The runtime mode actually used: ``per_client`` or ``pool``.

    Args:
        config: The run's config (``runtime.mode``).
        per_client_fits: Whether the cluster can hold one actor per client at once.

    Returns:
        ``"per_client"`` or ``"pool"``.
    """
    mode = config.runtime.mode
    if mode != "auto":
        return mode
    if config.num_clients <= AUTO_PER_CLIENT_MAX and per_client_fits:
        return "per_client"
    return "pool"


def format_resources(resources: Mapping[str, float]) -> str:
    """A resource request as ``{CPU: 0.5, tier_fast: 1}`` (for messages)."""
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in resources.items()) + "}"


def _client_label(config: SystemConfig, i: int) -> str:
    name = config.clients[i].name
    return f"client {i} ({name})" if name else f"client {i}"


def executor_label(config: SystemConfig, plan: ExecutorPlan, e: int) -> str:
    """Who executor ``e`` serves, for messages: its client, or its tier and clients."""
    if plan.mode == "per_client":
        return _client_label(config, plan.executor_clients[e][0])
    tier = plan.tiers[plan.executor_tiers[e]]
    return f"{tier.label} executor (clients {_span(tier.clients)})"


def _span(ids: Sequence[int]) -> str:
    if len(ids) == 1:
        return str(ids[0])
    if list(ids) == list(range(ids[0], ids[0] + len(ids))):
        return f"{ids[0]}-{ids[-1]}"
    return f"{ids[0]}, ... ({len(ids)} clients)"


@dataclass(frozen=True)
class ExecutorPlan:
    """How the logical clients map onto executor actors.

    Attributes:
        mode: ``per_client`` (one executor per client) or ``pool`` (executors per tier).
        tiers: The clients grouped by identical resource request.
        executor_tiers: Tier of each executor.
        executor_clients: The clients each executor may serve.
        client_executor: ``per_client``: the executor of each client (else None).
        client_tiers: The tier of each client (the one client-to-tier map of a run).
    """

    mode: str
    tiers: tuple[Tier, ...]
    executor_tiers: tuple[int, ...]
    executor_clients: tuple[tuple[int, ...], ...]
    client_executor: tuple[int, ...] | None
    client_tiers: tuple[int, ...]

    @property
    def num_executors(self) -> int:
        """Number of executor actors."""
        return len(self.executor_tiers)

    def requests(self) -> list[dict[str, float]]:
        """The Ray resources of each executor."""
        return [dict(self.tiers[t].request) for t in self.executor_tiers]


def plan_executors(config: SystemConfig, mode: str) -> ExecutorPlan:
    """The executors of a run in ``mode`` (``per_client`` or ``pool``).

    Args:
        config: The run's config (``runtime.executors_per_tier`` sizes each pool, capped
            at the tier's number of clients).
        mode: ``per_client`` or ``pool``.

    Returns:
        The plan.

    Raises:
        ConfigError: Unknown mode.
    """
    tiers = tuple(client_tiers(config))
    tier_of = [0] * config.num_clients
    for tier in tiers:
        for i in tier.clients:
            tier_of[i] = tier.index
    if mode == "per_client":
        n = config.num_clients
        return ExecutorPlan(
            mode=mode,
            tiers=tiers,
            executor_tiers=tuple(tier_of),
            executor_clients=tuple((i,) for i in range(n)),
            client_executor=tuple(range(n)),
            client_tiers=tuple(tier_of),
        )
    if mode != "pool":
        raise ConfigError(f"mode must be per_client or pool, got {mode!r}")
    executor_tiers: list[int] = []
    executor_clients: list[tuple[int, ...]] = []
    for tier in tiers:
        k = min(config.runtime.executors_per_tier, len(tier.clients))
        executor_tiers.extend([tier.index] * k)
        executor_clients.extend([tier.clients] * k)
    return ExecutorPlan(
        mode=mode,
        tiers=tiers,
        executor_tiers=tuple(executor_tiers),
        executor_clients=tuple(executor_clients),
        client_executor=None,
        client_tiers=tuple(tier_of),
    )


def check_resources(
    config: SystemConfig,
    nodes: Sequence[Mapping[str, float]],
    *,
    server_num_cpus: float = 0.0,
    mode: str | None = None,
) -> ExecutorPlan:
    """Fail fast when the cluster can never run the run's executors at once.

    Two checks, on the *total* resources of the alive nodes:

    * each executor's request (``num_cpus``, ``num_gpus`` and every custom resource of its
      client or tier) must fit on one single node, since an actor cannot span nodes;
    * the sum of all requests (plus the server's CPUs) must fit in the cluster, since all
      executors must be alive together (``per_client``: one per client; ``pool``:
      ``runtime.executors_per_tier`` per tier).

    Passing both does not prove that the requests can be packed onto the nodes; the
    actor group then reports executors that do not start within its start-up timeout.

    Args:
        config: The run's config.
        nodes: The total resources of each alive node (``ray.nodes()[k]["Resources"]``).
        server_num_cpus: CPUs reserved by the server actor.
        mode: ``per_client`` or ``pool``; None: ``pool`` when ``runtime.mode`` says so,
            else ``per_client`` (the stricter check ``auto`` tries first).

    Returns:
        The executor plan that fits.

    Raises:
        ResourceUnavailableError: Naming the client (or tier), its request and what the
            largest node (or the whole cluster) offers.
    """
    if mode is None:
        mode = "pool" if config.runtime.mode == "pool" else "per_client"
    plan = plan_executors(config, mode)
    if not nodes:
        raise ResourceUnavailableError("the Ray cluster has no alive node")
    for tier in plan.tiers:
        request = dict(tier.request)
        if any(all(node.get(k, 0.0) + _EPS >= v for k, v in request.items()) for node in nodes):
            continue
        largest = {k: max(float(node.get(k, 0.0)) for node in nodes) for k in request}
        missing = [k for k, v in request.items() if largest[k] + _EPS < v]
        if missing:
            detail = f"the largest node offers {format_resources(largest)}"
        else:
            detail = (
                f"no single node holds all of it (largest amount of each on any node: "
                f"{format_resources(largest)})"
            )
        who = _client_label(config, tier.clients[0])
        if len(tier.clients) > 1:
            who += f" (and {len(tier.clients) - 1} more with the same request)"
        raise ResourceUnavailableError(
            f"{who} requests {format_resources(request)} but {detail}; add a node "
            "that offers it (custom resources: `ray start --resources='{...}'`) or lower the "
            "client's num_cpus/num_gpus/resources in the config"
        )
    totals: dict[str, float] = {"CPU": float(server_num_cpus)}
    for request in plan.requests():
        for key, value in request.items():
            totals[key] = totals.get(key, 0.0) + value
    cluster = {k: math.fsum(float(node.get(k, 0.0)) for node in nodes) for k in totals}
    short = {k: v for k, v in totals.items() if v > cluster[k] + _EPS}
    if short:
        key = next(iter(short))
        if plan.mode == "per_client":
            fix = (
                "every client actor must be alive at the same time, so lower the per-client "
                "requests (e.g. num_cpus = 0.25), add nodes, or multiplex the clients on a "
                'pool of executors ([runtime] mode = "pool")'
            )
            what = f"the {config.num_clients} clients together request"
        else:
            fix = (
                "every executor must be alive at the same time, so lower "
                "runtime.executors_per_tier or the tiers' requests, or add nodes"
            )
            what = (
                f"the {plan.num_executors} executors of {len(plan.tiers)} tier(s) "
                f"(runtime.executors_per_tier = {config.runtime.executors_per_tier}) "
                "together request"
            )
        raise ResourceUnavailableError(
            f"{what} {key}={totals[key]:g} but the cluster offers {key}={cluster[key]:g} in "
            f"total (all requests: {format_resources(totals)}; "
            f"cluster: {format_resources(cluster)}); {fix}"
        )
    return plan


def choose_plan(
    config: SystemConfig, nodes: Sequence[Mapping[str, float]], *, server_num_cpus: float = 0.0
) -> ExecutorPlan:
    """The executor plan of a run: ``runtime.mode``, with ``auto`` resolved on ``nodes``.

    Raises:
        ResourceUnavailableError: The cluster can never hold the plan.
    """
    if config.runtime.mode != "auto":
        return check_resources(
            config, nodes, server_num_cpus=server_num_cpus, mode=config.runtime.mode
        )
    try:
        plan: ExecutorPlan | None = check_resources(
            config, nodes, server_num_cpus=server_num_cpus, mode="per_client"
        )
    except ResourceUnavailableError:
        plan = None
    mode = resolve_mode(config, per_client_fits=plan is not None)
    if plan is not None and mode == "per_client":
        return plan
    return check_resources(config, nodes, server_num_cpus=server_num_cpus, mode=mode)
