"""Warm starts: the analytical optimum and the usual defaults, evaluated first.

:func:`warm_start_points` lists the points (``analytical``: the bound's joint optimum from
:func:`raysync.objectives.optimize_joint`; ``uniform``: ``p_i = 1/n``, ``C = n``;
``proportional``: ``p ∝ mu``, ``C = n``, AsyncSGD's empirical routing; ``config``: the
config's own routing and ``C``). :func:`enqueue_warm_starts` enqueues them, encoded with the
search space's parameters. A point outside the space is *evaluated where the space puts
it*: ``C`` clipped to ``1..max_concurrency`` and ``p`` projected on the family;
:func:`evaluated_point` says where, and the enqueue message and the report show it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tuning.recovery import ENQUEUED_ATTR, STALE_ATTR, WARM_ATTR, WARM_LABELS_ATTR
from tuning.search_space import Candidate, SearchSpace

if TYPE_CHECKING:
    import optuna

    from raysync.config import SystemConfig
    from raysync.objectives import OptimizationResult, ProblemConstants

__all__ = [
    "EvaluatedPoint",
    "analytical_optimum",
    "enqueue_warm_starts",
    "evaluated_point",
    "warm_labels",
    "warm_start_points",
]

#: ``p`` moved by more than this (max over clients) counts as projected.
PROJECTION_TOLERANCE = 1e-6


def analytical_optimum(
    config: SystemConfig,
    constants: ProblemConstants,
    *,
    budget: float,
    max_concurrency: int,
    eta: float | str = "optimal",
) -> OptimizationResult:
    """The bound's joint optimum over ``(p, C in 1..max_concurrency)``.

    The wall-clock criterion (3b) of docs/theory.md, ``J_T(p, C) = B_{Lambda(p, C) T}(p, C)``,
    minimised by :func:`raysync.objectives.optimize_joint`.

    Args:
        config: The fleet (service rates, per config time unit).
        constants: ``L``, ``sigma^2``, ``M^2``, ``A``.
        budget: Time budget ``T`` (config time unit).
        max_concurrency: Largest ``C``.
        eta: ``"optimal"`` or a fixed step.

    Returns:
        The optimum (``p``, ``concurrency``, bound value and terms).
    """
    from raysync.objectives import BoundObjective, optimize_joint
    from raysync.queueing.predict import station_parameters

    latency, server_rate = station_parameters(config)  # links and server (docs/network.md)
    objective = BoundObjective(
        mu=np.asarray(config.service_rates),
        constants=constants,
        criterion="wall-clock",
        eta=eta,
        time_budget=float(budget),
        client_latency=latency,
        server_rate=server_rate,
    )
    return optimize_joint(objective, max_concurrency=max_concurrency)


def warm_start_points(
    config: SystemConfig, optimum: OptimizationResult | None
) -> list[tuple[str, Candidate]]:
    """The analytical optimum and the usual defaults, labelled, as requested.

    ``analytical`` (the bound's optimum, when given), ``uniform`` (``p_i = 1/n``,
    ``C = n``), ``proportional`` (``p ∝ mu``, ``C = n``: AsyncSGD's throughput-maximal
    routing with its concurrency), and ``config`` (the config's own random routing and
    ``C``, when it has one and differs from the others). These may lie outside a search
    space; see :func:`evaluated_point`.
    """
    n = config.num_clients
    mu = np.asarray(config.service_rates, dtype=np.float64)
    points: list[tuple[str, Candidate]] = []
    if optimum is not None:
        best = Candidate(p=np.asarray(optimum.p), concurrency=optimum.concurrency)
        points.append(("analytical", best))
    points.append(("uniform", Candidate(p=np.full(n, 1.0 / n), concurrency=n)))
    points.append(("proportional", Candidate(p=mu / mu.sum(), concurrency=n)))
    own = config.routing_probabilities
    if own is not None:
        cand = Candidate(p=np.asarray(own, dtype=np.float64), concurrency=config.concurrency)
        if not any(
            c.concurrency == cand.concurrency and np.allclose(c.p, cand.p) for _, c in points
        ):
            points.append(("config", cand))
    return points


@dataclass(frozen=True)
class EvaluatedPoint:
    """Where the search space puts a requested point.

    Attributes:
        requested: The point as asked for.
        evaluated: The point a trial evaluates (``C`` clipped, ``p`` projected).
        clipped: ``C`` was outside ``1..max_concurrency``.
        projection_error: ``max_i |p_evaluated_i - p_requested_i|``.
    """

    requested: Candidate
    evaluated: Candidate
    clipped: bool
    projection_error: float

    @property
    def moved(self) -> bool:
        """Whether the evaluated point differs from the requested one."""
        return self.clipped or self.projection_error > PROJECTION_TOLERANCE

    def note(self) -> str:
        """``"C=4 clipped to 2, p projected (max change 0.03)"`` or ``""``."""
        parts = []
        if self.clipped:
            parts.append(f"C={self.requested.concurrency} clipped to {self.evaluated.concurrency}")
        if self.projection_error > PROJECTION_TOLERANCE:
            parts.append(f"p projected on the family (max change {self.projection_error:.3g})")
        return ", ".join(parts)


def evaluated_point(space: SearchSpace, candidate: Candidate) -> EvaluatedPoint:
    """Where ``space`` evaluates a requested point (see :class:`EvaluatedPoint`)."""
    projected = space.project(candidate.p, candidate.concurrency)
    return EvaluatedPoint(
        requested=candidate,
        evaluated=projected,
        clipped=projected.concurrency != candidate.concurrency,
        projection_error=float(np.abs(projected.p - np.asarray(candidate.p)).max()),
    )


def warm_labels(trial: optuna.trial.FrozenTrial) -> list[str]:
    """Every warm-start label a trial stands for (empty for sampled trials)."""
    labels = trial.user_attrs.get(WARM_LABELS_ATTR)
    if isinstance(labels, list) and labels:
        return [str(v) for v in labels]
    label = trial.user_attrs.get(WARM_ATTR)
    return [str(label)] if label is not None else []


def enqueue_warm_starts(
    study: optuna.Study,
    space: SearchSpace,
    points: Sequence[tuple[str, Candidate]],
    *,
    extra_params: Mapping[str, Any],
    limit: int | None = None,
) -> list[str]:
    """Enqueue each point once; points that coincide in the space share one trial.

    A label already held by a trial that is waiting, running, evaluated, or interrupted and
    retried is not enqueued again (so a resumed study does not repeat its warm starts).

    Args:
        study: The study.
        space: The search space.
        points: ``(label, requested point)`` pairs.
        extra_params: Parameters added to every point (the tuned budget).
        limit: Enqueue at most this many trials, the first points first (the trials the
            run has left: warm starts beyond them would wait in the storage; a resume with
            more trials enqueues them then).

    Returns:
        One description per enqueued trial: its labels and, when the space moved the point,
        how (``"uniform (C=4 clipped to 2)"``).
    """
    from tuning.recovery import RETRY_ATTR

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(RETRY_ATTR) for t in trials} - {None}
    done: set[str] = set()
    for t in trials:
        lost = bool(t.user_attrs.get(STALE_ATTR)) and t.number not in retried
        if not lost:
            done.update(warm_labels(t))
    groups: list[tuple[dict[str, Any], list[str], list[str]]] = []
    for label, cand in points:
        if label in done:
            continue
        params = {**space.params_for(cand.p, cand.concurrency), **extra_params}
        note = evaluated_point(space, cand).note()
        for existing, labels, notes in groups:
            if existing == params:
                labels.append(label)
                notes.append(note)
                break
        else:
            groups.append((params, [label], [note]))
    described = []
    for params, labels, notes in groups if limit is None else groups[:max(0, limit)]:
        study.enqueue_trial(
            params,
            user_attrs={WARM_ATTR: labels[0], WARM_LABELS_ATTR: labels, ENQUEUED_ATTR: params},
        )
        text = " = ".join(
            f"{label} ({note})" if note else label
            for label, note in zip(labels, notes, strict=True)
        )
        described.append(text)
    return described
