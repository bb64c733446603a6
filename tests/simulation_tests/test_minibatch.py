"""Per-task minibatch streams (raysync.simulation.minibatch)."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest
from scipy import stats

from raysync.simulation import MinibatchStreams, run_generators


def _reference(seed: int, client: int, ordinal: int) -> np.random.Generator:
    """A fresh Philox at the task's counter: the definition, without the reused state."""
    key = np.random.SeedSequence(seed, spawn_key=(1,)).generate_state(2, np.uint64)
    counter = np.array([0, 0, ordinal, client], dtype=np.uint64)
    return np.random.Generator(np.random.Philox(counter=counter, key=key))


@pytest.mark.parametrize("seed", [0, 7, 2**40 + 3])
def test_each_task_draws_its_counters_stream_whatever_came_before(seed: int) -> None:
    streams = MinibatchStreams(seed)
    rng = np.random.default_rng(0)
    tasks = [(int(i), int(k)) for i, k in rng.integers(0, 50, size=(40, 2))]
    tasks += [(0, 0), (2**64 - 1, 2**64 - 1), (3, 2**33)]
    for client, ordinal in tasks:
        got = streams.task(client, ordinal)
        first = got.integers(0, 1000, size=17)
        # A partly used buffer (one 32-bit draw) must not leak into the next task.
        got.random(3, dtype=np.float32)
        want = _reference(seed, client, ordinal).integers(0, 1000, size=17)
        np.testing.assert_array_equal(first, want)


def test_streams_survive_pickling_and_match_run_generators() -> None:
    streams = pickle.loads(pickle.dumps(MinibatchStreams(5)))
    a = streams.task(2, 9).random(8)
    b = run_generators(5, 3).minibatch.task(2, 9).random(8)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, _reference(5, 2, 9).random(8))


def test_threads_each_get_the_stream_of_their_own_task() -> None:
    streams = MinibatchStreams(3)
    barrier = threading.Barrier(4)
    out: dict[int, list[np.ndarray]] = {}

    def work(client: int) -> None:
        draws = []
        for k in range(50):
            g = streams.task(client, k)
            barrier.wait()  # every thread holds a generator at once, then draws
            draws.append(g.integers(0, 2**31, size=4))
        out[client] = draws

    threads = [threading.Thread(target=work, args=(c,)) for c in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for client, draws in out.items():
        for k, d in enumerate(draws):
            np.testing.assert_array_equal(d, _reference(3, client, k).integers(0, 2**31, size=4))


def test_neighbouring_tasks_are_uncorrelated_and_uniform() -> None:
    # 2,000 tasks (20 clients x 100 ordinals), 64 uniforms each. Under independence the
    # correlation of two neighbours' draws has sd 1/sqrt(64 * 2000) ~ 0.0028: 5 sd = 0.014.
    streams = MinibatchStreams(11)
    draws = np.array([streams.task(i, k).random(64) for i in range(20) for k in range(100)])
    by_ordinal = draws.reshape(20, 100, 64)
    r_ordinal = np.corrcoef(by_ordinal[:, :-1].ravel(), by_ordinal[:, 1:].ravel())[0, 1]
    r_client = np.corrcoef(by_ordinal[:-1].ravel(), by_ordinal[1:].ravel())[0, 1]
    assert abs(r_ordinal) < 0.014 and abs(r_client) < 0.014
    # First draw of every task: uniform (KS at the 0.1 % level: a false alarm 1 in 1,000).
    assert stats.kstest(draws[:, 0], "uniform").pvalue > 1e-3
    # No two tasks share a stream.
    assert len({tuple(row[:2]) for row in draws}) == len(draws)


@pytest.mark.parametrize(("client", "ordinal"), [(-1, 0), (0, -1), (2**64, 0), (0, 2**64)])
def test_out_of_range_task_is_refused_in_one_line(client: int, ordinal: int) -> None:
    with pytest.raises(ValueError, match=r"must lie in \[0, 2\*\*64\)"):
        MinibatchStreams(0).task(client, ordinal)
