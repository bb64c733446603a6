"""Fuzzing the inputs: config files and every numeric flag of the CLI commands.

The property, for every generated input: the command ends with exit code 0 and a valid
result, or with exit code 2 and exactly one line on stderr (``raysync <cmd>: error: ...``),
never a traceback, an exception out of :func:`raysync.cli.main`, a NaN or infinity in a
JSON result, or a numpy ``RuntimeWarning`` (an overflow on the way to a number).

Commands run in-process through :func:`raysync.cli.main` (fast). Nothing starts Ray:
``validate``, ``analyze``, ``optimize`` and ``simulate --queue-only`` with tiny run lengths;
``run`` with :func:`raysync.runtime.run` replaced by a stub that stops the command where Ray
would start (so an input that reaches it was accepted by every check before Ray).

Valid-but-huge run lengths (``--num-updates 2147483648``) are legitimate long runs, not
errors; so each ``simulate`` example fuzzes one of ``--num-updates`` / ``--time-budget``
and bounds the run with a small value of the other. Fuzzed integers are small, or far
beyond every size limit, so that an accepted input is also a quick one.

Tiers: the default tier runs a few hundred examples; ``-m slow`` runs
``test_fuzz_slow_tier`` with :data:`SLOW_EXAMPLES` examples. Hypothesis runs derandomised
(the examples are a fixed function of the test), so a failure reproduces exactly.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import io
import json
import math
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raysync.cli import _build_parser, main
from raysync.config import (
    AlgorithmConfig,
    ClientSpec,
    DataConfig,
    ModelConfig,
    RoutingConfig,
    RunConfig,
    RuntimeConfig,
    ServiceTimeSpec,
    SystemConfig,
)

#: Examples of the slow tier (``pytest -m slow tests/test_fuzz.py``), all strategies;
#: ``RAYSYNC_FUZZ_EXAMPLES`` overrides it (e.g. a longer soak).
SLOW_EXAMPLES = int(os.environ.get("RAYSYNC_FUZZ_EXAMPLES", "10000"))

_ERROR_LINE = re.compile(r"^raysync( [a-z]+)?: error: \S")

_SECTIONS: dict[str, type] = {
    "routing": RoutingConfig,
    "algorithm": AlgorithmConfig,
    "data": DataConfig,
    "model": ModelConfig,
    "run": RunConfig,
    "runtime": RuntimeConfig,
}

#: A small valid system: three clients, three service-time kinds, a resource tier.
BASE: dict[str, Any] = {
    "seed": 0,
    "concurrency": 3,
    "routing": {"kind": "fixed", "p": [0.5, 0.3, 0.2]},
    "algorithm": {"name": "generalized_asyncsgd", "lr": 0.05, "batch_size": 8},
    "data": {"dataset": "digits", "partition": "iid"},
    "model": {"name": "logreg"},
    "run": {"num_updates": 40, "eval_every_updates": 20},
    "runtime": {"mode": "auto"},
    "clients": [
        {"service_time": {"kind": "exponential", "rate": 1.0}},
        {"service_time": {"kind": "deterministic", "mean": 0.5}},
        {
            "count": 1,
            "service_time": {"kind": "lognormal", "mean": 1.0, "cv": 0.5},
            "num_cpus": 0.5,
            "resources": {"tier": 1},
        },
    ],
}


# ------------------------------------------------------------------------- running


class _ReachedRay(BaseException):
    """Raised by the stub of ``raysync.runtime.run``: every check before Ray passed."""


_PARSERS: list[argparse.ArgumentParser] = []


def _parser(plugins: Any = None) -> argparse.ArgumentParser:
    # built once: the parser is reusable, and building it (entry points) costs as much
    # as a whole validate
    if not _PARSERS:
        _PARSERS.append(_build_parser(plugins))
    return _PARSERS[0]


def _invoke(argv: list[str]) -> tuple[int | str, str, str]:
    """Run the CLI in-process; return (exit code or 'ray', stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code: int | str
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        warnings.catch_warnings(),
        mock.patch("raysync.cli._build_parser", _parser),
    ):
        warnings.simplefilter("always")  # every warning reaches stderr, every time
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: usage errors (2)
            code = exc.code if isinstance(exc.code, int) else 2
        except _ReachedRay:
            code = "ray"
    return code, out.getvalue(), err.getvalue()


def _no_constant(name: str) -> float:
    raise AssertionError(f"non-finite number {name} in a JSON result")


def _check(argv: list[str], check_ok: Callable[[str], None] | None = None) -> int | str:
    """Run ``argv`` and assert the property; return the exit code."""
    code, out, err = _invoke(argv)
    shown = [a if len(a) < 80 else a[:77] + "..." for a in argv]
    assert "Traceback" not in err, (shown, err)
    assert "RuntimeWarning" not in err, (shown, err)
    assert code in (0, 2, "ray"), (shown, code, err)
    if code == 2:
        lines = err.rstrip("\n").split("\n")
        assert len(lines) == 1, (shown, err)
        assert _ERROR_LINE.match(lines[0]), (shown, err)
    elif code == 0:
        assert out.strip(), shown
        if check_ok is not None:
            check_ok(out)
    return code


def _json(out: str) -> Any:
    return json.loads(out, parse_constant=_no_constant)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _ok_validate(out: str) -> None:
    config = SystemConfig.from_dict(_json(out))  # the printed config is itself valid
    assert config.num_clients >= 1


def _ok_analyze(out: str) -> None:
    data = _json(out)
    assert _finite(data["throughput"]) and data["throughput"] > 0
    assert all(_finite(v) for v in data["mean_relative_delay"])


def _ok_simulate(out: str) -> None:
    data = json.loads(out)  # per-client intervals may be NaN (too few completions)
    assert data["num_updates"] >= 0
    assert _finite(data["theory"]["throughput"]) and data["theory"]["throughput"] > 0


def _ok_optimize(out: str) -> None:
    data = _json(out)
    assert data["optimum"]["concurrency"] >= 1
    assert all(_finite(v) and v > 0 for v in data["optimum"]["p"])


# ------------------------------------------------------------------------- values

_HUGE_INTS = [2**31, 2**63 - 1, 2**63, -(2**63), 10**7, 10**30]

#: Values of any TOML type: small and huge integers, every kind of float (NaN, +-inf,
#: subnormal, 1e308), strings (also non-ASCII and NUL), booleans, arrays, tables.
_SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-3, max_value=60),
    st.sampled_from(_HUGE_INTS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 5e-324, 1e-310, 1e308, 1.5, 1e300, -1e300]),
    st.text(max_size=12),
    st.sampled_from(["false", "true", "5", "1.0", "exponential", "fixed", "", "\x00"]),
)
_VALUES = st.one_of(
    _SCALARS,
    st.lists(_SCALARS, max_size=5),
    st.dictionaries(st.text(min_size=1, max_size=8), _SCALARS, max_size=3),
)

#: A few very long arrays (the fleet, the routing, a trace).
_HUGE_LISTS = st.sampled_from(
    [
        [1.0] * 20_000,
        [1] * 20_000,
        [{"service_time": {"kind": "exponential", "rate": 1.0}}] * 2_000,
        ["x" * 1000] * 200,
    ]
)


def _field_paths() -> list[tuple[Any, ...]]:
    """Every config key the dataclasses declare (so new fields are fuzzed too)."""
    paths: list[tuple[Any, ...]] = [(f.name,) for f in dataclasses.fields(SystemConfig)]
    for section, cls in _SECTIONS.items():
        paths += [(section, f.name) for f in dataclasses.fields(cls)]
    for j in range(3):
        paths.append(("clients", j))
        paths.append(("clients", j, "count"))
        paths += [("clients", j, f.name) for f in dataclasses.fields(ClientSpec)]
        paths += [
            ("clients", j, "service_time", f.name) for f in dataclasses.fields(ServiceTimeSpec)
        ]
    return paths


_PATHS = _field_paths()
_TABLES: list[tuple[Any, ...]] = [()] + [(s,) for s in _SECTIONS] + [
    p for p in _PATHS if p[0] == "clients" and len(p) == 2
] + [("clients", j, "service_time") for j in range(3)]


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    node = doc
    for key in path[:-1]:
        if isinstance(node, dict) and isinstance(key, str):
            node = node.setdefault(key, {})
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            return None
    return node


def _apply(doc: dict[str, Any], op: tuple[str, tuple[Any, ...], Any]) -> None:
    kind, path, value = op
    # A copy: the drawn values (the huge lists above) are module-level objects. Set as is,
    # a later op wrote into them (changing other examples' inputs: hypothesis's replay
    # then reports a flaky failure) or set one inside itself (`clients = L`, then
    # `clients[0] = L`: a cycle that tomli_w recursed into without end).
    value = copy.deepcopy(value)
    if kind == "unknown":
        node = _parent(doc, (*path, "_"))
        if isinstance(node, dict):
            node[value] = 1
        return
    node = _parent(doc, path)
    key = path[-1]
    if isinstance(node, dict) and isinstance(key, str):
        if kind == "delete":
            node.pop(key, None)
        else:
            node[key] = value
    elif isinstance(node, list) and isinstance(key, int) and key < len(node):
        if kind == "delete":
            del node[key]
        else:
            node[key] = value


_SET = st.tuples(st.just("set"), st.sampled_from(_PATHS), _VALUES)
_OPS = st.one_of(
    _SET,
    _SET,
    _SET,
    st.tuples(st.just("delete"), st.sampled_from(_PATHS + _TABLES[1:]), st.none()),
    st.tuples(
        st.just("unknown"),
        st.sampled_from(_TABLES),
        st.sampled_from(["bogus", "nme", "rates", "train ", "é", "count2"]),
    ),
    st.tuples(st.just("set"), st.sampled_from(_PATHS), _HUGE_LISTS),  # one op in six
)


@st.composite
def config_bytes(draw: st.DrawFn) -> bytes:
    """A config file's bytes: the base system mutated, or broken at the byte level."""
    doc = json.loads(json.dumps(BASE))
    for op in draw(st.lists(_OPS, min_size=0, max_size=3)):
        _apply(doc, op)
    try:
        text = tomli_w.dumps(doc)
    except (TypeError, ValueError):  # e.g. an array mixing tables and numbers
        text = "concurrency = 3\n[[clients]]\nservice_time = 5\n"
    raw = text.encode("utf-8")
    damage = draw(st.sampled_from(["none"] * 6 + ["insert", "truncate", "binary"]))
    if damage == "insert":
        at = draw(st.integers(0, len(raw)))
        junk = draw(st.sampled_from([b"\xff", b"\x00", b"\xc3", b"\xed\xa0\x80", b"[", b"="]))
        raw = raw[:at] + junk + raw[at:]
    elif damage == "truncate":
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif damage == "binary":
        raw = draw(st.binary(max_size=64))
    return raw


_CONFIG_COMMANDS: list[tuple[list[str], Callable[[str], None] | None]] = [
    (["validate", "{}"], None),
    (["validate", "{}", "--json"], _ok_validate),
    (["analyze", "{}", "--json"], _ok_analyze),
    (["analyze", "{}", "--curve"], None),
    (
        [
            "simulate", "{}", "--queue-only", "--no-progress", "--json",
            "--num-updates", "30", "--time-budget", "20",
        ],
        _ok_simulate,
    ),
    (
        [
            "optimize", "{}", "--constants", "1,1,1,1", "--budget", "5",
            "--max-concurrency", "6", "--json",
        ],
        _ok_optimize,
    ),
]  # fmt: skip


def _fuzz_config(tmp: Path, raw: bytes, command: int, where: str) -> None:
    argv_template, check_ok = _CONFIG_COMMANDS[command]
    path = tmp / "fuzz.toml"
    if path.is_dir():
        path.rmdir()
    if where == "file":
        path.write_bytes(raw)
    elif where == "directory":
        path.unlink(missing_ok=True)
        path.mkdir()
    else:  # missing
        path.unlink(missing_ok=True)
    argv = [str(path) if a == "{}" else a for a in argv_template]
    _check(argv, check_ok)


# ------------------------------------------------------------------------- flags

#: Text for a numeric flag: integers (small, huge, beyond Python's 4300-digit limit),
#: floats (NaN, inf, subnormal, overflowing), and text that is not a number at all.
_NUMBER_TEXT = st.one_of(
    st.integers(min_value=-5, max_value=60).map(str),
    st.sampled_from([str(v) for v in _HUGE_INTS] + ["1" * 5000]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        ["nan", "-inf", "inf", "1e309", "5e-324", "-0.0", "1e-320", "0x10", "1_0", " 7 ", "",
         "abc", "\u0661\u0662", "1e", "--", "\x00", "1,2", "2.5", "1e300", "-1e308"]
    ),
    st.text(max_size=8),
)  # fmt: skip
_LIST_TEXT = st.one_of(
    st.lists(_NUMBER_TEXT.filter(lambda t: "," not in t), min_size=0, max_size=6).map(
        ",".join
    ),
    st.sampled_from([",".join(["1"] * 100_000), ",", "1,,2", "1e308,1e308", "5e-324,1"]),
)


def _flags(draw: st.DrawFn, flags: dict[str, st.SearchStrategy[str]]) -> list[str]:
    argv: list[str] = []
    for flag, values in flags.items():
        if draw(st.booleans()):
            argv.append(f"{flag}={draw(values)}")
    return argv


@st.composite
def analyze_argv(draw: st.DrawFn, config: str) -> list[str]:
    argv = ["analyze"]
    if draw(st.booleans()):
        argv.append(config)
    else:
        argv += [f"--mu={draw(st.one_of(st.just('1,2,4,0.5'), _LIST_TEXT))}"]
        argv += [f"--concurrency={draw(st.one_of(st.just('6'), _NUMBER_TEXT))}"]
    argv += _flags(
        draw,
        {
            "--p": _LIST_TEXT,
            "--concurrency": _NUMBER_TEXT,
            "--latency": _NUMBER_TEXT,
            "--client-latency": _LIST_TEXT,
            "--server-rate": _NUMBER_TEXT,
            "--max-rows": _NUMBER_TEXT,
            "--method": st.sampled_from(["mva", "buzen", "bruteforce", "nope"]),
        },
    )
    argv += draw(st.sampled_from([[], ["--curve"], ["--json"], ["--json", "--curve"]]))
    return argv


@st.composite
def simulate_argv(draw: st.DrawFn, config: str) -> list[str]:
    argv = ["simulate", config, "--queue-only", "--no-progress", "--json"]
    if draw(st.booleans()):  # fuzz the update count, bound the run by time
        argv += [f"--num-updates={draw(_NUMBER_TEXT)}", "--time-budget=20"]
    else:  # fuzz the time budget, bound the run by updates
        argv += [f"--time-budget={draw(_NUMBER_TEXT)}", "--num-updates=30"]
    argv += _flags(
        draw,
        {"--seed": _NUMBER_TEXT, "--torch-threads": _NUMBER_TEXT, "--max-rows": _NUMBER_TEXT},
    )
    return argv


@st.composite
def optimize_argv(draw: st.DrawFn, config: str) -> list[str]:
    argv = ["optimize", config, "--json"]
    constants = st.one_of(
        st.just("1,1,1,1"),
        st.lists(_NUMBER_TEXT.filter(lambda t: "," not in t), min_size=4, max_size=4).map(
            ",".join
        ),
        _LIST_TEXT,
    )
    argv.append(f"--constants={draw(constants)}")
    argv += [f"--max-concurrency={draw(st.one_of(st.just('6'), _NUMBER_TEXT))}"]
    argv += _flags(
        draw,
        {
            "--budget": _NUMBER_TEXT,
            "--updates": _NUMBER_TEXT,
            "--criterion": st.sampled_from(["per-update", "wall-clock", "x"]),
            "--step": st.sampled_from(["fixed", "optimal", "x"]),
            "--energy-budget": _NUMBER_TEXT,
            "--energy-weight": _NUMBER_TEXT,
        },
    )
    return argv


@st.composite
def run_argv(draw: st.DrawFn, config: str) -> list[str]:
    argv = ["run", config, "--no-progress"]
    argv += _flags(
        draw,
        {
            "--num-updates": _NUMBER_TEXT,
            "--time-budget": _NUMBER_TEXT,
            "--resume": st.sampled_from(["", "missing-dir", config, "\x00"]),
            "--logdir": st.sampled_from(["", config, f"{config}/sub", "\x00"]),
        },
    )
    return argv


_CHECKS: dict[str, Callable[[str], None] | None] = {
    "analyze": None,
    "simulate": _ok_simulate,
    "optimize": _ok_optimize,
    "run": None,
}


def _fuzz_flags(argv: list[str]) -> None:
    check_ok = _CHECKS[argv[0]]
    if argv[0] == "analyze" and "--json" in argv:
        check_ok = _ok_analyze
    code = _check(argv, check_ok)
    if argv[0] == "run":
        assert code in ("ray", 2), (argv, code)


# ------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def tiny_config(fuzz_dir: Path) -> str:
    path = fuzz_dir / "tiny.toml"
    path.write_text(tomli_w.dumps(BASE))
    return str(path)


@pytest.fixture(scope="module")
def no_ray() -> Any:
    import raysync.runtime

    def stub(*_args: Any, **_kwargs: Any) -> Any:
        raise _ReachedRay

    with mock.patch.object(raysync.runtime, "run", stub):
        yield


_FAST = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _flag_strategy(config: str) -> st.SearchStrategy[list[str]]:
    # optimize costs ten times the others per accepted input: drawn half as often
    return st.one_of(
        analyze_argv(config),
        analyze_argv(config),
        simulate_argv(config),
        simulate_argv(config),
        optimize_argv(config),
        run_argv(config),
        run_argv(config),
    )


_CONFIG_CASE = st.tuples(
    config_bytes(),
    st.sampled_from([0, 0, 1, 1, 2, 2, 3, 4, 5]),  # optimize and simulate cost the most
    st.sampled_from(["file"] * 18 + ["directory", "missing"]),
)

# ------------------------------------------------------------------------- tests


def test_base_config_is_valid(tiny_config: str) -> None:
    # the mutations start from a valid system, so a refusal is the mutation's doing
    for argv, check_ok in _CONFIG_COMMANDS:
        assert _check([tiny_config if a == "{}" else a for a in argv], check_ok) == 0


def test_property_rejects_a_traceback() -> None:
    # the harness itself: an exception escaping main() must fail the property
    with mock.patch("raysync._cli.validate.load_config", side_effect=KeyError("boom")):
        with pytest.raises(KeyError):
            _invoke(["validate", "x.toml"])


@settings(_FAST, max_examples=120)
@given(case=_CONFIG_CASE)
def test_fuzz_config_files(fuzz_dir: Path, case: tuple[bytes, int, str]) -> None:
    _fuzz_config(fuzz_dir, *case)


@settings(_FAST, max_examples=120)
@given(data=st.data())
def test_fuzz_cli_numeric_flags(tiny_config: str, no_ray: Any, data: st.DataObject) -> None:
    _fuzz_flags(data.draw(_flag_strategy(tiny_config)))


@settings(_FAST, max_examples=30)
@given(argv=st.lists(st.text(max_size=10), max_size=5))
def test_fuzz_raw_argv(argv: list[str]) -> None:
    _check(argv)


@pytest.mark.slow
@settings(_FAST, max_examples=SLOW_EXAMPLES)
@given(data=st.data())
def test_fuzz_slow_tier(
    fuzz_dir: Path, tiny_config: str, no_ray: Any, data: st.DataObject
) -> None:
    if data.draw(st.booleans(), label="config file"):
        _fuzz_config(fuzz_dir, *data.draw(_CONFIG_CASE))
    else:
        _fuzz_flags(data.draw(_flag_strategy(tiny_config)))
