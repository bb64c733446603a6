"""Command registration: built-ins, the ``raysync.commands`` entry points, broken plugins."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from raysync.cli import BUILTIN_COMMANDS, ENTRY_POINT_GROUP, main, plugin_commands


@dataclass
class FakeEntryPoint:
    name: str
    value: str
    target: Any

    def load(self) -> Any:
        if isinstance(self.target, BaseException):
            raise self.target
        return self.target


def _hello_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("hello", help="say hello")
    parser.add_argument("--times", type=int, default=1)

    def handle(args: argparse.Namespace) -> int:
        if args.times < 1:
            raise ValueError(f"--times must be >= 1, got {args.times}")
        print("hello " * args.times)
        return 0

    parser.set_defaults(func=handle)


def test_installed_entry_points_contribute_tune_and_demo() -> None:
    # pyproject.toml declares them; `pip install -e .` wrote them into the metadata.
    names = {ep.name: ep.value for ep in plugin_commands()}
    assert names.get("tune") == "tuning.cli:add_parser"
    assert names.get("demo") == "tuning.demo:add_parser"
    assert ENTRY_POINT_GROUP == "raysync.commands"


def test_a_plugin_command_runs_and_reports_bad_input_as_exit_2(capsys) -> None:
    plugins = [FakeEntryPoint("hello", "tests:hello", _hello_parser)]
    assert main(["hello", "--times", "2"], plugins=plugins) == 0
    assert capsys.readouterr().out.strip() == "hello hello"
    assert main(["hello", "--times", "0"], plugins=plugins) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["raysync hello: error: --times must be >= 1, got 0"]


def test_broken_or_clashing_plugins_are_skipped_with_a_warning(capsys) -> None:
    plugins = [
        FakeEntryPoint("broken", "nowhere:add_parser", ModuleNotFoundError("No module 'nowhere'")),
        FakeEntryPoint("validate", "tests:hello", _hello_parser),
        FakeEntryPoint("hello", "tests:hello", _hello_parser),
    ]
    assert main(["hello"], plugins=plugins) == 0
    err = capsys.readouterr().err
    assert "command 'broken' skipped: nowhere:add_parser failed to load" in err
    assert "command 'validate' from tests:hello ignored: the name is taken" in err


def test_builtins_need_no_plugins(tmp_path, capsys) -> None:
    assert [name for name, _ in BUILTIN_COMMANDS] == [
        "validate", "analyze", "simulate", "run", "optimize"
    ]
    path = tmp_path / "c.toml"
    path.write_text("concurrency = 2\n[[clients]]\ncount = 2\n")
    assert main(["validate", str(path)], plugins=[]) == 0
    assert "valid" in capsys.readouterr().out
