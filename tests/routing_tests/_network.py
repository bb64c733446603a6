"""A hand-written closed network that drives a router as the engines do (test helper).

``C`` tasks circulate among ``n`` clients; each client serves its queue one task at a time,
in FIFO order, with exponential service times (the closed network of docs/theory.md); after
every completion the router gets ``observe(client, duration, now)`` and then
``route(client)``, exactly the engines' call order.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

import numpy as np

from raysync.routing import BaseRouter

#: ``mu_of(k)``: the rates, shape ``(n,)``, for a service that starts after ``k`` completions.
Rates = Callable[[int], np.ndarray]


def closed_network(
    router: BaseRouter,
    mu_of: Rates | np.ndarray,
    updates: int,
    *,
    concurrency: int,
    seed: int,
    after: Callable[[int, float, list[float]], None] | None = None,
) -> float:
    """Serve ``updates`` completions; return the clock at the last one.

    Args:
        router: A bound router (``initial_clients`` not yet called).
        mu_of: Rates, or a function of the completion count giving them.
        updates: Completions to serve.
        concurrency: Tasks in flight ``C``.
        seed: Seed of the service times.
        after: Called after each completion and its replacement's dispatch with the
            count, the clock and each client's service start of its task in service
            (nan when idle).

    Returns:
        The clock (seconds) of the last completion.
    """
    rates: Rates = mu_of if callable(mu_of) else (lambda k: np.asarray(mu_of))  # type: ignore[assignment]
    n = router.num_clients
    rng = np.random.default_rng(seed)
    queued = [0] * n
    began = [float("nan")] * n
    events: list[tuple[float, int]] = []
    done = 0

    def start(j: int, t: float) -> None:
        began[j] = t
        heapq.heappush(events, (t + float(rng.exponential(1.0 / rates(done)[j])), j))

    def dispatch(j: int, t: float) -> None:
        queued[j] += 1
        if queued[j] == 1:
            start(j, t)

    for j in router.initial_clients(concurrency):
        dispatch(j, 0.0)
    now = 0.0
    for k in range(updates):
        now, i = heapq.heappop(events)
        duration = now - began[i]
        queued[i] -= 1
        done = k + 1
        router.observe(i, duration, now)
        if queued[i]:
            start(i, now)  # FIFO: the next queued task starts as this one ends
        else:
            began[i] = float("nan")
        dispatch(router.route(i), now)
        if after is not None:
            after(done, now, list(began))
    return now
