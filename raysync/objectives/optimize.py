"""Minimise the bound over the routing ``p``, the concurrency ``C`` and the step ``eta``.

* :func:`optimize_routing`: ``p`` on the simplex for a fixed ``C``. The simplex is
  parameterised by logits, ``p = softmax(z)``, so every iterate is feasible (all ``p_i > 0``,
  summing to 1); ``log B`` is minimised by scipy's L-BFGS-B with the exact gradient
  (reverse-mode MVA of :mod:`raysync.queueing` in numpy through
  :meth:`BoundObjective.value_and_grad`, chained through the softmax Jacobian). Several
  deterministic starts are run (uniform, ``p ~ mu``, ``p ~ sqrt(mu)``, plus any given) and
  the best is kept.
* :func:`optimize_concurrency`: integer ``C`` for a fixed ``p`` by scanning
  ``C' = 1..C_max`` on one MVA curve pass.
* :func:`optimize_joint`: both, by alternating the two (each step cannot increase the
  bound, so the alternation stops after finitely many rounds at a point where neither
  step improves), from several starts.

The step size is part of the objective (:class:`~raysync.objectives.BoundObjective` with
``eta="optimal"`` optimises it in closed form at every ``(p, C)``; a number fixes it).
Everything is deterministic: no random numbers are drawn.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize as sopt

from raysync.exceptions import ConfigError
from raysync.objectives.bounds import BoundObjective, BoundTerms, _concurrency, _number

__all__ = [
    "EnergyChoice",
    "OptimizationResult",
    "check_search_size",
    "default_max_concurrency",
    "optimize_concurrency",
    "optimize_joint",
    "optimize_routing",
    "optimize_with_energy",
]

logger = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]

_LOGIT_BOUND = 40.0  # |z_i - mean z| <= 40: p_i >= ~e^-80 / n, far beyond any optimum


@dataclass(frozen=True, kw_only=True, eq=False)
class OptimizationResult:
    """The optimum found, with the bound's terms and the predicted queueing numbers.

    Attributes:
        criterion: ``"per-update"`` or ``"wall-clock"``.
        p: Optimal routing, shape ``(n,)`` (read-only, sums to 1).
        concurrency: Optimal ``C``.
        eta: Step size at the optimum (fixed or optimised).
        value: The bound at the optimum.
        terms: The bound term by term.
        throughput: Predicted update throughput ``Lambda(p, C)``.
        relative_delay: Predicted per-client staleness ``E[D_i]``, shape ``(n,)``.
        iterations: Optimiser iterations (L-BFGS-B iterations summed over starts and
            rounds; ``C`` scans count one each).
        evaluations: Evaluations of the bound (with gradient) or MVA curve passes.
        converged: Whether the final optimisation met its tolerance before the cap.
        message: What the optimiser reported.
    """

    criterion: str
    p: FloatArray
    concurrency: int
    eta: float
    value: float
    terms: BoundTerms
    throughput: float
    relative_delay: FloatArray
    iterations: int
    evaluations: int
    converged: bool
    message: str

    def __post_init__(self) -> None:
        for name in ("p", "relative_delay"):
            array = np.array(getattr(self, name), dtype=np.float64)
            array.setflags(write=False)
            object.__setattr__(self, name, array)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe mapping (arrays as lists, terms as a mapping)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                value = value.tolist()
            elif isinstance(value, BoundTerms):
                value = value.to_dict()
            out[f.name] = value
        return out


def _check_objective(objective: object) -> BoundObjective:
    if not isinstance(objective, BoundObjective):
        raise ConfigError(f"objective must be a BoundObjective, got {type(objective).__name__}")
    return objective


def _check_tolerances(tol: float, max_iter: int) -> tuple[float, int]:
    tol = _number("tol", tol)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ConfigError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    return tol, max_iter


def _softmax(z: FloatArray) -> FloatArray:
    e = np.exp(z - z.max())
    return e / e.sum()


def _logits(p: FloatArray) -> FloatArray:
    z = np.log(p)
    return np.clip(z - z.mean(), -_LOGIT_BOUND, _LOGIT_BOUND)


def _default_starts(mu: FloatArray) -> list[FloatArray]:
    n = mu.size
    candidates = [np.full(n, 1.0 / n), mu / mu.sum(), np.sqrt(mu) / np.sqrt(mu).sum()]
    starts: list[FloatArray] = []
    for cand in candidates:
        if not any(np.allclose(cand, s, rtol=1e-12, atol=1e-15) for s in starts):
            starts.append(cand)
    return starts


def _result(
    objective: BoundObjective,
    p: FloatArray,
    concurrency: int,
    *,
    iterations: int,
    evaluations: int,
    converged: bool,
    message: str,
) -> OptimizationResult:
    terms, delay = objective.evaluate_with_delays(p, concurrency)
    return OptimizationResult(
        criterion=objective.criterion,
        p=p,
        concurrency=concurrency,
        eta=terms.eta,
        value=terms.value,
        terms=terms,
        throughput=terms.throughput,
        relative_delay=delay,
        iterations=iterations,
        evaluations=evaluations,
        converged=converged,
        message=message,
    )


@dataclass
class _Run:
    p: FloatArray
    value: float
    iterations: int
    evaluations: int
    converged: bool
    message: str


def _minimize_logits(
    objective: BoundObjective, concurrency: int, start: FloatArray, tol: float, max_iter: int
) -> _Run:
    """L-BFGS-B on ``z -> log B(softmax(z), C)`` from ``start``."""
    evaluations = 0

    def fun(z: FloatArray) -> tuple[float, FloatArray]:
        nonlocal evaluations
        evaluations += 1
        p = _softmax(z)
        value, grad_p = objective.value_and_grad(p, concurrency)
        if not (value > 0 and math.isfinite(value)):
            return math.inf, np.zeros_like(z)
        g = grad_p / value  # d log B / dp
        return math.log(value), p * (g - float(np.dot(p, g)))  # softmax Jacobian

    z0 = _logits(start)
    res = sopt.minimize(
        fun,
        z0,
        jac=True,
        method="L-BFGS-B",
        bounds=[(-_LOGIT_BOUND, _LOGIT_BOUND)] * z0.size,
        options={"maxiter": max_iter, "ftol": tol, "gtol": tol, "maxcor": 20},
    )
    p = _softmax(np.asarray(res.x, dtype=np.float64))
    return _Run(
        p=p,
        value=math.exp(float(res.fun)) if math.isfinite(float(res.fun)) else math.inf,
        iterations=int(res.nit),
        evaluations=evaluations,
        converged=bool(res.success),
        message=str(res.message),
    )


def _routing_runs(
    objective: BoundObjective,
    concurrency: int,
    starts: Sequence[FloatArray],
    tol: float,
    max_iter: int,
) -> tuple[_Run, int, int]:
    best: _Run | None = None
    iterations = evaluations = 0
    for start in starts:
        run = _minimize_logits(objective, concurrency, start, tol, max_iter)
        iterations += run.iterations
        evaluations += run.evaluations
        if best is None or run.value < best.value:
            best = run
    assert best is not None
    return best, iterations, evaluations


def optimize_routing(
    objective: BoundObjective,
    *,
    concurrency: int,
    starts: Sequence[ArrayLike] | None = None,
    tol: float = 1e-10,
    max_iter: int = 500,
) -> OptimizationResult:
    """Minimise the bound over ``p`` on the simplex for a fixed ``C``.

    Args:
        objective: The bound (fleet, constants, criterion, step policy).
        concurrency: ``C >= 1``.
        starts: Extra starting routings (validated), tried after the default ones
            (uniform, ``p ~ mu``, ``p ~ sqrt(mu)``).
        tol: L-BFGS-B tolerance on the relative decrease of ``log B`` and on the projected
            gradient.
        max_iter: Iteration cap of each start.

    Returns:
        The best optimum over the starts; ``converged`` refers to that start.
    """
    objective = _check_objective(objective)
    c = _concurrency(concurrency)
    tol, max_iter = _check_tolerances(tol, max_iter)
    start_list = _default_starts(objective.mu)
    for extra in starts or ():
        start_list.append(objective.check_p(extra))
    if objective.n_clients == 1:
        return _result(
            objective,
            np.ones(1),
            c,
            iterations=0,
            evaluations=0,
            converged=True,
            message="single client: p = (1,)",
        )
    best, iterations, evaluations = _routing_runs(objective, c, start_list, tol, max_iter)
    return _result(
        objective,
        best.p,
        c,
        iterations=iterations,
        evaluations=evaluations,
        converged=best.converged,
        message=best.message,
    )


def optimize_concurrency(
    objective: BoundObjective, *, p: ArrayLike, max_concurrency: int
) -> OptimizationResult:
    """Minimise the bound over the integer ``C`` in ``1..max_concurrency`` for a fixed ``p``.

    One MVA curve pass gives ``Lambda`` and ``E[D_i]`` for every ``C'``; the scan is exact.

    Args:
        objective: The bound.
        p: Routing probabilities (validated).
        max_concurrency: Largest ``C`` considered.

    Returns:
        The best ``C`` (the smallest one on ties).
    """
    objective = _check_objective(objective)
    probs = objective.check_p(p)
    cmax = _concurrency(max_concurrency, "max_concurrency")
    best = objective.curve(probs, cmax).best_concurrency
    return _result(
        objective,
        probs,
        best,
        iterations=1,
        evaluations=1,
        converged=True,
        message=f"scanned C = 1..{cmax}",
    )


def _minimize_envelope(
    objective: BoundObjective, cmax: int, start: FloatArray, tol: float, max_iter: int
) -> tuple[_Run, int]:
    """L-BFGS-B on ``z -> log min_{C <= cmax} B(softmax(z), C)``; returns the run and ``C``.

    The envelope ``F(p) = min_C B(p, C)`` is a minimum of smooth functions; wherever the
    minimising ``C*`` is unique its gradient is ``grad_p B(p, C*)`` (Danskin), and its kinks
    (ties between two ``C``) are concave, so they never hold a descent method. Each
    evaluation is one stored MVA pass to ``cmax`` (the whole ``C`` curve, hence ``C*``)
    plus one reverse pass from ``C*`` (:meth:`BoundObjective.envelope_value_and_grad`).
    """
    evaluations = 0
    last_c = [1]

    def fun(z: FloatArray) -> tuple[float, FloatArray]:
        nonlocal evaluations
        evaluations += 1
        p = _softmax(z)
        if np.any(p <= 0):
            return math.inf, np.zeros_like(z)
        value, grad_p, c = objective.envelope_value_and_grad(p, cmax)
        last_c[0] = c
        if not (value > 0 and math.isfinite(value)):
            return math.inf, np.zeros_like(z)
        g = grad_p / value
        return math.log(value), p * (g - float(np.dot(p, g)))

    z0 = _logits(start)
    res = sopt.minimize(
        fun,
        z0,
        jac=True,
        method="L-BFGS-B",
        bounds=[(-_LOGIT_BOUND, _LOGIT_BOUND)] * z0.size,
        options={"maxiter": max_iter, "ftol": tol, "gtol": tol, "maxcor": 20},
    )
    p = _softmax(np.asarray(res.x, dtype=np.float64))
    curve = objective.curve(p, cmax)
    evaluations += 1
    c = curve.best_concurrency
    run = _Run(
        p=p,
        value=float(curve.value[c - 1]),
        iterations=int(res.nit),
        evaluations=evaluations,
        converged=bool(res.success),
        message=str(res.message),
    )
    return run, c


#: :func:`optimize_joint` runs up to this many MVA passes (with their tapes) over
#: ``C = 1..max_concurrency``.
SEARCH_PASSES = 100


def default_max_concurrency(
    given: int | None, num_clients: int, concurrency: int, *, factor: int = 2
) -> tuple[int, str]:
    """The largest ``C`` a search covers, and how messages name what set it.

    Args:
        given: ``--max-concurrency`` (None: the default).
        num_clients: ``n``.
        concurrency: The config's ``C``.
        factor: The default is ``max(factor * n, C)``.

    Returns:
        ``(cmax, name)``: the flag when given; else the default, named after the config's
        ``concurrency`` when that is what set it (a user who never passed the flag is not
        told to lower it).
    """
    if given is not None:
        return int(given), "--max-concurrency"
    if concurrency > factor * num_clients:
        return int(concurrency), "the config's concurrency (the default --max-concurrency)"
    return factor * int(num_clients), f"--max-concurrency (default {factor}n)"


def check_search_size(
    max_concurrency: int, num_clients: int, *, name: str = "max_concurrency"
) -> None:
    """Refuse up front a joint search the machine cannot hold or finish.

    :func:`optimize_joint` keeps ``Q`` and ``dW`` for every ``C' <= max_concurrency`` (16
    bytes per client and ``C'``) and runs up to :data:`SEARCH_PASSES` MVA passes of about
    ``max_concurrency * (n + 4096)`` steps each; both are capped by the queueing limits
    (:data:`~raysync.queueing.analysis.MAX_CURVE_BYTES`,
    :data:`~raysync.queueing.analysis.MAX_SOLVER_STEPS`). ``raysync optimize``,
    ``raysync tune``, ``demo`` and ``recommend`` check their ``--max-concurrency`` here.

    Args:
        max_concurrency: Largest ``C`` searched.
        num_clients: ``n``.
        name: How the message names ``max_concurrency`` (e.g. ``"--max-concurrency"``).

    Raises:
        ConfigError: The memory or the solver steps it needs (named in the message)
            exceed the limits.
    """
    from raysync.queueing.analysis import MAX_CURVE_BYTES, MAX_SOLVER_STEPS, approx_text

    cmax, n = int(max_concurrency), int(num_clients)
    tape = 16 * (cmax + 1) * n
    if tape > MAX_CURVE_BYTES:
        raise ConfigError(
            f"{name} {cmax:,} with n={n:,} clients needs {approx_text(tape, 2**30)} GiB "
            f"for the gradient tapes, more than the {MAX_CURVE_BYTES / 2**30:.3g} GiB allowed; "
            f"lower {name}"
        )
    steps = SEARCH_PASSES * cmax * (n + 4096)
    if steps > MAX_SOLVER_STEPS:
        raise ConfigError(
            f"{name} {cmax:,} with n={n:,} clients needs about {steps:.3g} solver "
            f"steps ({SEARCH_PASSES} MVA passes), more than the {MAX_SOLVER_STEPS:.3g} "
            f"allowed; lower {name}"
        )


def optimize_joint(
    objective: BoundObjective,
    *,
    max_concurrency: int,
    tol: float = 1e-10,
    max_iter: int = 500,
    max_rounds: int = 5,
) -> OptimizationResult:
    """Minimise the bound over ``p`` and ``C in 1..max_concurrency`` jointly.

    From each default routing (uniform, ``p ~ mu``, ``p ~ sqrt(mu)``), L-BFGS-B minimises
    the envelope ``F(p) = min_C B(p, C)`` over logits (each evaluation scans ``C`` on one
    MVA curve pass and differentiates at the best ``C``). The best end point is then
    polished by alternating "optimise ``p`` at the current ``C``" and "scan ``C`` at the
    current ``p``" until ``C`` no longer changes (each step cannot increase the bound) or
    ``max_rounds`` is reached. At the result, neither ``p`` (for its ``C``) nor ``C`` (for
    its ``p``) can be improved.

    Args:
        objective: The bound.
        max_concurrency: Largest ``C`` considered.
        tol: Tolerance of each L-BFGS-B run (relative decrease of ``log B`` and projected
            gradient).
        max_iter: Iteration cap of each L-BFGS-B run.
        max_rounds: Cap on the polishing rounds.

    Returns:
        The best ``(p, C)`` found; ``converged`` is False when the last L-BFGS-B run hit
        ``max_iter`` or the polishing hit ``max_rounds``.
    """
    objective = _check_objective(objective)
    cmax = _concurrency(max_concurrency, "max_concurrency")
    tol, max_iter = _check_tolerances(tol, max_iter)
    if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
        raise ConfigError(f"max_rounds must be an integer >= 1, got {max_rounds!r}")
    n = objective.n_clients
    if n == 1:
        return optimize_concurrency(objective, p=np.ones(1), max_concurrency=cmax)
    iterations = evaluations = 0
    best: _Run | None = None
    best_c = 1
    for start in _default_starts(objective.mu):
        run, c = _minimize_envelope(objective, cmax, start, tol, max_iter)
        iterations += run.iterations
        evaluations += run.evaluations
        logger.debug("joint start -> C=%d value=%.6g (%s)", c, run.value, run.message)
        if best is None or run.value < best.value:
            best, best_c = run, c
    assert best is not None
    p, c, value = best.p, best_c, best.value
    converged, message = False, f"max_rounds={max_rounds} reached while polishing"
    for _ in range(max_rounds):
        run, its, evs = _routing_runs(objective, c, [p], tol, max_iter)
        iterations += its
        evaluations += evs
        if run.value <= value:
            p, value = run.p, run.value
        curve = objective.curve(p, cmax)
        evaluations += 1
        c_new = curve.best_concurrency
        if c_new != c and float(curve.value[c_new - 1]) < value * (1.0 - 1e-12):
            c, value = c_new, float(curve.value[c_new - 1])
            continue
        converged, message = run.converged, f"C stable at {c}; routing: {_solver_note(run.message)}"
        break
    return _result(
        objective,
        p,
        c,
        iterations=iterations,
        evaluations=evaluations,
        converged=converged,
        message=message,
    )


# --------------------------------------------------------------------------- energy
@dataclass(frozen=True, kw_only=True, eq=False)
class EnergyChoice:
    """The design chosen under an energy budget or price (docs/network.md).

    Attributes:
        optimum: The chosen ``(p, C)`` with its bound terms.
        unconstrained: The bound's optimum without the energy term.
        energy: Joules the chosen design spends over the run: ``P T`` (wall-clock) or
            ``K P / Lambda`` (per-update).
        power: Its mean power in watts.
        energy_per_update: Its joules per update.
        energy_budget: The budget in joules (None: none).
        energy_weight: The price of a joule in bound units (0: none).
        score: ``bound + energy_weight * energy`` at the choice.
    """

    optimum: OptimizationResult
    unconstrained: OptimizationResult
    energy: float
    power: float
    energy_per_update: float
    energy_budget: float | None
    energy_weight: float
    score: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe mapping."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["optimum"] = self.optimum.to_dict()
        out["unconstrained"] = self.unconstrained.to_dict()
        return out


def optimize_with_energy(
    objective: BoundObjective,
    figures: Any,
    *,
    max_concurrency: int,
    energy_budget: float | None = None,
    energy_weight: float = 0.0,
) -> EnergyChoice:
    """Minimise ``bound + energy_weight * energy`` subject to ``energy <= energy_budget``.

    Energy over the run is ``P(p, C) T`` for the wall-clock criterion (a fixed time: more
    throughput costs more power) and ``K P(p, C) / Lambda(p, C)`` per update, with the mean
    power ``P = P0 + e(p) Lambda(p, C)`` of :mod:`raysync.objectives.energy`. The search
    scans every ``C' <= max_concurrency`` (one MVA curve pass each) at the routings of the
    bound's own optimum, uniform routing and ``p ~ mu``, and keeps the best feasible pair;
    the routing is not re-optimised under the constraint (a scan, not a joint solve).

    Args:
        objective: The bound (its stations included).
        figures: The fleet's :class:`~raysync.objectives.energy.PowerFigures`.
        max_concurrency: Largest ``C`` considered.
        energy_budget: Joules allowed over the run (None: no constraint).
        energy_weight: Price of a joule in units of the bound (>= 0).

    Returns:
        The choice and its energy figures.

    Raises:
        ConfigError: A bad budget or weight, a budget below the energy of every
            candidate (the message gives the least energy found), or a weight so large
            that no candidate's score is finite.
    """
    from raysync.objectives.energy import power_curve

    objective = _check_objective(objective)
    cmax = _concurrency(max_concurrency, "max_concurrency")
    if energy_budget is not None:
        energy_budget = _number("energy_budget", energy_budget)
    if isinstance(energy_weight, bool) or not (
        isinstance(energy_weight, int | float)
        and math.isfinite(energy_weight)
        and energy_weight >= 0
    ):
        raise ConfigError(f"energy_weight must be a finite number >= 0, got {energy_weight!r}")
    unconstrained = optimize_joint(objective, max_concurrency=cmax)
    n = objective.n_clients
    candidates = [np.asarray(unconstrained.p)]
    for cand in _default_starts(objective.mu):
        if not any(np.allclose(cand, c, rtol=1e-12, atol=1e-15) for c in candidates):
            candidates.append(cand)
    best: tuple[float, FloatArray, int, float, float] | None = None
    least = math.inf
    for p in candidates:
        curve = objective.curve(p, cmax)
        powers = power_curve(
            figures, mu=objective.mu, p=p, throughput=curve.throughput,
            server_rate=objective.server_rate,
        )  # fmt: skip
        # an overflow is caught by the finiteness checks below
        with np.errstate(over="ignore", invalid="ignore"):
            if objective.criterion == "wall-clock":
                energies = powers * float(objective.time_budget or 0.0)
            else:
                energies = curve.num_updates * powers / curve.throughput
            scores = curve.value + energy_weight * energies
        least = min(least, float(energies.min()))
        # weight 0 times an infinite energy is NaN, which argmin would pick
        scores = np.where(np.isfinite(energies), scores, np.inf)
        if energy_budget is not None:
            scores = np.where(energies <= energy_budget, scores, np.inf)
        j = int(np.argmin(scores))
        if math.isfinite(float(scores[j])) and (best is None or float(scores[j]) < best[0]):
            best = (float(scores[j]), p, j + 1, float(energies[j]), float(powers[j]))
    if best is None:
        from raysync.objectives.energy import no_energy_choice

        raise no_energy_choice(
            energy_budget=energy_budget, energy_weight=energy_weight, least=least,
            scanned=f"C = 1..{cmax} at {len(candidates)} routings of {n} clients",
        )
    score, p, c, energy, power = best
    chosen = _result(
        objective, p, c, iterations=unconstrained.iterations,
        evaluations=unconstrained.evaluations + len(candidates), converged=True,
        message=f"energy-aware scan of C = 1..{cmax} at {len(candidates)} routings",
    )  # fmt: skip
    return EnergyChoice(
        optimum=chosen,
        unconstrained=unconstrained,
        energy=energy,
        power=power,
        energy_per_update=power / chosen.throughput,
        energy_budget=energy_budget,
        energy_weight=float(energy_weight),
        score=score,
    )


def _solver_note(message: str) -> str:
    """SciPy's stop message, made readable.

    L-BFGS-B says only ``ABNORMAL: `` for a line search that made no progress (often at a
    flat or kinked optimum).
    """
    text = message.strip().rstrip(":").strip()
    if text.upper().startswith("ABNORMAL"):
        return "the line search made no progress (L-BFGS-B 'ABNORMAL'); the point is kept"
    return text or "no message from the solver"
