"""Entry point of the queueing engine: :func:`analyze`, and the lean :func:`curve_summary`.

Two guards keep every answer finite and every cost bounded:

* **Time unit.** The solvers work in the unit of the rates. When the service demands
  ``p_i / mu_i`` (or the latencies, or ``1 / server_rate``) are far from 1, e.g. rates
  of ``1e308`` or ``1e-308``, intermediate sums overflow or underflow. :func:`analyze`
  then solves the same network in a time unit ``2**e`` times larger (an exact power of
  two, so no rounding changes) in which the largest demand is about 1, and converts the
  time quantities back. A result that still is not finite (a throughput beyond
  ``1.8e308``) is refused with the reason, never returned as ``inf`` or NaN.
* **Size.** MVA and Buzen cost ``O(nC)`` time; the full curve (``curve=True``) also holds
  two ``C x n`` float64 matrices. Requests beyond :data:`MAX_SOLVER_STEPS` or
  :data:`MAX_CURVE_BYTES` are refused up front with the size they would need.
  :func:`curve_summary` gives ``Lambda(C')`` and the mean and largest ``E[D_i](C')`` for
  every ``C' <= C`` in the same single ``O(nC)`` MVA pass, in ``O(n + C)`` memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from raysync._validation import first_index
from raysync.exceptions import ComputeLimitError, ConfigError
from raysync.queueing._bruteforce import solve_bruteforce
from raysync.queueing._buzen import solve_buzen
from raysync.queueing._common import demands
from raysync.queueing._mva import solve_mva
from raysync.queueing.network import ClosedNetwork
from raysync.queueing.result import QueueingResult

__all__ = [
    "MAX_CURVE_BYTES",
    "MAX_SOLVER_STEPS",
    "METHODS",
    "CurveSummary",
    "Method",
    "analyze",
    "curve_summary",
]

Method = Literal["mva", "buzen", "bruteforce"]
METHODS: tuple[str, ...] = ("mva", "buzen", "bruteforce")
"""Solver names accepted by :func:`analyze`."""

MAX_CURVE_BYTES = 2**30
"""Largest memory (bytes) the full per-client curve of ``analyze(curve=True)`` may take."""

MAX_SOLVER_STEPS = 4 * 10**10
"""Largest ``C * (n + 4096)`` accepted by the ``O(nC)`` solvers (about a minute of CPU):
each of the ``C`` population steps costs a few vector operations over ``n`` clients plus
a fixed Python overhead worth about 4096 element operations."""

_STEP_OVERHEAD = 4096

#: Buzen's log-space convolution (``np.logaddexp.accumulate`` over the stations at each
#: population step) costs about this many MVA steps per client and step, plus twice the
#: fixed overhead (measured on the project's 2-core machine: 29-38 ns per client-step
#: against MVA's 0.6-0.9 ns, and 5.7 us per step). Counted as MVA steps, so one limit
#: holds for both and a Buzen pass accepted also ends in about a minute.
_BUZEN_CLIENT_STEPS = 40

#: Demands within ``[2**-_SAFE_EXP, 2**_SAFE_EXP]`` are solved in the rates' own unit.
_SAFE_EXP = 200


@dataclass(frozen=True, kw_only=True, eq=False)
class CurveSummary:
    """Throughput and staleness for every population ``C' = 1..C`` (one MVA pass).

    Arrays have shape ``(C,)``; entry ``k - 1`` belongs to population ``C' = k``.

    Attributes:
        concurrency: The largest population ``C``.
        n_clients: Number of clients ``n``.
        throughput: ``Lambda(C')`` (updates per unit time of the rates).
        mean_relative_delay: ``(1/n) sum_i E[D_i](C')`` (updates).
        max_relative_delay: ``max_i E[D_i](C')`` (updates).
    """

    concurrency: int
    n_clients: int
    throughput: NDArray[np.float64]
    mean_relative_delay: NDArray[np.float64]
    max_relative_delay: NDArray[np.float64]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe mapping (arrays as lists)."""
        return {
            "concurrency": self.concurrency,
            "n_clients": self.n_clients,
            "throughput": self.throughput.tolist(),
            "mean_relative_delay": self.mean_relative_delay.tolist(),
            "max_relative_delay": self.max_relative_delay.tolist(),
        }


def approx_text(value: int, unit: int = 1) -> str:
    """``value / unit`` to three significant digits (``%.3g``), for ints of any size.

    Shared with ``raysync analyze --curve`` and the optimiser's search-size check; not
    part of the public API.
    """
    try:
        return f"{value / unit:.3g}"
    except OverflowError:
        # A size computed from a C such as 10**400 is beyond the float range; Decimal
        # holds ints of any size (normalised after rounding, as %g drops trailing zeros).
        return f"{Decimal(f'{Decimal(value) / unit:.2e}').normalize():g}"


def _gib(nbytes: int) -> str:
    return f"{approx_text(nbytes, 2**30)} GiB"


def solver_steps(network: ClosedNetwork) -> int:
    """``C * (n + 4096)``: the cost of one ``O(nC)`` pass, in :data:`MAX_SOLVER_STEPS` units.

    Shared with ``raysync analyze --curve``; not part of the public API.
    """
    return network.concurrency * (network.n_clients + _STEP_OVERHEAD)


def _check_work(network: ClosedNetwork, method: str = "mva") -> None:
    c, n = network.concurrency, network.n_clients
    if method == "buzen":
        steps = c * (_BUZEN_CLIENT_STEPS * n + 2 * _STEP_OVERHEAD)
        cost = f", method 'buzen' needs C*({_BUZEN_CLIENT_STEPS}n+{2 * _STEP_OVERHEAD})"
        fix = (
            f"use method 'mva' (the default, exact, about {_BUZEN_CLIENT_STEPS}x cheaper per "
            "client) or a smaller concurrency"
        )
    else:
        steps = solver_steps(network)
        cost = f" needs C*(n+{_STEP_OVERHEAD})"
        fix = "use a smaller concurrency"
    if steps > MAX_SOLVER_STEPS:
        raise ComputeLimitError(
            f"concurrency C={c:,} with n={n:,} clients{cost} = {approx_text(steps)} "
            f"solver steps, more than the {MAX_SOLVER_STEPS:.3g} allowed (about a minute of "
            f"CPU); {fix}"
        )


def _check_curve_memory(network: ClosedNetwork) -> None:
    c, n = network.concurrency, network.n_clients
    need = 8 * c * (2 * n + 2)
    if need > MAX_CURVE_BYTES:
        raise ComputeLimitError(
            f"the full curve for C={c:,} and n={n:,} clients needs two C x n float64 "
            f"matrices = {_gib(need)}, more than the {_gib(MAX_CURVE_BYTES)} allowed; "
            "the lean MVA pass (curve_summary() in Python, --method mva --curve on the "
            "command line) gives Lambda and the mean and largest E[D_i] for every C' in "
            "O(n + C) memory"
        )


def _demand_exponent(network: ClosedNetwork) -> int:
    """``e`` such that the largest demand of the network is ``2**e`` times a number in [0.5, 1).

    Raises:
        ConfigError: A demand overflows float64 (a rate so small that ``p_i / mu_i``,
            or ``1 / server_rate``, is beyond ``1.8e308``).
    """
    return demand_exponent(network.p, network.mu, network.total_latency, network.server_rate)


def demand_exponent(
    p: NDArray[np.float64],
    mu: NDArray[np.float64],
    latency: NDArray[np.float64],
    server_rate: float | None,
) -> int:
    """:func:`_demand_exponent` of a network given by its arrays.

    Shared with the tiered solver: ``p``, ``mu`` and ``latency`` per client or per tier,
    shape ``(n,)``; not part of the public API.
    """
    with np.errstate(over="ignore", divide="ignore"):
        rho = p / mu
        parts = [float(np.max(rho)), float(np.max(latency))]
        if server_rate is not None:
            parts.append(1.0 / server_rate)
    j = first_index(~np.isfinite(rho))
    if j is not None:
        raise ConfigError(
            f"mu[{j}]={float(mu[j])!r} is too small: its demand p/mu = "
            f"{float(p[j])!r}/{float(mu[j])!r} overflows float64"
        )
    if not all(math.isfinite(v) for v in parts):
        raise ConfigError(
            f"server_rate={server_rate!r} is too small: 1/server_rate overflows float64"
        )
    largest = max(parts)
    return math.frexp(largest)[1] if largest > 0 else 0


def _rescaled(network: ClosedNetwork, exponent: int) -> tuple[ClosedNetwork, NDArray[np.bool_]]:
    """The network in a time unit ``2**exponent`` times larger; which clients were clamped.

    A client whose rate would overflow in the new unit has a demand below ``2**-1000``
    of the largest: it is clamped to a finite rate (its queue is empty to double
    precision either way) and its time quantities are recomputed in the old unit.
    """
    with np.errstate(over="ignore", under="ignore"):
        mu = np.ldexp(network.mu, exponent)
        clamped = ~np.isfinite(mu)
        mu = np.where(clamped, np.ldexp(1.0, 1000), mu)
        client_latency = (
            None
            if network.client_latency is None
            else np.ldexp(network.client_latency, -exponent)
        )
        server_rate = None
        if network.server_rate is not None:
            server_rate = _scaled_server_rate(network.server_rate, exponent)[0]
        scaled = ClosedNetwork(
            mu=mu,
            p=network.p,
            concurrency=network.concurrency,
            latency=math.ldexp(network.latency, -exponent),
            client_latency=client_latency,
            server_rate=server_rate,
        )
    return scaled, clamped


def _scale_back(
    result: QueueingResult, network: ClosedNetwork, exponent: int, clamped: NDArray[np.bool_]
) -> QueueingResult:
    """Convert a result solved in unit ``2**exponent`` back to the unit of the rates."""
    with np.errstate(over="ignore", under="ignore"):
        # np.ldexp, not math.ldexp: a throughput beyond float64 becomes inf (refused with
        # one line by _check_finite) instead of raising OverflowError here.
        lam = float(np.ldexp(result.throughput, -exponent))
        sojourn = np.ldexp(result.mean_sojourn_time, exponent)
        # clamped clients: empty queue to double precision, so T_i = 1 / mu_i
        sojourn = np.where(clamped, 1.0 / network.mu, sojourn)
        # ... and U_i = Q_i = X_i / mu_i (utilisation law), in the old unit: the solver saw
        # the clamped rate, not mu_i (a latency of 1e308 s clamps every client)
        busy = network.p * lam / network.mu
        utilization = np.where(clamped, busy, result.utilization)
        queue = np.where(clamped, busy, result.mean_queue_length)
        queue_curve = result.queue_length_curve
        curve = result.throughput_curve
        if queue_curve is not None and curve is not None and np.any(clamped):
            busy_curve = np.ldexp(curve, -exponent)[:, None] * (network.p / network.mu)
            queue_curve = np.where(clamped, busy_curve, queue_curve)
        server_util, server_queue = result.server_utilization, result.server_queue_length
        server_rate = network.server_rate
        if server_rate is not None and _scaled_server_rate(server_rate, exponent)[1]:
            server_util = server_queue = lam / server_rate
        return replace(
            result,
            throughput=lam,
            client_throughput=network.p * lam,
            utilization=utilization,
            mean_queue_length=queue,
            mean_sojourn_time=sojourn,
            server_utilization=server_util,
            server_queue_length=server_queue,
            throughput_curve=None if curve is None else np.ldexp(curve, -exponent),
            queue_length_curve=queue_curve,
        )


def _scaled_server_rate(server_rate: float, exponent: int) -> tuple[float, bool]:
    """The server's rate in unit ``2**exponent``, clamped to ``2**1000``; whether clamped.

    A clamped server has a demand below ``2**-999`` of the largest: its queue is empty to
    double precision, as for a clamped client.
    """
    try:
        scaled = math.ldexp(server_rate, exponent)
    except OverflowError:
        scaled = math.inf
    cap = math.ldexp(1.0, 1000)
    return min(scaled, cap), scaled > cap


def _check_finite(result: QueueingResult, network: ClosedNetwork) -> QueueingResult:
    refuse_unrepresentable(
        network.mu,
        {name: getattr(result, name)
         for name in ("throughput", "client_throughput", "mean_sojourn_time")},
        {name: getattr(result, name)
         for name in ("utilization", "mean_queue_length", "mean_relative_delay",
                      "mean_in_transit", "throughput_curve", "queue_length_curve",
                      "relative_delay_curve")},
    )  # fmt: skip
    return result


def refuse_unrepresentable(
    mu: NDArray[np.float64],
    timed: dict[str, Any],
    unitless: dict[str, Any],
) -> None:
    """Refuse, in one line, a result that float64 cannot hold.

    Shared with the tiered solver; not part of the public API. ``timed``: quantities in the
    rates' time unit, by name (``throughput`` among them), refused as beyond (or, for the
    throughput, below) the float64 range with a hint to change the unit; ``unitless``: the
    others (None entries skipped).

    Raises:
        ConfigError: A value is not finite, or the throughput is not positive.
    """
    rates = f"rates from {float(mu.min())!r} to {float(mu.max())!r}"
    for name, value in timed.items():
        values = np.atleast_1d(np.asarray(value, dtype=np.float64))
        if not np.all(np.isfinite(values)):
            raise ConfigError(
                f"the {name.replace('_', ' ')} of this network is beyond the float64 range "
                f"({rates}); express the rates in another time unit"
            )
    if timed["throughput"] <= 0:
        raise ConfigError(
            f"the throughput of this network is below the float64 range ({rates}); express "
            "the rates in another time unit"
        )
    for name, value in unitless.items():
        if value is not None and not np.all(np.isfinite(value)):
            raise ConfigError(
                f"the {name.replace('_', ' ')} of this network is not finite; the rates, "
                "latencies and server rate span too wide a range for float64"
            )


def analyze(
    network: ClosedNetwork, *, method: Method | str = "mva", curve: bool = False
) -> QueueingResult:
    """Compute the stationary performance of a closed network.

    Args:
        network: The network (service rates, routing, concurrency, optional stations).
        method: ``"mva"`` (exact Mean Value Analysis, the default: ``O(nC)``, stable for
            any size), ``"buzen"`` (Buzen's convolution with rescaling, ``O(nC)``, a
            cross-check) or ``"bruteforce"`` (the Markov chain solved exactly; small
            networks only, the reference of the tests).
        curve: Also return ``Lambda(C')``, ``Q_i(C')`` and ``E[D_i](C')`` for every
            ``C' = 1..C`` (one MVA or Buzen pass gives them all; two ``C x n`` matrices,
            at most :data:`MAX_CURVE_BYTES`; :func:`curve_summary` is the lean form).

    Returns:
        A frozen :class:`QueueingResult`; every number is finite.

    Raises:
        ConfigError: ``network`` is not a :class:`ClosedNetwork`, ``method`` is unknown,
            the solve would exceed :data:`MAX_SOLVER_STEPS` or the curve
            :data:`MAX_CURVE_BYTES` (the message gives the size), or a result is beyond
            the float64 range.
        ValueError: ``method="bruteforce"`` on a network whose state space is too large.
    """
    if not isinstance(network, ClosedNetwork):
        raise ConfigError(f"network must be a ClosedNetwork, got {type(network).__name__}")
    solvers = {"mva": solve_mva, "buzen": solve_buzen, "bruteforce": solve_bruteforce}
    if method not in solvers:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method != "bruteforce":
        _check_work(network, str(method))
    if curve:
        _check_curve_memory(network)
    exponent = _demand_exponent(network)
    solve = solvers[str(method)]
    if abs(exponent) <= _SAFE_EXP:
        return _check_finite(solve(network, curve=curve), network)
    scaled, clamped = _rescaled(network, exponent)
    result = _scale_back(solve(scaled, curve=curve), network, exponent, clamped)
    return _check_finite(result, network)


def curve_summary(network: ClosedNetwork) -> CurveSummary:
    """``Lambda(C')`` and the mean and largest ``E[D_i](C')`` for every ``C' = 1..C``.

    One exact MVA pass (docs/theory.md section 2), the same recursion as
    :func:`analyze` with ``method="mva"``, keeping only the current population's vectors:
    ``O(nC)`` time and ``O(n + C)`` memory, so ``C = 10**5`` with ``n = 2 * 10**4`` needs
    about 2 MB instead of 30 GiB. ``E[D_i](C') = Q_i(C'-1) / p_i + Z_i Lambda(C'-1) +
    Q_server(C'-1)`` (zero at ``C' = 1``).

    Args:
        network: The closed network.

    Returns:
        The per-population summary; every number is finite.

    Raises:
        ConfigError: The solve would exceed :data:`MAX_SOLVER_STEPS`, or a value is
            beyond the float64 range.
    """
    if not isinstance(network, ClosedNetwork):
        raise ConfigError(f"network must be a ClosedNetwork, got {type(network).__name__}")
    _check_work(network)
    exponent = _demand_exponent(network)
    solved = network
    if abs(exponent) > _SAFE_EXP:
        solved, _clamped = _rescaled(network, exponent)
    d = demands(solved)
    n, c = solved.n_clients, solved.concurrency
    rho, z, p = d.rho, d.z, solved.p
    lam_curve = np.empty(c)
    mean_delay = np.empty(c)
    max_delay = np.empty(c)
    q = np.zeros(n)
    w = np.empty(n)
    delay = np.empty(n)
    lam, qs = 0.0, 0.0
    for k in range(1, c + 1):
        # E[D_i] at population k from the population k - 1 state (arrival theorem)
        np.divide(q, p, out=delay)
        delay += z * lam + qs
        mean_delay[k - 1] = float(delay.mean())
        max_delay[k - 1] = float(delay.max())
        np.multiply(q, rho, out=w)
        w += rho
        ws = d.rho_server * (1.0 + qs)
        lam = k / (float(w.sum()) + d.z_total + ws)
        np.multiply(w, lam, out=q)
        qs = lam * ws
        lam_curve[k - 1] = lam
    if abs(exponent) > _SAFE_EXP:
        with np.errstate(over="ignore", under="ignore"):
            lam_curve = np.ldexp(lam_curve, -exponent)
    summary = CurveSummary(
        concurrency=c,
        n_clients=n,
        throughput=lam_curve,
        mean_relative_delay=mean_delay,
        max_relative_delay=max_delay,
    )
    for name in ("throughput", "mean_relative_delay", "max_relative_delay"):
        values = getattr(summary, name)
        if not np.all(np.isfinite(values)) or (name == "throughput" and values.min() <= 0):
            raise ConfigError(
                f"the curve's {name.replace('_', ' ')} is beyond the float64 range; express "
                "the rates in another time unit"
            )
    return summary
