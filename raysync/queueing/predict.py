"""The theory's prediction for a whole :class:`~raysync.config.SystemConfig`.

Random routing (``fixed`` or ``uniform``) is a closed Jackson network
(:func:`~raysync.queueing.analyze`). Return to sender (AsyncSGD) is not a random routing:
each client holds exactly one task forever, so the clients are ``n`` independent renewal
cycles. There, client ``i`` completes ``mu_i`` tasks per unit time, the update throughput is
``sum_j mu_j``, and a task served by client ``i`` waits one service time ``S_i`` during which
each other (stationary, independent) client ``j`` completes ``mu_j E[S_i]`` tasks on
average, so ``E[D_i] = sum_{j != i} mu_j / mu_i``. Both facts hold for any non-lattice
service-time distribution, not only the exponential.

Communication delays and the server station (docs/network.md). A client's ``downlink`` and
``uplink`` specs are infinite-server stations of mean ``Z_i = E[down_i] + E[up_i]`` and the
``[server]`` table's ``update_time`` is a single FIFO server of rate ``1 / E[update]``,
visited once per update (:class:`~raysync.queueing.ClosedNetwork`, BCMP product form:
exact for exponential client and server times, any delay law). Return to sender with
delays but no server station is still ``n`` independent cycles, of mean length
``Z_i + 1 / mu_i``: client ``i`` completes ``x_i = 1 / (Z_i + 1 / mu_i)`` tasks per unit time
and ``E[D_i] = (Z_i + 1 / mu_i) sum_{j != i} x_j`` (renewal-reward, any non-lattice law).
With a server station the cycles interact through its queue: no closed form here.

Buffered updates (FedBuff). The network's updates are task completions, so its delays
count completions. A server that applies one model version per ``B`` completions sees a
task dispatched after completion ``m`` and consumed after completion ``m'`` as
``floor(m'/B) - floor(m/B)`` versions stale, whose mean is exactly ``E[m' - m] / B`` when
the buffer's phase ``m mod B`` at dispatch is uniform and independent of the queues (true
in steady state: the queues do not depend on the buffer). :func:`predict` records ``B``
in the result's ``buffer_size``, whose ``mean_version_delay`` gives the delays in versions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from raysync._validation import first_index
from raysync.exceptions import ComputeLimitError, ConfigError
from raysync.queueing.analysis import analyze
from raysync.queueing.network import ClosedNetwork
from raysync.queueing.result import QueueingResult

if TYPE_CHECKING:
    from raysync.config import SystemConfig

__all__ = [
    "analyze_independent_cycles",
    "buffer_size",
    "network_of",
    "no_closed_form",
    "predict",
    "predict_or_reason",
    "station_parameters",
]

INDEPENDENT_CYCLES = "independent_cycles"


def _cycles_with_latency(mu: NDArray[np.float64], latency: NDArray[np.float64]) -> QueueingResult:
    """Return-to-sender cycles of mean ``Z_i + 1 / mu_i`` (one task per client, no server)."""
    n = mu.size
    cycle = latency + 1.0 / mu
    rate = 1.0 / cycle
    total = float(rate.sum())
    others = total - rate  # rates are of one order here: no catastrophic cancellation
    delay = cycle * others
    utilization = rate / mu
    return QueueingResult(
        throughput=total,
        client_throughput=rate,
        utilization=utilization,
        mean_queue_length=utilization,
        mean_sojourn_time=1.0 / mu,
        mean_relative_delay=delay,
        mean_staleness=float((rate * delay).sum() / total),
        concurrency=n,
        n_clients=n,
        method=INDEPENDENT_CYCLES,
        mean_in_transit=rate * latency,
    )


def analyze_independent_cycles(mu: Sequence[float] | NDArray[np.float64]) -> QueueingResult:
    """Stationary numbers of return-to-sender routing (AsyncSGD, ``C = n``).

    Numerics: the delays ``E[D_i] = (sum_{j != i} mu_j) / mu_i`` use prefix and suffix sums
    (``sum mu - mu_i`` would cancel to 0 for a client that dominates the sum, e.g.
    ``mu = (1e9, 1e-9)`` gives ``E[D_0] = 1e-18``, not 0), and every sum is taken in the
    unit of the largest rate, so rates up to the float maximum do not overflow. A
    quantity that itself is beyond the float range (a throughput above ``1.8e308``, a
    delay ratio above it, a sojourn time ``1 / mu_i`` of a subnormal rate) is refused.

    Args:
        mu: Service rates, one per client, all > 0.

    Returns:
        A :class:`QueueingResult` with ``method = "independent_cycles"``: throughput
        ``sum mu``, every client always busy with one task, ``E[D_i] = (sum mu - mu_i) /
        mu_i`` and ``mean_staleness = n - 1``.

    Raises:
        ConfigError: A rate is not finite and positive, or a result is beyond the float
            range (the message names the client, the value and the rule).
    """
    rates = np.asarray(mu, dtype=np.float64)
    if rates.ndim != 1 or rates.size == 0:
        raise ConfigError(f"mu must be a non-empty 1-D list of rates, got shape {rates.shape}")
    for i, rate in enumerate(rates):
        if not np.isfinite(rate) or rate <= 0:
            raise ConfigError(f"mu[{i}] must be > 0, got {float(rate)!r}")
    n = rates.size
    top = float(rates.max())
    scaled = rates / top  # in (0, 1]: no sum below can overflow
    with np.errstate(over="ignore", divide="ignore", under="ignore"):
        total_scaled = float(scaled.sum())
        total = total_scaled * top
        before = np.concatenate(([0.0], np.cumsum(scaled)[:-1]))
        after = np.concatenate((np.cumsum(scaled[::-1])[::-1][1:], [0.0]))
        others = before + after  # sum_{j != i} mu_j / top, no cancellation
        delay = others / scaled
        sojourn = 1.0 / rates
    if not math.isfinite(total):
        raise ConfigError(
            f"the update throughput sum(mu) = {total_scaled!r} x {top!r} is beyond the "
            f"float range (1.8e308); express the rates in a larger time unit"
        )
    for name, values, rule in (
        (
            "E[D_i] = sum_{j != i} mu_j / mu_i",
            delay,
            "the rates must span less than a factor of 1.8e308",
        ),
        (
            "mean sojourn time 1 / mu_i",
            sojourn,
            "rates must be at least 5.6e-309 (express them in a larger time unit)",
        ),
    ):
        k = first_index(~np.isfinite(values))
        if k is not None:
            raise ConfigError(
                f"{name} is beyond the float range for client {k} (mu[{k}] = "
                f"{float(rates[k])!r}): {rule}"
            )
    ones = np.ones(n)
    # Update-weighted staleness sum_i (mu_i / total) E[D_i] = sum_i others_i / total.
    staleness = float((others / total_scaled).sum())
    return QueueingResult(
        throughput=total,
        client_throughput=rates.copy(),
        utilization=ones,
        mean_queue_length=ones,
        mean_sojourn_time=sojourn,
        mean_relative_delay=delay,
        mean_staleness=staleness,
        concurrency=n,
        n_clients=n,
        method=INDEPENDENT_CYCLES,
    )


def buffer_size(config: SystemConfig) -> int:
    """Completions per model version of a config: FedBuff's ``buffer_size``, else 1."""
    algorithm = config.algorithm
    return int(algorithm.buffer_size) if algorithm.name == "fedbuff" else 1


def station_parameters(config: SystemConfig) -> tuple[NDArray[np.float64] | None, float | None]:
    """The latency and server stations a config describes.

    Args:
        config: The system configuration.

    Returns:
        ``(client_latency, server_rate)``: per-client mean delays ``Z_i = E[downlink_i] +
        E[uplink_i]`` in seconds, shape ``(n,)`` (None when no client has a delay), and the
        server station's rate ``1 / E[update_time]`` per second (None without one).
    """
    latency = None
    if any(c.downlink is not None or c.uplink is not None for c in config.clients):
        latency = np.array(
            [
                sum(s.mean_duration for s in (c.downlink, c.uplink) if s is not None)
                for c in config.clients
            ],
            dtype=np.float64,
        )
    server = config.server
    rate = None
    if server is not None and server.update_time is not None:
        rate = server.update_time.service_rate
    return latency, rate


def network_of(config: SystemConfig) -> ClosedNetwork:
    """The closed network of a config with random routing, stations included.

    Raises:
        ConfigError: The routing is ``return_to_sender`` (not a random routing).
    """
    latency, rate = station_parameters(config)
    return ClosedNetwork.from_config(config, client_latency=latency, server_rate=rate)


_NO_CYCLES_FORM = (
    "routing 'return_to_sender' with a [server] update_time has no closed form (the "
    "clients' cycles interact through the server queue)"
)


def no_closed_form(config: SystemConfig) -> str | None:
    """Why :func:`predict` has no closed form for ``config``, or None when it has one.

    Return to sender with a server station (``[server] update_time``): the clients'
    cycles interact through the server's queue (docs/network.md; the simulator is the
    reference there).
    """
    if config.routing_probabilities is None and station_parameters(config)[1] is not None:
        return _NO_CYCLES_FORM
    return None


def predict(config: SystemConfig) -> QueueingResult:
    """The closed-form prediction for a config, whatever its routing.

    Rates are ``1 / mean`` of each client's service time: exact for exponential service
    with random routing, and for any service distribution with return to sender;
    otherwise an approximation whose error the simulator measures. Communication delays
    and the server's update time enter as the stations of :func:`station_parameters`.

    Args:
        config: The system configuration.

    Returns:
        :func:`analyze` of the config's closed network for ``fixed``/``uniform`` routing,
        :func:`analyze_independent_cycles` for ``return_to_sender``; delays in
        completions, with ``buffer_size`` set to the config's completions per model
        version (so ``mean_version_delay`` is the staleness a FedBuff server sees).

    Raises:
        ConfigError: Return to sender with a server station (its cycles interact through
            the server's queue; no closed form here: simulate it).
    """
    if config.routing_probabilities is None:
        latency, rate = station_parameters(config)
        if rate is not None:  # no_closed_form's case
            raise ConfigError(
                f"{_NO_CYCLES_FORM}; use `raysync simulate` or random routing (fixed/uniform)"
            )
        mu = np.asarray(config.service_rates, dtype=np.float64)
        if latency is None:
            res = analyze_independent_cycles(mu)
        else:
            res = _cycles_with_latency(mu, latency)
    else:
        res = analyze(network_of(config))
    big = buffer_size(config)
    return res if big == 1 else dataclasses.replace(res, buffer_size=big)


def predict_or_reason(config: SystemConfig) -> QueueingResult | str:
    """:func:`predict`, or why a command's theory column has none (one sentence).

    The prediction is an extra beside a run (``simulate``, ``run``): where there is no
    closed form (:func:`no_closed_form`) or its analysis exceeds the solver's limits
    (:class:`~raysync.exceptions.ComputeLimitError`; ``C = 10**7`` with 4 clients
    simulates in seconds, its MVA pass would take minutes), the run goes on without it.

    Raises:
        ConfigError: Anything else :func:`predict` refuses.
    """
    missing = no_closed_form(config)
    if missing is not None:
        return missing
    try:
        return predict(config)
    except ComputeLimitError as exc:
        return f"its analysis was not computed ({exc})"
