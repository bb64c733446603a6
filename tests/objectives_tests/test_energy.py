"""Energy figures from utilisations, checked by hand on a 2-client example."""

from __future__ import annotations

import numpy as np
import pytest

from raysync.config import (
    ClientSpec,
    PowerSpec,
    RoutingConfig,
    RunConfig,
    ServerConfig,
    ServiceTimeSpec,
    SystemConfig,
)
from raysync.exceptions import ConfigError
from raysync.objectives.energy import energy_report, power_figures, predict_energy


def _two_clients(server: ServerConfig | None) -> SystemConfig:
    return SystemConfig(
        clients=(
            ClientSpec(
                service_time=ServiceTimeSpec(rate=1.0),
                power=PowerSpec(busy="10 W", idle="1 W", transfer="0.5 J"),
            ),
            ClientSpec(
                service_time=ServiceTimeSpec(rate=2.0),
                power=PowerSpec(busy="20 W", idle="2000 mW", transfer="500 mJ"),
            ),
        ),
        concurrency=1,
        routing=RoutingConfig(kind="uniform"),
        run=RunConfig(num_updates=100, train=False),
        server=server,
    )


def test_two_clients_without_server_by_hand() -> None:
    # C = 1: Lambda = 1 / (0.5/1 + 0.5/2) = 4/3; U = (2/3, 1/3); task rates 2/3 each.
    # Clients: 10*2/3 + 1*1/3 = 7 W and 20*1/3 + 2*2/3 = 8 W; transfers 2*0.5*(4/3) = 4/3 W.
    rep = predict_energy(_two_clients(None))
    assert rep.throughput == pytest.approx(4 / 3)
    np.testing.assert_allclose(rep.client_power, [7.0, 8.0])
    np.testing.assert_allclose(rep.transfer_power, [2 / 3, 2 / 3])
    assert rep.server_power == 0.0
    assert rep.power == pytest.approx(49 / 3)
    assert rep.energy_per_update == pytest.approx(12.25)
    assert rep.energy_for_time(3.0) == pytest.approx(49.0)
    assert rep.energy_for_updates(4) == pytest.approx(49.0)


def test_two_clients_with_a_server_station_by_hand() -> None:
    # Server rate 4: Lambda = 1 / (0.75 + 0.25) = 1; U = (0.5, 0.25), U_s = 0.25.
    # Clients 5.5 W and 6.5 W, transfers 1 W, server 40*0.25 + 4*0.75 = 13 W: 26 W, 26 J/update.
    server = ServerConfig(
        update_time=ServiceTimeSpec(rate=4.0), power=PowerSpec(busy="0.04 kW", idle="4 W")
    )
    rep = predict_energy(_two_clients(server))
    assert rep.throughput == pytest.approx(1.0)
    np.testing.assert_allclose(rep.client_power, [5.5, 6.5])
    assert rep.server_power == pytest.approx(13.0)
    assert rep.power == pytest.approx(26.0)
    assert rep.energy_per_update == pytest.approx(26.0)


def test_no_power_figures_means_no_energy() -> None:
    config = _two_clients(None).replace(clients=(ClientSpec(), ClientSpec()))
    assert not power_figures(config).any
    assert predict_energy(config).power == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"throughput": 0.0}, "throughput"),
        ({"throughput": float("nan")}, "throughput"),
        ({"utilization": np.array([1.5, 0.1])}, "utilization"),
        ({"server_utilization": -0.2}, "server_utilization"),
    ],
)
def test_energy_report_refuses_bad_figures(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {
        "throughput": 1.0,
        "utilization": np.array([0.5, 0.5]),
        "client_throughput": np.array([0.5, 0.5]),
        "server_utilization": 0.0,
    }
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        energy_report(power_figures(_two_clients(None)), **args)  # type: ignore[arg-type]
