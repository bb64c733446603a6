"""Valid-looking numbers whose sums, steps or clock overflow: one error line or finite output.

Each value below is accepted on its own (inside its field's range); what overflows is a
quantity built from it: the transit delay ``latency + client_latency[i]``, a step
``lr / (n p_i)``, the fleet's total power, the energy over a run, the simulator's clock
with link delays, or one clock for rates ~1e600 apart. Every refusal is one stderr line
``raysync <cmd>: error: ...`` naming the field as written, with no numpy RuntimeWarning
before it.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from raysync.cli import main
from raysync.exceptions import ConfigError
from raysync.objectives.energy import PowerFigures, energy_report, power_at
from raysync.simulation.result import batch_ratio_ci, format_fixed

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny.toml"
RATES = ("1.0", "2.0", "4.0", "0.5")  # the four clients of tiny.toml


def _error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err.rstrip("\n").split("\n")
    assert len(err) == 1 and err[0].startswith(f"raysync {command}: error: "), err
    return err[0]


def _config(tmp_path: Path, *edits: tuple[str, str]) -> str:
    """tiny.toml with each ``(old, new)`` replaced once."""
    text = EXAMPLE.read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / "c.toml"
    path.write_text(text)
    return str(path)


def _every_client(tmp_path: Path, line: str) -> str:
    """tiny.toml with ``line`` added to every [[clients]] table."""
    return _config(tmp_path, *[(f"rate = {r} }}\n", f"rate = {r} }}\n{line}\n") for r in RATES])


def _run(argv: list[str]) -> int:
    # numpy warnings would print on stderr ahead of the error line: make them errors
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        return main(argv)


# --------------------------------------------------------------------------- K2
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--latency", "1e308", "--client-latency", "1e308,1e308"],
         "latency + client_latency[0] = 1e+308 + 1e+308 overflows float64"),
        (["--latency", "1.7e308", "--client-latency", "0,1e307"],
         "latency + client_latency[1] = 1.7e+308 + 1e+307 overflows float64"),
    ],
)  # fmt: skip
def test_analyze_refuses_a_transit_delay_beyond_float64(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(["analyze", "--mu", "1,2", "-C", "3", *flags]) == 2
    line = _error(capsys, "analyze")
    assert message in line and "server_rate" not in line, line


@pytest.mark.parametrize(
    ("algorithm", "message"),
    [
        ('name = "generalized_asyncsgd"\nlr = 1e308',
         "lr (algorithm.lr) = 1e+308 is too large: client 3's importance-weighted step"),
        ('name = "fedbuff"\nlr = 1e308\nbuffer_size = 2',
         "FedBuff local_lr (algorithm.lr) must be <= 3.40282e+38 (local steps run in float32)"),
        ('name = "fedasync"\nlr = 1e39',
         "FedAsync local_lr (algorithm.lr) must be <= 3.40282e+38"),
    ],
)  # fmt: skip
def test_simulate_refuses_a_step_size_beyond_the_float_range(
    algorithm: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path, ('name = "generalized_asyncsgd"\nlr = 0.05', algorithm))
    assert _run(["simulate", path, "--num-updates", "50", "--no-progress"]) == 2
    assert message in _error(capsys, "simulate")


@pytest.mark.parametrize(
    "link",
    [
        'uplink = { kind = "deterministic", mean = 1e300 }',
        'uplink = { kind = "deterministic", mean = 1e200 }',
        'downlink = { kind = "deterministic", mean = 1e300 }',
    ],
)
def test_simulate_with_huge_link_delays_gives_finite_intervals(
    link: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path, ("rate = 1.0 }\n", f"rate = 1.0 }}\n{link}\n"))
    argv = ["simulate", path, "--queue-only", "--num-updates", "100", "--no-progress", "--json"]
    assert _run(argv) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    data = json.loads(captured.out)
    for key in ("throughput_ci", "utilization_ci", "mean_queue_length_ci", "relative_delay_ci"):
        flat = json.dumps(data[key])
        assert "inf" not in flat and "nan" not in flat, (key, flat)
    assert math.isfinite(data["elapsed"]) and data["elapsed"] > 1e199


def test_batch_interval_is_the_same_at_any_scale() -> None:
    """Residuals whose squares under- or overflow keep the interval of the unscaled data."""
    rng = np.random.default_rng(0)
    y, x = rng.exponential(size=20), rng.exponential(size=20) + 1.0
    _, low, high = batch_ratio_ci(y, x, confidence=0.99)
    for j in (-1000, -600, 600, 1000):
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            _, lo_j, hi_j = batch_ratio_ci(np.ldexp(y, j), x, confidence=0.99)
        assert lo_j == pytest.approx(math.ldexp(low, j), rel=1e-12)
        assert hi_j == pytest.approx(math.ldexp(high, j), rel=1e-12)


def test_power_at_rates_near_1e_300_is_finite() -> None:
    """(busy - idle) / mu overflows at mu = 1e-300, although U = p Lambda / mu <= 1."""
    figures = PowerFigures(
        busy=np.array([1e10, 1e10]), idle=np.array([1.0, 1.0]), transfer=np.zeros(2),
        server_busy=0.0, server_idle=0.0,
    )  # fmt: skip
    mu, p = np.array([1e-300, 2e-300]), np.array([0.5, 0.5])
    lam = 1e-300  # U = (0.5, 0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        watts = power_at(figures, mu=mu, p=p, throughput=lam, server_rate=None)
    assert watts == pytest.approx(2.0 + (1e10 - 1.0) * 0.75, rel=1e-12)


def test_energy_report_refuses_a_mean_power_beyond_float64() -> None:
    """The configs refuse such figures at load; the report's own check stays for the API."""
    figures = PowerFigures(
        busy=np.ones(2), idle=np.ones(2), transfer=np.array([1e308, 1.0]),
        server_busy=0.0, server_idle=0.0,
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"the mean power overflows float64 .*transfers over"):
        energy_report(figures, throughput=3.0, utilization=np.array([0.5, 0.5]),
                      client_throughput=np.array([2.0, 1.0]), server_utilization=0.0)  # fmt: skip


# ------------------------------------------------------------------ K2 + K3: power
@pytest.mark.parametrize(
    "argv",
    [
        ["validate", "CFG"],
        ["analyze", "CFG"],
        ["simulate", "CFG", "--queue-only", "--no-progress"],
        ["optimize", "CFG", "--constants", "1,1,1,1", "--budget", "100"],
    ],
)
@pytest.mark.parametrize(
    ("power", "field"),
    [
        ('power = { busy = "1e308 W", idle = "1e308 W" }', "clients[0].power.busy = '1e308 W'"),
        ('power = { busy = "1 W", idle = "1e305 kW" }', "clients[0].power.idle = '1e305 kW'"),
        # two transfers per task at up to the service rate: 2 x 1e308 J x rate is beyond
        (
            'power = { busy = "1 W", idle = "1 W", transfer = "1e308 J" }',
            "clients[0].power.transfer = '1e308 J'",
        ),
    ],
)
def test_power_figures_whose_fleet_total_overflows_are_refused_at_load(
    argv: list[str], power: str, field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _every_client(tmp_path, power)
    assert _run([path if a == "CFG" else a for a in argv]) == 2
    line = _error(capsys, argv[0])
    assert f"c.toml: {field} makes the fleet's total power overflow float64" in line, line
    assert "energy weight" not in line


@pytest.mark.parametrize(
    ("power", "argv", "message"),
    [
        ('power = { busy = "1e306 W", idle = "1e306 W" }',
         ["optimize", "CFG", "--constants", "1,1,1,1", "--budget", "100"],
         "the energy of every design scanned (C = 1..8"),
        ('power = { busy = "1e306 W", idle = "1e306 W" }',
         ["optimize", "CFG", "--constants", "1,1,1,1", "--criterion", "per-update"],
         "the energy of every design scanned"),
    ],
)  # fmt: skip
def test_energy_beyond_float64_names_the_power_figures(
    power: str,
    argv: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = _every_client(tmp_path, power)
    assert _run([path if a == "CFG" else a for a in argv]) == 2
    line = _error(capsys, argv[0])
    assert message in line and "energy weight" not in line, line
    assert "inf " not in line


def test_energy_per_update_beyond_float64_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """1e10 W at ~1e-300 updates/s: the power is finite, the joules per update are not."""
    slow = {"1.0": "1e-300", "2.0": "2e-300", "4.0": "4e-300", "0.5": "5e-300"}
    power = 'power = { busy = "1e10 W", idle = "1 W" }'
    edits = [(f"rate = {r} }}\n", f"rate = {new} }}\n{power}\n") for r, new in slow.items()]
    path = _config(tmp_path, *edits)
    assert _run(["analyze", path]) == 2
    assert "the energy per update, mean power" in _error(capsys, "analyze")


# --------------------------------------------------------------------------- K4
@pytest.mark.parametrize(
    ("routing", "message"),
    [
        ("constants = [-1, 1, 1, 1]", "routing.constants[0] (L) must be > 0, got -1"),
        ("constants = [0, 0, 0, 0]", "routing.constants[0] (L) must be > 0, got 0"),
        ("constants = [1, 1, -1, 1]", "routing.constants[2] (M2) must be >= 0, got -1"),
        ("constants = [1, 1, 0, 0]", "routing.constants[3] (A) must be > 0, got 0"),
        ("constants = [1e300, 1e300, 1, 1]", "routing.constants overflow the float range"),
        ("constants = [1e-200, 1e-200, 0, 1]", "routing.constants underflow the float range"),
        ("horizon = 1e-3", "routing.horizon must give the bound at least one update"),
        ("horizon = 1e-320", "routing.horizon must give the bound at least one update"),
        ("horizon = 1e300", "routing.horizon gives up to K = T x 7.5 = 7.5e+300 updates"),
        ("horizon = 1.1e300", "routing.horizon must be a number in (0, 1e+300], got 1.1e+300"),
        # refused only by the router, mid-run (validate accepted it)
        ('objective = "bias_aware"\nzeta2 = 1e308',
         "routing.zeta2 must be a number in [0, 1e+300], got 1e+308"),
    ],
)
@pytest.mark.parametrize("command", ["validate", "simulate"])
def test_adaptive_routing_fields_are_checked_at_load(
    routing: str,
    message: str,
    command: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = _config(
        tmp_path, ('kind = "fixed"\np = [0.4, 0.3, 0.2, 0.1]', f'kind = "adaptive"\n{routing}')
    )
    argv = [command, path] + (["--queue-only", "--no-progress"] if command == "simulate" else [])
    assert _run(argv) == 2
    line = _error(capsys, command)
    assert line.startswith(f"raysync {command}: error: {path}: ") and message in line, line


@pytest.mark.parametrize(
    "service",
    [
        '{ kind = "exponential", rate = 1e-300 }',
        '{ kind = "deterministic", mean = 1e300 }',
        '{ kind = "trace", durations = [1e300] }',
    ],
)
def test_one_client_at_the_edge_of_the_range_simulates(
    service: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path, ('{ kind = "exponential", rate = 1.0 }', service))
    argv = ["simulate", path, "--queue-only", "--no-progress", "--num-updates", "200", "--json"]
    assert _run(argv) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    data = json.loads(captured.out)
    assert math.isfinite(data["throughput"]) and data["throughput"] > 0
    assert all(math.isfinite(v) for v in data["mean_relative_delay"])


@pytest.mark.parametrize(
    ("fast", "slow", "message"),
    [
        ("rate = 1e300", "rate = 1e-300",
         "clients[2].service_time.rate = 1e+300 and clients[0].service_time.rate = 1e-300 "
         "are too far apart for the simulator's clock"),
        ('kind = "deterministic", mean = 1e-300', 'kind = "deterministic", mean = 1e300',
         "clients[2].service_time.mean = 1e-300 s and clients[0].service_time.mean = "
         "1e+300 s are too far apart"),
    ],
)  # fmt: skip
def test_rates_too_far_apart_for_one_clock_name_both_clients(
    fast: str, slow: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(
        tmp_path,
        ('kind = "exponential", rate = 1.0', slow),
        ('kind = "exponential", rate = 4.0', fast),
    )
    assert _run(["simulate", path, "--queue-only", "--no-progress"]) == 2
    line = _error(capsys, "simulate")
    assert message in line and "1.34" not in line, line  # not the rescaled rate


def test_a_huge_link_beside_a_huge_rate_names_the_link(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(
        tmp_path,
        ("rate = 1.0 }\n", 'rate = 1.0 }\nuplink = { kind = "deterministic", mean = 1e300 }\n'),
        ("rate = 4.0 }", "rate = 1e300 }"),
    )
    assert _run(["simulate", path, "--queue-only", "--no-progress"]) == 2
    line = _error(capsys, "simulate")
    assert "clients[2].service_time.rate = 1e+300 and clients[0].uplink.mean = 1e+300 s" in line


# --------------------------------------------------------------------------- K9
@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3.0, "3.0000"),
        (99999.99994, "99999.9999"),
        (123456.7, "123457"),
        (3e300, "3e+300"),
        (-2.5e-7, "-0.0000"),
        (math.inf, "inf"),
    ],
)
def test_table_numbers_stay_short(value: float, text: str) -> None:
    assert format_fixed(value) == text
    assert len(format_fixed(value)) <= 12
    if math.isfinite(value) and abs(value) >= 1e5:
        assert float(format_fixed(value)) == pytest.approx(value, rel=1e-5)


@pytest.mark.parametrize(
    ("args", "column", "value"),
    [
        (["-C", "3", "--mu", "1e-300,1e300"], "T_i", 3e300),
        (["-C", "3", "--mu", "1e-300,1e-300", "--latency", "1e300"], "T_i", 1.5555555555555556e300),
    ],
)
def test_analyze_prints_huge_table_values_in_short_form(
    args: list[str], column: str, value: float, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(["analyze", *args]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[1].split()
    row = lines[2].split()
    assert all(len(token) <= 12 for line in lines[1:4] for token in line.split()), lines
    assert float(row[header.index(column)]) == pytest.approx(value, rel=1e-5)


@pytest.mark.parametrize(
    ("lr", "expected"),
    [
        ("1e308", "algorithm.lr (--step fixed) = 1e+308 puts the bound's terms beyond"),
        # below float32's smallest normal the config refuses it before the bound is tried
        ("1e-310", "algorithm.lr must be >= 1.175e-38, the smallest normal float32"),
    ],
)
def test_optimize_fixed_step_beyond_the_float_range_names_the_step(
    lr: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Was a numpy overflow RuntimeWarning, then an error blaming the rates ("too far apart").
    config = _config(tmp_path, ("lr = 0.05", f"lr = {lr}"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code = main(["optimize", config, "--constants", "1,1,1,1", "--budget", "10",
                     "--step", "fixed"])  # fmt: skip
    assert code == 2
    line = _error(capsys, "optimize")
    assert expected in line
    assert "rates" not in line


@pytest.mark.parametrize(
    ("edits", "fields"),
    [
        # the server's own step is what diverged: the message said "lower the learning rate"
        ((('name = "generalized_asyncsgd"', 'name = "fedbuff"\nserver_lr = 1e308'),),
         "lower algorithm.lr (and algorithm.server_lr with fedbuff)"),
        ((("lr = 0.05", "lr = 1e300"),), "lower algorithm.lr"),
    ],
)  # fmt: skip
def test_a_diverging_run_names_the_step_fields(
    edits: tuple[tuple[str, str], ...],
    fields: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = _config(tmp_path, *edits)
    assert main(["simulate", config, "--no-progress"]) == 2
    line = _error(capsys, "simulate")
    assert "diverged" in line and fields in line, line
