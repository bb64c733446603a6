from __future__ import annotations

import json
from pathlib import Path

import pytest

from raysync.cli import main

from .._configs import WORKED_EXAMPLE_CLIENTS, worked_example, write_config

ARGS = ["analyze", "--mu", "1,2,4,0.5", "--p", "0.4,0.3,0.2,0.1", "--concurrency", "6"]
CONFIG = worked_example()


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write_config(tmp_path, CONFIG, "fleet.toml")


def test_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(ARGS) == 0
    out = capsys.readouterr().out
    assert "n=4 clients, concurrency C=6, method=mva" in out
    for column in ("client", "mu", "rho", "util", "Q_i", "T_i", "E[D_i]"):
        assert column in out
    assert "Lambda = 2.45056" in out
    assert "mean staleness sum_i p_i E[D_i] = 5" in out
    lines = [line.split() for line in out.splitlines()]
    rows = [r for r in lines if r and r[0] in {"0", "1", "2", "3"}]
    assert [r[-1] for r in rows] == ["8.6976", "1.8008", "0.6792", "8.4488"]


def test_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*ARGS, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["throughput"] == pytest.approx(2.45056, abs=5e-6)
    assert data["mean_staleness"] == pytest.approx(5.0)
    assert [round(d, 3) for d in data["mean_relative_delay"]] == [8.698, 1.801, 0.679, 8.449]
    assert data["network"]["concurrency"] == 6 and data["method"] == "mva"


@pytest.mark.parametrize("method", ["buzen", "bruteforce"])
def test_methods_agree(method: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*ARGS, "--json"]) == 0
    reference = json.loads(capsys.readouterr().out)
    assert main([*ARGS, "--json", "--method", method]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["method"] == method
    assert data["throughput"] == pytest.approx(reference["throughput"], rel=1e-9)
    assert data["mean_relative_delay"] == pytest.approx(reference["mean_relative_delay"], rel=1e-9)


def test_config_file(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(config_file), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["throughput"] == pytest.approx(2.45056, abs=5e-6)
    assert data["network"]["mu"] == [1.0, 2.0, 4.0, 0.5]


def test_flags_override_config(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(config_file), "--concurrency", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["concurrency"] == 1 and data["mean_staleness"] == 0.0


def test_non_exponential_config_prints_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "det.toml"
    path.write_text(
        CONFIG.replace(
            '{ kind = "exponential", rate = 1.0 }', '{ kind = "deterministic", mean = 1.0 }'
        )
    )
    assert main(["analyze", str(path)]) == 0
    captured = capsys.readouterr()
    assert "approximation" in captured.err and "clients 0" in captured.err
    assert "Lambda = 2.45056" in captured.out


def test_uniform_routing_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "--mu", "1,1,1", "-C", "4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["network"]["p"] == pytest.approx([1 / 3] * 3)
    assert data["mean_relative_delay"] == pytest.approx([3.0, 3.0, 3.0])


def test_extensions_and_curve(capsys: pytest.CaptureFixture[str]) -> None:
    args = [*ARGS, "--latency", "0.2", "--client-latency", "0,0.1,0.2,0.3", "--server-rate", "5"]
    assert main([*args, "--curve"]) == 0
    out = capsys.readouterr().out
    assert "transit" in out and "server: utilisation" in out
    assert "Lambda(C)" in out
    assert main([*args, "--json", "--curve"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["throughput_curve"]) == 6
    assert data["server_utilization"] == pytest.approx(data["throughput"] / 5)
    assert data["mean_staleness"] == pytest.approx(5.0)


def test_max_rows(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "--mu", ",".join(["1"] * 30), "-C", "5", "--max-rows", "3"]) == 0
    assert "27 more clients" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--mu", "1,2", "--p", "0.5,0.4", "-C", "3"],
            "routing p must sum to 1, got sum=0.9 for 2 clients",
        ),
        (["--mu", "1,-2", "-C", "3"], "mu[1] must be > 0, got -2.0"),
        (["--mu", "1,2", "--p", "1", "-C", "3"], "p must have one entry per client"),
        (["--mu", "1,x", "-C", "3"], "--mu must be a comma-separated list of numbers"),
        # an empty entry would shift later values onto the wrong clients if dropped
        (["--mu=1,,2", "-C", "3"], "--mu has an empty entry at position 2"),
        (["--mu", "1,2", "--p", "0.5,0.5,", "-C", "3"], "--p has an empty entry at position 3"),
        (["--mu", "1,2", "-C", "3", "--max-rows", "-1"], "--max-rows must be >= 1"),
        (["--mu", "1,2", "-C", "0"], "concurrency must be an integer >= 1, got 0"),
        (["--mu", "1,2"], "--concurrency is required"),
        (["-C", "3"], "--mu is required"),
        (["--mu", "1,2", "-C", "3", "--server-rate", "0"], "server_rate must be > 0"),
        (
            [
                "--mu",
                "1",
                "-C",
                "400",
                "--method",
                "bruteforce",
                "--latency",
                "1",
                "--client-latency",
                "1",
            ],
            "use method 'mva' or 'buzen' (method= in Python, --method on the command line)",
        ),
    ],
)
def test_bad_input_one_line_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["analyze", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("raysync analyze: error:")
    assert message in err


def test_missing_config_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


_LATE = WORKED_EXAMPLE_CLIENTS.replace("rate = 0.5 }", "rate = 0.5 }\njoin_time = 5.0")
_LOGNORMAL = WORKED_EXAMPLE_CLIENTS.replace(
    '{ kind = "exponential", rate = 2.0 }', '{ kind = "lognormal", mean = 0.5, cv = 2.0 }'
)


@pytest.mark.parametrize(
    ("text", "notes"),
    [
        (CONFIG, []),
        # links are infinite-server stations: any law keeps the product form
        (
            CONFIG.replace(
                'rate = 4.0 }', 'rate = 4.0 }\ndownlink = { kind = "deterministic", mean = 0.1 }'
            ),
            [],
        ),
        (CONFIG.replace(WORKED_EXAMPLE_CLIENTS, _LOGNORMAL),
         ["clients 1 have non-exponential service times"]),
        (worked_example('[server]\nupdate_time = { kind = "lognormal", mean = 0.02, cv = 2.0 }'),
         ["the server's update_time is lognormal, not exponential"]),
        (worked_example('[server]\nupdate_time = { kind = "exponential", mean = 0.02 }'), []),
        (CONFIG.replace(WORKED_EXAMPLE_CLIENTS, _LATE),
         ["clients 3 join or leave during the run: this analysis describes the whole fleet"]),
        (
            CONFIG.replace('kind = "fixed"\np = [0.4, 0.3, 0.2, 0.1]', 'kind = "adaptive"'),
            ["adaptive routing changes p during the run"],
        ),
    ],
)  # fmt: skip
def test_notes_say_when_the_analysis_is_an_approximation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, notes: list[str]
) -> None:
    """What `simulate` calls approximate, `analyze` says too (one stderr note each)."""
    assert main(["analyze", str(write_config(tmp_path, text))]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("note:")]
    assert len(lines) == len(notes), err
    for note in notes:
        assert note in err
