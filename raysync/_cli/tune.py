"""``raysync tune CONFIG``: tune the concurrency ``C`` and the routing ``p`` with Optuna.

The implementation lives in the separate top-level package :mod:`tuning` (``tuning.cli``),
which depends on raysync; raysync never imports it at module import time. This module
only declares the arguments, and its handler imports :mod:`tuning` when the command runs.

Examples::

    raysync tune examples/tiny.toml --objective bound --trials 500 --budget 100
    raysync tune examples/tiny.toml --objective simulated --trials 40 --parallel 2
    raysync tune examples/demo.toml --objective live --trials 8 --budget 30
    raysync tune cfg.toml --storage postgresql://user:pw@db/optuna --study fleet-a
    raysync tune cfg.toml --objective simulated --multi-objective staleness
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

__all__ = ["add_parser"]

_OBJECTIVES = ("bound", "simulated", "live")
_FAMILIES = ("simplex", "power", "tiers")
_MULTI = ("staleness", "budget")


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
        "--objective", choices=_OBJECTIVES, default="bound", help="what a trial measures"
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
        "--family", choices=_FAMILIES, default="simplex",
        help="routing family: full simplex, p ~ mu^beta, or one weight per tier",
    )
    parser.add_argument(
        "--parameterization", choices=("exponential", "logits"), default="exponential",
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
        "--multi-objective", choices=_MULTI, default=None,
        help="add a second objective: mean client staleness, or the budget itself",
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
        "--pruner", choices=("median", "none"), default="median",
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
    parser.set_defaults(func=_handle)


def _handle(args: argparse.Namespace) -> int:
    # Imported by name at run time: raysync itself never imports the tuning package.
    module = importlib.import_module("tuning.cli")
    return int(module.run_tune(args))
