r"""Ray job entrypoint: run a raysync config (or a tuning study) on the cluster it is in.

Submitted with (see ``cluster/README.md``; token authentication ON)::

    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 \\
        --runtime-env cluster/runtime_env.yaml --working-dir . -- \\
        python -m cluster.entrypoint examples/cluster_fleet.toml --out /shared/raysync-run

It connects with ``ray.init(address="auto")`` (inside a Ray job ``RAY_ADDRESS`` names the
cluster), runs :func:`raysync.run` with TensorBoard events under ``OUT/tensorboard`` and
writes ``OUT/results.json`` (summary, the run's measurements and the config) plus the full
result (``OUT/run/result.json`` and ``arrays.npz``). With ``--tune`` it runs a tuning study
instead (:func:`tuning.study.run_study`; trials in parallel on the cluster with
``--parallel``), writing ``OUT/tune/`` and the same ``results.json``.

``OUT`` is a path on the node that runs the job driver (the head node): use a shared
volume on multi-node clusters, or copy it back (``ray rsync-down``, ``kubectl cp``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Choice lists come from where the study validates them (declared once, in tuning).
from tuning.objectives import OBJECTIVES
from tuning.search_space import FAMILIES

__all__ = ["build_parser", "main", "tune_settings"]

logger = logging.getLogger("cluster.entrypoint")


def build_parser() -> argparse.ArgumentParser:
    """The entrypoint's argument parser (raysync's: one-line errors, finite numbers)."""
    from raysync.cli import _Parser

    parser = _Parser(
        prog="python -m cluster.entrypoint",
        description="Run a raysync config (or a tuning study) on the Ray cluster of this job.",
    )
    parser.add_argument("config", help="TOML config (path relative to the working dir)")
    parser.add_argument(
        "--out", required=True, help="output directory for TensorBoard events and results"
    )
    parser.add_argument(
        "--address", default="auto", help="Ray address to connect to (default: auto)"
    )
    parser.add_argument("--num-updates", type=int, default=None, help="override run.num_updates")
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="override run.time_budget (config seconds)",
    )
    parser.add_argument("--time-scale", type=float, default=None, help="override run.time_scale")
    parser.add_argument("--seed", type=int, default=None, help="override the config's seed")
    parser.add_argument("--run-name", default="run", help="TensorBoard run directory name")
    parser.add_argument(
        "--resume",
        metavar="DIR",
        default=None,
        help=(
            "continue the run whose checkpoint is in DIR (its run.checkpoint_dir, a path on "
            "the driver's node), e.g. after `ray job stop` or a pre-emption stopped it"
        ),
    )
    tune = parser.add_argument_group("tuning (with --tune)")
    tune.add_argument("--tune", action="store_true", help="run a tuning study instead of one run")
    tune.add_argument("--objective", choices=OBJECTIVES, default="simulated")
    tune.add_argument("--trials", type=int, default=20)
    tune.add_argument("--storage", default=None, help="Optuna storage URL (default: OUT/tune)")
    tune.add_argument("--study", default="raysync-cluster", help="study name")
    tune.add_argument("--family", choices=FAMILIES, default="tiers")
    tune.add_argument("--parallel", type=int, default=2, help="trials in flight at once")
    tune.add_argument("--budget", type=float, default=None, help="trial time budget")
    tune.add_argument("--num-evals", type=int, default=8)
    tune.add_argument("--constants", default=None, help="bound constants L,sigma2,M2,A")
    return parser


def _overrides(config: Any, args: argparse.Namespace) -> Any:
    changes: dict[str, Any] = {}
    if args.num_updates is not None or args.time_budget is not None:
        changes["num_updates"] = args.num_updates
        changes["time_budget"] = args.time_budget
    if args.time_scale is not None:
        changes["time_scale"] = args.time_scale
    from raysync._validation import name_the_flags

    given = {"run.num_updates": args.num_updates, "run.time_budget": args.time_budget,
             "run.time_scale": args.time_scale, "seed": args.seed}

    def build() -> Any:
        top: dict[str, Any] = {}
        if changes:
            top["run"] = dataclasses.replace(config.run, **changes)
        if args.seed is not None:
            top["seed"] = args.seed
        return config.replace(**top) if top else config

    return name_the_flags(given, build)


def _run_once(config: Any, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    import raysync

    logdir = out / "tensorboard"
    result = raysync.run(config, logdir=logdir, run_name=args.run_name, resume_from=args.resume)
    result.save(out / "run")
    print(result.summary(), flush=True)
    return {
        "mode": "run",
        "final_test_accuracy": result.final_test_accuracy,
        "final_val_accuracy": result.final_val_accuracy,
        "num_updates": result.num_updates,
        "elapsed": result.elapsed,
        "throughput": result.throughput,
        "mean_staleness": result.mean_staleness,
        "client_nodes": list(result.extras.get("client_nodes", [])),
        "tensorboard": str(logdir),
        "result": result.to_dict(),
    }


def _stopped(exc: Any, args: argparse.Namespace) -> str:
    """The line a run stopped by SIGTERM or Ctrl-C leaves: where, and how to go on."""
    where = "" if exc.version is None else f" at version {exc.version}"
    line = f"run stopped by {exc.signal_name}{where}"
    if exc.checkpoint_version is not None:
        return (f"{line}; its checkpoint is in {exc.checkpoint_dir!r}: submit the same "
                f"command with --resume {exc.checkpoint_dir} to continue it")
    if exc.checkpoint_dir is not None:
        return (f"{line}; no checkpoint was written at the stop: an earlier one in "
                f"{exc.checkpoint_dir!r}, if any, can be continued with --resume")
    return f"{line}; set run.checkpoint_dir to make a stopped job resumable"


def tune_settings(args: argparse.Namespace, config: Any) -> Any:
    """The job's ``TuneSettings`` (``tuning.settings``'s one argparse mapping).

    ``--address`` is the entrypoint's own (its ``ray.init``), not the study's: the study
    joins the session the entrypoint started. Passed on, the default ``auto`` was refused
    with ``--parallel 1`` (an address is for trials on Ray).

    Raises:
        ConfigError: A tuning flag breaks its rule.
    """
    from tuning.settings import settings_from_args

    return settings_from_args(argparse.Namespace(**{**vars(args), "address": None}), config)


def _run_tune(config: Any, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from tuning.study import run_study

    # The job writes under OUT.
    settings = dataclasses.replace(tune_settings(args, config), out=out / "tune")
    report = run_study(config, settings, on_event=lambda m: print(m, flush=True))
    payload = report.to_dict()
    print(json.dumps({"best": payload["best"][:1], "counts": payload["counts"]}), flush=True)
    return {"mode": "tune", "tensorboard": str(settings.out / "tensorboard"), "study": payload}


def main(argv: Sequence[str] | None = None) -> int:
    """Connect to the job's cluster, run, write ``OUT/results.json``.

    Returns:
        0 on success (the job then ends SUCCEEDED), 2 on bad input.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import ray

    from raysync._validation import check_input_dir, check_output_dir, describe_os_error
    from raysync.config import load_config
    from raysync.exceptions import RaySyncError, RunInterrupted

    start = time.perf_counter()
    # Everything is checked before the folder is made: a refused job leaves no empty OUT.
    try:
        if args.resume is not None and args.tune:
            raise ValueError(
                "--resume continues a run, not a study: a --tune job resumes from its "
                "storage (--storage, or OUT/tune) when submitted again with the same --study"
            )
        if args.resume is not None:
            check_input_dir(args.resume, "--resume")
        config = _overrides(load_config(args.config), args)
        out = check_output_dir(Path(args.out).expanduser(), "--out").resolve()
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"cluster.entrypoint: error: --out {args.out!r} cannot be created: "
              f"{describe_os_error(exc)}", file=sys.stderr)
        return 2
    except (RaySyncError, ValueError) as exc:
        print(f"cluster.entrypoint: error: {exc}", file=sys.stderr)
        return 2
    ray.init(address=args.address, logging_level=logging.WARNING)
    try:
        resources = ray.cluster_resources()
        print(f"connected to Ray {ray.__version__}: resources {resources}", flush=True)
        try:
            body = _run_tune(config, args, out) if args.tune else _run_once(config, args, out)
        except (RaySyncError, ValueError) as exc:
            print(f"cluster.entrypoint: error: {exc}", file=sys.stderr)
            return 2
        except RunInterrupted as exc:
            # `ray job stop` sends SIGTERM: the run stopped after an update and, with
            # run.checkpoint_dir, checkpointed it; say how to submit the rest
            print(f"cluster.entrypoint: {_stopped(exc, args)}", file=sys.stderr, flush=True)
            return exc.exit_code
        payload = {
            **body,
            "config_path": args.config,
            "config": config.to_dict(),
            "cluster_resources": resources,
            "ray_version": ray.__version__,
            "host": platform.node(),
            "wall_time": time.perf_counter() - start,
        }
        from tuning.report import json_safe

        (out / "results.json").write_text(json.dumps(json_safe(payload), indent=2))
        print(f"results: {out / 'results.json'}", flush=True)
        return 0
    finally:
        ray.shutdown()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
