"""Service-time, delay and power specs: every field a kind would ignore is refused by name.

Issues 15/16 verifier findings: a schedule on a delay used only its first segment, ``mean``
next to ``rate`` was silently dropped, ``until``/``segments`` outside a schedule were
accepted, errors inside segments named the wrong path and "1e308 kW" became inf watts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from raysync.exceptions import ConfigError

from .._configs import load_text

HEAD = 'concurrency = 2\n[[clients]]\nservice_time = { kind = "exponential", rate = 2.0 }\n'
SCHEDULE = (
    '{ kind = "schedule", segments = [{ until = 10.0, kind = "exponential", rate = 100.0 }, '
    '{ kind = "exponential", rate = 0.01 }] }'
)


def _refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    line = str(info.value)
    assert "\n" not in line
    return line.split(": ", 1)[1]


@pytest.mark.parametrize(
    ("table", "key", "where"),
    [
        ("[[clients]]\nservice_time = { rate = 1.0 }\n", "downlink", "clients[1].downlink"),
        ("[[clients]]\nservice_time = { rate = 1.0 }\n", "uplink", "clients[1].uplink"),
        ("[server]\n", "update_time", "server.update_time"),
    ],
)
def test_schedule_is_refused_on_delays_and_update_time(
    tmp_path: Path, table: str, key: str, where: str
) -> None:
    message = _refused(tmp_path, f"{HEAD}{table}{key} = {SCHEDULE}\n")
    assert message == f"{where}.kind 'schedule' is only supported for service_time"


@pytest.mark.parametrize("key", ["service_time", "downlink", "uplink"])
@pytest.mark.parametrize("kind", ["exponential", "deterministic", "lognormal"])
def test_rate_and_mean_together_are_refused_for_every_spec(
    tmp_path: Path, key: str, kind: str
) -> None:
    spec = f'{{ kind = "{kind}", mean = 0.2, rate = 1.0 }}'
    extra = "" if key == "service_time" else "service_time = { rate = 1.0 }\n"
    message = _refused(tmp_path, f"{HEAD}[[clients]]\n{extra}{key} = {spec}\n")
    assert message == (
        f"clients[1].{key}.mean must not be given together with rate = 1.0 "
        "(give one: mean = 1 / rate), got 0.2"
    )


@pytest.mark.parametrize(
    ("kind", "field"),
    [("exponential", "rate"), ("deterministic", "mean"), ("lognormal", "mean")],
)
def test_missing_rate_names_both_alternatives(tmp_path: Path, kind: str, field: str) -> None:
    other = "mean" if field == "rate" else "rate"
    message = _refused(tmp_path, f'{HEAD}[[clients]]\nservice_time = {{ kind = "{kind}" }}\n')
    assert message == f"clients[1].service_time.{field} (or {other}) is required for kind {kind!r}"


@pytest.mark.parametrize("key", ["service_time", "downlink", "uplink"])
def test_until_outside_a_schedule_is_refused(tmp_path: Path, key: str) -> None:
    spec = '{ kind = "exponential", mean = 0.2, until = 5.0 }'
    extra = "" if key == "service_time" else "service_time = { rate = 1.0 }\n"
    message = _refused(tmp_path, f"{HEAD}[[clients]]\n{extra}{key} = {spec}\n")
    assert message == f"clients[1].{key}.until is only allowed inside schedule segments, got 5.0"


def test_until_outside_a_schedule_is_refused_on_the_server(tmp_path: Path) -> None:
    text = f"{HEAD}[server]\nupdate_time = {{ rate = 4.0, until = 5.0 }}\n"
    message = _refused(tmp_path, text)
    assert message == "server.update_time.until is only allowed inside schedule segments, got 5.0"


@pytest.mark.parametrize(
    ("spec", "field", "shown"),
    [
        ('{ kind = "exponential", rate = 1.0, segments = [] }', "segments", "()"),
        ('{ kind = "exponential", rate = 1.0, cv = 2.0 }', "cv", "2.0"),
        ('{ kind = "deterministic", mean = 1.0, durations = [1.0] }', "durations", "(1.0,)"),
        ('{ kind = "trace", durations = [1.0], rate = 3.0 }', "rate", "3.0"),
        ('{ kind = "lognormal", mean = 1.0, segments = [] }', "segments", "()"),
    ],
)
@pytest.mark.parametrize("key", ["service_time", "downlink"])
def test_fields_a_kind_ignores_are_refused(
    tmp_path: Path, spec: str, field: str, shown: str, key: str
) -> None:
    extra = "" if key == "service_time" else "service_time = { rate = 1.0 }\n"
    message = _refused(tmp_path, f"{HEAD}[[clients]]\n{extra}{key} = {spec}\n")
    kind = spec.split('"')[1]
    assert message == f"clients[1].{key}.{field} is not used by kind {kind!r}, got {shown}"


@pytest.mark.parametrize(
    ("first", "last", "message"),
    [
        (
            '{ until = inf, kind = "exponential", rate = 1.0 }',
            '{ kind = "exponential", rate = 1.0 }',
            "clients[1].service_time.segments[0].until must be finite, got inf (written as inf or "
            "as a number beyond the float range, about 1.8e308)",
        ),
        (
            '{ until = 3.0, kind = "exponential", rate = 1.0 }',
            '{ kind = "exponential", rate = -1.0 }',
            "clients[1].service_time.segments[1].rate must be > 0, got -1.0",
        ),
        (
            '{ until = 3.0, kind = "schedule", segments = [] }',
            '{ kind = "exponential", rate = 1.0 }',
            "clients[1].service_time.segments[0].kind must not be 'schedule' "
            "(no nested schedules), got 'schedule'",
        ),
        (
            '{ until = 3.0, kind = "exponential", rate = 1.0, mean = 2.0 }',
            '{ kind = "exponential", rate = 1.0 }',
            "clients[1].service_time.segments[0].mean must not be given together with "
            "rate = 1.0 (give one: mean = 1 / rate), got 2.0",
        ),
    ],
)
def test_errors_inside_segments_name_the_segment(
    tmp_path: Path, first: str, last: str, message: str
) -> None:
    spec = f'{{ kind = "schedule", segments = [{first}, {last}] }}'
    assert _refused(tmp_path, f"{HEAD}[[clients]]\nservice_time = {spec}\n") == message


@pytest.mark.parametrize(
    ("field", "value"),
    [("busy", "1e308 kW"), ("idle", "1e308 kW"), ("transfer", "1e305 Wh"), ("busy", "1e400 W")],
)
def test_power_overflowing_after_unit_conversion_is_refused(
    tmp_path: Path, field: str, value: str
) -> None:
    power = {"busy": '"20 W"', "idle": '"2 W"', "transfer": '"1 J"'}
    power[field] = f'"{value}"'
    table = ", ".join(f"{k} = {v}" for k, v in power.items())
    text = f"concurrency = 1\n[[clients]]\nservice_time = {{ rate = 1.0 }}\npower = {{ {table} }}\n"
    message = _refused(tmp_path, text)
    assert message == f"clients[0].power.{field} must be a finite amount >= 0, got '{value}'"
