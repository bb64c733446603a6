"""The server's checkpoint state: its versioned schema and the manager that writes it.

Every entry of the server's state tree is named here once (:class:`Key`); the parts of
the server that own a piece of state (dispatch, evaluation, the statistics, the loop)
capture and restore it under these names, and
:func:`~raysync.runtime.checkpoint.check_server_state` checks it under the same names.
:data:`SCHEMA_VERSION` is stored in every state (``Key.SCHEMA``); a checkpoint of an
older schema is read as far as it goes (older trees lack later optional entries), one of
a newer schema is refused.

:class:`CheckpointManager` decides when a checkpoint is due and writes it atomically
from a background thread (:func:`~raysync.runtime.checkpoint.write_checkpoint`), in
order; a failed write surfaces at the next checkpoint or at the end of the run.

Schema versions: 1, the first; 2, adds ``schema``, ``eval_pending`` and ``eval_params``
(evaluations requested and not finished at the capture, done by the resumed run); 3, adds
the book's real-communication sums ``comm_count``, ``comm_overhead``, ``comm_downlink`` and
``comm_uplink`` (:meth:`~raysync.runtime._backend.ServerBook.communicated`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Mapping
from typing import Any, cast

from raysync.config import RunConfig
from raysync.exceptions import CheckpointError, RaySyncError

logger = logging.getLogger(__name__)

__all__ = ["PENDING_COLUMNS", "SCHEMA_VERSION", "STATE_KEYS", "CheckpointManager", "Key"]

SCHEMA_VERSION = 3


class Key:
    """Names of the entries of the server's state tree (the schema, in one place)."""

    SCHEMA = "schema"
    #: Model version, the next task id and the wall seconds run so far.
    VERSION = "version"
    NEXT_TASK_ID = "next_task_id"
    ELAPSED = "elapsed"
    #: The model and the models of the versions the pending tasks carry (by version).
    PARAMS = "params"
    BASE_PARAMS = "base_params"
    #: Tasks created and not applied: columns of :data:`PENDING_COLUMNS`.
    PENDING = "pending"
    #: Per client: tasks created so far (seeds minibatches), service-time stream state
    #: and its unconsumed draws (flat, with each client's count).
    ORDINALS = "ordinals"
    SERVICE_RNG = "service_rng"
    SERVICE_PENDING = "service_pending"
    SERVICE_PENDING_LEN = "service_pending_len"
    #: State dicts of the router and the strategy (None in queue-only runs).
    ROUTER = "router"
    STRATEGY = "strategy"
    #: The statistics (:meth:`~raysync.runtime._backend.ServerBook.state`), with the
    #: real-communication sums from schema 3 on.
    BOOK = "book"
    #: Evaluations done, and those requested but not finished (with their models).
    EVALS = "evals"
    EVAL_PENDING = "eval_pending"
    EVAL_PARAMS = "eval_params"
    EVAL_SECONDS = "eval_seconds"
    NEXT_EVAL_TIME = "next_eval_time"
    #: Fault counters and the server's lag (sum, max, count).
    COUNTERS = "counters"
    LAG = "lag"
    #: TensorBoard run directory name and the step to continue from.
    RUN_NAME = "run_name"
    TENSORBOARD_STEP = "tensorboard_step"


#: Every top-level entry of the state tree (a tree with any other key is refused).
STATE_KEYS = frozenset(v for k, v in vars(Key).items() if k.isupper() and isinstance(v, str))

#: Columns of ``Key.PENDING`` (one entry per pending task).
PENDING_COLUMNS = ("task_id", "client", "base_version", "created", "sample", "ordinal")


def schema_of(state: Mapping[str, Any]) -> int:
    """The schema version of a state tree (1 when it predates the ``schema`` entry)."""
    return int(state.get(Key.SCHEMA, 1))


class CheckpointManager:
    """When to checkpoint, and the background writes (ordered, errors surfaced).

    Args:
        run: The run's settings (``checkpoint_every_updates``, ``checkpoint_dir``).
        fingerprint: The config fingerprint stored with each checkpoint.
        fields: Its named facts.
    """

    def __init__(self, run: RunConfig, fingerprint: str, fields: Mapping[str, Any]) -> None:
        self._every = run.checkpoint_every_updates
        self._directory = run.checkpoint_dir
        self._fingerprint = fingerprint
        self._fields = dict(fields)
        self.last = -1  # version of the last checkpoint (captured or resumed from)
        self.written = 0
        self.scheduled = 0  # writes handed to the writer thread (it runs them in order)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._futures: list[asyncio.Future[Any]] = []

    def due(self, version: int, advanced: bool) -> bool:
        """Whether the update that reached ``version`` calls for a checkpoint."""
        return advanced and self._every is not None and version % self._every == 0

    def final_due(self, version: int) -> bool:
        """Whether the run's end (or Ctrl-C) calls for one: a directory, none at ``version``.

        With ``run.checkpoint_dir`` alone (no ``checkpoint_every_updates``) these are the
        run's only checkpoints.
        """
        return self._directory is not None and self.last != version

    def write(self, state: Mapping[str, Any]) -> None:
        """Write ``state`` in the background (after the writes before it).

        Raises:
            RaySyncError: An earlier write failed.
        """
        if self._directory is None:
            return
        version = int(state[Key.VERSION])
        bad = _non_finite_model(state)
        if bad is not None:
            # The reader refuses it as corrupt; keep the last good one instead of replacing it
            # with a diverged model that no resume could use.
            kept = f"version {self.last} is kept" if self.last >= 0 else "none was written"
            logger.warning(
                "checkpoint of version %d not written: %s is not finite (training diverged); "
                "the last checkpoint, %s", version, bad, kept,
            )
            return
        self.last = version
        self.scheduled += 1
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="raysync-checkpoint"
            )
        directory = self._directory
        from raysync.runtime.checkpoint import write_checkpoint

        def write() -> None:
            write_checkpoint(
                directory,
                state,
                version=version,
                fingerprint=self._fingerprint,
                fields=self._fields,
            )

        future = asyncio.get_running_loop().run_in_executor(self._executor, write)

        def done(fut: asyncio.Future[Any]) -> None:
            if not fut.cancelled() and fut.exception() is None:
                self.written += 1

        future.add_done_callback(done)
        failed = [f for f in self._futures if f.done() and f.exception() is not None]
        if failed:
            raise cast(BaseException, failed[0].exception())
        self._futures = [f for f in self._futures if not f.done()]
        self._futures.append(future)

    async def flush(self) -> None:
        """Wait for every write; stop the writer thread.

        Raises:
            RaySyncError: A write failed (:class:`~raysync.exceptions.CheckpointError`
                for an unexpected error).
        """
        if self._futures:
            results = await asyncio.gather(*self._futures, return_exceptions=True)
            self._futures = []
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                error = errors[0]
                if isinstance(error, RaySyncError):
                    raise error
                raise CheckpointError(f"writing a checkpoint failed: {error}") from error
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None


def _non_finite_model(state: Mapping[str, Any]) -> str | None:
    """The first model entry of ``state`` that holds NaN or inf (None: all finite)."""
    import numpy as np

    params = state.get(Key.PARAMS)
    if params is not None and not np.isfinite(np.asarray(params)).all():
        return Key.PARAMS
    for name in (Key.BASE_PARAMS, Key.EVAL_PARAMS):
        for v, model in (state.get(name) or {}).items():
            if model is not None and not np.isfinite(np.asarray(model)).all():
                return f"{name}[{v}]"
    return None
