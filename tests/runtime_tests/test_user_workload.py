"""User workloads on Ray: the same partitions and initial model as the simulator, GPU
clients (Ray's logical GPUs: no real device needed), and user-code errors inside actors
as domain errors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import ray
import torch

import raysync
from raysync._cli.run import measured_rates
from raysync.exceptions import ConfigError, DataError
from raysync.runtime._backend import executor_device
from raysync.runtime.actors import ExecutorActor, ExecutorSetup
from raysync.simulation import simulate
from raysync.workload import build_workload
from tests.test_user_workload import config, user_module

__all__ = ["user_module"]  # the fixture, re-used

#: Actor start-up limit: a hang guard on a loaded machine, not a speed test.
STARTUP = 900.0


@pytest.fixture()
def shipped(user_module: Any) -> Any:
    """The user module pickled by value, as a notebook's code reaches Ray workers."""
    ray.cloudpickle.register_pickle_by_value(user_module)
    yield user_module
    ray.cloudpickle.unregister_pickle_by_value(user_module)


def _mixed_fleet() -> Any:
    base = config()
    data = base.to_dict()
    data["clients"] = [
        {"num_gpus": 0.5, "num_cpus": 0.25},
        {"num_gpus": 0.5, "num_cpus": 0.25},
        {"num_cpus": 0.25},
        {"num_cpus": 0.25},
    ]
    data["runtime"] = {"mode": "pool", "executors_per_tier": 2}
    data["run"] = {"num_updates": 60, "eval_every_updates": 30, "time_scale": 0.0}
    return type(base).from_dict(data)


@pytest.mark.parametrize(
    ("num_gpus", "ids", "cuda", "visible", "device"),
    [
        (0.0, [], True, "0,1", "cpu"),
        (0.5, ["1"], False, "1", "cpu"),  # logical GPU, no CUDA in the process
        (0.5, ["1"], True, "1", "cuda:0"),  # Ray narrowed the visible devices to id 1
        (1.0, [3], True, "2,3", "cuda:1"),
        (1.0, ["2"], True, None, "cuda:2"),
    ],
)
def test_executor_device_follows_rays_assignment(
    num_gpus: float, ids: list[Any], cuda: bool, visible: str | None, device: str
) -> None:
    got = executor_device(num_gpus, ids, cuda_available=cuda, cuda_visible_devices=visible)
    assert got == device


@pytest.mark.ray
def test_fractional_gpu_executors_get_a_gpu_id_and_their_device(ray_session) -> None:  # noqa: ANN001
    setup = dict(tier=0, client=None, num_cpus=0.25, time_scale=0.0, train=True, seed=0)
    actor_cls = ray.remote(ExecutorActor)
    gpu = [
        actor_cls.options(num_cpus=0, num_gpus=0.5).remote(
            ExecutorSetup(executor_id=e, num_gpus=0.5, **setup)
        )
        for e in range(2)  # two halves of the session's one logical GPU
    ]
    cpu = actor_cls.options(num_cpus=0).remote(ExecutorSetup(executor_id=2, num_gpus=0.0, **setup))
    try:
        infos = ray.get([a.prepare.remote(None) for a in [*gpu, cpu]], timeout=STARTUP)
    finally:
        for actor in [*gpu, cpu]:
            ray.kill(actor)
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert [i["gpu_ids"] for i in infos] == [["0"], ["0"], []]
    assert [i["device"] for i in infos] == [expected, expected, "cpu"]


@pytest.mark.ray
def test_user_workload_on_ray_matches_the_simulator_on_a_mixed_fleet(
    ray_session,
    shipped: Any,  # noqa: ANN001
) -> None:
    cfg = _mixed_fleet()
    wl = build_workload(
        cfg,
        model_factory=shipped.make_model,
        model_kwargs={"width": 6},
        data_factory=shipped.make_data,
    )
    # the config's references give the same partitions and initial parameters
    by_ref = build_workload(cfg)
    assert np.array_equal(wl.initial_params, by_ref.initial_params)
    assert all(
        np.array_equal(a, b) for a, b in zip(wl.client_indices, by_ref.client_indices, strict=True)
    )
    sim = simulate(cfg, workload=wl)
    result = raysync.run(cfg, workload=wl, startup_timeout=STARTUP)
    assert result.num_updates == 60
    # both evaluate the same initial model on the same test set before any update
    assert result.test_loss[0] == pytest.approx(sim.test_loss[0], rel=1e-6)
    assert result.test_accuracy[0] == pytest.approx(sim.test_accuracy[0])
    assert math.isfinite(result.final_test_loss)
    # pool mode: 2 executors with half a GPU each (one logical GPU) and 2 CPU executors
    devices = result.extras["executor_devices"]
    assert len(devices) == 4
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert sorted(devices) == sorted([expected, expected, "cpu", "cpu"])
    # no emulation: the measured compute times give the rates mu_i the theory needs
    rates = measured_rates(result, cfg)
    assert rates is not None and len(rates) == 4 and min(rates) > 0
    np.testing.assert_allclose(
        rates, 1.0 / np.asarray(result.extras["compute_time_mean"]), rtol=1e-9
    )


@pytest.mark.ray
def test_unshipped_user_code_fails_in_the_actor_with_a_domain_error(
    ray_session,
    user_module: Any,  # noqa: ANN001
) -> None:
    cfg = config()  # references 'userwl:...': importable here, not in Ray's workers
    with pytest.raises(ConfigError, match=r"'userwl:make_model' cannot be imported.*runtime_env"):
        raysync.run(cfg, startup_timeout=STARTUP)


@pytest.mark.ray
def test_a_loss_that_breaks_inside_a_client_names_the_client_and_the_loss(
    ray_session,
    shipped: Any,  # noqa: ANN001
) -> None:
    cfg = config()
    wl = build_workload(
        cfg, loss=shipped.late_vector_loss, model_factory=shipped.make_model, check=False
    )  # the probe (batch 8) would catch it before any client runs
    with pytest.raises(DataError, match=r"client \d+ failed on task \d+: loss .*late_vector_loss"):
        raysync.run(cfg, workload=wl, startup_timeout=STARTUP)
