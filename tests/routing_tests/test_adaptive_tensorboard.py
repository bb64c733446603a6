"""Every routing change of an adaptive run reaches TensorBoard: estimated vs configured mu_i,
p_i over time, predicted vs measured throughput (read back from the event files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from raysync.config import SystemConfig
from raysync.monitoring.tensorboard import TensorBoardSink
from raysync.routing import AdaptiveRouter
from raysync.simulation import simulate

pytest.importorskip("tensorboard")


def test_routing_changes_are_logged(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = SystemConfig.from_dict(
        {
            "clients": [
                {"service_time": {"rate": 1.0}},
                {"service_time": {"kind": "schedule",
                                  "segments": [{"until": 50.0, "rate": 8.0}, {"rate": 2.0}]}},
            ],
            "concurrency": 3,
            "run": {"num_updates": 1200, "train": False},
            "seed": 3,
        }
    )  # fmt: skip
    router = AdaptiveRouter(reoptimize_every=100, min_change=0.0)
    with TensorBoardSink(tmp_path, run_name="adaptive") as sink:
        simulate(config, router=router, sinks=[sink])
    acc = EventAccumulator(str(sink.log_dir))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in (
        "routing/p/client_1",
        "routing/mu_estimated/client_1",
        "routing/mu_configured/client_1",
        "routing/predicted_throughput",
        "routing/measured_throughput",
        "routing/measured_throughput_vs_time",
    ):
        assert tag in tags, tag
    p1 = acc.Scalars("routing/p/client_1")
    assert len(p1) == router.routing_version
    assert [e.value for e in p1] == pytest.approx([c.p[1] for c in router.changes], rel=1e-6)
    configured = [e.value for e in acc.Scalars("routing/mu_configured/client_1")]
    assert configured[0] == pytest.approx(8.0) and configured[-1] == pytest.approx(2.0)
