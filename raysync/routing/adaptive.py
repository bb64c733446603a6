"""Adaptive routing: re-optimise ``p`` from online rate estimates while the run goes on.

:class:`AdaptiveRouter` owns an :class:`~raysync.routing.estimation.OnlineRateEstimator`.
The engines (simulator and Ray runtime) call :meth:`AdaptiveRouter.observe` with the
service time of every finished task right before :meth:`~AdaptiveRouter.route`; every
``reoptimize_every`` updates (or ``reoptimize_seconds`` of clock) the router minimises a
bound over ``p`` for the current estimates at the run's ``C``: the wall-clock bound of
docs/theory.md section 5 (``objective="wall_clock"``, with the existing optimiser
:func:`raysync.objectives.optimize_routing`) or the bias-aware bound of section 6
(``objective="bias_aware"``, :class:`raysync.objectives.BiasAwareBound` with the
Cauchy-Schwarz bias term ``2 n ||r - u||^2 zeta^2`` at the strategy's weight exponent
``beta``), raises every client to at least ``explore / m`` of the tasks (``m`` available
clients) so every client keeps being measured, and swaps its routing. At the start the
checks come sooner (warm-up: after ``n``, ``2 n``, ``4 n``, ... updates until the gap is
``reoptimize_every``), and the age of every service in progress counts as a censored
duration, so clients that have not answered yet are known to be slow. Tasks in
flight are never touched: the new ``p`` only decides where *future* tasks go, so every
queued task stays where it is, in its client's FIFO order. Every change is kept in
:attr:`AdaptiveRouter.changes` and logged (docs/adaptive.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from raysync._validation import MAX_ROUTER_VALUE
from raysync.exceptions import CheckpointError, ConfigError
from raysync.routing.estimation import OnlineRateEstimator
from raysync.routing.fixed import _DEFAULT_BLOCK, _BlockRouter

__all__ = [
    "DEFAULT_CONSTANTS",
    "DEFAULT_HORIZON",
    "OBJECTIVES",
    "AdaptiveRouter",
    "RoutingChange",
    "with_floor",
]

logger = logging.getLogger(__name__)

#: ``(L, sigma^2, M^2, A)`` used when none are given: placeholders of the right order for
#: small models; measure the real ones with ``raysync.objectives.estimate_constants``.
DEFAULT_CONSTANTS = (1.0, 1.0, 0.0, 1.0)

#: ``T`` of the wall-clock criterion, seconds, when ``routing.horizon`` is not given.
DEFAULT_HORIZON = 1000.0

#: What the router minimises: the section-5 wall-clock bound or the section-6 bias-aware one.
OBJECTIVES = ("wall_clock", "bias_aware")


@dataclass(frozen=True, eq=False)
class RoutingChange:
    """One swap of the routing.

    Attributes:
        update: Updates (completions) observed when the swap happened.
        time: Clock of the swap (seconds, the engine's clock).
        p: The new routing, shape ``(n,)`` (0 for unavailable clients).
        rates: Estimated ``mu_i`` the optimum was computed for, shape ``(n,)``.
        predicted_throughput: ``Lambda(p, C)`` the queueing model predicts for the new
            ``p`` at the estimated rates (updates per second).
        reason: Why it happened (``"schedule"``, ``"availability"``, ``"initial"``).
        objective: The bound minimised (``"wall_clock"`` or ``"bias_aware"``).
    """

    update: int
    time: float
    p: np.ndarray
    rates: np.ndarray
    predicted_throughput: float
    reason: str = field(default="schedule")
    objective: str = field(default="wall_clock")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe mapping."""
        return {
            "update": self.update,
            "time": self.time,
            "p": self.p.tolist(),
            "rates": self.rates.tolist(),
            "predicted_throughput": self.predicted_throughput,
            "reason": self.reason,
            "objective": self.objective,
        }


def _count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _number(name: str, value: object, *, low: float, low_open: bool, high: float) -> float:
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    number = float(value) if ok else math.nan  # type: ignore[arg-type]
    inside = (number > low if low_open else number >= low) and number <= high
    if not (ok and math.isfinite(number) and inside):
        bracket = "(" if low_open else "["
        raise ConfigError(f"{name} must be a number in {bracket}{low:g}, {high:g}], got {value!r}")
    return number


def _routing_names(message: str, horizon: float = DEFAULT_HORIZON) -> str:
    """A bound's error about ``constants.L`` or ``time_budget`` in the router's own fields."""
    for j, name in enumerate(("L", "sigma2", "M2", "A")):
        message = message.replace(f"constants.{name} ", f"routing.constants[{j}] ({name}) ")
    if message.startswith("constants "):
        message = "routing." + message
    if message.startswith("time_budget "):
        # the budget is the router's horizon, checked here against the estimated rates
        default = " (the default when not given)" if horizon == DEFAULT_HORIZON else ""
        rest = message[len("time_budget ") :].replace(f"{horizon:g} s", "", 1).lstrip()
        message = f"routing.horizon = {horizon:g} s{default} {rest} (at the estimated rates)"
    return message


def with_floor(p: np.ndarray, floor: float) -> np.ndarray:
    """``p`` with every entry raised to at least ``floor``, the rest scaled down to sum 1.

    Entries at or above the floor keep their ratios; the result is the distribution closest
    to ``p`` in that sense with ``min_i p_i >= floor`` (entries pushed below the floor by the
    scaling are fixed at it in turn, at most ``m`` rounds).

    Args:
        p: Non-negative weights, shape ``(m,)``, positive sum.
        floor: Lower bound per entry, ``0 <= floor <= 1 / m``.

    Returns:
        The floored distribution, shape ``(m,)``, summing to 1.
    """
    q = np.asarray(p, dtype=np.float64) / float(np.sum(p))
    if floor <= 0.0:
        return q
    fixed = q < floor
    while True:
        free_mass = float(q[~fixed].sum())
        if free_mass <= 0.0:  # every entry at the floor: floor * m == 1
            return np.full(q.size, 1.0 / q.size)
        out = np.where(fixed, floor, q * (1.0 - floor * fixed.sum()) / free_mass)
        below = ~fixed & (out < floor)
        if not below.any():
            return out
        fixed |= below


_CONTROLLER: list[Any] = []
#: Logit box of the bias-aware optimiser (as in :func:`raysync.objectives.optimize_bias_aware`).
_LOGIT_BOUND = 40.0


def _single_threaded() -> Any:
    """A context with BLAS/OpenMP pools at one thread.

    The optimiser works on ``n``-vectors: with a loaded machine, L-BFGS-B's BLAS calls
    spinning up thread pools made one re-optimisation 15x slower (0.28 s vs 0.019 s for
    five clients, measured on 2 cores at load 15).
    """
    from threadpoolctl import ThreadpoolController

    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0].limit(limits=1)


#: Draws :meth:`AdaptiveRouter.route` makes at most under ``single_probe``.
_PROBE_DRAWS = 64


class AdaptiveRouter(_BlockRouter):
    """Random routing whose ``p`` is re-optimised from estimated service rates.

    Args:
        reoptimize_every: Re-optimise after this many updates (integer ``>= 1``).
        reoptimize_seconds: Also re-optimise when this much clock time passed since the
            last optimisation (``> 0``; None: by updates only).
        constants: ``(L, sigma^2, M^2, A)`` of the bound (:data:`DEFAULT_CONSTANTS`).
        horizon: Time budget ``T`` of the wall-clock criterion, seconds (``> 0``).
        explore: Exploration floor, in ``[0, 1)``: every one of the ``m`` available
            clients gets at least ``explore / m`` of the tasks, the mass above the floor
            scaled to keep the sum 1 (:func:`with_floor`), so every client keeps being
            measured; 0 trusts the optimum fully. (A uniform mixture ``(1 - explore) p* +
            explore / m`` gave the same guarantee but also moved mass off an optimum that
            already routes to everyone: 1 % cost 2 % of the throughput in benchmark (a).)
        min_change: Skip a scheduled re-optimisation unless some estimated rate moved by
            more than this relative amount since the last one (``>= 0``; saves optimiser
            calls in stationary phases).
        change_confidence: Significance gate, a level in ``(0, 1)`` (None: off). A
            scheduled re-optimisation then keeps, for each client, the rate the current
            ``p`` was computed from (at first the estimator's prior) unless it lies outside
            the estimate's two-sided interval at this level, in which case the client's
            rate becomes its estimate; with no such client it is skipped. Sampling noise of
            rarely routed clients then no longer moves ``p`` away from the optimum, while a
            real change (a tier 5x slower) leaves the interval within a few observations
            (docs/adaptive.md section 2).
        initial_p: Routing before any estimate (uniform when None).
        window: Sliding window of the default estimator (integer ``>= 2``).
        estimator: The rate estimator (default: exponential method, ``window``, pooled
            prior of weight 1).
        block_size: Draws pre-drawn at a time (dropped at every swap).
        objective: ``"wall_clock"`` (docs/theory.md section 5) or ``"bias_aware"``
            (section 6: ``2 x`` the section-5 bound with ``S_beta`` and ``Dbar_r``, plus
            ``2 n ||r - u||^2 zeta^2``).
        zeta2: Gradient heterogeneity ``zeta^2 >= 0`` (required by ``"bias_aware"``, refused
            otherwise): from the config (``routing.zeta2``) or a pilot,
            :func:`raysync.objectives.estimate_constants_for_config` (its ``zeta2``).
        weight_exponent: The strategy's ``beta`` in ``[0, 1]`` (Generalized AsyncSGD's
            weights ``(n p_i) ** -beta``; the config passes ``algorithm.weight_exponent``).
            Only ``"bias_aware"`` uses it; at ``beta = 1`` the mix ``r`` is uniform, the
            bias term vanishes and the optimum is the section-5 one.
        warmup: First scheduled re-optimisation after this many updates (integer ``>= 0``;
            None: the number of clients), the next ones after ``2 w``, ``4 w``, ... (the gap
            doubles) until the gap reaches ``reoptimize_every``; 0: every
            ``reoptimize_every`` from the start. A router that starts without the rates
            otherwise keeps routing a third of the tasks to clients 25x slower for its first
            ``reoptimize_every`` updates, whose queues then hold most of the tasks in flight
            (docs/adaptive.md section 2).
        censoring: Count the age of every service in progress as a right-censored duration
            (the exponential estimator's ``in_service``; docs/adaptive.md section 1): the
            router notes each dispatch and completion (FIFO, one task served at a time per
            client, the closed network's stations) to know those ages. If an engine breaks
            the call order (``observe`` then ``route`` once per completion) the router
            notices and estimates without ages from then on.
        refresh: With the gate and the pooled prior: a client's reference rate that rests
            on no evidence of its own (the pooled prior) is replaced by its estimate at
            every check, and a reference set from ``N`` durations again once the estimate
            rests on ``2 N`` (so at most ``log2(window)`` times per client besides the
            gate). An explicit prior (``prior_rate``, e.g. the configured rates) is trusted
            until the gate rejects it.
        single_probe: A client with no finished service yet (nothing known of its rate
            but the prior) gets at most one task at a time: a draw that lands on such a
            client while its first task is still in service is drawn again. Without it the
            uniform start queues tasks behind the first one at clients 25x slower, where
            they hold most of the concurrency for seconds; with it the start of benchmark
            (a) completed 49 % more updates in its first 5 s (docs/adaptive.md section 2).
            Needs the in-service bookkeeping of ``censoring`` (off with it).

    Raises:
        ConfigError: An argument breaks its rule (one line naming it and the value).
    """

    observes_service_times = True

    def __init__(
        self,
        *,
        reoptimize_every: int = 100,
        reoptimize_seconds: float | None = None,
        constants: Sequence[float] | None = None,
        horizon: float = DEFAULT_HORIZON,
        explore: float = 0.01,
        min_change: float = 0.05,
        initial_p: Sequence[float] | np.ndarray | None = None,
        window: int = 200,
        estimator: OnlineRateEstimator | None = None,
        block_size: int = _DEFAULT_BLOCK,
        objective: str = "wall_clock",
        zeta2: float | None = None,
        weight_exponent: float = 1.0,
        change_confidence: float | None = None,
        warmup: int | None = None,
        censoring: bool = True,
        refresh: bool = True,
        single_probe: bool = True,
    ) -> None:
        super().__init__(block_size=block_size)
        from raysync.objectives.bounds import ProblemConstants

        self.reoptimize_every = _count("routing.reoptimize_every", reoptimize_every, 1)
        self.reoptimize_seconds = (
            None
            if reoptimize_seconds is None
            else _number(
                "routing.reoptimize_seconds", reoptimize_seconds, low=0, low_open=True,
                high=math.inf,
            )
        )  # fmt: skip
        values = DEFAULT_CONSTANTS if constants is None else tuple(constants)
        if len(values) != 4:
            raise ConfigError(
                f"routing.constants must be four numbers L, sigma2, M2, A, got {values!r}"
            )
        try:
            self.constants = ProblemConstants(
                L=values[0], sigma2=values[1], M2=values[2], A=values[3]
            )
        except ConfigError as exc:  # name the field the user wrote, not the bound's
            raise ConfigError(_routing_names(str(exc))) from exc
        self.horizon = _number("routing.horizon", horizon, low=0, low_open=True,
                               high=MAX_ROUTER_VALUE)
        self.explore = _number("routing.explore", explore, low=0, low_open=False, high=1)
        if self.explore == 1:
            raise ConfigError("routing.explore must be < 1 (some routing by the optimum), got 1")
        self.min_change = _number("routing.min_change", min_change, low=0, low_open=False,
                                  high=math.inf)  # fmt: skip
        self._initial_p = None if initial_p is None else np.array(initial_p, dtype=np.float64)
        self.window = _count("routing.window", window, 2)
        if objective not in OBJECTIVES:
            raise ConfigError(
                f"routing.objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}"
            )
        self.objective = objective
        if objective == "bias_aware" and zeta2 is None:
            raise ConfigError(
                "routing.objective 'bias_aware' needs routing.zeta2 (gradient heterogeneity "
                ">= 0; measure it with raysync.objectives.estimate_constants_for_config)"
            )
        if objective != "bias_aware" and zeta2 is not None:
            raise ConfigError(
                f"routing.zeta2 is only allowed with objective 'bias_aware', got {zeta2!r}"
            )
        self.zeta2 = (
            None if zeta2 is None
            else _number("routing.zeta2", zeta2, low=0, low_open=False, high=MAX_ROUTER_VALUE)
        )  # fmt: skip
        self.weight_exponent = _number(
            "routing.weight_exponent", weight_exponent, low=0, low_open=False, high=1
        )
        self.change_confidence: float | None = None
        if change_confidence is not None:
            level = _number("routing.change_confidence", change_confidence, low=0, low_open=True,
                            high=1)  # fmt: skip
            if level == 1:
                raise ConfigError(
                    f"routing.change_confidence must be a number in (0, 1), got {level!r}"
                )
            self.change_confidence = level
        self.warmup = None if warmup is None else _count("routing.warmup", warmup, 0)
        if not isinstance(censoring, bool | np.bool_):
            raise ConfigError(f"routing.censoring must be true or false, got {censoring!r}")
        self.censoring = bool(censoring)
        if not isinstance(refresh, bool | np.bool_):
            raise ConfigError(f"routing.refresh must be true or false, got {refresh!r}")
        self.refresh = bool(refresh)
        if not isinstance(single_probe, bool | np.bool_):
            raise ConfigError(f"routing.single_probe must be true or false, got {single_probe!r}")
        self.single_probe = bool(single_probe)
        self._estimator_arg = estimator
        self.estimator: OnlineRateEstimator | None = estimator
        self._p = np.zeros(0)
        self._cdf = np.zeros(0)
        self._available = np.zeros(0, dtype=bool)
        self._concurrency = 1
        self._started = False
        self._updates = 0
        self._last_update = 0
        self._last_time = 0.0
        self._last_rates: np.ndarray | None = None
        self._ref_counts: np.ndarray | None = None
        self._optimum: np.ndarray | None = None
        self.routing_version = 0
        self.changes: list[RoutingChange] = []
        self._warmup = 0
        self._reset_in_flight(0)

    # ------------------------------------------------------------------ contract
    def bind(self, num_clients: int, rng: np.random.Generator) -> None:
        """Attach to the fleet; starts from ``initial_p`` (uniform by default).

        Raises:
            ConfigError: ``initial_p`` or the estimator does not match ``num_clients``.
        """
        super().bind(num_clients, rng)
        est = self._estimator_arg
        if est is None:
            est = OnlineRateEstimator(num_clients, window=self.window)
        elif est.num_clients != num_clients:
            raise ConfigError(
                f"the estimator is for {est.num_clients} clients, the fleet has {num_clients}"
            )
        self.estimator = est
        self._available = np.ones(num_clients, dtype=bool)
        p = np.full(num_clients, 1.0 / num_clients) if self._initial_p is None else self._initial_p
        if p.shape != (num_clients,) or not np.all(np.isfinite(p) & (p > 0)):
            raise ConfigError(
                f"routing initial_p must be {num_clients} numbers > 0, got {p.tolist()!r}"
            )
        self._set_p(p / p.sum())
        self._updates = self._last_update = 0
        self._started = False
        self._last_time = 0.0
        self._last_rates = None
        self._ref_counts = None
        self._optimum = None
        self.routing_version = 0
        self.changes = []
        self._warmup = num_clients if self.warmup is None else self.warmup
        self._reset_in_flight(num_clients)

    def _reset_in_flight(self, num_clients: int) -> None:
        """Forget the tasks in flight (lists, not arrays: Ray unpickles arrays read-only)."""
        self._clock = 0.0
        self._busy = [0] * num_clients  # tasks dispatched to the client and not finished
        self._since = [math.nan] * num_clients  # start of its service in progress (nan: none)
        self._in_flight = 0
        self._tracking = self.censoring

    def initial_clients(self, concurrency: int) -> list[int]:
        """``concurrency`` draws from the current ``p``; remembers ``C`` for the optimiser."""
        self._concurrency = concurrency
        self._started = True
        return super().initial_clients(concurrency)

    def _draw(self, size: int) -> np.ndarray:
        return np.searchsorted(self._cdf, self.rng.random(size), side="right")

    def route(self, finished_client: int) -> int:
        """A client drawn from ``p``.

        Under ``single_probe`` a draw is repeated while it lands on a client whose first
        task is still in service. The router notes the dispatch (at its clock: the last
        :meth:`observe`'s ``now``, 0 before any) to know which clients have a task in
        service (:meth:`in_service_ages`).
        """
        client = super().route(finished_client)
        if self._tracking and self.single_probe and self._busy[client]:
            est = self.estimator
            assert est is not None, "bind() first"
            # Bounded: once every unobserved client holds a task, the draws that land on
            # them (at most their share of p) are the only ones repeated; after
            # _PROBE_DRAWS misses the last draw stands (a queue, as without the rule).
            for _ in range(_PROBE_DRAWS):
                if not self._busy[client] or est.observed(client):
                    break
                client = super().route(finished_client)
        if self._tracking:
            queued = self._busy[client]
            self._busy[client] = queued + 1
            if queued == 0:  # an idle client starts serving at once
                self._since[client] = self._clock
            self._in_flight += 1
            if self._in_flight > self._concurrency:
                self._stop_tracking("more tasks dispatched than the concurrency")
        return client

    def _stop_tracking(self, why: str) -> None:
        """Estimate from the finished durations alone from now on (no censoring).

        Called when the engine broke the call order the bookkeeping relies on (``observe``
        then ``route`` once per completion); the router then does what it did before
        censoring existed.
        """
        logger.debug("adaptive routing: in-service ages off (%s)", why)
        self._tracking = False

    def in_service_ages(self, now: float) -> np.ndarray | None:
        """Age at ``now`` of each client's service in progress, shape ``(n,)`` (0: idle).

        Tasks are served one at a time in FIFO order per client (the closed network's
        stations), so a task's service starts at its dispatch when the client was idle, or
        when the task before it finishes. None when censoring is off or the bookkeeping
        stopped (see :meth:`route`).
        """
        if not self._tracking:
            return None
        since = np.asarray(self._since, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            return np.where(np.isfinite(since), np.maximum(now - since, 0.0), 0.0)

    def routing_probabilities(self) -> np.ndarray:
        """A copy of the current ``p``."""
        return self._p.copy()

    # ------------------------------------------------------------------ feedback
    def observe(self, client: int, duration: float, now: float) -> None:
        """Record the service time of the task that just finished at ``client``.

        Engines call this right before :meth:`route` for the same completion. It may swap
        ``p`` (see the class docstring); tasks already dispatched are unaffected.
        """
        est = self.estimator
        assert est is not None, "bind() first"
        est.observe(client, duration)
        self._clock = now
        if self._tracking:
            left = self._busy[client] - 1
            if left < 0:
                self._stop_tracking(f"a completion at client {client} with no task there")
            else:
                self._busy[client] = left
                self._since[client] = now if left else math.nan  # FIFO: the next one starts
                self._in_flight -= 1
        self._updates += 1
        due = self._updates - self._last_update >= self._gap()
        if not due and self.reoptimize_seconds is not None:
            due = now - self._last_time >= self.reoptimize_seconds
        if due:
            self.reoptimize(now)

    def _gap(self) -> int:
        """Updates from the last optimisation to the next scheduled one.

        Warm-up: checks after ``w``, ``2 w``, ``4 w``, ... updates (the gap doubles from
        ``w = warmup``) until the gap reaches ``reoptimize_every``; then every
        ``reoptimize_every``. The gap is ``min(max(u, w), reoptimize_every)`` with ``u`` the
        update count of the last optimisation, so it needs no state of its own.
        """
        if self._warmup <= 0:
            return self.reoptimize_every
        return min(max(self._last_update, self._warmup), self.reoptimize_every)

    def set_available(self, available: Sequence[bool] | np.ndarray, now: float) -> None:
        """Clients that may receive new tasks changed (joins and leaves): re-optimise now.

        Raises:
            ConfigError: No client is available, or the mask has the wrong length.
        """
        mask = self._availability_mask(available)
        self._available = mask.copy()
        if not self._started:  # before the first task: restrict the starting p, no estimate yet
            p = np.where(mask, self._p, 0.0)
            self._set_p(p / p.sum() if p.sum() > 0 else mask / mask.sum())
            self.routing_version += 1
            return
        self.reoptimize(now, reason="availability", force=True)

    def reoptimize(self, now: float, *, reason: str = "schedule", force: bool = False) -> bool:
        """Re-optimise ``p`` from the current estimates; return whether ``p`` changed."""
        est = self.estimator
        assert est is not None, "bind() first"
        self._last_update, self._last_time = self._updates, now
        ages = self.in_service_ages(now)
        rates = est.rates(ages)
        counts = est.counts()
        taken = np.ones(rates.size, dtype=bool)
        if self.change_confidence is not None and not force:
            reference = self._last_rates if self._last_rates is not None else est.prior_rates()
            lower, upper = est.intervals(self.change_confidence, ages)
            taken = (reference < lower) | (reference > upper)
            if self.refresh:
                taken |= counts >= 2.0 * self._reference_counts(est)
            if not taken.any():
                logger.debug("adaptive routing: no rate left its interval, kept p")
                return False
            rates = np.where(taken, rates, reference)
        if not force and self._last_rates is not None and self.min_change >= 0:
            moved = float(np.max(np.abs(rates / self._last_rates - 1.0)))
            if moved <= self.min_change:
                logger.debug("adaptive routing: rates moved %.3g <= min_change, kept p", moved)
                return False
        self._last_rates = rates
        self._ref_counts = np.where(taken, counts, self._reference_counts(est))
        with _single_threaded():
            return self._reoptimize(rates, now, reason)

    def _reference_counts(self, est: OnlineRateEstimator) -> np.ndarray:
        """Durations behind each client's gate reference, shape ``(n,)``.

        Before the first optimisation: 0 for the pooled prior (no evidence about the
        client), inf for an explicit prior (e.g. the configured rates: trusted until the
        data reject them).
        """
        if self._ref_counts is not None:
            return self._ref_counts
        return np.full(self.num_clients, 0.0 if est.pooled_prior else math.inf)

    def _reoptimize(self, rates: np.ndarray, now: float, reason: str) -> bool:
        from raysync.objectives.bounds import BoundObjective
        from raysync.objectives.optimize import _routing_runs, optimize_routing

        idx = np.flatnonzero(self._available)
        try:
            objective = BoundObjective(
                mu=rates[idx], constants=self.constants, criterion="wall-clock",
                time_budget=self.horizon,
            )  # fmt: skip
        except ConfigError as exc:
            raise ConfigError(_routing_names(str(exc), self.horizon)) from exc
        concurrency = self._concurrency
        warm = self._optimum
        if warm is None or warm.size != idx.size or reason != "schedule":
            warm = None
        if self.objective == "bias_aware":
            optimum = self._bias_aware_optimum(rates[idx], concurrency, warm)
        elif warm is not None:
            # Estimates move a little between optimisations: one L-BFGS-B run from the
            # last optimum instead of three cold starts (about 15x cheaper).
            run, _, _ = _routing_runs(objective, concurrency, [warm], 1e-7, 200)
            optimum = np.asarray(run.p)
        else:
            result = optimize_routing(objective, concurrency=concurrency, tol=1e-7, max_iter=200)
            optimum = np.asarray(result.p)
        self._optimum = optimum
        p_sub = with_floor(optimum, self.explore / idx.size)
        p = np.zeros(self.num_clients)
        p[idx] = p_sub
        throughput = float(objective.evaluate(p_sub, concurrency).throughput)
        self._set_p(p)
        self.routing_version += 1
        change = RoutingChange(
            update=self._updates,
            time=float(now),
            p=p.copy(),
            rates=rates.copy(),
            predicted_throughput=throughput,
            reason=reason,
            objective=self.objective,
        )
        self.changes.append(change)
        logger.info(
            "adaptive routing change %d at update %d, t=%.6g (%s): predicted throughput "
            "%.6g, p=%s",
            self.routing_version, self._updates, now, reason, throughput,
            np.array2string(p, precision=4, threshold=12),
        )  # fmt: skip
        return True

    def _bias_aware_optimum(
        self, rates: np.ndarray, concurrency: int, warm: np.ndarray | None
    ) -> np.ndarray:
        """``argmin_p B_T(p, C, beta)`` of docs/theory.md (T21) at the run's ``C`` and ``beta``.

        :func:`raysync.objectives.optimize_bias_aware` also scans ``C`` and ``beta``; the
        router can change neither (``C`` is the engine's, ``beta`` the strategy's), so it
        minimises ``log B_T`` over softmax logits at fixed ``(C, beta)`` with the bound's
        exact gradient (:meth:`~raysync.objectives.BiasAwareBound.value_and_grad`), from
        the last optimum when warm, else from the same three starts (uniform, ``p ~ mu``,
        ``p ~ sqrt(mu)``) as ``optimize_bias_aware``.

        Args:
            rates: Estimated rates of the available clients, shape ``(m,)``.
            concurrency: ``C``.
            warm: The previous optimum, shape ``(m,)``, or None for cold starts.

        Returns:
            The optimum ``p``, shape ``(m,)``, summing to 1.
        """
        from scipy import optimize as sopt

        from raysync.objectives.bias import BiasAwareBound

        m = rates.size
        if m == 1:
            return np.ones(1)
        try:
            bound = BiasAwareBound(
                mu=rates, constants=self.constants, time_budget=self.horizon, zeta2=self.zeta2,
                bias_kind="cauchy-schwarz",
            )  # fmt: skip
        except ConfigError as exc:
            raise ConfigError(_routing_names(str(exc), self.horizon)) from exc
        beta = self.weight_exponent

        def softmax(z: np.ndarray) -> np.ndarray:
            e = np.exp(z - z.max())
            return np.asarray(e / e.sum(), dtype=np.float64)

        def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
            p = softmax(z)
            if np.any(p <= 0):
                return math.inf, np.zeros_like(z)
            value, grad_p, _ = bound.value_and_grad(p, concurrency, beta)
            if not (value > 0 and math.isfinite(value)):
                return math.inf, np.zeros_like(z)
            g = grad_p / value
            return math.log(value), p * (g - float(np.dot(p, g)))

        starts = (
            [warm] if warm is not None
            else [np.full(m, 1.0 / m), rates / rates.sum(), np.sqrt(rates) / np.sqrt(rates).sum()]
        )  # fmt: skip
        best, best_value = np.full(m, 1.0 / m), math.inf
        for p0 in starts:
            z0 = np.clip(np.log(p0) - np.log(p0).mean(), -_LOGIT_BOUND, _LOGIT_BOUND)
            res = sopt.minimize(
                fun, z0, jac=True, method="L-BFGS-B",
                bounds=[(-_LOGIT_BOUND, _LOGIT_BOUND)] * m,
                options={"maxiter": 200, "ftol": 1e-10, "gtol": 1e-9, "maxcor": 20},
            )  # fmt: skip
            if float(res.fun) < best_value:
                best, best_value = softmax(np.asarray(res.x, dtype=np.float64)), float(res.fun)
        return best

    def _set_p(self, p: np.ndarray) -> None:
        p = np.asarray(p, dtype=np.float64)
        p.setflags(write=False)
        self._p = p
        cdf = np.cumsum(p)
        cdf[-1] = 1.0
        # Zero-width steps are never drawn (side="right"), so unavailable clients get no task.
        self._cdf = cdf
        self._block = []
        self._pos = 0

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Generator, pending draws, ``p``, counters and the estimator's statistics."""
        state = super().state_dict()
        est = self.estimator
        assert est is not None, "bind() first"
        state.update(
            p=self._p.tolist(),
            available=self._available.tolist(),
            concurrency=self._concurrency,
            counters=[self._updates, self._last_update, self._last_time, self.routing_version],
            last_rates=None if self._last_rates is None else self._last_rates.tolist(),
            optimum=None if self._optimum is None else self._optimum.tolist(),
            estimator=est.state_dict(),
            in_flight=list(self._busy) if self._tracking else None,
            in_service_since=[None if math.isnan(t) else t for t in self._since],
            reference_counts=None if self._ref_counts is None else self._ref_counts.tolist(),
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Raises:
            CheckpointError: The state is malformed or for another fleet size.
        """
        try:
            p = np.array(state["p"], dtype=np.float64)
            available = np.array(state["available"], dtype=bool)
            updates, last_update, last_time, version = state["counters"]
            last = state["last_rates"]
            optimum = state.get("optimum")
            ref_counts = state.get("reference_counts")
            if ref_counts is not None:
                ref_counts = np.array(ref_counts, dtype=np.float64).reshape(-1)
            est_state = state["estimator"]
            concurrency = int(state["concurrency"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"AdaptiveRouter state is malformed: {exc}") from exc
        if p.shape != (self.num_clients,) or available.shape != p.shape:
            raise CheckpointError(
                f"AdaptiveRouter state has {p.size} clients, the router {self.num_clients}"
            )
        assert self.estimator is not None, "bind() first"
        self.estimator.load_state_dict(est_state)
        self._set_p(p)
        super().load_state_dict(state)
        self._available = available
        self._concurrency = concurrency
        self._started = True
        self._updates, self._last_update = int(updates), int(last_update)
        self._last_time, self.routing_version = float(last_time), int(version)
        self._last_rates = None if last is None else np.array(last, dtype=np.float64)
        self._optimum = None if optimum is None else np.array(optimum, dtype=np.float64)
        if ref_counts is None or ref_counts.shape != (self.num_clients,):
            # Older states: every reference counts as measured from a full history, so
            # only the gate moves it (the behaviour before the refresh rule).
            ref_counts = None if last is None else np.full(self.num_clients, math.inf)
        self._ref_counts = ref_counts
        self._reset_in_flight(self.num_clients)
        self._clock = self._last_time
        busy, since = state.get("in_flight"), state.get("in_service_since")
        if busy is None or since is None or not len(busy) == len(since) == self.num_clients:
            self._tracking = False  # the state predates the bookkeeping, or it had stopped
        elif self._tracking:
            # A resumed Ray run re-sends the tasks in flight: their ages then include the
            # part served before the checkpoint (at most one service per client).
            self._busy = [int(k) for k in busy]
            self._since = [math.nan if t is None else float(t) for t in since]
            self._in_flight = sum(self._busy)

    def __repr__(self) -> str:
        return (
            f"AdaptiveRouter(reoptimize_every={self.reoptimize_every}, "
            f"reoptimize_seconds={self.reoptimize_seconds}, explore={self.explore:g}, "
            f"horizon={self.horizon:g}, objective={self.objective!r}, "
            f"change_confidence={self.change_confidence}, warmup={self.warmup}, "
            f"censoring={self.censoring}, single_probe={self.single_probe})"
        )
