"""``raysync validate CONFIG``: load and check a config, print a summary.

When a config that trains (``run.train``) names user code or data (``[model] factory``,
``[data] factory``, or a ``[data] path`` of the ``directory`` dataset), or with
``--workload``, the workload is built:
the factories are imported and called, the files are read, and what they return is checked
(:func:`raysync.workload.check_workload`: data contract, partitions, output shape against
the labels, a finite scalar loss and gradient); a failure is one line and exit code 2.

Every config also goes through what ``simulate`` and ``run`` check before they start
(:func:`raysync.simulation.engine.check_simulation`,
:func:`raysync.runtime.check_run_config`: run length, evaluations, the wall clock's limits,
tasks' memory, emulated delays; and the model versions a training simulation keeps
alive, sized from the built workload or the built-in model), so a config that either
would refuse is not "valid"; with
power figures, so do the predicted energy figures ``analyze`` reports (finite mean power and
energy per update).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from raysync._validation import check_output_dir, format_probability, name_column
from raysync.config import SystemConfig, load_config
from raysync.exceptions import ConfigError

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> None:
    """Register the ``validate`` command."""
    parser = subparsers.add_parser(
        "validate",
        help="check a TOML config and print what it describes",
        description="Load a TOML config, validate every field and print a summary.",
    )
    parser.add_argument("config", help="path to a TOML config file")
    parser.add_argument("--json", action="store_true", help="print the normalised config as JSON")
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--workload",
        dest="workload",
        action="store_const",
        const=True,
        default=None,
        help="also build and probe the workload of built-in models and datasets "
        "(default: only when the config names a model or data factory or a data directory)",
    )
    group.add_argument(
        "--no-workload",
        dest="workload",
        action="store_const",
        const=False,
        help="do not import or call the model and data factories, nor read data files",
    )
    parser.set_defaults(func=_handle)


def _handle(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    # User code and user files are where a config that parses still fails to run, so
    # they are probed by default; built-in models and datasets only on request.
    # A queue-only config (run.train = false) never builds its workload in simulate or run.
    user_workload = config.run.train and (
        config.model.factory is not None
        or config.data.factory is not None
        or config.data.dataset == "directory"
    )
    _check_commands(config)
    probe: dict[str, Any] | None = None
    if args.workload or (args.workload is None and user_workload):
        from raysync.workload import build_workload

        workload = build_workload(config)  # runs check_workload
        probe = workload_summary(workload)
        num_params: int | None = int(workload.initial_params.size)
    else:
        from raysync.workload import builtin_num_params

        num_params = builtin_num_params(config) if config.run.train else None
    if num_params is not None and config.run.train:  # a queue-only run carries no model
        _check_versions(config, num_params)
    if args.json:
        from raysync.cli import print_json
        from raysync.simulation.report import dumps_json

        print_json(args, dumps_json(config.to_dict()))
        return 0
    p = config.routing_probabilities
    print(f"{args.config}: valid")
    print(
        f"  clients: {config.num_clients}  concurrency: {config.concurrency}  "
        f"algorithm: {config.algorithm.name}  routing: {config.routing.kind}"
    )
    data_name = config.data.factory or config.data.dataset
    model_name = config.model.factory or config.model.name
    print(f"  data: {data_name} ({config.data.partition})  model: {model_name}")
    if probe is not None:
        print(
            f"  workload: {probe['num_params']:,} parameters, output {probe['output_shape']}, "
            f"loss {probe['loss_name']} = {probe['loss']:.4g}, {probe['metric']} = "
            f"{probe['metric_value']:.4g} on a probe batch; client sizes "
            f"{probe['client_sizes']}"
        )
    else:
        # "valid" covers the config, not the data: say what was left unchecked.
        if args.workload is False:
            how = "--no-workload"
        elif not config.run.train:
            how = "queue-only: run.train = false; --workload loads the data and probes the model"
        else:
            how = "built-in dataset and model; --workload loads the data and probes the model"
        print(f"  workload: not built ({how})")
    name_head, names = name_column(
        [client.name for client in config.clients], range(config.num_clients)
    )
    print(f"  {'client':>6} {name_head}{'kind':>13} {'mu':>10} {'p':>8} {'cpus':>5} {'gpus':>5}"
          "  resources")
    for i, (client, name) in enumerate(zip(config.clients, names, strict=True)):
        pi = "-" if p is None else format_probability(p[i])
        res = ",".join(f"{k}={v:g}" for k, v in client.resources.items()) or "-"
        print(
            f"  {i:>6} {name}{client.service_time.kind:>13} "
            f"{client.service_time.service_rate:>10.4g} "
            f"{pi:>8} {client.num_cpus:>5g} {client.num_gpus:>5g}  {res}"
        )
    return 0


def _check_commands(config: SystemConfig) -> None:
    """What ``simulate`` and ``run`` check before they start, so "valid" means they accept it.

    Neither builds the workload here (``--workload`` does) nor starts Ray.
    """
    from raysync.runtime import check_run_config
    from raysync.simulation.engine import check_simulation

    def check_run(config: SystemConfig) -> None:
        if config.run.checkpoint_dir is not None:
            check_output_dir(config.run.checkpoint_dir, "run.checkpoint_dir")
        check_run_config(config)

    checks: tuple[tuple[str, Callable[[SystemConfig], None]], ...] = (
        ("simulate", check_simulation),
        ("run", check_run),
        ("analyze", _check_energy),
    )
    for command, check in checks:
        try:
            check(config)
        except ConfigError as exc:
            raise ConfigError(f"`raysync {command}` would refuse it: {exc}") from exc


def _check_versions(config: SystemConfig, num_params: int) -> None:
    """The model versions a training simulation keeps alive, as ``simulate`` checks them.

    ``simulate`` checks them once it has built the workload; here the size comes from the
    built workload or, without it, from the built-in model and dataset
    (:func:`raysync.workload.builtin_num_params`; unknown for user code or files).
    """
    from raysync.simulation.engine import check_version_memory

    try:
        check_version_memory(config, num_params)
    except ConfigError as exc:
        raise ConfigError(f"`raysync simulate` would refuse it: {exc}") from exc


def _check_energy(config: SystemConfig) -> None:
    """Refuse power figures whose predicted energy overflows, as ``analyze`` does.

    Only with power figures and random routing (what ``analyze`` models), and only where
    the closed form is within the solver's limits (:func:`predict_or_reason`).
    """
    from raysync.objectives.energy import power_figures, predict_energy
    from raysync.queueing.predict import predict_or_reason

    if not power_figures(config).any or config.routing_probabilities is None:
        return
    result = predict_or_reason(config)
    if not isinstance(result, str):
        predict_energy(config, result)


def workload_summary(workload: Any) -> dict[str, Any]:
    """The probe of :func:`~raysync.workload.check_workload` plus the client sizes."""
    from raysync.workload import check_workload

    probe = check_workload(workload)
    sizes = workload.client_sizes.tolist()
    probe["client_sizes"] = (
        f"{min(sizes)}..{max(sizes)}" if len(sizes) > 8 else ",".join(map(str, sizes))
    )
    return probe
