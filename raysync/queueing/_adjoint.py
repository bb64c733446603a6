"""Reverse-mode (adjoint) differentiation of the MVA recursion in numpy.

For a scalar objective ``F(Lambda, E[D])`` of the MVA outputs, the gradient with respect
to ``p`` and ``mu`` costs one forward pass that stores ``Q(k)``, ``Lambda(k)`` and
``Q_s(k)`` for ``k = 0..C`` (:func:`mva_forward`, an :class:`MVATape`) plus one reverse pass
over ``k = C..1`` (:meth:`MVATape.vjp`): ``O(nC)`` time and memory, a few numpy calls per
population step, no torch. It gives the same numbers as torch autograd through
:func:`~raysync.queueing.throughput_and_delays_torch` (to rounding) at a fraction of the
cost, because the loop carries one ``(n,)`` adjoint instead of recording a graph.

Forward recursion (docs/theory.md section 2, as in :mod:`raysync.queueing._mva`)::

    W_i(k)    = rho_i (1 + Q_i(k-1))            rho_i = p_i / mu_i
    W_s(k)    = rho_s (1 + Q_s(k-1))            server station (rho_s = 0 without one)
    den(k)    = sum_i W_i(k) + Z + W_s(k)       Z = sum_i p_i Z_i (latency stations)
    Lambda(k) = k / den(k)
    Q_i(k)    = Lambda(k) W_i(k),  Q_s(k) = Lambda(k) W_s(k)
    E[D_i](k) = Q_i(k-1) / p_i + Z_i Lambda(k-1) + Q_s(k-1)

Reverse recursion, with bars for adjoints (``dF / d.``) and ``W = Q / Lambda``::

    Lambdabar(k) += Qbar(k) . Q(k) / Lambda(k) + Qsbar(k) Q_s(k) / Lambda(k)
    denbar(k)     = -Lambda(k)^2 / k  Lambdabar(k)
    Wbar(k)       = Lambda(k) Qbar(k) + denbar(k)      (every i)
    Wsbar(k)      = Lambda(k) Qsbar(k) + denbar(k)
    Qbar(k-1)    += rho Wbar(k),  Qsbar(k-1) += rho_s Wsbar(k),  Zbar += denbar(k)
    rhobar        = sum_k Wbar(k) (1 + Q(k-1))         (one vectorised sum at the end)

then ``pbar = rhobar / mu + Z_i Zbar`` (plus the explicit ``-Q_i / p_i^2`` term of the
delays) and ``mubar = -rhobar rho / mu``.

Like the torch functions, ``p`` is treated as ``n`` free variables (not renormalised; see
:mod:`raysync.queueing.gradients`). The latency and server stations are supported in the
values and in the derivatives with respect to ``p`` and ``mu``, but are held fixed: their own
parameters (``latency``, ``client_latency``, ``server_rate``) get no derivative here; use the
torch functions for those.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from raysync.exceptions import ConfigError

__all__ = [
    "MVATape",
    "mva_curve_value_and_vjp",
    "mva_forward",
    "mva_value_and_vjp",
]

FloatArray = NDArray[np.float64]


def _vector(name: str, value: ArrayLike) -> FloatArray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ConfigError(f"{name} must be a non-empty 1-D array, got shape {array.shape}")
    return array


def _population(value: object, name: str = "concurrency") -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


@dataclass(frozen=True, eq=False)
class MVATape:
    """The stored forward pass of MVA for populations ``0..C`` (see :func:`mva_forward`).

    Row ``k`` of every ``*_path`` array is population ``k`` (row 0 is the empty network).
    The arrays computed by :func:`mva_forward` are read-only.

    Attributes:
        mu: Service rates, shape ``(n,)``.
        p: Routing probabilities (visit ratios, not renormalised), shape ``(n,)``.
        rho: Demands ``p / mu``.
        z: Per-client latency ``Z_i`` (zeros without latency stations), shape ``(n,)``.
        z_total: ``sum_i p_i Z_i``.
        rho_server: Server demand ``1 / server_rate`` (0 without a server station).
        concurrency: Largest population ``C``.
        throughput_path: ``Lambda(k)``, shape ``(C + 1,)``, ``Lambda(0) = 0``.
        queue_path: ``Q_i(k)``, shape ``(C + 1, n)``, ``Q(0) = 0``.
        server_queue_path: ``Q_s(k)``, shape ``(C + 1,)``.
    """

    mu: FloatArray
    p: FloatArray
    rho: FloatArray
    z: FloatArray
    z_total: float
    rho_server: float
    concurrency: int
    throughput_path: FloatArray
    queue_path: FloatArray
    server_queue_path: FloatArray

    @property
    def n_clients(self) -> int:
        """Number of clients ``n``."""
        return int(self.mu.size)

    def _check(self, concurrency: int | None) -> int:
        if concurrency is None:
            return self.concurrency
        c = _population(concurrency)
        if c > self.concurrency:
            raise ConfigError(
                f"concurrency {c} exceeds the population of the tape ({self.concurrency})"
            )
        return c

    def throughput(self, concurrency: int | None = None) -> float:
        """``Lambda(C')``.

        Args:
            concurrency: ``C' <= C`` (default ``C``).

        Returns:
            The update throughput at population ``C'``.
        """
        return float(self.throughput_path[self._check(concurrency)])

    def delays(self, concurrency: int | None = None) -> FloatArray:
        """``E[D_i](C') = Q_i(C'-1) / p_i + Z_i Lambda(C'-1) + Q_s(C'-1)``.

        Args:
            concurrency: ``C' <= C`` (default ``C``).

        Returns:
            A new array of shape ``(n,)``.
        """
        j = self._check(concurrency) - 1
        out: FloatArray = (
            self.queue_path[j] / self.p + self.z * self.throughput_path[j]
            + self.server_queue_path[j]
        )
        return out

    def throughput_curve(self) -> FloatArray:
        """``Lambda(C')`` for ``C' = 1..C``, shape ``(C,)`` (a new array)."""
        return self.throughput_path[1:].copy()

    def delay_curve(self) -> FloatArray:
        """``E[D_i](C')`` for ``C' = 1..C``, shape ``(C, n)``; row ``C' - 1`` is ``C'``."""
        out: FloatArray = (
            self.queue_path[:-1] / self.p + self.throughput_path[:-1, None] * self.z[None, :]
            + self.server_queue_path[:-1, None]
        )
        return out

    def vjp(
        self,
        *,
        grad_throughput: float = 0.0,
        grad_delay: ArrayLike | None = None,
        concurrency: int | None = None,
    ) -> tuple[FloatArray, FloatArray]:
        """Vector-Jacobian product at one population: ``(dF/dp, dF/dmu)``.

        For ``F = grad_throughput * Lambda(C') + grad_delay . E[D](C')`` (so, by the chain
        rule, the gradient of any scalar function of ``Lambda(C')`` and ``E[D](C')`` when the
        arguments are its partial derivatives there). Reverse pass over ``k = C'..1``.

        Args:
            grad_throughput: ``dF / dLambda(C')``.
            grad_delay: ``dF / dE[D_i](C')``, shape ``(n,)`` (None: zeros).
            concurrency: ``C' <= C`` (default ``C``).

        Returns:
            ``(d_p, d_mu)``, two new arrays of shape ``(n,)``.

        Raises:
            ConfigError: A shape or ``concurrency`` is invalid.
        """
        c = self._check(concurrency)
        n = self.n_clients
        lam_bar = np.zeros(c + 1)
        lam_bar[c] = float(grad_throughput)
        qs_bar = np.zeros(c + 1)
        d_p_direct = np.zeros(n)
        point: FloatArray | None = None
        if grad_delay is not None:
            gd = np.asarray(grad_delay, dtype=np.float64)
            if gd.shape != (n,):
                raise ConfigError(f"grad_delay must have shape ({n},), got {gd.shape}")
            q_prev = self.queue_path[c - 1]
            point = gd / self.p
            d_p_direct = -point * (q_prev / self.p)
            lam_bar[c - 1] += float(np.dot(gd, self.z))
            qs_bar[c - 1] += float(gd.sum())
        return self._reverse(c, lam_bar, qs_bar, d_p_direct, point=point, rows=None)

    def vjp_curve(
        self,
        *,
        grad_throughput: ArrayLike | None = None,
        grad_delay: ArrayLike | None = None,
    ) -> tuple[FloatArray, FloatArray]:
        """Vector-Jacobian product of the whole curve ``C' = 1..C``: ``(dF/dp, dF/dmu)``.

        For ``F = sum_C' grad_throughput[C'-1] Lambda(C')
        + sum_C' grad_delay[C'-1] . E[D](C')``; one reverse pass.

        Args:
            grad_throughput: ``dF / dLambda(C')``, shape ``(C,)`` (None: zeros).
            grad_delay: ``dF / dE[D_i](C')``, shape ``(C, n)`` (None: zeros).

        Returns:
            ``(d_p, d_mu)``, two new arrays of shape ``(n,)``.

        Raises:
            ConfigError: A shape is invalid.
        """
        c = self.concurrency
        n = self.n_clients
        lam_bar = np.zeros(c + 1)
        qs_bar = np.zeros(c + 1)
        d_p_direct = np.zeros(n)
        rows: FloatArray | None = None
        if grad_throughput is not None:
            gt = np.asarray(grad_throughput, dtype=np.float64)
            if gt.shape != (c,):
                raise ConfigError(f"grad_throughput must have shape ({c},), got {gt.shape}")
            lam_bar[1:] = gt
        if grad_delay is not None:
            gd = np.asarray(grad_delay, dtype=np.float64)
            if gd.shape != (c, n):
                raise ConfigError(f"grad_delay must have shape ({c}, {n}), got {gd.shape}")
            # E[D](C') reads population C' - 1: row j of `rows` is the adjoint of Q(j)
            rows = gd / self.p
            d_p_direct = -np.einsum("kn,kn->n", rows, self.queue_path[:-1]) / self.p
            lam_bar[:-1] += np.einsum("kn,n->k", gd, self.z)
            qs_bar[:-1] += gd.sum(axis=1)
        return self._reverse(c, lam_bar, qs_bar, d_p_direct, point=None, rows=rows)

    def _reverse(
        self,
        c: int,
        lam_bar: FloatArray,
        qs_bar: FloatArray,
        d_p: FloatArray,
        *,
        point: FloatArray | None,
        rows: FloatArray | None,
    ) -> tuple[FloatArray, FloatArray]:
        """Reverse pass from population ``c``; ``point`` is the adjoint of ``Q(c-1)``."""
        n = self.n_clients
        rho = self.rho
        rho_s = self.rho_server
        q = self.queue_path
        # Python floats for the scalar recursion (numpy scalar indexing is slow in a loop)
        lam = self.throughput_path[: c + 1].tolist()
        qs = self.server_queue_path[: c + 1].tolist()
        lam_bars = lam_bar.tolist()
        qs_bars = qs_bar.tolist()
        w_bar = np.empty((c, n))  # row k-1: adjoint of W(k)
        q_bar = np.zeros(n)  # adjoint of Q(k), k running down
        qs_bar_k = qs_bars[c]
        z_bar = 0.0
        dot = np.dot
        multiply = np.multiply
        add = np.add
        for k in range(c, 0, -1):
            lam_k = lam[k]
            lam_bar_k = lam_bars[k]
            if k < c:  # Q(c) is no output: its adjoint is zero
                if rows is not None:
                    add(q_bar, rows[k], out=q_bar)
                elif point is not None and k == c - 1:
                    add(q_bar, point, out=q_bar)
                lam_bar_k += float(dot(q_bar, q[k])) / lam_k
            if qs_bar_k:
                lam_bar_k += qs_bar_k * qs[k] / lam_k
            den_bar = -lam_k * lam_k / k * lam_bar_k
            wk = w_bar[k - 1]
            multiply(q_bar, lam_k, out=wk)
            add(wk, den_bar, out=wk)
            ws_bar = lam_k * qs_bar_k + den_bar
            z_bar += den_bar
            multiply(wk, rho, out=q_bar)
            qs_bar_k = rho_s * ws_bar + qs_bars[k - 1]
        # rhobar_i = sum_k Wbar_i(k) (1 + Q_i(k-1))
        rho_bar = w_bar.sum(axis=0)
        rho_bar += np.einsum("kn,kn->n", w_bar, q[:c])
        d_p = d_p + rho_bar / self.mu + self.z * z_bar
        d_mu = -rho_bar * rho / self.mu
        return d_p, d_mu


def mva_forward(
    mu: ArrayLike,
    p: ArrayLike,
    concurrency: int,
    *,
    latency: float = 0.0,
    client_latency: ArrayLike | None = None,
    server_rate: float | None = None,
) -> MVATape:
    """Run MVA for populations ``0..C`` and keep every population's solution.

    The arithmetic is that of :func:`raysync.queueing.analyze` with ``method="mva"`` (same
    operations in the same order), so the values agree with it to the last bit. No
    validation beyond shapes (this runs inside optimisers): pass positive ``mu`` and ``p``.

    Args:
        mu: Service rates, shape ``(n,)``.
        p: Routing probabilities, shape ``(n,)`` (used as given, not renormalised).
        concurrency: Largest population ``C >= 1``.
        latency: Mean delay of an infinite-server station visited by every task.
        client_latency: Per-client mean delays, shape ``(n,)``.
        server_rate: Rate of the server's update station (None: instantaneous updates).

    Returns:
        The tape: values at any ``C' <= C`` and reverse-mode products.

    Raises:
        ConfigError: Shapes or ``concurrency`` are invalid.
    """
    mu_arr = _vector("mu", mu)
    p_arr = _vector("p", p)
    if mu_arr.shape != p_arr.shape:
        raise ConfigError(
            f"mu and p must have the same length, got {mu_arr.size} and {p_arr.size}"
        )
    c = _population(concurrency)
    n = mu_arr.size
    z = np.full(n, float(latency))
    if client_latency is not None:
        extra = _vector("client_latency", client_latency)
        if extra.shape != (n,):
            raise ConfigError(f"client_latency must have shape ({n},), got {extra.shape}")
        z = z + extra
    z_total = float(np.dot(p_arr, z))
    rho_s = 0.0 if server_rate is None else 1.0 / float(server_rate)
    rho = p_arr / mu_arr

    q_path = np.empty((c + 1, n))
    q_path[0] = 0.0
    lams = [0.0]
    qss = [0.0]
    w = np.empty(n)
    qs = 0.0
    multiply = np.multiply
    add = np.add
    total = np.add.reduce  # what w.sum() calls, without the Python-level wrapper
    for k in range(1, c + 1):
        multiply(q_path[k - 1], rho, out=w)
        add(w, rho, out=w)
        ws = rho_s * (1.0 + qs)
        lam = k / (float(total(w)) + z_total + ws)
        multiply(w, lam, out=q_path[k])
        qs = lam * ws
        lams.append(lam)
        qss.append(qs)
    lam_path = np.array(lams)
    qs_path = np.array(qss)
    for array in (rho, z, lam_path, q_path, qs_path):
        array.setflags(write=False)
    return MVATape(
        mu=mu_arr,
        p=p_arr,
        rho=rho,
        z=z,
        z_total=z_total,
        rho_server=rho_s,
        concurrency=c,
        throughput_path=lam_path,
        queue_path=q_path,
        server_queue_path=qs_path,
    )


def mva_value_and_vjp(
    mu: ArrayLike,
    p: ArrayLike,
    concurrency: int,
    *,
    grad_throughput: float = 0.0,
    grad_delay: ArrayLike | None = None,
    latency: float = 0.0,
    client_latency: ArrayLike | None = None,
    server_rate: float | None = None,
) -> tuple[float, FloatArray, FloatArray, FloatArray]:
    """``Lambda(C)``, ``E[D](C)`` and the vector-Jacobian product with given cotangents.

    One forward and one reverse MVA pass in numpy (``O(nC)``): the result equals
    torch autograd of ``grad_throughput * Lambda + grad_delay . E[D]`` through
    :func:`~raysync.queueing.throughput_and_delays_torch`. When the cotangents depend on
    the values (a nonlinear objective), call :func:`mva_forward` and then
    :meth:`MVATape.vjp` instead.

    Args:
        mu: Service rates, shape ``(n,)``.
        p: Routing probabilities, shape ``(n,)`` (not renormalised).
        concurrency: Population ``C >= 1``.
        grad_throughput: ``dF / dLambda(C)``.
        grad_delay: ``dF / dE[D_i](C)``, shape ``(n,)`` (None: zeros).
        latency: Mean delay of an infinite-server station visited by every task (held
            fixed).
        client_latency: Per-client mean delays, shape ``(n,)`` (held fixed).
        server_rate: Rate of the server's update station (held fixed; None: none).

    Returns:
        ``(throughput, delays, d_p, d_mu)``.

    Raises:
        ConfigError: Shapes or ``concurrency`` are invalid.
    """
    tape = mva_forward(
        mu, p, concurrency, latency=latency, client_latency=client_latency,
        server_rate=server_rate,
    )
    d_p, d_mu = tape.vjp(grad_throughput=grad_throughput, grad_delay=grad_delay)
    return tape.throughput(), tape.delays(), d_p, d_mu


def mva_curve_value_and_vjp(
    mu: ArrayLike,
    p: ArrayLike,
    concurrency: int,
    *,
    grad_throughput: ArrayLike | None = None,
    grad_delay: ArrayLike | None = None,
    latency: float = 0.0,
    client_latency: ArrayLike | None = None,
    server_rate: float | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """The curves ``Lambda(C')``, ``E[D](C')`` (``C' = 1..C``) and their VJP.

    Equals torch autograd of ``sum_C' grad_throughput[C'-1] Lambda(C') +
    sum_C' grad_delay[C'-1] . E[D](C')`` through
    :func:`~raysync.queueing.throughput_and_delays_curve_torch`.

    Args:
        mu: Service rates, shape ``(n,)``.
        p: Routing probabilities, shape ``(n,)`` (not renormalised).
        concurrency: Largest population ``C >= 1``.
        grad_throughput: Cotangent of the throughputs, shape ``(C,)`` (None: zeros).
        grad_delay: Cotangent of the delays, shape ``(C, n)`` (None: zeros).
        latency: Mean delay of an infinite-server station visited by every task (held
            fixed).
        client_latency: Per-client mean delays, shape ``(n,)`` (held fixed).
        server_rate: Rate of the server's update station (held fixed; None: none).

    Returns:
        ``(throughputs, delays, d_p, d_mu)`` of shapes ``(C,)``, ``(C, n)``, ``(n,)``,
        ``(n,)``.

    Raises:
        ConfigError: Shapes or ``concurrency`` are invalid.
    """
    tape = mva_forward(
        mu, p, concurrency, latency=latency, client_latency=client_latency,
        server_rate=server_rate,
    )
    d_p, d_mu = tape.vjp_curve(grad_throughput=grad_throughput, grad_delay=grad_delay)
    return tape.throughput_curve(), tape.delay_curve(), d_p, d_mu
