"""Placement planning without Ray: tiers, executor plans, resource checks, auto mode."""

from __future__ import annotations

import subprocess
import sys

import pytest

from raysync.config import ClientSpec, RuntimeConfig, SystemConfig
from raysync.exceptions import ConfigError, ResourceUnavailableError
from raysync.placement import (
    check_resources,
    choose_plan,
    client_request,
    client_tiers,
    executor_label,
    plan_executors,
    resolve_mode,
)

NODES = [
    {"CPU": 1.0},
    {"CPU": 1.0, "tier_fast": 2.0},
    {"CPU": 2.0, "GPU": 1.0, "tier_slow": 2.0},
]


def _config(*clients: ClientSpec) -> SystemConfig:
    return SystemConfig(clients=clients, concurrency=len(clients))


def test_importable_without_ray() -> None:
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "import raysync.placement\n"
        "assert 'raysync.runtime' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_client_request_names_every_resource() -> None:
    spec = ClientSpec(num_cpus=0.5, num_gpus=0.25, resources={"tier_fast": 1})
    assert client_request(spec) == {"CPU": 0.5, "GPU": 0.25, "tier_fast": 1.0}
    assert client_request(ClientSpec(num_cpus=0)) == {"CPU": 0.0}


def test_clients_with_identical_requests_form_tiers_and_one_client_map() -> None:
    fast = ClientSpec(num_cpus=0.5, resources={"tier_fast": 1})
    slow = ClientSpec(num_cpus=1, resources={"tier_slow": 1})
    gpu = ClientSpec(num_cpus=1, num_gpus=0.5)
    named = ClientSpec(num_cpus=0.5, resources={"tier_fast": 1}, name="other service time")
    config = SystemConfig(clients=(fast, slow, fast, gpu, slow, named), concurrency=3)
    tiers = client_tiers(config)
    assert [t.clients for t in tiers] == [(0, 2, 5), (1, 4), (3,)]
    assert dict(tiers[2].request) == {"CPU": 1.0, "GPU": 0.5}
    assert tiers[0].label == "tier 0 {CPU: 0.5, tier_fast: 1}"
    pooled = config.replace(runtime=RuntimeConfig(mode="pool", executors_per_tier=2))
    pool = plan_executors(pooled, "pool")
    assert pool.executor_tiers == (0, 0, 1, 1, 2)  # capped at the tier's size
    assert pool.executor_clients[0] == (0, 2, 5)
    assert pool.client_executor is None
    assert pool.num_executors == 5
    assert pool.requests()[2] == {"CPU": 1.0, "tier_slow": 1.0}
    per_client = plan_executors(config, "per_client")
    assert per_client.executor_clients == tuple((i,) for i in range(6))
    assert per_client.executor_tiers == (0, 1, 0, 2, 1, 0)
    # The client-to-tier map is built once, by the plan, the same in both modes.
    assert pool.client_tiers == per_client.client_tiers == (0, 1, 0, 2, 1, 0)
    assert executor_label(config, per_client, 3) == "client 3"
    assert (
        executor_label(pooled, pool, 0)
        == "tier 0 {CPU: 0.5, tier_fast: 1} executor (clients 0, ... (3 clients))"
    )
    with pytest.raises(ConfigError, match="mode must be per_client or pool"):
        plan_executors(config, "cluster")


def test_feasible_requests_pass() -> None:
    check_resources(
        _config(
            ClientSpec(num_cpus=0.5, resources={"tier_fast": 1}),
            ClientSpec(num_cpus=0.5, resources={"tier_fast": 1}),
            ClientSpec(num_cpus=1, num_gpus=1, resources={"tier_slow": 2}),
        ),
        NODES,
    )


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (ClientSpec(resources={"tier_tpu": 1}), ["client 1", "tier_tpu: 1", "tier_tpu: 0"]),
        (ClientSpec(num_gpus=4), ["client 1", "GPU: 4", "GPU: 1"]),
        (ClientSpec(num_cpus=3), ["client 1", "CPU: 3", "CPU: 2"]),
        # Each resource exists somewhere, but no single node holds both.
        (ClientSpec(resources={"tier_fast": 1, "tier_slow": 1}), ["no single node"]),
        (ClientSpec(name="edge", resources={"tier_tpu": 1}), ["client 1 (edge)"]),
    ],
)
def test_unsatisfiable_request_names_client_request_and_offer(
    spec: ClientSpec, words: list[str]
) -> None:
    config = _config(ClientSpec(), spec)
    with pytest.raises(ResourceUnavailableError) as info:
        check_resources(config, NODES)
    for word in words:
        assert word in str(info.value)


def test_total_requests_beyond_the_cluster_fail() -> None:
    config = _config(*[ClientSpec(num_cpus=1) for _ in range(5)])
    with pytest.raises(ResourceUnavailableError, match=r"together request CPU=5"):
        check_resources(config, NODES)
    fits = _config(*[ClientSpec(num_cpus=1) for _ in range(4)])
    check_resources(fits, NODES)  # exactly the cluster's 4 CPUs
    with pytest.raises(ResourceUnavailableError, match="CPU=5"):
        check_resources(fits, NODES, server_num_cpus=1)  # not with a 1-CPU server


def test_no_alive_node() -> None:
    with pytest.raises(ResourceUnavailableError, match="no alive node"):
        check_resources(_config(ClientSpec()), [])


def test_pool_resources_are_checked_per_tier() -> None:
    nodes = [{"CPU": 2.0, "tier_fast": 4.0}, {"CPU": 2.0, "tier_slow": 1.0}]
    fast = ClientSpec(num_cpus=0.5, resources={"tier_fast": 1})
    slow = ClientSpec(num_cpus=1, resources={"tier_slow": 1})
    config = SystemConfig(
        clients=(fast,) * 500 + (slow,) * 500,
        concurrency=10,
        runtime=RuntimeConfig(mode="pool", executors_per_tier=2),
    )
    # Two slow executors need tier_slow = 2 but the cluster has 1 in total.
    with pytest.raises(ResourceUnavailableError, match=r"4 executors of 2 tier\(s\)"):
        check_resources(config, nodes)
    one = config.replace(runtime=RuntimeConfig(mode="pool", executors_per_tier=1))
    plan = check_resources(one, nodes)
    assert plan.num_executors == 2
    with pytest.raises(ResourceUnavailableError, match=r"client 0 \(and 499 more"):
        check_resources(one, [{"CPU": 8.0, "tier_slow": 4.0}])


def test_auto_mode_falls_back_to_the_pool() -> None:
    small = SystemConfig(clients=(ClientSpec(num_cpus=1),) * 4, concurrency=4)
    assert choose_plan(small, [{"CPU": 8.0}]).mode == "per_client"
    # Four one-CPU actors do not fit on two CPUs: the pool (two executors) does.
    assert choose_plan(small, [{"CPU": 2.0}]).mode == "pool"
    many = SystemConfig(clients=(ClientSpec(num_cpus=0.01),) * 100, concurrency=4)
    assert resolve_mode(many, per_client_fits=True) == "pool"
    forced = small.replace(runtime=RuntimeConfig(mode="per_client"))
    with pytest.raises(ResourceUnavailableError, match=r'mode = \\"pool\\"|mode = "pool"'):
        choose_plan(forced, [{"CPU": 2.0}])
