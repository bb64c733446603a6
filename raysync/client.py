"""What a client computes for one task: the single entry point of simulator and runtime.

Both the discrete-event simulator and the Ray client actors call :func:`run_client_work`
once per task, so training behaves identically on the virtual clock and for real.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raysync.exceptions import LOWER_THE_STEP, ConfigError, DataError, DivergenceError
from raysync.models import GradientComputer
from raysync.strategies._base import ClientWork

__all__ = ["ClientOutput", "run_client_work"]


@dataclass(frozen=True, kw_only=True)
class ClientOutput:
    """What a client sends back for one task.

    Attributes:
        payload: Flat float32 vector: gradient, new parameters or delta (see
            :class:`~raysync.strategies.ClientWork`).
        loss: Training loss on the minibatch (``gradient``) or the mean over the local
            steps (``params`` / ``delta``).
        num_samples: Samples processed (with repetition across local steps).
    """

    payload: np.ndarray
    loss: float
    num_samples: int


def _local_samples(num_rows: int, steps: int, batch_size: int) -> int:
    """Samples :meth:`GradientComputer.local_steps` processes (passes end with short batches)."""
    full, remainder = divmod(num_rows, batch_size)
    batches_per_pass = full + (1 if remainder else 0)
    passes, extra_batches = divmod(steps, batches_per_pass)
    return passes * num_rows + min(extra_batches * batch_size, num_rows)


def run_client_work(
    computer: GradientComputer,
    work: ClientWork,
    params: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator,
) -> ClientOutput:
    """Run one task's computation on a client's data.

    * ``gradient``: draw ``work.batch_size`` distinct rows of ``(x, y)`` with ``rng``
      (all rows, in order, if the client has fewer) and return the minibatch gradient of
      the mean cross-entropy at ``params``.
    * ``params``: run ``work.local_steps`` SGD steps of size ``work.local_lr`` from
      ``params`` (minibatches of ``work.batch_size`` drawn without replacement from a
      permutation reshuffled after each pass, see
      :meth:`~raysync.models.GradientComputer.local_steps`) and return the new parameters.
    * ``delta``: the same steps, returning ``new - params``.

    ``params`` is never modified (it may be a read-only view of Ray's object store).

    Args:
        computer: Evaluates the model at flat parameter vectors.
        work: What to compute (from :meth:`~raysync.strategies.BaseStrategy.client_work`).
        params: The model the task carried, flat float32.
        x: The client's inputs ``(N, features)``.
        y: The client's labels ``(N,)``.
        rng: The client's generator; advanced by the minibatch draws.

    Returns:
        The payload (flat float32, length of ``params``), the loss and the sample count.

    Raises:
        ConfigError: Unknown work kind, or bad step count / learning rate.
        DataError: The client holds no data, or ``x`` and ``y`` do not match.
        DivergenceError: Training went non-finite (a :class:`DataError`): the parameters
            the task carried, the loss or the payload hold a NaN or an infinity (one
            ``isfinite`` pass over each flat vector per task; a diverging run stops here
            instead of reporting NaN metrics).
    """
    num_rows = len(y)
    if num_rows == 0:
        raise DataError("client has no training samples (empty partition)")
    if not np.isfinite(params).all():
        raise DivergenceError(
            f"the parameters the task carried are not finite "
            f"({_count_bad(params)} of {np.size(params)} entries): an earlier update "
            f"diverged; {LOWER_THE_STEP}, or check the loss"
        )
    # An overflow on the way to a non-finite loss or payload is reported below as one
    # DivergenceError; numpy's warnings would only print ahead of it (one context per task,
    # not per step, since a step of the closed-form path costs microseconds).
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        output = _work(computer, work, params, x, y, rng, num_rows)
    # Zero local steps train nothing and report a NaN loss by design.
    trained = work.kind == "gradient" or work.local_steps > 0
    if trained and not np.isfinite(output.loss):
        raise DivergenceError(
            f"the training loss {computer.loss_name!r} is {output.loss} on "
            f"{output.num_samples} samples: training diverged or the loss is not finite "
            f"for this batch; {LOWER_THE_STEP}, or check the loss and the data"
        )
    if not np.isfinite(output.payload).all():
        what = "gradient" if work.kind == "gradient" else f"{work.kind} after the local steps"
        raise DivergenceError(
            f"the {what} is not finite ({_count_bad(output.payload)} of "
            f"{output.payload.size} entries) although the loss is {output.loss}: training "
            f"diverged; {LOWER_THE_STEP}"
        )
    return output


def _count_bad(a: np.ndarray) -> int:
    return int((~np.isfinite(np.asarray(a))).sum())


def _work(
    computer: GradientComputer,
    work: ClientWork,
    params: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator,
    num_rows: int,
) -> ClientOutput:
    if work.kind == "gradient":
        if num_rows > work.batch_size:
            idx = rng.choice(num_rows, size=work.batch_size, replace=False)
            xb, yb = x[idx], y[idx]
        else:
            xb, yb = x, y
        grad, loss = computer.compute_gradient(params, xb, yb)
        return ClientOutput(
            payload=np.ascontiguousarray(grad, dtype=np.float32),
            loss=float(loss),
            num_samples=len(yb),
        )
    if work.kind in ("params", "delta"):
        new = computer.local_steps(
            params,
            x,
            y,
            steps=work.local_steps,
            batch_size=work.batch_size,
            lr=work.local_lr,
            rng=rng,
        )
        new = np.ascontiguousarray(new, dtype=np.float32)
        payload = new if work.kind == "params" else new - np.asarray(params, dtype=np.float32)
        return ClientOutput(
            payload=payload,
            loss=float(computer.last_train_loss),
            num_samples=_local_samples(num_rows, work.local_steps, work.batch_size),
        )
    raise ConfigError(f"work.kind must be one of gradient, params, delta, got {work.kind!r}")
