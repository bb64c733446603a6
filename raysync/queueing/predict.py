"""The theory's prediction for a whole :class:`~raysync.config.SystemConfig`.

Random routing (``fixed`` or ``uniform``) is a closed Jackson network
(:func:`~raysync.queueing.analyze`). Return to sender (AsyncSGD) is not a random routing:
each client holds exactly one task forever, so the clients are ``n`` independent renewal
cycles. There, client ``i`` completes ``mu_i`` tasks per unit time, the update throughput is
``sum_j mu_j``, and a task served by client ``i`` waits one service time ``S_i`` during which
each other (stationary, independent) client ``j`` completes ``mu_j E[S_i]`` tasks on
average, so ``E[D_i] = sum_{j != i} mu_j / mu_i``. Both facts hold for any non-lattice
service-time distribution, not only the exponential.

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

from raysync.exceptions import ConfigError
from raysync.queueing.analysis import analyze
from raysync.queueing.network import ClosedNetwork
from raysync.queueing.result import QueueingResult

if TYPE_CHECKING:
    from raysync.config import SystemConfig

__all__ = ["analyze_independent_cycles", "buffer_size", "predict"]

INDEPENDENT_CYCLES = "independent_cycles"


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
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            i = int(bad[0])
            raise ConfigError(
                f"{name} is beyond the float range for client {i} (mu[{i}] = "
                f"{float(rates[i])!r}): {rule}"
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


def predict(config: SystemConfig) -> QueueingResult:
    """The closed-form prediction for a config, whatever its routing.

    Rates are ``1 / mean`` of each client's service time: exact for exponential service
    with random routing, and for any service distribution with return to sender;
    otherwise an approximation whose error the simulator measures.

    Args:
        config: The system configuration.

    Returns:
        :func:`analyze` of the config's closed network for ``fixed``/``uniform`` routing,
        :func:`analyze_independent_cycles` for ``return_to_sender``; delays in
        completions, with ``buffer_size`` set to the config's completions per model
        version (so ``mean_version_delay`` is the staleness a FedBuff server sees).
    """
    if config.routing_probabilities is None:
        res = analyze_independent_cycles(config.service_rates)
    else:
        res = analyze(ClosedNetwork.from_config(config))
    big = buffer_size(config)
    return res if big == 1 else dataclasses.replace(res, buffer_size=big)
