"""Contract test suites (Optuna-style) for routers, strategies, service times and sinks.

Subclass a contract in a ``Test*`` class and implement its abstract factory; pytest then
runs every ``test_*`` method against the implementation. All checks use fixed seeds and
tolerances derived from the sample size (about 5 standard errors), so they are
deterministic and do not flake. This module imports pytest: import it from tests only.
"""

from __future__ import annotations

import abc
import copy
import math
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from raysync.monitoring._base import MetricsSink
from raysync.routing._base import BaseRouter
from raysync.simulation.service_times import BaseServiceTime
from raysync.strategies._base import BaseStrategy, ClientResult

__all__ = ["MetricsSinkContract", "RouterContract", "ServiceTimeContract", "StrategyContract"]

#: Number of standard errors allowed in statistical checks. With a fixed seed a check is
#: deterministic; 5 sigma keeps a correct implementation's failure probability per check
#: below 1e-6 for any seed, so changing seeds does not introduce flakes.
Z_SCORE = 5.0


class _GlobalRNGGuard:
    """Asserts that the legacy global numpy RNG state is left untouched."""

    def __enter__(self) -> _GlobalRNGGuard:
        self._state = np.random.get_state()
        return self

    def __exit__(self, *exc: object) -> None:
        after = np.random.get_state()
        assert all(
            np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b
            for a, b in zip(self._state, after, strict=True)
        ), "the component touched numpy's global RNG state"


# --------------------------------------------------------------------------- routers


class RouterContract(abc.ABC):
    """Contract every :class:`~raysync.routing.BaseRouter` must satisfy.

    Subclasses implement :meth:`make_router`; they may override :attr:`num_clients` and
    :meth:`concurrencies` (e.g. return-to-sender needs ``C = n``).
    """

    num_clients: int = 5
    seed: int = 12345
    #: Routes drawn for the frequency check.
    num_routes: int = 200_000

    @abc.abstractmethod
    def make_router(self, num_clients: int) -> BaseRouter:
        """Return a fresh, unbound router for ``num_clients`` clients."""

    def concurrencies(self, num_clients: int) -> list[int]:
        """Concurrencies ``C`` the router must accept in :meth:`initial_clients`."""
        return [1, num_clients, 2 * num_clients + 1]

    def _bound(self, seed: int | None = None) -> BaseRouter:
        router = self.make_router(self.num_clients)
        router.bind(self.num_clients, np.random.default_rng(self.seed if seed is None else seed))
        return router

    def _run(self, router: BaseRouter, concurrency: int, steps: int) -> list[int]:
        """Initial clients followed by ``steps`` routes, finishing tasks in FIFO order."""
        tasks = list(router.initial_clients(concurrency))
        out = list(tasks)
        for step in range(steps):
            finished = tasks[step % len(tasks)]
            nxt = router.route(finished)
            tasks[step % len(tasks)] = nxt
            out.append(nxt)
        return out

    def _route_chain(self, router: BaseRouter, start: int, steps: int) -> list[int]:
        out = []
        client = start
        for _ in range(steps):
            client = router.route(client)
            out.append(client)
        return out

    def test_initial_clients_have_length_c_and_valid_ids(self) -> None:
        """initial_clients(C) returns C valid client ids for every accepted C."""
        for concurrency in self.concurrencies(self.num_clients):
            clients = self._bound().initial_clients(concurrency)
            assert len(clients) == concurrency
            for client in clients:
                assert isinstance(client, int | np.integer)
                assert 0 <= client < self.num_clients

    def test_route_returns_valid_ids(self) -> None:
        """route() always returns a client id in [0, n)."""
        router = self._bound()
        concurrency = self.concurrencies(self.num_clients)[0]
        for client in self._run(router, concurrency, 5_000):
            assert isinstance(client, int | np.integer)
            assert 0 <= client < self.num_clients

    def test_deterministic_under_same_seed(self) -> None:
        """Two routers bound to generators with the same seed route identically."""
        concurrency = self.concurrencies(self.num_clients)[-1]
        first = self._run(self._bound(seed=7), concurrency, 10_000)
        second = self._run(self._bound(seed=7), concurrency, 10_000)
        assert first == second

    def test_does_not_touch_global_rng(self) -> None:
        """Routing draws only from the bound generator, never numpy's global RNG."""
        with _GlobalRNGGuard():
            self._run(self._bound(), self.concurrencies(self.num_clients)[0], 1_000)

    def test_state_dict_round_trip_reproduces_future(self) -> None:
        """Restoring a (pickled) state_dict replays exactly the same future routes."""
        concurrency = self.concurrencies(self.num_clients)[0]
        router = self._bound()
        tasks = router.initial_clients(concurrency)
        # Route a few (not a round number) so a pre-drawn block is partially consumed.
        last = self._route_chain(router, tasks[0], 37)[-1]
        state = router.state_dict()
        pickled = pickle.dumps(state)
        future = self._route_chain(router, last, 10_000)
        # Same object, restored: the state must be a snapshot, not a live view.
        router.load_state_dict(state)
        assert self._route_chain(router, last, 10_000) == future
        # A fresh router bound to another generator, restored from the pickled state.
        fresh = self._bound(seed=self.seed + 1)
        fresh.load_state_dict(pickle.loads(pickled))
        assert self._route_chain(fresh, last, 10_000) == future

    def test_routing_probabilities_simplex_or_none(self) -> None:
        """routing_probabilities() is None or a strictly positive vector summing to 1."""
        p = self._bound().routing_probabilities()
        if p is None:
            return
        p = np.asarray(p)
        assert p.shape == (self.num_clients,)
        assert np.all(np.isfinite(p)) and np.all(p > 0)
        assert math.isclose(float(p.sum()), 1.0, abs_tol=1e-9)

    def test_route_frequencies_match_probabilities(self) -> None:
        """Empirical route frequencies match p within 5 binomial standard deviations."""
        router = self._bound()
        p = router.routing_probabilities()
        if p is None:
            pytest.skip("not a random routing (routing_probabilities() is None)")
        p = np.asarray(p, dtype=np.float64)
        n = self.num_routes
        routes = self._route_chain(router, 0, n)
        counts = np.bincount(np.asarray(routes), minlength=self.num_clients)
        # Each count is Binomial(n, p_i): allow Z_SCORE standard deviations (+1 for
        # discreteness). With n = 200k and p_i >= 0.05 the band is about +-1% of n p_i.
        tolerance = Z_SCORE * np.sqrt(n * p * (1 - p)) + 1
        assert np.all(np.abs(counts - n * p) <= tolerance), (counts / n, p)

    def test_use_before_bind_raises(self) -> None:
        """Using a router before bind() raises RuntimeError."""
        router = self.make_router(self.num_clients)
        with pytest.raises(RuntimeError):
            router.initial_clients(self.concurrencies(self.num_clients)[0])


# -------------------------------------------------------------------------- strategies


class StrategyContract(abc.ABC):
    """Contract every :class:`~raysync.strategies.BaseStrategy` must satisfy.

    Subclasses implement :meth:`make_strategy`; they may override
    :meth:`routing_probabilities` (default: a non-uniform ``p``) to bind with another
    routing.
    """

    num_clients: int = 4
    dim: int = 13
    seed: int = 2024
    #: Results fed before requiring that at least one updated the model.
    max_results_per_update: int = 64

    @abc.abstractmethod
    def make_strategy(self) -> BaseStrategy:
        """Return a fresh, unbound strategy."""

    def routing_probabilities(self, num_clients: int) -> np.ndarray | None:
        """The ``p`` passed to :meth:`~raysync.strategies.BaseStrategy.bind`."""
        weights = np.arange(1, num_clients + 1, dtype=np.float64)
        return weights / weights.sum()

    def _bound(self) -> BaseStrategy:
        strategy = self.make_strategy()
        strategy.bind(self.num_clients, self.routing_probabilities(self.num_clients))
        return strategy

    def _params(self, rng: np.random.Generator) -> np.ndarray:
        params = rng.normal(size=self.dim).astype(np.float32)
        params.setflags(write=False)
        return params

    def _results(
        self, strategy: BaseStrategy, rng: np.random.Generator, count: int, start: int = 0
    ) -> Iterator[ClientResult]:
        """Random results with staleness 0..10 at random clients, versions from ``start``."""
        del strategy
        for j in range(count):
            current = start + 20 + j
            payload = rng.normal(size=self.dim).astype(np.float32)
            payload.setflags(write=False)
            yield ClientResult(
                task_id=start + j,
                client_id=int(rng.integers(self.num_clients)),
                base_version=current - int(rng.integers(0, 11)),
                current_version=current,
                payload=payload,
                loss=1.0,
                num_samples=8,
            )

    def _feed(
        self, strategy: BaseStrategy, params: np.ndarray, results: Iterator[ClientResult]
    ) -> tuple[np.ndarray, list[np.ndarray | None]]:
        outputs: list[np.ndarray | None] = []
        for result in results:
            new = strategy.apply(params, result)
            outputs.append(new)
            if new is not None:
                new.setflags(write=False)
                params = new
        return params, outputs

    def test_client_work_is_valid(self) -> None:
        """client_work() describes a valid task."""
        work = self._bound().client_work()
        assert work.kind in ("gradient", "params", "delta")
        assert isinstance(work.batch_size, int) and work.batch_size >= 1
        assert isinstance(work.local_steps, int) and work.local_steps >= 1
        assert math.isfinite(work.local_lr) and work.local_lr >= 0
        if work.kind != "gradient":
            assert work.local_lr > 0

    def test_apply_returns_new_float32_array_or_none(self) -> None:
        """apply() returns None or a new float32 array and never mutates its inputs."""
        rng = np.random.default_rng(self.seed)
        strategy = self._bound()
        params = self._params(rng)
        updates = 0
        for result in self._results(strategy, rng, self.max_results_per_update):
            before = params.copy()
            new = strategy.apply(params, result)
            np.testing.assert_array_equal(params, before)  # input not mutated
            if new is None:
                continue
            updates += 1
            assert isinstance(new, np.ndarray)
            assert new.dtype == np.float32
            assert new.shape == params.shape
            assert not np.shares_memory(new, params)
            assert not np.shares_memory(new, result.payload)
            assert np.all(np.isfinite(new))
            new.setflags(write=False)
            params = new
        assert updates >= 1, f"no update in {self.max_results_per_update} results"

    def test_rejects_wrong_payload_length(self) -> None:
        """apply() rejects a payload whose length differs from the model's."""
        rng = np.random.default_rng(self.seed)
        strategy = self._bound()
        params = self._params(rng)
        for bad_size in (self.dim - 1, self.dim + 1):
            result = ClientResult(
                task_id=0,
                client_id=0,
                base_version=0,
                current_version=0,
                payload=np.zeros(bad_size, dtype=np.float32),
            )
            with pytest.raises(ValueError, match="payload"):
                strategy.apply(params, result)

    def test_state_dict_round_trip_reproduces_outputs(self) -> None:
        """Restoring a (pickled) state_dict reproduces the same subsequent outputs."""
        rng = np.random.default_rng(self.seed)
        strategy = self._bound()
        params = self._params(rng)
        params, _ = self._feed(strategy, params, self._results(strategy, rng, 3))
        state = strategy.state_dict()
        pickled = pickle.dumps(state)
        later = list(self._results(strategy, rng, 2 * self.max_results_per_update, start=3))
        _, expected = self._feed(strategy, params, iter(later))
        # The same object restored: the state must be a snapshot, not a live view.
        strategy.load_state_dict(state)
        _, again = self._feed(strategy, params, iter(later))
        # A fresh strategy restored from the pickled state.
        fresh = self._bound()
        fresh.load_state_dict(pickle.loads(pickled))
        _, restored = self._feed(fresh, params, iter(later))
        for outputs in (again, restored):
            assert len(outputs) == len(expected)
            for got, want in zip(outputs, expected, strict=True):
                assert (got is None) == (want is None)
                if got is not None:
                    np.testing.assert_array_equal(got, want)

    def test_neutral_payload_leaves_params_unchanged(self) -> None:
        """A zero gradient/delta, or params equal to w, leaves w exactly unchanged."""
        rng = np.random.default_rng(self.seed)
        strategy = self._bound()
        params = self._params(rng)
        kind = strategy.client_work().kind
        neutral = params.copy() if kind == "params" else np.zeros_like(params)
        neutral.setflags(write=False)
        updates = 0
        for j in range(self.max_results_per_update):
            result = ClientResult(
                task_id=j,
                client_id=j % self.num_clients,
                base_version=max(0, 10 - j % 5),
                current_version=10,
                payload=neutral,
            )
            new = strategy.apply(params, result)
            if new is not None:
                updates += 1
                np.testing.assert_array_equal(new, params)
        assert updates >= 1

    def test_does_not_touch_global_rng(self) -> None:
        """Strategies never use numpy's global RNG."""
        rng = np.random.default_rng(self.seed)
        with _GlobalRNGGuard():
            strategy = self._bound()
            params = self._params(rng)
            self._feed(strategy, params, self._results(strategy, rng, 20))

    def test_state_dict_is_picklable_and_deep_copyable(self) -> None:
        """state_dict() is a plain picklable dict."""
        strategy = self._bound()
        state = strategy.state_dict()
        assert isinstance(state, dict)
        pickle.loads(pickle.dumps(state))
        copy.deepcopy(state)


# ----------------------------------------------------------------------- service times


class ServiceTimeContract(abc.ABC):
    """Contract every :class:`~raysync.simulation.service_times.BaseServiceTime` must satisfy.

    Subclasses implement :meth:`make_service_time`.
    """

    seed: int = 31337
    num_samples: int = 200_000

    @abc.abstractmethod
    def make_service_time(self) -> BaseServiceTime:
        """Return the distribution under test."""

    def _samples(self, seed: int | None = None) -> np.ndarray:
        dist = self.make_service_time()
        rng = np.random.default_rng(self.seed if seed is None else seed)
        return np.asarray(dist.sample(rng, size=self.num_samples), dtype=np.float64)

    def test_moments_are_finite(self) -> None:
        """The analytic mean is finite and > 0, the variance finite and >= 0."""
        dist = self.make_service_time()
        assert math.isfinite(dist.mean) and dist.mean > 0
        assert math.isfinite(dist.variance) and dist.variance >= 0

    def test_rate_is_inverse_mean(self) -> None:
        """The rate property equals 1 / mean."""
        dist = self.make_service_time()
        assert math.isclose(dist.rate, 1.0 / dist.mean, rel_tol=1e-12)

    def test_samples_shape_and_positive(self) -> None:
        """sample(rng, size) returns ``size`` finite durations > 0."""
        x = self._samples()
        assert x.shape == (self.num_samples,)
        assert np.all(np.isfinite(x)) and np.all(x > 0)

    def test_scalar_sample(self) -> None:
        """sample(rng) returns one finite float > 0."""
        dist = self.make_service_time()
        value = dist.sample(np.random.default_rng(self.seed))
        assert isinstance(value, float | np.floating)
        assert math.isfinite(float(value)) and float(value) > 0

    def test_no_sample_below_shortest(self) -> None:
        """``shortest`` bounds every draw from below, ``earliest_finish(t)`` every end.

        The check that refuses a run too short for any task to finish relies on both.
        """
        dist = self.make_service_time()
        x = self._samples()
        assert 0 <= dist.shortest <= x.min()
        rng = np.random.default_rng(self.seed)
        for start in (0.0, 1.0, 1e3):
            ends = [start + dist.sample_at(rng, start) for _ in range(200)]
            assert dist.earliest_finish(start) <= min(ends)
            assert dist.earliest_finish(start) >= start

    def test_deterministic_for_same_seed(self) -> None:
        """Generators with the same seed give the same samples."""
        np.testing.assert_array_equal(self._samples(seed=5), self._samples(seed=5))
        dist = self.make_service_time()
        a = [dist.sample(np.random.default_rng(9)) for _ in range(3)]
        b = [dist.sample(np.random.default_rng(9)) for _ in range(3)]
        assert a == b

    def test_sample_mean_matches_analytic(self) -> None:
        """The sample mean is within 5 standard errors of the analytic mean."""
        dist = self.make_service_time()
        x = self._samples()
        # CLT: the sample mean's standard error is s / sqrt(n).
        stderr = x.std(ddof=1) / math.sqrt(x.size)
        assert abs(x.mean() - dist.mean) <= Z_SCORE * stderr + 1e-12 * dist.mean, (
            x.mean(),
            dist.mean,
            stderr,
        )

    def test_sample_variance_matches_analytic(self) -> None:
        """The sample variance is within 5 standard errors of the analytic variance."""
        dist = self.make_service_time()
        x = self._samples()
        var = x.var(ddof=1)
        # Var(s^2) ~ (m4 - s^4) / n with m4 the 4th central moment (estimated).
        m4 = float(np.mean((x - x.mean()) ** 4))
        stderr = math.sqrt(max(m4 - var * var, 0.0) / x.size)
        assert abs(var - dist.variance) <= Z_SCORE * stderr + 1e-12 * dist.mean**2, (
            var,
            dist.variance,
            stderr,
        )

    def test_does_not_touch_global_rng(self) -> None:
        """Sampling never uses numpy's global RNG."""
        with _GlobalRNGGuard():
            self._samples()

    def test_repr_names_the_class(self) -> None:
        """repr() names the class."""
        dist = self.make_service_time()
        assert type(dist).__name__ in repr(dist)


# ------------------------------------------------------------------------- metrics sinks


class MetricsSinkContract(abc.ABC):
    """Contract every :class:`~raysync.monitoring.MetricsSink` must satisfy.

    Subclasses implement :meth:`make_sink` and :meth:`read_scalars` (how the sink's
    scalars are read back after :meth:`~raysync.monitoring.MetricsSink.close`: from its
    files or its memory). :attr:`rel_tol` is the precision the sink keeps (float32 event
    files: about 1e-7).
    """

    rel_tol: float = 1e-6

    @abc.abstractmethod
    def make_sink(self, directory: Path) -> MetricsSink:
        """Return a fresh sink that may write under ``directory``."""

    @abc.abstractmethod
    def read_scalars(
        self, sink: MetricsSink, directory: Path
    ) -> dict[str, list[tuple[int, float]]]:
        """After ``close``: tag -> ``(step, value)`` pairs in step order, as recorded."""

    def _log_run(self, sink: MetricsSink) -> dict[str, list[tuple[int, float]]]:
        """Log a small run like the engines do; return what must be read back."""
        sink.log_scalars(0, {"test/accuracy": 0.1, "system/throughput": 3}, time=0.0)
        # numpy scalars arrive from the engines' statistics: a sink must take them too.
        numpy_values: dict[str, Any] = {
            "test/accuracy": np.float32(0.5), "staleness/client_0": np.float64(2.25)
        }
        sink.log_scalars(25, numpy_values, time=1.5)
        sink.log_scalars(50, {"test/accuracy": 0.875, "system/throughput": 4.5}, time=3.25)
        return {
            "test/accuracy": [(0, 0.1), (25, 0.5), (50, 0.875)],
            "system/throughput": [(0, 3.0), (50, 4.5)],
            "staleness/client_0": [(25, 2.25)],
        }

    def _assert_contains(
        self, got: dict[str, list[tuple[int, float]]], expected: dict[str, list[tuple[int, float]]]
    ) -> None:
        for tag, series in expected.items():
            assert tag in got, f"tag {tag!r} was not recorded (got {sorted(got)})"
            assert [s for s, _ in got[tag]] == [s for s, _ in series], tag
            for (_, value), (_, want) in zip(got[tag], series, strict=True):
                assert math.isclose(value, want, rel_tol=self.rel_tol), (tag, value, want)

    def test_satisfies_the_protocol(self, tmp_path: Path) -> None:
        """The sink is a MetricsSink (log_scalars, log_hparams, close)."""
        sink = self.make_sink(tmp_path)
        assert isinstance(sink, MetricsSink)
        sink.close()

    def test_scalars_round_trip(self, tmp_path: Path) -> None:
        """Scalars (Python and numpy numbers) come back at their steps and values."""
        sink = self.make_sink(tmp_path)
        expected = self._log_run(sink)
        sink.close()
        self._assert_contains(self.read_scalars(sink, tmp_path), expected)

    def test_non_finite_values_and_empty_mappings_are_accepted(self, tmp_path: Path) -> None:
        """NaN/inf values and an empty mapping never raise; finite values still arrive."""
        sink = self.make_sink(tmp_path)
        sink.log_scalars(0, {}, time=0.0)
        sink.log_scalars(1, {"test/loss": math.nan, "x": math.inf, "y": 1.0}, time=0.5)
        sink.close()
        self._assert_contains(self.read_scalars(sink, tmp_path), {"y": [(1, 1.0)]})

    def test_hparams_once_then_close_twice(self, tmp_path: Path) -> None:
        """log_hparams takes mixed values once; close is idempotent."""
        sink = self.make_sink(tmp_path)
        expected = self._log_run(sink)
        sink.log_hparams(
            {"concurrency": 4, "lr": 0.05, "algorithm": "fedbuff", "train": True,
             "p": (0.5, 0.25, 0.25)},
            {"hparam/test_accuracy": 0.875, "hparam/nan": math.nan},
        )
        sink.close()
        sink.close()
        self._assert_contains(self.read_scalars(sink, tmp_path), expected)

    def test_does_not_touch_global_rng(self, tmp_path: Path) -> None:
        """Sinks never use numpy's global RNG."""
        with _GlobalRNGGuard():
            sink = self.make_sink(tmp_path)
            self._log_run(sink)
            sink.close()
