"""Measured-versus-theory report of a run, with every delay in a named unit.

Two units of staleness exist and are never mixed:

* **completions** (docs/theory.md section 2): the number of tasks completed between a task's
  dispatch and its own completion. The closed-network formulas (``E[D_i]``, ``C - 1`` on
  average) count this, and the throughput ``Lambda`` is completions per second.
* **model versions**: ``D = k - v``, the server versions applied meanwhile; what a
  strategy sees (FedAsync's and FedBuff's staleness weights use it). For rules that apply
  every result (AsyncSGD, FedAsync) a completion is a version and the two coincide. FedBuff
  applies one version per ``B`` completions, and then ``E[D_versions] = E[D_completions] /
  B`` exactly in steady state (``docs/fedbuff.md``).

:func:`theory_prediction` (written as ``theory.json``) and
:class:`~raysync.simulation.result.RunResult` (``result.json``) use the same key for the same
quantity in the same unit: ``mean_relative_delay`` / ``mean_staleness`` in model versions,
``mean_completion_delay`` / ``mean_completion_staleness`` in completions, ``throughput``
in completions per second and ``version_throughput`` in model versions per second.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from raysync._validation import format_probability, name_column
from raysync.simulation.result import (
    UNITS,
    _json_safe,
    format_fixed,
    format_interval,
    format_measured,
)

if TYPE_CHECKING:
    from raysync.config import SystemConfig
    from raysync.simulation.result import RunResult

__all__ = [
    "DEFAULT_MAX_ROWS",
    "UNITS",
    "dumps_json",
    "format_report",
    "table_rows",
    "theory_prediction",
]


def theory_prediction(config: SystemConfig) -> dict[str, Any]:
    """The queueing theory's prediction for a config, in both staleness units.

    Args:
        config: The system (random routing: closed Jackson network; return to sender:
            independent cycles).

    Returns:
        A JSON-safe mapping: ``model`` (``"closed_jackson"`` or
        ``"independent_cycles"``), ``exact`` (all service times exponential, one law
        for the whole run, a fixed routing and fleet), ``approximate`` (why not, or None),
        ``buffer_size`` ``B``, ``throughput`` (completions/s) and ``version_throughput``
        (versions/s), per-client lists ``client_throughput``, ``utilization``,
        ``mean_queue_length``, ``mean_relative_delay`` (versions) and
        ``mean_completion_delay`` (completions), the averages ``mean_staleness``
        (versions) and ``mean_completion_staleness`` (completions), and ``units``.
        Where there is no closed form (:func:`raysync.queueing.predict.no_closed_form`), or
        its analysis exceeds the solver's limits
        (:class:`~raysync.exceptions.ComputeLimitError`): ``model`` None, ``unavailable``
        (why), ``buffer_size`` and ``units`` only.
    """
    from raysync.queueing.predict import buffer_size, predict_or_reason

    res = predict_or_reason(config)
    if isinstance(res, str):
        return {
            "model": None,
            "exact": False,
            "approximate": None,
            "unavailable": res,
            "buffer_size": buffer_size(config),
            "units": dict(UNITS),
        }
    approximation = _approximation(config)
    return {
        "model": "closed_jackson" if res.method == "mva" else res.method,
        "exact": approximation is None,
        "approximate": approximation,
        "buffer_size": res.buffer_size,
        "throughput": float(res.throughput),
        "version_throughput": float(res.version_throughput),
        "client_throughput": res.client_throughput.tolist(),
        "utilization": res.utilization.tolist(),
        "mean_queue_length": res.mean_queue_length.tolist(),
        "mean_relative_delay": res.mean_version_delay.tolist(),
        "mean_staleness": float(res.mean_version_staleness),
        "mean_completion_delay": res.mean_relative_delay.tolist(),
        "mean_completion_staleness": float(res.mean_staleness),
        "units": dict(UNITS),
    }


def _approximation(config: SystemConfig) -> str | None:
    """Why the theory is not exact for ``config`` (None: it is), for the report's note."""
    laws = [
        seg for c in config.clients for seg in (c.service_time.segments or ()) or (c.service_time,)
    ]
    if config.server is not None and config.server.update_time is not None:
        laws.append(config.server.update_time)
    if any(law.kind != "exponential" for law in laws):
        return "service times are not all exponential"
    # a schedule's segments are exponential here: the theory is exact for segment 0 only
    if any(len(c.service_time.segments or ()) > 1 for c in config.clients):
        return "service rates change over time (schedule)"
    if config.routing.kind == "adaptive":
        return "the adaptive router changes p during the run"
    if any(c.join_time > 0 or c.leave_time is not None for c in config.clients):
        return "clients join or leave during the run"
    return None


def dumps_json(value: Any, level: int = 0) -> str:
    """JSON text with one key per line and every list on one line.

    ``json.dumps(indent=2)`` puts each number of a per-client list on its own line, in the
    pure-Python encoder: at ``n = 10^6`` the ``raysync simulate --json`` payload was
    600 MB and took minutes. Lists (and every non-mapping value) go through the C encoder
    here; mappings keep the indented layout, so small payloads read as before.

    Args:
        value: A JSON-safe value (mappings with string keys); a non-finite float is
            written as the string ``"nan"``, ``"inf"`` or ``"-inf"``, as in
            ``result.json``, so the text is strict JSON (``json.dumps`` would write the
            ``NaN`` token, which strict parsers such as ``jq`` and JavaScript refuse).
        level: Indentation level of ``value`` (two spaces each).

    Returns:
        The JSON text (no trailing newline); ``json.loads`` gives ``value`` back (its
        non-finite floats as those strings).
    """
    if not isinstance(value, dict) or not value or not all(isinstance(k, str) for k in value):
        try:
            return json.dumps(value, allow_nan=False)
        except ValueError:  # a non-finite float somewhere: the slow path only then
            return json.dumps(_json_safe(value), allow_nan=False)
    pad = "  " * (level + 1)
    items = [f"{pad}{json.dumps(k)}: {dumps_json(v, level + 1)}" for k, v in value.items()]
    return "{\n" + ",\n".join(items) + "\n" + "  " * level + "}"


def _fmt(value: float, digits: int = 4) -> str:
    return format_measured(value, f".{digits}g")


def _nonstationary_notes(config: SystemConfig) -> list[str]:
    """Say what the theory column describes when the fleet changes during the run."""
    notes = []
    sched = [i for i, c in enumerate(config.clients) if c.service_time.kind == "schedule"]
    if sched:
        shown = ", ".join(map(str, sched[:8])) + (", ..." if len(sched) > 8 else "")
        notes.append(
            f"theory describes segment 0 (t = 0) of the schedule of clients {shown}; the "
            f"measurements mix all segments"
        )
    if any(c.join_time > 0 or c.leave_time is not None for c in config.clients):
        notes.append("theory describes the whole fleet present; clients join or leave here")
    if config.routing.kind == "adaptive":
        notes.append("theory describes the adaptive router's starting p (uniform)")
    return notes


#: Clients the per-client table shows by default (``raysync analyze --max-rows`` too).
DEFAULT_MAX_ROWS = 50


def table_rows(mu: Sequence[float], max_rows: int) -> tuple[list[int], int]:
    """The clients a per-client table shows, and how many it leaves out.

    The rule of ``raysync analyze --max-rows``: the first ``max_rows`` clients (all of
    them when ``max_rows`` is 0). A cut table also shows the slowest and the fastest
    client (smallest and largest ``mu``; the first of ties) when they are not among the
    first rows, so a fleet listed tier by tier still shows both ends.

    Args:
        mu: Service rates, shape ``(n,)``, tasks per second.
        max_rows: Clients shown before the cut; 0 shows all.

    Returns:
        The client indices to print, ascending, and the number left out.

    Raises:
        ValueError: ``max_rows`` is negative.
    """
    if max_rows < 0:
        raise ValueError(f"max_rows must be >= 1 (clients shown) or 0 (all), got {max_rows}")
    n = len(mu)
    if max_rows == 0 or n <= max_rows:
        return list(range(n)), 0
    rates = np.asarray(mu, dtype=np.float64)
    ends = {int(np.argmin(rates)), int(np.argmax(rates))}
    shown = sorted(set(range(max_rows)) | ends)
    return shown, n - len(shown)


def _left_out_line(left_out: int) -> list[str]:
    if not left_out:
        return []
    return [f"  ... {left_out} more clients (--max-rows 0 or --json shows all)"]


def format_report(
    config: SystemConfig,
    result: RunResult,
    theory: dict[str, Any],
    max_rows: int = DEFAULT_MAX_ROWS,
) -> str:
    """The ``raysync simulate`` report: measurements next to the theory, units named.

    With one model version per completion the delays are printed once, "in updates".
    With a buffer of ``B`` they are printed twice, in completions (the theory's unit) and
    in model versions (what the strategy sees), each next to the theory in that unit.

    Args:
        config: The run's config.
        result: The run's result.
        theory: :func:`theory_prediction` of ``config``.
        max_rows: Per-client rows shown (:func:`table_rows`; 0: all). The report's length
            is ``O(max_rows)`` lines and its cost ``O(n)``, whatever ``n``.

    Returns:
        The report, lines joined by newlines (no trailing newline).

    Raises:
        ValueError: ``max_rows`` is negative.
    """
    # Built once: config.service_rates and routing_probabilities make a fresh n-tuple per
    # access, which made this table O(n^2) (minutes at n = 20,000).
    p = config.routing_probabilities
    mu = config.service_rates
    rows, left_out = table_rows(mu, max_rows)
    name_head, names = name_column([client.name for client in config.clients], rows)
    b = result.buffer_size
    missing = theory.get("unavailable")
    why = theory.get("approximate") or "service times are not all exponential"
    exact = "" if theory["exact"] or missing else f" (approximate: {why})"

    def th(key: str, i: int | None = None, digits: int = 4) -> str:
        """The theory's value, or "-" where there is no closed form."""
        if missing:
            return "-"
        value = theory[key] if i is None else theory[key][i]
        return _fmt(value, digits)

    lines: list[str] = []
    runs = (
        f"{result.num_updates} updates"
        if b == 1
        else f"{result.num_updates} model versions = {result.num_completions} completions "
        f"(buffer B={b} completions per version)"
    )
    lines.append(
        f"simulated {runs} in {_fmt(result.elapsed, 6)} virtual s "
        f"(n={result.num_clients}, C={result.concurrency}, routing={config.routing.kind}, "
        f"algorithm={config.algorithm.name}, seed={result.seed}; {result.wall_time:.2f} s wall)"
    )
    lines.extend(f"WARNING: {w}" for w in result.warnings)
    if missing:
        lines.append(f"theory: none here, {missing}; the simulation is the reference")
    lines.extend(_nonstationary_notes(config))
    if result.train:
        lines.append(
            f"final test {config.model.metric_label}: {format_fixed(result.final_test_accuracy)}  "
            f"(test loss {_fmt(result.final_test_loss)})"
        )
    else:
        lines.append("final test accuracy: n/a (queue-only)")
    level = f"{100 * result.confidence:.0f}%"
    lo, hi = result.throughput_ci
    per = "updates" if b == 1 else "completions"
    lines.append(
        f"throughput: {_fmt(result.throughput, 6)} {per}/s  ({level} CI "
        f"{format_interval(lo, hi, 6)})  theory: {th('throughput', digits=6)}{exact}"
    )
    if b == 1:
        lines.append(
            f"mean staleness: {_fmt(result.mean_staleness)} updates  "
            f"theory: {th('mean_staleness')}"
        )
        lines.append("per-client staleness (mean relative delay, in updates):")
        lines.append(
            f"  {'client':>6} {name_head}{'mu':>9} {'p':>7} {'completed':>9} {'measured':>9} "
            f"{level + ' CI':>21} {'theory':>9}"
        )
        for i, name in zip(rows, names, strict=True):
            pi = "-" if p is None else format_probability(p[i])
            lines.append(
                f"  {i:>6} {name}{mu[i]:>9.4g} {pi:>7} "
                f"{int(result.completed[i]):>9} {_fmt(result.mean_relative_delay[i]):>9} "
                f"{format_interval(*result.relative_delay_ci[i]):>21} "
                f"{th('mean_relative_delay', i):>9}"
            )
        lines.extend(_left_out_line(left_out))
        return "\n".join(lines)
    lines.append(
        f"model versions/s: {_fmt(result.version_throughput, 6)}  "
        f"theory: {th('version_throughput', digits=6)}  (= completions/s / B)"
    )
    lines.append(
        f"mean staleness in completions (docs/theory.md sec. 2): "
        f"{_fmt(result.mean_completion_staleness)}  "
        f"theory: {th('mean_completion_staleness')}"
    )
    lines.append(
        f"mean staleness in model versions (completions / B): {_fmt(result.mean_staleness)}"
        f"  theory: {th('mean_staleness')}"
    )
    lines.append("per-client staleness (mean relative delay), in completions | in model versions:")
    lines.append(
        f"  {'client':>6} {name_head}{'mu':>9} {'p':>7} {'completed':>9} {'compl.':>8} "
        f"{level + ' CI':>19} {'theory':>8} | {'versions':>8} {level + ' CI':>19} "
        f"{'theory':>8}"
    )
    for i, name in zip(rows, names, strict=True):
        pi = "-" if p is None else format_probability(p[i])
        lines.append(
            f"  {i:>6} {name}{mu[i]:>9.4g} {pi:>7} {int(result.completed[i]):>9} "
            f"{_fmt(result.mean_completion_delay[i]):>8} "
            f"{format_interval(*result.completion_delay_ci[i]):>19} "
            f"{th('mean_completion_delay', i):>8} | "
            f"{_fmt(result.mean_relative_delay[i]):>8} "
            f"{format_interval(*result.relative_delay_ci[i]):>19} "
            f"{th('mean_relative_delay', i):>8}"
        )
    lines.extend(_left_out_line(left_out))
    return "\n".join(lines)
