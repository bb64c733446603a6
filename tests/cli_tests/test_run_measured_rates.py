"""``raysync run`` without emulation: measured rates mu_i next to the prediction."""

from __future__ import annotations

import dataclasses
import pickle
import signal

import pytest

from raysync._cli.run import _report, measured_rates
from raysync.config import (
    AlgorithmConfig,
    ClientSpec,
    DataConfig,
    RoutingConfig,
    RunConfig,
    ServiceTimeSpec,
    SystemConfig,
)
from raysync.exceptions import RunInterrupted
from raysync.queueing import predict
from raysync.simulation import simulate


def _config(time_scale: float) -> SystemConfig:
    return SystemConfig(
        clients=tuple(
            ClientSpec(service_time=ServiceTimeSpec(kind="exponential", rate=r)) for r in (1.0, 2.0)
        ),
        concurrency=2,
        routing=RoutingConfig(kind="fixed", p=(0.5, 0.5)),
        run=RunConfig(num_updates=20, time_scale=time_scale, eval_every_updates=20),
        data=DataConfig(max_train_samples=200),
    )


def test_measured_rates_drive_the_prediction_without_emulation() -> None:
    config = _config(0.0)
    result = simulate(config)
    # as the Ray runtime reports them: wall seconds per task, here 0.05 and 0.2 s
    result = dataclasses.replace(result, extras={**result.extras, "service_time_mean": [0.05, 0.2]})
    rates = measured_rates(result, config)
    assert rates == pytest.approx([20.0, 5.0])
    text = _report(result, config, predict(config))
    header = next(line for line in text.splitlines() if line.split()[:2] == ["client", "completed"])
    assert header.split()[2] == "mu"
    rows = [line.split() for line in text.splitlines() if line.split()[:1] in (["0"], ["1"])]
    assert [float(r[2]) for r in rows] == pytest.approx([20.0, 5.0])
    measured = config.replace(
        clients=tuple(
            dataclasses.replace(c, service_time=ServiceTimeSpec(kind="exponential", rate=mu))
            for c, mu in zip(config.clients, rates, strict=True)
        )
    )
    expected = predict(measured).throughput
    assert f"theory with measured mu {expected:.4g}" in text
    assert "mu: measured service rates" in text


def test_return_to_sender_gets_the_theory_simulate_prints() -> None:
    # `run` printed no theory column for return to sender while `simulate` did (issue: a
    # newcomer trial of REC.toml); the closed form is the independent cycles'.
    from raysync._cli.run import _theory
    from raysync.simulation.report import theory_prediction

    config = _config(1.0).replace(routing=RoutingConfig(kind="return_to_sender"),
                                  algorithm=AlgorithmConfig(name="asyncsgd"))
    theory = _theory(config)
    assert theory is not None
    assert theory.mean_version_delay.tolist() == pytest.approx(
        theory_prediction(config)["mean_relative_delay"])
    text = _report(simulate(config), config, theory)
    assert "theory: independent cycles (return to sender; exact for any service law)" in text
    assert f"theory {theory.mean_version_staleness:.4g}" in text


def test_no_measured_rates_with_emulation_or_missing_clients() -> None:
    config = _config(1.0)
    result = simulate(config)
    result = dataclasses.replace(result, extras={**result.extras, "service_time_mean": [0.1, 0.1]})
    assert measured_rates(result, config) is None  # emulated: the config's rates hold
    no_task = dataclasses.replace(result, extras={**result.extras, "service_time_mean": [0.1, 0]})
    assert measured_rates(no_task, _config(0.0)) is None
    assert "mu:" not in _report(result, config, predict(config))


def test_nothing_measured_reads_n_a_not_nan() -> None:
    # `run --num-updates 1`: no completion is left after the warm-up, so the estimates are
    # NaN; the report said "throughput nan updates/s" and "mean staleness nan".
    import numpy as np

    config = _config(1.0)
    result = simulate(config)
    nan = np.full(result.num_clients, np.nan)
    result = dataclasses.replace(
        result, throughput=float("nan"), mean_staleness=float("nan"),
        mean_relative_delay=nan, mean_queue_length=nan, utilization=nan,
        relative_delay_ci=[(float("nan"), float("nan"))] * result.num_clients,
    )
    text = _report(result, config, predict(config))
    assert "nan" not in text.lower().replace("n/a", "")
    assert "throughput n/a updates/s" in text and "mean staleness n/a model versions" in text
    rows = [line.split() for line in text.splitlines() if line.split()[:1] == ["0"]]
    assert rows[0][2:4] == ["n/a", "-"]  # delay, its interval


def test_a_resumed_run_says_what_its_times_cover() -> None:
    config = _config(1.0)
    result = simulate(config)
    first = _report(result, config, predict(config)).splitlines()[0]
    assert first.endswith(f" in {result.elapsed:.3g} s ({result.wall_time:.3g} s with start-up)")
    resumed = dataclasses.replace(
        result, elapsed=37.6, wall_time=36.7,
        extras={**result.extras, "resumed_from_version": 6, "resumed_from_elapsed": 10.0},
    )
    first = _report(resumed, config, predict(config)).splitlines()[0]
    assert first.endswith(" in 37.6 s of run time, 27.6 s of it since the checkpoint (this "
                          "session 36.7 s with start-up)")


def test_an_interrupted_run_names_its_checkpoint(tmp_path, monkeypatch, capsys) -> None:  # noqa: ANN001
    import json
    import os
    import time

    import raysync.runtime
    from raysync._cli.run import resume_hint
    from raysync.cli import main
    from raysync.runtime.checkpoint import MANIFEST

    go_on = "raysync run c.toml --resume ck"  # what continue_command gives (tested below)
    config = _config(1.0)
    assert "run.checkpoint_dir is not set" in resume_hint(config, go_on)
    ckpt = tmp_path / "ck"
    kept = config.replace(run=dataclasses.replace(
        config.run, num_updates=1000, checkpoint_dir=str(ckpt), checkpoint_every_updates=10))
    assert f"no checkpoint was written to {str(ckpt)!r} yet (the first comes after run." in (
        resume_hint(kept, go_on))
    # run.checkpoint_dir alone: the run's checkpoints come at its end and on Ctrl-C
    alone = kept.replace(run=dataclasses.replace(kept.run, checkpoint_every_updates=None))
    assert "(the first comes after the end of the run or Ctrl-C; set run.checkpoint_every" in (
        resume_hint(alone, go_on))
    ckpt.mkdir()
    (ckpt / MANIFEST).write_text(json.dumps({"body": {"version": 600}}))
    assert resume_hint(kept, go_on) == (
        f"the last checkpoint (version 600) is in {str(ckpt)!r}; any updates applied after it "
        f"are lost; continue with '{go_on}'")
    # The runtime wrote one at the Ctrl-C: nothing is lost.
    at_ctrl_c = RunInterrupted(str(ckpt), 613)
    assert resume_hint(kept, go_on, at_ctrl_c) == (
        f"a checkpoint of the interrupted run (version 613, every update applied) is in "
        f"{str(ckpt)!r}; continue with '{go_on}'")
    # ... or could not (a second Ctrl-C): the last one on disk is named.
    assert resume_hint(kept, go_on, RunInterrupted(str(ckpt), None)).startswith(
        "the last checkpoint (version 600)")
    # Every update was applied: a resume would have nothing to run.
    assert resume_hint(kept, go_on, RunInterrupted(str(ckpt), 1000)) == (
        f"the run had applied all 1000 updates when it was interrupted; its checkpoint "
        f"(version 1000) is in {str(ckpt)!r}; raise --num-updates (run.num_updates) and "
        "resume to continue it")
    # A checkpoint older than the run is not this run's.
    old = time.time() - 60
    os.utime(ckpt / MANIFEST, (old, old))
    now = time.time()
    assert resume_hint(kept, go_on, RunInterrupted(str(ckpt), None), now) == (
        f"this run wrote no checkpoint before it was interrupted; the last checkpoint "
        f"(version 600) in {str(ckpt)!r} is an earlier run's")
    assert resume_hint(kept, go_on, RunInterrupted(str(ckpt), None), now, resuming=True) == (
        f"nothing was applied since the checkpoint this run resumed from (the last checkpoint "
        f"(version 600) in {str(ckpt)!r}); continue with '{go_on}'")
    # Through the CLI: the hint, then "interrupted", exit code 130.
    path = tmp_path / "c.toml"
    path.write_text(f"""concurrency = 2
[run]
num_updates = 2000
checkpoint_dir = "{ckpt}"
checkpoint_every_updates = 10
[[clients]]
count = 2
""")

    def interrupted(*args: object, **kwargs: object) -> None:
        (ckpt / MANIFEST).touch()  # a periodic checkpoint of this run
        raise KeyboardInterrupt

    monkeypatch.setattr(raysync.runtime, "run", interrupted)
    assert main(["run", str(path), "--no-progress", "--overwrite-checkpoint"]) == 130
    err = capsys.readouterr().err.splitlines()
    assert err[-2].startswith("raysync run: the last checkpoint (version 600) is in ")
    assert err[-1] == "raysync run: interrupted"

    def checkpointed(*args: object, **kwargs: object) -> None:
        raise RunInterrupted(str(ckpt), 613)

    monkeypatch.setattr(raysync.runtime, "run", checkpointed)
    # The command repeats the flags that shape the run: without them the resumed run
    # would stop elsewhere and log nowhere.
    logdir = tmp_path / "tb dir"
    assert main(["run", str(path), "--no-progress", "--overwrite-checkpoint", "--num-updates",
                 "1500", "--time-budget", "2.5", "--logdir", str(logdir)]) == 130
    err = capsys.readouterr().err.splitlines()
    assert err[-2] == (
        f"raysync run: a checkpoint of the interrupted run (version 613, every update applied) "
        f"is in {str(ckpt)!r}; continue with 'raysync run {path} --logdir '{logdir}' "
        f"--num-updates 1500 --time-budget 2.5 --resume {ckpt}'")
    assert err[-1] == "raysync run: interrupted"

    def terminated(*args: object, **kwargs: object) -> None:
        raise RunInterrupted(str(ckpt), 614, signum=signal.SIGTERM)

    # SIGTERM (kill, `ray job stop`, a scheduler): the same hint, then the shell's code for
    # a process ended by SIGTERM, 128 + 15.
    monkeypatch.setattr(raysync.runtime, "run", terminated)
    assert main(["run", str(path), "--no-progress", "--overwrite-checkpoint"]) == 143
    err = capsys.readouterr().err.splitlines()
    assert err[-2].startswith("raysync run: a checkpoint of the interrupted run (version 614,")
    assert err[-1] == "raysync run: terminated (SIGTERM)"


def test_run_interrupted_pickles_with_its_fields() -> None:
    # it crosses processes like every raysync exception (e.g. a Ray task running a run)
    sent = RunInterrupted("ck", 12, version=12, signum=signal.SIGTERM)
    got = pickle.loads(pickle.dumps(sent))
    assert isinstance(got, KeyboardInterrupt)
    assert (got.checkpoint_dir, got.checkpoint_version, got.version, got.signum) == (
        "ck", 12, 12, signal.SIGTERM)
    assert (got.signal_name, got.exit_code) == ("SIGTERM", 143)
    # without a checkpoint the loop's version is its own field
    bare = RunInterrupted(None, None, version=40)
    assert (bare.checkpoint_version, bare.version, bare.signal_name, bare.exit_code) == (
        None, 40, "SIGINT", 130)


@pytest.mark.parametrize(
    ("counters", "emulation", "given_up"),
    [
        ({}, None, None),
        # below 1 % of the 20 tasks: not worth a line
        ({"compute_bound_tasks": 0, "compute_bound_past_budget": 0}, None, None),
        ({"compute_bound_tasks": 5}, "emulation: 5 of 20 tasks (25 %) computed longer", None),
        # tasks computation pushed past the budget count towards the line too
        (
            {"compute_bound_past_budget": 1},
            "(1 more ended past run.time_budget for it and were not applied)",
            None,
        ),
        ({"late_replies_given_up": 3}, None, "WARNING: 3 tasks that ended by run.time_budget"),
    ],
)
def test_run_names_emulated_tasks_the_config_s_timeline_did_not_keep(
    counters: dict[str, int], emulation: str | None, given_up: str | None
) -> None:
    config = _config(1.0)
    result = simulate(config)
    result = dataclasses.replace(result, extras={**result.extras, **counters})
    lines = _report(result, config, None).splitlines()
    found = [line for line in lines if line.startswith("emulation:")]
    assert found == [] if emulation is None else emulation in found[0]
    warned = [line for line in lines if "not applied (nor the tasks" in line]
    assert warned == [] if given_up is None else warned[0].startswith(given_up)
