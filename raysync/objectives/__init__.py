"""The convergence bound of Generalized AsyncSGD and its optimisation (docs/theory.md 3-5).

* :class:`BoundObjective`: the bound ``B_K(p, C)`` for a fleet, with the per-update (3a)
  or wall-clock (3b, ``K = Lambda(p, C) T``) criterion, a fixed or optimised step, each term
  separately (:class:`BoundTerms`), whole ``C`` curves (:class:`BoundCurve`) and exact
  gradients in ``p``.
* :func:`optimize_routing`, :func:`optimize_concurrency`, :func:`optimize_joint`: minimise it
  over ``p`` on the simplex, integer ``C``, or both (:class:`OptimizationResult`).
* :func:`optimal_step_size`, :func:`step_size_cap`: the closed-form step.
* :func:`estimate_constants`, :func:`estimate_service_rate`: the constants ``L``,
  ``sigma^2``, ``M^2``, ``A`` (and ``zeta^2``, the clients' gradient Gram matrices) from a
  pilot run, and ``mu_i`` from observed service times; :func:`pool_bias_over_draws`
  averages the bias statistics over pilots on several draws of the data.
* :class:`DesignSpace`, :class:`DesignPoint`: update rule, routing, ``C`` and step as one
  space; the usual defaults are points of it; points convert to and from configs.
* :class:`BiasAwareBound`, :func:`optimize_bias_aware`: the bound of docs/theory.md section 6
  that also covers unweighted (biased) updates, and its minimiser over the design space.
"""

from __future__ import annotations

from raysync.objectives.bias import (
    BIAS_KINDS,
    BiasAwareBound,
    BiasOptimum,
    BiasTerms,
    bias_weights,
    optimize_bias_aware,
)
from raysync.objectives.bounds import (
    CRITERIA,
    AsyncSGDStatistics,
    BoundCurve,
    BoundObjective,
    BoundTerms,
    Criterion,
    ProblemConstants,
    asyncsgd_statistics,
    bound_from_statistics,
    check_fixed_step,
    check_routing,
    check_time_budget,
    mean_delay,
    optimal_step_size,
    step_size_cap,
    variance_inflation,
)
from raysync.objectives.constants import (
    RATE_METHODS,
    ConstantsEstimate,
    RateEstimate,
    estimate_constants,
    estimate_constants_for_config,
    estimate_service_rate,
    estimate_service_rates,
    pool_bias_over_draws,
)
from raysync.objectives.design import RULES, DesignPoint, DesignSpace, Parameter, speed_tiers
from raysync.objectives.optimize import (
    OptimizationResult,
    check_search_size,
    default_max_concurrency,
    optimize_concurrency,
    optimize_joint,
    optimize_routing,
)

__all__ = [
    "BIAS_KINDS",
    "CRITERIA",
    "RULES",
    "RATE_METHODS",
    "AsyncSGDStatistics",
    "BiasAwareBound",
    "BiasOptimum",
    "BiasTerms",
    "BoundCurve",
    "BoundObjective",
    "BoundTerms",
    "ConstantsEstimate",
    "Criterion",
    "DesignPoint",
    "DesignSpace",
    "OptimizationResult",
    "Parameter",
    "ProblemConstants",
    "RateEstimate",
    "asyncsgd_statistics",
    "bias_weights",
    "bound_from_statistics",
    "check_routing",
    "check_fixed_step",
    "check_time_budget",
    "check_search_size",
    "default_max_concurrency",
    "estimate_constants",
    "estimate_constants_for_config",
    "estimate_service_rate",
    "estimate_service_rates",
    "mean_delay",
    "optimal_step_size",
    "optimize_bias_aware",
    "optimize_concurrency",
    "optimize_joint",
    "optimize_routing",
    "pool_bias_over_draws",
    "speed_tiers",
    "step_size_cap",
    "variance_inflation",
]
