"""Shared fleet configs for the tuning tests."""

from __future__ import annotations

import pytest

from raysync.config import SystemConfig
from raysync.objectives import ProblemConstants

from .._configs import WORKED_EXAMPLE_CLIENTS, write_config

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


""" + WORKED_EXAMPLE_CLIENTS

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

    return load_config(write_config(tmp_path_factory.mktemp("cfg"), text, f"{name}.toml"))


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> SystemConfig:
    return _load(TINY, tmp_path_factory, "tiny")


@pytest.fixture(scope="session")
def tiered_config(tmp_path_factory: pytest.TempPathFactory) -> SystemConfig:
    return _load(TIERED, tmp_path_factory, "tiered")


@pytest.fixture()
def tiny_path(tmp_path):
    return write_config(tmp_path, TINY, "tiny.toml")
