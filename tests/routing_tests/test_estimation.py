"""OnlineRateEstimator: unbiasedness, interval coverage, forgetting, prior, refusals.

Statistical checks use fixed seeds and R independent replicates (one client per replicate);
tolerances are 5 standard errors of the replicate mean (or of the coverage proportion,
``sqrt(c (1 - c) / R)``), so a correct estimator fails with probability below 1e-6.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from raysync.exceptions import CheckpointError, ConfigError
from raysync.routing import OnlineRateEstimator

Z = 5.0
R = 2000  # replicates


def _fed(method: str, samples: np.ndarray, **kwargs: object) -> OnlineRateEstimator:
    """One client per row of ``samples`` (shape ``(R, N)``)."""
    est = OnlineRateEstimator(samples.shape[0], method=method, prior_weight=0.0, **kwargs)
    for i, row in enumerate(samples):
        est.observe_many(i, row)
    return est


def test_exponential_rate_is_unbiased_and_intervals_cover() -> None:
    mu, n = 2.5, 20
    samples = np.random.default_rng(11).exponential(1.0 / mu, size=(R, n))
    est = _fed("exponential", samples, confidence=0.9)
    rates = est.rates()
    # (N - 1) / S is exactly unbiased; the MLE N / S would be N / (N - 1) = 5 % high here,
    # about 9 standard errors away (sd of the estimate ~ mu / sqrt(N - 2) ~ 0.59).
    se = rates.std(ddof=1) / math.sqrt(R)
    assert abs(rates.mean() - mu) <= Z * se
    assert abs(n / (n - 1) * mu - mu) > Z * se  # the test can tell the biased MLE apart
    covered = np.mean([e.covers(mu) for e in est.estimates()])
    assert abs(covered - 0.9) <= Z * math.sqrt(0.9 * 0.1 / R)


def test_lognormal_mean_duration_unbiased_and_t_interval_covers() -> None:
    mean, cv, n = 0.4, 1.0, 200
    s2 = math.log1p(cv * cv)
    samples = np.random.default_rng(12).lognormal(math.log(mean) - s2 / 2, math.sqrt(s2), (R, n))
    est = _fed("mean", samples, confidence=0.95)
    means = est.mean_durations()
    assert abs(means.mean() - mean) <= Z * means.std(ddof=1) / math.sqrt(R)
    rates = est.rates()
    # 1 / mean is consistent with delta-method bias cv^2 mu / N (1.25 % here).
    mu = 1.0 / mean
    bias = cv * cv * mu / n
    assert abs(rates.mean() - mu - bias) <= Z * rates.std(ddof=1) / math.sqrt(R) + 0.5 * bias
    covered = np.mean([e.covers(mu) for e in est.estimates()])
    # The t interval is asymptotic: with skewed log-normal times its coverage error is
    # O(1 / sqrt(N)); allow 0.03 on top of the binomial tolerance at N = 200.
    assert abs(covered - 0.95) <= Z * math.sqrt(0.95 * 0.05 / R) + 0.03


def test_window_forgets_exactly() -> None:
    est = OnlineRateEstimator(1, window=50, prior_weight=0.0)
    rng = np.random.default_rng(3)
    est.observe_many(0, rng.exponential(1.0, 500))
    est.observe_many(0, rng.exponential(0.2, 50))  # rate 5 now; the window holds only these
    e = est.estimate(0)
    assert e.num_samples == 50
    assert e.covers(5.0) and not e.covers(1.0)


def test_half_life_tracks_a_change() -> None:
    est = OnlineRateEstimator(1, half_life=20, prior_weight=0.0)
    rng = np.random.default_rng(4)
    est.observe_many(0, rng.exponential(1.0, 2000))
    est.observe_many(0, rng.exponential(0.2, 300))
    assert 3.5 < est.rates()[0] < 7.0
    # effective sample size of weights 2^(-k/h): (1 + l) / (1 - l), l = 2^(-1/h)
    lam = 2 ** (-1 / 20)
    assert est.counts()[0] == pytest.approx((1 + lam) / (1 - lam), rel=1e-6)


def test_prior_for_unseen_clients() -> None:
    fixed = OnlineRateEstimator(3, prior_rate=[1.0, 2.0, 3.0])
    assert fixed.rates() == pytest.approx([1.0, 2.0, 3.0])
    e = fixed.estimate(2)
    assert e.lower < 3.0 < e.upper and e.num_samples == 0
    pooled = OnlineRateEstimator(3, prior_weight=0.0)
    assert pooled.rates() == pytest.approx([1.0, 1.0, 1.0])  # nothing seen yet
    pooled.observe_many(0, [0.25] * 8)
    assert pooled.rates()[1] == pytest.approx(4.0)  # pooled rate stands for unseen ones
    assert pooled.estimate(1).upper == math.inf


def test_prior_leaves_a_full_window_so_fast_clients_are_not_biased() -> None:
    """A pooled prior 3.7x slower than the client (a fast client in a 1/5/25 fleet) kept for
    ever would leave N / (S + 1 / mu0) about 7 % low with a window of 50 (SE of the mean
    over R replicates ~ mu / sqrt(48 R) = 0.32 %, so 5 SE = 1.6 % tells the two apart);
    forgotten once the window is full, the estimate is the unbiased (N - 1) / S."""
    mu, mu0, w = 25.0, 25.0 / 3.7, 50
    samples = np.random.default_rng(21).exponential(1.0 / mu, size=(R, w + 10))
    est = OnlineRateEstimator(R, window=w, prior_rate=mu0, prior_weight=1.0)
    for i, row in enumerate(samples):
        est.observe_many(i, row)
    assert np.all(est.prior_weights() == 0.0)
    rates = est.rates()
    se = rates.std(ddof=1) / math.sqrt(R)
    assert abs(rates.mean() - mu) <= Z * se
    kept = w / (samples[:, -w:].sum(axis=1) + 1.0 / mu0)  # the prior kept for ever
    assert mu - kept.mean() > Z * se
    # Before the window is full the prior still counts: N / (S + 1 / mu0).
    young = OnlineRateEstimator(1, window=w, prior_rate=mu0)
    young.observe_many(0, samples[0, : w - 1])
    assert young.prior_weights()[0] == 1.0
    assert young.rates()[0] == pytest.approx((w - 1) / (samples[0, : w - 1].sum() + 1 / mu0))


def test_half_life_discounts_the_prior_per_duration() -> None:
    h, n0, mu0 = 10.0, 2.0, 0.5
    lam = 2 ** (-1 / h)
    durations = np.random.default_rng(22).exponential(0.2, 37)
    est = OnlineRateEstimator(1, half_life=h, prior_rate=mu0, prior_weight=n0)
    est.observe_many(0, durations)
    weight = n0 * lam**durations.size
    assert est.prior_weights()[0] == pytest.approx(weight, rel=1e-9)
    discount = lam ** np.arange(durations.size)[::-1]
    count, total = discount.sum(), float(discount @ durations)
    eff = count**2 / float((discount**2).sum())
    a, b = eff + weight, total * eff / count + weight / mu0
    assert est.rates()[0] == pytest.approx((a - 1) / b, rel=1e-9)
    assert OnlineRateEstimator(1, prior_weight=n0).prior_weights()[0] == n0  # no forgetting


def test_state_round_trip() -> None:
    a = OnlineRateEstimator(2, window=5)
    a.observe_many(1, [0.5, 0.7, 0.1])
    b = OnlineRateEstimator(2, window=5)
    b.load_state_dict(a.state_dict())
    for x in (0.3, 0.9, 0.2):
        a.observe(1, x)
        b.observe(1, x)
    assert np.array_equal(a.rates(), b.rates())
    with pytest.raises(CheckpointError, match="another fleet"):
        OnlineRateEstimator(3, window=5).load_state_dict(a.state_dict())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_clients": 0}, r"num_clients must be an integer >= 1, got 0"),
        ({"num_clients": 2, "method": "median"}, r"method must be one of .* got 'median'"),
        ({"num_clients": 2, "window": 1}, r"window must be an integer >= 2, got 1"),
        ({"num_clients": 2, "half_life": -3.0}, r"half_life must be a finite number > 0"),
        ({"num_clients": 2, "window": 5, "half_life": 3.0}, r"at most one of window"),
        ({"num_clients": 2, "prior_rate": [1.0, -2.0]}, r"prior_rate\[1\] must be .* -2\.0"),
        ({"num_clients": 2, "prior_rate": [1.0, 2.0, 3.0]}, r"one per client \(n=2\)"),
        ({"num_clients": 2, "prior_weight": -1.0}, r"prior_weight must be a finite number >= 0"),
        ({"num_clients": 2, "confidence": 1.0}, r"confidence must be in \(0, 1\)"),
    ],
)
def test_bad_arguments_one_line(kwargs: dict[str, object], match: str) -> None:
    n = kwargs.pop("num_clients")
    with pytest.raises(ConfigError, match=match) as info:
        OnlineRateEstimator(n, **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_bad_observations() -> None:
    est = OnlineRateEstimator(2)
    with pytest.raises(ConfigError, match=r"client must be in \[0, 2\), got 2"):
        est.observe(2, 1.0)
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ConfigError, match="finite time > 0"):
            est.observe(0, bad)
    assert est.observations == 0


def test_unpickled_from_read_only_buffers_still_learns() -> None:
    """Ray hands numpy arrays over zero-copy and read-only (pickle protocol 5 buffers)."""
    import pickle

    est = OnlineRateEstimator(3, window=5, prior_rate=[1.0, 2.0, 3.0])
    est.observe(0, 0.5)
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(est, protocol=5, buffer_callback=buffers.append)
    assert buffers  # the statistics travel out of band, as in Ray's object store
    frozen = [memoryview(bytes(b.raw())) for b in buffers]  # read-only views
    copy = pickle.loads(data, buffers=frozen)
    copy.observe(0, 0.25)
    copy.observe(2, 1.0)
    est.observe(0, 0.25)
    est.observe(2, 1.0)
    assert np.array_equal(copy.rates(), est.rates())
