"""``raysync simulate CONFIG``: run a config on the virtual clock and compare with theory.

Prints the final test accuracy, the measured update throughput and every client's measured
staleness (mean relative delay, with its batch-means interval) next to the queueing
theory's prediction: the closed Jackson network (:func:`raysync.queueing.analyze`) for
random routing, and for return-to-sender (AsyncSGD) the independent-cycles closed form
``Lambda = sum_j mu_j``, ``E[D_i] = sum_{j != i} mu_j / mu_i``. Both are exact for
exponential service times and approximations otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
from pathlib import Path
from typing import Any

from raysync._validation import check_output_dir, name_the_flags
from raysync.config import SystemConfig, load_config
from raysync.exceptions import ConfigError

__all__ = ["add_parser", "theory_prediction"]

#: Upper bound of ``--torch-threads`` (a typo such as 10**9 would make torch abort).
_MAX_THREADS = 1024


def add_parser(subparsers: Any) -> None:
    """Register the ``simulate`` command."""
    parser = subparsers.add_parser(
        "simulate",
        help="simulate a config on a virtual clock and compare with queueing theory",
        description=(
            "Run the discrete-event simulator on a TOML config (with training, or "
            "queue-only) and print accuracy, throughput and per-client staleness next to "
            "the queueing theory's prediction."
        ),
    )
    parser.add_argument("config", help="path to a TOML config file")
    parser.add_argument("--seed", type=int, default=None, help="override the config's seed")
    parser.add_argument("--out", default=None, help="save the result (JSON + NPZ) in this folder")
    parser.add_argument(
        "--queue-only", action="store_true", help="simulate the queues only (no training)"
    )
    parser.add_argument(
        "--num-updates",
        type=int,
        default=None,
        help="stop after this many updates (drops the config's time budget unless "
        "--time-budget is also given)",
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="stop after this many virtual seconds (drops the config's update count "
        "unless --num-updates is also given)",
    )
    parser.add_argument(
        "--max-rows",
        type=int,
        default=50,
        help="clients shown in the per-client table (0: all; a cut table adds the slowest "
        "and fastest client; --json and --out keep every client)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads for training (default 1: tiny minibatches gain "
        "nothing from more, and lose much on a busy machine)",
    )
    parser.set_defaults(func=_handle)


def _apply_overrides(config: SystemConfig, args: argparse.Namespace) -> SystemConfig:
    run = config.run
    changes: dict[str, Any] = {}
    if args.num_updates is not None or args.time_budget is not None:
        changes["num_updates"] = args.num_updates
        changes["time_budget"] = args.time_budget
    if args.queue_only:
        changes["train"] = False
    given = {"run.num_updates": args.num_updates, "run.time_budget": args.time_budget,
             "seed": args.seed}

    def build() -> SystemConfig:
        top: dict[str, Any] = {"run": dataclasses.replace(run, **changes) if changes else run}
        if args.seed is not None:
            top["seed"] = args.seed
        return config.replace(**top)

    return name_the_flags(given, build)


def theory_prediction(config: SystemConfig) -> dict[str, Any]:
    """The queueing theory's prediction for a config, in both staleness units.

    See :func:`raysync.simulation.report.theory_prediction` (keys and units match
    ``result.json``).
    """
    from raysync.simulation.report import theory_prediction as predict_both

    return predict_both(config)


class _Progress:
    """A tqdm bar on stderr driven by the simulator's ``progress(updates, time)``."""

    def __init__(self, config: SystemConfig, enabled: bool) -> None:
        self._bar: Any = None
        self._by_updates = config.run.num_updates is not None
        if not enabled:
            return
        from tqdm import tqdm

        if self._by_updates:
            self._bar = tqdm(total=config.run.num_updates, unit="upd", file=sys.stderr)
        else:
            self._bar = tqdm(
                total=config.run.time_budget,
                unit="s",
                unit_scale=False,
                bar_format="{l_bar}{bar}| {n:.4g}/{total:.4g} virtual s [{elapsed}<{remaining}]",
                file=sys.stderr,
            )

    def __call__(self, updates: int, now: float) -> None:
        if self._bar is None:
            return
        value = updates if self._by_updates else min(now, self._bar.total)
        self._bar.update(value - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _print_report(config: SystemConfig, result: Any, theory: dict[str, Any], max_rows: int) -> None:
    from raysync.simulation.report import format_report

    print(format_report(config, result, theory, max_rows=max_rows))


#: What ``--out`` holds after a run (RunResult.save's two files and the theory).
_OUT_FILES = ("result.json", "arrays.npz", "theory.json")


def _check_out_entries(out: Path) -> None:
    """Refuse, before the run, an ``--out`` whose files could not be replaced."""
    for name in _OUT_FILES:
        entry = out / name
        if entry.exists() and not entry.is_file():
            raise ConfigError(
                f"--out {str(out)!r} holds {name!r}, which is not a regular file: the "
                "result would have to replace it; choose another --out"
            )


def _save(result: Any, theory: dict[str, Any], out_text: str) -> None:
    """Write every file of ``--out`` or none: into a fresh folder beside it, then moved in.

    Written in place, a failure after ``result.json`` (a full disk, ``arrays.npz`` in the
    way) left a result without its arrays, which ``RunResult.load`` cannot read.
    """
    import shutil
    import tempfile

    from raysync._validation import describe_os_error
    from raysync.simulation.report import dumps_json

    out = Path(out_text)
    staging: Path | None = None
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        result.save(staging)
        (staging / "theory.json").write_text(dumps_json(theory))
        for name in _OUT_FILES:
            (staging / name).replace(out / name)
    except OSError as exc:
        raise ConfigError(
            f"--out {out_text!r} cannot be written: {describe_os_error(exc)}"
        ) from exc
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _handle(args: argparse.Namespace) -> int:
    from raysync.simulation import simulate
    from raysync.simulation.report import dumps_json

    if args.out is not None:
        check_output_dir(args.out, "--out")  # before the run, not after it
        _check_out_entries(Path(args.out))
    if args.max_rows < 0:
        raise ConfigError(
            f"--max-rows must be >= 1 (clients shown) or 0 (all), got {args.max_rows}"
        )
    if args.torch_threads is not None and not 1 <= args.torch_threads <= _MAX_THREADS:
        raise ConfigError(
            f"--torch-threads must be in [1, {_MAX_THREADS}], got {args.torch_threads}"
        )
    config = _apply_overrides(load_config(args.config), args)
    from raysync.simulation.engine import check_simulation

    check_simulation(config)  # as validate does; before the theory and the run
    if args.torch_threads is not None:
        if config.run.train:
            import torch

            torch.set_num_threads(args.torch_threads)
    theory = theory_prediction(config)
    enabled = not args.no_progress and sys.stderr.isatty()
    bar = _Progress(config, enabled)
    # The engine logs the run's warnings, which the report (or the JSON) shows again, and
    # a run with no completion is refused below in one line: hold the engine's records and
    # pass on only those the output does not carry, so each warning is shown once.
    engine_log = logging.getLogger("raysync.simulation.engine")
    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        held.append(record)
        return False

    engine_log.addFilter(hold)
    result = None
    try:
        result = simulate(config, progress=bar)
    finally:
        bar.close()
        engine_log.removeFilter(hold)
        shown = set(result.warnings) if result is not None else set()
        for record in held:
            message = record.getMessage()
            if message not in shown and not message.startswith("no task completed"):
                engine_log.handle(record)
    if result.num_completions == 0:
        budget = config.run.time_budget
        what = "the run"
        if budget is not None:
            what = f"run.time_budget (--time-budget) = {budget:g} s"
        raise ConfigError(
            f"{what} ended with no task completed, so there is nothing to measure "
            f"(every statistic would be NaN); give it more updates or a longer time budget"
        )
    if not math.isfinite(result.throughput):
        # Every completion fell in the warm-up the statistics drop: throughput, staleness
        # and every client's delay would print as NaN (exit 0 before).
        what = "the run"
        if config.run.num_updates is not None:
            what = f"run.num_updates (--num-updates) = {config.run.num_updates:,}"
        elif config.run.time_budget is not None:
            what = f"run.time_budget (--time-budget) = {config.run.time_budget:g} s"
        raise ConfigError(
            f"{what} leaves no completion after the warm-up ({result.num_completions} "
            "completed, all dropped as warm-up), so there is nothing to measure; give it "
            "more updates or a longer time budget"
        )
    replaced = args.out is not None and (Path(args.out) / "result.json").exists()
    if args.out is not None:
        _save(result, theory, args.out)
    if args.json:
        payload = result.to_dict()
        payload["theory"] = theory
        from raysync.cli import print_json

        print_json(args, dumps_json(payload))
    else:
        _print_report(config, result, theory, args.max_rows)
        if args.out is not None:
            # An earlier result there is replaced (as a rerun should), not kept: say so.
            print(f"saved to {args.out}" + (" (replacing the result that was there)"
                                             if replaced else ""))
    return 0
