"""Estimate the bound's constants and the clients' service rates from data.

Problem constants (``L``, ``sigma^2``, ``M^2``, ``A``) from a short pilot run on the actual
model and client data (:func:`estimate_constants`; :func:`estimate_constants_for_config`
builds the data and model of a config). With ``f_i`` the mean cross-entropy on client
``i``'s data and ``f = (1/n) sum_i f_i`` (docs/theory.md section 1):

* **Pilot trajectory.** Full-batch gradient descent on ``f`` from ``w_0`` with step
  ``1 / L_0`` (``L_0`` the curvature estimate at ``w_0``, below) for ``fstar_steps`` steps.
  A step that would raise ``f`` (or make it non-finite) is not taken: the step size is
  halved and the step retried from the same iterate (at most 30 halvings; after that the
  trajectory stays where it is), so the losses along the trajectory never rise. Why: a
  model whose curvature grows along the way (a CNN's does) makes ``1 / L_0`` too long
  later on; plain descent then diverges for a few steps and the points measured there
  report the constants of the pilot's own divergence, not the problem's (MNIST CNN, 20
  clients, three data draws: ``zeta^2`` 0.18 / 29.9 / 0.43 without the halving, 9.2 / 14.2 /
  9.5 with it). Logistic regression's pilots on the recommend benchmark's cells never
  needed a halving.
  ``num_points`` points spread along it (the first, the last and evenly spaced ones in
  between) are where the local quantities are measured.
* ``L``: the largest gradient-difference ratio ``||grad f_i(w) - grad f_i(w')|| / ||w - w'||``
  seen over (a) consecutive pilot iterates, for every client, and (b) at each point and
  client, ``power_iterations`` steps of power iteration on finite-difference
  Hessian-vector products ``(grad f_i(w + r v) - grad f_i(w)) / r`` (``||v|| = 1``,
  ``r = fd_radius``), which finds the direction of largest curvature. Every ratio is a
  lower bound on the true smoothness constant; their maximum is a local estimate.
* ``sigma^2``: at each point and client, the mean over ``num_batches`` minibatches (size
  ``batch_size``, drawn without replacement within a batch) of
  ``||g_batch - grad f_i(w)||^2``; the maximum over points and clients (the analysis needs
  a bound valid for every client).
* ``M^2``: at each point, ``max_i ||grad f_i(w) - grad f(w)||^2``; the maximum over points
  (the mean over clients is reported too).
* ``zeta^2`` (docs/theory.md section 6): at each point, the mean over clients
  ``(1/n) sum_i ||grad f_i(w) - grad f(w)||^2``; the maximum over points.
* Gram matrices (docs/theory.md section 6, the direct bias ``b(r)``): at each point, the
  ``n x n`` matrix ``H = Gc Gc^T`` of the centred per-client full gradients
  ``Gc_i = grad f_i(w) - grad f(w)``. Centring leaves ``(r - u)^T H (r - u)`` unchanged
  (``sum_i (r_i - u_i) = 0``) and gives ``trace(H) / n = zeta^2`` at that point.
  Over several draws of the data (:func:`pool_bias_over_draws`), ``H`` and ``zeta^2`` at
  each point are averaged: ``(r - u)^T H (r - u)`` is linear in ``H``, so the mean matrix
  gives the mean over the draws of that quadratic form, the bias a design pays on a draw
  it was not chosen on, rather than on the one draw it was fitted to.
* ``A = f(w_0) - f*_low`` with ``f*_low = (1 - margin) * min_t f(w_t)`` (cross-entropy is
  ``>= 0``, so ``f*_low >= 0``): a lower estimate of ``f*`` from the pilot's best loss,
  lowered by the relative ``margin`` (default 10 %) since the pilot does not reach ``f*``.

Service rates from observed service times (:func:`estimate_service_rate`): the exponential
MLE ``mu = N / sum t`` with the exact interval from ``2 mu sum t ~ chi^2(2N)``, or, for any
distribution, ``mu = 1 / mean`` with a Student-t interval on the mean, inverted.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from raysync._validation import first_index
from raysync.exceptions import ConfigError
from raysync.objectives.bounds import ProblemConstants, _number

if TYPE_CHECKING:
    from raysync.config import SystemConfig
    from raysync.models import GradientComputer

__all__ = [
    "RATE_METHODS",
    "ConstantsEstimate",
    "RateEstimate",
    "estimate_constants",
    "estimate_constants_for_config",
    "estimate_service_rate",
    "estimate_service_rates",
    "pool_bias_over_draws",
]

logger = logging.getLogger(__name__)

#: Estimators accepted by :func:`estimate_service_rate`.
RATE_METHODS: tuple[str, ...] = ("exponential", "mean")


# --------------------------------------------------------------------------- rates
@dataclass(frozen=True, kw_only=True)
class RateEstimate:
    """A service rate estimated from observed service times.

    Attributes:
        rate: Point estimate of ``mu`` (tasks per unit time).
        lower: Lower end of the confidence interval.
        upper: Upper end of the confidence interval.
        confidence: Two-sided level of the interval.
        num_samples: Number of observed durations.
        method: ``"exponential"`` (MLE, exact chi-square interval) or ``"mean"``
            (``1 / mean``, t interval on the mean inverted).
    """

    rate: float
    lower: float
    upper: float
    confidence: float
    num_samples: int
    method: str

    def covers(self, rate: float) -> bool:
        """Whether ``rate`` lies in ``[lower, upper]``."""
        return self.lower <= rate <= self.upper

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe mapping."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def estimate_service_rate(
    durations: ArrayLike, *, method: str = "exponential", confidence: float = 0.99
) -> RateEstimate:
    """Estimate a client's service rate ``mu`` from observed service durations.

    * ``"exponential"``: the maximum-likelihood estimate ``N / sum t``. Since
      ``2 mu sum t`` is ``chi^2`` with ``2N`` degrees of freedom, the exact interval is
      ``[chi2.ppf(a/2, 2N), chi2.ppf(1 - a/2, 2N)] / (2 sum t)`` with ``a = 1 - confidence``.
    * ``"mean"`` (any distribution): ``1 / mean`` with the Student-t interval
      ``mean -/+ t s / sqrt(N)`` on the mean, inverted (asymptotic; an interval whose lower
      mean is ``<= 0`` gives an infinite upper rate). Needs ``N >= 2``.

    Args:
        durations: Observed service times, all ``> 0``.
        method: ``"exponential"`` or ``"mean"``.
        confidence: Two-sided level in ``(0, 1)``.

    Returns:
        The estimate and its interval.

    Raises:
        ConfigError: No durations, a non-positive or non-finite one, an unknown method or
            a confidence outside ``(0, 1)``.
    """
    from scipy import stats

    if method not in RATE_METHODS:
        raise ConfigError(f"method must be one of {', '.join(RATE_METHODS)}, got {method!r}")
    level = _number("confidence", confidence)
    if not level < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence!r}")
    try:
        t = np.asarray(durations, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"durations must be numbers, got {durations!r}") from exc
    if t.size == 0:
        raise ConfigError("durations must contain at least one observed service time, got 0")
    j = first_index(~np.isfinite(t) | (t <= 0))
    if j is not None:
        raise ConfigError(f"durations[{j}] must be a finite time > 0, got {float(t[j])!r}")
    n = int(t.size)
    alpha = 1.0 - level
    if method == "exponential":
        total = float(math.fsum(t.tolist()))
        rate = n / total
        lower = float(stats.chi2.ppf(alpha / 2.0, 2 * n)) / (2.0 * total)
        upper = float(stats.chi2.ppf(1.0 - alpha / 2.0, 2 * n)) / (2.0 * total)
    else:
        if n < 2:
            raise ConfigError("method 'mean' needs at least 2 durations for an interval, got 1")
        mean = float(t.mean())
        half = float(stats.t.ppf(1.0 - alpha / 2.0, n - 1)) * float(t.std(ddof=1)) / math.sqrt(n)
        rate = 1.0 / mean
        lower = 1.0 / (mean + half)
        upper = 1.0 / (mean - half) if mean - half > 0 else math.inf
    return RateEstimate(
        rate=rate, lower=lower, upper=upper, confidence=level, num_samples=n, method=method
    )


def estimate_service_rates(
    durations: Sequence[ArrayLike], *, method: str = "exponential", confidence: float = 0.99
) -> tuple[RateEstimate, ...]:
    """:func:`estimate_service_rate` for each client's list of durations.

    Args:
        durations: One sequence of observed durations per client.
        method: ``"exponential"`` or ``"mean"``.
        confidence: Two-sided level in ``(0, 1)``.

    Returns:
        One estimate per client.
    """
    out = []
    for i, d in enumerate(durations):
        try:
            out.append(estimate_service_rate(d, method=method, confidence=confidence))
        except ConfigError as exc:
            raise ConfigError(f"client {i}: {exc}") from exc
    return tuple(out)


# --------------------------------------------------------------------------- constants
@dataclass(frozen=True, kw_only=True)
class ConstantsEstimate:
    """Problem constants estimated from a pilot run, with the raw measurements.

    Attributes:
        constants: The estimated ``L``, ``sigma^2``, ``M^2``, ``A``.
        smoothness_trajectory: Largest gradient-difference ratio along the pilot iterates.
        smoothness_power: Largest power-iteration curvature estimate.
        sigma2_per_point: Max over clients of the minibatch variance, per point.
        M2_per_point: Max over clients of ``||grad f_i - grad f||^2``, per point.
        M2_mean: Mean over clients and points of ``||grad f_i - grad f||^2``.
        initial_loss: ``f(w_0)``.
        best_loss: Lowest ``f`` seen along the pilot trajectory.
        f_star_lower: ``(1 - margin) * best_loss``, the lower estimate of ``f*``.
        margin: Relative margin used for ``f_star_lower``.
        pilot_steps: Gradient-descent steps of the pilot trajectory.
        pilot_step_size: Its last step size: ``1 / L_0`` halved ``pilot_halvings`` times.
        num_points: Points where the local quantities were measured.
        batch_size: Minibatch size for ``sigma^2``.
        zeta2: ``max`` over points of ``(1/n) sum_i ||grad f_i - grad f||^2``.
        zeta2_per_point: That mean over clients, per point.
        gram: Centred Gram matrices ``H`` of the per-client gradients, one ``(n, n)``
            array per point.
        pilot_halvings: How often a step that would have raised ``f`` was halved (a
            trajectory that stayed put counts its 30).
        pilot_losses: ``f(w_t)`` along the trajectory, ``t = 0 .. pilot_steps``
            (non-increasing up to float32 rounding: a step may raise ``f`` by at most
            ``1e-6`` of it).
        bias_draws: How many draws of the data (partition over the clients, subsample,
            ``w_0``) ``gram`` and ``zeta2`` average over (:func:`pool_bias_over_draws`);
            1 for a single pilot.
    """

    constants: ProblemConstants
    smoothness_trajectory: float
    smoothness_power: float
    sigma2_per_point: tuple[float, ...]
    M2_per_point: tuple[float, ...]
    M2_mean: float
    initial_loss: float
    best_loss: float
    f_star_lower: float
    margin: float
    pilot_steps: int
    pilot_step_size: float
    num_points: int
    batch_size: int
    zeta2: float = 0.0
    zeta2_per_point: tuple[float, ...] = ()
    gram: tuple[NDArray[np.float64], ...] = ()
    pilot_halvings: int = 0
    pilot_losses: tuple[float, ...] = ()
    bias_draws: int = 1

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe mapping."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["constants"] = self.constants.to_dict()
        out["sigma2_per_point"] = list(self.sigma2_per_point)
        out["M2_per_point"] = list(self.M2_per_point)
        out["zeta2_per_point"] = list(self.zeta2_per_point)
        out["pilot_losses"] = list(self.pilot_losses)
        out["gram"] = [np.asarray(h).tolist() for h in self.gram]
        return out


def _positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class _Pilot:
    """Per-client and global full gradients and losses (float64 accumulation)."""

    def __init__(
        self, computer: GradientComputer, clients: Sequence[tuple[np.ndarray, np.ndarray]]
    ) -> None:
        self.computer = computer
        self.clients = clients
        self.evaluations = 0
        #: The first non-finite loss or gradient seen (None: none), for the messages.
        self.nonfinite: str | None = None

    def client_grad(self, i: int, w: NDArray[np.float64]) -> tuple[NDArray[np.float64], float]:
        x, y = self.clients[i]
        grad, loss = self.gradient(i, w, x, y)
        return grad.astype(np.float64), float(loss)

    def gradient(
        self, i: int, w: NDArray[np.float64], x: np.ndarray, y: np.ndarray
    ) -> tuple[np.ndarray, float]:
        """Client ``i``'s gradient and loss on ``(x, y)``; the user's errors in one line.

        A loss that is not finite is returned (a descent step that overshoots is halved
        on it) and the first is remembered in :attr:`nonfinite` for the messages.

        Raises:
            RuntimeFailure: The model or the loss raised (named, with the client).
        """
        from raysync.exceptions import RaySyncError, RuntimeFailure

        self.evaluations += 1
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                grad, loss = self.computer.compute_gradient(w.astype(np.float32), x, y)
        except RaySyncError as exc:
            raise type(exc)(
                f"the pilot (the bound's constants) failed on client {i}: {exc}"
            ) from exc
        except Exception as exc:  # the user's model or loss: as the simulator words it
            raise RuntimeFailure(
                f"client {i} raised {type(exc).__name__} in the pilot (the bound's constants) "
                f"on {len(y)} samples: {exc}. Fix the client's data or model configuration"
            ) from exc
        if self.nonfinite is None and not (
            math.isfinite(float(loss)) and np.isfinite(grad).all()
        ):
            name = getattr(self.computer, "loss_name", None)  # not in the protocol
            self.nonfinite = (
                f"the loss{'' if name is None else f' {name!r}'} was {float(loss)} (gradient "
                f"{'finite' if np.isfinite(grad).all() else 'not finite'}) for client {i} on "
                f"{len(y)} samples at pilot evaluation {self.evaluations}"
            )
        return grad, float(loss)

    def why(self) -> str:
        """``"; <the first non-finite loss>: ..."`` for a failed estimate, or ``""``."""
        if self.nonfinite is None:
            return ""
        return f"; {self.nonfinite}: the model or the loss diverges (check the loss and the data)"

    def all_grads(
        self, w: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        grads = []
        losses = []
        for i in range(len(self.clients)):
            g, loss = self.client_grad(i, w)
            grads.append(g)
            losses.append(loss)
        return np.stack(grads), np.asarray(losses)


#: Halvings of the pilot's step before a step that keeps raising ``f`` is given up.
_MAX_HALVINGS = 30
#: Relative slack on "does not raise f": float32 losses at a (near-)stationary point
#: differ by rounding from step to step, which is not a rise.
_RISE_SLACK = 1e-6


def _descent_step(
    pilot: _Pilot,
    w: NDArray[np.float64],
    grads: NDArray[np.float64],
    loss: float,
    step: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], float, int] | None:
    """One gradient step from ``w`` that does not raise ``f``.

    ``step`` is halved until the step does not raise ``f``. Returns ``(w_next, grads_next,
    losses_next, step, halvings)``, or None when ``_MAX_HALVINGS`` halvings still raise it.
    """
    direction = grads.mean(axis=0)
    for halved in range(_MAX_HALVINGS + 1):
        w_next = w - step * direction
        grads_next, losses_next = pilot.all_grads(w_next)
        new = float(losses_next.mean())
        if math.isfinite(new) and new <= loss + _RISE_SLACK * abs(loss):
            return w_next, grads_next, losses_next, step, halved
        step /= 2.0
    return None


def _power_curvature(
    pilot: _Pilot,
    i: int,
    w: NDArray[np.float64],
    g0: NDArray[np.float64],
    *,
    radius: float,
    iterations: int,
    rng: np.random.Generator,
) -> float:
    v = rng.standard_normal(w.size)
    v /= np.linalg.norm(v)
    best = 0.0
    for _ in range(iterations):
        g1, _ = pilot.client_grad(i, w + radius * v)
        hv = (g1 - g0) / radius
        norm = float(np.linalg.norm(hv))
        best = max(best, norm)
        if norm == 0.0:
            break
        v = hv / norm
    return best


def estimate_constants(
    computer: GradientComputer,
    clients: Sequence[tuple[ArrayLike, ArrayLike]],
    initial_params: ArrayLike,
    *,
    batch_size: int = 32,
    num_points: int = 3,
    num_batches: int = 8,
    fstar_steps: int = 100,
    power_iterations: int = 8,
    fd_radius: float = 1e-2,
    margin: float = 0.1,
    seed: int = 0,
) -> ConstantsEstimate:
    """Estimate ``L``, ``sigma^2``, ``M^2`` and ``A`` from a pilot run (see the module doc).

    Args:
        computer: Evaluates the model's gradients at flat parameters.
        clients: Each client's training data ``(x_i, y_i)`` (every client non-empty).
        initial_params: ``w_0`` (flat).
        batch_size: Minibatch size of one stochastic gradient (the algorithm's).
        num_points: Points along the pilot trajectory where the local quantities are
            measured (``>= 1``).
        num_batches: Minibatches per client and point for ``sigma^2`` (``>= 2``).
        fstar_steps: Gradient-descent steps of the pilot trajectory (``>= 1``).
        power_iterations: Power-iteration steps for the curvature (``>= 1``).
        fd_radius: Finite-difference radius ``r`` of Hessian-vector products (``> 0``).
        margin: Relative margin of ``f*_low = (1 - margin) min f`` in ``[0, 1)``.
        seed: Seed of the minibatch draws and power-iteration starts.

    Returns:
        The constants and the raw measurements.

    Raises:
        ConfigError: A bad argument or an empty client.
    """
    if not clients:
        raise ConfigError("clients must hold at least one client's data, got 0")
    data = []
    for i, (x, y) in enumerate(clients):
        xa = np.asarray(x, dtype=np.float32)
        ya = np.asarray(y, dtype=np.int64)
        if ya.size == 0:
            raise ConfigError(f"client {i} has no data: every f_i needs at least one sample")
        data.append((xa, ya))
    batch_size = _positive_int("batch_size", batch_size)
    num_points = _positive_int("num_points", num_points)
    num_batches = _positive_int("num_batches", num_batches, 2)
    fstar_steps = _positive_int("fstar_steps", fstar_steps)
    power_iterations = _positive_int("power_iterations", power_iterations)
    radius = _number("fd_radius", fd_radius)
    margin = _number("margin", margin, allow_zero=True)
    if margin >= 1:
        raise ConfigError(f"margin must be in [0, 1), got {margin!r}")
    rng = np.random.default_rng(np.random.SeedSequence(_positive_int("seed", seed, 0)))
    pilot = _Pilot(computer, data)
    n = len(data)
    w = np.asarray(initial_params, dtype=np.float64).reshape(-1).copy()

    # L_0 at w_0: power iteration on the global gradient's secants, over all clients.
    grads, losses = pilot.all_grads(w)
    l0 = max(
        _power_curvature(
            pilot, i, w, grads[i], radius=radius, iterations=power_iterations, rng=rng
        )
        for i in range(n)
    )
    if not l0 > 0:
        raise ConfigError(
            f"could not estimate the curvature: gradients do not change with w{pilot.why()}"
        )
    step = 1.0 / l0
    spacing = fstar_steps / max(1, num_points - 1)
    point_steps = sorted({round(j * spacing) for j in range(num_points)})
    if num_points == 1:
        point_steps = [0]

    initial_loss = float(losses.mean())
    best_loss = initial_loss
    smooth_traj = 0.0
    smooth_power = l0
    sigma2_points: list[float] = []
    m2_points: list[float] = []
    m2_sum = 0.0
    zeta2_points: list[float] = []
    grams: list[NDArray[np.float64]] = []
    pilot_losses = [initial_loss]
    halvings = 0
    stalled = False  # no step lowered f within the halvings: the trajectory stays put
    for t in range(fstar_steps + 1):
        if t in point_steps:
            full = grads.mean(axis=0)
            dev = np.sum((grads - full) ** 2, axis=1)
            m2_points.append(float(dev.max()))
            m2_sum += float(dev.mean())
            zeta2_points.append(float(dev.mean()))
            centred = grads - full
            gram = np.einsum("id,jd->ij", centred, centred)
            gram.setflags(write=False)
            grams.append(gram)
            worst = 0.0
            for i, (_, yi) in enumerate(data):
                xi = data[i][0]
                size = min(batch_size, yi.size)
                total = 0.0
                for _ in range(num_batches):
                    idx = rng.choice(yi.size, size=size, replace=False)
                    g, _ = pilot.gradient(i, w, xi[idx], yi[idx])
                    total += float(np.sum((g.astype(np.float64) - grads[i]) ** 2))
                worst = max(worst, total / num_batches)
                if t > 0:
                    smooth_power = max(
                        smooth_power,
                        _power_curvature(
                            pilot, i, w, grads[i], radius=radius, iterations=power_iterations,
                            rng=rng,
                        ),
                    )
            sigma2_points.append(worst)
        if t == fstar_steps:
            break
        taken = None if stalled else _descent_step(pilot, w, grads, pilot_losses[-1], step)
        if taken is None:
            if not stalled:  # this step's halvings all raised f: stay here from now on
                halvings += _MAX_HALVINGS
                stalled = True
            pilot_losses.append(pilot_losses[-1])
            continue
        w_next, grads_next, losses_next, step, halved = taken
        halvings += halved
        dw = float(np.linalg.norm(w_next - w))
        if dw > 0:
            ratios = np.linalg.norm(grads_next - grads, axis=1) / dw
            smooth_traj = max(smooth_traj, float(ratios.max()))
        w, grads, losses = w_next, grads_next, losses_next
        best_loss = min(best_loss, float(losses.mean()))
        pilot_losses.append(float(losses.mean()))

    f_low = (1.0 - margin) * max(best_loss, 0.0)
    a_est = initial_loss - f_low
    if not a_est > 0:
        raise ConfigError(
            f"could not estimate A = f(w_0) - f*: f(w_0)={initial_loss:.6g} is already at "
            f"the pilot's best loss {best_loss:.6g} with margin {margin}{pilot.why()}"
        )
    sigma2 = max(sigma2_points)
    if not sigma2 > 0:
        raise ConfigError(
            "estimated sigma^2 is 0: minibatches equal the full client data; use a smaller "
            f"batch_size{pilot.why()}"
        )
    constants = ProblemConstants(
        L=max(smooth_traj, smooth_power), sigma2=sigma2, M2=max(m2_points), A=a_est
    )
    logger.info("estimated constants %s (%d gradient evaluations)", constants, pilot.evaluations)
    return ConstantsEstimate(
        constants=constants,
        smoothness_trajectory=smooth_traj,
        smoothness_power=smooth_power,
        sigma2_per_point=tuple(sigma2_points),
        M2_per_point=tuple(m2_points),
        M2_mean=m2_sum / len(m2_points),
        initial_loss=initial_loss,
        best_loss=best_loss,
        f_star_lower=f_low,
        margin=margin,
        pilot_steps=fstar_steps,
        pilot_step_size=step,
        num_points=len(point_steps),
        batch_size=batch_size,
        zeta2=max(zeta2_points),
        zeta2_per_point=tuple(zeta2_points),
        gram=tuple(grams),
        pilot_halvings=halvings,
        pilot_losses=tuple(pilot_losses),
    )


def pool_bias_over_draws(estimates: Sequence[ConstantsEstimate]) -> ConstantsEstimate:
    """The first estimate with its bias statistics averaged over draws of the data.

    The direct bias term ``b(r) = max_k (r - u)^T H_k (r - u)`` (docs/theory.md section 6)
    fitted to one draw of a non-IID partition is fitted to which clients hold which labels
    there: a design whose mix ``r`` leans on clients whose gradients happen to agree on
    that draw pays more bias on another draw of the same kind. Since the quadratic form is
    linear in ``H``, averaging ``H_k`` over draws gives the mean over the draws of
    ``(r - u)^T H_k (r - u)`` (the max over points ``k`` is taken after the mean). ``zeta^2``
    is averaged the same way, point by point, and is the max of those means.

    Args:
        estimates: Pilots of the same model and clients on different draws of the data
            (each from :func:`estimate_constants`, with the same number of points and
            clients); every field but the bias statistics is kept from the first. Each
            estimate weighs by its own ``bias_draws``, so pooling pooled estimates
            gives the mean over all their draws.

    Returns:
        The first estimate with ``gram``, ``zeta2_per_point`` and ``zeta2`` averaged
        (weighted by each estimate's ``bias_draws``) and ``bias_draws`` their total (a
        single estimate is returned as it is).

    Raises:
        ConfigError: No estimates, or two that differ in points or clients.
    """
    items = list(estimates)
    if not items:
        raise ConfigError("pool_bias_over_draws needs at least one estimate")
    first = items[0]
    if len(items) == 1:
        return first
    shape = (len(first.gram), len(first.zeta2_per_point),
             first.gram[0].shape if first.gram else None)
    for j, e in enumerate(items[1:], start=1):
        other = (len(e.gram), len(e.zeta2_per_point), e.gram[0].shape if e.gram else None)
        if other != shape:
            raise ConfigError(
                f"estimate {j} has (points, zeta points, Gram shape) {other}, the first "
                f"{shape}: only pilots of the same clients and points can be pooled"
            )
    weights = [e.bias_draws for e in items]
    grams = []
    for k in range(len(first.gram)):
        mat = np.average([np.asarray(e.gram[k], dtype=np.float64) for e in items], axis=0,
                         weights=weights)
        mat.setflags(write=False)
        grams.append(mat)
    zeta = tuple(
        float(v) for v in np.average([e.zeta2_per_point for e in items], axis=0,
                                     weights=weights)
    ) if first.zeta2_per_point else ()
    return dataclasses.replace(
        first, gram=tuple(grams), zeta2_per_point=zeta,
        zeta2=max(zeta) if zeta else first.zeta2,
        bias_draws=sum(weights),
    )


def estimate_constants_for_config(config: SystemConfig, **kwargs: Any) -> ConstantsEstimate:
    """:func:`estimate_constants` on the data, partition and initial model of a config.

    Uses :func:`raysync.workload.build_workload`, so the clients' data and ``w_0`` are
    exactly those the simulator and the runtime train on; the minibatch size is the
    algorithm's and the seed the config's unless given.

    Args:
        config: The system configuration.
        **kwargs: Further keyword arguments of :func:`estimate_constants`.

    Returns:
        The estimate.
    """
    from raysync.workload import build_workload

    workload = build_workload(config)
    kwargs.setdefault("batch_size", config.algorithm.batch_size)
    kwargs.setdefault("seed", config.seed)
    clients = [workload.client_data(i) for i in range(workload.num_clients)]
    return estimate_constants(
        workload.make_computer(), clients, workload.initial_params, **kwargs
    )
