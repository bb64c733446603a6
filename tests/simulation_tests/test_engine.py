"""The discrete-event engine: semantics, determinism, stopping, evaluation, persistence."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from raysync.config import (
    AlgorithmConfig,
    ClientSpec,
    DataConfig,
    RoutingConfig,
    RunConfig,
    ServiceTimeSpec,
    SystemConfig,
)
from raysync.exceptions import ConfigError
from raysync.monitoring import MetricsSink
from raysync.routing import FixedRouter
from raysync.simulation import RunResult, run_generators, simulate
from raysync.workload import Workload, build_workload


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_config(
    rates: Sequence[float] = (1.0, 2.0, 4.0, 0.5),
    *,
    concurrency: int = 6,
    p: Sequence[float] | None = (0.4, 0.3, 0.2, 0.1),
    kind: str | None = None,
    algorithm: str = "generalized_asyncsgd",
    seed: int = 0,
    **run: Any,
) -> SystemConfig:
    if kind is None:
        kind = "fixed" if p is not None else "uniform"
    run.setdefault("train", False)
    return SystemConfig(
        clients=tuple(ClientSpec(service_time=ServiceTimeSpec(rate=r)) for r in rates),
        concurrency=concurrency,
        routing=RoutingConfig(kind=kind, p=tuple(p) if kind == "fixed" and p else None),
        algorithm=AlgorithmConfig(name=algorithm, lr=0.5, batch_size=16),
        data=DataConfig(dataset="digits"),
        run=RunConfig(**run),
        seed=seed,
    )


ARRAYS = (
    "completed",
    "mean_relative_delay",
    "relative_delay_ci",
    "mean_queue_length",
    "utilization",
    "client_throughput",
    "times",
    "updates",
)


def assert_same(a: RunResult, b: RunResult) -> None:
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.throughput == b.throughput and a.elapsed == b.elapsed
    assert a.throughput_ci == b.throughput_ci


# --------------------------------------------------------------------------- queue-only


def test_same_seed_same_result_different_seed_differs() -> None:
    cfg = make_config(num_updates=20_000)
    a, b = simulate(cfg), simulate(cfg)
    assert_same(a, b)
    c = simulate(cfg.replace(seed=1))
    assert not np.array_equal(a.completed, c.completed)
    assert a.elapsed != c.elapsed


def test_generators_are_independent_and_reproducible() -> None:
    g1, g2 = run_generators(3, 4), run_generators(3, 4)
    tasks = [(i, k) for i in range(4) for k in range(2)]
    draws = [g.random(3).tolist() for g in (*g1.service, g1.router)]
    draws += [g1.minibatch.task(i, k).random(3).tolist() for i, k in tasks]
    again = [g.random(3).tolist() for g in (*g2.service, g2.router)]
    again += [g2.minibatch.task(i, k).random(3).tolist() for i, k in tasks]
    assert draws == again
    assert len({tuple(d) for d in draws}) == len(draws)  # all streams distinct


def test_concurrency_one_has_zero_delay_exactly() -> None:
    res = simulate(make_config(concurrency=1, num_updates=5_000))
    assert res.max_relative_delay == 0
    assert np.all(res.mean_relative_delay == 0.0)
    assert res.mean_staleness == 0.0
    assert np.isclose(res.mean_queue_length.sum(), 1.0)
    np.testing.assert_allclose(res.mean_queue_length, res.utilization)


def test_single_client_delay_is_c_minus_one() -> None:
    res = simulate(make_config((2.0,), concurrency=5, p=(1.0,), num_updates=1_000))
    np.testing.assert_array_equal(res.mean_relative_delay, [4.0])
    assert res.relative_delay_std[0] == 0.0
    assert res.max_relative_delay == 4
    assert res.mean_queue_length[0] == pytest.approx(5.0)
    assert res.utilization[0] == pytest.approx(1.0)


def test_return_to_sender_keeps_one_task_per_client() -> None:
    cfg = make_config(
        (1.0, 3.0, 9.0), concurrency=3, p=None, kind="return_to_sender",
        algorithm="asyncsgd", num_updates=30_000,
    )  # fmt: skip
    res = simulate(cfg)
    np.testing.assert_allclose(res.mean_queue_length, 1.0)
    np.testing.assert_allclose(res.utilization, 1.0)


def test_stops_at_num_updates_or_time_budget() -> None:
    res = simulate(make_config(num_updates=1234))
    assert res.num_updates == res.num_completions == 1234
    assert int(res.completed.sum()) == 1234
    res = simulate(make_config(num_updates=None, time_budget=100.0))
    assert res.elapsed == 100.0
    assert 150 < res.num_updates < 350  # theory: 2.45 updates/s
    # both: whichever comes first
    res = simulate(make_config(num_updates=50, time_budget=1e6))
    assert res.num_updates == 50 and res.elapsed < 1e6
    res = simulate(make_config(num_updates=10**9, time_budget=10.0))
    assert res.elapsed == 10.0


def test_time_budget_run_collects_batches() -> None:
    res = simulate(make_config(num_updates=None, time_budget=20_000.0))
    assert res.num_batches == 30
    lo, hi = res.throughput_ci
    assert lo < res.throughput < hi
    assert res.window_updates > 0.8 * res.num_updates


def test_short_run_has_estimates_but_maybe_no_interval() -> None:
    res = simulate(make_config(num_updates=3))
    assert res.num_updates == 3
    assert math.isfinite(res.throughput)


def test_little_law_and_flow_balance() -> None:
    res = simulate(make_config(num_updates=200_000))
    # Utilisation = client throughput / mu, queue lengths sum to C.
    mu = np.array([1.0, 2.0, 4.0, 0.5])
    np.testing.assert_allclose(res.utilization, res.client_throughput / mu, rtol=0.03)
    assert res.mean_queue_length.sum() == pytest.approx(6.0, rel=1e-9)
    assert res.client_throughput.sum() == pytest.approx(res.throughput, rel=1e-9)


def test_custom_router_instance_is_used() -> None:
    cfg = make_config(num_updates=10_000)
    router = FixedRouter(p=(0.7, 0.1, 0.1, 0.1))
    res = simulate(cfg, router=router)
    share = res.completed / res.completed.sum()
    assert share[0] == pytest.approx(0.7, abs=0.03)


def test_bad_arguments_raise_config_error() -> None:
    cfg = make_config(num_updates=10)
    with pytest.raises(ConfigError, match="warmup_fraction"):
        simulate(cfg, warmup_fraction=1.0)
    with pytest.raises(ConfigError, match="num_batches"):
        simulate(cfg, num_batches=1)
    with pytest.raises(ConfigError, match="confidence"):
        simulate(cfg, confidence=1.5)


def test_progress_reports_until_the_end() -> None:
    seen: list[tuple[int, float]] = []
    res = simulate(make_config(num_updates=5_000), progress=lambda k, t: seen.append((k, t)))
    assert seen[-1] == (5_000, res.elapsed)
    assert [k for k, _ in seen] == sorted(k for k, _ in seen)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    res = simulate(make_config(num_updates=2_000))
    res.save(tmp_path / "run")
    back = RunResult.load(tmp_path / "run")
    assert_same(res, back)
    assert back.config == res.config and back.backend == "simulation"
    assert back.mean_staleness == res.mean_staleness
    assert math.isnan(back.final_test_accuracy)
    res.to_json(tmp_path / "all.json")
    assert "mean_relative_delay" in (tmp_path / "all.json").read_text()
    assert "throughput" in res.summary()



def test_saved_result_is_strict_json_with_non_finite_extras(tmp_path: Path) -> None:
    # The runtime's per-client means are NaN for a client that finished no task; they were
    # written as bare NaN tokens, which strict JSON readers (jq, browsers) refuse.
    import dataclasses

    res = simulate(make_config(num_updates=500))
    extras = {"service_time_mean": [0.5, math.nan], "nested": {"x": [math.inf, -math.inf]},
              "label": "nan-free", "count": 3}
    res = dataclasses.replace(res, extras=extras)
    res.save(tmp_path / "run")
    text = (tmp_path / "run" / "result.json").read_text()
    json.loads(text, parse_constant=lambda token: pytest.fail(f"non-strict token {token}"))
    back = RunResult.load(tmp_path / "run")
    got = back.extras
    assert got["service_time_mean"][0] == 0.5 and math.isnan(got["service_time_mean"][1])
    assert got["nested"] == {"x": [math.inf, -math.inf]}
    assert got["label"] == "nan-free" and got["count"] == 3
    res.to_json(tmp_path / "all.json")
    json.loads((tmp_path / "all.json").read_text(),
               parse_constant=lambda token: pytest.fail(f"non-strict token {token}"))


# --------------------------------------------------------------------------- training


class MemorySink:
    def __init__(self) -> None:
        self.rows: list[tuple[int, dict[str, float], float]] = []

    def log_scalars(self, step: int, scalars: Mapping[str, float], *, time: float) -> None:
        self.rows.append((step, dict(scalars), time))

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        del hparams, metrics

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def digits_workload() -> Workload:
    cfg = make_config([1.0] * 10, concurrency=10, p=None, num_updates=10)
    return build_workload(cfg)


def ten_clients(**run: Any) -> SystemConfig:
    rates = tuple(1.0 + i for i in range(10))
    return make_config(rates, concurrency=10, p=None, **run)


def test_learning_reaches_085_on_digits(digits_workload: Workload) -> None:
    cfg = ten_clients(train=True, num_updates=1_500, eval_every_updates=500)
    res = simulate(cfg, workload=digits_workload)
    assert res.final_test_accuracy > 0.85, res.final_test_accuracy
    assert res.test_accuracy[0] < 0.3  # started untrained
    np.testing.assert_array_equal(res.updates, [0, 500, 1000, 1500])
    assert res.times[0] == 0.0 and res.times[-1] == res.elapsed
    assert np.all(np.isfinite(res.val_accuracy))


def test_training_follows_the_same_events_as_queue_only(digits_workload: Workload) -> None:
    cfg = ten_clients(train=True, num_updates=400, eval_every_updates=None)
    trained = simulate(cfg, workload=digits_workload)
    queue = simulate(cfg, queue_only=True)
    np.testing.assert_array_equal(trained.completed, queue.completed)
    np.testing.assert_array_equal(trained.mean_relative_delay, queue.mean_relative_delay)
    assert trained.elapsed == queue.elapsed
    again = simulate(cfg, workload=digits_workload)
    np.testing.assert_array_equal(trained.test_loss, again.test_loss)


def test_eval_every_seconds_evaluates_at_virtual_instants(digits_workload: Workload) -> None:
    cfg = ten_clients(
        train=True, num_updates=None, time_budget=10.0, eval_every_updates=None,
        eval_every_seconds=2.5,
    )  # fmt: skip
    sink = MemorySink()
    assert isinstance(sink, MetricsSink)
    res = simulate(cfg, workload=digits_workload, sinks=[sink])
    np.testing.assert_allclose(res.times, [0.0, 2.5, 5.0, 7.5, 10.0])
    assert res.elapsed == 10.0
    assert np.all(np.diff(res.updates) >= 0)
    tags = set().union(*(row[1] for row in sink.rows))
    assert {"test/accuracy", "system/throughput", "staleness/client_0"} <= tags
    assert [row[2] for row in sink.rows[:5]] == list(res.times)


def test_fedbuff_counts_model_versions(digits_workload: Workload) -> None:
    base = ten_clients(train=True, num_updates=20, eval_every_updates=None)
    cfg = base.replace(
        algorithm=AlgorithmConfig(name="fedbuff", lr=0.1, buffer_size=5, batch_size=16)
    )
    res = simulate(cfg, workload=digits_workload)
    assert res.num_updates == 20
    assert res.num_completions == 100


def test_workload_must_match_the_fleet(digits_workload: Workload) -> None:
    cfg = make_config(train=True, num_updates=10)  # 4 clients, workload has 10
    with pytest.raises(ConfigError, match="10 client partitions"):
        simulate(cfg, workload=digits_workload)


def test_versions_are_read_only_and_not_copied(digits_workload: Workload) -> None:
    seen: list[np.ndarray] = []

    from raysync.strategies import GeneralizedAsyncSGD

    class Spy(GeneralizedAsyncSGD):
        def apply(self, params: np.ndarray, result: Any) -> np.ndarray | None:
            assert not params.flags.writeable
            seen.append(params)
            return super().apply(params, result)

    cfg = ten_clients(train=True, num_updates=30, eval_every_updates=None)
    simulate(cfg, workload=digits_workload, strategy=Spy(lr=0.5, batch_size=16))
    assert len(seen) == 30
    assert len({id(p) for p in seen}) == 30


def test_run_config_defaults_dataclass_replace() -> None:
    cfg = make_config(num_updates=100)
    run = dataclasses.replace(cfg.run, num_updates=200)
    assert simulate(cfg.replace(run=run)).num_updates == 200
