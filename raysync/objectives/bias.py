"""A bound that also covers unweighted (biased) updates (docs/theory.md section 6).

The section-5 bound covers only importance-weighted, unbiased Generalized AsyncSGD. With
update shares ``q_i`` (``p_i`` under random routing, ``mu_i / sum mu`` for return to
sender) and weights ``w_i = (1 / (n q_i)) ** beta``, ``beta in [0, 1]``, the expected
server step is ``sum_i r_i grad f_i`` with ``r_i = q_i w_i / sum_j q_j w_j``: the server
descends ``f_r = sum_i r_i f_i`` rather than ``f``. Since
``||grad f||^2 <= 2 ||grad f_r||^2 + 2 ||grad f_r - grad f||^2``, in the wall-clock
criterion (``K = Lambda T``)::

    B_T = 8 A / (eta K)                               # optimisation  (2 x section 5)
        + 4 eta L V S_beta                            # variance      (2 x section 5)
        + 4 eta^2 L^2 V S_beta Dbar_r                 # staleness     (2 x section 5)
        + bias(r)                                     # price of bias, does not decay

with ``V = sigma^2 + 2 M^2``, ``S_beta = sum_i q_i w_i^2 / (sum_i q_i w_i)^2`` (``S(p)`` at
``beta = 1``, 1 at ``beta = 0``) and ``Dbar_r = sum_i r_i E[D_i]``. Two bias terms:

* ``"cauchy-schwarz"``: ``2 n ||r - u||^2 zeta^2`` with
  ``zeta^2 = (1/n) sum_i ||grad f_i - grad f||^2`` (``u`` uniform). Since
  ``sum_i (r_i - u_i) = 0``, ``grad f_r - grad f = sum_i (r_i - u_i)(grad f_i - grad f)``
  and Cauchy-Schwarz gives the bound.
* ``"direct"`` (tighter): ``2 b(r)``, ``b(r) = max_k (r - u)^T H_k (r - u)`` with ``H_k``
  the centred Gram matrices of the per-client full gradients at pilot points ``k``
  (:class:`~raysync.objectives.ConstantsEstimate.gram`). ``(r - u)^T H (r - u) <=
  ||r - u||^2 trace(H) = n ||r - u||^2 zeta^2``, so ``direct <= cauchy-schwarz``.

The step is the section-5 step for ``(S_beta, Dbar_r)``: the bias term does not depend on
``eta`` and the factor 2 does not move the minimiser, so ``eta`` is the positive root of
``2 c eta^3 + b eta^2 - a = 0`` capped by ``1 / (2 L (S + sqrt(S^2 + S Dbar)))``.

The gradient in ``(p, beta)`` (:meth:`BiasAwareBound.value_and_grad`) is exact: the
closed-form partials in ``(S_beta, Lambda, Dbar_r, r)``, chained through ``r(q, beta)``
and ``S_beta(q, beta)``, plus the queueing engine's reverse-mode MVA for
``dLambda/dp`` and ``dE[D_i]/dp`` (:meth:`raysync.queueing.MVATape.vjp`).

Sources: docs/theory.md section 6 (ours); the section-5 bound after Leconte et al. (arXiv
2405.00017) and Alahyane et al. (arXiv 2502.08206, eq. for ``J_T``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize as sopt

from raysync.exceptions import ConfigError
from raysync.objectives.bounds import (
    BoundObjective,
    ProblemConstants,
    _concurrency,
    _number,
    _queueing_tape,
    _rates,
    check_routing,
)
from raysync.objectives.design import DesignPoint

__all__ = [
    "BIAS_KINDS",
    "BiasAwareBound",
    "BiasEnergyChoice",
    "BiasOptimum",
    "BiasTerms",
    "bias_weights",
    "optimize_bias_aware",
    "optimize_bias_aware_with_energy",
]

FloatArray = NDArray[np.float64]

#: The two bias terms: Cauchy-Schwarz with ``zeta^2``, or the direct Gram-matrix form.
BIAS_KINDS: tuple[str, ...] = ("direct", "cauchy-schwarz")
_TERM_NAMES = ("optimization", "variance", "staleness", "bias")
_LOGIT_BOUND = 40.0


def bias_weights(q: ArrayLike, beta: float) -> tuple[FloatArray, FloatArray, float]:
    """Weights, effective client mix and variance inflation of exponent ``beta``.

    Args:
        q: Update shares ``q_i > 0``, shape ``(n,)`` (summing to 1).
        beta: Exponent in ``[0, 1]``.

    Returns:
        ``(w, r, S_beta)``: ``w_i = (n q_i) ** -beta``, ``r_i = q_i w_i / sum_j q_j w_j``
        and ``S_beta = sum_i q_i w_i^2 / (sum_i q_i w_i)^2``.
    """
    shares = np.asarray(q, dtype=np.float64)
    n = shares.size
    w = (n * shares) ** (-float(beta))
    a = shares * w
    s1 = float(a.sum())
    s2 = float(np.dot(a, w))
    return w, a / s1, s2 / (s1 * s1)


@dataclass(frozen=True, kw_only=True)
class BiasTerms:
    """The bias-aware bound at one design point, term by term.

    Attributes:
        value: ``B_T``, the sum of the four terms.
        optimization: ``8 A / (eta K)``.
        variance: ``4 eta L V S_beta``.
        staleness: ``4 eta^2 L^2 V S_beta Dbar_r``.
        bias: The bias term (``bias_kind``).
        bias_kind: ``"direct"`` or ``"cauchy-schwarz"``.
        dominant: Name of the largest term.
        eta: The bound's step (optimal or fixed).
        eta_max: The step cap.
        admissible: Whether ``eta <= eta_max``.
        num_updates: ``K = Lambda T``.
        throughput: ``Lambda`` (updates per unit time).
        variance_inflation: ``S_beta``.
        mean_delay: ``Dbar_r = sum_i r_i E[D_i]``.
        bias_distance: ``||r - u||^2``.
        concurrency: ``C``.
        beta: Weight exponent.
        rule: ``"asyncsgd"`` or ``"weighted"``.
        r: Effective client mix ``r``, shape ``(n,)``.
        relative_delay: ``E[D_i]``, shape ``(n,)``.
    """

    value: float
    optimization: float
    variance: float
    staleness: float
    bias: float
    bias_kind: str
    dominant: str
    eta: float
    eta_max: float
    admissible: bool
    num_updates: float
    throughput: float
    variance_inflation: float
    mean_delay: float
    bias_distance: float
    concurrency: int
    beta: float
    rule: str
    r: tuple[float, ...]
    relative_delay: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe mapping of every field."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in fields(self)
        }


def _dominant(values: Sequence[float]) -> str:
    return _TERM_NAMES[int(np.argmax(values))]


@dataclass(frozen=True, kw_only=True, eq=False)
class BiasAwareBound:
    """The bias-aware wall-clock bound ``B_T(p, C, beta)`` of docs/theory.md section 6.

    Attributes:
        mu: Service rates ``mu_i > 0``, shape ``(n,)``.
        constants: ``L``, ``sigma^2``, ``M^2``, ``A`` (section 5).
        time_budget: ``T`` (time unit of ``mu``).
        zeta2: Heterogeneity ``zeta^2 >= 0`` (needed for ``"cauchy-schwarz"``).
        gram: Centred Gram matrices ``H_k``, each ``(n, n)`` symmetric positive
            semi-definite (needed for ``"direct"``).
        bias_kind: ``"direct"`` or ``"cauchy-schwarz"``.
        eta: ``"optimal"`` or a fixed step ``> 0``.
        client_latency: Per-client mean link delays (docs/network.md; None: none).
        server_rate: Rate of the server's update station (None: instantaneous).

    Raises:
        ConfigError: A bad field, or the data the chosen bias term needs is missing.
    """

    mu: FloatArray
    constants: ProblemConstants
    time_budget: float
    zeta2: float | None = None
    gram: tuple[FloatArray, ...] = ()
    bias_kind: str = "direct"
    eta: float | str = "optimal"
    client_latency: FloatArray | None = None
    server_rate: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mu", _rates(self.mu))
        n = self.mu.size
        if self.bias_kind not in BIAS_KINDS:
            raise ConfigError(
                f"bias_kind must be one of {', '.join(BIAS_KINDS)}, got {self.bias_kind!r}"
            )
        if self.zeta2 is not None:
            object.__setattr__(self, "zeta2", _number("zeta2", self.zeta2, allow_zero=True))
        grams = []
        for k, h in enumerate(self.gram):
            mat = np.array(h, dtype=np.float64)
            if mat.shape != (n, n) or not np.all(np.isfinite(mat)):
                raise ConfigError(
                    f"gram[{k}] must be a finite ({n}, {n}) matrix, got shape {mat.shape}"
                )
            mat = 0.5 * (mat + mat.T)
            mat.setflags(write=False)
            grams.append(mat)
        object.__setattr__(self, "gram", tuple(grams))
        if self.bias_kind == "direct" and not grams:
            raise ConfigError("bias_kind 'direct' needs at least one Gram matrix (gram)")
        if self.bias_kind == "cauchy-schwarz" and self.zeta2 is None:
            raise ConfigError("bias_kind 'cauchy-schwarz' needs zeta2")
        # The section-5 objective supplies the step rule and the partials in (S, Lambda, Dbar).
        object.__setattr__(
            self,
            "_base",
            BoundObjective(
                mu=self.mu, constants=self.constants, criterion="wall-clock", eta=self.eta,
                time_budget=self.time_budget, client_latency=self.client_latency,
                server_rate=self.server_rate,
            ),
        )

    @classmethod
    def from_estimate(
        cls, mu: ArrayLike, estimate: Any, *, time_budget: float, bias_kind: str = "direct",
        eta: float | str = "optimal", client_latency: ArrayLike | None = None,
        server_rate: float | None = None,
    ) -> BiasAwareBound:
        """Build the bound from a :class:`~raysync.objectives.ConstantsEstimate`.

        Args:
            mu: Service rates.
            estimate: The pilot's estimate (constants, ``zeta2``, ``gram``).
            time_budget: ``T``.
            bias_kind: ``"direct"`` or ``"cauchy-schwarz"``.
            eta: ``"optimal"`` or a fixed step.
            client_latency: Per-client mean link delays (docs/network.md; None: none).
            server_rate: Rate of the server's update station (None: instantaneous).

        Returns:
            The bound.
        """
        return cls(
            mu=np.asarray(mu, dtype=np.float64), constants=estimate.constants,
            time_budget=time_budget, zeta2=estimate.zeta2, gram=tuple(estimate.gram),
            bias_kind=bias_kind, eta=eta,
            client_latency=None if client_latency is None else np.asarray(client_latency),
            server_rate=server_rate,
        )

    @property
    def n_clients(self) -> int:
        """``n``."""
        return int(self.mu.size)

    # ------------------------------------------------------------------ bias term
    def bias_value_and_grad(self, r: ArrayLike) -> tuple[float, FloatArray]:
        """The bias term at ``r`` and its gradient with respect to ``r`` (exact).

        Args:
            r: Effective client mix, shape ``(n,)``.

        Returns:
            ``(bias, d bias / d r)``; for ``"direct"`` the gradient is that of the
            maximising Gram matrix (a subgradient at ties).
        """
        mix = np.asarray(r, dtype=np.float64)
        d = mix - 1.0 / self.n_clients
        if self.bias_kind == "cauchy-schwarz":
            z2 = float(self.zeta2 or 0.0)
            return 2.0 * self.n_clients * z2 * float(d @ d), 4.0 * self.n_clients * z2 * d
        values = [float(d @ h @ d) for h in self.gram]
        k = int(np.argmax(values))
        return 2.0 * max(values[k], 0.0), 4.0 * (self.gram[k] @ d)

    # ------------------------------------------------------------------ evaluation
    def _statistics(
        self, point: DesignPoint
    ) -> tuple[FloatArray, float, FloatArray]:
        """``(q, Lambda, E[D_i])`` of a point covered by the bound."""
        n = self.n_clients
        stations = self._base.stations  # type: ignore[attr-defined]
        if point.rule == "asyncsgd":
            from raysync.queueing import analyze_independent_cycles
            from raysync.queueing.predict import _cycles_with_latency

            if self.server_rate is not None:
                raise ConfigError(
                    "AsyncSGD (return to sender) with a server station has no closed form; "
                    "simulate it instead"
                )
            if self.client_latency is not None:
                cycles = _cycles_with_latency(self.mu, self._base.client_latency)  # type: ignore[attr-defined]
            else:
                cycles = analyze_independent_cycles(self.mu)
            lam = float(cycles.throughput)
            return (
                cycles.client_throughput / lam, lam,
                np.asarray(cycles.mean_relative_delay, dtype=np.float64),
            )  # fmt: skip
        if point.rule != "weighted":
            raise ConfigError(
                f"the bias-aware bound covers the SGD rules (asyncsgd, weighted), not "
                f"{point.rule!r}"
            )
        assert point.p is not None
        p = check_routing(point.p, n)
        tape = _queueing_tape(self.mu, p, point.concurrency, stations)
        return p, tape.throughput(point.concurrency), tape.delays(point.concurrency)

    def covers(self, point: DesignPoint) -> bool:
        """Whether the bound applies to the point's rule (the SGD rules)."""
        return point.rule in ("asyncsgd", "weighted")

    def evaluate(self, point: DesignPoint) -> BiasTerms:
        """The bound at a design point, term by term (its own ``eta``, not ``point.lr``).

        Args:
            point: An ``asyncsgd`` or ``weighted`` point for this fleet.

        Returns:
            The terms.

        Raises:
            ConfigError: A FedAsync/FedBuff point (not covered) or a bad point.
        """
        q, lam, delay = self._statistics(point)
        return self.terms_for_statistics(
            q=q, throughput=lam, relative_delay=delay, beta=point.beta,
            concurrency=point.concurrency, rule=point.rule,
        )

    def terms_for_statistics(
        self, *, q: ArrayLike, throughput: float, relative_delay: ArrayLike, beta: float,
        concurrency: int, rule: str = "weighted",
    ) -> BiasTerms:
        """The terms from given queueing numbers (e.g. a simulation's).

        Args:
            q: Update shares, shape ``(n,)``.
            throughput: ``Lambda``.
            relative_delay: ``E[D_i]``, shape ``(n,)``.
            beta: Weight exponent.
            concurrency: ``C`` (reported).
            rule: Rule name (reported).

        Returns:
            The terms.
        """
        shares = np.asarray(q, dtype=np.float64)
        delay = np.asarray(relative_delay, dtype=np.float64)
        _, r, s = bias_weights(shares, beta)
        dbar = float(np.dot(r, delay))
        base: BoundObjective = self._base  # type: ignore[attr-defined]
        k = float(throughput) * float(self.time_budget)
        eta, cap = base._step(k, s, dbar)
        eta = float(eta)
        from raysync.objectives.bounds import bound_from_statistics

        opt, var, stale = bound_from_statistics(
            constants=self.constants, eta=eta, num_updates=k, S=s, Dbar=dbar
        )
        bias, _ = self.bias_value_and_grad(r)
        terms = [2.0 * float(opt), 2.0 * float(var), 2.0 * float(stale), bias]
        d = r - 1.0 / self.n_clients
        return BiasTerms(
            value=float(sum(terms)),
            optimization=terms[0],
            variance=terms[1],
            staleness=terms[2],
            bias=terms[3],
            bias_kind=self.bias_kind,
            dominant=_dominant(terms),
            eta=eta,
            eta_max=float(cap),
            admissible=bool(eta <= float(cap) * (1.0 + 1e-12)),
            num_updates=k,
            throughput=float(throughput),
            variance_inflation=float(s),
            mean_delay=dbar,
            bias_distance=float(d @ d),
            concurrency=int(concurrency),
            beta=float(beta),
            rule=rule,
            r=tuple(float(v) for v in r),
            relative_delay=tuple(float(v) for v in delay),
        )

    # ------------------------------------------------------------------ gradients
    def _chain(
        self, q: FloatArray, beta: float, d_s: float, grad_r: FloatArray
    ) -> tuple[FloatArray, float]:
        """Pull ``dB/dS`` and ``dB/dr`` back to ``(q, beta)``."""
        n = q.size
        w = (n * q) ** (-beta)
        a = q * w
        b = a * w
        s1 = float(a.sum())
        s2 = float(b.sum())
        r = a / s1
        # r = a / s1:  dB/da_i = (g_i - <g, r>) / s1; S = s2 / s1^2.
        d_a = (grad_r - float(np.dot(grad_r, r))) / s1 - 2.0 * d_s * s2 / s1**3
        d_b = np.full(n, d_s / (s1 * s1))
        log_nq = np.log(n * q)
        d_q = d_a * (1.0 - beta) * a / q + d_b * (1.0 - 2.0 * beta) * b / q
        d_beta = float(np.dot(d_a, -log_nq * a) + np.dot(d_b, -2.0 * log_nq * b))
        return d_q, d_beta

    def value_and_grad(
        self, p: ArrayLike, concurrency: int, beta: float
    ) -> tuple[float, FloatArray, float]:
        """``B_T`` of a ``weighted`` point and its exact gradient in ``(p, beta)``.

        ``p`` is used as given (ambient space, not renormalised), so finite differences
        may step off the simplex. With ``eta="optimal"`` the interior step is held fixed
        (envelope theorem) and a binding cap is differentiated (as in section 5).

        Args:
            p: Routing, shape ``(n,)``, all ``> 0``.
            concurrency: ``C >= 1``.
            beta: Exponent in ``[0, 1]``.

        Returns:
            ``(B, dB/dp, dB/dbeta)``.
        """
        probs = self._positive(p)
        c = _concurrency(concurrency)
        tape = _queueing_tape(self.mu, probs, c, self._base.stations)  # type: ignore[attr-defined]
        return self._tape_value_and_grad(tape, probs, c, float(beta))

    def _positive(self, p: ArrayLike) -> FloatArray:
        probs = np.asarray(p, dtype=np.float64)
        if probs.shape != (self.n_clients,) or np.any(~(probs > 0)):
            raise ConfigError(
                f"p must be {self.n_clients} positive numbers, got shape {probs.shape}"
            )
        return probs

    def _tape_value_and_grad(
        self, tape: Any, probs: FloatArray, c: int, beta: float
    ) -> tuple[float, FloatArray, float]:
        base: BoundObjective = self._base  # type: ignore[attr-defined]
        lam = tape.throughput(c)
        delay = tape.delays(c)
        _, r, s = bias_weights(probs, beta)
        dbar = float(np.dot(r, delay))
        value, d_s, d_lam, d_dbar = base._value_and_partials(s, lam, dbar)
        bias, g_bias = self.bias_value_and_grad(r)
        grad_r = 2.0 * d_dbar * delay + g_bias
        d_q, d_beta = self._chain(probs, beta, 2.0 * d_s, grad_r)
        d_p, _ = tape.vjp(
            grad_throughput=2.0 * d_lam, grad_delay=2.0 * d_dbar * r, concurrency=c
        )
        return 2.0 * value + bias, d_p + d_q, d_beta

    def envelope_value_and_grad(
        self, p: ArrayLike, beta: float, max_concurrency: int
    ) -> tuple[float, FloatArray, float, int]:
        """``min_{C <= C_max} B_T(p, C, beta)``, its gradient and the minimising ``C``.

        One MVA pass to ``C_max`` gives the whole ``C`` curve; the reverse pass at the
        best ``C*`` gives the gradient (Danskin, where ``C*`` is unique).

        Args:
            p: Routing, shape ``(n,)``, all ``> 0``.
            beta: Exponent in ``[0, 1]``.
            max_concurrency: Largest ``C``.

        Returns:
            ``(F, dF/dp, dF/dbeta, C*)``.
        """
        probs = self._positive(p)
        cmax = _concurrency(max_concurrency, "max_concurrency")
        base: BoundObjective = self._base  # type: ignore[attr-defined]
        tape = _queueing_tape(self.mu, probs, cmax, base.stations)
        core, _, _ = self._tape_curve(tape, probs, float(beta))
        best = int(np.argmin(core)) + 1
        value, grad_p, grad_beta = self._tape_value_and_grad(tape, probs, best, float(beta))
        return value, grad_p, grad_beta, best

    def curve(
        self, p: ArrayLike, beta: float, max_concurrency: int
    ) -> tuple[FloatArray, FloatArray]:
        """``B_T(p, C, beta)`` and ``Lambda(p, C)`` for every ``C = 1..max_concurrency``.

        Args:
            p: Routing, shape ``(n,)``, all ``> 0``.
            beta: Exponent in ``[0, 1]``.
            max_concurrency: Largest ``C``.

        Returns:
            ``(values, throughput)``, each shape ``(max_concurrency,)``, entry ``C - 1``
            for ``C`` tasks (one MVA pass).
        """
        probs = self._positive(p)
        cmax = _concurrency(max_concurrency, "max_concurrency")
        tape = _queueing_tape(self.mu, probs, cmax, self._base.stations)  # type: ignore[attr-defined]
        core, bias, lam = self._tape_curve(tape, probs, float(beta))
        return 2.0 * core + bias, lam

    def _tape_curve(
        self, tape: Any, probs: FloatArray, beta: float
    ) -> tuple[FloatArray, float, FloatArray]:
        """``(opt + var + stale of section 5 per C, bias term, Lambda per C)``."""
        base: BoundObjective = self._base  # type: ignore[attr-defined]
        _, r, s = bias_weights(probs, beta)
        lam = tape.throughput_path[1:]
        dbar = (tape.queue_path[:-1] / probs) @ r
        if base.stations is not None:  # sum_i r_i (Z_i Lambda(C-1) + Q_s(C-1)), sum r = 1
            dbar = dbar + float(tape.z @ r) * tape.throughput_path[:-1]
            dbar = dbar + tape.server_queue_path[:-1]
        opt, var, stale, _, _, _ = base._curve_terms(s, lam, dbar)
        # The bias term does not depend on C, so the argmin over C is that of the core.
        bias, _ = self.bias_value_and_grad(r)
        core = np.asarray(opt + var + stale, dtype=np.float64)
        return core, float(bias), np.asarray(lam, dtype=np.float64)


# --------------------------------------------------------------------------- optimiser
@dataclass(frozen=True, kw_only=True)
class BiasOptimum:
    """The minimiser of the bias-aware bound over the SGD part of the design space.

    Attributes:
        point: The best point (``lr`` set to the bound's own step; the step that runs is
            chosen separately, on validation data).
        terms: Its terms.
        candidates: Every evaluated candidate by label (the AsyncSGD point, uniform
            ``C = n``, and the end point of each optimiser start), best first.
        evaluations: Bound evaluations spent.
    """

    point: DesignPoint
    terms: BiasTerms
    candidates: tuple[tuple[str, DesignPoint, BiasTerms], ...]
    evaluations: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe mapping."""
        return {
            "point": self.point.to_dict(),
            "terms": self.terms.to_dict(),
            "candidates": [
                {"label": lab, "point": pt.to_dict(), "terms": t.to_dict()}
                for lab, pt, t in self.candidates
            ],
            "evaluations": self.evaluations,
        }


def _softmax(z: FloatArray) -> FloatArray:
    e = np.exp(z - z.max())
    return np.asarray(e / e.sum(), dtype=np.float64)


def optimize_bias_aware(
    bound: BiasAwareBound,
    *,
    max_concurrency: int,
    betas: Sequence[float] = (0.0, 1.0),
    fixed_beta: float | None = None,
    include_asyncsgd: bool = True,
    tol: float = 1e-9,
    max_iter: int = 300,
) -> BiasOptimum:
    """Minimise ``B_T`` over ``asyncsgd`` and ``weighted`` points ``(p, C, beta)``.

    From each start (``p`` uniform, ``∝ mu`` and ``∝ sqrt(mu)``, times each ``beta`` in
    ``betas``), L-BFGS-B minimises ``log min_C B_T(softmax(z), C, beta)`` over the logits
    ``z`` and ``beta in [0, 1]`` with the exact gradient (``C`` scanned on one MVA curve per
    evaluation). The AsyncSGD point (return to sender) has no continuous knob and is
    evaluated directly. Deterministic.

    Args:
        bound: The bound.
        max_concurrency: Largest ``C`` of the random-routing points.
        betas: Starting exponents.
        fixed_beta: Optimise ``(p, C)`` only, at this ``beta`` (e.g. 1 for the unbiased
            family alone).
        include_asyncsgd: Also evaluate the AsyncSGD point.
        tol: L-BFGS-B tolerance.
        max_iter: Iteration cap per start.

    Returns:
        The best point and every candidate.
    """
    if not isinstance(bound, BiasAwareBound):
        raise ConfigError(f"bound must be a BiasAwareBound, got {type(bound).__name__}")
    cmax = _concurrency(max_concurrency, "max_concurrency")
    tol = _number("tol", tol)
    mu = bound.mu
    n = mu.size
    candidates: list[tuple[str, DesignPoint, BiasTerms]] = []
    evaluations = 0
    # AsyncSGD with a server station has no closed form (docs/network.md): not a candidate.
    if include_asyncsgd and bound.server_rate is None:
        pt = DesignPoint(rule="asyncsgd", concurrency=n, p=None)
        candidates.append(("asyncsgd", pt, bound.evaluate(pt)))
    uniform = DesignPoint(rule="weighted", concurrency=n, p=(1.0 / n,) * n,
                          beta=1.0 if fixed_beta is None else fixed_beta)
    candidates.append(("uniform C=n", uniform, bound.evaluate(uniform)))
    starts_p = {"uniform": np.full(n, 1.0 / n), "p~mu": mu / mu.sum(),
                "p~sqrt(mu)": np.sqrt(mu) / np.sqrt(mu).sum()}
    start_betas = [float(fixed_beta)] if fixed_beta is not None else [float(b) for b in betas]
    for (label, p0) in starts_p.items():
        for b0 in start_betas:
            count = [0]

            def fun(x: FloatArray, count: list[int] = count) -> tuple[float, FloatArray]:
                count[0] += 1
                z, beta = x[:n], (float(x[n]) if fixed_beta is None else float(fixed_beta))
                p = _softmax(z)
                if np.any(p <= 0):
                    return math.inf, np.zeros_like(x)
                value, g_p, g_beta, _ = bound.envelope_value_and_grad(p, beta, cmax)
                if not (value > 0 and math.isfinite(value)):
                    return math.inf, np.zeros_like(x)
                g = g_p / value
                grad = np.empty_like(x)
                grad[:n] = p * (g - float(np.dot(p, g)))
                if fixed_beta is None:
                    grad[n] = g_beta / value
                return math.log(value), grad

            z0 = np.clip(np.log(p0) - np.log(p0).mean(), -_LOGIT_BOUND, _LOGIT_BOUND)
            x0 = z0 if fixed_beta is not None else np.append(z0, b0)
            bounds = [(-_LOGIT_BOUND, _LOGIT_BOUND)] * n
            if fixed_beta is None:
                bounds.append((0.0, 1.0))
            res = sopt.minimize(
                fun, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                options={"maxiter": max_iter, "ftol": tol, "gtol": tol, "maxcor": 20},
            )
            evaluations += count[0]
            x = np.asarray(res.x, dtype=np.float64)
            p = _softmax(x[:n])
            beta = float(np.clip(x[n], 0.0, 1.0)) if fixed_beta is None else float(fixed_beta)
            _, _, _, c = bound.envelope_value_and_grad(p, beta, cmax)
            evaluations += 1
            pt = DesignPoint(rule="weighted", concurrency=c, p=tuple(p), beta=beta)
            candidates.append((f"start {label}, beta0={b0:g}", pt, bound.evaluate(pt)))
    candidates.sort(key=lambda item: item[2].value)
    _, best_point, best_terms = candidates[0]
    best_point = DesignPoint(
        rule=best_point.rule, concurrency=best_point.concurrency, p=best_point.p,
        beta=best_point.beta, lr=best_terms.eta,
    )
    return BiasOptimum(
        point=best_point, terms=best_terms, candidates=tuple(candidates),
        evaluations=evaluations,
    )


# --------------------------------------------------------------------------- energy
@dataclass(frozen=True, kw_only=True)
class BiasEnergyChoice:
    """The bias-aware design chosen under an energy budget or price (docs/network.md).

    Attributes:
        optimum: The chosen point (``lr`` = the bound's step) with its terms, and the
            unconstrained optimiser's candidates.
        unconstrained: :func:`optimize_bias_aware` without the energy term.
        energy: Joules the chosen design spends over the run, ``P T``.
        power: Its mean power in watts.
        energy_budget: The budget in joules (None: none).
        energy_weight: The price of a joule in bound units (0: none).
        score: ``B_T + energy_weight * energy`` at the choice.
    """

    optimum: BiasOptimum
    unconstrained: BiasOptimum
    energy: float
    power: float
    energy_budget: float | None
    energy_weight: float
    score: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe mapping (the optimum's candidates included once)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["optimum"] = self.optimum.to_dict()
        out["unconstrained"] = {
            "point": self.unconstrained.point.to_dict(),
            "terms": self.unconstrained.terms.to_dict(),
        }
        return out


def optimize_bias_aware_with_energy(
    bound: BiasAwareBound,
    figures: Any,
    *,
    max_concurrency: int,
    energy_budget: float | None = None,
    energy_weight: float = 0.0,
    **kwargs: Any,
) -> BiasEnergyChoice:
    """Minimise ``B_T + energy_weight * energy`` subject to ``energy <= energy_budget``.

    The energy over the run is ``P T`` with the mean power ``P`` of
    :func:`raysync.objectives.energy.power_at` (busy/idle power from the utilisations
    ``U_i = q_i Lambda / mu_i``, two transfers per task, the server busy ``Lambda / nu``).
    As :func:`raysync.objectives.optimize.optimize_with_energy` does for the section-5
    bound, this is a scan, not a joint solve: the unconstrained optimum of
    :func:`optimize_bias_aware` is computed first; then every candidate it evaluated
    (each start's end point ``(p, beta)`` and uniform routing) is scanned over
    ``C = 1..max_concurrency`` on one MVA curve, the AsyncSGD point is taken as it is, and
    the best feasible pair is kept. With no budget and no price the unconstrained
    optimum is returned unchanged.

    Args:
        bound: The bias-aware bound (its stations included).
        figures: The fleet's :class:`~raysync.objectives.energy.PowerFigures`.
        max_concurrency: Largest ``C`` considered.
        energy_budget: Joules allowed over the run, ``> 0`` (None: no constraint).
        energy_weight: Price of a joule in units of the bound, ``>= 0``.
        **kwargs: Passed to :func:`optimize_bias_aware`.

    Returns:
        The choice with its energy figures.

    Raises:
        ConfigError: A bad budget or weight, a budget below the energy of every
            candidate (the message gives the least energy found), or a weight so large
            that no candidate's score is finite.
    """
    from raysync.objectives.energy import no_energy_choice, power_at

    if energy_budget is not None:
        if isinstance(energy_budget, bool) or not (
            isinstance(energy_budget, int | float)
            and math.isfinite(energy_budget)
            and energy_budget > 0
        ):
            raise ConfigError(
                f"energy_budget must be a finite number of joules > 0, got {energy_budget!r}"
            )
        energy_budget = float(energy_budget)
    if isinstance(energy_weight, bool) or not (
        isinstance(energy_weight, int | float)
        and math.isfinite(energy_weight)
        and energy_weight >= 0
    ):
        raise ConfigError(f"energy_weight must be a finite number >= 0, got {energy_weight!r}")
    cmax = _concurrency(max_concurrency, "max_concurrency")
    free = optimize_bias_aware(bound, max_concurrency=cmax, **kwargs)
    seconds = float(bound.time_budget)
    mu = bound.mu

    def watts(q: FloatArray, lam: float) -> float:
        return power_at(figures, mu=mu, p=q, throughput=lam, server_rate=bound.server_rate)

    free_power = watts(free.point.update_shares(mu), free.terms.throughput)
    if energy_budget is None and energy_weight == 0:
        return BiasEnergyChoice(
            optimum=free, unconstrained=free, energy=free_power * seconds, power=free_power,
            energy_budget=None, energy_weight=0.0, score=free.terms.value,
        )  # fmt: skip
    best: tuple[float, DesignPoint, float] | None = None
    least = math.inf
    scanned = 0
    evaluations = free.evaluations
    for _, point, terms in free.candidates:
        if point.rule == "asyncsgd":
            q = point.update_shares(mu)
            options = [(point, terms.value, watts(q, terms.throughput))]
        else:
            assert point.p is not None
            q = np.asarray(point.p, dtype=np.float64)
            values, lam = bound.curve(q, point.beta, cmax)
            evaluations += 1
            options = [
                (
                    DesignPoint(rule="weighted", concurrency=c + 1, p=point.p, beta=point.beta),
                    float(values[c]),
                    watts(q, float(lam[c])),
                )
                for c in range(cmax)
            ]
        scanned += 1
        for pt, value, power in options:
            energy = power * seconds
            least = min(least, energy)
            if energy_budget is not None and energy > energy_budget:
                continue
            score = value + energy_weight * energy
            if math.isfinite(score) and (best is None or score < best[0]):
                best = (score, pt, power)
    if best is None:
        raise no_energy_choice(
            energy_budget=energy_budget, energy_weight=energy_weight, least=least,
            scanned=f"C = 1..{cmax} at {scanned} candidate designs of {mu.size} clients",
        )
    score, point, power = best
    terms = bound.evaluate(point)
    chosen = BiasOptimum(
        point=dataclasses.replace(point, lr=terms.eta), terms=terms,
        candidates=free.candidates, evaluations=evaluations,
    )  # fmt: skip
    return BiasEnergyChoice(
        optimum=chosen, unconstrained=free, energy=power * seconds, power=power,
        energy_budget=energy_budget, energy_weight=float(energy_weight), score=score,
    )  # fmt: skip
