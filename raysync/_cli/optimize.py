"""``raysync optimize CONFIG``: choose the concurrency ``C`` and routing ``p`` of a fleet.

Minimises the convergence bound of docs/theory.md section 5 for the config's fleet (service rates
``mu_i = 1 / mean service time``, exact for exponential service) under the per-update (3a) or
wall-clock (3b) criterion, and prints the optimum next to two defaults:

* ``uniform``: uniform routing with ``C = n``;
* ``asyncsgd``: AsyncSGD (return to sender, ``C = n``). It is not a random routing, so its
  queueing numbers are those of independent per-client cycles (throughput ``sum mu_i``,
  ``E[D_i] = (sum mu - mu_i) / mu_i``; with link delays ``Z_i`` the cycles last
  ``Z_i + 1 / mu_i``, throughput ``sum_i 1 / (Z_i + 1 / mu_i)``), and the bound, proven for
  importance-weighted Generalized AsyncSGD, is evaluated at AsyncSGD's empirical routing
  (``p_i = mu_i / sum mu`` without links; an approximation: AsyncSGD applies unweighted
  gradients).

A config's communication delays and server update time enter the bound as latency and
server stations (docs/network.md); with power figures, the optimum's energy is reported,
and ``--energy-budget`` (joules over the run) or ``--energy-weight`` (bound units per
joule) trade it against the bound (:func:`raysync.objectives.optimize.optimize_with_energy`).
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np

from raysync._validation import check_not_input, check_output_file, name_column
from raysync.config import MAX_NUM_UPDATES, SystemConfig, load_config, write_config_file
from raysync.exceptions import ConfigError

__all__ = ["add_parser"]

def add_parser(subparsers: Any) -> None:
    """Register the ``optimize`` command."""
    parser = subparsers.add_parser(
        "optimize",
        help="choose concurrency C and routing p by minimising the convergence bound",
        description=(
            "Minimise the convergence bound of Generalized AsyncSGD (docs/theory.md section 5) "
            "over the routing p and the concurrency C of the config's fleet, per update (3a) "
            "or per unit of wall-clock time (3b), and compare with uniform routing (C = n) "
            "and AsyncSGD (C = n)."
        ),
    )
    parser.add_argument("config", help="path to a TOML config file")
    parser.add_argument(
        "--criterion",
        choices=("per-update", "wall-clock"),
        default="wall-clock",
        help="(3a) bound after K updates, or (3b) bound after a time budget (default)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="time budget T in seconds for wall-clock (default: run.time_budget)",
    )
    parser.add_argument(
        "--updates",
        type=int,
        default=None,
        help="K for per-update (default: run.num_updates, else throughput of uniform C=n "
        "times the budget)",
    )
    parser.add_argument(
        "--max-concurrency",
        type=int,
        default=None,
        help="largest C considered (default: max(2n, config concurrency))",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--constants", metavar="L,sigma2,M2,A", help="the problem constants, comma-separated"
    )
    source.add_argument(
        "--estimate-constants",
        action="store_true",
        help="estimate L, sigma2, M2, A from a short pilot run on the config's data and model",
    )
    parser.add_argument(
        "--step",
        choices=("fixed", "optimal"),
        default="optimal",
        help="step size: the config's algorithm.lr, or the bound's optimal step (default)",
    )
    parser.add_argument(
        "--energy-budget",
        type=float,
        default=None,
        metavar="JOULES",
        help="most energy the run may spend, joules > 0 (needs power figures in the config)",
    )
    parser.add_argument(
        "--energy-weight",
        type=float,
        default=0.0,
        metavar="W",
        help="price of a joule in bound units, >= 0: minimise bound + W * energy (default 0)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--write-config",
        metavar="OUT.toml",
        default=None,
        help="write the config with routing.kind='fixed', the optimal p and C",
    )
    parser.set_defaults(func=_handle)


def _budget(args: argparse.Namespace, config: SystemConfig) -> float | None:
    budget = args.budget if args.budget is not None else config.run.time_budget
    if budget is not None and not (math.isfinite(budget) and budget > 0):
        raise ConfigError(f"--budget must be a number of seconds > 0, got {budget!r}")
    return budget


def _handle(args: argparse.Namespace) -> int:
    from raysync.objectives import (
        BoundObjective,
        ProblemConstants,
        check_fixed_step,
        check_search_size,
        default_max_concurrency,
        estimate_constants_for_config,
        optimize_joint,
    )
    from raysync.objectives.energy import power_figures
    from raysync.objectives.optimize import optimize_with_energy
    from raysync.queueing import ClosedNetwork, analyze
    from raysync.queueing.predict import station_parameters

    # the library's rules (optimize_with_energy): a budget of 0 J admits no design, while a
    # weight of 0 is the default "no price"
    if args.energy_budget is not None and not (
        math.isfinite(args.energy_budget) and args.energy_budget > 0
    ):
        raise ConfigError(
            f"--energy-budget must be a finite number of joules > 0, got {args.energy_budget!r}"
        )
    if not (math.isfinite(args.energy_weight) and args.energy_weight >= 0):
        raise ConfigError(
            f"--energy-weight must be a finite number >= 0, got {args.energy_weight!r}"
        )
    if args.write_config is not None:  # "" too: it was taken as "no file" and exited 0
        check_output_file(args.write_config, "--write-config")  # before optimising
        check_not_input(args.write_config, "--write-config", args.config, "optimised config")
    if args.updates is not None and args.updates < 1:
        raise ConfigError(f"--updates must be an integer >= 1, got {args.updates!r}")
    if args.updates is not None and args.criterion == "wall-clock":
        # ignored silently before: the wall-clock criterion counts K = Lambda * T
        raise ConfigError(
            f"--updates {args.updates} applies to --criterion per-update; the wall-clock "
            "criterion takes its K = Lambda*T from --budget"
        )
    if args.updates is not None and args.budget is not None:
        raise ConfigError(
            f"--updates {args.updates} and --budget {args.budget:g} both set K of the "
            "per-update criterion: give one"
        )
    config = load_config(args.config)
    n = config.num_clients
    mu = np.asarray(config.service_rates, dtype=np.float64)
    budget = _budget(args, config)
    cmax, cmax_name = default_max_concurrency(args.max_concurrency, n, config.concurrency)
    if cmax < 1:
        raise ConfigError(f"--max-concurrency must be an integer >= 1, got {cmax}")
    check_search_size(cmax, n, name=cmax_name)
    latency, server_rate = station_parameters(config)
    figures = power_figures(config)
    wants_energy = args.energy_budget is not None or args.energy_weight > 0
    if wants_energy and not figures.any:
        raise ConfigError(
            "--energy-budget/--energy-weight need power figures: set power = { busy = "
            "'20 W', idle = '2 W', transfer = '0.5 J' } on [[clients]] (and [server] power)"
        )

    estimate = None
    if args.estimate_constants:
        estimate = estimate_constants_for_config(config)
        constants = estimate.constants
    else:
        constants = ProblemConstants.parse(args.constants, flag="--constants")

    kwargs: dict[str, Any] = {}
    if args.criterion == "wall-clock":
        if budget is None:
            raise ConfigError(
                "the wall-clock criterion needs a time budget: pass --budget SECONDS or set "
                "run.time_budget in the config"
            )
        kwargs["time_budget"] = budget
    else:
        # An explicit flag wins over the config: --budget was ignored when the config set
        # run.num_updates.
        updates = args.updates
        if updates is None and args.budget is None:
            updates = config.run.num_updates
        if updates is None and budget is not None:
            uniform_net = ClosedNetwork(
                mu=mu,
                p=np.full(n, 1.0 / n),
                concurrency=n,
                client_latency=latency,
                server_rate=server_rate,
            )
            updates = max(1, round(analyze(uniform_net).throughput * budget))
        # compared as ints: float() of a 310-digit --updates raises OverflowError
        if updates is None or not 1 <= updates <= MAX_NUM_UPDATES:
            raise ConfigError(
                f"--updates must be an integer in [1, {MAX_NUM_UPDATES:,}] (as run.num_updates), "
                f"got {updates!r}"
            )
        kwargs["num_updates"] = float(updates)
    eta: float | str = "optimal"
    if args.step == "fixed":
        eta = check_fixed_step(config.algorithm.lr, constants, name="algorithm.lr (--step fixed)")
    objective = BoundObjective(
        mu=mu,
        constants=constants,
        criterion=args.criterion,
        eta=eta,
        client_latency=latency,
        server_rate=server_rate,
        **kwargs,
    )

    choice = None
    if figures.any:
        choice = optimize_with_energy(
            objective,
            figures,
            max_concurrency=cmax,
            energy_budget=args.energy_budget,
            energy_weight=args.energy_weight,
        )
        result = choice.optimum
    else:
        result = optimize_joint(objective, max_concurrency=cmax)
    uniform = objective.evaluate(np.full(n, 1.0 / n), n)
    asyncsgd = None if server_rate is not None else objective.asyncsgd_terms()

    if args.write_config is not None:
        write_config_file(
            config.with_random_routing(result.p, result.concurrency),
            args.write_config,
            flag="--write-config",
        )

    if args.json:
        payload = {
            "config": str(args.config),
            "criterion": args.criterion,
            "constants": constants.to_dict(),
            "constants_estimate": None if estimate is None else estimate.to_dict(),
            "service_rates": mu.tolist(),
            "max_concurrency": cmax,
            "optimum": result.to_dict(),
            "baselines": {
                "uniform": uniform.to_dict(),
                "asyncsgd": None if asyncsgd is None else asyncsgd.to_dict(),
            },
            "stations": {
                "client_latency": None if latency is None else latency.tolist(),
                "server_rate": server_rate,
            },
            "energy": None if choice is None else choice.to_dict(),
            "written_config": args.write_config,
        }
        from raysync.cli import print_json
        from raysync.simulation.report import dumps_json

        print_json(args, dumps_json(payload))
        return 0

    _print_report(args, config, mu, constants, result, uniform, asyncsgd, cmax, estimate)
    if latency is not None or server_rate is not None:
        where = "none" if server_rate is None else f"rate {server_rate:.6g} updates/s"
        top = 0.0 if latency is None else float(latency.max())
        print(f"stations: links up to {top:.4g} s per task; server {where}")
    if choice is not None:
        print(
            f"energy at the chosen design: {choice.energy:.6g} J over the run "
            f"({choice.power:.6g} W, {choice.energy_per_update:.6g} J/update); without the "
            f"energy term: C = {choice.unconstrained.concurrency}, bound "
            f"{choice.unconstrained.value:.6g}"
        )
    return 0


def _print_report(
    args: argparse.Namespace,
    config: SystemConfig,
    mu: np.ndarray,
    constants: Any,
    result: Any,
    uniform: Any,
    asyncsgd: Any,
    cmax: int,
    estimate: Any,
) -> None:
    n = config.num_clients
    source = "estimated from a pilot run" if estimate is not None else "given"
    print(f"{args.config}: {n} clients, criterion {args.criterion}, step {args.step}")
    print(
        f"  constants ({source}): L={constants.L:.4g} sigma2={constants.sigma2:.4g} "
        f"M2={constants.M2:.4g} A={constants.A:.4g}"
    )
    terms = result.terms
    k_label = "K = Lambda*T" if args.criterion == "wall-clock" else "K"
    print(
        f"optimum: C = {result.concurrency}   throughput = {result.throughput:.6g} updates/s   "
        f"{k_label} = {terms.num_updates:.6g}   eta = {result.eta:.4g}"
    )
    if result.concurrency == cmax:
        print(f"  note: C is at --max-concurrency={cmax}; a larger C may be better")
    if not result.converged:
        print(f"  warning: optimiser did not converge: {result.message}")
    name_head, names = name_column([client.name for client in config.clients], range(n))
    print(f"  {'client':>6} {name_head}{'mu':>10} {'p':>10} {'E[D_i]':>10}")
    for i in range(n):
        print(
            f"  {i:>6} {names[i]}{mu[i]:>10.4g} {result.p[i]:>10.5f} "
            f"{result.relative_delay[i]:>10.4g}"
        )
    print("bound terms (lower is better):")
    header = (
        f"  {'setting':<22} {'C':>5} {'throughput':>11} {'eta':>10} {'optimization':>13} "
        f"{'variance':>11} {'staleness':>11} {'bound':>11}"
    )
    print(header)
    rows = [("optimum", terms), ("uniform p, C=n", uniform), ("AsyncSGD, C=n *", asyncsgd)]
    for name, t in rows:
        if t is None:
            print(f"  {name:<22} n/a (return to sender with a server station: no closed form)")
            continue
        flag = "" if t.admissible else "  (eta > eta_max: bound not proven)"
        print(
            f"  {name:<22} {t.concurrency:>5} {t.throughput:>11.5g} {t.eta:>10.4g} "
            f"{t.optimization:>13.5g} {t.variance:>11.5g} {t.staleness:>11.5g} "
            f"{t.value:>11.5g}{flag}"
        )
    print(
        "  * AsyncSGD: independent per-client cycles (throughput sum_i 1 / (Z_i + 1 / mu_i),"
        " Z_i the link delays; sum mu_i without links), bound at its empirical routing "
        "p_i = client throughput / total (approximation)"
    )
    if asyncsgd is not None and asyncsgd.value < terms.value:
        # The search covers random routing (docs/theory.md section 5); AsyncSGD is outside it.
        print(
            f"  note: AsyncSGD's bound {asyncsgd.value:.5g} is below the optimum's "
            f"{terms.value:.5g}: the optimum is the best random routing, and return to sender "
            "is not one; `raysync recommend` searches both (and measures them)"
        )
    if args.write_config is not None:
        step = ""
        if not math.isclose(result.eta, config.algorithm.lr, rel_tol=1e-9):
            step = (f"; algorithm.lr kept at {config.algorithm.lr:g}, not the bound's step "
                    f"eta = {result.eta:.4g}")
        print(
            f"wrote {args.write_config} (routing.kind = 'fixed', concurrency = "
            f"{result.concurrency}{step})"
        )
