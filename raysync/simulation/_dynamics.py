"""Feedback and non-stationary fleets for the simulator (private; docs/adaptive.md).

:class:`Presence` (who is present, routing restricted to them) is shared with the Ray
runtime's server actor.

:class:`FleetDynamics` sits between the event loop and the router when a run needs it:

* the router observes service times (:attr:`BaseRouter.observes_service_times`): it is
  told the duration of every finished task, with the clock, right before it routes;
* a client's service time follows a ``schedule``: its durations are drawn at the start of
  each service from the segment in force then;
* clients join or leave (``join_time`` / ``leave_time``): a client receives tasks only
  while present; a leaving client still serves what is queued at it (tasks in flight are
  never moved or dropped). Routers that do not handle availability themselves are redrawn
  until they name a present client (so a fixed ``p`` becomes ``p`` conditioned on the
  present clients).

When the router's ``p`` changes the strategy is bound again to the new ``p`` (the
importance weights of Generalized AsyncSGD follow the routing), and every change goes to
the metrics sinks: ``routing/p/client_i``, ``routing/mu_estimated/client_i``,
``routing/mu_configured/client_i`` (the segment in force), ``routing/predicted_throughput``
and ``routing/measured_throughput`` (completions per second since the previous change).
A run with none of these never builds this object: the event loop is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from raysync.exceptions import ConfigError

if TYPE_CHECKING:
    from raysync.config import SystemConfig
    from raysync.monitoring import MetricsSink
    from raysync.routing import BaseRouter
    from raysync.simulation.service_times import BaseServiceTime
    from raysync.strategies import BaseStrategy

__all__ = ["FleetDynamics", "Presence", "check_presence"]

#: Redraws of a router that names an absent client before falling back to a uniform
#: draw over the present ones (a fixed p that puts almost no mass on them).
_MAX_REDRAWS = 1000


def check_presence(config: SystemConfig) -> list[tuple[float, int, bool]]:
    """The join/leave events of the fleet, sorted by time: ``(time, client, joins)``.

    Raises:
        ConfigError: At some moment no client is present (one line naming it).
    """
    events: list[tuple[float, int, bool]] = []
    for i, c in enumerate(config.clients):
        if c.join_time > 0:
            events.append((float(c.join_time), i, True))
        if c.leave_time is not None:
            events.append((float(c.leave_time), i, False))
    events.sort(key=lambda e: (e[0], e[2]))  # leaves before joins at equal times
    present = np.array([c.join_time <= 0 for c in config.clients])
    if not present.any():
        raise ConfigError(
            "clients: no client is present at t = 0 (every join_time > 0); at least one "
            "must be there from the start"
        )
    k = 0
    while k < len(events):
        t = events[k][0]
        while k < len(events) and events[k][0] == t:
            present[events[k][1]] = events[k][2]
            k += 1
        if not present.any():
            raise ConfigError(
                f"clients: every client has left at t = {t:g} (leave_time); at least one "
                f"must be present at all times"
            )
    return events


class Presence:
    """Which clients are present, over time, and routing restricted to them.

    Shared by the simulator (:class:`FleetDynamics`) and the Ray runtime's server actor.

    Args:
        config: The fleet (``join_time`` / ``leave_time`` in the clock's unit).
        router: The bound router; told of every change with ``set_available``.

    Raises:
        ConfigError: At some moment no client is present.
    """

    def __init__(self, config: SystemConfig, router: BaseRouter) -> None:
        self.router = router
        self.events = check_presence(config)
        self.present = np.array([c.join_time <= 0 for c in config.clients])
        self.all_present = bool(self.present.all())
        self._next = 0
        self._fallback = np.random.default_rng([config.seed, 16])

    @property
    def changes_ahead(self) -> bool:
        """Whether some join or leave is still to come."""
        return self._next < len(self.events)

    def start(self) -> bool:
        """Tell the router who is present at ``t = 0``; return whether that is not everyone."""
        if self.all_present:
            return False
        self.router.set_available(self.present.copy(), 0.0)
        return True

    def advance(self, t: float) -> bool:
        """Apply the joins and leaves up to ``t``; return whether any happened."""
        events = self.events
        k = self._next
        if k >= len(events) or events[k][0] > t:
            return False
        while k < len(events) and events[k][0] <= t:
            _, client, joins = events[k]
            self.present[client] = joins
            k += 1
        self._next = k
        self.all_present = bool(self.present.all())
        self.router.set_available(self.present.copy(), t)
        return True

    def route(self, finished: int) -> int:
        """The router's choice, redrawn while it names an absent client."""
        route = self.router.route
        j = route(finished)
        if self.all_present or self.present[j]:
            return j
        for _ in range(_MAX_REDRAWS):
            j = route(finished)
            if self.present[j]:
                return j
        return int(self._fallback.choice(np.flatnonzero(self.present)))

    def initial_clients(self, concurrency: int) -> list[int]:
        """The router's initial clients, each redrawn while absent at ``t = 0``."""
        clients = self.router.initial_clients(concurrency)
        return [c if self.present[c] else self.route(c) for c in clients]


class FleetDynamics:
    """Feedback hooks and presence of one simulated run (built by the engine).

    Args:
        config: The run's config, in the engine's time unit.
        router: The bound router.
        service_times: One law per client.
        streams: The clients' block-drawn service streams (used for stationary laws).
        service_rngs: The clients' service generators (schedules draw from them).
        strategy: The bound strategy, re-bound when ``p`` changes (None: queue only).
        sinks: Metrics sinks that receive every routing change.
        time_unit: Seconds per engine time unit (for the sinks' wall-clock axis).
    """

    def __init__(
        self,
        *,
        config: SystemConfig,
        router: BaseRouter,
        service_times: Sequence[BaseServiceTime],
        streams: Sequence[Iterator[float]],
        service_rngs: Sequence[np.random.Generator],
        strategy: BaseStrategy | None = None,
        sinks: Sequence[MetricsSink] = (),
        time_unit: float = 1.0,
    ) -> None:
        n = config.num_clients
        self.router = router
        self.strategy = strategy
        self.sinks = tuple(sinks)
        self.time_unit = time_unit
        self.service_times = list(service_times)
        self.now = 0.0
        self.completions = 0
        self._observes = bool(router.observes_service_times)
        self._version = router.routing_version
        self._last_change = (0, 0.0)
        self._last = [0.0] * n
        self.presence = Presence(config, router)
        self.nexts: list[Callable[[], float]] = [
            self._next_fn(i, law, stream, rng)
            for i, (law, stream, rng) in enumerate(
                zip(service_times, streams, service_rngs, strict=True)
            )
        ]
        if self.presence.start():
            self._after_change()

    @staticmethod
    def needed(config: SystemConfig, router: BaseRouter) -> bool:
        """Whether a run needs this object (else the event loop runs untouched)."""
        return bool(router.observes_service_times) or any(
            c.service_time.kind == "schedule" or c.join_time > 0 or c.leave_time is not None
            for c in config.clients
        )

    def _next_fn(
        self,
        i: int,
        law: BaseServiceTime,
        stream: Iterator[float],
        rng: np.random.Generator,
    ) -> Callable[[], float]:
        last = self._last
        if law.time_dependent:
            sample_at = law.sample_at

            def draw_at() -> float:
                s = sample_at(rng, self.now)
                last[i] = s
                return s

            return draw_at
        base = stream.__next__
        if not self._observes:
            return base

        def draw() -> float:
            s = base()
            last[i] = s
            return s

        return draw

    # ------------------------------------------------------------------ the loop's hooks
    def initial_clients(self, concurrency: int) -> list[int]:
        """The router's initial clients, each redrawn while absent at ``t = 0``."""
        return self.presence.initial_clients(concurrency)

    def step(self, i: int, t: float) -> int:
        """A task finished at client ``i`` at time ``t``: feed the router, return ``j``."""
        self.now = t
        self.completions += 1
        presence = self.presence
        if presence.changes_ahead and presence.advance(t):
            if self.router.routing_version != self._version:
                self._after_change()
        router = self.router
        if self._observes:
            router.observe(i, self._last[i], t)
            if router.routing_version != self._version:
                self._after_change()
        return presence.route(i)

    def _after_change(self) -> None:
        router = self.router
        self._version = router.routing_version
        p = router.routing_probabilities()
        if p is not None and self.strategy is not None:
            # Absent clients keep their last weight: only their queued tasks reach the
            # server, and a weight of 1/(n * 0) would blow their steps up.
            n = p.size
            self.strategy.bind(n, np.where(p > 0, p, 1.0 / n))
        if not self.sinks:
            return
        t, c = self.now, self.completions
        scalars: dict[str, float] = {}
        since_c, since_t = self._last_change
        if t > since_t:
            seconds = (t - since_t) * self.time_unit
            scalars["routing/measured_throughput"] = (c - since_c) / seconds
        self._last_change = (c, t)
        changes = getattr(router, "changes", None)
        if changes:
            last = changes[-1]
            scalars["routing/predicted_throughput"] = last.predicted_throughput / self.time_unit
            for i, rate in enumerate(last.rates):
                scalars[f"routing/mu_estimated/client_{i}"] = float(rate) / self.time_unit
        if p is not None:
            for i, value in enumerate(p):
                scalars[f"routing/p/client_{i}"] = float(value)
        for i, law in enumerate(self.service_times):
            current = law.at(t) if law.time_dependent else law  # type: ignore[attr-defined]
            scalars[f"routing/mu_configured/client_{i}"] = current.rate / self.time_unit
        for sink in self.sinks:
            sink.log_scalars(c, scalars, time=t * self.time_unit)
