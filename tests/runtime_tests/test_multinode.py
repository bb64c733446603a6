"""Clients land on nodes that hold their custom resources (3-node ``Cluster``).

The session fixture already runs a Ray instance in this process, so the cluster runs in a
subprocess with its own Ray (``_cluster_job.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

JOB = Path(__file__).with_name("_cluster_job.py")


def test_clients_are_placed_by_custom_resources() -> None:
    # The timeout is a hang guard, not a speed test: starting three Ray nodes on a loaded
    # machine can take minutes.
    out = subprocess.run(
        [sys.executable, str(JOB)], capture_output=True, text=True, timeout=900, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    nodes = report["client_nodes"]
    assert report["num_updates"] == 300
    assert len(report["nodes"]) == 3
    # Clients 0 and 2 request tier_fast, 1 and 3 tier_slow; client 4 only CPU.
    assert nodes[0] == nodes[2] == report["fast_node"]
    assert nodes[1] == nodes[3] == report["slow_node"]
    for client, node in enumerate(nodes):
        resources = report["nodes"][node]
        if client in (0, 2):
            assert resources.get("tier_fast", 0) >= 1
        if client in (1, 3):
            assert resources.get("tier_slow", 0) >= 1
    # A request no node can hold fails fast with a message naming client and resource.
    assert "client 4" in report["unsatisfiable"]
    assert "tier_tpu" in report["unsatisfiable"]
