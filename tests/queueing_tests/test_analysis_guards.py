"""analyze() and curve_summary(): lean curves, size refusals, finite results at any scale."""

from __future__ import annotations

import math
import resource
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raysync.exceptions import ConfigError
from raysync.queueing import ClosedNetwork, analyze
from raysync.queueing.analysis import MAX_CURVE_BYTES, curve_summary

BASE = ClosedNetwork(mu=[1.0, 2.0, 4.0, 0.5], p=[0.4, 0.3, 0.2, 0.1], concurrency=6)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    mu=st.lists(st.floats(0.05, 20.0), min_size=1, max_size=6),
    c=st.integers(1, 30),
    latency=st.sampled_from([0.0, 0.3]),
    server=st.sampled_from([None, 5.0]),
    data=st.data(),
)
def test_curve_summary_matches_the_full_curve(
    mu: list[float], c: int, latency: float, server: float | None, data: st.DataObject
) -> None:
    n = len(mu)
    w = np.array(data.draw(st.lists(st.floats(0.1, 10.0), min_size=n, max_size=n)))
    client_latency = data.draw(st.sampled_from([None, list(np.linspace(0.0, 1.0, n))]))
    net = ClosedNetwork(
        mu=mu,
        p=w / w.sum(),
        concurrency=c,
        latency=latency,
        client_latency=client_latency,
        server_rate=server,
    )
    full = analyze(net, curve=True)
    lean = curve_summary(net)
    assert full.throughput_curve is not None and full.relative_delay_curve is not None
    np.testing.assert_allclose(lean.throughput, full.throughput_curve, rtol=1e-12)
    np.testing.assert_allclose(
        lean.mean_relative_delay, full.relative_delay_curve.mean(axis=1), rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(
        lean.max_relative_delay, full.relative_delay_curve.max(axis=1), rtol=1e-12, atol=1e-12
    )
    assert lean.throughput[-1] == pytest.approx(analyze(net).throughput, rel=1e-12)


def test_curve_summary_memory_is_linear() -> None:
    # C = n = 3000: the full curve holds two 72 MB matrices; the summary a few vectors
    net = ClosedNetwork(mu=np.linspace(0.5, 2.0, 3000), p=np.full(3000, 1 / 3000), concurrency=3000)
    tracemalloc.start()
    try:
        summary = curve_summary(net)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary.throughput.shape == (3000,)
    assert peak < 2 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_full_curve_beyond_the_memory_limit_is_refused_with_its_size() -> None:
    big = ClosedNetwork(mu=np.ones(20_000), p=np.full(20_000, 1 / 20_000), concurrency=100_000)
    with pytest.raises(ConfigError, match=r"needs two C x n float64 matrices = 29\.8 GiB"):
        analyze(big, curve=True)
    assert 8 * 100_000 * 2 * 20_000 > MAX_CURVE_BYTES


def test_a_solve_too_long_for_the_machine_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"C=100,000,000,000 with n=4 clients needs"):
        analyze(BASE.with_concurrency(10**11))
    with pytest.raises(ConfigError, match="solver steps"):
        curve_summary(BASE.with_concurrency(10**11))


@pytest.mark.parametrize("method", ["mva", "buzen", "bruteforce"])
@pytest.mark.parametrize("exponent", [-1020, -700, 700, 1000])
def test_results_scale_exactly_with_the_time_unit(method: str, exponent: int) -> None:
    # rates 2**e times larger: the same network in another time unit; counts unchanged,
    # throughput 2**e times larger, times 2**e times shorter (exact for powers of two)
    base = analyze(BASE, method=method)
    scaled_net = ClosedNetwork(
        mu=np.ldexp(BASE.mu, exponent), p=BASE.p, concurrency=BASE.concurrency
    )
    scaled = analyze(scaled_net, method=method)
    assert scaled.throughput == pytest.approx(math.ldexp(base.throughput, exponent), rel=1e-12)
    np.testing.assert_allclose(scaled.mean_queue_length, base.mean_queue_length, rtol=1e-12)
    np.testing.assert_allclose(scaled.mean_relative_delay, base.mean_relative_delay, rtol=1e-12)
    np.testing.assert_allclose(scaled.utilization, base.utilization, rtol=1e-12)
    np.testing.assert_allclose(
        scaled.mean_sojourn_time, np.ldexp(base.mean_sojourn_time, -exponent), rtol=1e-12
    )


def test_extensions_scale_with_the_time_unit() -> None:
    net = ClosedNetwork(
        mu=BASE.mu, p=BASE.p, concurrency=6, latency=0.2, client_latency=[0, 0.1, 0.2, 0.3],
        server_rate=5.0,
    )  # fmt: skip
    e = 900
    scaled_net = ClosedNetwork(
        mu=np.ldexp(net.mu, e),
        p=net.p,
        concurrency=6,
        latency=math.ldexp(0.2, -e),
        client_latency=np.ldexp(np.array([0, 0.1, 0.2, 0.3]), -e),
        server_rate=math.ldexp(5.0, e),
    )
    base, scaled = analyze(net), analyze(scaled_net)
    assert scaled.throughput == pytest.approx(math.ldexp(base.throughput, e), rel=1e-12)
    np.testing.assert_allclose(scaled.mean_relative_delay, base.mean_relative_delay, rtol=1e-12)
    np.testing.assert_allclose(scaled.mean_in_transit, base.mean_in_transit, rtol=1e-12)
    assert scaled.server_utilization == pytest.approx(base.server_utilization, rel=1e-12)


def test_rates_spanning_600_orders_of_magnitude() -> None:
    # the slow client is the bottleneck; the fast one's queue is empty to double precision
    net = ClosedNetwork(mu=[1e300, 1e-300], p=[0.5, 0.5], concurrency=5)
    result = analyze(net)
    assert result.throughput == pytest.approx(2e-300, rel=1e-12)
    assert result.mean_sojourn_time[0] == pytest.approx(1e-300, rel=1e-12)
    assert result.mean_queue_length[1] == pytest.approx(5.0, rel=1e-12)
    assert np.all(np.isfinite(result.mean_relative_delay))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mu": [1e-320, 1.0]}, r"mu\[0\]=1e-320 is too small"),
        ({"mu": [1e-308, 1e-308]}, "mean sojourn time of this network is beyond the float64"),
        # found by the slow fuzz tier: the rescaled solve is fine, its throughput in the
        # caller's unit (about 1.8e308 at C = 9) is not
        ({"mu": [1e308, 1e308], "concurrency": 9}, "throughput of this network is beyond"),
        ({"mu": [1.0, 2.0], "server_rate": 1e-310}, "1/server_rate overflows float64"),
    ],
)
def test_unrepresentable_results_are_refused(kwargs: dict[str, object], message: str) -> None:
    args = {"p": [0.5, 0.5], "concurrency": 5, **kwargs}
    net = ClosedNetwork(**args)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=message):
        analyze(net)


def _limit_address_space() -> None:  # pragma: no cover - runs in the child
    resource.setrlimit(resource.RLIMIT_AS, (4_000_000 * 1024, 4_000_000 * 1024))


def test_cli_curve_under_a_4gb_address_space(tmp_path: Path) -> None:
    # the full curve would need 2 x 20,000 x 20,000 float64 = 6 GiB; the lean pass ~1 MB
    config = tmp_path / "big.toml"
    config.write_text(
        "concurrency = 20000\n[[clients]]\ncount = 20000\n"
        "service_time = { kind = 'exponential', rate = 1.0 }\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "raysync.cli", "analyze", str(config), "--curve", "--max-rows=1"],
        capture_output=True,
        text=True,
        preexec_fn=_limit_address_space,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1].split()
    assert last[0] == "20000"
    # uniform identical clients: Lambda(C) = n mu C / (C + n - 1), E[D_i] = C - 1
    assert float(last[1]) == pytest.approx(20000 * 20000 / (20000 + 19999), rel=1e-5)
    assert float(last[2]) == pytest.approx(19999, rel=1e-5)
