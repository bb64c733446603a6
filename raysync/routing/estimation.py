"""Online estimates of the clients' service rates ``mu_i`` from observed service times.

One :class:`OnlineRateEstimator` is fed every observed service time (the simulator's sampled
duration, or the runtime's measured compute plus emulated wait) and answers, at any moment,
each client's rate with a confidence interval. The same object serves the simulator and
the Ray runtime (the adaptive router owns one; see :mod:`raysync.routing.adaptive`).

Estimates (docs/adaptive.md section 1):

* **Sufficient statistics with forgetting.** Per client, the count ``N``, the sum ``S`` and
  the sum of squares ``Q`` of the durations kept. ``window=W`` keeps the last ``W``
  durations exactly (a sliding window); ``half_life=h`` discounts every older duration by
  ``2^(-1/h)`` each time the client reports a new one (exponential forgetting; the
  effective sample size is ``N_eff = N^2 / sum w^2``). Neither keeps all durations.
* **Prior.** A client contributes ``prior_weight`` pseudo-observations of duration
  ``1 / prior_rate``. ``prior_rate`` may be one rate, one per client (e.g. the configured
  rates), or None: then the pooled rate of all observations so far stands for a client
  never seen (1.0 before any observation), the usual empirical-Bayes choice. The prior is
  forgotten like a duration older than all of the client's own: with ``window=W`` it drops
  out once the client has ``W`` durations in the window, with ``half_life`` its weight is
  discounted by ``2^(-1/h)`` per duration of the client. Kept for ever under a window, the
  pooled prior biased every fast client's estimate: one pseudo-duration of the fleet's mean
  is worth several of a fast client's, so with a window of 50 the estimate
  ``N / (S + 1 / mu0)`` of a client 3.7 times faster than ``mu0`` stayed about 7 % low
  (``S ~ 50 / mu`` beside ``1 / mu0 = 3.7 / mu``; docs/adaptive.md section 1).
* **Method ``"exponential"``** (the closed-network model): with ``a = N + n0`` (``n0`` the
  prior weight) and ``b = S + n0 / mu0``, the rate's posterior under the conjugate Gamma
  prior is ``Gamma(a, b)``. The point estimate is ``(a - 1) / b`` (with ``n0 = 0``: the
  UMVU estimator ``(N - 1) / S``, exactly unbiased for ``N >= 2``, since
  ``E[1 / S] = mu / (N - 1)`` for a Gamma(N, mu) sum) and the interval is the Gamma
  quantiles ``[G^-1(a/2), G^-1(1 - a/2)] / b``, which with ``n0 = 0`` is the exact
  chi-square interval ``chi2_{2N}(.) / (2 S)`` (Johnson, Kotz & Balakrishnan, *Continuous
  Univariate Distributions* vol. 1, eq. 19.53) used by
  :func:`raysync.objectives.estimate_service_rate`.
* **Method ``"mean"``** (any distribution, e.g. log-normal): the mean duration
  ``m = (S + n0 / mu0) / (N + n0)`` is unbiased with ``n0 = 0``; the rate is ``1 / m``
  (consistent, bias ``cv^2 mu / N + O(N^-2)`` by the delta method) and the interval is the
  Student-t interval on the mean, ``m -/+ t_{N_eff - 1} s / sqrt(N_eff)``, inverted
  (asymptotic: its coverage tends to the level as ``N`` grows).

* **Censoring** (method ``"exponential"``, ``in_service=`` of :meth:`OnlineRateEstimator.rates`
  and :meth:`~OnlineRateEstimator.intervals`): a task in service for ``e`` seconds and not
  done is a right-censored duration; its likelihood ``exp(-mu e)`` adds ``e`` to the
  exposure ``b`` without a count (the total-time-on-test statistic of exponential life
  testing, Epstein & Sobel, JASA 48, 1953), so the posterior stays ``Gamma(a, b + e)``. A
  slow client whose first task has not come back after 2 s is then known to be slow before
  it reports anything. The point estimate becomes ``a / (b + e)``: when the age is that of
  an exponential service seen at a moment independent of it, ``e ~ Exp(mu)`` (memoryless),
  ``S + e ~ Gamma(N + 1, mu)`` and ``N / (S + e)`` is exactly unbiased (with ``n0 = 0``),
  as ``(N - 1) / S`` is without an age; ``(N - 1) / (S + e)`` would be ``1 / N`` low. The
  ``"mean"`` method assumes no law and ignores ages (an unfinished duration only bounds
  the mean from below, which a t interval cannot use).

With exponential forgetting the intervals use ``N_eff`` in place of ``N``; they are then
approximate (the discounted sum is not Gamma distributed).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from raysync._validation import first_index
from raysync.exceptions import CheckpointError, ConfigError

if TYPE_CHECKING:  # objectives imports torch: loaded only when an interval is asked for
    from raysync.objectives.constants import RateEstimate

__all__ = ["ESTIMATOR_METHODS", "OnlineRateEstimator"]

#: Estimation methods: ``exponential`` (Gamma/chi-square, exact) or ``mean`` (t interval).
ESTIMATOR_METHODS = ("exponential", "mean")


def _positive(name: str, value: object, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConfigError(
            f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}"
        )
    number = float(value)
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        raise ConfigError(
            f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}"
        )
    return number


class OnlineRateEstimator:
    """Per-client service-rate estimates with intervals, forgetting and a prior.

    Args:
        num_clients: Number of clients ``n >= 1``.
        method: ``"exponential"`` or ``"mean"`` (see the module docstring).
        window: Keep only each client's last ``window`` durations (integer ``>= 2``).
        half_life: Exponential forgetting: a duration's weight halves after ``half_life``
            newer durations of the same client (number ``> 0``). At most one of ``window``
            and ``half_life``; neither keeps every duration (stationary fleets).
        prior_rate: Prior rate ``mu0``: one number, one per client, or None for the pooled
            rate of all observations (1.0 before any).
        prior_weight: Pseudo-observations ``n0 >= 0`` the prior counts for before the
            client's own durations push it out (``window``) or discount it (``half_life``).
        confidence: Two-sided level of the intervals, in ``(0, 1)``.

    Raises:
        ConfigError: Any argument breaks its rule (one line naming it and the value).
    """

    def __init__(
        self,
        num_clients: int,
        *,
        method: str = "exponential",
        window: int | None = None,
        half_life: float | None = None,
        prior_rate: float | Sequence[float] | None = None,
        prior_weight: float = 1.0,
        confidence: float = 0.95,
    ) -> None:
        if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
            raise ConfigError(f"num_clients must be an integer >= 1, got {num_clients!r}")
        if method not in ESTIMATOR_METHODS:
            raise ConfigError(
                f"estimator method must be one of {', '.join(ESTIMATOR_METHODS)}, got {method!r}"
            )
        if window is not None and half_life is not None:
            raise ConfigError(
                f"give at most one of window and half_life, got window={window!r} and "
                f"half_life={half_life!r}"
            )
        if window is not None and (
            isinstance(window, bool) or not isinstance(window, int) or window < 2
        ):
            raise ConfigError(f"estimator window must be an integer >= 2, got {window!r}")
        self._decay = 1.0
        if half_life is not None:
            self._decay = 2.0 ** (-1.0 / _positive("estimator half_life", half_life))
        self._prior: np.ndarray | None = None
        if prior_rate is not None:
            prior = np.array(prior_rate, dtype=np.float64).reshape(-1)
            if prior.size == 1:
                prior = np.full(num_clients, float(prior[0]))
            if prior.size != num_clients:
                raise ConfigError(
                    f"prior_rate must be one number or one per client (n={num_clients}), "
                    f"got {prior.size} values"
                )
            j = first_index(~(np.isfinite(prior) & (prior > 0)))
            if j is not None:
                raise ConfigError(
                    f"prior_rate[{j}] must be a finite rate > 0, got {float(prior[j])!r}"
                )
            self._prior = prior
        level = _positive("confidence", confidence)
        if not level < 1:
            raise ConfigError(f"confidence must be in (0, 1), got {confidence!r}")
        self.num_clients = num_clients
        self.method = method
        self.window = window
        self._window_len = window if window is not None else 0
        self.half_life = half_life
        self.prior_weight = _positive("prior_weight", prior_weight, allow_zero=True)
        self.confidence = level
        self._n = np.zeros(num_clients)  # sum of weights
        self._n2 = np.zeros(num_clients)  # sum of squared weights
        self._s = np.zeros(num_clients)  # weighted sum of durations
        self._q = np.zeros(num_clients)  # weighted sum of squared durations
        self._kept: list[deque[float]] | None = (
            [deque() for _ in range(num_clients)] if window is not None else None
        )
        self._total_n = 0.0
        self._total_s = 0.0
        self.observations = 0

    # ------------------------------------------------------------------ feeding
    def observe(self, client: int, duration: float) -> None:
        """Record one observed service time of ``client``.

        Raises:
            ConfigError: ``client`` is out of range or ``duration`` not a finite time > 0.
        """
        if not 0 <= client < self.num_clients:
            raise ConfigError(f"client must be in [0, {self.num_clients}), got {client!r}")
        t = float(duration)
        if not (t > 0 and math.isfinite(t)):
            raise ConfigError(f"observed service time must be a finite time > 0, got {duration!r}")
        self.observations += 1
        self._total_n += 1.0
        self._total_s += t
        kept = self._kept
        if kept is not None:
            q = kept[client]
            q.append(t)
            self._n[client] += 1.0
            self._n2[client] += 1.0
            self._s[client] += t
            self._q[client] += t * t
            if len(q) > self._window_len:
                old = q.popleft()
                self._n[client] -= 1.0
                self._n2[client] -= 1.0
                self._s[client] -= old
                self._q[client] -= old * old
                if not q:  # pragma: no cover - window >= 2 keeps at least one
                    self._s[client] = self._q[client] = 0.0
            return
        lam = self._decay
        self._n[client] = lam * self._n[client] + 1.0
        self._n2[client] = lam * lam * self._n2[client] + 1.0
        self._s[client] = lam * self._s[client] + t
        self._q[client] = lam * self._q[client] + t * t

    def observe_many(self, client: int, durations: Sequence[float] | np.ndarray) -> None:
        """:meth:`observe` each of ``durations`` in order."""
        for d in np.asarray(durations, dtype=np.float64).reshape(-1):
            self.observe(client, float(d))

    # ------------------------------------------------------------------ answers
    @property
    def pooled_prior(self) -> bool:
        """Whether the prior is the pooled rate of all observations (no ``prior_rate``)."""
        return self._prior is None

    def prior_rates(self) -> np.ndarray:
        """The prior rate ``mu0`` of every client, shape ``(n,)``."""
        if self._prior is not None:
            return self._prior.copy()
        pooled = self._total_n / self._total_s if self._total_s > 0 else 1.0
        return np.full(self.num_clients, pooled)

    def observed(self, client: int) -> bool:
        """Whether any service time of ``client`` was ever recorded (forgetting keeps it)."""
        return bool(self._n[client] > 0)

    def counts(self) -> np.ndarray:
        """Observations behind each estimate (``N``; ``N_eff`` with forgetting), shape ``(n,)``."""
        return self._effective()

    def _effective(self) -> np.ndarray:
        n2 = self._n2
        with np.errstate(invalid="ignore", divide="ignore"):
            eff = np.where(n2 > 0, self._n * self._n / np.where(n2 > 0, n2, 1.0), 0.0)
        return eff

    def prior_weights(self) -> np.ndarray:
        """Weight each client's prior still has, shape ``(n,)``.

        ``prior_weight`` forgotten as a duration older than all of the client's own: under
        ``window=W`` it is 0 once ``W`` durations are kept; under ``half_life`` it is
        ``n0 lambda^N`` after ``N`` durations (``lambda = 2^(-1/h)``; since the discounted
        count is ``sum_{k<N} lambda^k = (1 - lambda^N) / (1 - lambda)``, ``lambda^N = 1 -
        (1 - lambda) count``); without forgetting it stays ``n0``.
        """
        n0 = self.prior_weight
        if self._kept is not None:
            return np.where(self._n < self._window_len, n0, 0.0)
        if self._decay < 1.0:
            return n0 * np.clip(1.0 - (1.0 - self._decay) * self._n, 0.0, 1.0)
        return np.full(self.num_clients, n0)

    def _in_service(self, in_service: Sequence[float] | np.ndarray | None) -> np.ndarray | None:
        """Validated ages of the services in progress, shape ``(n,)`` (None: not given).

        Raises:
            ConfigError: Not ``n`` finite times ``>= 0``.
        """
        if in_service is None:
            return None
        ages = np.asarray(in_service, dtype=np.float64).reshape(-1)
        if ages.shape != (self.num_clients,) or not np.all(np.isfinite(ages) & (ages >= 0)):
            raise ConfigError(
                f"in_service must be {self.num_clients} finite ages >= 0 (seconds), got "
                f"{np.asarray(in_service).tolist()!r}"
            )
        return ages

    def _gamma_params(self, in_service: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Shape ``a`` and rate ``b`` of each client's Gamma posterior, shape ``(n,)`` each.

        ``in_service`` (validated ages, seconds) adds each unfinished service's age to ``b``
        without a count: the likelihood of a right-censored exponential time.
        """
        eff = self._effective()
        n0 = self.prior_weights()
        # Rescale the discounted sums to N_eff observations (no-op without forgetting).
        with np.errstate(invalid="ignore", divide="ignore"):
            s_eff = np.where(self._n > 0, self._s * eff / np.where(self._n > 0, self._n, 1.0), 0.0)
        b = s_eff + n0 / self.prior_rates()
        if in_service is not None:
            b = b + in_service
        return eff + n0, b

    def mean_durations(self) -> np.ndarray:
        """Estimated mean service time of every client, shape ``(n,)`` (seconds)."""
        n0 = self.prior_weights()
        prior_mean = 1.0 / self.prior_rates()
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (self._s + n0 * prior_mean) / (self._n + n0)
        return np.where(self._n + n0 > 0, mean, prior_mean)

    def rates(self, in_service: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
        """Point estimate of every client's rate ``mu_i``, shape ``(n,)``, all ``> 0``.

        Args:
            in_service: Optional age (seconds) of each client's service in progress, shape
                ``(n,)``, 0 for an idle client: a right-censored duration (the task has
                lasted that long and is not done). The exponential method adds it to the
                exposure ``b`` without a count and then estimates ``a / b`` instead of
                ``(a - 1) / b`` (module docstring, "Censoring"); the mean method, which
                assumes no law, ignores it.

        Raises:
            ConfigError: ``in_service`` is not ``n`` finite ages ``>= 0``.
        """
        ages = self._in_service(in_service)
        if self.method == "mean":
            return 1.0 / self.mean_durations()
        a, b = self._gamma_params(ages)
        prior = self.prior_rates()
        # An age in the exposure makes S + e ~ Gamma(N + 1, mu): N / (S + e) is the unbiased
        # estimate there, as (N - 1) / S is without it.
        shift = np.ones(self.num_clients) if ages is None else np.where(ages > 0, 0.0, 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(a > 1.0, (a - shift) / b, np.where(a > 0, a / b, prior))
        return np.where(np.isfinite(rate) & (rate > 0), rate, prior)

    def estimate(self, client: int) -> RateEstimate:
        """The rate of ``client`` with its interval (``(0, inf)`` before any evidence).

        Raises:
            ConfigError: ``client`` is out of range.
        """
        if not 0 <= client < self.num_clients:
            raise ConfigError(f"client must be in [0, {self.num_clients}), got {client!r}")
        from scipy import stats

        from raysync.objectives.constants import RateEstimate

        alpha = 1.0 - self.confidence
        rate = float(self.rates()[client])
        count = float(self._effective()[client])
        lower, upper = 0.0, math.inf
        if self.method == "exponential":
            a, b = (float(x[client]) for x in self._gamma_params())
            if a > 0:
                lower = float(stats.gamma.ppf(alpha / 2.0, a)) / b
                upper = float(stats.gamma.ppf(1.0 - alpha / 2.0, a)) / b
        elif count >= 2:
            n = float(self._n[client])
            mean = float(self._s[client]) / n
            var = max(float(self._q[client]) / n - mean * mean, 0.0) * count / (count - 1.0)
            half = float(stats.t.ppf(1.0 - alpha / 2.0, count - 1.0)) * math.sqrt(var / count)
            lower = 1.0 / (mean + half)
            upper = 1.0 / (mean - half) if mean - half > 0 else math.inf
        return RateEstimate(
            rate=rate,
            lower=lower,
            upper=upper,
            confidence=self.confidence,
            num_samples=int(round(count)),
            method=self.method,
        )

    def intervals(
        self,
        confidence: float | None = None,
        in_service: Sequence[float] | np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every client's interval at once (what :meth:`estimate` gives, vectorised).

        Args:
            confidence: Two-sided level in ``(0, 1)`` (None: the estimator's).
            in_service: Ages of the services in progress, as in :meth:`rates` (the
                exponential method's interval is then that of the censored posterior).

        Returns:
            ``(lower, upper)``, shape ``(n,)`` each; ``(0, inf)`` before any evidence.

        Raises:
            ConfigError: ``confidence`` is not in ``(0, 1)``, or ``in_service`` is not ``n``
                finite ages ``>= 0``.
        """
        from scipy import stats

        level = self.confidence if confidence is None else _positive("confidence", confidence)
        if not level < 1:
            raise ConfigError(f"confidence must be in (0, 1), got {confidence!r}")
        ages = self._in_service(in_service)
        alpha = 1.0 - level
        n = self.num_clients
        lower, upper = np.zeros(n), np.full(n, math.inf)
        if self.method == "exponential":
            a, b = self._gamma_params(ages)
            ok = a > 0
            lower[ok] = stats.gamma.ppf(alpha / 2.0, a[ok]) / b[ok]
            upper[ok] = stats.gamma.ppf(1.0 - alpha / 2.0, a[ok]) / b[ok]
            return lower, upper
        count = self._effective()
        ok = count >= 2
        if ok.any():
            total = self._n[ok]
            mean = self._s[ok] / total
            var = np.maximum(self._q[ok] / total - mean * mean, 0.0) * count[ok] / (count[ok] - 1)
            half = stats.t.ppf(1.0 - alpha / 2.0, count[ok] - 1.0) * np.sqrt(var / count[ok])
            lower[ok] = 1.0 / (mean + half)
            with np.errstate(divide="ignore"):
                upper[ok] = np.where(mean - half > 0, 1.0 / (mean - half), math.inf)
        return lower, upper

    def estimates(self) -> tuple[RateEstimate, ...]:
        """:meth:`estimate` of every client."""
        return tuple(self.estimate(i) for i in range(self.num_clients))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Serialisable state (the sufficient statistics and the kept window)."""
        return {
            "n": self._n.tolist(),
            "n2": self._n2.tolist(),
            "s": self._s.tolist(),
            "q": self._q.tolist(),
            "kept": None if self._kept is None else [list(q) for q in self._kept],
            "total": [self._total_n, self._total_s],
            "observations": self.observations,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Raises:
            CheckpointError: The state is malformed or for another fleet size.
        """
        try:
            arrays = [np.array(state[k], dtype=np.float64) for k in ("n", "n2", "s", "q")]
            kept = state["kept"]
            total_n, total_s = (float(x) for x in state["total"])
            observations = int(state["observations"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"OnlineRateEstimator state is malformed: {exc}") from exc
        if any(a.shape != (self.num_clients,) for a in arrays) or (
            (kept is None) != (self._kept is None)
        ):
            raise CheckpointError(
                f"OnlineRateEstimator state is for another fleet or forgetting rule "
                f"(n={self.num_clients}, window={self.window})"
            )
        self._n, self._n2, self._s, self._q = arrays
        if kept is not None:
            self._kept = [deque(float(x) for x in q) for q in kept]
        self._total_n, self._total_s = total_n, total_s
        self.observations = observations

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickle with writable statistics.

        Ray deserialises numpy arrays zero-copy from its object store, read-only; an
        estimator handed to a router that runs in the server actor must still update them.
        """
        self.__dict__.update(state)
        for name in ("_n", "_n2", "_s", "_q"):
            setattr(self, name, np.array(getattr(self, name), dtype=np.float64))

    def __repr__(self) -> str:
        forget = (
            f"window={self.window}"
            if self.window is not None
            else f"half_life={self.half_life}"
            if self.half_life is not None
            else "no forgetting"
        )
        return (
            f"OnlineRateEstimator(n={self.num_clients}, method={self.method!r}, {forget}, "
            f"prior_weight={self.prior_weight:g}, observations={self.observations})"
        )
