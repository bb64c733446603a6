"""The convergence bound ``B_K(p, C)`` of Generalized AsyncSGD and its two criteria.

docs/theory.md section 5. With ``V = sigma^2 + 2 M^2``, ``S(p) = (1/n^2) sum_i 1/p_i`` (variance
inflation of importance weighting) and ``Dbar(p, C) = (1/n) sum_i E[D_i]`` (mean relative
delay of the average client), after ``K`` updates with step ``eta``::

    B_K(p, C) = 4 A / (eta K)                     # optimisation term
              + 2 eta L V S(p)                    # variance term
              + 2 eta^2 L^2 V S(p) Dbar(p, C)     # staleness term

valid for ``eta <= 1 / (4 L S (1 + eta L Dbar))``, i.e. ``eta <= eta_max`` with
``eta_max = 1 / (2 L (S + sqrt(S^2 + S Dbar)))`` (the positive root of the quadratic
``4 L^2 S Dbar eta^2 + 4 L S eta - 1 = 0``, written without cancellation).

Two criteria (docs/theory.md section 3):

* ``"per-update"`` (3a): ``K`` is fixed; minimised at ``C = 1``.
* ``"wall-clock"`` (3b): ``K = Lambda(p, C) T`` for a time budget ``T``; the optimum trades
  update throughput ``Lambda`` against staleness and is interior in ``C``.

The step size is either fixed or optimised: ``B = a / eta + b eta + c eta^2`` is convex in
``eta > 0``, so the best admissible step is ``min(eta_root, eta_max)`` where ``eta_root`` is
the positive root of ``2 c eta^3 + b eta^2 - a = 0`` (:func:`optimal_step_size`).

``Lambda`` and ``E[D_i]`` come from :mod:`raysync.queueing` (exact MVA). Gradients with
respect to ``p`` (:meth:`BoundObjective.value_and_grad`, the optimisers' hot path) are
computed in numpy: the bound's closed-form partials in ``(S, Lambda, Dbar)`` are pulled back
through the MVA recursion by its reverse-mode (adjoint) pass
(:func:`raysync.queueing.mva_forward`, :meth:`raysync.queueing.MVATape.vjp`), ``O(nC)``
with no torch graph. :meth:`BoundObjective.torch_value` keeps a differentiable torch
version of the same formula (autograd through the torch MVA) for torch users; both give
the same gradient to rounding. The formulas of this module are plain arithmetic that
broadcasts over numpy arrays and torch tensors alike (:func:`bound_from_statistics`), so a
whole ``C`` curve is evaluated at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, cast

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from raysync._validation import (
    bound_constants_problem,
    check_number,
    check_probabilities,
    describe_typed_number,
    first_index,
)
from raysync.exceptions import ConfigError

if TYPE_CHECKING:
    from raysync.queueing import MVATape

__all__ = [
    "CRITERIA",
    "AsyncSGDStatistics",
    "BoundCurve",
    "BoundObjective",
    "BoundTerms",
    "Criterion",
    "ProblemConstants",
    "asyncsgd_statistics",
    "bound_from_statistics",
    "check_routing",
    "mean_delay",
    "optimal_step_size",
    "step_size_cap",
    "variance_inflation",
]

Criterion: TypeAlias = Literal["per-update", "wall-clock"]
#: Names of the two criteria: (3a) loss per update, (3b) loss per unit of wall-clock time.
CRITERIA: tuple[str, ...] = ("per-update", "wall-clock")

FloatArray: TypeAlias = NDArray[np.float64]
#: ``(client_latency, server_rate)`` of the latency and server stations, or None (neither).
Stations: TypeAlias = "tuple[NDArray[np.float64] | None, float | None] | None"


# --------------------------------------------------------------------------- validation
_number = check_number


def _rates(mu: ArrayLike) -> FloatArray:
    if isinstance(mu, str | bytes):
        raise ConfigError(f"mu must be a sequence of service rates, got {mu!r}")
    try:
        array = np.array(mu, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"mu must be a sequence of service rates, got {mu!r}") from exc
    if array.ndim != 1 or array.size == 0:
        raise ConfigError(f"mu must be a non-empty 1-D sequence, got shape {array.shape}")
    j = first_index(~np.isfinite(array) | (array <= 0))
    if j is not None:
        raise ConfigError(f"mu[{j}] must be a finite service rate > 0, got {float(array[j])!r}")
    array.setflags(write=False)
    return array


def check_routing(p: ArrayLike, n: int, *, atol: float = 1e-9) -> FloatArray:
    """Validate routing probabilities and return them as a read-only float64 array.

    Args:
        p: One probability per client, each ``> 0``, summing to 1 within ``atol``.
        n: Number of clients.
        atol: Tolerance on ``sum(p) == 1``; ``p`` is renormalised exactly afterwards.

    Returns:
        ``p / sum(p)`` as float64.

    Raises:
        ConfigError: Wrong length, a non-positive or non-finite entry, or a bad sum.
    """
    if isinstance(p, str | bytes):
        raise ConfigError(f"p must be a sequence of probabilities, got {p!r}")
    try:
        array = np.array(p, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"p must be a sequence of probabilities, got {p!r}") from exc
    if array.ndim != 1 or array.size != n:
        raise ConfigError(f"p must have one entry per client (n={n}), got shape {array.shape}")
    check_probabilities(array)
    total = math.fsum(array.tolist())
    if abs(total - 1.0) > atol:
        raise ConfigError(f"p must sum to 1, got sum={total:.12g} for {n} clients")
    array = array / total
    array.setflags(write=False)
    return array


def _concurrency(value: object, name: str = "concurrency") -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _check_time_budget(
    time_budget: float,
    mu: FloatArray,
    server_rate: float | None = None,
    name: str = "time_budget",
) -> None:
    """Refuse a budget giving fewer than one update, or more than floats can hold.

    Any design's update throughput is at most ``sum_i mu_i`` (every client busy) and at
    most the server's update rate, so ``K = Lambda T <= T min(sum_i mu_i, mu_server)``;
    the same rule as ``raysync tune``'s budget check.
    """
    lam_max = float(np.sum(mu))
    fastest = f"the fastest possible fleet (all {mu.size} clients busy) applies"
    if server_rate is not None and server_rate < lam_max:
        lam_max = float(server_rate)
        fastest = "the server's update rate (server.update_time) caps every design at"
    k_max = time_budget * lam_max
    if k_max < 1.0:
        raise ConfigError(
            f"{name} {time_budget:g} s is too short for one update (Lambda T < 1): "
            f"{fastest} {lam_max:.4g} updates/s, so it needs at least {1.0 / lam_max:.4g} s"
        )
    # 4 A / K and K^2 (in the gradient) must stay normal floats.
    if not k_max < 1e150:
        raise ConfigError(
            f"{name} {time_budget:g} s gives up to K = T x {lam_max:.4g} = {k_max:.3g} "
            f"updates, beyond the float range of the bound (K must be < 1e150)"
        )


def check_time_budget(
    time_budget: float,
    mu: ArrayLike,
    *,
    server_rate: float | None = None,
    name: str = "time_budget",
) -> None:
    """Refuse a wall-clock budget the bound cannot use, before any pilot run.

    The rules of :class:`BoundObjective`'s ``time_budget``, which need only the rates:
    a finite number > 0, at least one update (``T Lambda_max >= 1``) and fewer than
    ``1e150`` (``T Lambda_max < 1e150``), where ``Lambda_max = min(sum_i mu_i,
    server_rate)`` bounds every design's update throughput.

    Args:
        time_budget: ``T``, in the time unit of ``mu``.
        mu: Service rates, shape ``(n,)``.
        server_rate: Rate of the server's update station (None: instantaneous updates).
        name: What the budget is called in the message (e.g. ``"--budget"``).

    Raises:
        ConfigError: One line naming the budget and the rule it breaks.
    """
    _check_time_budget(_number(name, time_budget), _rates(mu), server_rate, name)


def check_fixed_step(eta: float, constants: ProblemConstants, *, name: str = "eta") -> float:
    """Refuse a fixed step whose bound terms are beyond the float range.

    ``B = 4 A / (eta K) + 2 eta L V S + 2 eta^2 L^2 V S Dbar`` (docs/theory.md section 3,
    eq. (2) of arXiv 2405.17083): ``4 A / eta`` and ``2 eta^2 L^2 V`` must be finite
    before ``K``, ``S`` and ``Dbar`` scale them. Such a step is far outside the step
    condition ``eta <= 1 / (4 L)`` under which the bound holds.

    Args:
        eta: The step, ``> 0``.
        constants: ``L``, ``sigma^2``, ``M^2``, ``A``.
        name: What the step is called in the message (e.g. ``"algorithm.lr"``).

    Returns:
        ``eta`` as a float.

    Raises:
        ConfigError: ``eta`` is not a finite number > 0, or one of the products is beyond
            the float range.
    """
    eta = _number(name, eta)
    L, v, A = constants.L, constants.noise, constants.A  # noqa: N806
    if not (math.isfinite(2.0 * eta * eta * L * L * v) and math.isfinite(4.0 * A / eta)):
        raise ConfigError(
            f"{name} = {eta:g} puts the bound's terms beyond the float range with L = {L:g}, "
            f"sigma2 + 2 M2 = {v:g}, A = {A:g} (2 eta^2 L^2 (sigma2 + 2 M2) and 4 A / eta "
            f"must stay below 1.8e308); the bound holds only for steps <= 1 / (4 L) = "
            f"{0.25 / L:.3g}"
        )
    return eta


# --------------------------------------------------------------------------- constants
@dataclass(frozen=True, kw_only=True)
class ProblemConstants:
    """Constants of the convergence analysis (docs/theory.md section 3).

    Attributes:
        L: Smoothness constant of every ``f_i`` (``> 0``).
        sigma2: Bound ``sigma^2`` on the variance of a client's stochastic gradient
            (``> 0``).
        M2: Heterogeneity bound ``M^2 >= max_i ||grad f_i - grad f||^2`` (``>= 0``; 0 for
            identical clients).
        A: Initial suboptimality ``f(w_0) - f*`` (``> 0``).
    """

    L: float
    sigma2: float
    M2: float
    A: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "L", _number("constants.L", self.L))
        object.__setattr__(self, "sigma2", _number("constants.sigma2", self.sigma2))
        object.__setattr__(self, "M2", _number("constants.M2", self.M2, allow_zero=True))
        object.__setattr__(self, "A", _number("constants.A", self.A))
        problem = bound_constants_problem(self.L, self.sigma2, self.M2, self.A)
        if problem is not None:
            raise ConfigError(
                f"constants L={self.L:g}, sigma2={self.sigma2:g}, M2={self.M2:g}, "
                f"A={self.A:g} {problem}"
            )

    @property
    def noise(self) -> float:
        """``V = sigma^2 + 2 M^2``, the noise level of one client's gradient."""
        return self.sigma2 + 2.0 * self.M2

    @classmethod
    def parse(cls, text: str, *, flag: str | None = None) -> ProblemConstants:
        """Parse ``"L,sigma2,M2,A"`` (four comma-separated numbers).

        Args:
            text: E.g. ``"1.0,0.5,0.1,2.3"``.
            flag: The command-line flag the text came from (e.g. ``"--constants"``); an
                error then starts with the flag and the text, so it names what was typed.

        Returns:
            The validated constants.

        Raises:
            ConfigError: Not four numbers, or a value breaks its rule.
        """
        try:
            parts = [part.strip() for part in str(text).split(",")]
            if len(parts) != 4:
                raise ConfigError(
                    f"constants must be four comma-separated numbers L,sigma2,M2,A, got "
                    f"{text!r}"
                )
            try:
                values = [float(part) for part in parts]
            except ValueError as exc:
                raise ConfigError(
                    f"constants must be four comma-separated numbers L,sigma2,M2,A, got "
                    f"{text!r}"
                ) from exc
            for name, part, value in zip(("L", "sigma2", "M2", "A"), parts, values, strict=True):
                if not math.isfinite(value):
                    raise ConfigError(
                        f"constants.{name} must be finite, got {describe_typed_number(part)}"
                    )
            return cls(L=values[0], sigma2=values[1], M2=values[2], A=values[3])
        except ConfigError as exc:
            if flag is None:
                raise
            raise ConfigError(f"{flag} {text!r}: {exc}") from None

    def to_dict(self) -> dict[str, float]:
        """Return ``{"L": ..., "sigma2": ..., "M2": ..., "A": ...}``."""
        return {"L": self.L, "sigma2": self.sigma2, "M2": self.M2, "A": self.A}


# --------------------------------------------------------------------------- formulas
def variance_inflation(p: ArrayLike) -> FloatArray | float:
    """``S(p) = (1/n^2) sum_i 1/p_i`` (``>= 1``, equal to 1 iff ``p`` is uniform).

    Args:
        p: Routing probabilities, shape ``(n,)`` or a batch ``(..., n)`` (not validated).

    Returns:
        ``S(p)``: a float for one routing, an array of shape ``(...)`` for a batch.
    """
    array = np.asarray(p, dtype=np.float64)
    out = np.sum(1.0 / array, axis=-1) / array.shape[-1] ** 2
    return float(out) if out.ndim == 0 else out


def mean_delay(relative_delay: ArrayLike) -> FloatArray | float:
    """``Dbar = (1/n) sum_i E[D_i]``, over the last axis (so a ``(C, n)`` curve works).

    Args:
        relative_delay: Per-client mean relative delays ``E[D_i]``, shape ``(..., n)``.

    Returns:
        The mean over clients (a float for a 1-D input).
    """
    array = np.asarray(relative_delay, dtype=np.float64)
    out = array.mean(axis=-1)
    return float(out) if out.ndim == 0 else out


def step_size_cap(L: Any, S: Any, Dbar: Any) -> Any:  # noqa: N803 (the theory's names)
    """Largest step with ``eta <= 1 / (4 L S (1 + eta L Dbar))`` (exact, broadcasting).

    The condition is the quadratic ``4 L^2 S Dbar eta^2 + 4 L S eta - 1 <= 0``; its positive
    root, written without cancellation, is ``1 / (2 L (S + sqrt(S^2 + S Dbar)))``
    (``1 / (4 L S)`` at ``Dbar = 0``).

    Args:
        L: Smoothness constant.
        S: Variance inflation ``S(p)`` (array or tensor allowed).
        Dbar: Mean delay ``Dbar(p, C)`` (array or tensor allowed).

    Returns:
        ``eta_max`` with the broadcast shape (a torch tensor if any input is one).
    """
    if isinstance(S, torch.Tensor) or isinstance(Dbar, torch.Tensor):
        return 1.0 / (2.0 * L * (S + torch.sqrt(S * S + S * Dbar)))
    s = np.asarray(S, dtype=np.float64)
    d = np.asarray(Dbar, dtype=np.float64)
    out = 1.0 / (2.0 * L * (s + np.sqrt(s * s + s * d)))
    return float(out) if out.ndim == 0 else out


def optimal_step_size(a: ArrayLike, b: ArrayLike, c: ArrayLike) -> Any:
    """Minimiser over ``eta > 0`` of ``a / eta + b eta + c eta^2`` (``a, b > 0``, ``c >= 0``).

    It is the unique positive root of ``2 c eta^3 + b eta^2 - a = 0``. With
    ``eta0 = sqrt(a / b)`` (the root at ``c = 0``) and ``eta = eta0 / x``, the cubic becomes
    the depressed cubic ``x^3 - x - g = 0`` with the single parameter
    ``g = 2 c eta0 / b >= 0`` and its largest real root ``x >= 1``. That root is taken in
    closed form (Cardano's formula written as ``u + 1 / (3 u)`` when
    ``g^2 / 4 > 1 / 27``, the trigonometric form otherwise; both free of cancellation),
    then polished by two Newton steps. For ``g > 1e6`` the scale ``(a / 2c)^(1/3)`` is used
    instead (``eta = (a / 2c)^(1/3) y``, ``y^3 + g^(-2/3) y^2 - 1 = 0``, Newton from
    ``y = 1``), and every scale is formed in logarithms, so nothing overflows. Relative
    error is at the level of float64 rounding over the whole float64 range.

    Args:
        a: Coefficient of ``1 / eta`` (``> 0``); arrays broadcast.
        b: Coefficient of ``eta`` (``> 0``).
        c: Coefficient of ``eta^2`` (``>= 0``).

    Returns:
        The optimal ``eta``: a float for scalar inputs, else an array.

    Raises:
        ConfigError: If ``a`` or ``b`` is not ``> 0`` or ``c`` is negative.
    """
    a_arr, b_arr, c_arr = np.broadcast_arrays(
        np.asarray(a, dtype=np.float64),
        np.asarray(b, dtype=np.float64),
        np.asarray(c, dtype=np.float64),
    )
    if np.any(~(a_arr > 0)) or np.any(~(b_arr > 0)) or np.any(~(c_arr >= 0)):
        raise ConfigError(
            "optimal_step_size needs a > 0, b > 0 and c >= 0 (finite), got "
            f"a={a!r}, b={b!r}, c={c!r}"
        )
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        log_a, log_b, log_c = np.log(a_arr), np.log(b_arr), np.log(c_arr)
        eta0 = np.exp(0.5 * (log_a - log_b))
        g = np.exp(math.log(2.0) + log_c + 0.5 * (log_a - log_b) - log_b)  # 0 when c = 0
        # one real root when g^2/4 > 1/27: x = u + 1/(3u), u = cbrt(g/2 + sqrt(g^2/4 - 1/27))
        threshold = 2.0 / math.sqrt(27.0)
        half = g / 2.0
        root_disc = half * np.sqrt(np.maximum(0.0, 1.0 - 4.0 / (27.0 * np.square(g))))
        u = np.cbrt(half + root_disc)
        x_cardano = u + 1.0 / (3.0 * u)
        # three real roots otherwise: the largest is 2/sqrt(3) cos(acos(g 3 sqrt(3) / 2) / 3)
        arg = np.clip(g * 1.5 * math.sqrt(3.0), -1.0, 1.0)
        x_trig = (2.0 / math.sqrt(3.0)) * np.cos(np.arccos(arg) / 3.0)
        x = np.where(g > threshold, x_cardano, x_trig)
        for _ in range(2):  # Newton polish on h(x) = x^3 - x - g; h'(x) = 3x^2 - 1 >= 2
            x = x - (x * x * x - x - g) / (3.0 * x * x - 1.0)
        eta_small_g = eta0 / x
        # g > 1e6 (possibly overflowing): scale by eta1 = (a / 2c)^(1/3) instead, eta =
        # eta1 y with y^3 + h y^2 - 1 = 0, h = g^(-2/3) < 1e-4; Newton from y = 1 (where
        # the convex increasing left side is >= 0) converges monotonically.
        log_eta1 = (log_a - math.log(2.0) - log_c) / 3.0
        h = np.exp(log_b + 2.0 * log_eta1 - log_a)
        y = np.ones_like(h)
        for _ in range(6):
            y = y - (y * y * y + h * y * y - 1.0) / (3.0 * y * y + 2.0 * h * y)
        eta_large_g = np.exp(log_eta1) * y
        eta = np.where(g > 1e6, eta_large_g, eta_small_g)
    return float(eta) if eta.ndim == 0 else eta


# --------------------------------------------------------------------------- the bound
def bound_from_statistics(
    *,
    constants: ProblemConstants,
    eta: Any,
    num_updates: Any,
    S: Any,  # noqa: N803
    Dbar: Any,  # noqa: N803
) -> tuple[Any, Any, Any]:
    """The three terms of ``B_K`` from the queueing statistics (broadcasting arithmetic).

    Works on floats, numpy arrays and torch tensors (differentiable).

    Args:
        constants: ``L``, ``sigma^2``, ``M^2``, ``A``.
        eta: Step size.
        num_updates: ``K`` (for the wall-clock criterion, ``Lambda T``).
        S: Variance inflation ``S(p)``.
        Dbar: Mean relative delay ``Dbar(p, C)``.

    Returns:
        ``(optimization, variance, staleness)``: ``4 A / (eta K)``, ``2 eta L V S`` and
        ``2 eta^2 L^2 V S Dbar`` with ``V = sigma^2 + 2 M^2``.
    """
    L = constants.L  # noqa: N806
    v = constants.noise
    optimization = 4.0 * constants.A / (eta * num_updates)
    variance = 2.0 * eta * L * v * S
    staleness = 2.0 * eta * eta * L * L * v * S * Dbar
    return optimization, variance, staleness


def _step_coefficients(
    constants: ProblemConstants,
    num_updates: Any,
    S: Any,
    Dbar: Any,  # noqa: N803
) -> tuple[Any, Any, Any]:
    """``(a, b, c)`` of ``B = a / eta + b eta + c eta^2``."""
    L = constants.L  # noqa: N806
    v = constants.noise
    return 4.0 * constants.A / num_updates, 2.0 * L * v * S, 2.0 * L * L * v * S * Dbar


@dataclass(frozen=True, kw_only=True)
class BoundTerms:
    """The bound at one ``(p, C, eta)``, term by term.

    Attributes:
        criterion: ``"per-update"`` or ``"wall-clock"``.
        value: ``B = optimization + variance + staleness``.
        optimization: ``4 A / (eta K)``.
        variance: ``2 eta L (sigma^2 + 2 M^2) S(p)``.
        staleness: ``2 eta^2 L^2 (sigma^2 + 2 M^2) S(p) Dbar(p, C)``.
        eta: Step size used.
        eta_max: Largest step allowed by the step-size condition at this ``(p, C)``.
        admissible: Whether ``eta <= eta_max`` (the bound is proven only then).
        num_updates: ``K`` (``Lambda T`` for the wall-clock criterion).
        variance_inflation: ``S(p)``.
        mean_delay: ``Dbar(p, C)``.
        throughput: Update throughput ``Lambda(p, C)``.
        concurrency: ``C``.
    """

    criterion: str
    value: float
    optimization: float
    variance: float
    staleness: float
    eta: float
    eta_max: float
    admissible: bool
    num_updates: float
    variance_inflation: float
    mean_delay: float
    throughput: float
    concurrency: int

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe mapping of every field."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, kw_only=True, eq=False)
class BoundCurve:
    """The bound at a fixed ``p`` for every ``C' = 1..C_max`` (one MVA pass).

    Attributes:
        concurrency: ``C'`` values, shape ``(C_max,)``.
        value: Bound per ``C'``.
        optimization: Optimisation term per ``C'``.
        variance: Variance term per ``C'``.
        staleness: Staleness term per ``C'``.
        eta: Step per ``C'`` (constant when the step is fixed).
        eta_max: Step cap per ``C'``.
        num_updates: ``K`` per ``C'``.
        mean_delay: ``Dbar`` per ``C'``.
        throughput: ``Lambda(C')``.
        relative_delay: ``E[D_i]`` at each ``C'``, shape ``(C_max, n)``.
        variance_inflation: ``S(p)``.
    """

    concurrency: NDArray[np.int64]
    value: FloatArray
    optimization: FloatArray
    variance: FloatArray
    staleness: FloatArray
    eta: FloatArray
    eta_max: FloatArray
    num_updates: FloatArray
    mean_delay: FloatArray
    throughput: FloatArray
    relative_delay: FloatArray
    variance_inflation: float

    @property
    def best_index(self) -> int:
        """Index of the smallest bound (the first one on ties)."""
        return int(np.argmin(self.value))

    @property
    def best_concurrency(self) -> int:
        """``C'`` with the smallest bound."""
        return int(self.concurrency[self.best_index])


@dataclass(frozen=True, kw_only=True)
class AsyncSGDStatistics:
    """Queueing numbers of plain AsyncSGD (return to sender, ``C = n``).

    Each client holds exactly one task, so clients run independent service cycles: the
    update throughput is ``sum_i mu_i`` and, since the other clients complete as
    independent stationary renewal processes of total rate ``sum_j mu_j - mu_i``, a task
    of client ``i`` (mean duration ``1 / mu_i``) is passed by
    ``E[D_i] = (sum_j mu_j - mu_i) / mu_i`` updates on average (``sum_i p_i E[D_i] = n - 1``
    with ``p_i = mu_i / sum_j mu_j``, the empirical routing).

    Attributes:
        p: Empirical routing ``mu_i / sum_j mu_j``.
        throughput: ``sum_i mu_i``.
        relative_delay: ``E[D_i]``.
        concurrency: ``n``.
    """

    p: FloatArray
    throughput: float
    relative_delay: FloatArray
    concurrency: int


def asyncsgd_statistics(mu: ArrayLike) -> AsyncSGDStatistics:
    """Queueing numbers of AsyncSGD (see :class:`AsyncSGDStatistics`).

    Args:
        mu: Service rates, one per client.

    Returns:
        Throughput, empirical routing and per-client delays, from
        :func:`raysync.queueing.analyze_independent_cycles`.
    """
    from raysync.queueing import analyze_independent_cycles

    rates = _rates(mu)
    cycles = analyze_independent_cycles(rates)
    p = rates / cycles.throughput
    p.setflags(write=False)
    return AsyncSGDStatistics(
        p=p,
        throughput=cycles.throughput,
        relative_delay=cycles.mean_relative_delay,
        concurrency=cycles.concurrency,
    )


# --------------------------------------------------------------------------- queueing
def _analyze_curve(
    mu: FloatArray, p: FloatArray, max_concurrency: int, stations: Stations = None
) -> tuple[FloatArray, FloatArray]:
    """``Lambda(C')`` (shape ``(C,)``) and ``E[D_i](C')`` (shape ``(C, n)``), one MVA pass.

    Read-only arrays, bit for bit those of ``analyze(..., method="mva", curve=True)`` (the
    tape runs the same arithmetic) without building a :class:`ClosedNetwork` and a result.
    """
    tape = _queueing_tape(mu, p, max_concurrency, stations)
    lam = tape.throughput_curve()
    delay = tape.delay_curve()
    lam.setflags(write=False)
    delay.setflags(write=False)
    return lam, delay


def _analyze_point(
    mu: FloatArray, p: FloatArray, concurrency: int, stations: Stations = None
) -> tuple[float, FloatArray]:
    """``Lambda(C)`` and ``E[D_i](C)`` by exact MVA (latency and server stations included)."""
    from raysync.queueing import ClosedNetwork, analyze

    latency, rate = stations or (None, None)
    network = ClosedNetwork(
        mu=mu, p=p, concurrency=concurrency, client_latency=latency, server_rate=rate
    )
    result = analyze(network, method="mva")
    return float(result.throughput), np.array(result.mean_relative_delay, dtype=np.float64)


def _queueing_tape(
    mu: FloatArray, p: FloatArray, concurrency: int, stations: Stations = None
) -> MVATape:
    """One MVA pass for populations ``0..C`` kept for reverse-mode derivatives."""
    from raysync.queueing import mva_forward

    if stations is None:
        return mva_forward(mu, p, concurrency)
    latency, rate = stations
    return mva_forward(mu, p, concurrency, client_latency=latency, server_rate=rate)


def _queueing_torch(
    mu: torch.Tensor, p: torch.Tensor, concurrency: int, stations: Stations = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``Lambda(C)`` and ``E[D_i]`` as differentiable float64 tensors (queueing engine)."""
    from raysync.queueing import throughput_and_delays_torch

    if stations is None:
        return throughput_and_delays_torch(mu, p, concurrency)
    latency, rate = stations
    return throughput_and_delays_torch(
        mu,
        p,
        concurrency,
        client_latency=None if latency is None else torch.tensor(latency, dtype=torch.float64),
        server_rate=rate,
    )


# --------------------------------------------------------------------------- objective
@dataclass(frozen=True, kw_only=True, eq=False)
class BoundObjective:
    """The bound as a function of ``(p, C)`` for one fleet, criterion and step policy.

    Construction validates every field. ``eta="optimal"`` evaluates each ``(p, C)`` with its
    best admissible step (:func:`optimal_step_size` capped by :func:`step_size_cap`);
    a number fixes the step (then :attr:`BoundTerms.admissible` reports whether the
    step-size condition holds; the bound is proven only where it does).

    Attributes:
        mu: Service rates ``mu_i > 0``.
        constants: ``L``, ``sigma^2``, ``M^2``, ``A``.
        criterion: ``"per-update"`` (fixed ``K = num_updates``) or ``"wall-clock"``
            (``K = Lambda(p, C) time_budget``).
        eta: A fixed step ``> 0`` or ``"optimal"``.
        num_updates: ``K`` for the per-update criterion (required there).
        time_budget: ``T`` for the wall-clock criterion (required there), in the time unit
            of ``mu``.
        client_latency: Per-client mean communication delay ``Z_i >= 0`` (downlink plus
            uplink), shape ``(n,)``; None: no latency stations (docs/network.md).
        server_rate: Rate of the server's update station (None: instantaneous updates).
            It caps the throughput at ``server_rate``, so beyond some ``C`` added
            concurrency only adds staleness.
    """

    mu: FloatArray
    constants: ProblemConstants
    criterion: str = "wall-clock"
    eta: float | str = "optimal"
    num_updates: float | None = None
    time_budget: float | None = None
    client_latency: FloatArray | None = None
    server_rate: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mu", _rates(self.mu))
        if self.client_latency is not None or self.server_rate is not None:
            from raysync.queueing import ClosedNetwork

            # Validated by the network's own rules (one entry per client, >= 0, rate > 0).
            net = ClosedNetwork(
                mu=self.mu,
                p=np.full(self.mu.size, 1.0 / self.mu.size),
                concurrency=1,
                client_latency=self.client_latency,
                server_rate=self.server_rate,
            )
            object.__setattr__(self, "client_latency", net.client_latency)
            object.__setattr__(self, "server_rate", net.server_rate)
        if not isinstance(self.constants, ProblemConstants):
            raise ConfigError(
                f"constants must be a ProblemConstants, got {type(self.constants).__name__}"
            )
        if self.criterion not in CRITERIA:
            raise ConfigError(
                f"criterion must be one of {', '.join(CRITERIA)}, got {self.criterion!r}"
            )
        if isinstance(self.eta, str):
            if self.eta != "optimal":
                raise ConfigError(f"eta must be a number > 0 or 'optimal', got {self.eta!r}")
        else:
            object.__setattr__(self, "eta", check_fixed_step(self.eta, self.constants))
        if self.criterion == "per-update":
            if self.num_updates is None:
                raise ConfigError("num_updates (K) is required for the per-update criterion")
            object.__setattr__(self, "num_updates", _number("num_updates", self.num_updates))
        if self.criterion == "wall-clock":
            if self.time_budget is None:
                raise ConfigError("time_budget (T) is required for the wall-clock criterion")
            object.__setattr__(self, "time_budget", _number("time_budget", self.time_budget))
            _check_time_budget(self.time_budget, self.mu, self.server_rate)

    # ------------------------------------------------------------------ helpers
    @property
    def n_clients(self) -> int:
        """Number of clients ``n``."""
        return int(self.mu.size)

    @property
    def optimizes_step(self) -> bool:
        """Whether the step is optimised per ``(p, C)``."""
        return isinstance(self.eta, str)

    def check_p(self, p: ArrayLike) -> FloatArray:
        """Validate ``p`` for this fleet (see :func:`check_routing`)."""
        return check_routing(p, self.n_clients)

    @property
    def stations(self) -> Stations:
        """``(client_latency, server_rate)``, or None when the model has neither station."""
        if self.client_latency is None and self.server_rate is None:
            return None
        return (self.client_latency, self.server_rate)

    def _num_updates(self, throughput: Any) -> Any:
        if self.criterion == "wall-clock":
            return throughput * cast(float, self.time_budget)
        if isinstance(throughput, np.ndarray):
            return np.full_like(throughput, cast(float, self.num_updates))
        return cast(float, self.num_updates)

    def _step(self, k: Any, s: Any, dbar: Any) -> tuple[Any, Any]:
        """(eta, eta_max) in numpy."""
        cap = step_size_cap(self.constants.L, s, dbar)
        if self.optimizes_step:
            a, b, c = _step_coefficients(self.constants, k, s, dbar)
            return np.minimum(optimal_step_size(a, b, c), cap), cap
        eta = cast(float, self.eta)
        return (np.full_like(cap, eta) if isinstance(cap, np.ndarray) else eta), cap

    def _terms(
        self, s: float, throughput: float, delay: FloatArray, concurrency: int
    ) -> BoundTerms:
        dbar = float(np.mean(delay))
        k = float(self._num_updates(throughput))
        eta, cap = self._step(k, s, dbar)
        eta = float(eta)
        opt, var, stale = bound_from_statistics(
            constants=self.constants, eta=eta, num_updates=k, S=s, Dbar=dbar
        )
        return BoundTerms(
            criterion=self.criterion,
            value=float(opt + var + stale),
            optimization=float(opt),
            variance=float(var),
            staleness=float(stale),
            eta=eta,
            eta_max=float(cap),
            admissible=bool(eta <= float(cap) * (1.0 + 1e-12)),
            num_updates=k,
            variance_inflation=float(s),
            mean_delay=dbar,
            throughput=float(throughput),
            concurrency=int(concurrency),
        )

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, p: ArrayLike, concurrency: int) -> BoundTerms:
        """The bound at ``(p, C)``, term by term.

        Args:
            p: Routing probabilities (validated).
            concurrency: ``C >= 1``.

        Returns:
            The terms, step, throughput and mean delay.
        """
        return self.evaluate_with_delays(p, concurrency)[0]

    def evaluate_with_delays(self, p: ArrayLike, concurrency: int) -> tuple[BoundTerms, FloatArray]:
        """Like :meth:`evaluate`, also returning the per-client delays ``E[D_i]``.

        Args:
            p: Routing probabilities (validated).
            concurrency: ``C >= 1``.

        Returns:
            ``(terms, relative_delay)``.
        """
        probs = self.check_p(p)
        c = _concurrency(concurrency)
        lam, delay = _analyze_point(self.mu, probs, c, self.stations)
        terms = self._terms(float(variance_inflation(probs)), lam, delay, c)
        return terms, delay

    def value(self, p: ArrayLike, concurrency: int) -> float:
        """The bound's value at ``(p, C)`` (see :meth:`evaluate`)."""
        return self.evaluate(p, concurrency).value

    def curve(self, p: ArrayLike, max_concurrency: int) -> BoundCurve:
        """The bound for every ``C' = 1..max_concurrency`` at a fixed ``p`` (one MVA pass).

        Args:
            p: Routing probabilities (validated).
            max_concurrency: Largest ``C'``.

        Returns:
            Arrays over ``C'``; :attr:`BoundCurve.best_concurrency` is the scan's optimum.
        """
        probs = self.check_p(p)
        cmax = _concurrency(max_concurrency, "max_concurrency")
        lam, delay = _analyze_curve(self.mu, probs, cmax, self.stations)
        s = float(variance_inflation(probs))
        dbar = delay.mean(axis=1)
        opt, var, stale, eta, cap, k = self._curve_terms(s, lam, dbar)
        return BoundCurve(
            concurrency=np.arange(1, cmax + 1, dtype=np.int64),
            value=opt + var + stale,
            optimization=opt,
            variance=var,
            staleness=stale,
            eta=eta,
            eta_max=np.asarray(cap, dtype=np.float64),
            num_updates=k,
            mean_delay=dbar,
            throughput=lam,
            relative_delay=delay,
            variance_inflation=s,
        )

    def _curve_terms(
        self, s: float, lam: FloatArray, dbar: FloatArray
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
        """``(optimization, variance, staleness, eta, eta_max, K)`` over a ``C'`` curve."""
        k = np.asarray(self._num_updates(lam), dtype=np.float64)
        eta, cap = self._step(k, s, dbar)
        eta = np.asarray(eta, dtype=np.float64)
        opt, var, stale = bound_from_statistics(
            constants=self.constants, eta=eta, num_updates=k, S=s, Dbar=dbar
        )
        return opt, var, stale, eta, cap, k

    def envelope_value_and_grad(
        self, p: ArrayLike, max_concurrency: int
    ) -> tuple[float, FloatArray, int]:
        """``F(p) = min_{C <= C_max} B(p, C)``, its gradient in ``p`` and the minimising ``C``.

        One MVA pass to ``C_max`` stored on a tape gives the whole ``C'`` curve of the bound
        (as :meth:`curve`, except that ``Dbar(C')`` is summed as one matrix-vector product
        without forming ``E[D_i](C')``, so it may differ from :attr:`BoundCurve.mean_delay`
        in the last bits); the reverse
        pass at the best ``C*`` gives ``grad_p B(p, C*)``, the gradient of ``F`` wherever
        ``C*`` is unique (Danskin). Equals :meth:`value_and_grad` at ``C*`` to rounding,
        at the cost of a single forward pass.

        Args:
            p: Routing probabilities, shape ``(n,)``, all ``> 0`` (the sum is not checked).
            max_concurrency: Largest ``C`` considered.

        Returns:
            ``(F, dF/dp, C*)`` with ``C*`` the smallest minimiser.
        """
        probs = np.asarray(p, dtype=np.float64)
        if probs.shape != (self.n_clients,) or np.any(~(probs > 0)):
            raise ConfigError(
                f"p must be {self.n_clients} positive numbers, got shape {probs.shape}"
            )
        cmax = _concurrency(max_concurrency, "max_concurrency")
        tape = _queueing_tape(self.mu, probs, cmax, self.stations)
        n = self.n_clients
        lam = tape.throughput_path[1:]
        # Dbar(C') = (1/n) sum_i Q_i(C'-1) / p_i (+ mean(Z) Lambda(C'-1) + Q_s(C'-1) with
        # stations); einsum rather than a BLAS product: no threads to contend for
        dbar = np.einsum("kn,n->k", tape.queue_path[:-1], 1.0 / probs) / n
        if self.stations is not None:
            dbar = dbar + float(tape.z.mean()) * tape.throughput_path[:-1]
            dbar = dbar + tape.server_queue_path[:-1]
        s = float(variance_inflation(probs))
        opt, var, stale, _, _, _ = self._curve_terms(s, lam, dbar)
        best = int(np.argmin(opt + var + stale)) + 1
        value, grad = self._tape_value_and_grad(tape, probs, best)
        return value, grad, best

    def torch_value(self, p: torch.Tensor, concurrency: int) -> torch.Tensor:
        """The bound as a differentiable float64 torch scalar of ``p``.

        ``p`` is used as given (not renormalised), so gradients are those of the formula
        in the ambient space; project them on ``sum_i v_i = 0`` for simplex directions.
        With ``eta="optimal"`` the gradient is exact: where the step is the interior
        minimiser, ``dB/deta = 0`` (envelope theorem) and the step is held constant;
        where the cap binds, the cap's closed form is differentiated.

        Args:
            p: Routing probabilities, float64 tensor of shape ``(n,)``.
            concurrency: ``C >= 1``.

        Returns:
            ``B`` as a 0-d tensor.
        """
        c = _concurrency(concurrency)
        mu = torch.tensor(np.array(self.mu), dtype=torch.float64)
        lam, delay = _queueing_torch(mu, p, c, self.stations)
        n = self.n_clients
        s = torch.sum(1.0 / p) / (n * n)
        dbar = torch.mean(delay)
        k = self._num_updates(lam)
        if self.optimizes_step:
            cap = step_size_cap(self.constants.L, s, dbar)
            a, b, cc = _step_coefficients(
                self.constants,
                float(k.detach()) if isinstance(k, torch.Tensor) else k,
                float(s.detach()),
                float(dbar.detach()),
            )
            root = float(optimal_step_size(a, b, cc))
            binds = float(cap.detach()) < root
            eta: Any = cap if binds else torch.tensor(root, dtype=torch.float64)
        else:
            eta = cast(float, self.eta)
        opt, var, stale = bound_from_statistics(
            constants=self.constants, eta=eta, num_updates=k, S=s, Dbar=dbar
        )
        return cast(torch.Tensor, opt + var + stale)

    def _value_and_partials(
        self, s: float, throughput: float, dbar: float
    ) -> tuple[float, float, float, float]:
        """``B`` and its partials ``(dB/dS, dB/dLambda, dB/dDbar)`` at given statistics.

        The same function of ``(S, Lambda, Dbar)`` as :meth:`torch_value`: with
        ``eta="optimal"`` the interior optimal step is held constant (envelope theorem) and
        a binding cap ``eta_max(S, Dbar)`` is differentiated.

        Raises:
            ConfigError: A partial is beyond the float range (``K**2`` underflows at a
                design that applies almost no update in ``T``).
        """
        if self.criterion == "wall-clock":
            time_budget = cast(float, self.time_budget)
            k = throughput * time_budget
            dk_dlam = time_budget
        else:
            k = cast(float, self.num_updates)
            dk_dlam = 0.0
        try:
            out = self._partials_at(k, dk_dlam, s, dbar)
        except (ZeroDivisionError, OverflowError):
            out = (math.inf,) * 4
        if not all(math.isfinite(x) for x in out):
            # K**2 underflows (or a partial overflows) when a design applies almost no
            # update in T: a fleet whose slowest rate is ~1e-300 of the others, or whose
            # link delays or server time are that long
            if self.stations is None:
                why = "the rates are too far apart for this budget: raise the budget or drop "
                why += "the slowest clients"
            else:
                why = "the service rates, link delays or server time are too slow for this "
                why += "budget: raise the budget, or drop the slowest clients or delays"
            raise ConfigError(
                f"the bound's gradient is beyond the float range at a design with K = "
                f"{k:.3g} updates (Lambda = {throughput:.3g} updates/s); {why}"
            )
        return out

    def _partials_at(
        self, k: float, dk_dlam: float, s: float, dbar: float
    ) -> tuple[float, float, float, float]:
        """:meth:`_value_and_partials` at ``K = k`` (``dK/dLambda = dk_dlam``)."""
        L = self.constants.L  # noqa: N806
        v = self.constants.noise
        binds = False
        if self.optimizes_step:
            cap = float(step_size_cap(L, s, dbar))
            a, b, cc = _step_coefficients(self.constants, k, s, dbar)
            root = float(optimal_step_size(a, b, cc))
            binds = cap < root
            eta = cap if binds else root
        else:
            eta = cast(float, self.eta)
        opt, var, stale = bound_from_statistics(
            constants=self.constants, eta=eta, num_updates=k, S=s, Dbar=dbar
        )
        value = float(opt + var + stale)
        d_k = -4.0 * self.constants.A / (eta * k * k)
        d_s = 2.0 * eta * L * v + 2.0 * eta * eta * L * L * v * dbar
        d_dbar = 2.0 * eta * eta * L * L * v * s
        if binds:
            # eta = eta_max = 1 / (2 L (S + r)), r = sqrt(S^2 + S Dbar)
            d_eta = (
                -4.0 * self.constants.A / (eta * eta * k)
                + 2.0 * L * v * s
                + (4.0 * eta * L * L * v * s * dbar)
            )
            r = math.sqrt(s * s + s * dbar)
            scale = -2.0 * L * eta * eta
            d_s += d_eta * scale * (1.0 + (2.0 * s + dbar) / (2.0 * r))
            d_dbar += d_eta * scale * s / (2.0 * r)
        return value, d_s, d_k * dk_dlam, d_dbar

    def value_and_grad(self, p: ArrayLike, concurrency: int) -> tuple[float, FloatArray]:
        """The bound and its gradient with respect to ``p`` (ambient space).

        Computed in numpy (no torch): one MVA pass stored on a tape
        (:func:`raysync.queueing.mva_forward`), the closed-form partials of the bound in
        ``(S, Lambda, Dbar)``, and one reverse (adjoint) pass through the MVA recursion
        (:meth:`raysync.queueing.MVATape.vjp`), ``O(nC)``. The value and gradient are those
        of :meth:`torch_value` with autograd (to rounding); see there for what the gradient
        means off the simplex.

        Args:
            p: Routing probabilities, shape ``(n,)``, all ``> 0`` (the sum is not checked,
                so finite differences may step off the simplex).
            concurrency: ``C >= 1``.

        Returns:
            ``(B, dB/dp)``.
        """
        probs = np.asarray(p, dtype=np.float64)
        if probs.shape != (self.n_clients,) or np.any(~(probs > 0)):
            raise ConfigError(
                f"p must be {self.n_clients} positive numbers, got shape {probs.shape}"
            )
        c = _concurrency(concurrency)
        tape = _queueing_tape(self.mu, probs, c, self.stations)
        return self._tape_value_and_grad(tape, probs, c)

    def _tape_value_and_grad(
        self, tape: MVATape, probs: FloatArray, concurrency: int
    ) -> tuple[float, FloatArray]:
        """``(B, dB/dp)`` at ``C' = concurrency`` from a stored MVA pass of ``probs``."""
        n = self.n_clients
        lam = tape.throughput(concurrency)
        delay = tape.delays(concurrency)
        inv_p = 1.0 / probs
        s = float(np.sum(inv_p)) / (n * n)
        dbar = float(np.mean(delay))
        value, d_s, d_lam, d_dbar = self._value_and_partials(s, lam, dbar)
        grad, _ = tape.vjp(
            grad_throughput=d_lam, grad_delay=np.full(n, d_dbar / n), concurrency=concurrency
        )
        grad -= (d_s / (n * n)) * (inv_p * inv_p)  # dS/dp_i = -1 / (n^2 p_i^2)
        return value, grad

    def terms_for_statistics(
        self,
        *,
        p: ArrayLike,
        throughput: float,
        relative_delay: Sequence[float] | FloatArray,
        concurrency: int,
    ) -> BoundTerms:
        """The bound from given queueing numbers (e.g. AsyncSGD's, or a simulation's).

        Args:
            p: Routing probabilities used for ``S(p)`` (validated).
            throughput: Update throughput ``Lambda``.
            relative_delay: Per-client mean delays ``E[D_i]``.
            concurrency: ``C`` reported with the terms.

        Returns:
            The terms.
        """
        probs = self.check_p(p)
        delay = np.asarray(relative_delay, dtype=np.float64)
        if delay.shape != (self.n_clients,):
            raise ConfigError(
                f"relative_delay must have one entry per client (n={self.n_clients}), "
                f"got shape {delay.shape}"
            )
        lam = _number("throughput", throughput)
        return self._terms(float(variance_inflation(probs)), lam, delay, _concurrency(concurrency))

    def asyncsgd_terms(self) -> BoundTerms:
        """The bound for AsyncSGD with ``C = n`` (an approximation, see below).

        AsyncSGD returns each task to its sender and applies unweighted gradients, so it is
        not the Generalized AsyncSGD the bound is proven for. As a yardstick the bound is
        evaluated with AsyncSGD's queueing numbers (:func:`asyncsgd_statistics`:
        throughput ``sum_i mu_i``, ``E[D_i] = (sum_j mu_j - mu_i) / mu_i``) and its empirical
        routing ``p_i = mu_i / sum_j mu_j`` in ``S(p)``.

        With latency stations the cycles last ``Z_i + 1 / mu_i``
        (:func:`raysync.queueing.predict`); with a server station they interact through
        its queue and have no closed form here.

        Returns:
            The terms at ``C = n``.

        Raises:
            ConfigError: The objective has a server station.
        """
        if self.server_rate is not None:
            raise ConfigError(
                "AsyncSGD (return to sender) with a server station has no closed form; "
                "simulate it instead"
            )
        stats = asyncsgd_statistics(self.mu)
        if self.client_latency is not None:
            from raysync.queueing.predict import _cycles_with_latency

            cycles = _cycles_with_latency(self.mu, self.client_latency)
            stats = AsyncSGDStatistics(
                p=cycles.client_throughput / cycles.throughput,
                throughput=cycles.throughput,
                relative_delay=cycles.mean_relative_delay,
                concurrency=cycles.concurrency,
            )
        return self.terms_for_statistics(
            p=stats.p,
            throughput=stats.throughput,
            relative_delay=stats.relative_delay,
            concurrency=stats.concurrency,
        )
