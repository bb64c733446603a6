"""Closed-network analysis of asynchronous federated learning (docs/theory.md section 2).

``C`` tasks circulate between ``n`` clients (exponential FIFO servers, rates ``mu``) with
routing probabilities ``p``; optional latency (infinite-server) and server stations keep
the product form. :func:`analyze` returns the update throughput, per-client utilisation,
queue lengths, sojourn times and mean relative delays (staleness in updates) with three
independent solvers (MVA, Buzen, brute-force Markov chain); :func:`gradients` and the
torch functions give their exact derivatives, and :func:`mva_forward` /
:meth:`MVATape.vjp` (numpy reverse mode, ``O(nC)``) the gradient of a scalar objective.

Example:
    >>> from raysync.queueing import ClosedNetwork, analyze
    >>> net = ClosedNetwork(mu=[1, 2, 4, 0.5], p=[0.4, 0.3, 0.2, 0.1], concurrency=6)
    >>> round(analyze(net).throughput, 5)
    2.45056
"""

from __future__ import annotations

from raysync.queueing._adjoint import (
    MVATape,
    mva_curve_value_and_vjp,
    mva_forward,
    mva_value_and_vjp,
)
from raysync.queueing._bruteforce import DEFAULT_MAX_STATES, stationary_distribution
from raysync.queueing._buzen import log_normalizing_constants
from raysync.queueing.analysis import METHODS, Method, analyze
from raysync.queueing.gradients import (
    QueueingGradients,
    gradients,
    throughput_and_delays_curve_torch,
    throughput_and_delays_torch,
)
from raysync.queueing.network import ClosedNetwork
from raysync.queueing.predict import analyze_independent_cycles, predict
from raysync.queueing.result import QueueingResult
from raysync.queueing.tiered import TieredNetwork, TieredResult, analyze_tiered

__all__ = [
    "DEFAULT_MAX_STATES",
    "METHODS",
    "ClosedNetwork",
    "MVATape",
    "Method",
    "QueueingGradients",
    "QueueingResult",
    "TieredNetwork",
    "TieredResult",
    "analyze",
    "analyze_independent_cycles",
    "analyze_tiered",
    "gradients",
    "log_normalizing_constants",
    "mva_curve_value_and_vjp",
    "mva_forward",
    "mva_value_and_vjp",
    "predict",
    "stationary_distribution",
    "throughput_and_delays_curve_torch",
    "throughput_and_delays_torch",
]
