"""Kill a study at a chosen point, resume it, and check the retry rule of tuning.recovery.

The driver is killed with SIGKILL by a patch at an exact point of an exact trial (no timing
involved), so each case takes one branch of the rule every time:

* killed while evaluating (all parameters recorded): retried with exactly its parameters;
* killed mid-suggestion (only ``concurrency`` recorded): failed, a fresh trial replaces it;
* killed before its driver stamp (nothing recorded): failed, replaced;
* killed mid-append while holding the journal lock: the torn record is cut, the lock of the
  dead driver removed, the trial replaced;
* a warm start killed mid-suggestion: retried with the parameters it was enqueued with.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from tuning.recovery import (
    DRIVER_ATTR,
    ENQUEUED_ATTR,
    PARAMS_ATTR,
    RETRY_ATTR,
    STALE_ATTR,
    count_finished,
    recover_stale_trials,
)
from tuning.study import TuneSettings, make_storage, run_study

from .conftest import CONSTANTS

optuna.logging.set_verbosity(optuna.logging.WARNING)

C_TEXT = f"{CONSTANTS.L},{CONSTANTS.sigma2},{CONSTANTS.M2},{CONSTANTS.A}"

# Runs `raysync tune` with a patch that SIGKILLs the process at POINT of trial K.
KILLER = r"""
import os, signal, sys
K, POINT = int(sys.argv[1]), sys.argv[2]
argv = sys.argv[3:]
from optuna.trial import Trial
import tuning.executors as executors

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if POINT == "mid_suggest":
    original = Trial.suggest_float
    def suggest_float(self, name, *args, **kwargs):
        if self.number == K:
            die()  # `concurrency` (suggest_int, first) is recorded, the u_i are not
        return original(self, name, *args, **kwargs)
    Trial.suggest_float = suggest_float
elif POINT in ("before_stamp", "mid_append"):
    original_attr = Trial.set_user_attr
    def set_user_attr(self, key, value):
        if key == "driver" and self.number == K:
            if POINT == "mid_append":
                from tuning.journal import JournalLock
                journal = argv[argv.index("--out") + 1] + "/study.journal"
                JournalLock(journal).acquire()
                with open(journal, "ab") as f:
                    f.write(b'{"op_code": 6, "trial_id": 9')  # torn: no newline
                    f.flush()
            die()
        return original_attr(self, key, value)
    Trial.set_user_attr = set_user_attr
elif POINT == "evaluating":
    original_run = executors.run_trial
    def run_trial(spec, *args, **kwargs):
        if spec.number == K:
            die()
        return original_run(spec, *args, **kwargs)
    executors.run_trial = run_trial
else:
    raise SystemExit(f"unknown point {POINT}")

from raysync.cli import main
sys.exit(main(argv))
"""

# (point, killed trial, warm start?, retried with full parameters?)
CASES = [
    ("evaluating", 3, False, True),
    ("mid_suggest", 3, False, False),
    ("before_stamp", 3, False, False),
    ("mid_append", 3, False, False),
    ("warm_mid_suggest", 1, True, True),
]


def _tune_args(tiny_path, out, *, warm: bool) -> list[str]:
    args = [
        "tune", str(tiny_path), "--objective", "simulated", "--trials", "40", "--budget", "20",
        "--num-evals", "2", "--pruner", "none", "--constants", C_TEXT, "--out", str(out),
        "--study", "killme", "--no-tensorboard", "--no-plots", "--no-progress",
    ]  # fmt: skip
    return args if warm else [*args, "--no-warm-start"]


@pytest.mark.parametrize(("point", "killed", "warm", "retried"), CASES)
def test_kill_and_resume_keeps_completed_trials(
    tiny_path, tiny_config, tmp_path, point, killed, warm, retried
) -> None:
    out = tmp_path / "out"
    where = "mid_suggest" if point == "warm_mid_suggest" else point
    cmd = [sys.executable, "-c", KILLER, str(killed), where, *_tune_args(tiny_path, out, warm=warm)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    journal = out / "study.journal"
    if point == "mid_append":
        assert not journal.read_bytes().endswith(b"\n")  # torn
        assert os.path.islink(str(journal) + ".lock")  # held by a dead driver

    storage = make_storage(str(journal), out)  # repairs a torn journal
    before = optuna.load_study(study_name="killme", storage=storage).get_trials(deepcopy=True)
    completed = {t.number: t.value for t in before if t.state == TrialState.COMPLETE}
    assert sorted(completed) == list(range(killed))  # every trial before K finished
    assert [t.number for t in before if t.state == TrialState.RUNNING] == [killed]
    victim = before[killed]
    if point == "evaluating":
        assert victim.user_attrs[PARAMS_ATTR] is True
    elif point in ("mid_suggest", "warm_mid_suggest"):
        assert set(victim.params) == {"concurrency"} and PARAMS_ATTR not in victim.user_attrs
    else:
        assert victim.params == {} and DRIVER_ATTR not in victim.user_attrs
    expected_params = victim.user_attrs.get(ENQUEUED_ATTR) if warm else dict(victim.params)

    events: list[str] = []
    target = len(completed) + 3
    report = run_study(
        tiny_config,
        TuneSettings(
            objective="simulated", trials=target, budget=20.0, num_evals=2, pruner="none",
            constants=CONSTANTS, storage=str(journal), study_name="killme", out=out,
            tensorboard=False, warm_start=warm,
        ),  # fmt: skip
        on_event=events.append,
    )
    study = optuna.load_study(study_name="killme", storage=make_storage(str(journal), out))
    after = {t.number: t for t in study.get_trials(deepcopy=False)}
    for number, value in completed.items():  # nothing completed was lost or changed
        assert after[number].state == TrialState.COMPLETE
        assert after[number].value == value
    assert after[killed].state == TrialState.FAIL
    assert after[killed].user_attrs[STALE_ATTR] is True
    retries = [t for t in after.values() if t.user_attrs.get(RETRY_ATTR) == killed]
    resume_line = next(e for e in events if e.startswith("resuming"))
    if retried:
        assert len(retries) == 1
        assert retries[0].number == len(before)  # enqueued at once by the resume
        assert retries[0].params == expected_params
        assert retries[0].state == TrialState.COMPLETE
        assert "re-enqueued with exactly the same parameters" in resume_line
        assert "fresh" not in resume_line
    else:
        assert retries == []
        assert "re-enqueued" not in resume_line
        assert f"#{killed} had only part of their parameters recorded" in resume_line
    assert not [t for t in after.values() if t.state == TrialState.RUNNING]
    # Counts match what was evaluated: the interrupted trial never counts.
    assert count_finished(study) == target
    assert len(after) == target + 1
    assert report.evaluated == target
    assert report.counts.get("INTERRUPTED") == 1
    assert report.counts["COMPLETE"] == target
    assert journal.read_bytes().endswith(b"\n")
    assert not os.path.lexists(str(journal) + ".lock")


def _dead_pid() -> int:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(dead.stdout)


def test_retry_rule_on_interrupted_trials_in_process(tmp_path) -> None:
    storage = make_storage(None, tmp_path)
    study = optuna.create_study(study_name="s", storage=storage)
    dead = {"host": socket.gethostname(), "pid": _dead_pid()}
    full = study.ask()  # all parameters recorded
    full.set_user_attr(DRIVER_ATTR, dead)
    full.suggest_float("x", 0, 1)
    full.suggest_int("c", 1, 4)
    full.set_user_attr(PARAMS_ATTR, True)
    partial = study.ask()  # killed mid-suggestion
    partial.set_user_attr(DRIVER_ATTR, dead)
    partial.suggest_float("x", 0, 1)
    study.enqueue_trial({"x": 0.25, "c": 2}, user_attrs={ENQUEUED_ATTR: {"x": 0.25, "c": 2}})
    fixed = study.ask()  # an enqueued trial killed before any parameter was recorded
    fixed.set_user_attr(DRIVER_ATTR, dead)
    live = study.ask()  # this process: alive, left alone
    live.set_user_attr(DRIVER_ATTR, {"host": socket.gethostname(), "pid": os.getpid()})
    unstamped = study.ask()  # killed between ask and the stamp

    result = recover_stale_trials(study, storage)
    assert result.failed == [full.number, partial.number, fixed.number, unstamped.number]
    assert result.requeued == [full.number, fixed.number]
    assert result.resampled == [partial.number, unstamped.number]
    assert "#0, #2 re-enqueued" in result.message()
    trials = study.get_trials(deepcopy=False)
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert [t.user_attrs[RETRY_ATTR] for t in waiting] == [full.number, fixed.number]
    assert waiting[0].system_attrs["fixed_params"] == trials[full.number].params
    assert waiting[1].system_attrs["fixed_params"] == {"x": 0.25, "c": 2}
    assert trials[live.number].state == TrialState.RUNNING
    assert count_finished(study) == 0  # interrupted trials never count
    again = recover_stale_trials(study, storage)  # idempotent: no second retry
    assert again.failed == [] and not again
    assert len(study.get_trials(deepcopy=False)) == len(trials)


def test_recover_stale_trials_on_sqlite_spares_live_drivers(tmp_path) -> None:
    storage = make_storage(f"sqlite:///{tmp_path / 'study.db'}", tmp_path, heartbeat_interval=60)
    study = optuna.create_study(study_name="s", storage=storage)
    for pid in (_dead_pid(), os.getpid()):
        with pytest.warns(UserWarning, match="Heartbeat"):
            trial = study.ask()
        trial.set_user_attr(DRIVER_ATTR, {"host": socket.gethostname(), "pid": pid})
        trial.suggest_float("x", 0, 1)
        trial.set_user_attr(PARAMS_ATTR, True)
    result = recover_stale_trials(study, storage)
    assert result.failed == [0] and result.requeued == [0]  # the dead driver's trial
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states[:2] == [TrialState.FAIL, TrialState.RUNNING]  # this live process's is kept
    assert states[2] == TrialState.WAITING  # re-enqueued
    assert not recover_stale_trials(study, storage)  # idempotent: no second retry
