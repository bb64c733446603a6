"""Several drivers on one storage: ``--trials`` caps the study, not each driver.

Two drivers that each counted only their own trials used to take 86 trials for
``--trials 80``; they now count the study's trials (evaluated, and running for a live
driver) and ask under a lock next to the storage file (tuning.storage.trial_slot_lock).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import threading
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from tuning.executors import TrialDriver
from tuning.recovery import count_finished
from tuning.search_space import make_search_space
from tuning.storage import create_or_load_study, make_storage, trial_slot_lock
from tuning.study import TuneSettings, run_study

from .conftest import CONSTANTS

optuna.logging.set_verbosity(optuna.logging.WARNING)

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def _in_threads(work: Any, count: int) -> None:
    """Run ``work(k)`` in ``count`` threads started together; re-raise the first error."""
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def run(k: int) -> None:
        try:
            start.wait()
            work(k)
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
        assert not thread.is_alive(), "a driver hangs"
    if errors:
        raise errors[0]


@pytest.mark.parametrize("storage", [None, "sqlite:///{out}/study.db"], ids=["journal", "sqlite"])
def test_two_bound_drivers_take_exactly_the_trials(
    tiny_config, tmp_path: Path, storage: str | None
) -> None:
    url = storage.format(out=tmp_path) if storage else None
    settings = TuneSettings(
        objective="bound", trials=80, budget=40.0, max_concurrency=8, constants=CONSTANTS,
        warm_start=True, out=tmp_path, tensorboard=False, storage=url,
    )  # fmt: skip
    # a warm study first (created and bound to its problem), then two drivers at once
    run_study(tiny_config, dataclasses.replace(settings, trials=5))
    _in_threads(lambda k: run_study(tiny_config, settings), 2)
    study = optuna.load_study(
        study_name=settings.study_name, storage=make_storage(url, tmp_path)
    )
    finished = study.get_trials(deepcopy=False, states=_FINISHED)
    assert len(finished) == count_finished(study) == 80
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    assert sorted(t.number for t in study.get_trials(deepcopy=False)) == list(range(80))


def test_measured_drivers_count_each_others_running_trials(tiny_config, tmp_path: Path) -> None:
    """The ask path of measured trials (run_local / run_ray) with slow trials in flight."""
    settings = TuneSettings(
        objective="simulated", trials=12, budget=40.0, max_concurrency=8, out=tmp_path,
        tensorboard=False, warm_start=False,
    )  # fmt: skip
    storage = make_storage(None, tmp_path)
    study = create_or_load_study(
        storage=storage, study_name=settings.study_name, directions=["maximize"],
        metric_names=["val_accuracy"],
    )  # fmt: skip
    space = make_search_space(tiny_config, max_concurrency=8)
    lock = functools.partial(trial_slot_lock, None, tmp_path)
    most = [0]
    guard = threading.Lock()

    def drive(k: int) -> None:
        own = optuna.load_study(study_name=settings.study_name, storage=storage)
        driver = TrialDriver(
            own, tiny_config, space, settings, 40.0, None, None, storage, slot_lock=lock
        )
        try:
            while (claimed := driver.claim()) is not None:
                trial = claimed[0]
                with guard:  # trials that count or will, seen right after a claim
                    running = own.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                    done = count_finished(own)
                    most[0] = max(most[0], len(running) + done)
                own.tell(trial, float(k))
        finally:
            driver.close()

    _in_threads(drive, 3)
    assert most[0] <= 12
    assert len(study.get_trials(deepcopy=False, states=_FINISHED)) == count_finished(study) == 12


def test_drivers_finishing_together_both_write_the_report(tmp_path: Path) -> None:
    # Two drivers in one process used to share a pid-named temporary file for study.json:
    # when they finished together one os.replace found it gone (seen once in CI under load).
    # Here 8 threads write 40 reports each at once: every write succeeds, the file is one of
    # the reports, whole, and no temporary file is left behind.
    from tuning.study import _write_json

    path = tmp_path / "study.json"
    payloads = [{"writer": k, "rows": list(range(200))} for k in range(8)]
    _in_threads(lambda k: [_write_json(path, payloads[k]) for _ in range(40)], 8)
    assert json.loads(path.read_text()) in payloads
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.json"]
