"""``raysync tune CONFIG``: tune the concurrency ``C`` and the routing ``p`` with Optuna.

This package contributes the command to the raysync CLI through the entry point
``tune = "tuning.cli:add_parser"`` of the group ``raysync.commands`` (see
:mod:`raysync.cli`); raysync itself never imports :mod:`tuning`. The arguments are declared
here once, with their choices taken from the lists the study itself validates against.
Run as ``raysync tune CONFIG ...`` or ``python -m tuning.cli CONFIG ...``. At the end it
prints the best ``(C, p)`` next to the analytical optimum and the defaults, writes PNG
plots and ``study.json`` into the output directory, and prints how to watch the study
(optuna-dashboard) and the trials (TensorBoard).

Examples::

    raysync tune examples/tiny.toml --objective bound --trials 500 --budget 100
    raysync tune examples/tiny.toml --objective simulated --trials 40 --parallel 2
    raysync tune raysync/configs/demo.toml --objective live --trials 8 --budget 30
    raysync tune cfg.toml --storage postgresql://user:pw@db/optuna --study fleet-a
    raysync tune cfg.toml --objective simulated --multi-objective staleness
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from raysync.config import load_config
from tuning.objectives import MULTI_OBJECTIVES, OBJECTIVES
from tuning.report import StudyReport, format_report
from tuning.search_space import FAMILIES, PARAMETERIZATIONS
from tuning.settings import PRUNERS, TuneSettings, settings_from_args
from tuning.study import run_study

__all__ = [
    "add_parser",
    "dashboard_command",
    "format_report",
    "main",
    "run_tune",
    "settings_from_args",
]


def add_parser(subparsers: Any) -> None:
    """Register the ``tune`` command.

    Args:
        subparsers: The ``add_subparsers()`` object of the top-level parser.
    """
    parser = subparsers.add_parser(
        "tune",
        help="tune concurrency C and routing p with Optuna (bound, simulated or live)",
        description=(
            "Run an Optuna study over the concurrency C (1..C_max) and the routing p (a "
            "probability simplex) of a fleet. Objectives: 'bound' (the analytical "
            "wall-clock bound, cheap), 'simulated' (validation accuracy at a virtual-time "
            "budget) or 'live' (validation accuracy at a wall-clock budget on Ray). The "
            "analytical optimum and the usual defaults are evaluated first (warm start). "
            "The study lives in a storage (an embedded journal file by default, or an RDB "
            "URL) and resumes where it stopped when run again with the same --study."
        ),
    )
    parser.add_argument("config", help="path to a TOML config file (the fleet and training)")
    parser.add_argument(
        "--objective", choices=OBJECTIVES, default="bound", help="what a trial measures"
    )
    parser.add_argument(
        "--trials", type=int, default=100,
        help="finished trials the study should hold (a resumed study runs the rest)",
    )
    parser.add_argument(
        "--storage", default=None,
        help="Optuna storage: sqlite:///study.db, postgresql://..., or a .journal file "
        "(default: OUT/study.journal, no server needed)",
    )
    parser.add_argument(
        "--study", default=None, help="study name (default: <config name>-<objective>)"
    )
    parser.add_argument(
        "--family", choices=FAMILIES, default="simplex",
        help="routing family: full simplex, p ~ mu^beta, or one weight per tier",
    )
    parser.add_argument(
        "--parameterization", choices=PARAMETERIZATIONS, default="exponential",
        help="simplex parameterisation: normalised -log(u) draws or softmax of logits",
    )
    parser.add_argument(
        "--max-concurrency", type=int, default=None,
        help="largest C searched (default max(2n, config concurrency))",
    )
    parser.add_argument(
        "--budget", type=float, default=None,
        help="time budget in the config's time unit (virtual seconds for 'simulated'; "
        "budget x run.time_scale wall seconds for 'live'); default run.time_budget",
    )
    parser.add_argument(
        "--multi-objective", choices=MULTI_OBJECTIVES, default=None,
        help="add a second objective: mean client staleness, the budget itself, or the "
        "energy over the run in joules (needs power figures in the config)",
    )
    parser.add_argument(
        "--parallel", type=int, default=1,
        help="trials in flight at once as Ray tasks (capped by the cluster's resources)",
    )
    parser.add_argument("--out", default=None, help="output directory (default tune-out/<study>)")
    parser.add_argument(
        "--num-evals", type=int, default=8,
        help="evaluations per measured trial (the pruning points)",
    )
    parser.add_argument(
        "--pruner", choices=PRUNERS, default="median",
        help="pruner of single-objective measured studies",
    )
    parser.add_argument(
        "--no-warm-start", action="store_true",
        help="do not enqueue the analytical optimum and the defaults first",
    )
    parser.add_argument(
        "--constants", default=None,
        help="bound constants L,sigma2,M2,A (default: estimated by a pilot run)",
    )
    parser.add_argument("--seed", type=int, default=0, help="sampler seed")
    parser.add_argument(
        "--min-p", type=float, default=None,
        help="constraint: every client gets at least this routing probability",
    )
    parser.add_argument(
        "--address", default=None, help="Ray cluster address for parallel or live trials"
    )
    parser.add_argument(
        "--no-tensorboard", action="store_true", help="no TensorBoard run per trial"
    )
    parser.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--write-config", metavar="OUT", default=None,
        help="write CONFIG with the best trial's concurrency C and routing p (routing "
             "'fixed'; AsyncSGD becomes generalized_asyncsgd; algorithm.lr kept) to OUT, a "
             "config simulate and run accept (single objective only)",
    )
    parser.set_defaults(func=run_tune)


def dashboard_command(report: StudyReport) -> str:
    """The optuna-dashboard command that shows this study's storage."""
    return f"optuna-dashboard {report.storage}"


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
    if args.write_config is not None:  # before the study: a bad path costs no trials
        from raysync._validation import check_not_input, check_output_file
        from raysync.exceptions import ConfigError

        if settings.multi_objective is not None:
            raise ConfigError(
                f"--write-config needs a single objective: with --multi-objective "
                f"{settings.multi_objective} the study's best is a Pareto front (choose a "
                "trial from study.json)"
            )
        check_output_file(args.write_config, "--write-config")
        check_not_input(args.write_config, "--write-config", args.config, "tuned config")
    if settings.address is not None and (settings.parallel > 1 or settings.objective == "live"):
        # Before the pilot run and the study's files: an unreachable cluster leaves nothing.
        from raysync.runtime import check_reachable

        check_reachable(settings.address)
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

    existed = settings.out.exists()
    from tuning.report import SimulationWarnings

    held = SimulationWarnings("short trial runs; every trial is scored on the same budget")
    try:
        with held:
            report = run_study(config, settings, progress=progress, on_event=event)
    except BaseException:
        if not existed:
            # A study refused before it started (a bad storage, budget, ...) leaves no empty
            # output folder; one holding anything is kept.
            with contextlib.suppress(OSError):
                settings.out.rmdir()
        raise
    finally:
        if bar is not None:
            bar.close()
    if held.count:
        print(held.summary(), file=sys.stderr)
    plots: list[Path] = []
    if not args.no_plots:
        from tuning.plots import write_plots

        study = optuna.load_study(
            study_name=settings.study_name,
            storage=_reopen(settings),
        )
        plots = write_plots(study, report, config.service_rates, settings.out)
    written = None
    if args.write_config is not None:
        written = _write_best(config, report, args.write_config)
    if args.json:
        payload = report.to_dict()
        payload["plots"] = [str(p) for p in plots]
        payload["written_config"] = args.write_config
        from raysync.cli import print_json

        print_json(args, json.dumps(payload, indent=2))
        return 0
    print(format_report(report, config))
    if written is not None:
        print(written)
    print(f"results: {settings.out / 'study.json'}")
    if plots:
        print("plots: " + ", ".join(str(p) for p in plots))
    if settings.tensorboard:
        logdir = settings.out / "tensorboard"
        print(f"TensorBoard (one run per trial): tensorboard --logdir {logdir}")
    print(f"watch the study: {dashboard_command(report)}  (pip install optuna-dashboard)")
    return 0


def _write_best(config: Any, report: StudyReport, out: str) -> str:
    """Write ``config`` with the best trial's ``C`` and ``p``; return the line saying so.

    The design as the study ran it (:meth:`SystemConfig.with_random_routing`, as
    :func:`tuning.objectives.trial_config` builds each trial's config); everything else,
    ``algorithm.lr`` and ``[run]`` included, is the input's.

    Raises:
        ConfigError: No trial was evaluated, or the file cannot be written.
    """
    from raysync.config import write_config_file
    from raysync.exceptions import ConfigError

    best = report.best[0] if report.best else None
    if best is None or best.get("p") is None:
        raise ConfigError(f"--write-config {out!r}: the study has no evaluated trial to write")
    tuned = config.with_random_routing(best["p"], best["concurrency"])
    write_config_file(tuned, out, flag="--write-config")
    return (f"wrote {out} (trial {best.get('number')}: routing.kind = 'fixed', concurrency = "
            f"{tuned.concurrency}; algorithm.lr kept at {tuned.algorithm.lr:g})")


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
