"""Evaluation of the server's model, in a background thread, exactly once per request.

The server's loop decides *when* to evaluate (every ``run.eval_every_updates`` versions
and every ``run.eval_every_seconds``); :class:`Evaluator` does the evaluations in request
order in one thread, so the loop never waits for them, and keeps

* the points (:class:`~raysync.runtime._backend.EvalPoint`) and the metric events for the
  driver's sinks;
* the requests not finished yet, with the model each evaluates: a checkpoint stores them
  and the resumed run does them, so every scheduled evaluation happens exactly once
  across a resume (an evaluation in flight at the capture used to be lost).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from raysync.runtime._backend import EvalPoint
from raysync.runtime._state import Key
from raysync.simulation.engine import eval_failure
from raysync.workload import check_finite_loss, check_finite_params

__all__ = ["Evaluator"]


class Evaluator:
    """Evaluates models in a background thread and keeps the results.

    Args:
        model: A :class:`~raysync.workload.ModelSpec` (None: queue-only, no evaluation).
        x_test: Test inputs.
        y_test: Test labels.
        x_val: Validation inputs (may be empty).
        y_val: Validation labels.
    """

    def __init__(
        self,
        model: Any,
        x_test: np.ndarray | None,
        y_test: np.ndarray | None,
        x_val: np.ndarray | None,
        y_val: np.ndarray | None,
    ) -> None:
        self._model = model
        self._x_test, self._y_test = x_test, y_test
        self._x_val, self._y_val = x_val, y_val
        self.points: list[EvalPoint] = []
        self.events: list[tuple[int, dict[str, float], float]] = []
        self.pending = 0
        self.seconds = 0.0
        # Requests not finished, by request number: (time, version, train loss, model).
        self._requests: dict[int, tuple[float, int, float, np.ndarray]] = {}
        # The evaluations done of the latest version evaluated: (time, train loss,
        # seconds) each, for capture(reopen=...).
        self._latest_version = -1
        self._latest: list[tuple[float, float, float]] = []
        self._seq = 0
        self._futures: list[asyncio.Future[tuple[EvalPoint, float]]] = []
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._computer: Any = None
        self._restored: list[tuple[float, int, float, np.ndarray]] = []

    def warm(self) -> None:
        """Build the evaluation model now (at the server's start-up), not in the run.

        Built lazily, the model is made by the first evaluation, at the run's start,
        where its Python work competes with the loop for the GIL (profiled).
        """
        if self._computer is None and self._model is not None:
            self._computer = self._model.make_computer()

    def request(self, now: float, version: int, train_loss: float, params: np.ndarray) -> None:
        """Evaluate ``params`` (read-only: later updates make new arrays) of ``version``."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="raysync-eval"
            )
        self.pending += 1
        seq = self._seq
        self._seq += 1
        self._requests[seq] = (now, version, train_loss, params)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._evaluate, params, version, now)

        def done(fut: asyncio.Future[tuple[EvalPoint, float]]) -> None:
            # Runs on the event loop: no lock needed around the lists.
            self.pending -= 1
            self._requests.pop(seq, None)
            if fut.cancelled() or fut.exception() is not None:
                return
            point, seconds = fut.result()
            self.seconds += seconds
            if version != self._latest_version:
                self._latest_version, self._latest = version, []
            self._latest.append((now, train_loss, seconds))
            self.points.append(point)
            scalars = point.scalars()
            if not math.isnan(train_loss):
                scalars["train/loss"] = train_loss
            self.events.append((version, scalars, now))

        future.add_done_callback(done)
        self._futures = [f for f in self._futures if not f.done()]
        self._futures.append(future)

    def _evaluate(self, params: np.ndarray, version: int, now: float) -> tuple[EvalPoint, float]:
        """Test (and validation) loss and accuracy of ``params``; runs in the eval thread.

        Raises:
            DataError: ``params`` or a loss is not finite (the run diverged), named with
                the model version; the error ends the run when the loop drains the
                evaluations, as the simulator's does.
        """
        start = time.perf_counter()
        if self._computer is None:
            self._computer = self._model.make_computer()
        computer = self._computer
        try:
            # The simulator's checks, so a run that diverges (even in its last update)
            # ends with the same one line on both backends instead of reporting NaN.
            check_finite_params(params)
            test_loss, test_acc = computer.evaluate(params, self._x_test, self._y_test)
            check_finite_loss(test_loss, split="test", loss_name=computer.loss_name)
            if self._y_val is not None and len(self._y_val) > 0:
                val_loss, val_acc = computer.evaluate(params, self._x_val, self._y_val)
                check_finite_loss(val_loss, split="val", loss_name=computer.loss_name)
            else:
                val_loss, val_acc = math.nan, math.nan
        except Exception as exc:  # user model / loss / metric code, or a diverged model
            raise eval_failure(exc, version) from exc
        point = EvalPoint(
            now, version, float(test_loss), float(test_acc), float(val_loss), float(val_acc)
        )
        return point, time.perf_counter() - start

    async def drain(self) -> None:
        """Wait until every requested evaluation is done."""
        if self._futures:
            await asyncio.gather(*self._futures)
            self._futures = []

    def shutdown(self) -> None:
        """Stop the evaluation thread (after :meth:`drain`)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def last(self) -> EvalPoint | None:
        """The most recent evaluation done."""
        return self.points[-1] if self.points else None

    # ------------------------------------------------------------------ checkpoints

    def capture(self, reopen: tuple[int, np.ndarray] | None = None) -> dict[str, Any]:
        """The evaluations done and those requested and not finished (with models).

        ``reopen``: ``(version, model)``, the server's current model. Its evaluations
        already done are stored as not finished, so the resumed run does them again, as
        it does for a checkpoint captured in the update that reached ``version`` (a
        resumed run's TensorBoard log restarts at the checkpoint's version).
        """
        points = self.points
        requests = list(self._requests.values())
        seconds = self.seconds
        if reopen is not None and reopen[0] == self._latest_version and self._latest:
            version, model = reopen
            times = {at for at, _, _ in self._latest}
            points = [p for p in points if not (p.version == version and p.time in times)]
            requests += [(at, version, loss, model) for at, loss, _ in self._latest]
            seconds -= sum(spent for _, _, spent in self._latest)
        evals = [
            [e.time, e.version, e.test_loss, e.test_accuracy, e.val_loss, e.val_accuracy]
            for e in sorted(points, key=lambda e: (e.version, e.time))
        ]
        return {
            Key.EVALS: evals,
            Key.EVAL_PENDING: [[t, v, loss] for t, v, loss, _ in requests],
            Key.EVAL_PARAMS: {str(v): m for _, v, _, m in requests},
            Key.EVAL_SECONDS: seconds,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`capture`'s entries; :meth:`resume` re-requests the rest."""
        self.seconds = float(state.get(Key.EVAL_SECONDS, 0.0))
        self.points = [
            EvalPoint(float(e[0]), int(e[1]), *(float(v) for v in e[2:6]))
            for e in state.get(Key.EVALS, [])
        ]
        models = state.get(Key.EVAL_PARAMS) or {}
        for row in state.get(Key.EVAL_PENDING, []):
            version = int(row[1])
            if str(version) not in models:
                continue
            model = np.array(models[str(version)], dtype=np.float32)
            model.setflags(write=False)
            self._restored.append((float(row[0]), version, float(row[2]), model))

    def resume(self) -> None:
        """Request the evaluations a restored checkpoint had not finished (call in the loop)."""
        for at, version, train_loss, model in self._restored:
            self.request(at, version, train_loss, model)
        self._restored = []
