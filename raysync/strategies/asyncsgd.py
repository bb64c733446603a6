"""AsyncSGD and Generalized AsyncSGD: apply each stochastic gradient as it arrives."""

from __future__ import annotations

import numpy as np

from raysync._validation import first_index
from raysync.exceptions import ConfigError
from raysync.strategies._base import BaseStrategy, ClientResult, ClientWork
from raysync.strategies._common import check_int, check_payload, check_positive

__all__ = ["AsyncSGD", "GeneralizedAsyncSGD"]


class AsyncSGD(BaseStrategy):
    """Plain asynchronous SGD: ``w <- w - lr * g_i``.

    Each task computes one minibatch gradient at the (possibly stale) model it carried.
    Usually paired with return-to-sender routing (each client holds one task, ``C = n``),
    but any router works: the step is not importance weighted.

    Args:
        lr: Server step ``eta``, finite and > 0.
        batch_size: Minibatch size of one stochastic gradient.

    Raises:
        ConfigError: ``lr`` or ``batch_size`` breaks its rule.
    """

    def __init__(self, *, lr: float, batch_size: int = 32) -> None:
        super().__init__()
        self._lr = check_positive(f"{type(self).__name__} lr", lr)
        self._batch_size = check_int(f"{type(self).__name__} batch_size", batch_size, minimum=1)

    @property
    def lr(self) -> float:
        """Server step ``eta``."""
        return self._lr

    def client_work(self) -> ClientWork:
        """One minibatch gradient of ``batch_size`` samples."""
        return ClientWork(kind="gradient", batch_size=self._batch_size)

    def _step_size(self, client_id: int) -> float:
        del client_id
        return self._lr

    def apply(self, params: np.ndarray, result: ClientResult) -> np.ndarray:
        """Return ``w - step * g`` as a new float32 array (computed in float64).

        Raises:
            ConfigError: The payload's length differs from the model's.
        """
        gradient = check_payload(type(self).__name__, params, result)
        step = self._step_size(result.client_id)
        new = np.asarray(params, dtype=np.float64) - step * gradient.astype(np.float64)
        return new.astype(np.float32)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self._lr!r}, batch_size={self._batch_size!r})"


class GeneralizedAsyncSGD(AsyncSGD):
    """Generalized AsyncSGD (Leconte et al.): ``w <- w - lr / (n p_i) * g_i``.

    With random routing ``p`` client ``i`` returns a fraction ``p_i`` of the results;
    the importance weight ``1 / (n p_i)`` makes every client contribute ``1/n`` of the
    expected step, so the step is unbiased for ``f = (1/n) sum_i f_i``.

    With ``beta < 1`` (docs/theory.md section 6) the weights are ``w_i = (1 / (n p_i)) ** beta``
    normalised by ``sum_j p_j w_j`` (step ``lr w_i / sum_j p_j w_j``), so the expected step
    is ``lr sum_i r_i g_i`` with ``r_i = p_i w_i / sum_j p_j w_j``: ``beta = 1`` is the
    unbiased rule above, ``beta = 0`` the unweighted step ``lr`` (biased towards clients
    with large ``p_i``).

    Args:
        lr: Server step ``eta``, finite and > 0.
        batch_size: Minibatch size of one stochastic gradient.
        beta: Weight exponent in ``[0, 1]``.

    Raises:
        ConfigError: ``lr``, ``batch_size`` or ``beta`` breaks its rule.
    """

    def __init__(self, *, lr: float, batch_size: int = 32, beta: float = 1.0) -> None:
        super().__init__(lr=lr, batch_size=batch_size)
        if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 <= beta <= 1:
            raise ConfigError(
                f"GeneralizedAsyncSGD beta must be a number in [0, 1], got {beta!r}"
            )
        self._beta = float(beta)
        self._steps: np.ndarray | None = None

    def bind(self, num_clients: int, routing_probabilities: np.ndarray | None) -> None:
        """Attach to a fleet; needs the router's ``p``.

        Raises:
            ConfigError: ``routing_probabilities`` is None (e.g. return-to-sender
                routing), has the wrong length, or is not strictly positive.
        """
        if routing_probabilities is None:
            raise ConfigError(
                "GeneralizedAsyncSGD needs a random routing with probabilities p to weight "
                "steps by 1/(n p_i), got routing_probabilities=None (return-to-sender?); "
                "use AsyncSGD with return-to-sender routing"
            )
        super().bind(num_clients, routing_probabilities)
        p = np.asarray(routing_probabilities, dtype=np.float64)
        if p.shape != (num_clients,):
            raise ConfigError(
                f"GeneralizedAsyncSGD routing_probabilities must have one entry per client "
                f"(n={num_clients}), got shape {p.shape}"
            )
        if not np.all(np.isfinite(p) & (p > 0)):
            raise ConfigError(
                f"GeneralizedAsyncSGD routing_probabilities must be > 0, got {p.tolist()!r}"
            )
        with np.errstate(over="ignore"):
            if self._beta == 1.0:  # sum_j p_j w_j = 1 exactly: keep the classic form bit for bit
                steps = self._lr / (num_clients * p)
            else:
                weights = (num_clients * p) ** -self._beta
                steps = self._lr * weights / float(np.dot(p, weights))
        # An infinite step is a certain divergence: say so before the run instead of
        # letting numpy warn and the first update fail later.
        j = first_index(~np.isfinite(steps))
        if j is not None:
            raise ConfigError(
                f"{type(self).__name__} lr (algorithm.lr) = {self._lr:g} is too large: "
                f"client {j}'s importance-weighted step (n = {num_clients}, p_{j} = "
                f"{float(p[j]):.6g}, beta = {self._beta:g}) overflows float64 (above "
                "1.8e308); lower lr"
            )
        self._steps = steps

    @property
    def step_sizes(self) -> np.ndarray:
        """Per-client steps ``lr / (n p_i)`` (after :meth:`bind`)."""
        if self._steps is None:
            raise RuntimeError("GeneralizedAsyncSGD.bind() must be called first")
        return self._steps.copy()

    def _step_size(self, client_id: int) -> float:
        if self._steps is None:
            raise RuntimeError("GeneralizedAsyncSGD.bind() must be called first")
        if not 0 <= client_id < self._steps.size:
            raise ConfigError(f"client_id must be in [0, {self._steps.size}), got {client_id}")
        return float(self._steps[client_id])
