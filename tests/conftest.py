"""Shared fixtures: one Ray instance per test session (DESIGN.md, "Tests")."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    """A local Ray instance shared by every ``ray`` test (2 CPUs, 1 logical GPU).

    The logical GPU lets tests exercise GPU scheduling on CPU-only machines; code that
    asks for CUDA falls back to the CPU when no real device is present.
    """
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    from raysync.runtime.coordinator import local_instance_settings

    if not ray.is_initialized():
        # address="local": always a fresh instance, never a `ray start` cluster that
        # happens to run on the same machine; loopback only, private token, as raysync's
        # own local runs.
        with local_instance_settings():
            ray.init(
                address="local",
                num_cpus=2,
                num_gpus=1,
                include_dashboard=False,
                object_store_memory=200 * 1024 * 1024,
                log_to_driver=False,
                ignore_reinit_error=True,
            )
    yield ray
    ray.shutdown()
