"""``raysync validate CONFIG``: load and check a config, print a summary."""

from __future__ import annotations

import argparse
import json
from typing import Any

from raysync.config import load_config

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
    parser.set_defaults(func=_handle)


def _handle(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.json:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    p = config.routing_probabilities
    print(f"{args.config}: valid")
    print(
        f"  clients: {config.num_clients}  concurrency: {config.concurrency}  "
        f"algorithm: {config.algorithm.name}  routing: {config.routing.kind}"
    )
    print(f"  data: {config.data.dataset} ({config.data.partition})  model: {config.model.name}")
    print(f"  {'client':>6} {'kind':>13} {'mu':>10} {'p':>8} {'cpus':>5} {'gpus':>5}  resources")
    for i, client in enumerate(config.clients):
        pi = "-" if p is None else f"{p[i]:.4f}"
        res = ",".join(f"{k}={v:g}" for k, v in client.resources.items()) or "-"
        print(
            f"  {i:>6} {client.service_time.kind:>13} {client.service_time.service_rate:>10.4g} "
            f"{pi:>8} {client.num_cpus:>5g} {client.num_gpus:>5g}  {res}"
        )
    return 0
