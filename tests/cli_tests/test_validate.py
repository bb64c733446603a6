from __future__ import annotations

import json
from pathlib import Path

import pytest

from raysync.cli import main
from raysync.config import load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny.toml"


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "validate" in capsys.readouterr().out


def test_validate_prints_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and "concurrency: 6" in out
    assert "0.4000" in out


def test_validate_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLE), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["concurrency"] == 6 and len(data["clients"]) == 4


def test_bad_config_gives_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace("concurrency = 6", "concurrency = 0"))
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "concurrency must be an integer >= 1, got 0" in err


def test_missing_config_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_client_names_are_shown_when_the_config_gives_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "named.toml"
    path.write_text("""
concurrency = 3
[[clients]]
count = 2
name = "fast"
service_time = { kind = "exponential", rate = 4.0 }
[[clients]]
service_time = { kind = "exponential", rate = 1.0 }
[routing]
kind = "uniform"
[algorithm]
name = "generalized_asyncsgd"
""")
    assert main(["validate", str(path)]) == 0
    rows = capsys.readouterr().out.splitlines()
    head = next(k for k, line in enumerate(rows) if line.split()[:2] == ["client", "name"])
    assert [line.split()[:3] for line in rows[head + 1:head + 4]] == [
        ["0", "fast", "exponential"], ["1", "fast", "exponential"], ["2", "-", "exponential"]]


def test_directory_data_is_read_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(80, 4, 4), dtype=np.uint8)
    y = np.arange(80) % 4
    np.savez(tmp_path / "mine.npz", x_train=x[:60], y_train=y[:60], x_test=x[60:],
             y_test=y[60:])
    text = EXAMPLE.read_text().replace(
        'dataset = "digits"', f'dataset = "directory"\npath = "{tmp_path / "mine.npz"}"'
    )
    good = tmp_path / "good.toml"
    good.write_text(text)
    assert main(["validate", str(good)]) == 0
    # 4x4 images, 4 classes: logistic regression has 16 * 4 + 4 parameters.
    assert "workload: 68 parameters" in capsys.readouterr().out
    missing = tmp_path / "missing.toml"
    missing.write_text(text.replace("mine.npz", "gone.npz"))
    assert main(["validate", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "gone.npz' does not exist" in err
    # --no-workload only parses the config: the files may live on the cluster only.
    assert main(["validate", str(missing), "--no-workload"]) == 0


@pytest.mark.parametrize("flags", [["-v"], ["-vv"], ["--verbose", "-v"]])
def test_verbose_after_the_command_is_the_global_flag(
    flags: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    levels: list[int] = []
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: levels.append(kw["level"]))
    assert main(["validate", str(EXAMPLE), *flags]) == 0
    assert levels == [logging.WARNING - 10 * min(2, sum(
        1 if f == "--verbose" else len(f) - 1 for f in flags))]
    assert "valid" in capsys.readouterr().out


def test_other_unknown_flags_after_the_command_are_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["validate", str(EXAMPLE), "-v", "-x"])
    assert exc.value.code == 2
    assert "unrecognized arguments: -x" in capsys.readouterr().err


def _with_run_line(line: str) -> str:
    text = EXAMPLE.read_text()
    assert text.count("[run]\n") == 1
    return text.replace("[run]\n", f"[run]\n{line}\n")


def test_a_checkpoint_dir_that_is_a_file_is_refused_as_run_refuses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `run` refused it before its Ray start-up while `validate` called the config valid.
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    path = tmp_path / "ck.toml"
    path.write_text(_with_run_line(f'checkpoint_dir = "{taken}"'))
    assert main(["validate", str(path), "--no-workload"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(
        "raysync validate: error: `raysync run` would refuse it: run.checkpoint_dir "
        f"{str(taken)!r} cannot be used as a directory"
    ), err
    assert "existing file" in err
    path.write_text(_with_run_line(f'checkpoint_dir = "{tmp_path / "ck"}"'))
    assert main(["validate", str(path)]) == 0
    assert not (tmp_path / "ck").exists()  # checked, not created


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        ([], "  workload: not built (built-in dataset and model; --workload loads the data"),
        (["--no-workload"], "  workload: not built (--no-workload)"),
        (["--workload"], "  workload: 650 parameters"),
    ],
)
def test_validate_says_whether_it_built_the_workload(
    flags: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(EXAMPLE), *flags]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [row for row in out if row.startswith("  workload:")][0].startswith(line)


@pytest.mark.parametrize(
    ("edit", "command"),
    [
        # beyond the simulator's completions (and so run's, which shares the limit)
        (("num_updates = 400", "num_updates = 1000000000000000"), "simulate"),
        # 10**10 task records: beyond memory
        (("concurrency = 6", "concurrency = 10000000000"), "simulate"),
        # one evaluation every 1e-300 s of a 10 s budget
        (("eval_every_updates = 100", "eval_every_seconds = 1e-300\ntime_budget = 10.0"),
         "simulate"),
        # the simulator ignores the wall clock; run cannot honour these
        (("num_updates = 400", "num_updates = 400\ntime_scale = 0\ntask_timeout = 1e-7"),
         "run"),
        (("num_updates = 400", "num_updates = 400\ntime_budget = 1e308"), "run"),
        # one completion, dropped as the warm-up: refused after the run before
        (("num_updates = 400", "num_updates = 1"), "simulate"),
    ],
    ids=["updates", "concurrency", "evaluations", "task_timeout", "wall_budget", "one_update"],
)
def test_validate_refuses_what_simulate_or_run_would_refuse_with_their_words(
    edit: tuple[str, str], command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # validate called these "valid" and the command then refused them. The command's own
    # line is the reference: the same rule, value and words, before anything starts.
    text = EXAMPLE.read_text()
    assert edit[0] in text
    path = tmp_path / "c.toml"
    path.write_text(text.replace(edit[0], edit[1]))
    assert main([command, str(path), "--no-progress"]) == 2
    own = capsys.readouterr().err.strip().splitlines()
    assert len(own) == 1 and own[0].startswith(f"raysync {command}: error: "), own
    reason = own[0].removeprefix(f"raysync {command}: error: ")
    for flags in ([], ["--no-workload"], ["--json"]):
        assert main(["validate", str(path), *flags]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.strip().splitlines() == [
            f"raysync validate: error: `raysync {command}` would refuse it: {reason}"
        ]


def test_a_queue_only_config_does_not_need_its_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # simulate and run never build the workload of a queue-only config: validate refused
    # an unimportable data factory there that both commands accept.
    text = EXAMPLE.read_text().replace('dataset = "digits"', 'factory = "no_such_mod_xyz:make"')
    path = tmp_path / "q.toml"
    path.write_text(text.replace("[run]\n", "[run]\ntrain = false\n"))
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "  workload: not built (queue-only: run.train = false; --workload loads" in out
    assert main(["simulate", str(path), "--no-progress"]) == 0
    capsys.readouterr()
    # training needs it, and --workload asks for it
    for argv in (["--workload"], []):
        if not argv:
            path.write_text(text)
        assert main(["validate", str(path), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "no_such_mod_xyz:make' cannot be imported" in err[0], err


def test_a_time_budget_shorter_than_every_service_is_refused_by_validate_simulate_and_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every task takes 5 s and the budget is 1 s: simulate refused only after simulating,
    # run (with emulation, a task lasts at least its service time) and validate not at all.
    import re

    text = re.sub(r'kind = "exponential", rate = [0-9.]+', 'kind = "deterministic", mean = 5.0',
                  EXAMPLE.read_text())
    text = text.replace("num_updates = 400", "time_budget = 1.0")
    path = tmp_path / "d.toml"
    path.write_text(text)
    reason = ("run.time_budget (--time-budget) = 1 s ends before any task can be completed: "
              "the earliest a client can finish one is 5 s (clients[0], deterministic service "
              "time, joining at 0 s), so there would be nothing to measure; make "
              "run.time_budget longer than 5 s")
    for command in ("simulate", "run"):
        assert main([command, str(path), "--no-progress"]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            f"raysync {command}: error: {reason}"]
    assert main(["validate", str(path)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"raysync validate: error: `raysync simulate` would refuse it: {reason}"]
    # without emulation a task lasts its compute time: run does not refuse it
    path.write_text(text.replace("time_budget = 1.0", "time_budget = 1.0\ntime_scale = 0"))
    from raysync.runtime import check_run_config

    check_run_config(load_config(path))


def test_power_figures_whose_energy_overflows_are_refused_as_analyze_refuses_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # validate called this "valid" while analyze refused it: 1e60 W over a throughput of
    # about 2e-250 updates per second is above float64's 1.8e308 J per update.
    head = "seed = 0\nconcurrency = 2\n[run]\nnum_updates = 100\ntrain = false\ntime_scale = 0\n"

    def fleet(slow_busy: str | None) -> str:
        text = head
        for rate, busy in ((1e-250, slow_busy), (1.0, "1 W")):
            text += f'[[clients]]\nservice_time = {{ kind = "exponential", rate = {rate:g} }}\n'
            if slow_busy is not None:
                text += f'power = {{ busy = "{busy}", idle = "1 W" }}\n'
        return text

    path = tmp_path / "e.toml"
    path.write_text(fleet("1e60 W"))
    assert main(["analyze", str(path)]) == 2
    own = capsys.readouterr().err.strip().splitlines()
    assert len(own) == 1 and "overflows float64 (above 1.8e308 J)" in own[0], own
    reason = own[0].removeprefix("raysync analyze: error: ")
    assert main(["validate", str(path)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"raysync validate: error: `raysync analyze` would refuse it: {reason}"]
    # figures whose energy is finite are valid, and so is the same fleet without power
    path.write_text(fleet("1e50 W"))
    assert main(["validate", str(path)]) == 0
    assert main(["analyze", str(path)]) == 0
    path.write_text(fleet(None))
    assert main(["validate", str(path)]) == 0


def test_model_versions_beyond_memory_are_refused_by_validate_as_simulate_and_run_refuse_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # validate called the demo with concurrency = 10**7 "valid"; simulate refused it once it
    # had built the workload (a version's size is the model's). Here the memory allowed is
    # 1 MB: the tasks' records fit (1000 x 160 B), min(C, num_updates) + 1 = 401 versions of
    # the 650-parameter logreg (1,042,600 bytes) do not; 301 versions (782,600 bytes) do.
    from raysync.simulation import engine

    monkeypatch.setattr(engine, "_memory_limit", lambda: 1_000_000)
    text = EXAMPLE.read_text().replace("concurrency = 6", "concurrency = 1000")
    path = tmp_path / "v.toml"
    path.write_text(text)
    reasons = {}
    for command in ("simulate", "run"):
        assert main([command, str(path), "--no-progress"]) == 2
        own = capsys.readouterr().err.strip().splitlines()
        assert len(own) == 1 and own[0].startswith(f"raysync {command}: error: "), own
        reasons[command] = own[0].removeprefix(f"raysync {command}: error: ")
    assert reasons["simulate"].startswith(
        "concurrency = 1,000 keeps up to 401 model versions of 2,600 bytes alive in the "
        "simulator (0.000971 GiB)"), reasons
    assert reasons["run"] == reasons["simulate"].replace("the simulator", "the server actor")
    for flags in ([], ["--no-workload"], ["--workload"], ["--json"]):
        assert main(["validate", str(path), *flags]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.strip().splitlines() == [
            f"raysync validate: error: `raysync simulate` would refuse it: {reasons['simulate']}"
        ]
    # a queue-only run carries no model: its versions are not checked, --workload or not
    path.write_text(text.replace("[run]\n", "[run]\ntrain = false\n"))
    for argv in (["validate", str(path), "--workload"], ["validate", str(path)],
                 ["simulate", str(path), "--no-progress"]):
        assert main(argv) == 0, capsys.readouterr().err
    path.write_text(text.replace("num_updates = 400", "num_updates = 300"))
    for argv in (["validate", str(path)], ["simulate", str(path), "--no-progress"]):
        assert main(argv) == 0, capsys.readouterr().err
