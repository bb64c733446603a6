"""File-system errors: one line naming the path, exit 2, for every command and path option."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import pytest

from raysync._validation import (
    check_input_dir,
    check_output_dir,
    check_output_file,
    read_text_file,
)
from raysync.cli import main
from raysync.exceptions import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny.toml"


def _one_error_line(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err
    lines = err.rstrip("\n").split("\n")
    assert len(lines) == 1, err
    assert lines[0].startswith(f"raysync {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def adir(tmp_path: Path) -> Path:
    path = tmp_path / "adir.toml"
    path.mkdir()
    return path


@pytest.fixture
def afile(tmp_path: Path) -> Path:
    path = tmp_path / "afile"
    path.write_text("x")
    return path


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", "{}"],
        ["analyze", "{}"],
        ["simulate", "{}", "--queue-only"],
        ["optimize", "{}", "--constants", "1,1,1,1", "--budget", "5"],
        ["run", "{}"],
    ],
)
@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("directory", "is a directory, not a file"),
        ("missing", "does not exist"),
        ("non-utf8", "is not UTF-8 text (byte 0xff at offset 4)"),
        ("bad-toml", "is not valid TOML"),
        ("device", "is not a regular file"),
    ],
)
def test_every_command_names_a_bad_config_file(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    kind: str,
    message: str,
) -> None:
    path = tmp_path / "c.toml"
    if kind == "directory":
        path.mkdir()
    elif kind == "non-utf8":
        path.write_bytes(b"x = \xff\n")
    elif kind == "bad-toml":
        path.write_text("concurrency = [\n")
    elif kind == "device":
        path = Path(os.devnull)
    with mock.patch("raysync.runtime.run", side_effect=AssertionError("Ray started")):
        assert main([str(path) if a == "{}" else a for a in argv]) == 2
    line = _one_error_line(capsys, argv[0])
    assert repr(str(path)) in line and message in line


def test_unreadable_config_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the tests may run as root, which reads anything: make open() refuse
    path = tmp_path / "secret.toml"
    path.write_text("concurrency = 1\n")
    denied = PermissionError(13, "Permission denied", str(path))
    with mock.patch("builtins.open", side_effect=denied):
        assert main(["validate", str(path)]) == 2
    line = _one_error_line(capsys, "validate")
    assert f"config file {str(path)!r} cannot be read: permission denied" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_config_by_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "secret.toml"
    path.write_text("concurrency = 1\n")
    path.chmod(0)
    assert main(["validate", str(path)]) == 2
    assert "cannot be read: permission denied" in _one_error_line(capsys, "validate")


#: What each command's work is: a refusal must come before it starts.
_WORK = {
    "simulate": "raysync.simulation.simulate",
    "optimize": "raysync.objectives.optimize_joint",
    "run": "raysync.runtime.run",
    "tune": "tuning.cli.run_study",
}


def _refused_before_the_work(argv: list[str]) -> None:
    with mock.patch(_WORK[argv[0]], side_effect=AssertionError("the work started")):
        assert main(argv) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["simulate", "{T}", "--queue-only", "--out", "{F}"], "is an existing file"),
        (["simulate", "{T}", "--queue-only", "--out", "{F}/sub"], "is a file, not a directory"),
        (["optimize", "{T}", "--constants", "1,1,1,1", "--budget", "5", "--write-config",
          "{D}"], "is a directory, not a file"),
        (["optimize", "{T}", "--constants", "1,1,1,1", "--budget", "5", "--write-config",
          "{F}/x.toml"], "is a file, not a directory"),
        (["run", "{T}", "--logdir", "{F}"], "is an existing file"),
        (["run", "{T}", "--resume", "{F}"], "is a file, not a directory"),
        (["run", "{T}", "--resume", "{D}/missing"], "does not exist"),
    ],
)  # fmt: skip
def test_every_path_option_is_checked_before_the_work(
    adir: Path,
    afile: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    names = {"{T}": str(EXAMPLE), "{F}": str(afile), "{D}": str(adir)}
    filled = [a for a in argv]
    for key, value in names.items():
        filled = [a.replace(key, value) for a in filled]
    _refused_before_the_work(filled)
    assert message in _one_error_line(capsys, argv[0])


def test_write_config_creates_a_missing_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "new" / "sub" / "best.toml"
    argv = ["optimize", str(EXAMPLE), "--constants", "1,1,1,1", "--budget", "5"]
    assert main([*argv, "--max-concurrency", "6", "--write-config", str(out)]) == 0
    assert out.is_file()
    assert main(["validate", str(out)]) == 0


def test_os_errors_escaping_a_command_are_one_line_with_the_path(
    capsys: pytest.CaptureFixture[str],
) -> None:
    error = IsADirectoryError(21, "Is a directory", "/some/where")
    with mock.patch("raysync._cli.validate._handle", side_effect=error):
        assert main(["validate", "x.toml"]) == 2
    assert _one_error_line(capsys, "validate").endswith("'/some/where': is a directory")
    with mock.patch("raysync._cli.validate._handle", side_effect=MemoryError()):
        assert main(["validate", "x.toml"]) == 2
    assert "out of memory" in _one_error_line(capsys, "validate")


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["analyze", "--concurrency=abc"])
    assert info.value.code == 2
    line = _one_error_line(capsys, "analyze")
    assert "invalid int value: 'abc'" in line and "--help" in line
    with pytest.raises(SystemExit):
        main(["analyze", "--max-rows=--"])  # argparse would turn "--" into []
    assert "invalid int value: '--'" in _one_error_line(capsys, "analyze")


def test_path_helpers(tmp_path: Path, afile: Path, adir: Path) -> None:
    assert read_text_file(afile, "file", max_bytes=10) == "x"
    with pytest.raises(ConfigError, match="is 1 bytes, more than the 0 allowed"):
        read_text_file(afile, "file", max_bytes=0)
    with pytest.raises(ConfigError, match="cannot be read"):
        read_text_file(str(afile) + "\x00", "file", max_bytes=10)
    assert check_output_dir(tmp_path / "a" / "b", "--out") == tmp_path / "a" / "b"
    assert check_output_dir(adir, "--out") == adir
    with pytest.raises(ConfigError, match="must be a directory path"):
        check_output_dir("", "--out")
    assert check_output_file(tmp_path / "new" / "x.toml", "--w").name == "x.toml"
    with pytest.raises(ConfigError, match="is a directory"):
        check_output_file(adir, "--w")
    # A new folder's name with a slash: Path() would drop it and write a file of that name.
    for text in (f"{tmp_path}/new/", f"{tmp_path}/new/sub/"):
        with pytest.raises(ConfigError, match=r"--w '.*/' ends with a path separator"):
            check_output_file(text, "--w")
    assert not (tmp_path / "new").exists()
    assert check_input_dir(adir, "--resume") == adir
    with pytest.raises(ConfigError, match="is a file"):
        check_input_dir(afile, "--resume")


def test_config_with_a_byte_order_mark_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Windows editors save "UTF-8 with BOM"; the mark is not TOML and would fail line 1
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + EXAMPLE.read_bytes())
    assert read_text_file(path, "file", max_bytes=10**6) == EXAMPLE.read_text()
    assert main(["validate", str(path)]) == 0
    assert "valid" in capsys.readouterr().out
    # a bad byte after the mark is still reported at its offset in the file
    path.write_bytes(b"\xef\xbb\xbfx = \xff\n")
    with pytest.raises(ConfigError, match=r"byte 0xff at offset 7"):
        read_text_file(path, "file", max_bytes=100)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize(
    "argv",
    [
        ["tune", "{T}", "--objective", "bound", "--constants", "1,1,1,1", "--trials", "2",
         "--out", "{D}/t", "--write-config", "/proc/raysync-w.toml"],
        ["optimize", "{T}", "--constants", "1,1,1,1", "--write-config", "/proc/raysync-o.toml"],
        ["simulate", "{T}", "--out", "/proc/raysync-s"],
    ],
)  # fmt: skip
def test_a_folder_that_takes_no_new_files_is_refused_before_the_work(
    adir: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    # /proc refuses new files even to root, whom access() allows everything: tune ran its
    # whole study before --write-config failed.
    filled = [a.replace("{T}", str(EXAMPLE)).replace("{D}", str(adir)) for a in argv]
    _refused_before_the_work(filled)
    assert "cannot" in (line := _one_error_line(capsys, argv[0])) and "'/proc'" in line
    assert list(adir.iterdir()) == []


def test_checking_a_folder_leaves_nothing_in_it(adir: Path, tmp_path: Path) -> None:
    check_output_dir(adir, "--out")
    check_output_file(adir / "x.toml", "--w")
    check_output_file(tmp_path / "new" / "x.toml", "--w")  # probes tmp_path, creates nothing
    assert list(adir.iterdir()) == [] and not (tmp_path / "new").exists()
