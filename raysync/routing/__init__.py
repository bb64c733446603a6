"""Routing: which client serves each task.

The same objects drive the simulator and the Ray runtime. See
:class:`~raysync.routing.BaseRouter` for the call order.
"""

from __future__ import annotations

from raysync.routing._base import BaseRouter
from raysync.routing._factory import make_router
from raysync.routing.adaptive import AdaptiveRouter, RoutingChange
from raysync.routing.estimation import OnlineRateEstimator
from raysync.routing.fixed import FixedRouter, UniformRouter
from raysync.routing.return_to_sender import ReturnToSenderRouter

__all__ = [
    "AdaptiveRouter",
    "BaseRouter",
    "FixedRouter",
    "OnlineRateEstimator",
    "ReturnToSenderRouter",
    "RoutingChange",
    "UniformRouter",
    "make_router",
]
