"""Tiered MVA equals the per-client solvers (identical clients have identical MVA values)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raysync.exceptions import ConfigError
from raysync.queueing import ClosedNetwork, analyze
from raysync.queueing.tiered import TieredNetwork, analyze_tiered


@st.composite
def tiered_networks(draw: st.DrawFn, max_clients: int = 12) -> TieredNetwork:
    tiers = draw(st.integers(1, 4))
    counts = np.array(draw(st.lists(st.integers(1, 4), min_size=tiers, max_size=tiers)))
    mu = np.array(draw(st.lists(st.floats(0.05, 50.0), min_size=tiers, max_size=tiers)))
    weights = np.array(draw(st.lists(st.floats(0.05, 5.0), min_size=tiers, max_size=tiers)))
    p = weights / float(np.dot(counts, weights))
    extras = draw(st.booleans())
    return TieredNetwork(
        counts=counts,
        mu=mu,
        p=p,
        concurrency=draw(st.integers(1, 30)),
        latency=draw(st.floats(0.0, 2.0)) if extras else 0.0,
        tier_latency=(
            np.array(draw(st.lists(st.floats(0.0, 2.0), min_size=tiers, max_size=tiers)))
            if extras
            else None
        ),
        server_rate=draw(st.floats(0.5, 100.0)) if extras else None,
    )


@settings(max_examples=150, deadline=None, derandomize=True)
@given(tiered_networks())
def test_tiered_equals_per_client_mva(net: TieredNetwork) -> None:
    tiered = analyze_tiered(net, curve=True)
    flat = analyze(net.to_closed_network(), method="mva", curve=True)
    assert tiered.throughput == pytest.approx(flat.throughput, rel=1e-9, abs=0)
    for name in ("client_throughput", "utilization", "mean_queue_length", "mean_relative_delay"):
        np.testing.assert_allclose(
            tiered.per_client(name), getattr(flat, name), rtol=1e-9, atol=1e-12, err_msg=name
        )
    assert tiered.mean_staleness == pytest.approx(flat.mean_staleness, rel=1e-9, abs=1e-12)
    assert flat.throughput_curve is not None and tiered.throughput_curve is not None
    np.testing.assert_allclose(tiered.throughput_curve, flat.throughput_curve, rtol=1e-9)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(tiered_networks(max_clients=6))
def test_tiered_equals_bruteforce_on_tiny_fleets(net: TieredNetwork) -> None:
    flat_net = net.to_closed_network()
    if flat_net.n_clients > 6 or net.concurrency > 6 or flat_net.has_extensions:
        flat_net = flat_net.with_concurrency(min(net.concurrency, 4))
        net = TieredNetwork(counts=net.counts, mu=net.mu, p=net.p, concurrency=flat_net.concurrency)
        flat_net = net.to_closed_network()
    exact = analyze(flat_net, method="bruteforce")
    tiered = analyze_tiered(net)
    assert tiered.throughput == pytest.approx(exact.throughput, rel=1e-9)
    np.testing.assert_allclose(
        tiered.per_client("mean_relative_delay"), exact.mean_relative_delay, rtol=1e-8, atol=1e-10
    )


def test_many_tiers_use_vectorised_path_and_agree() -> None:
    rng = np.random.default_rng(7)
    counts = rng.integers(1, 4, size=40)
    mu = rng.uniform(0.5, 20.0, size=40)
    w = rng.uniform(0.1, 1.0, size=40)
    net = TieredNetwork(counts=counts, mu=mu, p=w / np.dot(counts, w), concurrency=60)
    flat = analyze(net.to_closed_network())
    tiered = analyze_tiered(net)
    assert tiered.throughput == pytest.approx(flat.throughput, rel=1e-9)
    np.testing.assert_allclose(
        tiered.per_client("mean_relative_delay"), flat.mean_relative_delay, rtol=1e-9
    )


def test_closed_form_identical_clients() -> None:
    # n identical clients, rate mu, uniform p: G(K) = binom(n + K - 1, K) (1/(n mu))^K, so
    # Lambda = G(C-1)/G(C) = n mu C / (n + C - 1); by symmetry every delay is C - 1.
    n, mu, c = 1_000_000, 3.0, 5_000
    net = TieredNetwork(counts=[n], mu=[mu], p=[1.0 / n], concurrency=c)
    res = analyze_tiered(net)
    assert res.throughput == pytest.approx(n * mu * c / (n + c - 1), rel=1e-12)
    assert res.mean_relative_delay[0] == pytest.approx(c - 1, rel=1e-9)
    assert res.mean_staleness == pytest.approx(c - 1, rel=1e-9)


def test_from_clients_groups_identical_clients() -> None:
    mu = [1.0, 5.0, 1.0, 5.0, 5.0, 2.0]
    p = [0.1, 0.2, 0.1, 0.2, 0.2, 0.2]
    net, tier_of = TieredNetwork.from_clients(mu=mu, p=p, concurrency=9)
    assert net.n_tiers == 3 and net.n_clients == 6
    assert tier_of.tolist()[0] == tier_of.tolist()[2]
    res = analyze_tiered(net)
    flat = analyze(net.to_closed_network())
    direct = analyze(ClosedNetwork(mu=mu, p=p, concurrency=9))
    np.testing.assert_allclose(
        res.mean_relative_delay[tier_of], direct.mean_relative_delay, rtol=1e-9
    )
    assert res.throughput == pytest.approx(flat.throughput, rel=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"counts": [0, 2]}, "counts[0] must be >= 1, got 0"),
        ({"counts": [1.5, 2]}, "counts must be integers"),
        ({"mu": [1.0, -1.0]}, "mu[1] must be > 0, got -1.0"),
        ({"mu": [1.0, float("nan")]}, "mu[1] must be finite"),
        ({"p": [0.5, 0.5]}, "routing must sum to 1 over the fleet"),
        ({"p": [5e-324, 0.5]}, "p[0] must be >= 1e-300 (every client reachable, a normal"),
        ({"concurrency": 0}, "concurrency must be an integer >= 1, got 0"),
        ({"concurrency": True}, "concurrency must be an integer >= 1, got True"),
        ({"tier_latency": [0.0, -1.0]}, "tier_latency[1] must be >= 0"),
        ({"mu": [1.0]}, "mu must have one entry per tier: 2 tiers, got 1"),
    ],
)
def test_bad_input_one_clear_line(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {
        "counts": [2, 2],
        "mu": [1.0, 2.0],
        "p": [0.25, 0.25],
        "concurrency": 3,
    }
    base.update(kwargs)
    with pytest.raises(ConfigError) as info:
        TieredNetwork(**base)  # type: ignore[arg-type]
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("mu", "concurrency"),
    [([1e308, 1e308], 5), ([5e-300, 1e-300], 5), ([1e-300, 1e-300], 9), ([3e200, 1e200], 7)],
)
def test_rates_near_the_ends_of_float64_match_analyze(mu: list[float], concurrency: int) -> None:
    """Rates whose demands or throughput are near the float64 limits are solved in a
    rescaled time unit, as analyze() does: no inf, no nan, the same numbers (both solve the
    same MVA; before, 1e308 gave an infinite throughput and 1e-308 a nan)."""
    net = TieredNetwork(counts=[1, 1], mu=mu, p=[0.5, 0.5], concurrency=concurrency)
    res = analyze_tiered(net, curve=True)
    ref = analyze(net.to_closed_network(), curve=True)
    assert res.throughput == pytest.approx(ref.throughput, rel=1e-12)
    np.testing.assert_allclose(res.mean_relative_delay, ref.mean_relative_delay, rtol=1e-9)
    np.testing.assert_allclose(res.utilization, ref.utilization, rtol=1e-9)
    assert res.throughput_curve is not None and ref.throughput_curve is not None
    np.testing.assert_allclose(res.throughput_curve, ref.throughput_curve, rtol=1e-12)


@pytest.mark.parametrize(
    ("mu", "concurrency", "message"),
    [
        ([1e308, 1e308], 9, "throughput of this network is beyond the float64 range"),
        ([1e-320, 1.0], 3, "mu[0]=1e-320 is too small"),
    ],
)
def test_unrepresentable_results_are_one_line(
    mu: list[float], concurrency: int, message: str
) -> None:
    net = TieredNetwork(counts=[1, 1], mu=mu, p=[0.5, 0.5], concurrency=concurrency)
    with pytest.raises(ConfigError) as info:
        analyze_tiered(net)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("mu", [1e-308, 1e307])
def test_closed_form_at_the_ends_of_float64(mu: float) -> None:
    """Two identical clients, uniform p: Lambda = 2 mu C / (C + 1), every delay C - 1 (the
    closed form above). At mu = 1e-308 the demand 0.5 / mu overflowed the unscaled
    recursion into a nan; analyze() cannot serve as the reference there (its sojourn times
    are beyond float64), so the closed form is."""
    c = 9
    res = analyze_tiered(TieredNetwork(counts=[2], mu=[mu], p=[0.5], concurrency=c))
    assert res.throughput == pytest.approx(2 * mu * (c / (c + 1)), rel=1e-12)
    np.testing.assert_allclose(res.mean_relative_delay, [c - 1], rtol=1e-12)


def test_a_tier_transit_beyond_float64_is_refused_as_for_the_flat_network() -> None:
    import warnings

    kwargs = {"mu": [1.0, 2.0], "counts": [2, 3], "p": [0.2, 0.2], "concurrency": 4}
    message = (r"^the transit delay latency \+ tier_latency\[1\] = 1e\+308 \+ 1e\+308 "
               r"overflows float64")  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # was a numpy overflow warning and an inf Z
        with pytest.raises(ConfigError, match=message):
            TieredNetwork(latency=1e308, tier_latency=[0.0, 1e308], **kwargs)
        # the flat network's rule, word for word
        with pytest.raises(ConfigError, match=message.replace("tier_", "client_")):
            ClosedNetwork(mu=[1.0, 2.0], p=[0.5, 0.5], concurrency=4, latency=1e308,
                          client_latency=[0.0, 1e308])  # fmt: skip
    # finite sums stay allowed at the edge
    net = TieredNetwork(latency=8e307, tier_latency=[0.0, 8e307], **kwargs)
    assert np.isfinite(net.total_latency).all()
