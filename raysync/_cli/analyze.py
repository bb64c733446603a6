"""``raysync analyze``: closed-network analysis of a fleet (throughput, queues, staleness).

Examples::

    raysync analyze --mu 1,2,4,0.5 --p 0.4,0.3,0.2,0.1 --concurrency 6
    raysync analyze examples/tiny.toml --method buzen --json
    raysync analyze examples/tiny.toml --concurrency 12 --server-rate 20 --curve
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

import numpy as np
from numpy.typing import NDArray

from raysync._validation import describe_typed_number, format_probability, name_column
from raysync.exceptions import ConfigError
from raysync.queueing import METHODS, ClosedNetwork, QueueingResult, analyze
from raysync.queueing.analysis import (
    MAX_SOLVER_STEPS,
    CurveSummary,
    approx_text,
    curve_summary,
    solver_steps,
)
from raysync.simulation.result import format_fixed

__all__ = ["add_parser", "handler"]

#: ``--json --curve`` includes the per-client ``C x n`` curves up to this many cells.
_JSON_CURVE_CELLS = 10**6

#: ``--curve``'s own MVA pass (:func:`curve_summary`) costs about this many times the
#: analysis pass per population step (measured 3.4: more vector operations per step).
_CURVE_PASS_COST = 4

#: Solver steps (the unit of ``MAX_SOLVER_STEPS``) one ``--curve`` row costs to format,
#: printed or as JSON (measured about 4,000).
_CURVE_ROW_STEPS = 4096


def add_parser(subparsers: Any) -> None:
    """Register the ``analyze`` command.

    Args:
        subparsers: The ``add_subparsers()`` object of the top-level parser.
    """
    parser = subparsers.add_parser(
        "analyze",
        help="throughput, queue lengths and per-client staleness of a fleet (queueing theory)",
        description=(
            "Model the fleet as a closed Jackson network (exponential service, random "
            "routing p, C tasks in flight) and print, per client, the utilisation, mean "
            "queue length Q_i, mean sojourn time T_i and mean relative delay E[D_i] "
            "(staleness in updates), plus the update throughput Lambda. Values come from a "
            "TOML config, from flags, or both (flags override the config)."
        ),
    )
    parser.add_argument("config", nargs="?", help="optional TOML config (raysync validate)")
    parser.add_argument("--mu", help="service rates, comma-separated, e.g. 1,2,4,0.5")
    parser.add_argument("--p", help="routing probabilities, comma-separated (default uniform)")
    parser.add_argument("--concurrency", "-C", type=int, help="tasks in flight C >= 1")
    parser.add_argument(
        "--latency", type=float, default=0.0, help="mean delay every task spends in transit"
    )
    parser.add_argument("--client-latency", help="per-client mean transit delays, comma-separated")
    parser.add_argument(
        "--server-rate", type=float, help="service rate of the server's own update step"
    )
    parser.add_argument("--method", choices=METHODS, default="mva", help="solver (default mva)")
    parser.add_argument(
        "--curve",
        action="store_true",
        help="also show Lambda and the mean and largest E[D_i] for C' = 1..C (one O(nC) "
        "pass in O(n + C) memory; --json adds the per-client curves when C*n <= "
        f"{_JSON_CURVE_CELLS:,})",
    )
    parser.add_argument(
        "--max-rows", type=int, default=50, help="clients shown in the table (0: all)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=handler)


def _floats(flag: str, text: str) -> NDArray[np.float64]:
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise ConfigError(f"{flag} must list at least one number, got {text!r}")
    values = []
    # An empty entry ("1,,2") is refused, not dropped: dropping it would shift every later
    # value onto the wrong client.
    for position, item in enumerate(items, start=1):
        if not item:
            raise ConfigError(
                f"{flag} has an empty entry at position {position} in {text!r}; it must be a "
                f"comma-separated list of numbers"
            )
        try:
            value = float(item)
        except ValueError as exc:
            raise ConfigError(
                f"{flag} must be a comma-separated list of numbers, got {item!r} at "
                f"position {position} in {text!r}"
            ) from exc
        if not math.isfinite(value):
            raise ConfigError(
                f"{flag} must be a comma-separated list of finite numbers, got "
                f"{describe_typed_number(item)} at position {position} in {text!r}"
            )
        values.append(value)
    return np.array(values, dtype=np.float64)


def _network(args: argparse.Namespace) -> tuple[ClosedNetwork, list[str], Any]:
    """Build the network from the config and/or flags; also return notes and the config.

    A config's ``downlink``/``uplink`` delays and ``[server] update_time`` become the
    latency and server stations (docs/network.md); ``--client-latency`` and
    ``--server-rate`` override them.
    """
    notes: list[str] = []
    mu = p = None
    concurrency = None
    config = None
    config_latency = config_rate = None
    if args.config is not None:
        from raysync.config import load_config
        from raysync.queueing.predict import station_parameters

        config = load_config(args.config)
        base = ClosedNetwork.from_config(config)
        mu, p, concurrency = base.mu, base.p, base.concurrency
        config_latency, config_rate = station_parameters(config)
        approx = [
            str(i) for i, c in enumerate(config.clients) if c.service_time.kind != "exponential"
        ]
        if approx and args.mu is None:
            notes.append(
                f"note: clients {','.join(approx)} have non-exponential service times; "
                "mu = 1/mean is used and the results are an approximation "
                "(the simulator is the reference)"
            )
        sched = [str(i) for i, c in enumerate(config.clients) if c.service_time.kind == "schedule"]
        if sched and args.mu is None:
            notes.append(
                f"note: clients {','.join(sched)} follow a schedule: this analysis describes "
                "segment 0 (the law in force at t = 0; docs/adaptive.md)"
            )
        server = config.server.update_time if config.server is not None else None
        if server is not None and server.kind != "exponential" and args.server_rate is None:
            # a FIFO server station with another law breaks the product form; the links
            # (infinite-server stations) do not
            notes.append(
                f"note: the server's update_time is {server.kind}, not exponential; its rate "
                "1/mean is used and the results are an approximation (the simulator is the "
                "reference)"
            )
        moving = [
            str(i) for i, c in enumerate(config.clients)
            if c.join_time > 0 or c.leave_time is not None
        ]
        if moving and args.mu is None:
            notes.append(
                f"note: clients {','.join(moving)} join or leave during the run: this analysis "
                "describes the whole fleet present (docs/adaptive.md)"
            )
        if config.routing.kind == "adaptive" and args.p is None:
            notes.append(
                "note: adaptive routing changes p during the run: this analysis describes "
                "its starting (uniform) p (docs/adaptive.md)"
            )
    if args.mu is not None:
        mu = _floats("--mu", args.mu)
    if args.p is not None:
        p = _floats("--p", args.p)
    if args.concurrency is not None:
        concurrency = args.concurrency
    if mu is None:
        raise ConfigError("--mu is required without a CONFIG file (e.g. --mu 1,2,4,0.5)")
    if concurrency is None:
        raise ConfigError("--concurrency is required without a CONFIG file (e.g. -C 6)")
    if p is None:
        p = np.full(len(mu), 1.0 / len(mu))
    client_latency = config_latency if args.mu is None else None
    if args.client_latency is not None:
        client_latency = _floats("--client-latency", args.client_latency)
    server_rate = args.server_rate if args.server_rate is not None else config_rate
    network = ClosedNetwork(
        mu=mu,
        p=p,
        concurrency=concurrency,
        latency=args.latency,
        client_latency=client_latency,
        server_rate=server_rate,
    )
    return network, notes, config


def _energy(config: Any, network: ClosedNetwork, result: QueueingResult) -> Any:
    """The config's energy figures at this network's utilisations (None without power)."""
    if config is None:
        return None
    from raysync.objectives.energy import power_figures, predict_energy

    figures = power_figures(config)
    if not figures.any or figures.busy.size != network.n_clients:
        return None
    return predict_energy(config, result)


def _check_curve_work(network: ClosedNetwork) -> None:
    """Refuse a ``--curve`` whose extra pass and rows push the work past the solver limit."""
    one_pass = solver_steps(network)
    if one_pass > MAX_SOLVER_STEPS:
        return  # analyze() refuses the concurrency itself, with or without the curve
    c, n = network.concurrency, network.n_clients
    per_population = (1 + _CURVE_PASS_COST) * (one_pass // c) + _CURVE_ROW_STEPS
    steps = c * per_population
    if steps > MAX_SOLVER_STEPS:
        raise ConfigError(
            f"--curve with concurrency C={c:,} and n={n:,} clients needs about "
            f"{approx_text(steps)} solver steps (the analysis, the curve's own MVA pass and "
            f"one row per C' = 1..C), more than the {MAX_SOLVER_STEPS:.3g} allowed (about a "
            f"minute of CPU); use a concurrency of at most "
            f"{MAX_SOLVER_STEPS // per_population:,} with --curve, or leave out --curve"
        )


def _bottleneck(network: ClosedNetwork) -> str:
    with np.errstate(over="ignore"):
        bound = network.bottleneck_throughput
    return f"{bound:.6g}" if np.isfinite(bound) else "beyond 1.8e308"


def _summary(network: ClosedNetwork, result: QueueingResult, method: str) -> CurveSummary:
    """The per-C' curve: the lean MVA pass, or the chosen solver's full curve."""
    if method == "mva":
        return curve_summary(network)
    lam = result.throughput_curve
    delays = result.relative_delay_curve
    assert lam is not None and delays is not None
    return CurveSummary(
        concurrency=network.concurrency,
        n_clients=network.n_clients,
        throughput=lam,
        mean_relative_delay=delays.mean(axis=1),
        max_relative_delay=delays.max(axis=1),
    )


def _print_table(
    network: ClosedNetwork,
    result: QueueingResult,
    max_rows: int,
    summary: CurveSummary | None,
    names: list[str | None] | None = None,
) -> None:
    n = network.n_clients
    extra = network.has_extensions
    print(
        f"closed network: n={n} clients, concurrency C={network.concurrency}, "
        f"method={result.method}"
    )
    shown = n if max_rows <= 0 else min(n, max_rows)
    name_head, name_cells = name_column(names, range(shown))
    header = (
        f"{'client':>6} {name_head}{'mu':>10} {'p':>8} {'rho':>10} {'util':>7} "
        f"{'Q_i':>10} {'T_i':>10} {'E[D_i]':>10}"
    )
    if extra:
        header += f" {'transit':>9}"
    print(header)
    rho = network.rho
    for i in range(shown):
        row = (
            f"{i:>6} {name_cells[i]}{network.mu[i]:>10.4g} "
            f"{format_probability(network.p[i]):>8} {rho[i]:>10.4g} "
            f"{result.utilization[i]:>7.4f} {format_fixed(result.mean_queue_length[i]):>10} "
            f"{format_fixed(result.mean_sojourn_time[i]):>10} "
            f"{format_fixed(result.mean_relative_delay[i]):>10}"
        )
        if extra:
            row += f" {format_fixed(result.mean_in_transit[i]):>9}"
        print(row)
    if shown < n:
        print(f"  ... {n - shown} more clients (--max-rows 0 or --json shows all)")
    print(
        f"throughput Lambda = {result.throughput:.6g} updates per unit time "
        f"(bottleneck bound {_bottleneck(network)})"
    )
    print(
        f"mean staleness sum_i p_i E[D_i] = {result.mean_staleness:.6g} "
        f"(= C - 1 = {network.concurrency - 1})"
    )
    print(
        "average client delay (1/n) sum_i E[D_i] = "
        f"{float(np.mean(result.mean_relative_delay)):.6g}"
    )
    if result.server_utilization is not None and result.server_queue_length is not None:
        print(
            f"server: utilisation {result.server_utilization:.4f}, "
            f"mean queue {format_fixed(result.server_queue_length)}"
        )
    if summary is not None:
        print(f"{'C':>6} {'Lambda(C)':>12} {'avg E[D_i]':>12} {'max E[D_i]':>12}")
        rows = zip(
            summary.throughput, summary.mean_relative_delay, summary.max_relative_delay, strict=True
        )
        for k, (lam, avg, top) in enumerate(rows, start=1):
            print(f"{k:>6} {lam:>12.6g} {avg:>12.6g} {top:>12.6g}")


def handler(args: argparse.Namespace) -> int:
    """Run ``raysync analyze``.

    Args:
        args: Parsed arguments of the ``analyze`` sub-parser.

    Returns:
        0 on success.

    Raises:
        ConfigError: The config or a flag breaks a rule (the CLI prints one line, exit 2).
    """
    if args.max_rows < 0:
        raise ConfigError(
            f"--max-rows must be >= 1 (clients shown) or 0 (all), got {args.max_rows}"
        )
    network, notes, config = _network(args)
    if args.curve:
        _check_curve_work(network)
    cells = network.concurrency * network.n_clients
    # MVA's curve comes from the lean pass; the other solvers' full curve is their check
    full_curve = args.curve and (args.method != "mva" or (args.json and cells <= _JSON_CURVE_CELLS))
    result = analyze(network, method=args.method, curve=full_curve)
    summary = _summary(network, result, args.method) if args.curve else None
    energy = _energy(config, network, result)
    for note in notes:
        print(note, file=sys.stderr)
    if args.json:
        payload = {
            "network": {
                "mu": network.mu.tolist(),
                "p": network.p.tolist(),
                "concurrency": network.concurrency,
                "latency": network.latency,
                "client_latency": (
                    None if network.client_latency is None else network.client_latency.tolist()
                ),
                "server_rate": network.server_rate,
            },
            **result.to_dict(),
        }
        if summary is not None:
            payload["curve"] = summary.to_dict()
        if energy is not None:
            payload["energy"] = energy.to_dict()
        from raysync.cli import print_json
        from raysync.simulation.report import dumps_json

        print_json(args, dumps_json(payload))
        return 0
    # --mu may describe another fleet than the config's: names only for the config's own.
    names = None
    if config is not None and config.num_clients == network.n_clients:
        names = [client.name for client in config.clients]
    _print_table(network, result, args.max_rows, summary, names)
    if energy is not None:
        print(
            f"energy: mean power {energy.power:.6g} W, {energy.energy_per_update:.6g} J per "
            f"update (clients {float(energy.client_power.sum()):.6g} W, transfers "
            f"{float(energy.transfer_power.sum()):.6g} W, server {energy.server_power:.6g} W)"
        )
    return 0
