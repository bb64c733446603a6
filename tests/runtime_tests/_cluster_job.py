"""Run a short raysync job on a 3-node ``ray.cluster_utils.Cluster`` (own Ray instance).

Executed in a subprocess by ``test_multinode.py`` (the test session already runs a Ray
instance). Prints one JSON line: each client's node id and each node's resources.
"""

from __future__ import annotations

import json
import sys

import ray
from ray.cluster_utils import Cluster

import raysync
from raysync.config import ClientSpec, RoutingConfig, RunConfig, ServiceTimeSpec, SystemConfig
from raysync.exceptions import ResourceUnavailableError


def main() -> int:
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    try:
        fast = cluster.add_node(num_cpus=1, resources={"tier_fast": 2})
        slow = cluster.add_node(num_cpus=1, resources={"tier_slow": 2})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        service = ServiceTimeSpec(kind="exponential", mean=0.01)
        clients = (
            ClientSpec(service_time=service, num_cpus=0.25, resources={"tier_fast": 1}),
            ClientSpec(service_time=service, num_cpus=0.25, resources={"tier_slow": 1}),
            ClientSpec(service_time=service, num_cpus=0.25, resources={"tier_fast": 1}),
            ClientSpec(service_time=service, num_cpus=0.25, resources={"tier_slow": 1}),
            ClientSpec(service_time=service, num_cpus=0.25),
        )
        config = SystemConfig(
            clients=clients,
            concurrency=5,
            routing=RoutingConfig(kind="uniform"),
            run=RunConfig(num_updates=300, train=False, time_scale=1.0),
            seed=3,
        )
        result = raysync.run(config, address=cluster.address)
        unsatisfiable = ""
        try:
            bad = config.replace(
                clients=(*clients[:4], ClientSpec(num_cpus=0.25, resources={"tier_tpu": 1}))
            )
            raysync.run(bad)
        except ResourceUnavailableError as exc:
            unsatisfiable = str(exc)
        nodes = {
            node["NodeID"]: {
                k: v for k, v in node["Resources"].items() if not k.startswith("node:")
            }
            for node in ray.nodes()
            if node["Alive"]
        }
        print(
            json.dumps(
                {
                    "client_nodes": result.extras["client_nodes"],
                    "nodes": nodes,
                    "fast_node": fast.node_id,
                    "slow_node": slow.node_id,
                    "num_updates": result.num_updates,
                    "unsatisfiable": unsatisfiable,
                }
            )
        )
        return 0
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main())
