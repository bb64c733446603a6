"""``raysync run CONFIG``: run a system for real on Ray and compare it with the theory."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raysync._validation import (
    check_input_dir,
    check_output_dir,
    name_column,
    name_the_flags,
    same_directory,
)
from raysync.config import SystemConfig, load_config
from raysync.exceptions import ConfigError, RunInterrupted

if TYPE_CHECKING:
    from raysync.queueing import QueueingResult
    from raysync.simulation.result import RunResult

__all__ = ["add_parser"]

#: Clients listed in the text report (the JSON has them all).
_MAX_ROWS = 32


def add_parser(subparsers: Any) -> None:
    """Register the ``run`` command."""
    parser = subparsers.add_parser(
        "run",
        help="run a config for real on Ray (local instance or --address)",
        description=(
            "Run the system a TOML config describes on Ray: logical clients with their own "
            "resources served first in, first out by executor actors (one per client, or "
            "a pool per resource tier: [runtime] mode), and a server actor keeping "
            "`concurrency` tasks in flight. Starts a fresh local Ray instance unless "
            "--address names a cluster. Prints the final accuracy, the throughput and each "
            "client's staleness next to the closed-form prediction. With "
            "run.checkpoint_dir it writes checkpoints (every run.checkpoint_every_updates "
            "updates, at the end and on Ctrl-C) that --resume continues."
        ),
    )
    parser.add_argument("config", help="path to a TOML config file")
    parser.add_argument("--address", help="Ray cluster to join, e.g. 'auto' or 'ray://head:10001'")
    parser.add_argument("--logdir", help="write TensorBoard event files under this directory")
    parser.add_argument("--num-updates", type=int, metavar="N", help="stop after N model updates")
    parser.add_argument(
        "--time-budget",
        type=float,
        metavar="S",
        help=(
            "stop after S config seconds (S * run.time_scale wall seconds; S wall seconds "
            "with run.time_scale = 0, no emulation); without --num-updates the budget "
            "alone decides when to stop"
        ),
    )
    parser.add_argument(
        "--resume",
        metavar="DIR",
        help=(
            "continue from the checkpoint in DIR (written by a run of the same config with "
            "run.checkpoint_dir); tasks pending at the checkpoint are re-issued with their ids"
        ),
    )
    parser.add_argument(
        "--overwrite-checkpoint",
        action="store_true",
        help="let a fresh run replace the checkpoint run.checkpoint_dir holds (default: refused)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_handle)


def _apply_overrides(config: SystemConfig, args: argparse.Namespace) -> SystemConfig:
    if args.num_updates is None and args.time_budget is None:
        return config
    changes: dict[str, Any] = {}
    if args.num_updates is not None:
        changes["num_updates"] = args.num_updates
    if args.time_budget is not None:
        changes["time_budget"] = args.time_budget
        if args.num_updates is None:
            changes["num_updates"] = None
    given = {"run.num_updates": args.num_updates, "run.time_budget": args.time_budget}
    return name_the_flags(
        given, lambda: config.replace(run=dataclasses.replace(config.run, **changes)))


def _theory(config: SystemConfig) -> QueueingResult | str:
    """The closed form ``simulate`` prints too, or why there is none (printed with the report).

    Return to sender with a server station has none (its cycles meet in the server's
    queue); an analysis beyond the solver's limits is not computed (the run may still fit).
    """
    from raysync.queueing.predict import predict_or_reason

    try:
        # delays in completions; mean_version_* in model versions
        return predict_or_reason(config)
    except ConfigError as exc:
        return str(exc)


class _Progress:
    """tqdm bar on stderr, over updates (or seconds when only a time budget is set)."""

    def __init__(self, config: SystemConfig, disable: bool) -> None:
        from raysync.runtime._backend import wall_seconds

        self._by_updates = config.run.num_updates is not None
        self._total: float | None
        if self._by_updates:
            self._total = config.run.num_updates
            self._unit = "upd"
        else:
            self._total = wall_seconds(config.run.time_budget, config.run.time_scale)
            self._unit = "s"
        self._disable = disable
        # Drawn at the first report, once the run is under way: a refusal before it
        # (a bad [run] field, an unreachable --address) stays the only line on stderr.
        self._bar: Any = None
        self._last = 0.0
        #: A line for stderr at the first report (None: nothing to say).
        self.announce: str | None = None

    def __call__(self, updates: int, seconds: float) -> None:
        value = float(updates) if self._by_updates else round(seconds, 1)
        if self._total is not None:
            # The run ends a little past its budget (the last updates drain): a bar beyond
            # its total makes tqdm print a warning with a source line.
            value = min(value, float(self._total))
        if self._bar is None:
            from tqdm import tqdm

            if self.announce is not None:
                print(f"{self.announce}, now at version {updates}", file=sys.stderr, flush=True)

            # Starts where the run is (a resumed run, at its checkpoint's version): counted
            # as progress, the earlier sessions' updates inflated tqdm's first rates.
            self._bar = tqdm(
                total=self._total,
                initial=value,
                unit=self._unit,
                file=sys.stderr,
                disable=self._disable,
                dynamic_ncols=True,
            )
            self._last = value
        if value > self._last:
            self._bar.update(value - self._last)
            self._last = value
        if seconds > 0:
            self._bar.set_postfix(updates_per_s=f"{updates / seconds:.1f}", refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def measured_rates(result: RunResult, config: SystemConfig) -> list[float] | None:
    """Rates ``mu_i = 1 / mean measured service time`` of a run without emulation.

    With ``run.time_scale = 0`` a task lasts as long as its computation, so the measured
    mean service time per client is the ``1 / mu_i`` the theory needs (in wall seconds).
    None with emulation, queue-only runs, or when a client completed no task.
    """
    means = result.extras.get("service_time_mean")
    if config.run.time_scale > 0 or not result.train or not means:
        return None
    rates = [1.0 / float(m) if m and math.isfinite(float(m)) and m > 0 else math.nan for m in means]
    return None if any(math.isnan(r) for r in rates) else rates


def _measured_theory(config: SystemConfig, rates: list[float]) -> QueueingResult | str:
    """The closed-form prediction with the measured rates."""
    from raysync.config import ServiceTimeSpec

    clients = tuple(
        dataclasses.replace(c, service_time=ServiceTimeSpec(kind="exponential", rate=mu))
        for c, mu in zip(config.clients, rates, strict=True)
    )
    return _theory(config.replace(clients=clients))


def continue_command(args: argparse.Namespace, directory: str) -> str:
    """The ``raysync run`` command that resumes ``args``'s run from ``directory``.

    It repeats the flags that shape the run (cluster, TensorBoard directory, run length):
    without them the resumed run would stop elsewhere or log nowhere.
    """
    import shlex

    parts = ["raysync", "run", args.config]
    for flag, value in (("--address", args.address), ("--logdir", args.logdir),
                        ("--num-updates", args.num_updates),
                        ("--time-budget", args.time_budget)):  # fmt: skip
        if value is not None:
            parts += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    parts += ["--resume", directory]
    return " ".join(shlex.quote(part) for part in parts)


def resume_hint(
    config: SystemConfig,
    command: str,
    interrupted: RunInterrupted | None = None,
    started_at: float | None = None,
    *,
    resuming: bool = False,
) -> str:
    """What an interrupted run leaves to resume from, and the command that resumes it.

    Args:
        config: The run's config (overrides applied).
        command: The command that continues the run (:func:`continue_command`).
        interrupted: The runtime's :class:`~raysync.exceptions.RunInterrupted`; when it
            wrote a checkpoint at the interruption nothing is lost.
        started_at: ``time.time()`` when this run started: a checkpoint older than that
            is an earlier run's (or the one this run resumed from), not this run's.
        resuming: This run resumed from ``run.checkpoint_dir``.
    """
    directory = config.run.checkpoint_dir
    if directory is None:
        return ("no checkpoint was kept (run.checkpoint_dir is not set), so the run cannot "
                "be resumed; set run.checkpoint_dir to make a run resumable")
    target = config.run.num_updates
    written = None if interrupted is None else interrupted.checkpoint_version
    if written is not None and target is not None and written >= target:
        return (f"the run had applied all {target} updates when it was interrupted; its "
                f"checkpoint (version {written}) is in {directory!r}; raise --num-updates "
                "(run.num_updates) and resume to continue it")
    if written is not None:
        return (f"a checkpoint of the interrupted run (version {written}, every update "
                f"applied) is in {directory!r}; continue with '{command}'")
    from raysync.runtime.checkpoint import MANIFEST, peek_version

    manifest = Path(directory) / MANIFEST
    when = ("run.checkpoint_every_updates updates"
            if config.run.checkpoint_every_updates is not None
            else "the end of the run or Ctrl-C; set run.checkpoint_every_updates for "
                 "periodic ones")
    if not manifest.is_file():
        return (f"no checkpoint was written to {directory!r} yet (the first comes after "
                f"{when}), so the run cannot be resumed")
    version = peek_version(directory)
    at = "a checkpoint" if version is None else f"the last checkpoint (version {version})"
    try:
        # 1 s of slack: file times come from a coarser clock than time.time(), and a run's
        # first checkpoint comes after Ray's start-up (seconds)
        older = started_at is not None and manifest.stat().st_mtime < started_at - 1.0
    except OSError:
        older = False
    if older and resuming:
        return (f"nothing was applied since the checkpoint this run resumed from ({at} in "
                f"{directory!r}); continue with '{command}'")
    if older:
        return (f"this run wrote no checkpoint before it was interrupted; {at} in "
                f"{directory!r} is an earlier run's")
    return (f"{at} is in {directory!r}; any updates applied after it are lost; continue "
            f"with '{command}'")


def _duration(result: RunResult) -> str:
    """How long the run took; a resumed run's elapsed time includes its earlier sessions'."""
    extras = result.extras
    if extras.get("resumed_from_version") is None:
        return f" in {result.elapsed:.3g} s ({result.wall_time:.3g} s with start-up)"
    before = float(extras.get("resumed_from_elapsed", 0.0))
    return (f" in {result.elapsed:.3g} s of run time, {result.elapsed - before:.3g} s of it "
            f"since the checkpoint (this session {result.wall_time:.3g} s with start-up)")


def _report(result: RunResult, config: SystemConfig, prediction: QueueingResult | str) -> str:
    from raysync.simulation.result import format_interval, format_measured

    scale = config.run.time_scale
    extras = result.extras
    rates = measured_rates(result, config)
    if rates is not None:
        # No emulation: the configured service times say nothing about this run; the
        # prediction uses the rates the clients actually served at.
        prediction = _measured_theory(config, rates)
    theory = None if isinstance(prediction, str) else prediction
    layout = ""
    if "runtime_mode" in extras:
        layout = (
            f" ({extras['runtime_mode']}: {extras['num_executors']} executor actors, "
            f"{len(extras['tiers'])} tier(s))"
        )
    lines = [
        f"ray run: {result.num_clients} clients{layout}, C={result.concurrency}, "
        + (
            f"{result.num_updates} updates"
            if result.buffer_size == 1
            else f"{result.num_updates} model versions ({result.num_completions} completions)"
        )
        + _duration(result)
    ]
    lines.extend(f"WARNING: {w}" for w in result.warnings)  # e.g. too short for its warm-up
    if extras.get("resumed_from_version") is not None:
        lines.append(f"resumed from the checkpoint at version {extras['resumed_from_version']}")
    faults = {
        key: extras.get(key, 0)
        for key in ("reissued_tasks", "timed_out_tasks", "duplicates_dropped", "actor_restarts")
    }
    if any(faults.values()):
        lines.append("faults: " + ", ".join(f"{k} {v}" for k, v in faults.items()))
    bound = extras.get("compute_bound_tasks", 0)
    past = extras.get("compute_bound_past_budget", 0)
    if result.num_completions and bound + past >= 0.01 * result.num_completions:
        more = (
            f" ({past} more ended past run.time_budget for it and were not applied)"
            if past
            else ""
        )
        lines.append(
            f"emulation: {bound} of {result.num_completions} tasks "
            f"({100 * bound / result.num_completions:.0f} %) computed longer than their "
            f"emulated service time{more}, so the emulated clock fell behind the config's; "
            "a larger run.time_scale keeps to it"
        )
    given_up = extras.get("late_replies_given_up", 0)
    if given_up:
        from raysync.runtime.actors import DEADLINE_GRACE

        lines.append(
            f"WARNING: {given_up} tasks that ended by run.time_budget were not applied "
            "(nor the tasks they would have started): nothing came from their executors "
            f"for {DEADLINE_GRACE:g} s after it (a lost or stalled executor; the simulator "
            "applies them)"
        )
    if extras.get("communication"):
        from raysync.runtime._backend import describe_communication

        lines.append(describe_communication(extras["communication"]))
    if result.train:
        accuracy = format_measured(result.final_test_accuracy, ".4f")
        lines.append(
            f"final test {config.model.metric_label} {accuracy} "
            f"(test loss {format_measured(result.final_test_loss, '.4f')})"
        )
    lo, hi = result.throughput_ci
    per = "updates" if result.buffer_size == 1 else "completions"  # model versions x B
    line = (
        f"throughput {format_measured(result.throughput)} {per}/s "
        f"({100 * result.confidence:.0f}% CI {format_interval(lo, hi)})"
    )
    if theory is not None and scale > 0:
        line += f"; theory {theory.throughput / scale:.4g} {per}/s"
    elif theory is not None and rates is not None:
        line += f"; theory with measured mu {theory.throughput:.4g} {per}/s"
    lines.append(line)
    # Measured delays count model versions (D = k - v); so does the theory's
    # mean_version_* (= completions / B, B > 1 only for FedBuff).
    line = f"mean staleness {format_measured(result.mean_staleness)} model versions"
    if theory is not None:
        line += f"; theory {theory.mean_version_staleness:.4g}"
    lines.append(line)
    show_theory = theory is not None
    shown = result.num_clients if result.num_clients <= _MAX_ROWS else _MAX_ROWS
    name_head, names = name_column([client.name for client in config.clients], range(shown))
    header = f"{'client':>6} {name_head}{'completed':>9}"
    if rates is not None:
        header += f" {'mu':>8}"
    header += f" {'delay':>8} {'99% CI':>17}"
    if show_theory:
        header += f" {'theory':>8}"
    header += f" {'queue':>7}"
    if show_theory:
        header += f" {'theory':>7}"
    header += f" {'util':>6}"
    lines.append(header)
    for i in range(shown):
        dlo, dhi = result.relative_delay_ci[i]
        ci = "-" if math.isnan(dlo) else f"[{dlo:.3g}, {dhi:.3g}]"
        row = f"{i:>6} {names[i]}{int(result.completed[i]):>9}"
        if rates is not None:
            row += f" {rates[i]:>8.4g}"
        row += f" {format_measured(result.mean_relative_delay[i]):>8} {ci:>17}"
        if theory is not None:
            row += f" {theory.mean_version_delay[i]:>8.4g}"
        row += f" {format_measured(result.mean_queue_length[i], '.3g'):>7}"
        if theory is not None:
            row += f" {theory.mean_queue_length[i]:>7.3g}"
        row += f" {format_measured(result.utilization[i], '.3f'):>6}"
        lines.append(row)
    if shown < result.num_clients:
        lines.append(f"... {result.num_clients - shown} more clients (--json prints them all)")
    if theory is not None and scale > 0:
        model = ("independent cycles (return to sender; exact for any service law)"
                 if config.routing_probabilities is None
                 else "closed Jackson network (exact for exponential service times)")
        lines.append(f"theory: {model}; throughput scaled by run.time_scale")
    if isinstance(prediction, str):
        lines.append(f"theory: none here, {prediction}")
    if rates is not None:
        lines.append(
            "mu: measured service rates (tasks/s, 1 / mean compute time; no emulation)"
            + ("; theory uses them" if theory is not None else "")
        )
    return "\n".join(lines)


def _handle(args: argparse.Namespace) -> int:
    if args.address is not None and not args.address.strip():
        raise ConfigError(
            f"--address must name a Ray cluster (e.g. 'auto', 'host:6379' or "
            f"'ray://head:10001'), got {args.address!r}; omit it to run on a local Ray instance"
        )
    # paths first: a bad one must not cost a Ray start-up
    if args.logdir is not None:
        check_output_dir(args.logdir, "--logdir")
    if args.resume is not None:
        check_input_dir(args.resume, "--resume")
    config = _apply_overrides(load_config(args.config), args)
    if config.run.checkpoint_dir is not None:
        check_output_dir(config.run.checkpoint_dir, "run.checkpoint_dir")
    theory = _theory(config)
    import raysync.runtime

    bar = _Progress(config, disable=args.no_progress or args.json)
    if args.resume is not None:
        # said once the run is under way (a refused resume stays one line): the summary's
        # "resumed from" comes only at the end
        bar.announce = f"raysync run: resumed from {args.resume!r}"
    started_at = time.time()
    try:
        result = raysync.runtime.run(
            config,
            address=args.address,
            logdir=args.logdir,
            progress=bar,
            resume_from=args.resume,
            overwrite_checkpoint=args.overwrite_checkpoint,
        )
    except KeyboardInterrupt as exc:
        bar.close()
        interrupted = exc if isinstance(exc, RunInterrupted) else None
        command = continue_command(args, config.run.checkpoint_dir or "")
        resuming = (args.resume is not None and config.run.checkpoint_dir is not None
                    and same_directory(args.resume, config.run.checkpoint_dir))
        hint = resume_hint(config, command, interrupted, started_at, resuming=resuming)
        print(f"raysync run: {hint}", file=sys.stderr)
        raise  # the CLI's "interrupted", exit code 130
    finally:
        bar.close()
    if args.json:
        payload = result.to_dict()
        rates = measured_rates(result, config)
        if rates is not None:
            payload["measured_service_rates"] = rates
        if isinstance(theory, str):
            payload["theory"] = {"unavailable": theory}
        else:
            payload["theory"] = {
                "throughput": theory.throughput,
                "mean_relative_delay": [float(v) for v in theory.mean_version_delay],
                "mean_queue_length": [float(v) for v in theory.mean_queue_length],
                "mean_staleness": theory.mean_version_staleness,
                "mean_completion_delay": [float(v) for v in theory.mean_relative_delay],
                "mean_completion_staleness": theory.mean_staleness,
                "buffer_size": theory.buffer_size,
            }
        from raysync.cli import print_json
        from raysync.simulation.report import dumps_json

        print_json(args, dumps_json(payload))
        return 0
    print(_report(result, config, theory))
    return 0
