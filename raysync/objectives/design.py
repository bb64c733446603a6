"""The design space of an asynchronous FL system: update rule, routing ``p``, ``C``, step.

One :class:`DesignPoint` is everything ``raysync recommend`` chooses, and exactly what a
config's ``concurrency``, ``[routing]`` and ``[algorithm]`` tables say:

* ``rule="asyncsgd"``: plain AsyncSGD, return to sender, unweighted steps, ``C = n``.
* ``rule="weighted"``: Generalized AsyncSGD on a random routing ``p`` with ``C`` tasks and
  importance weights ``(1 / (n p_i)) ** beta`` (docs/theory.md section 6): ``beta = 1`` is the
  unbiased rule of Leconte et al. (the one the section-5 bound covers), ``beta = 0`` plain
  unweighted steps on a random routing.
* ``rule="fedasync"`` / ``"fedbuff"``: FedAsync (Xie et al.) / FedBuff (Nguyen et al.) on
  a random routing with ``C`` tasks; their own knobs (``alpha``, staleness function,
  buffer size, ...) are kept from the base config.

and a step ``lr`` (the server step of the SGD rules, the clients' step of FedAsync and
FedBuff). The usual defaults are points of the space (:meth:`DesignSpace.baselines`):
uniform routing with ``C = n``, AsyncSGD, FedAsync and FedBuff with uniform routing and
``C = n``.

:class:`DesignSpace` describes the searchable box (rules, ``C`` range, ``beta`` range, step
range, one routing logit per speed tier) as plain :class:`Parameter` records, so that a
tuner (``tuning/recommend.py``, Optuna) and the analytical optimiser
(:mod:`raysync.objectives.bias`) speak the same space; :meth:`DesignSpace.encode` and
:meth:`DesignSpace.decode` map points to and from flat parameter dictionaries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from raysync.config import AlgorithmConfig, RoutingConfig, SystemConfig
from raysync.exceptions import ConfigError

__all__ = [
    "RULES",
    "DesignPoint",
    "DesignSpace",
    "Parameter",
    "speed_tiers",
]

FloatArray = NDArray[np.float64]

#: Update-rule families of the design space.
RULES: tuple[str, ...] = ("asyncsgd", "weighted", "fedasync", "fedbuff")
_ALGORITHM_OF = {
    "asyncsgd": "asyncsgd",
    "weighted": "generalized_asyncsgd",
    "fedasync": "fedasync",
    "fedbuff": "fedbuff",
}
_UNIFORM_ATOL = 1e-12


def _check_lr(lr: object) -> float:
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not (
        math.isfinite(lr) and lr > 0
    ):
        raise ConfigError(f"design lr must be a finite number > 0, got {lr!r}")
    return float(lr)


@dataclass(frozen=True, kw_only=True)
class DesignPoint:
    """One choice of update rule, routing, concurrency and step.

    Attributes:
        rule: ``asyncsgd``, ``weighted``, ``fedasync`` or ``fedbuff``.
        concurrency: ``C`` (``n`` for ``asyncsgd``).
        p: Routing probabilities (one per client, ``> 0``, summing to 1); None for
            ``asyncsgd`` (return to sender is not a random routing).
        beta: Weight exponent in ``[0, 1]`` (``weighted`` only; 0 for ``asyncsgd``,
            whose steps are unweighted, and 1 for FedAsync/FedBuff, where it is unused).
        lr: Step ``> 0``.
    """

    rule: str
    concurrency: int
    p: tuple[float, ...] | None
    beta: float = 1.0
    lr: float = 0.05

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ConfigError(f"design rule must be one of {', '.join(RULES)}, got {self.rule!r}")
        c = self.concurrency
        if isinstance(c, bool) or not isinstance(c, int | np.integer) or c < 1:
            raise ConfigError(f"design concurrency must be an integer >= 1, got {c!r}")
        object.__setattr__(self, "concurrency", int(c))
        object.__setattr__(self, "lr", _check_lr(self.lr))
        beta = self.beta
        if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 <= beta <= 1:
            raise ConfigError(f"design beta must be a number in [0, 1], got {beta!r}")
        object.__setattr__(self, "beta", float(beta))
        if self.rule == "asyncsgd":
            if self.p is not None:
                raise ConfigError("design p must be None for rule 'asyncsgd' (return to sender)")
            object.__setattr__(self, "beta", 0.0)
            return
        if self.p is None:
            raise ConfigError(f"design p is required for rule {self.rule!r}")
        probs = np.asarray(self.p, dtype=np.float64)
        if probs.ndim != 1 or probs.size == 0 or np.any(~np.isfinite(probs)) or np.any(
            probs <= 0
        ):
            raise ConfigError(f"design p must be positive probabilities, got {self.p!r}")
        total = float(probs.sum())
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(f"design p must sum to 1, got sum={total:.6g}")
        object.__setattr__(self, "p", tuple(float(v) for v in probs / total))
        if self.rule != "weighted":
            object.__setattr__(self, "beta", 1.0)

    # ------------------------------------------------------------------ queries
    @property
    def num_clients(self) -> int | None:
        """``n`` when the point names it (None for ``asyncsgd``)."""
        return None if self.p is None else len(self.p)

    @property
    def is_uniform(self) -> bool:
        """Whether the routing is uniform (False for return to sender)."""
        if self.p is None:
            return False
        probs = np.asarray(self.p)
        return bool(np.all(np.abs(probs - 1.0 / probs.size) <= _UNIFORM_ATOL))

    def update_shares(self, mu: ArrayLike) -> FloatArray:
        """``q_i``: client ``i``'s share of the applied updates in the stationary regime.

        ``p_i`` under random routing (every dispatched task completes, one dispatch per
        update); ``mu_i / sum_j mu_j`` for return to sender (independent cycles).

        Args:
            mu: Service rates, shape ``(n,)``.

        Returns:
            ``q``, shape ``(n,)``.
        """
        rates = np.asarray(mu, dtype=np.float64)
        if self.p is None:
            return rates / rates.sum()
        return np.asarray(self.p, dtype=np.float64)

    def describe(self) -> str:
        """A short human-readable summary, e.g. ``"weighted beta=0.5, C=14, lr=0.03"``."""
        if self.rule == "asyncsgd":
            return f"AsyncSGD (return to sender), C={self.concurrency}, lr={self.lr:.3g}"
        routing = "uniform p" if self.is_uniform else "optimised p"
        if self.rule == "weighted":
            return (
                f"weighted beta={self.beta:.2f}, {routing}, C={self.concurrency}, "
                f"lr={self.lr:.3g}"
            )
        return f"{self.rule}, {routing}, C={self.concurrency}, lr={self.lr:.3g}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe mapping of every field."""
        return {
            "rule": self.rule,
            "concurrency": self.concurrency,
            "p": None if self.p is None else list(self.p),
            "beta": self.beta,
            "lr": self.lr,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DesignPoint:
        """Inverse of :meth:`to_dict`."""
        p = data.get("p")
        return cls(
            rule=str(data["rule"]),
            concurrency=int(data["concurrency"]),
            p=None if p is None else tuple(float(v) for v in p),
            beta=float(data.get("beta", 1.0)),
            lr=float(data.get("lr", 0.05)),
        )

    # ------------------------------------------------------------------ configs
    def to_config(self, base: SystemConfig) -> SystemConfig:
        """``base`` with ``concurrency``, ``[routing]`` and ``[algorithm]`` replaced.

        Everything else of ``base`` (clients, data, model, run, seed, and the algorithm's
        batch size, local steps and FedAsync/FedBuff knobs) is kept.

        Args:
            base: The config to start from.

        Returns:
            A validated config that runs this point.

        Raises:
            ConfigError: ``p`` has the wrong length for ``base``, or ``asyncsgd`` with
                ``C != n``.
        """
        n = base.num_clients
        if self.p is not None and len(self.p) != n:
            raise ConfigError(
                f"design p has {len(self.p)} entries, the config has n={n} clients"
            )
        if self.rule == "asyncsgd":
            if self.concurrency != n:
                raise ConfigError(
                    f"design rule 'asyncsgd' needs concurrency = n = {n}, got {self.concurrency}"
                )
            routing = RoutingConfig(kind="return_to_sender")
        elif self.is_uniform:
            routing = RoutingConfig(kind="uniform")
        else:
            routing = RoutingConfig(kind="fixed", p=self.p)
        algorithm: AlgorithmConfig = replace(
            base.algorithm,
            name=_ALGORITHM_OF[self.rule],
            lr=self.lr,
            weight_exponent=self.beta if self.rule == "weighted" else 1.0,
        )
        return base.replace(concurrency=self.concurrency, routing=routing, algorithm=algorithm)

    @classmethod
    def from_config(cls, config: SystemConfig) -> DesignPoint:
        """The point a config runs (its ``concurrency``, ``[routing]``, ``[algorithm]``).

        Args:
            config: A validated config. ``asyncsgd`` on return to sender is the
                ``asyncsgd`` rule; ``generalized_asyncsgd`` on return to sender (not a
                random routing) is rejected.

        Returns:
            The point.

        Raises:
            ConfigError: A combination outside the space.
        """
        algo = config.algorithm
        if config.routing.kind == "return_to_sender":
            if algo.name != "asyncsgd":
                raise ConfigError(
                    f"return-to-sender routing with algorithm {algo.name!r} is not a point "
                    "of the design space (only 'asyncsgd' returns to sender)"
                )
            return cls(rule="asyncsgd", concurrency=config.concurrency, p=None, lr=algo.lr)
        p = config.routing_probabilities
        rule = {v: k for k, v in _ALGORITHM_OF.items()}[algo.name]
        return cls(
            rule=rule,
            concurrency=config.concurrency,
            p=p,
            beta=algo.weight_exponent if rule == "weighted" else 1.0,
            lr=algo.lr,
        )


# --------------------------------------------------------------------------- the space
@dataclass(frozen=True)
class Parameter:
    """One dimension of the design space, tuner-agnostic.

    Attributes:
        name: Parameter name.
        kind: ``"categorical"``, ``"int"`` or ``"float"``.
        low: Lower bound (numbers).
        high: Upper bound (numbers).
        log: Sample on a log scale (floats).
        choices: The categories (``categorical``).
        rules: The rules for which the parameter is active (it is absent otherwise).
    """

    name: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[str, ...] = ()
    rules: tuple[str, ...] = RULES


def speed_tiers(mu: ArrayLike, *, rtol: float = 1e-9) -> tuple[int, ...]:
    """Group clients with equal service rates into tiers (numbered fastest first).

    Args:
        mu: Service rates, shape ``(n,)``.
        rtol: Relative tolerance for "equal".

    Returns:
        One tier index per client.
    """
    rates = np.asarray(mu, dtype=np.float64)
    distinct: list[float] = []
    for rate in sorted(rates.tolist(), reverse=True):
        if not distinct or abs(rate - distinct[-1]) > rtol * max(abs(rate), abs(distinct[-1])):
            distinct.append(rate)
    out = []
    for rate in rates.tolist():
        out.append(
            next(j for j, d in enumerate(distinct) if abs(rate - d) <= rtol * max(rate, d))
        )
    return tuple(out)


class DesignSpace:
    """The searchable design space of a fleet.

    Dimensions (:meth:`parameters`): ``rule``; ``lr`` (log scale, every rule);
    ``concurrency`` in ``1..max_concurrency`` (random-routing rules); ``beta`` in
    ``[0, 1]`` (``weighted``); one routing logit ``tier_t`` per speed tier in
    ``[-logit_bound, logit_bound]`` (``weighted``; FedAsync and FedBuff keep uniform
    routing, their usual setting). Clients of a tier share a routing probability, so a
    routing is ``p_i ∝ exp(z_tier(i))``.

    Args:
        mu: Service rates ``mu_i``.
        max_concurrency: Largest ``C``.
        lr_range: ``(low, high)`` of the step.
        rules: The rules searched (default all).
        tiers: Tier of every client (default :func:`speed_tiers` of ``mu``).
        logit_bound: Range of each routing logit.

    Raises:
        ConfigError: A bad argument.
    """

    def __init__(
        self,
        mu: ArrayLike,
        *,
        max_concurrency: int,
        lr_range: tuple[float, float] = (1e-3, 1.0),
        rules: Sequence[str] = RULES,
        tiers: Sequence[int] | None = None,
        logit_bound: float = 8.0,
    ) -> None:
        rates = np.asarray(mu, dtype=np.float64)
        if rates.ndim != 1 or rates.size == 0 or np.any(~(rates > 0)) or np.any(
            ~np.isfinite(rates)
        ):
            raise ConfigError(f"mu must be a non-empty list of finite rates > 0, got {mu!r}")
        rates.setflags(write=False)
        self.mu = rates
        n = rates.size
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or (
            max_concurrency < 1
        ):
            raise ConfigError(f"max_concurrency must be an integer >= 1, got {max_concurrency!r}")
        self.max_concurrency = int(max_concurrency)
        low, high = (float(v) for v in lr_range)
        if not (math.isfinite(low) and math.isfinite(high) and 0 < low < high):
            raise ConfigError(f"lr_range must be (low, high) with 0 < low < high, got {lr_range!r}")
        self.lr_range = (low, high)
        rule_list = tuple(rules)
        if not rule_list or any(r not in RULES for r in rule_list):
            raise ConfigError(
                f"rules must be a non-empty subset of {', '.join(RULES)}, got {rules!r}"
            )
        self.rules = rule_list
        labels = tuple(speed_tiers(rates) if tiers is None else (int(t) for t in tiers))
        if len(labels) != n or set(labels) != set(range(max(labels) + 1)):
            raise ConfigError(f"tiers must number the tiers 0..T-1, one per client, got {tiers!r}")
        self.tiers = labels
        self.num_tiers = max(labels) + 1
        if not (math.isfinite(logit_bound) and logit_bound > 0):
            raise ConfigError(f"logit_bound must be > 0, got {logit_bound!r}")
        self.logit_bound = float(logit_bound)

    @classmethod
    def from_config(cls, config: SystemConfig, **kwargs: Any) -> DesignSpace:
        """The space of a config's fleet (``max_concurrency`` default ``2 n``).

        Args:
            config: The fleet.
            **kwargs: Further arguments of the constructor.

        Returns:
            The space.
        """
        kwargs.setdefault("max_concurrency", max(2 * config.num_clients, config.concurrency))
        return cls(config.service_rates, **kwargs)

    @property
    def num_clients(self) -> int:
        """``n``."""
        return int(self.mu.size)

    # ------------------------------------------------------------------ dimensions
    def parameters(self) -> list[Parameter]:
        """Every dimension, in suggestion order (``rule`` first)."""
        random_rules = tuple(r for r in self.rules if r != "asyncsgd")
        out = [
            Parameter(name="rule", kind="categorical", choices=self.rules),
            Parameter(name="lr", kind="float", low=self.lr_range[0], high=self.lr_range[1],
                      log=True),
        ]
        if random_rules:
            out.append(Parameter(name="concurrency", kind="int", low=1,
                                 high=self.max_concurrency, rules=random_rules))
        if "weighted" in self.rules:
            out.append(Parameter(name="beta", kind="float", low=0.0, high=1.0,
                                 rules=("weighted",)))
            for t in range(self.num_tiers):
                out.append(Parameter(name=f"tier_{t}", kind="float", low=-self.logit_bound,
                                     high=self.logit_bound, rules=("weighted",)))
        return out

    def active(self, rule: str) -> list[Parameter]:
        """The dimensions that a point of ``rule`` uses."""
        return [par for par in self.parameters() if par.name == "rule" or rule in par.rules]

    def routing(self, logits: ArrayLike) -> FloatArray:
        """``p_i ∝ exp(z_tier(i))`` for per-tier logits ``z`` (clipped to the range)."""
        z = np.clip(np.asarray(logits, dtype=np.float64), -self.logit_bound, self.logit_bound)
        e = np.exp(z[np.asarray(self.tiers)] - z.max())
        p = e / e.sum()
        return np.asarray(p / p.sum(), dtype=np.float64)

    def decode(self, params: Mapping[str, Any]) -> DesignPoint:
        """The point that a parameter dictionary describes.

        Raises:
            ConfigError: A parameter the rule needs is missing, or the rule is unknown.
        """
        rule = str(params.get("rule", ""))
        if rule not in self.rules:
            raise ConfigError(f"rule must be one of {', '.join(self.rules)}, got {rule!r}")
        missing = [par.name for par in self.active(rule) if par.name not in params]
        if missing:
            raise ConfigError(f"design parameters are missing {missing[0]!r} for rule {rule!r}")
        lr = float(np.clip(float(params["lr"]), *self.lr_range))
        n = self.num_clients
        if rule == "asyncsgd":
            return DesignPoint(rule=rule, concurrency=n, p=None, lr=lr)
        c = min(max(int(params["concurrency"]), 1), self.max_concurrency)
        if rule == "weighted":
            z = [float(params[f"tier_{t}"]) for t in range(self.num_tiers)]
            p = self.routing(z)
            beta = float(np.clip(float(params["beta"]), 0.0, 1.0))
            return DesignPoint(rule=rule, concurrency=c, p=tuple(p), beta=beta, lr=lr)
        return DesignPoint(rule=rule, concurrency=c, p=(1.0 / n,) * n, lr=lr)

    def encode(self, point: DesignPoint) -> dict[str, Any]:
        """Parameters that decode to ``point`` projected on the space.

        The routing is projected on per-tier logits ``log(mean p_i over the tier)``
        (centred, clipped), so each tier keeps its share of the routing mass: a mean of
        ``log p_i`` instead would send almost nothing to a tier whose mass the optimum puts
        on a few of its clients. ``C`` and ``lr`` are clipped to their ranges.

        Raises:
            ConfigError: The point's rule is not searched, or its ``p`` has the wrong size.
        """
        if point.rule not in self.rules:
            raise ConfigError(f"rule {point.rule!r} is not in this space ({', '.join(self.rules)})")
        out: dict[str, Any] = {
            "rule": point.rule,
            "lr": float(np.clip(point.lr, *self.lr_range)),
        }
        if point.rule == "asyncsgd":
            return out
        out["concurrency"] = min(max(point.concurrency, 1), self.max_concurrency)
        if point.rule != "weighted":
            return out
        assert point.p is not None
        p = np.asarray(point.p, dtype=np.float64)
        if p.size != self.num_clients:
            raise ConfigError(f"design p has {p.size} entries, the space has n={self.num_clients}")
        tiers = np.asarray(self.tiers)
        z = np.log(np.array([p[tiers == t].mean() for t in range(self.num_tiers)]))
        z = np.clip(z - 0.5 * (z.max() + z.min()), -self.logit_bound, self.logit_bound)
        out["beta"] = point.beta
        out.update({f"tier_{t}": float(v) for t, v in enumerate(z)})
        return out

    def project(self, point: DesignPoint) -> DesignPoint:
        """``decode(encode(point))``: the nearest point the space can express."""
        return self.decode(self.encode(point))

    # ------------------------------------------------------------------ baselines
    def baselines(self, lr: float) -> dict[str, DesignPoint]:
        """The usual defaults as points of the space, all with step ``lr``.

        * ``uniform``: Generalized AsyncSGD (``beta = 1``), uniform ``p``, ``C = n``.
        * ``asyncsgd``: AsyncSGD, return to sender, ``C = n``.
        * ``fedasync``: FedAsync, uniform ``p``, ``C = n``.
        * ``fedbuff``: FedBuff, uniform ``p``, ``C = n``.

        Only the rules this space searches are returned.
        """
        n = self.num_clients
        uniform = (1.0 / n,) * n
        out = {
            "uniform": DesignPoint(rule="weighted", concurrency=n, p=uniform, beta=1.0, lr=lr),
            "asyncsgd": DesignPoint(rule="asyncsgd", concurrency=n, p=None, lr=lr),
            "fedasync": DesignPoint(rule="fedasync", concurrency=n, p=uniform, lr=lr),
            "fedbuff": DesignPoint(rule="fedbuff", concurrency=n, p=uniform, lr=lr),
        }
        return {k: v for k, v in out.items() if v.rule in self.rules}

    def __repr__(self) -> str:
        return (
            f"DesignSpace(n={self.num_clients}, rules={self.rules}, "
            f"max_concurrency={self.max_concurrency}, tiers={self.num_tiers}, "
            f"lr_range={self.lr_range})"
        )
