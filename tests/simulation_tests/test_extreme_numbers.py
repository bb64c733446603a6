"""The simulator on extreme but valid inputs: finite, correct numbers or a clear refusal.

Rates near the ends of the float range are simulated in a power-of-two time unit
(:func:`raysync.simulation.engine.time_unit`); since multiplying by a power of two is
exact, a fleet whose rates are those of another times ``2**j`` must give the very same
sample path, with every time quantity scaled by exactly ``2**-j``. That is checked
bit for bit, and the unit-free statistics against the closed form of identical clients
(``Lambda = n mu C / (n + C - 1)``, ``E[D_i] = C - 1``). Runs that cannot be represented
(a throughput or a duration beyond 1.8e308, rates spanning more than one clock can
resolve, more completions than the simulator's limit, more model versions than memory)
are refused in one line naming the value and the rule.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from raysync.config import (
    AlgorithmConfig,
    ClientSpec,
    RoutingConfig,
    RunConfig,
    ServiceTimeSpec,
    SystemConfig,
)
from raysync.exceptions import ConfigError
from raysync.simulation import RunResult, simulate
from raysync.simulation import engine as engine_module
from raysync.simulation.engine import MAX_SIMULATED_COMPLETIONS, check_simulation, time_unit


def fleet(
    specs: list[ServiceTimeSpec],
    concurrency: int,
    *,
    updates: int | None = 20_000,
    budget: float | None = None,
    p: tuple[float, ...] | None = None,
    train: bool = False,
) -> SystemConfig:
    n = len(specs)
    return SystemConfig(
        clients=tuple(ClientSpec(service_time=s) for s in specs),
        concurrency=concurrency,
        routing=RoutingConfig(kind="fixed", p=p or tuple([1.0 / n] * n)),
        algorithm=AlgorithmConfig(name="generalized_asyncsgd", lr=0.05, batch_size=16),
        run=RunConfig(num_updates=updates, time_budget=budget, train=train),
        seed=0,
    )


def exp(rate: float) -> ServiceTimeSpec:
    return ServiceTimeSpec(kind="exponential", rate=rate)


def _all_finite(res: RunResult) -> None:
    for name in (
        "throughput",
        "mean_staleness",
        "elapsed",
        "client_throughput",
        "utilization",
        "mean_queue_length",
        "mean_relative_delay",
        "times",
    ):
        assert np.all(np.isfinite(np.asarray(getattr(res, name)))), name


# 2**j with j = +-990: rates from ~1e-298 to ~1e298 (times an ordinary rate of 1.5), near
# both ends of the accepted [1e-300, 1e300].
@pytest.mark.parametrize("j", [-990, -200, 200, 990])
def test_power_of_two_rescaled_fleet_is_the_same_run(j: int) -> None:
    base = fleet([exp(1.5), exp(1.5), exp(3.0)], 4)
    scaled = fleet([exp(math.ldexp(r, j)) for r in (1.5, 1.5, 3.0)], 4)
    assert time_unit(base) == 1.0 and time_unit(scaled) != 1.0
    a, b = simulate(base), simulate(scaled)
    _all_finite(b)
    np.testing.assert_array_equal(a.mean_relative_delay, b.mean_relative_delay)
    np.testing.assert_array_equal(a.mean_queue_length, b.mean_queue_length)
    np.testing.assert_array_equal(a.utilization, b.utilization)
    assert b.throughput == math.ldexp(a.throughput, j)
    assert b.elapsed == math.ldexp(a.elapsed, -j)
    np.testing.assert_array_equal(b.times, np.ldexp(a.times, -j))


@pytest.mark.parametrize("rate", [1e-300, 1e-9, 1e9, 1e300])
def test_identical_clients_at_extreme_rates_match_the_closed_form(rate: float) -> None:
    n, c = 3, 4
    res = simulate(fleet([exp(rate)] * n, c))
    _all_finite(res)
    lam = rate * (n * c / (n + c - 1))
    lo, hi = res.throughput_ci
    assert lo <= lam <= hi, (lo, lam, hi)
    for i in range(n):
        dlo, dhi = res.relative_delay_ci[i]
        assert dlo <= c - 1 <= dhi, (i, dlo, dhi)
    assert res.mean_staleness == pytest.approx(c - 1, rel=1e-3)
    assert res.warnings == ()


def test_rates_nine_orders_apart() -> None:
    """mu = (1e-9, 1e9): the slow client holds the tasks, the fast one is never stale."""
    res = simulate(fleet([exp(1e-9), exp(1e9)], 4, p=(0.5, 0.5)))
    _all_finite(res)
    # Theory (MVA): Lambda = 2e-9 (1 - tiny), E[D] = (6, ~1e-17): all tasks at client 0.
    assert res.throughput == pytest.approx(2e-9, rel=0.05, abs=0)
    assert res.mean_relative_delay[0] == pytest.approx(6.0, rel=0.02)
    assert res.mean_relative_delay[1] == 0.0
    assert res.mean_staleness == pytest.approx(3.0, rel=1e-3)


def test_one_client_huge_concurrency_is_exact() -> None:
    """C = 100,000 at one client: every task dispatched after the start waits C - 1."""
    c = 100_000
    cfg = fleet([exp(1.0)], c, updates=4 * c, p=(1.0,))
    res = simulate(cfg, warmup_fraction=0.5)  # the first C completions are the start-up
    assert res.warnings == ()
    assert res.mean_relative_delay[0] == c - 1 and res.relative_delay_std[0] == 0.0
    assert res.mean_queue_length[0] == pytest.approx(c, rel=1e-12)  # time integral / time
    assert res.utilization[0] == pytest.approx(1.0, rel=1e-12)
    short = simulate(cfg)  # a 10 % warm-up ends inside the start-up transient
    assert any("start-up transient" in w for w in short.warnings)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (
            fleet([exp(1e-300)] * 2, 2, updates=MAX_SIMULATED_COMPLETIONS),
            r"run.num_updates = 10,000,000,000 takes at least .* beyond the float range "
            r"\(1.8e308 s\)",
        ),
        (
            fleet([exp(1e-300), exp(1e300)], 2),
            r"clients\[1\].service_time.rate = 1e\+300 and clients\[0\].service_time.rate = "
            r"1e-300 are too far apart for the simulator's clock",
        ),
        (
            fleet([exp(1.0)] * 2, 2, updates=None, budget=1e300),
            r"run.time_budget = 1e\+300 s .* needs at least .* limit of 1e\+10",
        ),
        (
            fleet([exp(1.0)] * 2, 2, updates=MAX_SIMULATED_COMPLETIONS + 1),
            r"run.num_updates = 10,000,000,001 \(x B = 1\) needs at least",
        ),
        (  # the mean (5e299 s) sets the clock; the shortest duration underflowed in it
            fleet([exp(1.0), ServiceTimeSpec(kind="trace", durations=(1e-300, 1e300))], 2),
            r"clients\[1\].service_time.durations \(shortest\) = 1e-300 s and "
            r"clients\[1\].service_time.durations \(mean 5e\+299 s\) are too far apart",
        ),
        (
            fleet(
                [
                    exp(1e-300),
                    ServiceTimeSpec(
                        kind="schedule",
                        segments=(
                            ServiceTimeSpec(kind="exponential", rate=1.0, until=5.0),
                            ServiceTimeSpec(kind="deterministic", mean=1e-300),
                        ),
                    ),
                ],
                2,
            ),
            r"clients\[1\].service_time.segments\[1\].mean = 1e-300 s and "
            r"clients\[0\].service_time.rate = 1e-300 are too far apart",
        ),
    ],
    ids=["duration-overflow", "span", "budget", "num-updates", "trace-span", "schedule-span"],
)
def test_unrepresentable_runs_are_refused_in_one_line(config: SystemConfig, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        simulate(config)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("updates", "budget", "every", "count"),
    [
        (None, 10.0, 1e-300, r"1e\+301"),  # the evaluation clock would never advance
        (None, 10.0, 1e-20, r"1e\+21"),  # t + every == t in floating point
        (200, None, 1e-300, r"\d\.\d+e\+30\d"),  # the run's length from its updates
        (None, 10.0, 9e-6, r"1\.11e\+06"),  # just over the limit
    ],
)
def test_more_evaluations_than_the_limit_are_refused(
    updates: int | None, budget: float | None, every: float, count: str
) -> None:
    base = fleet([exp(1.0)] * 2, 2, updates=updates, budget=budget, train=True)
    config = base.replace(
        run=RunConfig(
            num_updates=updates, time_budget=budget, train=True, eval_every_updates=None,
            eval_every_seconds=every,
        )
    )  # fmt: skip
    with pytest.raises(ConfigError, match=rf"run.eval_every_seconds = .* asks for up to {count} "
                       r"evaluations .* limit of 1e\+06") as info:  # fmt: skip
        simulate(config)
    assert "\n" not in str(info.value)


def test_huge_but_harmless_time_fields_run() -> None:
    """An evaluation interval longer than the run evaluates at the start and the end only."""
    config = fleet([exp(1.0)] * 2, 2, updates=None, budget=5.0, train=True)
    config = config.replace(
        run=RunConfig(
            time_budget=5.0, train=True, eval_every_updates=None, eval_every_seconds=1e308
        )
    )
    res = simulate(config)
    assert list(res.times) == [0.0, 5.0]


def test_huge_lognormal_cv_is_flagged_not_reported_as_steady_state() -> None:
    cv = 1e6
    res = simulate(fleet([ServiceTimeSpec(kind="lognormal", mean=1.0, cv=cv)] * 2, 2))
    _all_finite(res)
    assert any("service times too variable" in w and "cv = 1e+06" in w for w in res.warnings)
    # An ordinary cv over the same run length raises no such warning.
    calm = simulate(fleet([ServiceTimeSpec(kind="lognormal", mean=1.0, cv=3.0)] * 2, 2))
    assert not any("too variable" in w for w in calm.warnings)


@pytest.mark.parametrize(
    "spec",
    [
        exp(1e200),
        exp(1e300),
        ServiceTimeSpec(kind="deterministic", mean=1e-200),
        ServiceTimeSpec(kind="lognormal", mean=1e-300, cv=1.0),
        ServiceTimeSpec(kind="trace", durations=(1e-300, 3e-300)),
    ],
    ids=["exp-1e200", "exp-1e300", "det-1e-200", "lognormal-1e-300", "trace-1e-300"],
)
def test_a_very_fast_client_beside_an_ordinary_one_runs(spec: ServiceTimeSpec) -> None:
    """Means whose square underflows to 0 (< 1e-154 s) next to a rate-1 client: the fast
    client holds no task for long, so it is never stale and the run stays finite."""
    res = simulate(fleet([exp(1.0), spec], 3, updates=2_000))
    _all_finite(res)
    assert res.mean_relative_delay[1] == 0.0
    assert not any("too variable" in w for w in res.warnings)


def test_cv_of_a_tiny_lognormal_mean_is_exact() -> None:
    """cv is std / mean, never variance / mean**2 (0 for a mean of 1e-200 s)."""
    res = simulate(fleet([ServiceTimeSpec(kind="lognormal", mean=1e-200, cv=1e6)] * 2, 2))
    _all_finite(res)
    assert any("too variable" in w and "cv = 1e+06" in w for w in res.warnings)


def test_largest_lognormal_cv_stays_finite() -> None:
    # The largest cv at the largest mean it allows (std = mean * cv = 1e300 s)
    res = simulate(fleet([ServiceTimeSpec(kind="lognormal", mean=1e200, cv=1e100)] * 2, 2))
    _all_finite(res)
    assert res.warnings  # and says the numbers are not steady-state estimates


def test_training_refuses_more_model_versions_than_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 20 kB: room for the 100 tasks' records (16 kB), not for 51 versions of 2.6 kB
    monkeypatch.setattr(engine_module, "_memory_limit", lambda: 20_000)
    cfg = fleet([exp(1.0)] * 2, 100, updates=50, train=True)
    with pytest.raises(ConfigError, match=r"concurrency = 100 keeps up to 51 model versions"):
        simulate(cfg)


def test_version_check_takes_the_update_count_from_the_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 1,000 bytes per version, 10 kB allowed: 100 tasks in flight need 101 versions
    # without an update limit, 51 with 50 updates, 6 with 5 (min(C, updates) + 1).
    monkeypatch.setattr(engine_module, "_memory_limit", lambda: 10_000)
    check = engine_module.check_version_memory
    with pytest.raises(ConfigError, match=r"keeps up to 51 model versions of 1,000 bytes"):
        check(fleet([exp(1.0)] * 2, 100, updates=50, train=True), 250)
    check(fleet([exp(1.0)] * 2, 100, updates=5, train=True), 250)  # 6 kB fit
    timed = fleet([exp(1.0)] * 2, 100, updates=None, budget=10.0, train=True)
    with pytest.raises(ConfigError, match=r"keeps up to 101 model versions"):
        check(timed, 250)
    with pytest.raises(ConfigError, match=r"keeps up to 101 model versions .* the server"):
        check(fleet([exp(1.0)] * 2, 100, updates=5, train=True), 250, math.inf, "the server")


def test_utilization_interval_of_a_saturated_client_stays_in_the_unit_interval() -> None:
    # The slow client (rate 0.5 against 1, C = 4) is busy ~98% of the time and its batch
    # estimates scatter, so the symmetric t-interval's upper end was 1.006 before it was
    # clipped (seed 0, 400 updates). Only the bound that cannot hold is cut: the other
    # client's interval keeps its width.
    res = simulate(fleet([exp(0.5), exp(1.0)], 4, updates=400, p=(0.5, 0.5)))
    lo, hi = np.asarray(res.utilization_ci).T
    assert np.all((0.0 <= lo) & (lo <= hi) & (hi <= 1.0)), res.utilization_ci
    assert res.utilization[0] > 0.95
    assert hi[0] == 1.0
    assert 0.0 < lo[1] < res.utilization[1] < hi[1] < 1.0


def test_a_busy_time_stamped_past_the_window_reads_as_fully_busy_not_above() -> None:
    # On Ray an executor's busy spans and the server's window are stamped by different
    # clocks: one client busy 10.02 s in a 10 s window printed util 1.002. A row is
    # (completions, time, version, count, sum_delay, sum_delay2, departures, arrivals,
    # queue lengths, busy started, in-service heap).
    from raysync.simulation.statistics import batch_statistics

    def row(c: int, t: float, busy: list[float]) -> tuple[object, ...]:
        return (c, t, c, [c / 2, c / 2], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0],
                [0, 0], busy, [])

    rows = [row(0, 0.0, [0.0, 0.0]), row(100, 10.0, [10.02, 4.0])]
    stats = batch_statistics(rows, rows[-1], num_clients=2, warmup_fraction=0.0,
                             num_batches=30, confidence=0.99)
    assert stats["utilization"].tolist() == [1.0, pytest.approx(0.4)]


def test_a_run_whose_every_completion_is_warm_up_is_refused_by_the_check_not_the_api() -> None:
    # One completion, dropped by the 10 % warm-up (ceil(0.1) = 1): every statistic of the
    # queues is NaN, which the simulate command refused after the run. The command (and
    # validate) now refuse it first; the API still runs it (its model is trained: a
    # one-update run is how a divergence in the first update is seen).
    one = fleet([exp(1.0)] * 2, 2, updates=1)
    with pytest.raises(ConfigError, match=r"^run.num_updates = 1 \(x B = 1\) is 1 task "):
        check_simulation(one)
    result = simulate(one)
    assert result.num_updates == 1 and math.isnan(result.throughput)
    check_simulation(fleet([exp(1.0)] * 2, 2, updates=2))
    assert math.isfinite(simulate(fleet([exp(1.0)] * 2, 2, updates=2)).throughput)


def _timed(laws: list[dict[str, Any]], budget: float, joins: list[float] | None = None) -> Any:
    from raysync.config import ClientSpec, RunConfig, ServiceTimeSpec, SystemConfig

    clients = tuple(ClientSpec(service_time=ServiceTimeSpec(**law), join_time=j)
                    for law, j in zip(laws, joins or [0.0] * len(laws), strict=True))
    return SystemConfig(clients=clients, concurrency=2,
                        run=RunConfig(time_budget=budget, train=False))


@pytest.mark.parametrize(("laws", "joins", "budget", "earliest", "who"), [
    # every service lasts longer than the budget
    ([{"kind": "deterministic", "mean": 5.0}] * 2, None, 1.0, 5.0, 0),
    # the fastest trace duration is 2 s
    ([{"kind": "trace", "durations": [3.0, 2.0, 9.0]}, {"kind": "deterministic", "mean": 7.0}],
     None, 1.5, 2.0, 0),
    # an exponential client could finish at once, but it joins only at t = 3
    ([{"kind": "deterministic", "mean": 5.0}, {"kind": "exponential", "rate": 1.0}],
     [0.0, 3.0], 2.5, 3.0, 1),
])
def test_a_time_budget_no_task_can_finish_in_is_refused_before_the_run(
    laws: list[dict[str, Any]], joins: list[float] | None, budget: float, earliest: float,
    who: int,
) -> None:
    # The simulator itself, run anyway, completes nothing in such a budget (the independent
    # check). A budget just past the earliest end passes the check (a trace or exponential
    # law may still take longer on the draws a run makes; the command says so after it).
    config = _timed(laws, budget, joins)
    with pytest.raises(ConfigError, match=(
            rf"^run.time_budget \(--time-budget\) = {budget:g} s ends before any task can be "
            rf"completed: the earliest a client can finish one is {earliest:g} s "
            rf"\(clients\[{who}\], ")):
        check_simulation(config)
    assert simulate(config).num_completions == 0
    check_simulation(_timed(laws, earliest * 1.001, joins))
    assert simulate(_timed(laws, earliest + 50.0, joins)).num_completions >= 1
