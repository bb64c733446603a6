"""Energy of an asynchronous FL system from its stations' utilisations (docs/network.md).

Follow-up of the seed paper (arXiv 2603.26231): each client ``i`` draws ``P_busy,i`` while
serving a task and ``P_idle,i`` otherwise, spends ``e_i`` joules per model transfer (one
downlink and one uplink per task), and the server draws ``P_busy,s`` while applying an
update and ``P_idle,s`` otherwise. With the stationary utilisations ``U_i`` (client ``i``
busy), ``U_s = Lambda / nu_s`` (server busy) and the task rates ``x_i = p_i Lambda``, the
mean power is::

    P = sum_i [P_busy,i U_i + P_idle,i (1 - U_i) + 2 e_i x_i] + P_busy,s U_s + P_idle,s (1 - U_s)

(by the renewal-reward theorem the long-run energy per unit time is the mean power in
each state weighted by the fraction of time spent in it), and the energy per update is
``P / Lambda`` joules. The same formula applies to measured utilisations
(:func:`measured_energy`), so theory and simulation are compared on one footing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from raysync.exceptions import ConfigError

if TYPE_CHECKING:
    from raysync.config import SystemConfig
    from raysync.queueing.result import QueueingResult

__all__ = [
    "EnergyReport",
    "PowerFigures",
    "energy_report",
    "measured_energy",
    "power_at",
    "power_curve",
    "power_figures",
    "predict_energy",
]


@dataclass(frozen=True, kw_only=True)
class PowerFigures:
    """Power figures of a fleet in SI units (zeros where the config gives none).

    Attributes:
        busy: Busy power of each client in watts, shape ``(n,)``.
        idle: Idle power of each client in watts, shape ``(n,)``.
        transfer: Energy per model transfer of each client in joules, shape ``(n,)``.
        server_busy: Busy power of the server in watts.
        server_idle: Idle power of the server in watts.
    """

    busy: NDArray[np.float64]
    idle: NDArray[np.float64]
    transfer: NDArray[np.float64]
    server_busy: float
    server_idle: float

    @property
    def any(self) -> bool:
        """Whether any figure is non-zero (else every energy is 0)."""
        return bool(
            self.busy.any() or self.idle.any() or self.transfer.any()
            or self.server_busy or self.server_idle
        )  # fmt: skip


def power_figures(config: SystemConfig) -> PowerFigures:
    """Collect the power figures of a config (clients' ``power`` and ``[server] power``)."""
    n = config.num_clients
    busy, idle, transfer = np.zeros(n), np.zeros(n), np.zeros(n)
    for i, client in enumerate(config.clients):
        if client.power is not None:
            busy[i] = client.power.busy_watts
            idle[i] = client.power.idle_watts
            transfer[i] = client.power.transfer_joules
    server_busy = server_idle = 0.0
    if config.server is not None and config.server.power is not None:
        server_busy = config.server.power.busy_watts
        server_idle = config.server.power.idle_watts
    return PowerFigures(
        busy=busy, idle=idle, transfer=transfer, server_busy=server_busy, server_idle=server_idle
    )


@dataclass(frozen=True, kw_only=True)
class EnergyReport:
    """Mean power and energy per update of a system in steady state.

    Attributes:
        power: Mean total power in watts (joules per second).
        energy_per_update: Joules per applied update, ``power / throughput``.
        throughput: Updates per second the figures belong to.
        client_power: Compute power of each client (busy and idle) in watts, ``(n,)``.
        transfer_power: Power spent on transfers by each client in watts, ``(n,)``.
        server_power: Power of the server (busy and idle) in watts.
    """

    power: float
    energy_per_update: float
    throughput: float
    client_power: NDArray[np.float64]
    transfer_power: NDArray[np.float64]
    server_power: float

    def energy_for_time(self, seconds: float) -> float:
        """Joules spent in ``seconds`` of steady-state operation."""
        return self.power * seconds

    def energy_for_updates(self, updates: float) -> float:
        """Joules spent to apply ``updates`` updates (e.g. the updates to a target accuracy)."""
        return self.energy_per_update * updates

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe mapping."""
        return {
            "power": self.power,
            "energy_per_update": self.energy_per_update,
            "throughput": self.throughput,
            "client_power": self.client_power.tolist(),
            "transfer_power": self.transfer_power.tolist(),
            "server_power": self.server_power,
        }


def energy_report(
    figures: PowerFigures,
    *,
    throughput: float,
    utilization: NDArray[np.float64],
    client_throughput: NDArray[np.float64],
    server_utilization: float,
) -> EnergyReport:
    """The energy figures from utilisations (module docstring formula).

    Args:
        figures: The fleet's power figures.
        throughput: Updates per second ``Lambda`` (> 0).
        utilization: Busy fraction ``U_i`` of each client, shape ``(n,)``.
        client_throughput: Tasks per second through each client ``x_i``, shape ``(n,)``.
        server_utilization: Busy fraction of the server ``U_s`` (0 without a server station).

    Returns:
        The report.

    Raises:
        ConfigError: The throughput is not a finite number > 0, or a utilisation is
            outside ``[0, 1]`` (beyond a rounding slack of 1e-9).
    """
    if not (math.isfinite(throughput) and throughput > 0):
        raise ConfigError(f"throughput must be a finite number > 0, got {throughput!r}")
    u = np.asarray(utilization, dtype=np.float64)
    x = np.asarray(client_throughput, dtype=np.float64)
    for name, values in (
        ("utilization", u),
        ("server_utilization", np.array([server_utilization])),
    ):
        if not np.all((values >= -1e-9) & (values <= 1 + 1e-9)):
            raise ConfigError(f"{name} must lie in [0, 1], got {values.tolist()!r}")
    u = np.clip(u, 0.0, 1.0)
    us = min(max(float(server_utilization), 0.0), 1.0)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused below
        client = figures.busy * u + figures.idle * (1.0 - u)
        transfer = 2.0 * figures.transfer * x  # one downlink and one uplink per task
        server = figures.server_busy * us + figures.server_idle * (1.0 - us)
        power = float(client.sum() + transfer.sum() + server)
        per_update = power / throughput
    if not math.isfinite(power):
        parts = (float(client.sum()), float(transfer.sum()), server)
        clients, transfers, station = (
            f"{v:.3g} W" if math.isfinite(v) else "over 1.8e308 W" for v in parts
        )
        raise ConfigError(
            f"the mean power overflows float64 (above 1.8e308 W): clients {clients} "
            f"(power.busy, power.idle) + transfers {transfers} (power.transfer x 2 per task "
            f"at {float(x.sum()):.3g} tasks per second) + server {station}; lower the "
            "power figures"
        )
    if not math.isfinite(per_update):
        raise ConfigError(
            f"the energy per update, mean power {power:.3g} W / throughput "
            f"{throughput:.3g} updates per second, overflows float64 (above 1.8e308 J); "
            "lower the power figures"
        )
    return EnergyReport(
        power=power,
        energy_per_update=per_update,
        throughput=float(throughput),
        client_power=client,
        transfer_power=transfer,
        server_power=server,
    )


def power_at(
    figures: PowerFigures,
    *,
    mu: NDArray[np.float64],
    p: NDArray[np.float64],
    throughput: float,
    server_rate: float | None,
) -> float:
    """Mean power in watts of random routing ``p`` at update throughput ``Lambda``.

    ``P = P0 + e(p) Lambda`` with ``P0 = sum_i P_idle,i + P_idle,s`` and
    ``e(p) = sum_i p_i ((P_busy,i - P_idle,i) / mu_i + 2 e_i) + (P_busy,s - P_idle,s) / nu``
    (the module formula with ``U_i = p_i Lambda / mu_i`` and ``U_s = Lambda / nu``).

    Args:
        figures: The fleet's power figures.
        mu: Service rates per second, shape ``(n,)``.
        p: Routing probabilities, shape ``(n,)``.
        throughput: Updates per second.
        server_rate: Rate of the server station (None: updates take no server time).

    Returns:
        Watts (``inf`` when the power is beyond float64).
    """
    power = power_curve(figures, mu=mu, p=p, throughput=np.array([throughput]),
                        server_rate=server_rate)  # fmt: skip
    return float(power[0])


def power_curve(
    figures: PowerFigures,
    *,
    mu: NDArray[np.float64],
    p: NDArray[np.float64],
    throughput: NDArray[np.float64],
    server_rate: float | None,
) -> NDArray[np.float64]:
    """:func:`power_at` at each throughput of an array (e.g. ``Lambda(C)``, ``C = 1..``).

    Returns ``inf`` where the power is beyond float64, without a numpy warning.
    """
    mu = np.asarray(mu, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    lam = np.asarray(throughput, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        base = float(figures.idle.sum() + figures.server_idle)
        slope = float(np.dot(p, (figures.busy - figures.idle) / mu + 2.0 * figures.transfer))
        if server_rate is not None:
            slope += (figures.server_busy - figures.server_idle) / server_rate
        power = base + slope * lam
        if np.all(np.isfinite(power)):
            return power
        # The slope alone overflows for rates near 1e-300 although each U_i = p_i Lambda
        # / mu_i <= 1: sum the compute term in the unit of the slowest rate (a power of
        # two, so no rounding), and keep the transfer and server terms apart.
        inverse = 1.0 / mu
        k = math.frexp(float(np.max(inverse)))[1] if np.all(np.isfinite(inverse)) else 0
        compute = float(np.dot(p, (figures.busy - figures.idle) * np.ldexp(inverse, -k)))
        power = base + compute * np.ldexp(lam, k)
        power = power + 2.0 * float(np.dot(p, figures.transfer)) * lam
        if server_rate is not None:
            power = power + (figures.server_busy - figures.server_idle) * (lam / server_rate)
    return np.where(np.isnan(power), np.inf, power)


def predict_energy(config: SystemConfig, result: QueueingResult | None = None) -> EnergyReport:
    """The theory's energy figures of a config.

    Args:
        config: The system configuration (its ``power`` figures and stations).
        result: Its :func:`~raysync.queueing.predict` (computed when None).

    Returns:
        Mean power and energy per update from the predicted utilisations.
    """
    from raysync.queueing.predict import predict

    if result is None:
        result = predict(config)
    server_u = result.server_utilization
    if server_u is None:
        server_u = 0.0
    return energy_report(
        power_figures(config),
        throughput=result.throughput,
        utilization=result.utilization,
        client_throughput=result.client_throughput,
        server_utilization=server_u,
    )


def measured_energy(config: SystemConfig, run: Any) -> EnergyReport:
    """The same figures from a run's measured statistics (simulator or runtime).

    Args:
        config: The system configuration.
        run: A :class:`~raysync.simulation.result.RunResult`; its ``extras`` may hold
            ``server_utilization`` (the simulator records it when the config has a server
            station; 0 otherwise).

    Returns:
        Mean power and energy per update from the measured utilisations.
    """
    server_u = float(run.extras.get("server_utilization", 0.0) or 0.0)
    return energy_report(
        power_figures(config),
        throughput=float(run.throughput),
        utilization=np.asarray(run.utilization, dtype=np.float64),
        client_throughput=np.asarray(run.client_throughput, dtype=np.float64),
        server_utilization=server_u,
    )


def no_energy_choice(
    *, energy_budget: float | None, energy_weight: float, least: float, scanned: str
) -> ConfigError:
    """The error of an energy-aware scan that kept no design, naming which input caused it.

    Either the budget is below every design's energy, or the weight is so large that
    ``bound + weight * energy`` is not finite for any design (e.g. ``1e308`` per joule).

    Args:
        energy_budget: The scan's budget in joules (None: none).
        energy_weight: The scan's price of a joule.
        least: The least energy of any scanned design, joules.
        scanned: What was scanned, for the message (e.g. ``"C = 1..8 at 5 routings of 4
            clients"``).
    """
    if not math.isfinite(least):  # not the budget's or the weight's fault
        return ConfigError(
            f"the energy of every design scanned ({scanned}) overflows float64 (above "
            "1.8e308 J): the power figures (power.busy, power.idle and power.transfer of "
            "the clients and the [server]) are too large for this run; lower them"
        )
    if energy_budget is not None and not least <= energy_budget:
        return ConfigError(
            f"energy budget {energy_budget:.6g} J is below the least energy of any design "
            f"scanned ({least:.6g} J over {scanned}); raise the budget"
        )
    return ConfigError(
        f"energy weight {energy_weight:.6g} per J is too large: the bound plus the weight "
        f"times the energy (least {least:.6g} J over {scanned}) is not a finite number for "
        "any design; lower the weight"
    )
