from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raysync.config import (
    AlgorithmConfig,
    ClientSpec,
    DataConfig,
    ModelConfig,
    RoutingConfig,
    RunConfig,
    RuntimeConfig,
    ServiceTimeSpec,
    SystemConfig,
    dump_config,
    load_config,
)
from raysync.exceptions import ConfigError, RaySyncError

from .._configs import load_text

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny.toml"


def _clients(rates: list[float]) -> tuple[ClientSpec, ...]:
    return tuple(ClientSpec(service_time=ServiceTimeSpec(rate=r)) for r in rates)


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.num_clients == 4
    assert config.concurrency == 6
    assert config.service_rates == (1.0, 2.0, 4.0, 0.5)
    assert config.routing_probabilities == (0.4, 0.3, 0.2, 0.1)


def test_config_error_is_value_error_and_raysync_error() -> None:
    with pytest.raises(ValueError):
        SystemConfig(clients=_clients([1.0]), concurrency=0)
    assert issubclass(ConfigError, RaySyncError)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ServiceTimeSpec(rate=-1.0), r"service_time.rate must be > 0, got -1.0"),
        (lambda: ServiceTimeSpec(rate=math.inf), r"service_time.rate must be finite"),
        (lambda: ServiceTimeSpec(kind="weibull", rate=1.0), r"service_time.kind must be one of"),
        (lambda: ServiceTimeSpec(kind="trace", durations=()), r"durations must be a non-empty"),
        (lambda: ServiceTimeSpec(kind="lognormal", mean=1.0, cv=0.0), r"service_time.cv must be"),
        (lambda: ClientSpec(num_cpus=-0.5), r"num_cpus must be >= 0, got -0.5"),
        (lambda: ClientSpec(resources={"tier": -1}), r"resources.tier must be > 0, got -1"),
        # below Ray's 1e-4 granularity: refused by Ray only at actor creation, unnamed
        (lambda: ClientSpec(num_cpus=1e-5),
         r"num_cpus must be 0 or at least 0.0001 \(Ray's resource granularity\), got 1e-05"),
        (lambda: ClientSpec(num_gpus=1e-300), r"num_gpus must be 0 or at least 0.0001"),
        (lambda: ClientSpec(resources={"tier": 5e-5}), r"resources.tier must be 0 or at least"),
        (lambda: ClientSpec(resources={"CPU": 1}), r"resources.CPU is reserved"),
        (
            lambda: RoutingConfig(kind="fixed", p=(0.5, 0.47)),
            r"routing.p must sum to 1, got sum=0.97 over its 2 entries",
        ),
        (lambda: RoutingConfig(kind="fixed", p=(1.0, 0.0)), r"routing.p\[1\] must be >= 1e-300"),
        (
            lambda: RoutingConfig(kind="fixed", p=(1.0, 5e-324)),
            r"routing.p\[1\] must be >= 1e-300 \(every client reachable, a normal float64\), "
            r"got 5e-324",
        ),
        (lambda: RoutingConfig(kind="fixed"), r"routing.p is required"),
        (lambda: RoutingConfig(kind="nearest"), r"routing.kind must be one of"),
        (lambda: AlgorithmConfig(name="sgd"), r"algorithm.name must be one of .*got 'sgd'"),
        (lambda: AlgorithmConfig(lr=0.0), r"algorithm.lr must be > 0, got 0.0"),
        (lambda: AlgorithmConfig(alpha=1.5), r"algorithm.alpha must be in \(0, 1\]"),
        # below the smallest normal float32 (2**-126) the float32 model moves by 0
        (lambda: AlgorithmConfig(lr=1e-320), r"algorithm.lr must be >= 1.175e-38, the small"),
        (lambda: AlgorithmConfig(lr=1e-38), r"algorithm.lr must be >= 1.175e-38, .*, got 1e-38$"),
        (lambda: AlgorithmConfig(alpha=5e-324), r"algorithm.alpha must be >= 1.175e-38"),
        (lambda: AlgorithmConfig(server_lr=1e-39), r"algorithm.server_lr must be >= 1.175e-38"),
        (lambda: AlgorithmConfig(buffer_size=0), r"algorithm.buffer_size must be an integer >= 1"),
        (lambda: AlgorithmConfig(staleness="exp"), r"algorithm.staleness must be one of"),
        (lambda: DataConfig(dataset="cifar"), r"data.dataset must be one of"),
        (lambda: DataConfig(dataset="directory"), r"data.path is required"),
        (
            lambda: DataConfig(dataset="mnist", partition="natural"),
            r"^data.partition = 'natural' needs a data.factory that returns client_train .*"
            r"data.dataset 'mnist' has none: use iid, dirichlet, shards or unequal$",
        ),
        (lambda: DataConfig(alpha=-1.0), r"data.alpha must be > 0"),
        (lambda: ModelConfig(name="resnet"), r"model.name must be one of"),
        (lambda: RunConfig(num_updates=0), r"run.num_updates must be an integer >= 1, got 0"),
        (lambda: RunConfig(time_budget=-5.0), r"run.time_budget must be > 0, got -5.0"),
        (lambda: RunConfig(time_scale=-1.0), r"run.time_scale must be >= 0"),
        (lambda: RunConfig(task_timeout=0.0), r"run.task_timeout must be > 0, got 0.0"),
        (
            lambda: RunConfig(checkpoint_every_updates=10),
            r"run.checkpoint_dir is required when run.checkpoint_every_updates is set",
        ),
        (
            lambda: RunConfig(checkpoint_every_updates=0, checkpoint_dir="c"),
            r"run.checkpoint_every_updates must be an integer >= 1, got 0",
        ),
        (lambda: RunConfig(checkpoint_dir=""), r"run.checkpoint_dir must be a non-empty path"),
        (lambda: RuntimeConfig(mode="threads"), r"runtime.mode must be one of auto, per_client"),
        (
            lambda: RuntimeConfig(executors_per_tier=0),
            r"runtime.executors_per_tier must be an integer >= 1, got 0",
        ),
        (lambda: RuntimeConfig(max_restarts=-1), r"runtime.max_restarts must be an integer >= 0"),
        (
            lambda: SystemConfig(clients=_clients([1.0, 2.0]), concurrency=0),
            r"concurrency must be an integer >= 1, got 0",
        ),
        (
            lambda: SystemConfig(clients=_clients([1.0, 2.0]), concurrency=2.5),
            r"concurrency must be an integer, got 2.5 \(a float\)",
        ),
        (
            lambda: SystemConfig(
                clients=_clients([1.0, 2.0]),
                concurrency=2,
                routing=RoutingConfig(kind="fixed", p=(0.2, 0.3, 0.5)),
            ),
            r"routing.p must have one entry per client \(n=2\), got 3",
        ),
        (
            lambda: SystemConfig(
                clients=_clients([1.0, 2.0]),
                concurrency=3,
                routing=RoutingConfig(kind="return_to_sender"),
                algorithm=AlgorithmConfig(name="asyncsgd"),
            ),
            r"concurrency must equal the number of clients \(n=2\).*got 3",
        ),
        (
            lambda: SystemConfig(
                clients=_clients([1.0, 2.0]),
                concurrency=2,
                algorithm=AlgorithmConfig(name="asyncsgd"),
            ),
            r"algorithm 'asyncsgd' needs routing.kind = 'return_to_sender'",
        ),
        (lambda: SystemConfig(clients=(), concurrency=1), r"at least one client"),
        # refused before the data loads, so `validate` without --workload agrees with `simulate`
        *[
            (
                lambda dataset=dataset: SystemConfig(
                    clients=_clients([1.0]),
                    concurrency=1,
                    data=DataConfig(dataset=dataset, path="d" if dataset == "directory" else None),
                    model=ModelConfig(loss="mse"),
                ),
                rf"^model.loss = 'mse' needs real targets, but data.dataset '{dataset}' has "
                "integer class labels",
            )
            for dataset in ("digits", "mnist", "directory")
        ],
    ],
)
def test_each_rule_is_rejected_with_its_message(build, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build()


def test_the_smallest_normal_float32_step_is_accepted() -> None:
    import numpy as np

    step = 2.0**-126
    assert AlgorithmConfig(lr=step, alpha=step, server_lr=step).lr == step
    # independent: the bound is float32's own smallest normal, and half of it times a
    # unit gradient is no longer a normal float32 (it flushes on many accelerators)
    assert step == float(np.finfo(np.float32).tiny)
    assert np.float32(step / 2) < np.finfo(np.float32).tiny


def test_service_time_rate_and_mean_are_interchangeable() -> None:
    assert ServiceTimeSpec(kind="exponential", mean=0.25).rate == 4.0
    assert ServiceTimeSpec(kind="deterministic", rate=4.0).mean == 0.25
    assert ServiceTimeSpec(kind="trace", durations=(1.0, 3.0)).service_rate == 0.5
    assert ServiceTimeSpec(kind="lognormal", mean=2.0).cv == 1.0


def test_run_defaults_to_1000_updates_without_a_budget() -> None:
    assert RunConfig().num_updates == 1000
    assert RunConfig(time_budget=5.0).num_updates is None


def test_unknown_keys_are_rejected(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace("lr = 0.05", "lr = 0.05\nmomentum = 0.9")
    with pytest.raises(ConfigError, match=r"unknown key 'momentum' in \[algorithm\]"):
        load_text(tmp_path, text)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_text(tmp_path, "concurrency = [")


def test_count_replicates_client_tables(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        "concurrency = 10\n"
        "[[clients]]\ncount = 3\nservice_time = { kind = 'exponential', rate = 10.0 }\n"
        "resources = { tier_fast = 1 }\n"
        "[[clients]]\ncount = 7\nservice_time = { kind = 'deterministic', mean = 1.0 }\n",
    )
    assert config.num_clients == 10
    assert config.service_rates == (10.0,) * 3 + (1.0,) * 7
    assert config.clients[0].resources == {"tier_fast": 1}
    assert config.routing_probabilities == (0.1,) * 10


def test_toml_round_trip(tmp_path: Path) -> None:
    config = load_config(EXAMPLE).replace(
        algorithm=AlgorithmConfig(name="fedbuff", buffer_size=4, staleness="hinge"),
        run=RunConfig(num_updates=None, time_budget=12.5, time_scale=0.0),
    )
    out = tmp_path / "round.toml"
    dump_config(config, out)
    assert load_config(out) == config


@settings(max_examples=50, deadline=None)
@given(
    weights=st.lists(st.floats(min_value=1e-3, max_value=1e3), min_size=1, max_size=30),
    concurrency=st.integers(min_value=1, max_value=100),
)
def test_any_normalised_routing_is_accepted_and_round_trips(
    weights: list[float], concurrency: int
) -> None:
    total = math.fsum(weights)
    p = tuple(w / total for w in weights)
    config = SystemConfig(
        clients=_clients([1.0] * len(p)),
        concurrency=concurrency,
        routing=RoutingConfig(kind="fixed", p=p),
    )
    assert SystemConfig.from_dict(config.to_dict()) == config


def test_runtime_and_fault_settings_load_from_toml_and_round_trip(tmp_path: Path) -> None:
    text = """
concurrency = 4
[[clients]]
count = 3000
service_time = { kind = "exponential", rate = 2.0 }
num_cpus = 0.5
[run]
num_updates = 100
task_timeout = 5.0
checkpoint_every_updates = 50
checkpoint_dir = "ckpt"
[runtime]
mode = "pool"
executors_per_tier = 3
max_restarts = 1
"""
    config = load_text(tmp_path, text)
    assert config.num_clients == 3000
    assert config.runtime == RuntimeConfig(mode="pool", executors_per_tier=3, max_restarts=1)
    assert config.run.task_timeout == 5.0
    assert config.run.checkpoint_every_updates == 50
    assert config.run.checkpoint_dir == "ckpt"
    out = tmp_path / "round.toml"
    dump_config(config, out)
    assert load_config(out) == config
    assert SystemConfig.from_dict(config.to_dict()) == config
    default = SystemConfig(clients=_clients([1.0]), concurrency=1)
    assert default.runtime.mode == "auto"
    with pytest.raises(ConfigError, match="unknown key 'executors' in \\[runtime\\]"):
        SystemConfig.from_dict({**default.to_dict(), "runtime": {"executors": 2}})
