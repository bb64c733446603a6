"""The server's evaluator: request order, checkpoint capture and restore."""

from __future__ import annotations

import asyncio

import numpy as np

from raysync.runtime._evaluation import Evaluator
from raysync.runtime._state import Key
from raysync.workload import build_workload

from ._helpers import digits_config


def _evaluator() -> tuple[Evaluator, np.ndarray]:
    workload = build_workload(digits_config(10))
    x_test, y_test = workload.split("test")
    x_val, y_val = workload.split("val")
    params = np.asarray(workload.initial_params, dtype=np.float32)
    params.setflags(write=False)
    return Evaluator(workload.model, x_test, y_test, x_val, y_val), params


def test_reopen_stores_the_current_versions_evaluations_as_not_finished() -> None:
    evaluator, params = _evaluator()
    later = (params + 0.01).astype(np.float32)
    later.setflags(write=False)

    async def evaluate() -> None:
        evaluator.request(0.0, 0, float("nan"), params)
        evaluator.request(1.5, 7, 2.25, later)
        evaluator.request(1.75, 7, 2.5, later)  # e.g. a time-based one at the same version
        await evaluator.drain()

    asyncio.run(evaluate())
    plain = evaluator.capture()
    assert [row[1] for row in plain[Key.EVALS]] == [0, 7, 7]
    assert plain[Key.EVAL_PENDING] == []
    reopened = evaluator.capture((7, later))
    # Version 7's two evaluations become requests, with their times and train losses;
    # their seconds leave the total (the resumed run counts them when it redoes them).
    assert [row[1] for row in reopened[Key.EVALS]] == [0]
    assert reopened[Key.EVAL_PENDING] == [[1.5, 7, 2.25], [1.75, 7, 2.5]]
    np.testing.assert_array_equal(reopened[Key.EVAL_PARAMS]["7"], later)
    assert 0 < reopened[Key.EVAL_SECONDS] < plain[Key.EVAL_SECONDS]
    # Another version (no evaluation of it done): nothing is reopened.
    assert evaluator.capture((8, later)) == plain
    # The evaluator itself is unchanged by a capture.
    assert [p.version for p in evaluator.points] == [0, 7, 7]

    # Restored and resumed, the reopened evaluations are done again, with the same numbers.
    resumed, _ = _evaluator()
    resumed.restore(reopened)

    async def redo() -> None:
        resumed.resume()
        await resumed.drain()

    asyncio.run(redo())
    assert [(p.time, p.version) for p in resumed.points] == [(0.0, 0), (1.5, 7), (1.75, 7)]
    assert resumed.points[1:] == evaluator.points[1:]
    assert [(step, at) for step, _, at in resumed.events] == [(7, 1.5), (7, 1.75)]
    assert resumed.events[0][1]["train/loss"] == 2.25
