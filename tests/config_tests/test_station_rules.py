"""Rules across stations, checked at config construction so every command shares them.

Power on every station once any has it (a missing figure counted as 0 W and silently
understated the energy); adaptive routing/schedules/join-leave with network delays and a
fleet that empties were refused by ``simulate`` only, while ``validate``/``analyze``/
``optimize`` accepted them (issues 15/16 verifier findings).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from raysync.cli import main
from raysync.exceptions import ConfigError

from .._configs import load_text, write_config

RATE = "service_time = { rate = 1.0 }\n"
POWER = 'power = { busy = "20 W", idle = "2 W" }\n'


def _refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    line = str(info.value)
    assert "\n" not in line
    return line.split(": ", 1)[1]


@pytest.mark.parametrize(
    ("power", "message"),
    [
        ('power = { busy = "20 W" }\n', "clients[0].power.idle is required once power is given"),
        ('power = { idle = "2 W" }\n', "clients[0].power.busy is required once power is given"),
        ("power = {}\n", "clients[0].power.busy is required once power is given"),
    ],
)
def test_power_needs_busy_and_idle(tmp_path: Path, power: str, message: str) -> None:
    assert _refused(tmp_path, f"concurrency = 1\n[[clients]]\n{RATE}{power}").startswith(message)


def test_power_on_one_client_needs_power_on_all(tmp_path: Path) -> None:
    text = f"concurrency = 2\n[[clients]]\n{RATE}{POWER}[[clients]]\n{RATE}"
    assert _refused(tmp_path, text) == (
        "clients[1].power is required: clients[0].power is given, so every client and the "
        "[server] (when given) must give busy and idle power"
    )


def test_power_on_clients_needs_power_on_the_server(tmp_path: Path) -> None:
    text = f"concurrency = 1\n[server]\nupdate_time = {{ rate = 4.0 }}\n[[clients]]\n{RATE}{POWER}"
    assert _refused(tmp_path, text).startswith("server.power is required: clients[0].power")


def test_server_power_alone_needs_client_power(tmp_path: Path) -> None:
    text = (
        f"concurrency = 1\n[server]\nupdate_time = {{ rate = 4.0 }}\n"
        f'power = {{ busy = "30 W", idle = "3 W" }}\n[[clients]]\n{RATE}'
    )
    assert _refused(tmp_path, text).startswith("clients[0].power is required: server.power")


def test_full_power_figures_are_accepted_and_transfer_defaults_to_zero(tmp_path: Path) -> None:
    text = (
        f"concurrency = 2\n[server]\nupdate_time = {{ rate = 4.0 }}\n"
        f'power = {{ busy = "30 W", idle = "3 W" }}\n[[clients]]\ncount = 2\n{RATE}{POWER}'
    )
    config = load_text(tmp_path, text)
    power = config.clients[1].power
    assert power is not None
    assert (power.busy_watts, power.idle_watts, power.transfer_joules) == (20.0, 2.0, 0.0)


ADAPTIVE = '[routing]\nkind = "adaptive"\n'
SCHEDULE = (
    'service_time = { kind = "schedule", segments = [{ until = 5.0, rate = 1.0 }, '
    "{ rate = 2.0 }] }\n"
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            f"concurrency = 2\n{ADAPTIVE}[[clients]]\n{RATE}[[clients]]\n{RATE}"
            "downlink = { rate = 10.0 }\n",
            "routing.kind = 'adaptive' is not supported together with network delays or a "
            "server station yet (remove clients[1].downlink)",
        ),
        (
            f"concurrency = 2\n[server]\nupdate_time = {{ rate = 9.0 }}\n[[clients]]\n{SCHEDULE}"
            f"[[clients]]\n{RATE}",
            "service_time 'schedule' is not supported together with network delays or a "
            "server station yet (remove server.update_time)",
        ),
        (
            f"concurrency = 2\n[[clients]]\n{RATE}uplink = {{ rate = 3.0 }}\n"
            f"[[clients]]\n{RATE}join_time = 4.0\n",
            "join_time/leave_time is not supported together with network delays or a "
            "server station yet (remove clients[0].uplink)",
        ),
        (
            f"concurrency = 2\n[[clients]]\n{RATE}leave_time = 10.0\n"
            f"[[clients]]\n{RATE}leave_time = 20.0\n",
            "clients: every client has left at t = 20 (leave_time); at least one must be "
            "present at all times",
        ),
        (
            f"concurrency = 2\n[[clients]]\n{RATE}leave_time = 10.0\n"
            f"[[clients]]\n{RATE}join_time = 20.0\n",
            "clients: every client has left at t = 10 (leave_time); at least one must be "
            "present at all times",
        ),
        (
            f"concurrency = 2\n[[clients]]\n{RATE}join_time = 1.0\n"
            f"[[clients]]\n{RATE}join_time = 2.0\n",
            "clients: no client is present at t = 0 (every join_time > 0); at least one "
            "must be there from the start",
        ),
    ],
)
def test_dynamic_fleet_rules_are_config_rules(tmp_path: Path, text: str, message: str) -> None:
    assert _refused(tmp_path, text) == message


def test_a_handover_at_the_same_instant_is_accepted(tmp_path: Path) -> None:
    text = (
        f"concurrency = 2\n[[clients]]\n{RATE}leave_time = 10.0\n"
        f"[[clients]]\n{RATE}join_time = 10.0\n"
    )
    assert load_text(tmp_path, text).num_clients == 2


@pytest.mark.parametrize("command", ["validate", "analyze"])
def test_every_command_refuses_an_emptying_fleet(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, f"concurrency = 1\n[[clients]]\n{RATE}leave_time = 10.0\n")
    assert main([command, str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "every client has left at t = 10" in err
