"""The TensorBoard sink on its own (any backend can use it)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from raysync.config import ClientSpec, RoutingConfig, ServiceTimeSpec, SystemConfig
from raysync.monitoring import MetricsSink
from raysync.monitoring.tensorboard import TensorBoardSink, run_hparams, theory_scalars

pytestmark = pytest.mark.ray


def _read(path: Path):  # noqa: ANN202
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path))
    acc.Reload()
    return acc


def test_sink_writes_steps_time_axis_and_hparams(tmp_path: Path) -> None:
    with TensorBoardSink(tmp_path, run_name="a run/1") as sink:
        assert isinstance(sink, MetricsSink)
        sink.log_scalars(0, {"test/accuracy": 0.1, "test/loss": math.nan}, time=0.0)
        sink.log_scalars(50, {"test/accuracy": 0.8, "system/throughput": 12.5}, time=1.2345)
        sink.log_hparams({"concurrency": 4, "p": (0.5, 0.5)}, {"hparam/acc": 0.8})
        directory = sink.log_dir
    assert directory.parent == tmp_path
    assert directory.name == "a_run_1"
    acc = _read(directory)
    assert [(e.step, e.value) for e in acc.Scalars("test/accuracy")] == [
        (0, pytest.approx(0.1)),
        (50, pytest.approx(0.8)),
    ]
    assert [e.step for e in acc.Scalars("test/accuracy_vs_time")] == [0, 1234]
    assert "test/loss" not in acc.Tags()["scalars"]  # NaN skipped
    times = acc.Scalars("test/accuracy")
    assert times[1].wall_time - times[0].wall_time == pytest.approx(1.2345, abs=1e-3)
    assert acc.PluginTagToContent("hparams")
    assert acc.Scalars("hparam/acc")[0].value == pytest.approx(0.8)


def test_two_runs_never_share_a_directory(tmp_path: Path) -> None:
    first = TensorBoardSink(tmp_path, run_name="same")
    second = TensorBoardSink(tmp_path, run_name="same")
    assert first.log_dir != second.log_dir
    first.close()
    second.close()
    first.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        first.log_scalars(0, {"x": 1.0}, time=0.0)


def test_hparams_and_theory_of_a_config() -> None:
    config = SystemConfig(
        clients=tuple(
            ClientSpec(service_time=ServiceTimeSpec(rate=r)) for r in (1.0, 2.0, 4.0, 0.5)
        ),
        concurrency=6,
        routing=RoutingConfig(kind="fixed", p=(0.4, 0.3, 0.2, 0.1)),
    )
    hp = run_hparams(config)
    assert hp["concurrency"] == 6
    assert hp["p_min"] == pytest.approx(0.1)
    assert hp["p_max"] == pytest.approx(0.4)
    assert 0 < hp["p_entropy_ratio"] < 1
    theory = theory_scalars(config, time_unit=2.0)
    assert theory["theory/throughput"] == pytest.approx(2.45056 / 2, rel=1e-5)
    assert theory["theory/staleness_mean"] == pytest.approx(5.0)
    assert theory["theory/staleness_client_0"] == pytest.approx(8.698, rel=1e-3)
    assert theory_scalars(config, time_unit=0.0) == {}


def test_a_resumed_run_drops_what_the_interrupted_session_logged_after_its_checkpoint(
    tmp_path: Path,
) -> None:
    # Session 1 logs versions 0..669 (time = version / 100 s) and is interrupted; its
    # checkpoint is at version 600, 6.0 s. Session 2 resumes there and logs 600..700.
    with TensorBoardSink(tmp_path, run_name="r") as first:
        for v in (0, 300, 600, 612, 669):
            first.log_scalars(v, {"test/accuracy": v / 1000, "system/throughput": 1.0},
                              time=v / 100)
        directory = first.log_dir
    other = directory / "keep.txt"
    other.write_text("not an event file")
    with TensorBoardSink(tmp_path, run_name="r", append=True, resume_at=(600, 6.0)) as second:
        assert second.log_dir == directory
        for v in (600, 650, 700):
            second.log_scalars(v, {"test/accuracy": v / 1000 + 0.5}, time=v / 100)
    acc = _read(directory)
    # Each step once, in order: the resumed session's from 600 on, none of session 1's.
    assert [(e.step, e.value) for e in acc.Scalars("test/accuracy")] == [
        (0, pytest.approx(0.0)), (300, pytest.approx(0.3)), (600, pytest.approx(1.1)),
        (650, pytest.approx(1.15)), (700, pytest.approx(1.2))]
    assert [e.step for e in acc.Scalars("test/accuracy_vs_time")] == [0, 3000, 6000, 6500, 7000]
    assert [e.step for e in acc.Scalars("system/throughput")] == [0, 300]
    assert other.read_text() == "not an event file"
    assert len([p for p in directory.iterdir() if "tfevents" in p.name]) == 2
    assert not [p for p in directory.iterdir() if p.name.startswith(".")]


def test_a_run_resumed_twice_reads_in_order(tmp_path: Path) -> None:
    # Session 1 logs 0..300 (checkpoint at 200), session 2 200..500 (checkpoint at 400),
    # session 3 400..600: the merged file of the first resume is read first at the second.
    sessions = [(None, (0, 100, 200, 300)), ((200, 2.0), (200, 300, 400, 500)),
                ((400, 4.0), (400, 500, 600))]
    for resume_at, steps in sessions:
        with TensorBoardSink(tmp_path, run_name="r", append=resume_at is not None,
                             resume_at=resume_at) as sink:
            for v in steps:
                sink.log_scalars(v, {"test/accuracy": v / 1000}, time=v / 100)
            directory = sink.log_dir
            # each session ends (as a finished run extended by the next) with its hparams
            sink.log_hparams({"lr": 0.1}, {"hparam/final_test_accuracy": steps[-1] / 1000})
    acc = _read(directory)
    assert [e.step for e in acc.Scalars("test/accuracy")] == [0, 100, 200, 300, 400, 500, 600]
    # the last session's final metric only (each resume dropped the one before)
    assert [e.value for e in acc.Scalars("hparam/final_test_accuracy")] == [pytest.approx(0.6)]
    assert [e.step for e in acc.Scalars("test/accuracy_vs_time")] == [
        0, 1000, 2000, 3000, 4000, 5000, 6000]


def test_event_files_are_merged_in_creation_order_and_before_the_next_writers(
    tmp_path: Path,
) -> None:
    # Two sessions' files of one second and process, the writer counter passing 9 -> 10:
    # as text "...1.10" sorts before "...1.9", and TensorBoard reads files in name order.
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.record_writer import RecordWriter

    from raysync.monitoring.tensorboard import RESUMED_EVENTS, drop_events_after

    def write(name: str, steps: list[int]) -> None:
        with open(tmp_path / name, "wb") as handle:
            writer = RecordWriter(handle)
            writer.write(Event(wall_time=1.0, file_version="brain.Event:2").SerializeToString())
            for step in steps:
                value = Summary.Value(tag="test/accuracy", simple_value=step / 1000)
                writer.write(Event(wall_time=1.0, step=step,
                                   summary=Summary(value=[value])).SerializeToString())

    write("events.out.tfevents.1700000000.host.1.9", [0, 300, 600])
    write("events.out.tfevents.1700000000.host.1.10", [650, 700])
    assert drop_events_after(tmp_path, 10**6, 10**9) == 0  # nothing to drop: untouched
    assert _read(tmp_path).Scalars("test/accuracy")[0].step == 650  # TensorBoard's order
    assert drop_events_after(tmp_path, 700, 10**9, consolidate=True) == 1
    assert [p.name for p in tmp_path.iterdir()] == [RESUMED_EVENTS]
    assert [e.step for e in _read(tmp_path).Scalars("test/accuracy")] == [0, 300, 600, 650]
    # A writer's next file (any real stamp) is read after the merged one.
    write("events.out.tfevents.0000000001.host.1.0", [800])
    assert [e.step for e in _read(tmp_path).Scalars("test/accuracy")][-2:] == [650, 800]
    # Merged alone, a resume that drops nothing leaves it be.
    (tmp_path / "events.out.tfevents.0000000001.host.1.0").unlink()
    stat = (tmp_path / RESUMED_EVENTS).stat()
    assert drop_events_after(tmp_path, 10**6, 10**9, consolidate=True) == 0
    assert (tmp_path / RESUMED_EVENTS).stat().st_mtime_ns == stat.st_mtime_ns


def test_dropping_nothing_leaves_the_files_untouched(tmp_path: Path) -> None:
    from raysync.monitoring.tensorboard import drop_events_after

    with TensorBoardSink(tmp_path, run_name="r") as sink:
        sink.log_scalars(5, {"test/accuracy": 0.5}, time=0.5)
        directory = sink.log_dir
    (before,) = [p for p in directory.iterdir()]
    stat = before.stat()
    assert drop_events_after(directory, 6, 600) == 0
    assert before.stat().st_mtime_ns == stat.st_mtime_ns
    assert drop_events_after(directory, 5, 10_000) == 1


def test_live_measurements_are_logged_once_per_version_and_never_at_the_summarys_step() -> None:
    from raysync.runtime.coordinator import LiveEvents
    from raysync.testing.recording import RecordingSink

    sink = RecordingSink()
    live = LiveEvents([sink])
    live.offer((3, {"system/throughput": 1.0}, 0.5))
    live.offer((3, {"system/throughput": 1.5}, 1.0))  # the same version polled again
    assert sink.scalars == []
    live.offer((5, {"system/throughput": 2.0}, 1.5))
    assert sink.scalars == [(3, "system/throughput", 1.5, 1.0)]  # the later one of version 3
    live.flush(unless_step=5)  # the run's summary takes step 5
    assert sink.scalars == [(3, "system/throughput", 1.5, 1.0)]
    live.offer((6, {"system/throughput": 2.5}, 2.0))
    live.flush(unless_step=7)
    assert sink.scalars[-1] == (6, "system/throughput", 2.5, 2.0)


@pytest.mark.ray
def test_a_run_ended_by_its_budget_logs_each_step_of_a_tag_once(
    ray_session,  # noqa: ANN001
) -> None:
    # Updates every ~0.1 s and polls every 0.02 s: most versions are polled several
    # times, and the last one (the budget ends between updates) before the summary.
    from raysync.config import RunConfig
    from raysync.runtime import run
    from raysync.testing.recording import RecordingSink

    from ._helpers import queue_config

    base = queue_config((0.2, 0.2), None, 2, 1000)
    config = base.replace(run=RunConfig(time_budget=1.5, time_scale=1.0, train=False))
    sink = RecordingSink()
    result = run(config, sinks=[sink], poll_interval=0.02)
    by_tag: dict[str, list[int]] = {}
    for step, tag, _, _ in sink.scalars:
        by_tag.setdefault(tag, []).append(step)
    assert by_tag["system/throughput"][-1] == result.num_updates
    assert len(by_tag["system/throughput"]) >= 3
    for tag, steps in by_tag.items():
        assert steps == sorted(set(steps)), tag
