"""Search spaces over the concurrency ``C`` and the routing ``p`` (a probability simplex).

Every space yields, for any trial (a real :class:`optuna.Trial` or an
:class:`optuna.trial.FixedTrial`), a :class:`Candidate` whose ``p`` is a valid probability
vector *by construction* (all ``p_i > 0``, summing to 1) and whose ``C`` is an integer in
``1..max_concurrency``. Four families:

* :class:`SimplexSpace` with ``parameterization="exponential"``: one ``u_i ~ U(0, 1)`` per
  client, ``e_i = -log(u_i)`` (an ``Exp(1)`` draw), ``p = e / sum(e)``. Uniform ``u`` give a
  uniform distribution on the simplex (``Dirichlet(1, ..., 1)``), so TPE's prior is flat on
  the simplex.
* :class:`SimplexSpace` with ``parameterization="logits"``: one logit ``z_i`` per client,
  ``p = softmax(z)``.
* :class:`PowerSpace`: ``p_i ∝ mu_i ** beta`` with a single exponent ``beta`` (``0``:
  uniform, ``1``: proportional to speed) - one dimension whatever ``n`` is.
* :class:`TierSpace`: clients with identical service-time spec and resources form a tier;
  one logit per tier, clients of a tier share it (``p_i ∝ exp(z_tier(i))``).

:meth:`SearchSpace.params_for` inverts the map: it returns the parameter dictionary that
reproduces a given ``(p, C)`` (exactly for the full simplex families, by a least-squares
projection for the low-dimensional ones), for ``study.enqueue_trial`` warm starts.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from raysync.config import ClientSpec, SystemConfig
from raysync.exceptions import ConfigError

__all__ = [
    "FAMILIES",
    "PARAMETERIZATIONS",
    "Candidate",
    "PowerSpace",
    "SearchSpace",
    "SimplexSpace",
    "TierSpace",
    "client_tiers",
    "make_search_space",
]

FloatArray = NDArray[np.float64]

#: Names of the search-space families (``raysync tune --family``).
FAMILIES: tuple[str, ...] = ("simplex", "power", "tiers")
#: Parameterisations of the full simplex.
PARAMETERIZATIONS: tuple[str, ...] = ("exponential", "logits")

CONCURRENCY_PARAM = "concurrency"

# -log(u) with u in [U_LOW, U_HIGH]: e in [~1e-9, ~20.7]; p_max / p_min up to ~2e10.
_U_LOW = 1e-9
_U_HIGH = 1.0 - 1e-9
_E_MIN = -math.log(_U_HIGH)
_E_MAX = -math.log(_U_LOW)


@dataclass(frozen=True)
class Candidate:
    """One point of the search space.

    Attributes:
        p: Routing probabilities, shape ``(n,)``, all ``> 0``, summing to 1 (read-only).
        concurrency: ``C``, an integer ``>= 1``.
    """

    p: FloatArray
    concurrency: int

    def __post_init__(self) -> None:
        array = np.array(self.p, dtype=np.float64)
        array.setflags(write=False)
        object.__setattr__(self, "p", array)
        object.__setattr__(self, "concurrency", int(self.concurrency))

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"concurrency": C, "p": [...]}`` (JSON-safe)."""
        return {"concurrency": self.concurrency, "p": [float(v) for v in self.p]}


def _normalise(weights: FloatArray) -> FloatArray:
    """``w / sum(w)``, renormalised once more so ``sum`` is 1 to rounding."""
    p = weights / weights.sum()
    p = p / p.sum()
    return np.asarray(p, dtype=np.float64)


def _softmax(z: FloatArray) -> FloatArray:
    e = np.exp(z - z.max())
    return _normalise(e)


def _check_p(p: ArrayLike, n: int) -> FloatArray:
    array = np.asarray(p, dtype=np.float64)
    if array.shape != (n,):
        raise ConfigError(f"p must have one entry per client (n={n}), got shape {array.shape}")
    if np.any(~np.isfinite(array)) or np.any(array <= 0):
        raise ConfigError(f"p must be > 0 for every client, got min {float(array.min())!r}")
    return array / array.sum()


class SearchSpace(abc.ABC):
    """A space of ``(C, p)`` for one fleet.

    Subclasses define the routing parameters; ``C`` is always the integer parameter
    ``"concurrency"`` in ``1..max_concurrency``. Methods:

    * :meth:`suggest` is called once per trial by the driver (``study.ask()`` then
      ``space.suggest(trial)``); it draws every parameter and returns the candidate.
    * :meth:`decode` rebuilds a candidate from a finished trial's ``params``.
    * :meth:`params_for` returns the parameters that reproduce a given ``(p, C)`` (for
      ``study.enqueue_trial``); :meth:`project` is the candidate those parameters decode to
      (the input itself for exact families).

    Args:
        mu: Service rates ``mu_i`` (one per client).
        max_concurrency: Largest ``C`` (``>= 1``).
    """

    family: str = ""

    def __init__(self, mu: ArrayLike, *, max_concurrency: int) -> None:
        rates = np.asarray(mu, dtype=np.float64)
        if rates.ndim != 1 or rates.size == 0 or np.any(~(rates > 0)):
            raise ConfigError(f"mu must be a non-empty list of rates > 0, got {mu!r}")
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int | np.integer):
            raise ConfigError(f"max_concurrency must be an integer >= 1, got {max_concurrency!r}")
        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be an integer >= 1, got {max_concurrency!r}")
        rates.setflags(write=False)
        self.mu = rates
        self.max_concurrency = int(max_concurrency)

    @property
    def num_clients(self) -> int:
        """Number of clients ``n``."""
        return int(self.mu.size)

    # ------------------------------------------------------------------ routing part
    @abc.abstractmethod
    def _routing_distributions(self) -> dict[str, Any]:
        """Optuna distributions of the routing parameters, in suggestion order."""

    @abc.abstractmethod
    def _routing_from_params(self, params: Mapping[str, Any]) -> FloatArray:
        """``p`` from the routing parameters."""

    @abc.abstractmethod
    def _routing_params(self, p: FloatArray) -> dict[str, float]:
        """Routing parameters that reproduce ``p`` (or its projection on the family)."""

    # ------------------------------------------------------------------ public API
    def distributions(self) -> dict[str, Any]:
        """Every parameter's :class:`optuna.distributions.BaseDistribution`, by name."""
        from optuna.distributions import IntDistribution

        out: dict[str, Any] = {CONCURRENCY_PARAM: IntDistribution(1, self.max_concurrency)}
        out.update(self._routing_distributions())
        return out

    @property
    def param_names(self) -> list[str]:
        """Parameter names in suggestion order (``concurrency`` first)."""
        return list(self.distributions())

    def suggest(self, trial: Any) -> Candidate:
        """Draw every parameter from ``trial`` and return the candidate.

        Args:
            trial: An :class:`optuna.Trial` (or :class:`optuna.trial.FixedTrial`).

        Returns:
            The candidate (valid simplex, ``C`` in range).
        """
        from optuna.distributions import FloatDistribution, IntDistribution

        params: dict[str, Any] = {}
        for name, dist in self.distributions().items():
            if isinstance(dist, IntDistribution):
                params[name] = trial.suggest_int(name, dist.low, dist.high)
            elif isinstance(dist, FloatDistribution):
                params[name] = trial.suggest_float(name, dist.low, dist.high, log=dist.log)
            else:  # pragma: no cover - only int/float distributions are built here
                raise TypeError(f"unsupported distribution {dist!r}")
        return self.decode(params)

    def decode(self, params: Mapping[str, Any]) -> Candidate:
        """The candidate that ``params`` (a trial's parameters) describe.

        Raises:
            ConfigError: A parameter is missing.
        """
        missing = [name for name in self.param_names if name not in params]
        if missing:
            raise ConfigError(f"trial parameters are missing {missing[0]!r} for {self!r}")
        c = int(params[CONCURRENCY_PARAM])
        c = min(max(c, 1), self.max_concurrency)
        return Candidate(p=self._routing_from_params(params), concurrency=c)

    def params_for(self, p: ArrayLike, concurrency: int) -> dict[str, Any]:
        """Parameters reproducing ``(p, C)`` (projected on the family; ``C`` clipped).

        Args:
            p: Routing probabilities (validated, renormalised).
            concurrency: ``C`` (clipped to ``1..max_concurrency``).

        Returns:
            A mapping for ``study.enqueue_trial``.
        """
        probs = _check_p(p, self.num_clients)
        c = min(max(int(concurrency), 1), self.max_concurrency)
        return {CONCURRENCY_PARAM: c, **self._routing_params(probs)}

    def project(self, p: ArrayLike, concurrency: int) -> Candidate:
        """The candidate :meth:`params_for` ``(p, C)`` decodes to."""
        return self.decode(self.params_for(p, concurrency))

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(n={self.num_clients}, max_concurrency={self.max_concurrency})"


class SimplexSpace(SearchSpace):
    """The whole simplex: one parameter per client.

    Args:
        mu: Service rates.
        max_concurrency: Largest ``C``.
        parameterization: ``"exponential"`` (``p ∝ -log u``, ``u_i`` in ``(0, 1)``:
            parameters ``u_0 .. u_{n-1}``) or ``"logits"`` (``p = softmax(z)``, ``z_i`` in
            ``[-logit_bound, logit_bound]``: parameters ``z_0 .. z_{n-1}``).
        logit_bound: Range of each logit.
    """

    family = "simplex"

    def __init__(
        self,
        mu: ArrayLike,
        *,
        max_concurrency: int,
        parameterization: str = "exponential",
        logit_bound: float = 5.0,
    ) -> None:
        super().__init__(mu, max_concurrency=max_concurrency)
        if parameterization not in PARAMETERIZATIONS:
            raise ConfigError(
                f"parameterization must be one of {', '.join(PARAMETERIZATIONS)}, "
                f"got {parameterization!r}"
            )
        if not (math.isfinite(logit_bound) and logit_bound > 0):
            raise ConfigError(f"logit_bound must be > 0, got {logit_bound!r}")
        self.parameterization = parameterization
        self.logit_bound = float(logit_bound)
        prefix = "u" if parameterization == "exponential" else "z"
        self._names = [f"{prefix}_{i}" for i in range(self.num_clients)]

    def _routing_distributions(self) -> dict[str, Any]:
        from optuna.distributions import FloatDistribution

        if self.parameterization == "exponential":
            dist = FloatDistribution(_U_LOW, _U_HIGH)
        else:
            dist = FloatDistribution(-self.logit_bound, self.logit_bound)
        return {name: dist for name in self._names}

    def _routing_from_params(self, params: Mapping[str, Any]) -> FloatArray:
        values = np.array([float(params[name]) for name in self._names], dtype=np.float64)
        if self.parameterization == "exponential":
            u = np.clip(values, _U_LOW, _U_HIGH)
            return _normalise(-np.log(u))
        return _softmax(np.clip(values, -self.logit_bound, self.logit_bound))

    def _routing_params(self, p: FloatArray) -> dict[str, float]:
        if self.parameterization == "exponential":
            # e_i = s p_i with the scale s chosen so the mean e_i is 1 (typical Exp(1)
            # draws) unless the largest would leave the range; tiny p_i are clipped.
            n = self.num_clients
            scale = min(float(n), _E_MAX / float(p.max()))
            e = np.clip(scale * p, _E_MIN, _E_MAX)
            u = np.clip(np.exp(-e), _U_LOW, _U_HIGH)
            return {name: float(v) for name, v in zip(self._names, u, strict=True)}
        z = np.log(p)
        z = z - 0.5 * (z.max() + z.min())  # centre the range, then clip
        z = np.clip(z, -self.logit_bound, self.logit_bound)
        return {name: float(v) for name, v in zip(self._names, z, strict=True)}

    def __repr__(self) -> str:
        return (
            f"SimplexSpace(n={self.num_clients}, max_concurrency={self.max_concurrency}, "
            f"parameterization={self.parameterization!r})"
        )


class PowerSpace(SearchSpace):
    """``p_i ∝ mu_i ** beta``: one exponent, whatever the number of clients.

    ``beta = 0`` is uniform routing, ``beta = 1`` routes in proportion to speed, ``beta > 1``
    favours fast clients more, ``beta < 0`` favours slow ones.

    Args:
        mu: Service rates.
        max_concurrency: Largest ``C``.
        beta_range: ``(low, high)`` of ``beta``.
    """

    family = "power"

    def __init__(
        self,
        mu: ArrayLike,
        *,
        max_concurrency: int,
        beta_range: tuple[float, float] = (-1.0, 3.0),
    ) -> None:
        super().__init__(mu, max_concurrency=max_concurrency)
        low, high = (float(v) for v in beta_range)
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ConfigError(f"beta_range must be (low, high) with low < high, got {beta_range!r}")
        self.beta_range = (low, high)
        self._log_mu = np.log(self.mu)

    def _routing_distributions(self) -> dict[str, Any]:
        from optuna.distributions import FloatDistribution

        return {"beta": FloatDistribution(*self.beta_range)}

    def routing(self, beta: float) -> FloatArray:
        """``p`` for an exponent ``beta``."""
        return _softmax(float(beta) * self._log_mu)

    def _routing_from_params(self, params: Mapping[str, Any]) -> FloatArray:
        return self.routing(float(params["beta"]))

    def _routing_params(self, p: FloatArray) -> dict[str, float]:
        # Least-squares fit of log p = beta log mu + const (exact on the family).
        x = self._log_mu - self._log_mu.mean()
        denom = float(np.dot(x, x))
        beta = 0.0 if denom == 0 else float(np.dot(x, np.log(p))) / denom
        return {"beta": float(np.clip(beta, *self.beta_range))}

    def __repr__(self) -> str:
        return (
            f"PowerSpace(n={self.num_clients}, max_concurrency={self.max_concurrency}, "
            f"beta_range={self.beta_range})"
        )


def _spec_key(spec: ClientSpec) -> tuple[Any, ...]:
    st = spec.service_time
    durations = tuple(st.durations) if st.durations is not None else None
    return (
        st.kind, st.rate, st.mean, st.cv, durations,
        float(spec.num_cpus), float(spec.num_gpus), tuple(sorted(spec.resources.items())),
    )  # fmt: skip


def client_tiers(config: SystemConfig) -> tuple[int, ...]:
    """The tier of every client: clients with identical service time and resources.

    Tiers are numbered in order of first appearance; the client's ``name`` is ignored.

    Args:
        config: The fleet.

    Returns:
        One tier index per client.
    """
    keys: dict[tuple[Any, ...], int] = {}
    out = []
    for spec in config.clients:
        key = _spec_key(spec)
        if key not in keys:
            keys[key] = len(keys)
        out.append(keys[key])
    return tuple(out)


class TierSpace(SearchSpace):
    """One logit per tier; the clients of a tier share it (``p_i ∝ exp(z_tier(i))``).

    A tier's total share is ``n_t exp(z_t) / sum_s n_s exp(z_s)``, spread evenly over its
    clients. Parameters are ``tier_0 .. tier_{T-1}`` in ``[-logit_bound, logit_bound]``.

    Args:
        mu: Service rates.
        tiers: Tier index of every client (``0..T-1``; see :func:`client_tiers`).
        max_concurrency: Largest ``C``.
        logit_bound: Range of each logit.
    """

    family = "tiers"

    def __init__(
        self,
        mu: ArrayLike,
        *,
        tiers: Sequence[int],
        max_concurrency: int,
        logit_bound: float = 5.0,
    ) -> None:
        super().__init__(mu, max_concurrency=max_concurrency)
        labels = np.asarray(tiers, dtype=np.int64)
        if labels.shape != (self.num_clients,):
            raise ConfigError(
                f"tiers must have one entry per client (n={self.num_clients}), "
                f"got shape {labels.shape}"
            )
        num_tiers = int(labels.max()) + 1 if labels.size else 0
        if labels.min() < 0 or set(labels.tolist()) != set(range(num_tiers)):
            raise ConfigError(f"tiers must number the tiers 0..T-1, got {list(tiers)!r}")
        if not (math.isfinite(logit_bound) and logit_bound > 0):
            raise ConfigError(f"logit_bound must be > 0, got {logit_bound!r}")
        self.tiers = labels
        self.num_tiers = num_tiers
        self.logit_bound = float(logit_bound)
        self._names = [f"tier_{t}" for t in range(num_tiers)]

    def _routing_distributions(self) -> dict[str, Any]:
        from optuna.distributions import FloatDistribution

        dist = FloatDistribution(-self.logit_bound, self.logit_bound)
        return {name: dist for name in self._names}

    def _routing_from_params(self, params: Mapping[str, Any]) -> FloatArray:
        z = np.array([float(params[name]) for name in self._names], dtype=np.float64)
        z = np.clip(z, -self.logit_bound, self.logit_bound)
        return _softmax(z[self.tiers])

    def _routing_params(self, p: FloatArray) -> dict[str, float]:
        logp = np.log(p)
        z = np.array([logp[self.tiers == t].mean() for t in range(self.num_tiers)])
        z = z - 0.5 * (z.max() + z.min())
        z = np.clip(z, -self.logit_bound, self.logit_bound)
        return {name: float(v) for name, v in zip(self._names, z, strict=True)}

    def __repr__(self) -> str:
        return (
            f"TierSpace(n={self.num_clients}, tiers={self.num_tiers}, "
            f"max_concurrency={self.max_concurrency})"
        )


def make_search_space(
    config: SystemConfig,
    *,
    family: str = "simplex",
    max_concurrency: int | None = None,
    parameterization: str = "exponential",
) -> SearchSpace:
    """Build the search space of a family for a config's fleet.

    Args:
        config: The fleet (service rates ``mu_i = 1 / mean service time``; tiers).
        family: ``simplex``, ``power`` or ``tiers``.
        max_concurrency: Largest ``C``; default ``max(2 n, config.concurrency)``.
        parameterization: For ``simplex``: ``exponential`` or ``logits``.

    Returns:
        The space.

    Raises:
        ConfigError: Unknown family or bad arguments.
    """
    n = config.num_clients
    cmax = max(2 * n, config.concurrency) if max_concurrency is None else max_concurrency
    mu = np.asarray(config.service_rates, dtype=np.float64)
    if family == "simplex":
        return SimplexSpace(mu, max_concurrency=cmax, parameterization=parameterization)
    if family == "power":
        return PowerSpace(mu, max_concurrency=cmax)
    if family == "tiers":
        return TierSpace(mu, tiers=client_tiers(config), max_concurrency=cmax)
    raise ConfigError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
