"""The runtime's measurement of the real communication times (docs/network.md, "Real delays").

Per task the server stamps the remote call and the reply's arrival, the executor its
call's begin and return; the server keeps per-client running sums of the round trip minus
the executor span (clock-independent) and of its split (dispatch -> start, finish ->
arrival: needs synchronised clocks; one clock here, on one node). The emulated delays are
waited out outside that interval, so they are not counted. No test here depends on how
fast the machine is: the bounds are ">= 0, finite", identities that hold to rounding, and
"below the deterministic emulated delay" (which a measurement that counted the emulated
wait could not be).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from raysync.config import (
    ClientSpec,
    RoutingConfig,
    RunConfig,
    RuntimeConfig,
    ServiceTimeSpec,
    SystemConfig,
)
from raysync.runtime._backend import (
    COMM_TAGS,
    ServerBook,
    TaskReply,
    communication_scalars,
    describe_communication,
)
from raysync.runtime.checkpoint import read_checkpoint
from raysync.runtime.coordinator import _execute

from ._helpers import queue_config

#: Emulated one-way delay of every link in the Ray test (wall seconds: time_scale = 1).
_LINK = 0.25


def _reply(client: int) -> TaskReply:
    return TaskReply(0, client, 0, 0, None, math.nan, 0, 0.1, 0.05, 0.0, 0.0)


def test_the_book_keeps_per_client_means_with_nan_for_a_client_without_tasks() -> None:
    book = ServerBook(3, None)
    # client 0: two tasks; client 2: one; client 1: none
    book.communicated(0, sent=100.0, arrived=100.5, received=100.125, returned=100.25)
    book.communicated(0, sent=200.0, arrived=201.0, received=200.25, returned=200.5)
    book.communicated(2, sent=10.0, arrived=10.75, received=10.0, returned=10.5)
    comm = book.communication()
    assert comm["count"] == [2, 0, 1]
    # round trip - span: (0.5 - 0.125) and (1.0 - 0.25); (0.75 - 0.5)
    assert comm["overhead_mean"][0] == pytest.approx((0.375 + 0.75) / 2)
    assert comm["downlink_mean"][0] == pytest.approx((0.125 + 0.25) / 2)
    assert comm["uplink_mean"][0] == pytest.approx((0.25 + 0.5) / 2)
    assert comm["overhead_mean"][2] == pytest.approx(0.25)
    assert math.isnan(comm["overhead_mean"][1]) and math.isnan(comm["uplink_mean"][1])
    fleet = comm["fleet"]
    assert fleet["count"] == 3
    assert fleet["overhead_mean"] == pytest.approx((0.375 + 0.75 + 0.25) / 3)
    scalars = communication_scalars(comm)
    assert set(scalars) == set(COMM_TAGS.values())
    assert scalars["network/real_overhead_mean"] == pytest.approx(fleet["overhead_mean"])
    # the sums survive the book's state round trip
    other = ServerBook(3, None)
    other.load(book.state())
    again = other.communication()
    assert again["count"] == comm["count"] and again["fleet"] == comm["fleet"]
    for key in ("overhead_mean", "downlink_mean", "uplink_mean"):
        np.testing.assert_array_equal(again[key], comm[key])  # NaN where NaN
    # at any fleet size the report is two lines
    text = describe_communication({**comm, "one_clock": True})
    assert len(text.splitlines()) == 2 and "one clock" in text and "3 tasks" in text
    unsynced = describe_communication({**comm, "one_clock": False})
    assert "needs synchronised clocks" in unsynced


def test_a_book_state_without_the_sums_loads_as_zero() -> None:
    # checkpoints of schema < 3 have no communication sums
    book = ServerBook(2, None)
    book.completed(_reply(1), 0, 1.0)
    state = book.state()
    for key in ("comm_count", "comm_overhead", "comm_downlink", "comm_uplink"):
        del state[key]
    loaded = ServerBook(2, None)
    loaded.load(state)
    assert loaded.communication()["count"] == [0, 0]
    assert communication_scalars(loaded.communication()) == {}
    assert "no task measured" in describe_communication(loaded.communication())


def _det(mean: float) -> ServiceTimeSpec:
    return ServiceTimeSpec(kind="deterministic", mean=mean)


@pytest.mark.ray
def test_real_delays_are_measured_without_the_emulated_ones(ray_session, tmp_path: Path) -> None:  # noqa: ANN001
    link = {"downlink": _det(_LINK), "uplink": _det(_LINK), "num_cpus": 0.25}
    config = SystemConfig(
        clients=(
            ClientSpec(service_time=ServiceTimeSpec(kind="exponential", mean=0.02), **link),
            ClientSpec(service_time=ServiceTimeSpec(kind="exponential", mean=0.04), **link),
            ClientSpec(service_time=ServiceTimeSpec(kind="exponential", mean=0.02)),
        ),
        concurrency=6,
        routing=RoutingConfig(kind="fixed", p=(0.4, 0.4, 0.2)),
        run=RunConfig(num_updates=60, train=False, time_scale=1.0),
        seed=3,
    )
    result, _ = _execute(config, logdir=tmp_path)
    comm = result.extras["communication"]
    assert comm["one_clock"] is True  # a local run: the server and executors share a node
    counts = np.asarray(comm["count"])
    # no fault, no re-issue: every applied task was measured once
    assert counts.sum() == result.num_completions
    np.testing.assert_array_equal(counts, result.completed)
    measured = counts > 0
    for key in ("overhead_mean", "downlink_mean", "uplink_mean"):
        values = np.asarray(comm[key], dtype=float)
        assert np.all(np.isfinite(values[measured])), (key, values)
        assert np.all(values[measured] >= 0.0), (key, values)  # one clock: causal order
        assert np.all(np.isnan(values[~measured])), (key, values)
        # every link waits exactly _LINK seconds (deterministic): a measurement that
        # counted the emulated wait could not come out below it
        assert np.all(values[measured] < _LINK), (key, values)
    # round trip - span = downlink + uplink: each is a difference of two stamps of one
    # clock (exact in floating point for stamps this close), so they agree to rounding
    np.testing.assert_allclose(
        np.asarray(comm["overhead_mean"])[measured],
        (np.asarray(comm["downlink_mean"]) + np.asarray(comm["uplink_mean"]))[measured],
        rtol=1e-9,
        atol=1e-12,
    )
    fleet = comm["fleet"]
    assert fleet["count"] == result.num_completions
    assert fleet["overhead_mean"] == pytest.approx(
        fleet["downlink_mean"] + fleet["uplink_mean"], rel=1e-9
    )
    # TensorBoard: the fleet means under their tags, at the run's last step
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    for name, tag in COMM_TAGS.items():
        events = acc.Scalars(tag)
        assert events, tag
        last = events[-1]
        assert last.step == result.num_updates
        expected = fleet[name.removeprefix("comm_") + "_mean"]
        assert last.value == pytest.approx(expected, rel=1e-6), tag


@pytest.mark.ray
def test_a_resumed_run_continues_the_sums(ray_session, tmp_path: Path) -> None:  # noqa: ANN001
    ckpt = tmp_path / "ckpt"

    def config(updates: int) -> SystemConfig:
        base = queue_config((0.01, 0.02), None, 2, updates, time_scale=0.0)
        return base.replace(
            run=RunConfig(
                num_updates=updates,
                train=False,
                time_scale=0.0,
                checkpoint_every_updates=50,
                checkpoint_dir=str(ckpt),
            ),
            runtime=RuntimeConfig(mode="pool", executors_per_tier=2),
        )

    first, _ = _execute(config(100))
    state = read_checkpoint(ckpt).state["book"]
    saved = np.asarray(state["comm_count"])
    # the checkpoint at version 100 holds the sums of the 100 applied tasks
    assert saved.sum() == first.num_completions == 100
    np.testing.assert_array_equal(saved, first.extras["communication"]["count"])
    resumed, _ = _execute(config(160), resume_from=ckpt)
    counts = np.asarray(resumed.extras["communication"]["count"])
    # sums continue: the 60 tasks of the resumed run come on top of the 100 (the
    # re-issued pending tasks are measured once, when applied)
    assert counts.sum() == resumed.num_completions == 160
    assert np.all(counts >= saved)
    overhead = np.asarray(resumed.extras["communication"]["overhead_mean"])
    assert np.all(np.isfinite(overhead)) and np.all(overhead >= 0.0)
