"""Shared fleet configs for the tuning tests."""

from __future__ import annotations

import pytest

from raysync.config import SystemConfig
from raysync.objectives import ProblemConstants

TINY = """
seed = 0
concurrency = 4

[routing]
kind = "uniform"

[algorithm]
name = "generalized_asyncsgd"
lr = 0.1
batch_size = 16

[data]
dataset = "digits"

[model]
name = "logreg"

[run]
time_budget = 40.0
eval_every_seconds = 10.0

[[clients]]
service_time = { kind = "exponential", rate = 1.0 }
[[clients]]
service_time = { kind = "exponential", rate = 2.0 }
[[clients]]
service_time = { kind = "exponential", rate = 4.0 }
[[clients]]
service_time = { kind = "exponential", rate = 0.5 }
"""

TIERED = """
seed = 0
concurrency = 6

[[clients]]
count = 3
service_time = { kind = "exponential", rate = 4.0 }
num_cpus = 0.25
[[clients]]
count = 2
service_time = { kind = "exponential", rate = 1.0 }
num_cpus = 0.25
[[clients]]
count = 1
service_time = { kind = "exponential", rate = 1.0 }
num_cpus = 0.5
"""

#: Constants of TINY measured once by estimate_constants_for_config (fixed: tests stay fast).
CONSTANTS = ProblemConstants(L=1.7867, sigma2=0.55762, M2=0.032046, A=1.9962)


def _load(text: str, tmp_path_factory: pytest.TempPathFactory, name: str) -> SystemConfig:
    from raysync.config import load_config

    path = tmp_path_factory.mktemp("cfg") / f"{name}.toml"
    path.write_text(text)
    return load_config(path)


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> SystemConfig:
    return _load(TINY, tmp_path_factory, "tiny")


@pytest.fixture(scope="session")
def tiered_config(tmp_path_factory: pytest.TempPathFactory) -> SystemConfig:
    return _load(TIERED, tmp_path_factory, "tiered")


@pytest.fixture()
def tiny_path(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path
