"""PNG plots of a tuning study, drawn with matplotlib's Agg canvas (no pyplot state).

* :func:`plot_history`: every trial's value and the running best (warm starts marked,
  pruned trials at their last intermediate value).
* :func:`plot_pareto`: the two values of a multi-objective study with the Pareto front.
* :func:`plot_best_p`: the best routing ``p`` per client next to the analytical optimum and
  the defaults.
* :func:`plot_intermediate`: the intermediate (validation accuracy) curves, pruned ones
  grey.
* :func:`write_plots`: all that apply, into a directory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import optuna
    from matplotlib.figure import Figure

    from tuning.study import StudyReport

__all__ = [
    "plot_best_p",
    "plot_history",
    "plot_intermediate",
    "plot_pareto",
    "write_plots",
]

_REF_STYLE = {
    "best": ("tab:blue", "o"),
    "optimised": ("tab:blue", "o"),
    "analytical": ("tab:red", "*"),
    "uniform": ("tab:green", "s"),
    "proportional": ("tab:purple", "^"),
    "config": ("tab:brown", "D"),
}


def _with_unit(name: str) -> str:
    from tuning.report import metric_label

    return metric_label(name)


def _figure(width: float = 7.0, height: float = 4.2) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_history(
    study: optuna.Study, path: str | Path, *, value_index: int = 0, title: str | None = None
) -> Path:
    """Trial values in order, with the running best.

    Args:
        study: The study.
        path: PNG path.
        value_index: Which value of a multi-objective study.
        title: Figure title.

    Returns:
        The path written.
    """
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    direction = study.directions[value_index].name.lower()
    names = list(study.metric_names or [])
    name = names[value_index] if value_index < len(names) else f"value {value_index}"
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    xs, ys, px, py = [], [], [], []
    for t in trials:
        if t.state == TrialState.COMPLETE and t.values is not None:
            xs.append(t.number)
            ys.append(t.values[value_index])
        elif t.state == TrialState.PRUNED and t.intermediate_values:
            last = max(t.intermediate_values)
            px.append(t.number)
            py.append(t.intermediate_values[last])
    ax.scatter(xs, ys, s=12, color="tab:blue", alpha=0.7, label="complete")
    if px:
        ax.scatter(px, py, s=10, color="0.6", marker="x", label="pruned (last report)")
    if ys:
        order = np.argsort(xs)
        best = (np.minimum if direction == "minimize" else np.maximum).accumulate(
            np.asarray(ys)[order]
        )
        ax.step(np.asarray(xs)[order], best, where="post", color="tab:orange", label="best so far")
    for t in trials:
        label = t.user_attrs.get("warm_start")
        if label and t.state == TrialState.COMPLETE and t.values is not None:
            color, marker = _REF_STYLE.get(label, ("k", "o"))
            ax.scatter(
                [t.number], [t.values[value_index]], s=90, color=color, marker=marker,
                edgecolors="k", zorder=5, label=f"warm start: {label}",
            )
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{_with_unit(name)} ({direction})")
    ax.set_title(title or f"optimisation history: {study.study_name}")
    if ys and direction == "minimize" and min(ys) > 0 and max(ys) / min(ys) > 5:
        ax.set_yscale("log")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return _save(fig, Path(path))


def plot_pareto(study: optuna.Study, path: str | Path, *, title: str | None = None) -> Path:
    """Scatter of the two values of a multi-objective study; the Pareto front highlighted."""
    from optuna.trial import TrialState

    trials = [
        t for t in study.get_trials(deepcopy=False)
        if t.state == TrialState.COMPLETE and t.values is not None
    ]
    names = list(study.metric_names or ["value 0", "value 1"])
    fig = _figure(6.0, 4.6)
    ax = fig.add_subplot(1, 1, 1)
    if trials:
        vals = np.array([t.values[:2] for t in trials], dtype=np.float64)
        ax.scatter(vals[:, 1], vals[:, 0], s=12, color="0.55", label="trials")
        front = np.array([t.values[:2] for t in study.best_trials], dtype=np.float64)
        if front.size:
            order = np.argsort(front[:, 1])
            ax.plot(
                front[order, 1], front[order, 0], "o-", color="tab:red", ms=5,
                label="Pareto front",
            )
    dirs = [d.name.lower() for d in study.directions]
    ax.set_xlabel(f"{_with_unit(names[1])} ({dirs[1]})")
    ax.set_ylabel(f"{_with_unit(names[0])} ({dirs[0]})")
    ax.set_title(title or f"Pareto front: {study.study_name}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, Path(path))


def plot_best_p(
    mu: Sequence[float] | np.ndarray,
    routings: Mapping[str, tuple[Sequence[float] | np.ndarray, int]],
    path: str | Path,
    *,
    title: str | None = None,
) -> Path:
    """Grouped bars of routing probabilities per client.

    Args:
        mu: Service rates (shown under each client).
        routings: Label to ``(p, C)``, e.g. ``{"best": ..., "analytical": ..., "uniform":
            ...}``; the legend shows ``C``.
        path: PNG path.
        title: Figure title.

    Returns:
        The path written.
    """
    rates = np.asarray(mu, dtype=np.float64)
    n = rates.size
    labels = list(routings)
    width = 0.8 / max(1, len(labels))
    fig = _figure(max(6.0, 0.45 * n + 3), 4.2)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(n)
    for j, label in enumerate(labels):
        p, c = routings[label]
        color = _REF_STYLE.get(label, ("0.5", "o"))[0]
        ax.bar(
            x + (j - (len(labels) - 1) / 2) * width, np.asarray(p), width,
            label=f"{label} (C={c} tasks)", color=color, alpha=0.85,
        )
    ax.set_xticks(x)
    ax.set_xticklabels([f"{i}\nmu={rates[i]:.3g}" for i in range(n)], fontsize=7)
    ax.set_ylabel("routing probability p_i")
    ax.set_title(title or "routing per client")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, Path(path))


def plot_intermediate(study: optuna.Study, path: str | Path, *, title: str | None = None) -> Path:
    """Intermediate values (validation accuracy at each evaluation) of every trial."""
    from optuna.trial import TrialState

    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    drawn = {"complete": False, "pruned": False}
    for t in study.get_trials(deepcopy=False):
        if not t.intermediate_values:
            continue
        steps = sorted(t.intermediate_values)
        values = [t.intermediate_values[s] for s in steps]
        if t.state == TrialState.PRUNED:
            kind, color, alpha = "pruned", "0.6", 0.6
        else:
            kind, color, alpha = "complete", "tab:blue", 0.8
        ax.plot(
            steps, values, "-o", ms=2, lw=1, color=color, alpha=alpha,
            label=None if drawn[kind] else kind,
        )
        drawn[kind] = True
    ax.set_xlabel("evaluation (step: budget / num_evals of config time each)")
    ax.set_ylabel("intermediate value (validation accuracy, fraction)")
    ax.set_title(title or "learning curves of the trials")
    if any(drawn.values()):
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, Path(path))


def write_plots(
    study: optuna.Study, report: StudyReport, mu: Sequence[float] | np.ndarray, out: str | Path
) -> list[Path]:
    """Write every plot that applies to ``out`` and return their paths.

    ``history.png`` always; ``pareto.png`` for two-objective studies; ``best_p.png`` when
    a best trial exists (the first Pareto trial for multi-objective studies);
    ``intermediate.png`` when trials reported intermediate values.
    """
    out = Path(out)
    paths = [plot_history(study, out / "history.png")]
    if len(study.directions) > 1:
        paths.append(plot_pareto(study, out / "pareto.png"))
    routings: dict[str, tuple[Sequence[float] | np.ndarray, int]] = {}
    if report.best and report.best[0].get("p") is not None:
        best = report.best[0]
        routings["best"] = (best["p"], int(best["concurrency"]))
    for label in ("analytical", "uniform", "proportional"):
        ref: Any = report.references.get(label)
        if ref is not None:
            routings[label] = (ref["p"], int(ref["concurrency"]))
    if routings:
        paths.append(plot_best_p(mu, routings, out / "best_p.png"))
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        paths.append(plot_intermediate(study, out / "intermediate.png"))
    return paths
