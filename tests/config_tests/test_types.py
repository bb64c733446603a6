"""Every config field is type-checked on load: one line naming field, expected type, value."""

from __future__ import annotations

import dataclasses
import pickle
import typing
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from raysync.config import (
    MAX_BUFFER_SIZE,
    MAX_CLIENTS,
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
from raysync.exceptions import ConfigError

from .._configs import TWO_CLIENTS, load_text

FLEET = TWO_CLIENTS


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # the four reported inputs (shared/cases: train_false_str, sw_false_str, st5, path5)
        (
            f'concurrency = 2\n[run]\ntrain = "false"\nnum_updates = 200\n{FLEET}',
            "run.train must be a boolean (true or false), got 'false' (a string)",
        ),
        (
            f'concurrency = 2\n[algorithm]\nname = "fedbuff"\nstaleness_weighting = "false"\n'
            f"{FLEET}",
            "algorithm.staleness_weighting must be a boolean (true or false), got 'false' "
            "(a string)",
        ),
        (
            "concurrency = 2\n[[clients]]\nservice_time = 5\n",
            "clients[0].service_time must be a table, got 5 (an integer)",
        ),
        (
            f'concurrency = 2\n[data]\ndataset = "directory"\npath = 5\n{FLEET}',
            "data.path must be a string, got 5 (an integer)",
        ),
        # a table where a path belongs, an array where a string belongs
        (
            f"concurrency = 2\n[run]\ncheckpoint_dir = {{ a = 1 }}\n{FLEET}",
            "run.checkpoint_dir must be a string, got {'a': 1} (a table)",
        ),
        (
            f'concurrency = 2\n[runtime]\nmode = ["pool"]\n{FLEET}',
            "runtime.mode must be a string, got ['pool'] (an array)",
        ),
        # Python's bool is an int: never accepted where a number belongs
        (f"concurrency = true\n{FLEET}", "concurrency must be an integer, got True (a boolean)"),
        (
            f"concurrency = 2\n[algorithm]\nlr = true\n{FLEET}",
            "algorithm.lr must be a number, got True (a boolean)",
        ),
        (
            "concurrency = 2\n[[clients]]\nservice_time = { kind = 'exponential', rate = true }\n",
            "clients[0].service_time.rate must be a number, got True (a boolean)",
        ),
        (
            f"concurrency = 2\n{FLEET}[[clients]]\ncount = true\n",
            "clients[1].count must be an integer >= 1, got True (a boolean)",
        ),
        # strings where numbers belong, floats where integers belong
        (f'concurrency = "6"\n{FLEET}', "concurrency must be an integer, got '6' (a string)"),
        (
            f"concurrency = 2\n[algorithm]\nbatch_size = 32.0\n{FLEET}",
            "algorithm.batch_size must be an integer, got 32.0 (a float)",
        ),
        (
            f'concurrency = 2\n[routing]\nkind = "fixed"\np = "0.5,0.5"\n{FLEET}',
            "routing.p must be an array of numbers, got '0.5,0.5' (a string)",
        ),
        (
            f'concurrency = 2\n[routing]\nkind = "fixed"\np = [0.5, "0.5"]\n{FLEET}',
            "routing.p[1] must be a number, got '0.5' (a string)",
        ),
        (
            f"concurrency = 2\n[model]\nhidden = 64\n{FLEET}",
            "model.hidden must be an array of integers, got 64 (an integer)",
        ),
        (
            f"concurrency = 2\n{FLEET}[[clients]]\nresources = {{ tier = 'x' }}\n",
            "clients[1].resources.tier must be a number, got 'x' (a string)",
        ),
        (
            f"concurrency = 2\n{FLEET}[[clients]]\nname = 5\n",
            "clients[1].name must be a string, got 5 (an integer)",
        ),
        (
            f"concurrency = 2\n{FLEET}"
            "[[clients]]\nservice_time = { kind = 'trace', durations = [1.0, 'a'] }\n",
            "clients[1].service_time.durations[1] must be a number, got 'a' (a string)",
        ),
        (f"concurrency = 2\nrouting = 5\n{FLEET}", "routing must be a table, got 5 (an integer)"),
        ("concurrency = 2\nclients = 5\n", "clients must be an array of [[clients]] tables"),
        ("concurrency = 2\nclients = [5]\n", "clients[0] must be a table, got 5 (an integer)"),
        # non-finite and unrepresentable numbers
        (f"concurrency = 2\n[run]\ntime_budget = nan\n{FLEET}", "run.time_budget must be finite"),
        (
            "concurrency = 2\n[[clients]]\n"
            "service_time = { kind = 'exponential', rate = 5e-324 }\n",
            "clients[0].service_time.rate must be within [1e-300, 1e300]",
        ),
        (
            "concurrency = 2\n[[clients]]\n"
            "service_time = { kind = 'lognormal', mean = 1.0, cv = 1e200 }\n",
            "clients[0].service_time.cv must be <= 1e+100, got 1e+200",
        ),
        *(
            (
                "concurrency = 2\n[[clients]]\n"
                f"service_time = {{ kind = '{kind}', {key.split('[')[0]} = {value} }}\n",
                f"clients[0].service_time.{key} must be within [1e-300, 1e300]",
            )
            for kind, key, value in [
                ("exponential", "rate", "1e308"),  # its reciprocal is subnormal
                ("exponential", "rate", "1e-301"),
                ("exponential", "mean", "1e301"),
                ("deterministic", "mean", "1e-301"),
                ("deterministic", "rate", "1e301"),
                ("lognormal", "mean", "1e301"),
                ("trace", "durations[1]", "[1.0, 1e-310]"),
            ]
        ),
        (
            "concurrency = 2\n[[clients]]\n"
            "service_time = { kind = 'lognormal', mean = 1e250, cv = 1e100 }\n",
            "clients[0].service_time.cv must keep the standard deviation mean * cv <= 1e+300 s",
        ),
        (
            f"concurrency = 2\n[algorithm]\nbuffer_size = {MAX_BUFFER_SIZE + 1}\n{FLEET}",
            f"algorithm.buffer_size must be <= {MAX_BUFFER_SIZE:,}",
        ),
        # missing and unknown keys
        (FLEET, "concurrency is required"),
        ("concurrency = 2\n", "clients is required"),
        (
            "concurrency = 2\n[[clients]]\nservice_time = {}\n",
            "clients[0].service_time.rate (or mean) is required",
        ),
        (
            f"concurrency = 2\n[algorithm]\nstaleness_weigthing = true\n{FLEET}",
            "unknown key 'staleness_weigthing' in [algorithm]; did you mean "
            "'staleness_weighting'?",
        ),
        (
            "concurrency = 2\n[[clients]]\nservice_time = { kind = 'exponential', rte = 1.0 }\n",
            "unknown key 'rte' in [clients[0].service_time]; did you mean 'rate'?",
        ),
        (
            f"concurrency = 2\n{FLEET}[[clients]]\ncount = {MAX_CLIENTS}\n",
            f"clients[1].count must keep the fleet at most {MAX_CLIENTS:,} clients",
        ),
    ],
)
def test_wrong_types_are_refused_in_one_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    line = str(info.value)
    assert "\n" not in line
    assert line.startswith(f"{tmp_path / 'config.toml'}: ")
    assert message in line


# One value of a wrong TOML type for every annotation a config field can have.
_WRONG: dict[str, Any] = {
    "bool": "false",
    "int": True,
    "float": "1.0",
    "str": 5,
    "tuple": 5,
    "Mapping": 5,
    "dataclass": 5,
}


def _wrong_value(hint: Any) -> tuple[Any, str]:
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return _wrong_value(args[0])
    if hint is bool:
        return _WRONG["bool"], "must be a boolean"
    if hint is int:
        return _WRONG["int"], "must be an integer"
    if hint is float:
        return _WRONG["float"], "must be a number"
    if hint is str:
        return _WRONG["str"], "must be a string"
    if origin is tuple:
        return _WRONG["tuple"], "must be an array"
    if dataclasses.is_dataclass(hint):
        return _WRONG["dataclass"], "must be a table"
    return _WRONG["Mapping"], "must be a table"


def _all_fields() -> list[tuple[type, str, Any]]:
    out = []
    for cls in (
        ServiceTimeSpec,
        ClientSpec,
        RoutingConfig,
        AlgorithmConfig,
        DataConfig,
        ModelConfig,
        RunConfig,
        RuntimeConfig,
        SystemConfig,
    ):
        hints = typing.get_type_hints(cls)
        out += [(cls, f.name, hints[f.name]) for f in dataclasses.fields(cls)]
    return out


@pytest.mark.parametrize(
    ("cls", "name", "hint"), _all_fields(), ids=lambda v: getattr(v, "__name__", str(v))
)
def test_every_field_of_every_section_is_type_checked(cls: type, name: str, hint: Any) -> None:
    value, rule = _wrong_value(hint)
    base: dict[str, Any] = {}
    if cls is SystemConfig:
        base = {"clients": (ClientSpec(),), "concurrency": 1}
    base[name] = value
    with pytest.raises(ConfigError) as info:
        cls(**base)
    text = str(info.value)
    assert f"{name} {rule}" in text, text
    assert f"got {value!r}" in text


def test_the_same_checks_guard_python_construction() -> None:
    with pytest.raises(ConfigError, match="algorithm.staleness_weighting must be a boolean"):
        AlgorithmConfig(name="fedbuff", staleness_weighting="false")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="run.train must be a boolean"):
        RunConfig(train=0)  # type: ignore[arg-type]
    # ints are accepted where floats belong, and stored as floats
    spec = ServiceTimeSpec(rate=2)
    assert spec.rate == 2.0 and isinstance(spec.rate, float)
    assert ClientSpec(service_time={"kind": "exponential", "rate": 3}).service_time.rate == 3.0


def test_config_error_keeps_its_field_and_pickles() -> None:
    with pytest.raises(ConfigError) as info:
        ClientSpec(num_cpus=True)  # type: ignore[arg-type]
    exc = info.value
    assert exc.field == "num_cpus"  # type: ignore[attr-defined]
    again = pickle.loads(pickle.dumps(exc))
    assert str(again) == str(exc) and again.field == "num_cpus"


def test_long_values_are_shown_short(tmp_path: Path) -> None:
    doc = {"concurrency": 2, "clients": [{"service_time": {"kind": "exponential", "rate": 1.0}}]}
    doc["routing"] = {"kind": "fixed", "p": "x" * 10_000}
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, tomli_w.dumps(doc))
    assert len(str(info.value)) < 300


def test_a_large_valid_fleet_still_loads(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        "concurrency = 8\n[[clients]]\ncount = 20000\n"
        "service_time = { kind = 'exponential', rate = 1 }\n",
    )
    assert config.num_clients == 20_000
    assert config.clients[0].service_time.rate == 1.0
