"""Recorders: the simulator follows the documented strategy/router call order; sinks' contract."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from raysync.config import load_config
from raysync.monitoring import MetricsSink
from raysync.routing import make_router
from raysync.simulation import simulate
from raysync.strategies import make_strategy
from raysync.testing.contracts import MetricsSinkContract
from raysync.testing.recording import (
    Call,
    CallLog,
    RecordingRouter,
    RecordingSink,
    RecordingStrategy,
    check_call_order,
    protocol_view,
)

TINY = """
seed = 3
concurrency = 5
[routing]
kind = "fixed"
p = [0.4, 0.3, 0.2, 0.1]
[algorithm]
name = "{algorithm}"
lr = 0.05
batch_size = 16
buffer_size = 3
[data]
dataset = "digits"
max_train_samples = 400
[model]
name = "logreg"
[run]
num_updates = 40
eval_every_updates = 20
[[clients]]
service_time = {{ kind = "exponential", rate = 1.0 }}
[[clients]]
service_time = {{ kind = "exponential", rate = 2.0 }}
[[clients]]
service_time = {{ kind = "exponential", rate = 4.0 }}
[[clients]]
service_time = {{ kind = "exponential", rate = 0.5 }}
"""


def _config(tmp_path: Path, algorithm: str = "generalized_asyncsgd"):
    path = tmp_path / f"{algorithm}.toml"
    path.write_text(TINY.format(algorithm=algorithm))
    return load_config(path)


def _recorded_simulation(config, log: CallLog, **kwargs):
    strategy = RecordingStrategy(make_strategy(config.algorithm), log)
    router = RecordingRouter(make_router(config.routing), log)
    return simulate(config, strategy=strategy, router=router, **kwargs)


@pytest.mark.parametrize("algorithm", ["generalized_asyncsgd", "fedbuff"])
def test_the_simulator_follows_the_documented_call_order(tmp_path, algorithm) -> None:
    config = _config(tmp_path, algorithm)
    log = CallLog()
    result = _recorded_simulation(config, log)
    calls = log.calls()
    check_call_order(calls, concurrency=config.concurrency)
    applies = [c for c in calls if c.method == "apply"]
    assert sum(1 for c in applies if c.result) == result.num_updates == 40
    if algorithm == "fedbuff":  # B = 3 results per model version
        assert len(applies) >= 3 * 40 - 2 and sum(1 for c in applies if not c.result) > 0
    binds = [c for c in calls if c.method == "bind"]
    assert binds[0].args[0] == binds[1].args[0] == 4
    assert binds[1].args[1] == pytest.approx([0.4, 0.3, 0.2, 0.1])


def test_same_seed_same_protocol_and_a_file_log_reads_back(tmp_path) -> None:
    config = _config(tmp_path)
    memory = CallLog()
    _recorded_simulation(config, memory)
    on_disk = CallLog(tmp_path / "calls.jsonl")
    _recorded_simulation(config, pickle.loads(pickle.dumps(on_disk)))  # crosses a pickle
    assert protocol_view(on_disk.calls()) == protocol_view(memory.calls())
    other = CallLog()
    _recorded_simulation(config.replace(seed=4), other)
    assert protocol_view(other.calls())["routes"] != protocol_view(memory.calls())["routes"]


def test_queue_only_runs_route_without_a_strategy(tmp_path) -> None:
    config = _config(tmp_path)
    log = CallLog()
    router = RecordingRouter(make_router(config.routing), log)
    simulate(config, router=router, queue_only=True)
    calls = log.calls()
    check_call_order(calls, concurrency=config.concurrency)
    assert {c.method for c in calls} == {"bind", "initial_clients", "route"}


def _valid() -> list[Call]:
    return [
        Call("router", "bind", (2, "ab")),
        Call("strategy", "bind", (2, [0.5, 0.5])),
        Call("router", "initial_clients", (2,), [0, 1]),
        Call("strategy", "apply", (7, 1, 0, 0), True),
        Call("router", "route", (1,), 0),
        Call("strategy", "apply", (7, 0, 0, 1), True),
        Call("router", "route", (0,), 0),
    ]


@pytest.mark.parametrize(
    ("index", "call", "message"),
    [
        (0, Call("strategy", "bind", (2, None)), "first call must be router.bind"),
        (1, Call("strategy", "bind", (3, None)), "same number of clients"),
        (2, Call("router", "initial_clients", (3,), [0, 1, 1]), "C=2"),
        (4, Call("router", "route", (0,), 0), r"router.route\(1\) must follow"),
        (5, Call("strategy", "apply", (7, 0, 0, 0), True), "current_version=1"),
        (5, Call("router", "route", (0,), 0), "must start with strategy.apply"),
    ],
)
def test_the_checker_rejects_each_kind_of_misorder(index, call, message) -> None:
    check_call_order(_valid(), concurrency=2)
    calls = _valid()
    calls[index] = call
    with pytest.raises(AssertionError, match=message):
        check_call_order(calls, concurrency=2)


def test_an_in_memory_log_refuses_to_cross_processes() -> None:
    with pytest.raises(TypeError, match="give it a path"):
        pickle.dumps(CallLog())


class TestRecordingSink(MetricsSinkContract):
    def make_sink(self, directory: Path) -> MetricsSink:
        return RecordingSink()

    def read_scalars(self, sink, directory):
        assert isinstance(sink, RecordingSink) and sink.closed
        tags = sorted({tag for _, tag, _, _ in sink.scalars})
        return {tag: sink.series(tag) for tag in tags}


class TestTensorBoardSink(MetricsSinkContract):
    def make_sink(self, directory: Path) -> MetricsSink:
        from raysync.monitoring import TensorBoardSink

        return TensorBoardSink(directory, run_name="contract")

    def read_scalars(self, sink, directory):
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(directory / "contract"))
        acc.Reload()
        return {
            tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]
        }
