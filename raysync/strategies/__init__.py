"""Server update rules: how a client's result changes the model.

The same objects drive the simulator and the Ray runtime. See
:class:`~raysync.strategies.BaseStrategy` for the call order.
"""

from __future__ import annotations

from raysync.strategies._base import BaseStrategy, ClientResult, ClientWork
from raysync.strategies._factory import make_strategy, staleness_from_config
from raysync.strategies.asyncsgd import AsyncSGD, GeneralizedAsyncSGD
from raysync.strategies.fedasync import FedAsync
from raysync.strategies.fedbuff import FedBuff
from raysync.strategies.staleness import (
    BaseStaleness,
    ConstantStaleness,
    HingeStaleness,
    PolynomialStaleness,
    make_staleness,
)

__all__ = [
    "AsyncSGD",
    "BaseStaleness",
    "BaseStrategy",
    "ClientResult",
    "ClientWork",
    "ConstantStaleness",
    "FedAsync",
    "FedBuff",
    "GeneralizedAsyncSGD",
    "HingeStaleness",
    "PolynomialStaleness",
    "make_staleness",
    "make_strategy",
    "staleness_from_config",
]
