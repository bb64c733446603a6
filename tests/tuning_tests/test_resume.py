"""Kill a study with SIGKILL mid-way, resume it from its storage, lose nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from tuning.study import TuneSettings, count_finished, make_storage, recover_stale_trials, run_study

from .conftest import CONSTANTS

optuna.logging.set_verbosity(optuna.logging.WARNING)

C_TEXT = f"{CONSTANTS.L},{CONSTANTS.sigma2},{CONSTANTS.M2},{CONSTANTS.A}"


def _snapshot(storage, name: str) -> list[optuna.trial.FrozenTrial] | None:
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    except KeyError:
        return None  # not created yet


def test_kill_and_resume_keeps_completed_trials(tiny_path, tiny_config, tmp_path) -> None:
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "raysync.cli", "tune", str(tiny_path), "--objective", "simulated",
        "--trials", "40", "--budget", "20", "--num-evals", "2", "--pruner", "none",
        "--constants", C_TEXT, "--out", str(out), "--study", "killme", "--no-tensorboard",
        "--no-plots", "--no-progress",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    journal = out / "study.journal"
    deadline = time.monotonic() + 120
    trials = None
    try:
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]  # type: ignore[union-attr]
            if journal.exists():
                trials = _snapshot(make_storage(str(journal), out), "killme")
                if trials is not None:
                    done = [t for t in trials if t.state == TrialState.COMPLETE]
                    running = [t for t in trials if t.state == TrialState.RUNNING]
                    if len(done) >= 3 and running:
                        break
            time.sleep(0.1)
        else:
            pytest.fail("the study did not complete 3 trials in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    storage = make_storage(str(journal), out)
    before = optuna.load_study(study_name="killme", storage=storage).get_trials(deepcopy=True)
    completed = {t.number: t.value for t in before if t.state == TrialState.COMPLETE}
    stale = [t.number for t in before if t.state == TrialState.RUNNING]
    assert len(completed) >= 3 and stale

    report = run_study(
        tiny_config,
        TuneSettings(
            objective="simulated", trials=len(completed) + 3, budget=20.0, num_evals=2,
            pruner="none", constants=CONSTANTS, storage=str(journal), study_name="killme",
            out=out, tensorboard=False,
        ),
    )
    study = optuna.load_study(study_name="killme", storage=make_storage(str(journal), out))
    after = {t.number: t for t in study.get_trials(deepcopy=False)}
    for number, value in completed.items():  # nothing completed was lost or changed
        assert after[number].state == TrialState.COMPLETE
        assert after[number].value == value
    for number in stale:  # the interrupted trial failed and was re-run with its parameters
        assert after[number].state == TrialState.FAIL
        assert after[number].user_attrs["stale"] is True
        retries = [t for t in after.values() if t.user_attrs.get("retry_of") == number]
        assert len(retries) == 1
        assert retries[0].params == after[number].params
        assert retries[0].state == TrialState.COMPLETE
    assert not [t for t in after.values() if t.state == TrialState.RUNNING]
    assert count_finished(study) == len(completed) + 3
    assert report.counts["COMPLETE"] >= len(completed) + 3


def test_recover_stale_trials_on_sqlite_spares_live_drivers(tmp_path) -> None:
    storage = make_storage(f"sqlite:///{tmp_path / 'study.db'}", tmp_path, heartbeat_interval=60)
    study = optuna.create_study(study_name="s", storage=storage)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    import socket

    for pid in (int(dead.stdout), os.getpid()):
        with pytest.warns(UserWarning, match="Heartbeat"):
            trial = study.ask()
        trial.suggest_float("x", 0, 1)
        trial.set_user_attr("driver", {"host": socket.gethostname(), "pid": pid})
    failed = recover_stale_trials(study)
    assert failed == [0]  # the dead driver's trial; this live process's trial is kept
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states[:2] == [TrialState.FAIL, TrialState.RUNNING]
    assert states[2] == TrialState.WAITING  # re-enqueued
    assert recover_stale_trials(study) == []  # idempotent: no second retry
