"""CLI with communication delays, a server station and power figures (issue 15)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raysync.cli import main
from tests._cli import exit_code

FLEET = """\
seed = 0
concurrency = 4

[routing]
kind = "uniform"

[run]
time_budget = 50.0

[server]
update_time = { kind = "exponential", rate = 6.0 }
power = { busy = "30 W", idle = "3 W" }

[[clients]]
service_time = { kind = "exponential", rate = 1.0 }
downlink = { kind = "exponential", rate = 2.0 }
uplink = { kind = "deterministic", mean = 0.25 }
power = { busy = "5 W", idle = "1 W", transfer = "0.5 J" }

[[clients]]
service_time = { kind = "exponential", rate = 4.0 }
power = { busy = "40 W", idle = "1 W", transfer = "0.5 J" }
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    return path


def test_analyze_uses_the_config_stations_and_reports_energy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, FLEET)
    assert main(["analyze", str(path), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["network"]["client_latency"] == [0.75, 0.0]
    assert payload["network"]["server_rate"] == pytest.approx(6.0)
    assert payload["energy"]["power"] > 0
    assert payload["energy"]["energy_per_update"] == pytest.approx(
        payload["energy"]["power"] / payload["throughput"]
    )
    assert main(["analyze", str(path)]) == 0
    assert "energy: mean power" in capsys.readouterr().out


def test_optimize_reports_energy_and_respects_a_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, FLEET)
    args = ["optimize", str(path), "--constants", "1,1,0.5,2", "--max-concurrency", "8"]
    assert main([*args, "--json"]) == 0
    free = json.loads(capsys.readouterr().out)
    assert free["baselines"]["asyncsgd"] is None  # return to sender + server: no closed form
    assert free["stations"]["server_rate"] == pytest.approx(6.0)
    energy = free["energy"]["energy"]
    assert main([*args, "--json", "--energy-budget", str(0.9 * energy)]) == 0
    tight = json.loads(capsys.readouterr().out)
    assert tight["energy"]["energy"] <= 0.9 * energy
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "energy at the chosen design" in out and "n/a" in out


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (("rate = 2.0 }", "rate = -2.0 }"), "clients[0].downlink.rate must be > 0"),
        (('busy = "5 W"', "busy = 5"), "clients[0].power.busy must be a string with a unit"),
        (('idle = "3 W"', 'idle = "3"'), "server.power.idle must be a number and a unit"),
    ],
)
def test_bad_network_input_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: tuple[str, str], words: str
) -> None:
    path = _write(tmp_path, FLEET.replace(*change))
    for command in (["validate", str(path)], ["analyze", str(path)]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and "\n" not in err and "Traceback" not in err


def test_server_table_without_clients_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = "concurrency = 1\nclients = []\n\n[server]\nupdate_time = { rate = 5.0 }\n"
    path = _write(tmp_path, text)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "clients must list at least one client" in err and "[server]" in err
    assert "\n" not in err


def test_energy_flags_without_power_figures_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = "\n".join(line for line in FLEET.splitlines() if not line.startswith("power"))
    path = _write(tmp_path, plain)
    assert main(["optimize", str(path), "--constants", "1,1,0.5,2", "--energy-budget", "100"]) == 2
    assert "need power figures" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value", "rule"),
    [
        ("--energy-budget", "0", "--energy-budget must be a finite number of joules > 0, got 0.0"),
        (
            "--energy-budget",
            "-1",
            "--energy-budget must be a finite number of joules > 0, got -1.0",
        ),
        (
            "--energy-budget",
            "inf",
            "argument --energy-budget: must be a finite number, got 'inf'",
        ),
        ("--energy-weight", "-1", "--energy-weight must be a finite number >= 0, got -1.0"),
        ("--energy-weight", "nan", "argument --energy-weight: must be a finite number, got 'nan'"),
    ],
)
def test_energy_flags_are_checked_once_by_their_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, rule: str
) -> None:
    path = _write(tmp_path, FLEET)
    assert exit_code(["optimize", str(path), "--constants", "1,1,0.5,2", flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert rule in err
    assert "\n" not in err and "energy_budget" not in err


def test_optimize_footnote_gives_asyncsgd_throughput_with_links(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    no_server = FLEET.split("[server]")[0] + "[[clients]]" + FLEET.split("[[clients]]", 1)[1]
    no_server = no_server.replace('power = { busy = "30 W", idle = "3 W" }\n', "")
    path = _write(tmp_path, no_server)
    assert main(["optimize", str(path), "--constants", "1,1,0.5,2"]) == 0
    out = capsys.readouterr().out
    assert "throughput sum_i 1 / (Z_i + 1 / mu_i)" in out
    # the AsyncSGD row's throughput is the cycles' 1/(0.75 + 1) + 1/(0 + 1/4) = 4.5714
    row = next(line for line in out.splitlines() if line.strip().startswith("AsyncSGD, C=n"))
    assert float(row.split()[4]) == pytest.approx(1 / 1.75 + 4.0, rel=1e-4)


def test_simulate_runs_return_to_sender_with_a_server_station_without_a_theory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # simulate refused it (exit 2) with "no closed form ... use `raysync simulate`", though
    # the simulator is the reference there (docs/network.md).
    text = FLEET.replace('kind = "uniform"', 'kind = "return_to_sender"').replace(
        "concurrency = 4", "concurrency = 2"
    )
    path = _write(tmp_path, text)
    assert main(["simulate", str(path), "--queue-only", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "theory: none here, routing 'return_to_sender' with a [server] update_time" in out
    assert "nan" not in out.lower() and "theory: -" in out
    assert main(["simulate", str(path), "--queue-only", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    theory = payload["theory"]
    assert theory["model"] is None and "no closed form" in theory["unavailable"]
    assert payload["throughput"] > 0
    saved = json.loads((tmp_path / "o" / "theory.json").read_text())
    assert saved["unavailable"] == payload["theory"]["unavailable"]
