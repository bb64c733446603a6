"""The tuner takes a workload built in code (the user's model and data callables)."""

from __future__ import annotations

from typing import Any

from raysync.workload import build_workload
from tests.test_user_workload import config, user_module
from tuning.study import TuneSettings, run_study

from .conftest import CONSTANTS

__all__ = ["user_module"]  # the fixture, re-used


def test_simulated_study_trains_the_workload_it_is_given(user_module: Any, tmp_path) -> None:  # noqa: ANN001
    built: list[int] = []

    def counting_model(input_shape: tuple[int, ...], num_classes: int) -> Any:
        built.append(1)
        return user_module.make_model(input_shape, num_classes, width=6)

    cfg = config()
    workload = build_workload(cfg, model_factory=counting_model, model_kwargs={})
    before = len(built)
    report = run_study(
        cfg,
        TuneSettings(
            objective="simulated", trials=2, budget=10.0, num_evals=1, constants=CONSTANTS,
            out=tmp_path, max_concurrency=4, warm_start=False, tensorboard=False,
        ),
        workload=workload,
    )  # fmt: skip
    assert report.counts == {"COMPLETE": 2}
    # every trial built the user's model from the workload it was handed
    assert len(built) - before >= 2
