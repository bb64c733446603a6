"""The outcome of a study: :class:`StudyReport`, its JSON (``study.json``) and its text.

Every number carries its unit: the report's :data:`UNITS` table goes into ``study.json``
(key ``units``) and the printed table names the unit of every column. The reference rows
(the analytical optimum and the defaults) show the point *as evaluated*: a warm start
outside the search space (``C`` above ``--max-concurrency``, ``p`` off the family) is
evaluated where the space puts it, and the row says so (``requested`` in the JSON, a note
in the text), so a measured value is never shown next to a point it was not measured at.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tuning.recovery import is_interrupted
from tuning.search_space import Candidate, SearchSpace
from tuning.warm_start import evaluated_point, warm_labels

if TYPE_CHECKING:
    import optuna

    from raysync.config import SystemConfig
    from raysync.objectives import ProblemConstants
    from tuning.objectives import BoundTrialObjective

__all__ = [
    "METRIC_UNITS",
    "UNITS",
    "SimulationWarnings",
    "StudyReport",
    "format_report",
    "json_safe",
    "metric_label",
    "summarize_study",
]

#: Unit of each value a study can optimise (``study.metric_names``).
METRIC_UNITS: dict[str, str] = {
    "bound": "bound on the mean E||grad f||^2 over the run (squared gradient norm)",
    "val_accuracy": "fraction of validation samples classified correctly, 0..1",
    "mean_client_staleness": "model updates (version lag, mean over clients)",
    "budget": "config time unit",
    "energy_J": "joules over the run (J)",
}

#: Unit of every number in ``study.json``.
UNITS: dict[str, str] = {
    "budget": "config time unit (virtual seconds for 'simulated'; budget x run.time_scale "
    "wall seconds for 'live')",
    "concurrency": "tasks in flight (count, C)",
    "p": "routing probability per client (sums to 1)",
    "values": "per metric_names, see metric_units",
    "bound": METRIC_UNITS["bound"],
    "val_accuracy": METRIC_UNITS["val_accuracy"],
    "test_accuracy": "fraction of test samples classified correctly, 0..1",
    "throughput": "model updates per config time unit",
    "mean_client_staleness": METRIC_UNITS["mean_client_staleness"],
    "projection_error": "max over clients of |p evaluated - p requested| (probability)",
    "counts": "trials",
    "wall_time": "seconds of wall clock (this call of run_study)",
    "constants": "L (smoothness), sigma2 and M2 (squared gradient-norm units), A (loss units)",
}

_SHORT_UNITS = {
    "bound": "E||grad f||^2",
    "val_accuracy": "fraction",
    "mean_client_staleness": "updates",
    "budget": "time unit",
    "energy_J": "J",
}


def metric_label(name: str) -> str:
    """``"val_accuracy [fraction]"``: a metric name with its short unit."""
    unit = _SHORT_UNITS.get(name)
    return f"{name} [{unit}]" if unit else name


@dataclass(frozen=True, kw_only=True)
class StudyReport:
    """The outcome of a study, for printing and JSON.

    Attributes:
        study_name: Name in the storage.
        storage: Storage URL without password (or journal path).
        objective: Objective name.
        directions: Study directions.
        metric_names: Names of the values (units in :data:`METRIC_UNITS`).
        budget: Time budget ``T`` used, config time unit.
        counts: Trials per state (``COMPLETE``, ``PRUNED``, ``FAIL``: failed while
            evaluated, ``INTERRUPTED``: interrupted by a killed driver, then retried or
            replaced, ``WAITING``, ``RUNNING``).
        best: Best trials (one for single-objective; the Pareto set otherwise): number,
            values, ``C``, ``p`` and user attributes.
        references: Analytical optimum and defaults by label: ``C`` and ``p`` as
            evaluated, ``requested`` (``C``, ``p``) when the search space moved the point,
            ``clipped``, ``projection_error``, the bound's value at the evaluated point, and
            the measured values of the trial that evaluated it (if any).
        constants: Bound constants used.
        wall_time: Seconds of wall clock this call of :func:`run_study` took.
        evaluated: Trials that count towards ``--trials`` (complete, pruned, failed while
            evaluated).
    """

    study_name: str
    storage: str
    objective: str
    directions: list[str]
    metric_names: list[str]
    budget: float
    counts: dict[str, int]
    best: list[dict[str, Any]]
    references: dict[str, dict[str, Any]]
    constants: dict[str, float] | None
    wall_time: float
    evaluated: int = 0
    extras: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe mapping (with the unit of every number under ``units``)."""
        return json_safe(
            {
                "study_name": self.study_name,
                "storage": self.storage,
                "objective": self.objective,
                "directions": self.directions,
                "metric_names": self.metric_names,
                "metric_units": [METRIC_UNITS.get(m, "") for m in self.metric_names],
                "budget": self.budget,
                "counts": self.counts,
                "evaluated": self.evaluated,
                "best": self.best,
                "references": self.references,
                "constants": self.constants,
                "wall_time": self.wall_time,
                "units": UNITS,
                "extras": self.extras,
            }
        )


def json_safe(value: Any) -> Any:
    """A JSON-safe copy: numpy to Python, non-finite floats to None, keys to str."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        v = float(value)
        return v if math.isfinite(v) else None
    return value


_HIDDEN_ATTRS = ("traceback", "intermediate", "driver", "p", "enqueued_params")


def _trial_record(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return {
        "number": trial.number,
        "values": list(trial.values) if trial.values is not None else None,
        "concurrency": trial.user_attrs.get("concurrency"),
        "p": trial.user_attrs.get("p"),
        "params": dict(trial.params),
        "user_attrs": {k: v for k, v in trial.user_attrs.items() if k not in _HIDDEN_ATTRS},
    }


def summarize_study(
    study: optuna.Study,
    *,
    space: SearchSpace,
    references: Sequence[tuple[str, Candidate]],
    bound: BoundTrialObjective | None,
    budget: float,
    objective: str,
    storage: str,
    constants: ProblemConstants | None,
    wall_time: float = 0.0,
    min_p: float | None = None,
) -> StudyReport:
    """Summarise a study: best trial(s), references as evaluated, counts that add up.

    Args:
        study: The study.
        space: Its search space (where references are evaluated).
        references: ``(label, requested point)`` of the warm starts.
        bound: The bound objective (None when constants are unknown).
        budget: Time budget, config time unit.
        objective: Objective name.
        storage: Printable storage name.
        constants: Bound constants used.
        wall_time: Seconds of wall clock.
        min_p: The ``--min-p`` constraint; a reference whose evaluated ``p`` breaks it is
            marked ``infeasible`` (a warm start is enqueued as is, so it may break it).

    Returns:
        The report.
    """
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        state = "INTERRUPTED" if is_interrupted(t) else t.state.name
        counts[state] = counts.get(state, 0) + 1
    evaluated = sum(counts.get(k, 0) for k in ("COMPLETE", "PRUNED", "FAIL"))
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best: list[dict[str, Any]] = []
    if complete:
        best_trials = [study.best_trial] if len(study.directions) == 1 else list(study.best_trials)
        # A Pareto front in the order of the first objective, best first: "best (Pareto 1)"
        # is then the front's best on it, not whichever trial Optuna lists first.
        first_max = study.directions[0] == StudyDirection.MAXIMIZE
        best_trials.sort(key=lambda t: (-t.values[0] if first_max else t.values[0], t.number))
        for t in best_trials:
            record = _trial_record(t)
            if bound is not None and t.user_attrs.get("p") is not None:
                cand = Candidate(
                    p=np.asarray(t.user_attrs["p"]), concurrency=int(t.user_attrs["concurrency"])
                )
                record["bound"] = bound.terms(cand, budget).value
            best.append(record)
    refs: dict[str, dict[str, Any]] = {}
    for label, cand in references:
        point = evaluated_point(space, cand)
        measured = [t for t in complete if label in warm_labels(t)]
        evaluated_cand = point.evaluated
        if measured and measured[-1].user_attrs.get("p") is not None:
            # What the trial itself recorded is the ground truth of where it ran.
            attrs = measured[-1].user_attrs
            evaluated_cand = Candidate(
                p=np.asarray(attrs["p"], dtype=np.float64), concurrency=int(attrs["concurrency"])
            )
        entry: dict[str, Any] = {
            "concurrency": evaluated_cand.concurrency,
            "p": [float(v) for v in evaluated_cand.p],
            "clipped": point.clipped,
            "projection_error": point.projection_error,
        }
        p_eval = np.asarray(evaluated_cand.p, dtype=np.float64)
        if min_p is not None and np.all(np.isfinite(p_eval)) and p_eval.min() < min_p - 1e-12:
            entry["infeasible"] = f"violates --min-p {min_p:g}; not a feasible trial"
        if point.moved:
            entry["requested"] = {
                "concurrency": cand.concurrency,
                "p": [float(v) for v in cand.p],
            }
            entry["note"] = point.note()
        if bound is not None:
            entry["bound"] = bound.terms(evaluated_cand, budget).value
            if point.moved:
                entry["requested"]["bound"] = bound.terms(cand, budget).value
        if measured:
            entry["trial"] = measured[-1].number
            entry["values"] = list(measured[-1].values)
            entry["user_attrs"] = {
                k: v
                for k, v in measured[-1].user_attrs.items()
                if k in ("val_accuracy", "test_accuracy", "throughput", "mean_client_staleness")
            }
        refs[label] = entry
    return StudyReport(
        study_name=study.study_name,
        storage=storage,
        objective=objective,
        directions=[d.name.lower() for d in study.directions],
        metric_names=list(study.metric_names or []),
        budget=budget,
        counts=counts,
        evaluated=evaluated,
        best=best,
        references=refs,
        constants=constants.to_dict() if constants is not None else None,
        wall_time=wall_time,
    )


# --------------------------------------------------------------------------- text
def _fmt(value: Any, digits: int = 5) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        # NaN: not measured; an infinite bound is a value (an unstable design) and says so.
        return "n/a" if math.isnan(value) else f"{value:.{digits}g}"
    return str(value)


def _p_summary(p: Sequence[float] | None, max_shown: int = 8) -> str:
    if p is None:
        return "-"
    arr = np.asarray(p, dtype=np.float64)
    if arr.size <= max_shown:
        return "[" + ", ".join(f"{v:.3f}" for v in arr) + "]"
    return f"min {arr.min():.4f} max {arr.max():.4f} (n={arr.size})"


def _counts_line(report: StudyReport) -> str:
    c = report.counts
    line = (
        f"trials: {report.evaluated} evaluated (complete {c.get('COMPLETE', 0)}, "
        f"pruned {c.get('PRUNED', 0)}, failed {c.get('FAIL', 0)})"
    )
    if c.get("INTERRUPTED"):
        line += (
            f"; {c['INTERRUPTED']} interrupted by a killed driver (retried or replaced, not "
            "counted)"
        )
    rest = {k: v for k, v in c.items() if k not in ("COMPLETE", "PRUNED", "FAIL", "INTERRUPTED")}
    if rest:
        line += "; " + ", ".join(f"{k.lower()} {v}" for k, v in sorted(rest.items()))
    return line


def format_report(report: StudyReport, config: SystemConfig) -> str:
    """Human-readable summary: best next to the analytical optimum and the defaults.

    Reference rows show ``C`` and ``p`` as evaluated; a row the search space moved is
    marked ``*`` and explained below the table.
    """
    lines = [
        f"study {report.study_name!r} ({report.objective}, {', '.join(report.directions)}) "
        f"in {report.storage}",
        _counts_line(report),
        f"time budget T = {report.budget:g} (config time unit)",
    ]
    metric = report.metric_names[0] if report.metric_names else "value"
    # Every objective of a multi-objective study, "first / second": the front trades them.
    head = " / ".join(metric_label(m) for m in report.metric_names) or metric_label(metric)
    # The bound column repeats the value when the study optimises the bound itself.
    bound_head = "" if metric == "bound" else "bound [E||grad f||^2]"
    width = max(14, len(head))
    bwidth = len(bound_head) + 1 if bound_head else 0
    lines.append(
        f"{'':<15} {'C [tasks]':>9} {head:>{width}}{bound_head:>{bwidth}}  p [probability]"
    )
    rows: list[tuple[str, dict[str, Any]]] = []
    if report.best:
        label = "best" if len(report.best) == 1 else "best (Pareto 1)"
        rows.append((label, report.best[0]))
    for name in ("analytical", "uniform", "proportional", "config"):
        if name in report.references:
            rows.append((name, report.references[name]))
    notes = []
    for name, row in rows:
        values = row.get("values")
        shown = " / ".join(_fmt(v) for v in values) if values else _fmt(None)
        mark = "*" if row.get("note") or row.get("infeasible") else ""
        if row.get("note"):
            notes.append(f"* {name}: {row['note']}; the row shows the point as evaluated")
        if row.get("infeasible"):
            notes.append(f"* {name}: {row['infeasible']} (min p = {min(row['p']):.4g})")
        bound_cell = f" {_fmt(row.get('bound')):>{bwidth - 1}}" if bwidth else ""
        lines.append(
            f"{name + mark:<15} {row.get('concurrency', '-'):>9} {shown:>{width}}"
            f"{bound_cell}  {_p_summary(row.get('p'))}"
        )
    lines.extend(notes)
    if len(report.best) > 1:
        lines.append(f"Pareto front: {len(report.best)} trials (see pareto.png)")
    n = config.num_clients
    best = report.best[0] if report.best else None
    ana = report.references.get("analytical")
    if best is not None and best.get("p") is not None and n <= 24:
        from raysync._validation import name_column

        name_head, names = name_column([client.name for client in config.clients], range(n))
        lines.append(
            f"{'client':>6} {name_head}{'mu [1/time unit]':>16} {'p best':>9} {'p analytical':>13} "
            f"{'uniform':>8}"
        )
        mu = config.service_rates  # a fresh n-tuple per access: built once, not per row
        for i in range(n):
            pa = ana["p"][i] if ana else math.nan
            # Without bound constants the analytical optimum is not computed: "-", not nan.
            pa_cell = f"{pa:>13.4f}" if math.isfinite(pa) else f"{'-':>13}"
            lines.append(
                f"{i:>6} {names[i]}{mu[i]:>16.4g} {best['p'][i]:>9.4f} {pa_cell} {1.0 / n:>8.4f}"
            )
    if report.objective != "bound" and best is not None:
        uniform_row = report.references.get("uniform", {})
        uniform = uniform_row.get("values")
        if uniform and best.get("values"):
            c_uniform = uniform_row.get("concurrency")
            # every objective: on a Pareto front the first alone says nothing of the trade
            names = list(report.metric_names) or [metric]
            parts = []
            for name, ours, theirs in zip(names, best["values"], uniform, strict=False):
                unit = _SHORT_UNITS.get(name)
                parts.append(f"{name} {ours:.4f} vs {theirs:.4f} ({ours - theirs:+.4f}"
                             + (f" {unit})" if unit else ")"))
            lines.append(
                f"best vs uniform (C={c_uniform}): {', '.join(parts)}; selected on "
                "validation, test accuracy in study.json"
            )
    return "\n".join(lines)


class SimulationWarnings(logging.Filter):
    """Hold back the simulator's per-run warnings while a command runs many short runs.

    Each of the dozens of simulations of ``recommend`` or ``tune --objective simulated``
    would repeat the same warning (typically "run too short to leave its warm-up"); they
    are counted instead and summarised in one line (:meth:`summary`). Only simulations in
    this process are seen (``tune --parallel`` workers log their own).
    """

    def __init__(
        self, why: str = "short trial runs; the comparison uses means over seeds"
    ) -> None:
        super().__init__()
        self.why = why
        self.count = 0
        self.distinct: dict[str, int] = {}
        self._logger = logging.getLogger("raysync.simulation.engine")

    def filter(self, record: logging.LogRecord) -> bool:
        """Count a warning and drop it; pass any other record."""
        if record.levelno == logging.WARNING:
            self.count += 1
            key = record.getMessage().split(":", 1)[0]
            self.distinct[key] = self.distinct.get(key, 0) + 1
            return False
        return True

    def __enter__(self) -> SimulationWarnings:
        self._logger.addFilter(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeFilter(self)

    def summary(self) -> str:
        """One line: how many warnings were held back, of which kinds, and why."""
        kinds = "; ".join(f"{k} (x{v})" for k, v in sorted(self.distinct.items()))
        return (
            f"note: {self.count} simulator warnings held back: {kinds} "
            f"({self.why})"
        )
