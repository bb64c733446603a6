"""The implementation of ``raysync tune`` (arguments are declared in ``raysync._cli.tune``).

Run as ``raysync tune CONFIG ...`` or ``python -m tuning.cli CONFIG ...``. At the end it
prints the best ``(C, p)`` next to the analytical optimum and the defaults, writes PNG
plots and ``study.json`` into the output directory, and prints how to watch the study
(optuna-dashboard) and the trials (TensorBoard).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from raysync.config import SystemConfig, load_config
from tuning.study import StudyReport, TuneSettings, run_study

__all__ = ["dashboard_command", "format_report", "main", "run_tune", "settings_from_args"]


def settings_from_args(args: argparse.Namespace, config: SystemConfig) -> TuneSettings:
    """Build :class:`~tuning.study.TuneSettings` from parsed ``raysync tune`` arguments."""
    from raysync.objectives import ProblemConstants

    study = args.study or f"{Path(args.config).stem}-{args.objective}"
    out = Path(args.out) if args.out else Path("tune-out") / study
    constants = ProblemConstants.parse(args.constants) if args.constants else None
    return TuneSettings(
        objective=args.objective,
        trials=args.trials,
        storage=args.storage,
        study_name=study,
        family=args.family,
        parameterization=args.parameterization,
        max_concurrency=args.max_concurrency,
        budget=args.budget,
        multi_objective=args.multi_objective,
        parallel=args.parallel,
        num_evals=args.num_evals,
        pruner=args.pruner,
        warm_start=not args.no_warm_start,
        constants=constants,
        seed=args.seed,
        out=out,
        tensorboard=not args.no_tensorboard,
        min_p=args.min_p,
        address=args.address,
    )


def dashboard_command(report: StudyReport) -> str:
    """The optuna-dashboard command that shows this study's storage."""
    return f"optuna-dashboard {report.storage}"


def _fmt(value: Any, digits: int = 5) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if not math.isfinite(value) else f"{value:.{digits}g}"
    return str(value)


def _p_summary(p: Sequence[float] | None, max_shown: int = 8) -> str:
    if p is None:
        return "-"
    arr = np.asarray(p, dtype=np.float64)
    if arr.size <= max_shown:
        return "[" + ", ".join(f"{v:.3f}" for v in arr) + "]"
    return f"min {arr.min():.4f} max {arr.max():.4f} (n={arr.size})"


def format_report(report: StudyReport, config: SystemConfig) -> str:
    """Human-readable summary: best next to the analytical optimum and the defaults."""
    lines = [
        f"study {report.study_name!r} ({report.objective}, {', '.join(report.directions)}) "
        f"in {report.storage}",
        "trials: " + ", ".join(f"{k.lower()} {v}" for k, v in sorted(report.counts.items())),
        f"time budget T = {report.budget:g} (config time unit)",
    ]
    metric = report.metric_names[0] if report.metric_names else "value"
    header = f"{'':<14} {'C':>4} {metric:>14} {'bound':>12}  p"
    lines.append(header)
    rows: list[tuple[str, dict[str, Any]]] = []
    if report.best:
        label = "best" if len(report.best) == 1 else "best (Pareto 1)"
        rows.append((label, report.best[0]))
    for name in ("analytical", "uniform", "proportional", "config"):
        if name in report.references:
            rows.append((name, report.references[name]))
    for name, row in rows:
        values = row.get("values")
        value = values[0] if values else None
        lines.append(
            f"{name:<14} {row.get('concurrency', '-'):>4} {_fmt(value):>14} "
            f"{_fmt(row.get('bound')):>12}  {_p_summary(row.get('p'))}"
        )
    if len(report.best) > 1:
        lines.append(f"Pareto front: {len(report.best)} trials (see pareto.png)")
    n = config.num_clients
    best = report.best[0] if report.best else None
    ana = report.references.get("analytical")
    if best is not None and best.get("p") is not None and n <= 24:
        lines.append(f"{'client':>6} {'mu':>9} {'p best':>9} {'p analytical':>13} {'uniform':>8}")
        for i in range(n):
            pa = ana["p"][i] if ana else math.nan
            lines.append(
                f"{i:>6} {config.service_rates[i]:>9.4g} {best['p'][i]:>9.4f} {pa:>13.4f} "
                f"{1.0 / n:>8.4f}"
            )
    if report.objective != "bound" and best is not None:
        uniform = report.references.get("uniform", {}).get("values")
        if uniform and best.get("values"):
            gain = best["values"][0] - uniform[0]
            lines.append(
                f"best vs uniform (C=n): {metric} {best['values'][0]:.4f} vs {uniform[0]:.4f} "
                f"({gain:+.4f}); selected on validation, test accuracy in study.json"
            )
    return "\n".join(lines)


def run_tune(args: argparse.Namespace) -> int:
    """Run ``raysync tune`` from parsed arguments.

    Returns:
        0 on success.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    config = load_config(args.config)
    settings = settings_from_args(args, config)
    show = not args.no_progress and sys.stderr.isatty()
    bar: Any = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=settings.trials, unit="trial", file=sys.stderr)

    def progress(done: int, total: int, trial: Any) -> None:
        if bar is not None:
            bar.n = done
            bar.refresh()

    def event(message: str) -> None:
        print(message, file=sys.stderr)

    try:
        report = run_study(config, settings, progress=progress, on_event=event)
    finally:
        if bar is not None:
            bar.close()
    plots: list[Path] = []
    if not args.no_plots:
        from tuning.plots import write_plots

        study = optuna.load_study(
            study_name=settings.study_name,
            storage=_reopen(settings),
        )
        plots = write_plots(study, report, config.service_rates, settings.out)
    if args.json:
        payload = report.to_dict()
        payload["plots"] = [str(p) for p in plots]
        print(json.dumps(payload, indent=2))
        return 0
    print(format_report(report, config))
    print(f"results: {settings.out / 'study.json'}")
    if plots:
        print("plots: " + ", ".join(str(p) for p in plots))
    if settings.tensorboard:
        logdir = settings.out / "tensorboard"
        print(f"TensorBoard (one run per trial): tensorboard --logdir {logdir}")
    print(f"watch the study: {dashboard_command(report)}  (pip install optuna-dashboard)")
    return 0


def _reopen(settings: TuneSettings) -> Any:
    from tuning.study import make_storage

    return make_storage(
        settings.storage, settings.out, heartbeat_interval=settings.heartbeat_interval
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tuning.cli CONFIG ...``: the same as ``raysync tune``."""
    from raysync.cli import main as raysync_main

    return raysync_main(["tune", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
