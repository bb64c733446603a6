"""Fields set away from their defaults that the config's choices never read are warned about.

The reference is brute force, not the table in ``raysync.config``: a field counts as used
when changing it changes what is built from the config (the strategy's state, the clients'
data, the model's parameters). ``[data] alpha = 0.1`` without ``partition = "dirichlet"``
trained on IID data, and ``local_steps = 5`` with an AsyncSGD rule ran one step per task,
without a word.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from raysync.config import (
    AlgorithmConfig,
    ClientSpec,
    DataConfig,
    ModelConfig,
    RunConfig,
    ServiceTimeSpec,
    SystemConfig,
    dump_config,
    load_config,
    unused_fields,
)
from raysync.strategies import make_strategy
from raysync.workload import build_workload

#: A valid value away from the default, per [algorithm] field the rules may read.
_ALGORITHM_CHANGES: dict[str, Any] = {
    "local_steps": 3,
    "alpha": 0.3,
    "staleness": None,  # cycled through the other choices
    "staleness_exponent": 0.9,
    "hinge_a": 5.0,
    "hinge_b": 2.0,
    "buffer_size": 4,
    "server_lr": 0.5,
    "staleness_weighting": None,  # toggled
    "weight_exponent": 0.5,
}


def _state(algorithm: AlgorithmConfig) -> dict[str, str]:
    return {k: repr(v) for k, v in vars(make_strategy(algorithm)).items()}


def _system(**parts: Any) -> SystemConfig:
    return SystemConfig(
        clients=(ClientSpec(service_time=ServiceTimeSpec(kind="exponential", rate=1.0)),) * 4,
        concurrency=4,
        run=RunConfig(num_updates=10),
        **parts,
    )


def _warned(config: SystemConfig, prefix: str) -> bool:
    return any(note.startswith(prefix) for note in unused_fields(config))


@pytest.mark.parametrize(
    ("name", "staleness", "weighting"),
    list(itertools.product(["asyncsgd", "generalized_asyncsgd", "fedasync", "fedbuff"],
                           ["constant", "polynomial", "hinge"], [False, True])),
)  # fmt: skip
def test_an_algorithm_field_is_warned_about_exactly_when_changing_it_changes_nothing(
    name: str, staleness: str, weighting: bool
) -> None:
    base = AlgorithmConfig(name=name, staleness=staleness, staleness_weighting=weighting)
    reference = _state(base)
    routing = {"kind": "return_to_sender"} if name == "asyncsgd" else {"kind": "uniform"}
    checked = 0
    for field, value in _ALGORITHM_CHANGES.items():
        if field == "staleness":
            values: list[Any] = [s for s in ("constant", "polynomial", "hinge") if s != staleness]
        elif field == "staleness_weighting":
            values = [not weighting]
        else:
            values = [value]
        for new in values:
            changed = dataclasses.replace(base, **{field: new})
            if new == getattr(AlgorithmConfig(), field):
                continue  # a default value is never warned about
            used = _state(changed) != reference
            config = _system(algorithm=changed, routing=routing)
            assert _warned(config, f"algorithm.{field} = ") is not used, (field, new, used)
            checked += 1
    assert checked >= 8


@pytest.mark.parametrize("partition", ["iid", "dirichlet", "shards", "unequal"])
def test_a_data_field_is_warned_about_exactly_when_changing_it_changes_the_clients_data(
    partition: str,
) -> None:
    base = DataConfig(dataset="digits", partition=partition)
    reference = build_workload(_system(data=base)).client_indices
    for field, value in (("alpha", 0.05), ("shards_per_client", 3), ("size_spread", 2.0)):
        changed = _system(data=dataclasses.replace(base, **{field: value}))
        indices = build_workload(changed).client_indices
        used = any(not np.array_equal(a, b) for a, b in zip(indices, reference, strict=True))
        assert _warned(changed, f"data.{field} = ") is not used, (partition, field, used)


@pytest.mark.parametrize("model", ["logreg", "mlp", "cnn"])
def test_model_hidden_is_warned_about_exactly_when_it_changes_the_model(model: str) -> None:
    data = DataConfig(dataset="digits")
    reference = build_workload(_system(data=data, model=ModelConfig(name=model)))
    changed = _system(data=data, model=ModelConfig(name=model, hidden=(16,)))
    used = build_workload(changed).initial_params.shape != reference.initial_params.shape
    assert used == (model == "mlp")
    assert _warned(changed, "model.hidden = [16] ") is not used


def test_load_config_logs_each_unused_field_and_a_dumped_default_config_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.toml"
    config = _system(
        algorithm=AlgorithmConfig(name="generalized_asyncsgd", local_steps=5),
        data=DataConfig(dataset="digits", alpha=0.1),
    )
    dump_config(config, path)
    with caplog.at_level(logging.WARNING, logger="raysync.config"):
        assert load_config(path) == config
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: algorithm.local_steps = 5 is not used by algorithm.name = "
        "'generalized_asyncsgd'",
        f"{path}: data.alpha = 0.1 is not used by data.partition = 'iid' (only by "
        "'dirichlet')",
    ]
    caplog.clear()
    # every field written, at its default where unused: nothing to say
    dump_config(_system(data=DataConfig(dataset="digits", partition="dirichlet", alpha=0.1)), path)
    with caplog.at_level(logging.WARNING, logger="raysync.config"):
        load_config(path)
    assert caplog.records == []
