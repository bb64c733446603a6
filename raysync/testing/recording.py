"""Recorders: check that every backend drives strategies, routers and sinks alike.

The simulator and the Ray runtime must call a strategy and a router in the same order
with the same arguments (the call orders documented on
:class:`~raysync.strategies.BaseStrategy` and :class:`~raysync.routing.BaseRouter`).
:class:`RecordingStrategy` and :class:`RecordingRouter` wrap real implementations,
delegate every call and append it to a :class:`CallLog`; :func:`check_call_order` checks
one log against the documented protocol and :func:`protocol_view` reduces a log to what
two backends must share. :class:`RecordingSink` is an in-memory
:class:`~raysync.monitoring.MetricsSink`.

The wrappers pickle (the runtime ships them to its server actor). A log given a ``path``
appends one JSON line per call to that file, so a run in another process can be read
back on the same machine; without a path it stays in memory.

Example::

    log = CallLog()
    result = simulate(config, strategy=RecordingStrategy(make_strategy(config.algorithm),
                      log), router=RecordingRouter(make_router(config.routing), log))
    check_call_order(log.calls(), concurrency=config.concurrency)
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from raysync.routing._base import BaseRouter
from raysync.strategies._base import BaseStrategy, ClientResult, ClientWork

__all__ = [
    "Call",
    "CallLog",
    "RecordingRouter",
    "RecordingSink",
    "RecordingStrategy",
    "check_call_order",
    "protocol_view",
]


@dataclass(frozen=True)
class Call:
    """One recorded call.

    Attributes:
        component: ``"router"`` or ``"strategy"``.
        method: The method called (``bind``, ``initial_clients``, ``route``, ``apply``).
        args: The arguments, reduced to JSON values (arrays become lists; a generator
            becomes a fingerprint of its state; ``apply``'s params their length).
        result: What the call returned, reduced the same way (``apply``: whether the
            model version advanced).
    """

    component: str
    method: str
    args: tuple[Any, ...]
    result: Any = None


class CallLog:
    """An append-only list of :class:`Call`; in memory, or JSON lines in ``path``.

    Args:
        path: File to append to (created; truncated when ``truncate``); None keeps the
            calls in memory (in-process backends only).
        truncate: Start ``path`` empty.
    """

    def __init__(self, path: str | Path | None = None, *, truncate: bool = True) -> None:
        self._path = None if path is None else Path(path)
        self._calls: list[Call] = []
        if self._path is not None and truncate:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._path.write_text("")

    def append(self, call: Call) -> None:
        """Record one call."""
        if self._path is None:
            self._calls.append(call)
            return
        line = json.dumps([call.component, call.method, list(call.args), call.result])
        with self._path.open("a") as handle:
            handle.write(line + "\n")

    def calls(self) -> list[Call]:
        """Every call recorded so far, in order."""
        if self._path is None:
            return list(self._calls)
        out = []
        for line in self._path.read_text().splitlines():
            component, method, args, result = json.loads(line)
            out.append(Call(component, method, tuple(args), result))
        return out

    def __getstate__(self) -> dict[str, Any]:
        if self._path is None:
            raise TypeError("an in-memory CallLog cannot cross processes: give it a path")
        return {"_path": self._path, "_calls": []}


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return round(float(value), 12) if math.isfinite(float(value)) else None
    return value


def _fingerprint(rng: np.random.Generator) -> str:
    """A short digest of a generator's state: equal iff the states are equal."""
    state = json.dumps(rng.bit_generator.state, sort_keys=True, default=str)
    return hashlib.sha256(state.encode()).hexdigest()[:16]


_Inner = TypeVar("_Inner", BaseRouter, BaseStrategy)


class _Recorder(Generic[_Inner]):
    """What both recorders share: the wrapped component, its state, attribute fallback.

    Args:
        inner: The component to drive (unbound).
        log: Where the calls go.
    """

    def __init__(self, inner: _Inner, log: CallLog) -> None:
        super().__init__()
        self._inner: _Inner = inner
        self._log = log

    @property
    def inner(self) -> _Inner:
        """The wrapped component."""
        return self._inner

    def state_dict(self) -> dict[str, Any]:
        """The inner component's state."""
        return self._inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the inner component's state."""
        self._inner.load_state_dict(state)

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes the wrapper lacks: engines may read extra ones
        # (e.g. FedBuff's buffer_size). The guard keeps unpickling from recursing.
        if name.startswith("__") or name in {"_inner", "_log"}:
            raise AttributeError(name)
        return getattr(self._inner, name)


class RecordingRouter(_Recorder[BaseRouter], BaseRouter):
    """A router that delegates to ``inner`` and logs ``bind``, ``initial_clients``, ``route``.

    Args:
        inner: The router to drive (unbound).
        log: Where the calls go.
    """

    def bind(self, num_clients: int, rng: np.random.Generator) -> None:
        """Bind both; logs ``(num_clients, fingerprint of rng)``."""
        self._log.append(Call("router", "bind", (int(num_clients), _fingerprint(rng))))
        super().bind(num_clients, rng)
        self._inner.bind(num_clients, rng)

    def initial_clients(self, concurrency: int) -> list[int]:
        """Delegate; logs ``(concurrency,)`` and the clients."""
        clients = self._inner.initial_clients(concurrency)
        self._log.append(
            Call("router", "initial_clients", (int(concurrency),), _plain(list(clients)))
        )
        return clients

    def route(self, finished_client: int) -> int:
        """Delegate; logs ``(finished_client,)`` and the chosen client."""
        client = self._inner.route(finished_client)
        self._log.append(Call("router", "route", (int(finished_client),), int(client)))
        return client

    def routing_probabilities(self) -> np.ndarray | None:
        """The inner router's ``p``."""
        return self._inner.routing_probabilities()


class RecordingStrategy(_Recorder[BaseStrategy], BaseStrategy):
    """A strategy that delegates to ``inner`` and logs ``bind`` and ``apply``.

    ``apply`` is logged as ``(len(params), client_id, base_version, current_version)``
    with the result ``True`` when the model version advanced. ``client_work`` is a query
    that backends may ask any number of times, so it is not logged.

    Args:
        inner: The strategy to drive (unbound).
        log: Where the calls go.
    """

    def bind(self, num_clients: int, routing_probabilities: np.ndarray | None) -> None:
        """Bind both; logs ``(num_clients, p)``."""
        p = None if routing_probabilities is None else _plain(np.asarray(routing_probabilities))
        self._log.append(Call("strategy", "bind", (int(num_clients), p)))
        super().bind(num_clients, routing_probabilities)
        self._inner.bind(num_clients, routing_probabilities)

    def client_work(self) -> ClientWork:
        """The inner strategy's work."""
        return self._inner.client_work()

    def apply(self, params: np.ndarray, result: ClientResult) -> np.ndarray | None:
        """Delegate; logs the result's client and versions and whether the model moved."""
        new = self._inner.apply(params, result)
        args = (
            int(np.asarray(params).size),
            int(result.client_id),
            int(result.base_version),
            int(result.current_version),
        )
        self._log.append(Call("strategy", "apply", args, new is not None))
        return new


def check_call_order(calls: Sequence[Call], *, concurrency: int) -> None:
    """Check one backend's log against the documented call order.

    The order: ``router.bind``, then ``strategy.bind`` (absent in queue-only runs), then
    ``router.initial_clients(concurrency)`` once, then per completed task
    ``strategy.apply`` (when training) followed by ``router.route`` of that task's client.
    Versions: the ``k``-th apply that advanced the model moves ``current_version`` from
    ``k`` to ``k + 1``; every result's ``base_version <= current_version``.

    Args:
        calls: The log of one run (:meth:`CallLog.calls`).
        concurrency: The run's ``C``.

    Raises:
        AssertionError: The first violation, with its index and the calls around it.
    """

    def fail(i: int, rule: str) -> None:
        window = list(calls[max(0, i - 2) : i + 3])
        raise AssertionError(f"call {i}: {rule}; calls {max(0, i - 2)}..: {window}")

    if not calls or (calls[0].component, calls[0].method) != ("router", "bind"):
        fail(0, "the first call must be router.bind")
    i = 1
    training = i < len(calls) and (calls[i].component, calls[i].method) == ("strategy", "bind")
    if training:
        if calls[i].args[0] != calls[0].args[0]:
            fail(i, "router and strategy must be bound to the same number of clients")
        i += 1
    if i >= len(calls) or (calls[i].component, calls[i].method) != ("router", "initial_clients"):
        fail(i, "router.initial_clients must follow the binds")
    if calls[i].args != (concurrency,) or len(calls[i].result) != concurrency:
        fail(i, f"initial_clients must be asked for and return C={concurrency} clients")
    i += 1
    version = 0
    while i < len(calls):
        call = calls[i]
        if training:
            if (call.component, call.method) != ("strategy", "apply"):
                fail(i, "each completion must start with strategy.apply")
            _size, client, base, current = call.args
            if current != version or not 0 <= base <= current:
                fail(i, f"apply must see current_version={version} and base <= current")
            version += 1 if call.result else 0
            i += 1
            if i >= len(calls):
                break  # the run stopped after its last update: no replacement task
            route = calls[i]
            if (route.component, route.method) != ("router", "route") or route.args != (client,):
                fail(i, f"router.route({client}) must follow the apply of client {client}")
        elif (call.component, call.method) != ("router", "route"):
            fail(i, "a queue-only run calls only router.route after the start")
        i += 1


def protocol_view(calls: Sequence[Call]) -> dict[str, Any]:
    """What every backend must share for the same config and seed.

    The binds (clients, router generator state, ``p``), the initial clients, and the
    sequence of clients the router chose; completion order depends on timing, so finished
    clients are left out (for routers whose choice ignores the finished client, such as
    random routing, the chosen sequence is then the same on every backend).
    """
    return {
        "binds": [(c.component, c.args) for c in calls if c.method == "bind"],
        "initial_clients": [c.result for c in calls if c.method == "initial_clients"],
        "routes": [c.result for c in calls if c.method == "route"],
        "applies": sum(1 for c in calls if c.method == "apply"),
    }


class RecordingSink:
    """An in-memory :class:`~raysync.monitoring.MetricsSink` (tests, notebooks).

    Attributes:
        scalars: ``(step, tag, value, time)`` in the order logged.
        hparams: ``(hparams, metrics)`` of each ``log_hparams`` call.
        closed: Whether :meth:`close` was called.
    """

    def __init__(self) -> None:
        self.scalars: list[tuple[int, str, float, float]] = []
        self.hparams: list[tuple[dict[str, Any], dict[str, float]]] = []
        self.closed = False

    def log_scalars(self, step: int, scalars: Mapping[str, float], *, time: float) -> None:
        """Record ``scalars`` at ``step`` and ``time``.

        Raises:
            RuntimeError: The sink is closed.
        """
        if self.closed:
            raise RuntimeError("RecordingSink is closed")
        for tag, value in scalars.items():
            self.scalars.append((int(step), str(tag), float(value), float(time)))

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """Record one set of hyper-parameters with its metrics."""
        self.hparams.append((dict(hparams), {k: float(v) for k, v in metrics.items()}))

    def close(self) -> None:
        """Mark the sink closed (idempotent)."""
        self.closed = True

    def series(self, tag: str) -> list[tuple[int, float]]:
        """``(step, value)`` of one tag, in the order logged."""
        return [(s, v) for s, t, v, _ in self.scalars if t == tag]
