"""The server-update extension point: how a client's result changes the model."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["BaseStrategy", "ClientResult", "ClientWork"]


@dataclass(frozen=True, kw_only=True)
class ClientWork:
    """What a client computes for one task; the same for every task of a strategy.

    Attributes:
        kind: ``gradient``: one minibatch stochastic gradient at the task's model;
            ``params``: ``local_steps`` SGD steps from the task's model, return the
            new parameters; ``delta``: the same steps, return ``new - received``.
        batch_size: Minibatch size.
        local_steps: Local SGD steps (``params`` / ``delta``).
        local_lr: Client learning rate for local steps.
    """

    kind: Literal["gradient", "params", "delta"]
    batch_size: int
    local_steps: int = 1
    local_lr: float = 0.0


@dataclass(frozen=True, kw_only=True)
class ClientResult:
    """One completed task, as the strategy sees it.

    Attributes:
        task_id: Unique id of the task (the server applies each id at most once).
        client_id: Client that served it.
        base_version: Model version the task carried (``v``).
        current_version: Server model version when the result is consumed (``k``).
        payload: Flat float32 vector: gradient, new parameters or delta
            (see :class:`ClientWork`).
        loss: Training loss the client measured on its minibatch(es).
        num_samples: Samples the client used.
    """

    task_id: int
    client_id: int
    base_version: int
    current_version: int
    payload: np.ndarray
    loss: float = float("nan")
    num_samples: int = 0

    @property
    def staleness(self) -> int:
        """Relative delay ``D = k - v`` (docs/theory.md section 1)."""
        return self.current_version - self.base_version


class BaseStrategy(abc.ABC):
    """Decides how results change the server model. It never touches clocks, threads or Ray.

    Call order (the simulator and the Ray runtime follow it exactly):

    1. ``bind(num_clients, routing_probabilities)`` before anything else.
       ``routing_probabilities`` is the router's ``p`` (None when the router is not a
       fixed random routing). A router that changes ``p`` during a run (the adaptive
       router, clients joining or leaving) makes the engine call ``bind`` again with the
       new ``p`` between two ``apply`` calls; buffers (FedBuff) are kept, and the new
       ``p`` weighs only results applied after it.
    2. ``client_work()`` whenever the engine needs to know what clients compute.
    3. ``apply(params, result)`` once per completed task, in completion order, with the
       current model ``w_k`` (read-only flat float32). It returns the new model
       ``w_{k+1}`` (a new array) when the model version advances, or ``None`` when the
       result was only buffered (FedBuff). Only a non-None return bumps the version.

    ``state_dict()`` / ``load_state_dict()`` capture buffers for checkpoints.
    """

    def __init__(self) -> None:
        self._num_clients: int | None = None
        self._routing_probabilities: np.ndarray | None = None

    def bind(self, num_clients: int, routing_probabilities: np.ndarray | None) -> None:
        """Attach the strategy to a fleet.

        Raises:
            ValueError: The strategy cannot work with this routing.
        """
        if num_clients < 1:
            raise ValueError(f"num_clients must be >= 1, got {num_clients}")
        self._num_clients = num_clients
        self._routing_probabilities = (
            None
            if routing_probabilities is None
            else np.asarray(routing_probabilities, dtype=np.float64)
        )

    @property
    def num_clients(self) -> int:
        """Number of clients, available after :meth:`bind`."""
        if self._num_clients is None:
            raise RuntimeError(f"{type(self).__name__}.bind() must be called first")
        return self._num_clients

    @abc.abstractmethod
    def client_work(self) -> ClientWork:
        """What clients compute for each task."""

    @abc.abstractmethod
    def apply(self, params: np.ndarray, result: ClientResult) -> np.ndarray | None:
        """Consume one result; return the new model or None if the version stays."""

    def state_dict(self) -> dict[str, Any]:
        """Serialisable state (buffers); empty for stateless rules."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        del state
