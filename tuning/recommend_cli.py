"""``raysync recommend CONFIG --budget SECONDS --out REC.toml``: what to run, and why.

Contributed to the raysync CLI through the entry point
``recommend = "tuning.recommend_cli:add_parser"`` (group ``raysync.commands``, see
:mod:`raysync.cli`). The pipeline is :func:`tuning.recommend.recommend`: pilot constants,
the bias-aware bound of docs/theory.md section 6 optimised over the whole design space, steps
chosen per arm on a simulated pilot averaged over two seeds, then a short Optuna study on the
simulator warm-started with the analytical optimum, the unbiased optimum (3b) and every
baseline, each at its own step;
the leader (best mean validation score over the seeds each design ran on) replaces the
bound's optimum only if, rerun with the next two finalists on ``--confirm-seeds`` fresh
seeds, it is ahead there by more than ``--overrule-margin`` (default 1) standard errors of
the paired differences.
``REC.toml`` is the input config with ``concurrency``, ``[routing]`` and ``[algorithm]``
replaced, and a ``run.checkpoint_dir`` moved to a sibling named after REC.toml (the input's
holds the input design's checkpoints, which ``raysync run`` would refuse to overwrite; see
:func:`tuning.recommend.written_config`); it is written through a temporary file and a
rename, so bad input or a failure leaves nothing half-written.

Examples::

    raysync recommend examples/tiny.toml --budget 60 --out rec.toml
    raysync recommend cfg.toml --budget 20 --target-accuracy 0.85 --trials 20 --out rec.toml
    raysync recommend fleet.toml --budget 60 --energy-budget 5000 --out rec.toml

``--energy-budget J`` (joules over the run of ``T`` seconds) and ``--energy-weight W`` (bound
units per joule) follow ``raysync optimize``'s rules and need power figures in the config;
the recommendation never exceeds the budget, and the table and REC.toml's header comment
give every arm's energy (:mod:`tuning.recommend`, "Energy").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from tuning.report import SimulationWarnings, json_safe

__all__ = ["add_parser", "main"]


def add_parser(subparsers: Any) -> None:
    """Register the ``recommend`` command.

    Args:
        subparsers: The ``add_subparsers()`` object of the top-level parser.
    """
    parser = subparsers.add_parser(
        "recommend",
        help="recommend update rule, routing p, concurrency C and step for a time budget",
        description=(
            "Estimate the bound's constants with a pilot run, minimise the bias-aware bound "
            "(docs/theory.md section 6) over update rule, routing, C and beta, choose each "
            "arm's step on a simulated pilot over two seeds, refine with a short Optuna "
            "study on the simulator "
            "(warm-started with the analytical optimum, the unbiased wall-clock optimum "
            "(3b) and every baseline: uniform C=n, AsyncSGD, FedAsync, FedBuff), and write "
            "a runnable config plus a table. The study's leader replaces the bound's "
            "optimum only when, rerun on fresh seeds, it is ahead there by more than "
            "--overrule-margin paired standard errors."
        ),
    )
    parser.add_argument("config", help="path to a TOML config file")
    parser.add_argument(
        "--budget", type=float, required=True,
        help="time budget T in the config's time unit (virtual seconds on the simulator)",
    )
    parser.add_argument(
        "--target-accuracy", type=float, default=None,
        help="minimise the simulated time to reach this validation accuracy instead",
    )
    parser.add_argument(
        "--trials", type=int, default=30,
        help=("cap on the Optuna study's trials on the simulator, warm starts included "
              "(default 30, at most 100,000); the per-arm step pilot (steps x arms x 2 "
              "seeds) and reruns of the leader and finalists come on top; every simulator "
              "run is reported as 'simulations spent'"),
    )
    parser.add_argument(
        "--confirm-seeds", type=int, default=5, metavar="N",
        help=("fresh seeds the 3 leading designs and the bound's optimum are rerun on; a "
              "design overrules the optimum only by a paired lead on them above "
              "--overrule-margin SEs: 0 or an integer 2..100 (default 5; 0: the study's leader "
              "on 3 seeds is chosen outright)"),
    )
    parser.add_argument(
        "--overrule-margin", type=float, default=1.0, metavar="SE",
        help=("standard errors of the paired gains on the confirmation seeds a design's "
              "lead must exceed to overrule the bound's optimum, a finite number >= 0 "
              "(default 1; 2.132 is a one-sided paired t test at 5 %% on 5 seeds)"),
    )
    parser.add_argument(
        "--rule-change-margin", type=float, default=2.132, metavar="SE",
        help=("the same for a design whose update rule differs from the bound's optimum's "
              "(AsyncSGD against importance weights, say), a finite number >= 0 (default "
              "2.132, a one-sided paired t test at 5 %% on 5 seeds)"),
    )
    parser.add_argument(
        "--energy-budget", type=float, default=None, metavar="JOULES",
        help=("most energy the run may spend over --budget, joules > 0 (needs power figures "
              "in the config); the recommendation never exceeds it"),
    )
    parser.add_argument(
        "--energy-weight", type=float, default=0.0, metavar="W",
        help=("price of a joule in bound units, >= 0: minimise bound + W * energy, and scale "
              "the trials' error or time to target by 1 + W * energy / bound (default 0)"),
    )
    parser.add_argument("--out", required=True, help="where to write the recommended config")
    parser.add_argument(
        "--report", default=None, help="also write the full result as JSON to this path"
    )
    parser.add_argument(
        "--bias", choices=("direct", "cauchy-schwarz"), default="direct",
        help="bias term of the bound: Gram matrices (default) or Cauchy-Schwarz zeta^2",
    )
    parser.add_argument("--max-concurrency", type=int, default=None,
                        help="largest C considered (default 2n)")
    parser.add_argument("--seed", type=int, default=None, help="override the config's seed")
    parser.add_argument(
        "--redraw-partition", action="store_true",
        help=("each pilot seed also redraws the data (subsample, partition over clients, "
              "initial model), and the bound's bias term averages the pilots' Gram matrices "
              "over those draws; meant for data that will differ from the config's draw, but on "
              "the benchmark's held-out seeds it did worse than the default (README, "
              "'Held-out test')"),
    )
    parser.add_argument(
        "--redraw-confirmation", action=argparse.BooleanOptionalAction, default=True,
        help=("each confirmation seed redraws the data, so a design overrules the bound's "
              "optimum only by winning across draws of the partition, the steps stay chosen "
              "on the config's draw (default since its held-out test, README 'Held-out test "
              "of --rule-change-margin'; --no-redraw-confirmation judges on the config's "
              "own draw, as in the benchmark's runs of record)"),
    )
    parser.add_argument(
        "--pool-bias", action=argparse.BooleanOptionalAction, default=True,
        help=("the bound's bias term averages the Gram matrices of the config's draw and "
              "each pilot seed's draw of the data, while every run keeps the config's draw "
              "(default; --no-pool-bias: the config's draw alone, as in the benchmark's "
              "runs of record)"),
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.set_defaults(func=_handle)


def _handle(args: argparse.Namespace) -> int:
    from raysync.config import load_config
    from raysync.exceptions import ConfigError
    from raysync.objectives import default_max_concurrency
    from tuning.recommend import (
        RecommendSettings,
        checkpoint_note,
        config_header,
        config_text,
        format_table,
        recommend,
        run_length_note,
        written_config,
    )
    from tuning.settings import check_search_size

    # Every output path is checked before the (minutes-long) search, not after it.
    out = _check_output(args.out, "--out")
    report_path = _check_output(args.report, "--report") if args.report else None
    if report_path is not None and os.path.abspath(report_path) == os.path.abspath(out):
        raise ConfigError(
            f"--report {args.report!r} is the --out file: the report would overwrite the "
            "config; give another path"
        )
    from raysync._validation import check_not_input

    # recommend --out CONFIG replaced the input config (exit 0)
    check_not_input(args.out, "--out", args.config, "recommended config")
    if args.report:
        check_not_input(args.report, "--report", args.config, "report")
    if args.max_concurrency is not None and args.max_concurrency < 1:
        raise ConfigError(f"--max-concurrency must be an integer >= 1, got {args.max_concurrency}")
    config = load_config(args.config)
    cmax, cmax_name = default_max_concurrency(
        args.max_concurrency, config.num_clients, config.concurrency
    )
    check_search_size(cmax, config.num_clients, name=cmax_name)
    if args.seed is not None:
        config = config.replace(seed=args.seed)
    settings = RecommendSettings(
        budget=args.budget, target_accuracy=args.target_accuracy, trials=args.trials,
        max_concurrency=args.max_concurrency, bias_kind=args.bias,
        energy_budget=args.energy_budget, energy_weight=args.energy_weight,
        redraw_partition=args.redraw_partition, confirm_seeds=args.confirm_seeds,
        redraw_confirmation=args.redraw_confirmation, overrule_margin=args.overrule_margin,
        rule_change_margin=args.rule_change_margin, pool_bias=args.pool_bias,
    )

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    with SimulationWarnings() as sim_warnings:
        rec = recommend(config, settings, log=log)
    if sim_warnings.count and not args.quiet:
        log(sim_warnings.summary())
    header = config_header(rec, config, path=str(out))
    files = [("--out", out, config_text(written_config(rec, path=str(out)), header=header))]
    if report_path is not None:
        files.append(("--report", report_path, json.dumps(json_safe(rec.to_dict()), indent=2)))
    _write_all(files)
    print(f"recommended: {rec.point.describe()}")
    print(format_table(rec))
    best_base = best_baseline(rec)
    rec_arm = rec.arm("recommended")
    print(summary_line(rec, rec_arm, best_base, metric=config.model.metric_label))
    if rec.target_accuracy is None and (
        rec_arm.val_accuracy == best_base.val_accuracy and rec_arm.point != best_base.point
    ):
        # Equal means over the seeds: a validation set too small to tell the designs apart
        # (or designs that train alike); the choice then rests on the bound (or on the
        # study's ranking, when a trial's design was taken), not on these runs.
        basis = tie_basis(rec)
        print(f"note: the recommendation ties the {best_base.label} baseline on validation "
              f"({rec_arm.val_accuracy:.4f}): the runs do not separate them, so the choice "
              f"rests on {basis}; a larger validation set or a longer budget would "
              "separate them")
    else:
        below = below_baseline_note(rec, rec_arm, best_base)
        if below is not None:
            print(below)
    print(f"wrote {out}")
    for note in (checkpoint_note(config, str(out)), run_length_note(rec, config, str(out))):
        if note is not None:
            print(note)
    if config.run.time_scale == 0:
        # The choice rests on the config's service times, which run does not emulate then.
        print(f"note: run.time_scale = 0: 'raysync run {out}' will not emulate the service "
              "times this recommendation was made for (each task lasts as long as its "
              "computation); set run.time_scale > 0 to run the fleet it assumed")
    return 0


def best_baseline(rec: Any) -> Any:
    """The baseline row the closing line compares the recommendation with.

    Without a target: the highest validation score. With one: what was minimised, so the
    fewest missed seeds first, then the shortest mean time to the target (validation
    score last, between baselines that never reached it).
    """
    bases = [a for a in rec.arms if a.label not in ("recommended", "analytical")]
    if rec.target_accuracy is None:
        return max(bases, key=lambda a: a.val_accuracy)
    return min(bases, key=lambda a: (
        -(a.reached or 0), math.inf if a.time_to_target is None else a.time_to_target,
        -a.val_accuracy))


def _time_to_target(arm: Any) -> str:
    """An arm's time to the target as the closing line gives it (seconds, or k/n hit)."""
    if arm.time_to_target is not None:
        return f"{arm.time_to_target:.3g} s"
    if arm.reached:
        return f"reached on {arm.reached}/{arm.seeds} seeds"
    return "not reached"


def summary_line(rec: Any, rec_arm: Any, best_base: Any, *, metric: str = "accuracy") -> str:
    """The closing line: the recommendation against the best baseline, on what was chosen.

    Without a target, the validation score at ``T``; with one, the time to reach it (the
    mean over the seeds, in the config's seconds, or on how many seeds it was reached,
    as the table's ``t->target``), then the validation score at ``T`` for reference.
    """
    spent = (f"{rec.simulations} simulations spent, {rec.trials} of them "
             f"{'an Optuna trial' if rec.trials == 1 else 'Optuna trials'}")
    if rec.target_accuracy is None:
        return (f"validation {metric} at T={rec.budget:g}: recommended "
                f"{rec_arm.val_accuracy:.4f}, best baseline ({best_base.label}) "
                f"{best_base.val_accuracy:.4f} (means over seeds; {spent})")
    return (f"time to validation {metric} {rec.target_accuracy:g} within T={rec.budget:g} s: "
            f"recommended {_time_to_target(rec_arm)}, best baseline ({best_base.label}) "
            f"{_time_to_target(best_base)} (means over seeds; validation {metric} at T: "
            f"{rec_arm.val_accuracy:.4f} vs {best_base.val_accuracy:.4f}; {spent})")


def below_baseline_note(rec: Any, rec_arm: Any, best_base: Any) -> str | None:
    """The note for a recommendation below the best baseline on the table's seeds.

    The table's means and the choice come from different seeds (the confirmation's fresh
    ones, or the study's): a "recommended" row below a baseline is said, not left
    unexplained. None when it is not below, or with a target (the table's accuracy is
    then not what was minimised).
    """
    if rec.target_accuracy is not None or not rec_arm.val_accuracy < best_base.val_accuracy:
        return None
    fresh = len((rec.confirmation or {}).get("seeds") or [])
    where = f"on {fresh} fresh seeds (the 'choice' line above)" if fresh else "by the study"
    return (f"note: on the table's seeds the recommendation's validation accuracy is below "
            f"the {best_base.label} baseline's ({rec_arm.val_accuracy:.4f} < "
            f"{best_base.val_accuracy:.4f}); it was chosen {where}, not on these seeds, "
            "which do not show it ahead; more --confirm-seeds make the choice surer")


def tie_basis(rec: Any) -> str:
    """What a recommendation that ties the best baseline on validation rests on.

    The bound's design when the choice kept it (nothing in the runs overruled it), else
    the study's ranking (a trial's design led the study and its confirmation).
    """
    return "the bound's design" if rec.point == rec.arm("analytical").point else (
        "the study's ranking")


def _write_all(files: list[tuple[str, Path, str]]) -> None:
    """Write every ``(flag, path, text)``: all of them or none.

    Each text goes to a temporary file beside its path first; the renames happen only
    once every temporary file is complete, so a folder that cannot be written (or a full
    disk) leaves no file behind, not the report without the config.

    Raises:
        ConfigError: A file could not be written (named by its flag).
    """
    import contextlib

    from raysync._files import atomic_write
    from raysync._validation import describe_os_error
    from raysync.exceptions import ConfigError

    with contextlib.ExitStack() as stack:
        for flag, path, text in files:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                stack.enter_context(atomic_write(path)).write(text)
            except OSError as exc:
                raise ConfigError(
                    f"{flag} {str(path)!r} cannot be written ({describe_os_error(exc)}); "
                    "no output file was written"
                ) from exc


def _check_output(text: str, flag: str) -> Path:
    """``text`` as a writable file path (one-line ConfigError if not).

    A missing folder is created when the files are written, as ``optimize
    --write-config``, ``tune --out`` and ``run --logdir`` create theirs.
    """
    from raysync._validation import check_output_file

    return check_output_file(text, flag)


def main(argv: list[str] | None = None) -> int:
    """Run ``recommend`` standalone (``python -m tuning.recommend_cli``)."""
    from raysync.cli import main as raysync_main

    return raysync_main(["recommend", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
