"""MVA, Buzen and the brute-force Markov chain agree to 1e-9 on small random networks.

The brute force computes E[D_i] from a tagged-task absorbing chain (no arrival theorem,
no Little's law), so agreement validates the delay formulas themselves.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from raysync.queueing import ClosedNetwork, QueueingResult, analyze

RTOL = 1e-9
ATOL = 1e-12


def _assert_agree(a: QueueingResult, b: QueueingResult) -> None:
    np.testing.assert_allclose(a.throughput, b.throughput, rtol=RTOL)
    np.testing.assert_allclose(a.mean_queue_length, b.mean_queue_length, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(a.mean_relative_delay, b.mean_relative_delay, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(a.utilization, b.utilization, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(a.mean_sojourn_time, b.mean_sojourn_time, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(a.mean_in_transit, b.mean_in_transit, rtol=RTOL, atol=ATOL)
    for name in ("server_utilization", "server_queue_length"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None)
        if x is not None:
            np.testing.assert_allclose(x, y, rtol=RTOL, atol=ATOL)


@st.composite
def networks(draw: st.DrawFn, extensions: bool = False) -> ClosedNetwork:
    n = draw(st.integers(1, 3 if extensions else 4))
    c = draw(st.integers(1, 4 if extensions else 6))
    rates = st.floats(0.1, 10.0, allow_nan=False, allow_infinity=False)
    mu = draw(st.lists(rates, min_size=n, max_size=n))
    weights = np.array(draw(st.lists(st.floats(0.05, 1.0), min_size=n, max_size=n)))
    kwargs: dict[str, object] = {}
    if extensions:
        if draw(st.booleans()):
            kwargs["latency"] = draw(st.floats(0.05, 3.0))
        if draw(st.booleans()):
            delays = st.one_of(st.just(0.0), st.floats(0.05, 3.0))
            kwargs["client_latency"] = draw(st.lists(delays, min_size=n, max_size=n))
        if draw(st.booleans()):
            kwargs["server_rate"] = draw(rates)
    return ClosedNetwork(mu=mu, p=weights / weights.sum(), concurrency=c, **kwargs)  # type: ignore[arg-type]


@settings(derandomize=True, max_examples=60, deadline=None)
@given(networks())
def test_three_solvers_agree(net: ClosedNetwork) -> None:
    mva = analyze(net, method="mva")
    _assert_agree(mva, analyze(net, method="buzen"))
    _assert_agree(mva, analyze(net, method="bruteforce"))
    assert abs(mva.mean_staleness - (net.concurrency - 1)) < 1e-9 * net.concurrency


@settings(derandomize=True, max_examples=40, deadline=None)
@given(networks(extensions=True))
def test_three_solvers_agree_with_latency_and_server(net: ClosedNetwork) -> None:
    mva = analyze(net, method="mva")
    _assert_agree(mva, analyze(net, method="buzen"))
    _assert_agree(mva, analyze(net, method="bruteforce"))


def test_curves_agree() -> None:
    net = ClosedNetwork(
        mu=[1.0, 3.0, 0.7], p=[0.5, 0.3, 0.2], concurrency=5, latency=0.4, server_rate=6.0
    )
    results = [analyze(net, method=m, curve=True) for m in ("mva", "buzen", "bruteforce")]
    for other in results[1:]:
        for name in ("throughput_curve", "queue_length_curve", "relative_delay_curve"):
            np.testing.assert_allclose(
                getattr(results[0], name), getattr(other, name), rtol=RTOL, atol=ATOL
            )
