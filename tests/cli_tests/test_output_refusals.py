"""Outputs written all or none, refusals before any run, and flags that were ignored.

Each case was found by a bad-input sweep (2026-12-04) of validate/analyze/simulate/optimize.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from raysync.cli import main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny.toml"
CONSTANTS = "1,1,1,1"


def _one_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err.rstrip("\n").split("\n")
    assert len(err) == 1 and err[0].startswith(f"raysync {command}: error: "), err
    return err[0]


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("blocked", ["result.json", "arrays.npz", "theory.json"])
def test_simulate_out_with_an_entry_in_the_way_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], blocked: str
) -> None:
    # was: result.json (and arrays.npz) written, then "is a directory" for the next file
    out = tmp_path / "out"
    (out / blocked).mkdir(parents=True)
    before = _listing(tmp_path)
    assert main(["simulate", str(EXAMPLE), "--queue-only", "--num-updates", "50",
                 "--no-progress", "--out", str(out)]) == 2  # fmt: skip
    line = _one_error(capsys, "simulate")
    assert f"--out {str(out)!r} holds {blocked!r}, which is not a regular file" in line
    assert _listing(tmp_path) == before


def test_simulate_out_is_written_all_or_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from raysync.simulation.result import RunResult

    argv = ["simulate", str(EXAMPLE), "--queue-only", "--num-updates", "50", "--no-progress"]
    out = tmp_path / "out"
    real_save = RunResult.save

    def full_disk(self: RunResult, directory: str | Path) -> Path:
        real_save(self, directory)  # result.json and arrays.npz written, then the disk fills
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(RunResult, "save", full_disk)
    assert main([*argv, "--out", str(out)]) == 2
    line = _one_error(capsys, "simulate")
    assert f"--out {str(out)!r} cannot be written: " in line and "no space left" in line
    assert _listing(tmp_path) == ["out"]  # no file of the run, no staging folder left
    monkeypatch.setattr(RunResult, "save", real_save)
    assert main([*argv, "--out", str(out)]) == 0
    assert _listing(tmp_path) == ["out", "out/arrays.npz", "out/result.json", "out/theory.json"]
    assert RunResult.load(out).num_updates == 50
    assert json.loads((out / "theory.json").read_text())["model"] == "closed_jackson"


def test_simulate_out_as_a_broken_symlink_names_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # was: "'...': file exists", after the run
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nowhere")
    assert main(["simulate", str(EXAMPLE), "--queue-only", "--num-updates", "50",
                 "--no-progress", "--out", str(link)]) == 2  # fmt: skip
    assert f"--out {str(link)!r} is a broken symbolic link" in _one_error(capsys, "simulate")


@pytest.mark.parametrize(("flags", "message"), [
    # refused before the run since the count is known up front
    (["--num-updates", "1"], "run.num_updates = 1 (x B = 1) is 1 task completion(s), all "
                             "dropped as the warm-up"),
])  # fmt: skip
def test_simulate_with_every_completion_in_the_warm_up_is_refused(
    capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    # was: exit 0 with "throughput: nan updates/s" and every staleness NaN
    assert main(["simulate", str(EXAMPLE), "--queue-only", "--no-progress", *flags]) == 2
    assert message in _one_error(capsys, "simulate")


@pytest.mark.parametrize(("flags", "message"), [
    # was exit 0: "" taken as "no file"; the input config overwritten; a device replaced
    (["--budget", "100", "--write-config", ""], "--write-config must be a file path, got ''"),
    (["--budget", "100", "--write-config", "CONFIG"], "is CONFIG itself"),
    (["--budget", "100", "--write-config", "/dev/null"], "'/dev/null' is not a regular file"),
    # was exit 0: --updates unchecked and ignored under the wall-clock criterion
    (["--budget", "100", "--updates", "-1"], "--updates must be an integer >= 1, got -1"),
    (["--budget", "100", "--updates", "5"], "--updates 5 applies to --criterion per-update"),
    # was exit 0: --budget ignored when --updates (or the config) gave K
    (["--criterion", "per-update", "--budget", "5", "--updates", "3"],
     "--updates 3 and --budget 5 both set K of the per-update criterion: give one"),
])  # fmt: skip
def test_optimize_refuses_outputs_and_flags_it_would_ignore(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(EXAMPLE.read_text())
    flags = [str(config) if f == "CONFIG" else f for f in flags]
    assert main(["optimize", str(config), "--constants", CONSTANTS, *flags]) == 2
    assert message in _one_error(capsys, "optimize")
    assert config.read_text() == EXAMPLE.read_text()
    assert _listing(tmp_path) == ["c.toml"]


def test_optimize_per_update_budget_sets_k_over_the_configs_num_updates(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # tiny.toml sets run.num_updates = 400; --budget was ignored under per-update
    def k_of(*flags: str) -> float:
        assert main(["optimize", str(EXAMPLE), "--constants", CONSTANTS, "--criterion",
                     "per-update", "--json", *flags]) == 0  # fmt: skip
        return float(json.loads(capsys.readouterr().out)["optimum"]["terms"]["num_updates"])

    assert k_of() == 400
    assert k_of("--updates", "300") == 300
    k5, k50 = k_of("--budget", "5"), k_of("--budget", "50")
    assert k5 != 400 and k50 == pytest.approx(10 * k5, rel=0.1)  # K = Lambda_uniform * T


def test_optimize_write_config_failure_names_the_flag_and_leaves_no_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import raysync._files

    target = tmp_path / "sub" / "o.toml"
    real = raysync._files.atomic_write

    def full_disk(path: str | Path, **kwargs: object):  # noqa: ANN202
        with real(path, **kwargs) as handle:  # type: ignore[arg-type]
            handle.write("half a conf")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    # write_config_file (raysync.config) takes atomic_write from raysync._files per call.
    monkeypatch.setattr("raysync._files.atomic_write", full_disk)
    assert main(["optimize", str(EXAMPLE), "--constants", CONSTANTS, "--budget", "100",
                 "--write-config", str(target)]) == 2  # fmt: skip
    line = _one_error(capsys, "optimize")
    assert f"--write-config {str(target)!r} cannot be written: " in line
    assert not target.exists() and list(target.parent.iterdir()) == []


@pytest.mark.parametrize("flag", ["--out", "--report"])
def test_recommend_refuses_to_write_over_its_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str
) -> None:
    # `recommend CONFIG --out CONFIG` replaced the input config and exited 0
    config = tmp_path / "c.toml"
    config.write_text(EXAMPLE.read_text())
    other = "--report" if flag == "--out" else "--out"
    assert main(["recommend", str(config), "--budget", "30", flag, str(config), other,
                 str(tmp_path / "other.toml"), "--quiet"]) == 2  # fmt: skip
    assert f"{flag} {str(config)!r} is CONFIG itself" in _one_error(capsys, "recommend")
    assert config.read_text() == EXAMPLE.read_text()
    assert _listing(tmp_path) == ["c.toml"]


def test_an_output_file_behind_a_symlink_is_written_through_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # atomic writes replaced the link itself with a regular file
    real = tmp_path / "configs" / "opt.toml"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "latest.toml"
    link.symlink_to(real)
    assert main(["optimize", str(EXAMPLE), "--constants", CONSTANTS, "--budget", "100",
                 "--write-config", str(link)]) == 0  # fmt: skip
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert "[routing]" in real.read_text() and 'kind = "fixed"' in real.read_text()
    assert main(["validate", str(link)]) == 0


@pytest.mark.parametrize(("edit", "field", "rule"), [
    # 10**400 was an OverflowError traceback (window), a simulation that never ended
    # (local_steps), a torch stack dump (hidden), all accepted by validate
    (("name = \"generalized_asyncsgd\"", "name = \"fedasync\"\nlocal_steps = BIG"),
     "algorithm.local_steps", "must be an integer <= 1,000,000"),
    (("kind = \"fixed\"\np = [0.4, 0.3, 0.2, 0.1]", "kind = \"adaptive\"\nwindow = BIG"),
     "routing.window", "must be an integer <= 9,007,199,254,740,992 (2**53"),
    (("name = \"logreg\"", "name = \"mlp\"\nhidden = [BIG]"),
     "model.hidden[0]", "must be an integer <= 9,007,199,254,740,992"),
    (("partition = \"iid\"", "partition = \"shards\"\nshards_per_client = BIG"),
     "data.shards_per_client", "must be an integer <= 9,007,199,254,740,992"),
    (("batch_size = 32", "batch_size = BIG"), "algorithm.batch_size", "must be an integer <="),
])  # fmt: skip
def test_integer_fields_beyond_a_float_are_refused_at_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: tuple[str, str], field: str,
    rule: str,
) -> None:
    old, new = edit
    text = EXAMPLE.read_text()
    assert old in text
    config = tmp_path / "c.toml"
    config.write_text(text.replace(old, new.replace("BIG", str(10**400))))
    assert main(["validate", str(config)]) == 2
    assert f"{field} {rule}" in _one_error(capsys, "validate")
    config.write_text(text.replace(old, new.replace("BIG", "2")))
    assert main(["validate", str(config)]) == 0  # the same field at 2 is fine
    capsys.readouterr()


def test_any_seed_is_still_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text(EXAMPLE.read_text().replace("seed = 0", f"seed = {2**70}"))
    assert main(["validate", str(config)]) == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["simulate", "EX", "--queue-only", "--num-updates", "50", "--out", "LINK/sub"],
         "--out 'LINK/sub' cannot be used as a directory: 'LINK' is a broken symbolic link"),
        (["optimize", "EX", "--constants", CONSTANTS, "--budget", "10",
          "--write-config", "LINK/best.toml"],
         "--write-config 'LINK/best.toml' cannot be written: 'LINK' is a broken symbolic link"),
        (["recommend", "EX", "--budget", "10", "--out", "LINK/rec.toml"],
         "--out 'LINK/rec.toml' cannot be written: 'LINK' is a broken symbolic link"),
        (["tune", "EX", "--budget", "10", "--trials", "1", "--out", "LINK/t"],
         "out 'LINK/t' cannot be used as the output directory: 'LINK' is a broken link"),
        (["demo", "EX", "--out", "LINK/d"],
         "--out 'LINK/d' cannot be used as a directory: 'LINK' is a broken symbolic link"),
        (["run", "EX", "--logdir", "LINK/tb"],
         "--logdir 'LINK/tb' cannot be used as a directory: 'LINK' is a broken symbolic link"),
    ],
    ids=["simulate", "optimize", "recommend", "tune", "demo", "run"],
)  # fmt: skip
def test_a_broken_link_along_an_output_path_is_named(
    argv: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # mkdir(parents=True) stopped on the dangling link with a bare "'LINK': file exists"
    from tests.runtime_tests._helpers import block_ray

    block_ray(monkeypatch)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "LINK").symlink_to(tmp_path / "missing")
    before = _listing(tmp_path)
    assert main([str(EXAMPLE) if a == "EX" else a for a in argv]) == 2
    assert message in _one_error(capsys, argv[0])
    assert _listing(tmp_path) == before and not (tmp_path / "missing").exists()
