"""Small torch models and the flat-parameter wire format.

Models take flat image vectors and return logits; :func:`build_model` initialises them from a
seed without touching torch's global RNG. Parameters travel as one ``float32`` numpy vector
(:func:`get_flat_params` / :func:`set_flat_params`); :class:`GradientComputer` evaluates
gradients, local SGD steps and metrics at any such vector.
"""

from __future__ import annotations

from raysync.models.flat import (
    LOSS_NAMES,
    METRIC_NAMES,
    GradientComputer,
    get_flat_grad,
    get_flat_params,
    num_parameters,
    resolve_device,
    resolve_loss,
    set_flat_params,
)
from raysync.models.nets import (
    MLP,
    MODEL_FACTORIES,
    MODEL_NAMES,
    LogisticRegression,
    SmallCNN,
    build_model,
    init_parameters,
)

__all__ = [
    "MLP",
    "MODEL_FACTORIES",
    "MODEL_NAMES",
    "GradientComputer",
    "LOSS_NAMES",
    "METRIC_NAMES",
    "LogisticRegression",
    "SmallCNN",
    "build_model",
    "get_flat_grad",
    "get_flat_params",
    "init_parameters",
    "num_parameters",
    "resolve_device",
    "resolve_loss",
    "set_flat_params",
]
