from __future__ import annotations

import numpy as np
import pytest

from raysync.config import AlgorithmConfig
from raysync.exceptions import CheckpointError, ConfigError
from raysync.strategies import (
    AsyncSGD,
    BaseStrategy,
    ClientResult,
    ConstantStaleness,
    FedAsync,
    FedBuff,
    GeneralizedAsyncSGD,
    HingeStaleness,
    PolynomialStaleness,
    make_strategy,
)
from raysync.testing.contracts import StrategyContract


class TestAsyncSGDContract(StrategyContract):
    def make_strategy(self) -> BaseStrategy:
        return AsyncSGD(lr=0.1, batch_size=8)

    def routing_probabilities(self, num_clients: int) -> np.ndarray | None:
        return None  # return-to-sender


class TestAsyncSGDWithRandomRoutingContract(StrategyContract):
    def make_strategy(self) -> BaseStrategy:
        return AsyncSGD(lr=0.1)


class TestGeneralizedAsyncSGDContract(StrategyContract):
    def make_strategy(self) -> BaseStrategy:
        return GeneralizedAsyncSGD(lr=0.05, batch_size=16)


class TestFedAsyncContract(StrategyContract):
    def make_strategy(self) -> BaseStrategy:
        return FedAsync(
            alpha=0.6, staleness=PolynomialStaleness(a=0.5), local_steps=3, local_lr=0.1
        )


class TestFedAsyncHingeContract(StrategyContract):
    def make_strategy(self) -> BaseStrategy:
        return FedAsync(alpha=0.9, staleness=HingeStaleness(a=10.0, b=4.0), local_lr=0.1)


class TestFedBuffContract(StrategyContract):
    def make_strategy(self) -> BaseStrategy:
        return FedBuff(buffer_size=4, server_lr=1.0, local_steps=2, local_lr=0.05)


class TestFedBuffWeightedContract(StrategyContract):
    def make_strategy(self) -> BaseStrategy:
        return FedBuff(
            buffer_size=5, server_lr=0.5, local_lr=0.05, staleness=PolynomialStaleness(a=1.0)
        )


class TestFedBuffSizeOneContract(StrategyContract):
    def make_strategy(self) -> BaseStrategy:
        return FedBuff(buffer_size=1, local_lr=0.05)


def _result(
    payload: np.ndarray, *, client: int = 0, base: int = 0, current: int = 0, task: int = 0
) -> ClientResult:
    return ClientResult(
        task_id=task,
        client_id=client,
        base_version=base,
        current_version=current,
        payload=np.asarray(payload, dtype=np.float32),
    )


def _readonly(values: list[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float32)
    arr.setflags(write=False)
    return arr


# ----------------------------------------------------------------------- AsyncSGD


def test_asyncsgd_step() -> None:
    strategy = AsyncSGD(lr=0.5)
    strategy.bind(2, None)
    new = strategy.apply(_readonly([1.0, 2.0]), _result(np.array([2.0, -4.0]), base=0, current=3))
    np.testing.assert_array_equal(new, np.array([0.0, 4.0], dtype=np.float32))
    assert strategy.client_work().kind == "gradient"
    assert strategy.client_work().batch_size == 32


def test_generalized_asyncsgd_step_is_importance_weighted() -> None:
    p = np.array([0.5, 0.3, 0.2])
    lr = 0.1
    strategy = GeneralizedAsyncSGD(lr=lr, batch_size=4)
    strategy.bind(3, p)
    rng = np.random.default_rng(0)
    w = rng.normal(size=6).astype(np.float32)
    w.setflags(write=False)
    g = rng.normal(size=6).astype(np.float32)
    for client in range(3):
        new = strategy.apply(w, _result(g, client=client))
        step = lr / (3 * p[client])
        expected = (w.astype(np.float64) - step * g.astype(np.float64)).astype(np.float32)
        np.testing.assert_array_equal(new, expected)
    np.testing.assert_allclose(strategy.step_sizes, lr / (3 * p), rtol=1e-15)
    assert strategy.client_work().batch_size == 4


def test_generalized_asyncsgd_uniform_equals_asyncsgd() -> None:
    w = _readonly([1.0, -1.0, 3.0])
    g = np.array([0.25, 0.5, -1.0], dtype=np.float32)
    gen = GeneralizedAsyncSGD(lr=0.2)
    gen.bind(4, np.full(4, 0.25))
    plain = AsyncSGD(lr=0.2)
    plain.bind(4, None)
    np.testing.assert_array_equal(gen.apply(w, _result(g, client=2)), plain.apply(w, _result(g)))


def test_generalized_asyncsgd_needs_routing_probabilities() -> None:
    strategy = GeneralizedAsyncSGD(lr=0.1)
    with pytest.raises(ConfigError, match="routing_probabilities=None .*use AsyncSGD"):
        strategy.bind(3, None)
    with pytest.raises(ConfigError, match=r"one entry per client \(n=3\), got shape \(2,\)"):
        strategy.bind(3, np.array([0.5, 0.5]))
    with pytest.raises(ConfigError, match="must be > 0"):
        strategy.bind(2, np.array([1.0, 0.0]))


def test_generalized_asyncsgd_rejects_unknown_client() -> None:
    strategy = GeneralizedAsyncSGD(lr=0.1)
    strategy.bind(2, np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match=r"client_id must be in \[0, 2\), got 2"):
        strategy.apply(_readonly([0.0]), _result(np.array([1.0]), client=2))


def test_generalized_asyncsgd_apply_before_bind() -> None:
    with pytest.raises(RuntimeError, match="bind"):
        GeneralizedAsyncSGD(lr=0.1).apply(_readonly([0.0]), _result(np.array([1.0])))


@pytest.mark.parametrize("cls", [AsyncSGD, GeneralizedAsyncSGD])
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": 0.0}, r"lr must be a finite number > 0, got 0\.0"),
        ({"lr": -1}, r"lr must be a finite number > 0, got -1"),
        ({"lr": float("nan")}, r"lr must be a finite number > 0, got nan"),
        ({"lr": "0.1"}, r"lr must be a finite number > 0, got '0\.1'"),
        ({"lr": 0.1, "batch_size": 0}, r"batch_size must be an integer >= 1, got 0"),
        ({"lr": 0.1, "batch_size": 2.0}, r"batch_size must be an integer >= 1, got 2\.0"),
    ],
)
def test_sgd_bad_arguments(cls: type, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        cls(**kwargs)


def test_payload_length_error_names_sizes() -> None:
    strategy = AsyncSGD(lr=0.1)
    with pytest.raises(ConfigError, match=r"length 3 \(the model's\), got shape \(2,\)"):
        strategy.apply(_readonly([0.0, 0.0, 0.0]), _result(np.zeros(2), task=9))


def test_negative_staleness_is_rejected() -> None:
    strategy = FedAsync(alpha=0.5, local_lr=0.1)
    with pytest.raises(ValueError, match="negative staleness"):
        strategy.apply(_readonly([0.0]), _result(np.zeros(1), base=5, current=3))


# ----------------------------------------------------------------------- FedAsync


def test_fedasync_mixing_exact_values() -> None:
    w = _readonly([0.0, 2.0, -4.0])
    local = np.array([2.0, 4.0, 4.0], dtype=np.float32)
    strategy = FedAsync(alpha=0.5, local_lr=0.1)
    np.testing.assert_array_equal(
        strategy.apply(w, _result(local, base=0, current=7)), [1.0, 3.0, 0.0]
    )
    # Polynomial a=1 at D=3: a_t = 0.5 * 1/4 = 0.125.
    poly = FedAsync(alpha=0.5, staleness=PolynomialStaleness(a=1.0), local_lr=0.1)
    np.testing.assert_array_equal(
        poly.apply(w, _result(local, base=4, current=7)), [0.25, 2.25, -3.0]
    )
    # Hinge a=1, b=1 at D=4: s = 1/(1*3+1) = 0.25, a_t = 0.5 * 0.25 = 0.125.
    hinge = FedAsync(alpha=0.5, staleness=HingeStaleness(a=1.0, b=1.0), local_lr=0.1)
    np.testing.assert_array_equal(
        hinge.apply(w, _result(local, base=3, current=7)), [0.25, 2.25, -3.0]
    )
    assert hinge.mixing_weight(0) == 0.5 and hinge.mixing_weight(4) == 0.125


def test_fedasync_alpha_one_without_staleness_takes_local_model() -> None:
    w = _readonly([0.3, -0.7])
    local = np.array([1.25, 2.5], dtype=np.float32)
    out = FedAsync(alpha=1.0, local_lr=0.1).apply(w, _result(local, base=0, current=0))
    np.testing.assert_array_equal(out, local)


def test_fedasync_client_work() -> None:
    work = FedAsync(alpha=0.6, local_steps=5, local_lr=0.02, batch_size=10).client_work()
    assert (work.kind, work.local_steps, work.local_lr, work.batch_size) == (
        "params",
        5,
        0.02,
        10,
    )
    assert isinstance(FedAsync(alpha=0.6, local_lr=0.1).staleness, ConstantStaleness)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 0.0}, r"alpha must be a finite number > 0, got 0\.0"),
        ({"alpha": 1.5}, r"alpha must be in \(0, 1\], got 1\.5"),
        ({"local_lr": 0.0}, r"local_lr must be a finite number > 0"),
        ({"local_steps": 0}, r"local_steps must be an integer >= 1, got 0"),
        ({"batch_size": -3}, r"batch_size must be an integer >= 1, got -3"),
        ({"staleness": "polynomial"}, r"staleness must be a BaseStaleness"),
    ],
)
def test_fedasync_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"alpha": 0.5, "local_lr": 0.1, **kwargs}
    with pytest.raises(ConfigError, match=match):
        FedAsync(**args)  # type: ignore[arg-type]


# ------------------------------------------------------------------------ FedBuff


def test_fedbuff_applies_every_b_results_with_exact_mean() -> None:
    strategy = FedBuff(buffer_size=3, server_lr=2.0, local_lr=0.1)
    strategy.bind(2, None)
    w = _readonly([1.0, 1.0])
    deltas = [[1.0, 0.0], [0.0, 2.0], [2.0, 4.0], [0.5, 0.5], [0.5, 0.5], [2.0, -1.0]]
    outputs = [
        strategy.apply(w, _result(np.array(d), task=j, base=0, current=0))
        for j, d in enumerate(deltas)
    ]
    assert [o is None for o in outputs] == [True, True, False, True, True, False]
    # mean of the first 3 = (1, 2); w + 2 * mean = (3, 5)
    np.testing.assert_array_equal(outputs[2], [3.0, 5.0])
    # mean of the next 3 = (1, 0); w + 2 * mean = (3, 1)
    np.testing.assert_array_equal(outputs[5], [3.0, 1.0])
    assert strategy.num_buffered == 0


def test_fedbuff_staleness_weighting_divides_by_buffer_size() -> None:
    strategy = FedBuff(
        buffer_size=2, server_lr=1.0, local_lr=0.1, staleness=PolynomialStaleness(a=1.0)
    )
    w = _readonly([0.0])
    assert strategy.apply(w, _result(np.array([4.0]), base=5, current=5)) is None  # s = 1
    out = strategy.apply(w, _result(np.array([4.0]), base=2, current=5))  # D=3, s = 1/4
    # (1 * 4 + 0.25 * 4) / B = 5 / 2
    np.testing.assert_array_equal(out, [2.5])


def test_fedbuff_state_dict_holds_buffer() -> None:
    strategy = FedBuff(buffer_size=3, local_lr=0.1)
    w = _readonly([0.0, 0.0])
    strategy.apply(w, _result(np.array([1.0, 2.0])))
    state = strategy.state_dict()
    assert state["count"] == 1
    np.testing.assert_array_equal(state["sum"], [1.0, 2.0])
    assert FedBuff(buffer_size=3, local_lr=0.1).state_dict() == {"count": 0, "sum": None}
    with pytest.raises(CheckpointError, match="'count' and 'sum'"):
        strategy.load_state_dict({})
    with pytest.raises(CheckpointError, match=r"count must be in \[0, 3\)"):
        strategy.load_state_dict({"count": 3, "sum": np.zeros(2)})


def test_fedbuff_rejects_length_change_mid_buffer() -> None:
    strategy = FedBuff(buffer_size=3, local_lr=0.1)
    strategy.apply(_readonly([0.0, 0.0]), _result(np.zeros(2)))
    with pytest.raises(ConfigError, match="payload"):
        strategy.apply(_readonly([0.0, 0.0]), _result(np.zeros(3)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"buffer_size": 0}, r"buffer_size must be an integer >= 1, got 0"),
        ({"server_lr": -1.0}, r"server_lr must be a finite number > 0, got -1\.0"),
        ({"local_lr": float("inf")}, r"local_lr must be a finite number > 0, got inf"),
        ({"local_steps": True}, r"local_steps must be an integer >= 1, got True"),
        ({"staleness": 0.5}, r"staleness must be None or a BaseStaleness"),
    ],
)
def test_fedbuff_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"buffer_size": 2, "local_lr": 0.1, **kwargs}
    with pytest.raises(ConfigError, match=match):
        FedBuff(**args)  # type: ignore[arg-type]


# ------------------------------------------------------------------------ factory


def test_make_strategy_asyncsgd() -> None:
    strategy = make_strategy(AlgorithmConfig(name="asyncsgd", lr=0.3, batch_size=7))
    assert type(strategy) is AsyncSGD
    assert strategy.lr == 0.3 and strategy.client_work().batch_size == 7


def test_make_strategy_generalized() -> None:
    strategy = make_strategy(AlgorithmConfig(name="generalized_asyncsgd", lr=0.2, batch_size=5))
    assert type(strategy) is GeneralizedAsyncSGD
    assert strategy.lr == 0.2 and strategy.client_work().batch_size == 5


@pytest.mark.parametrize(
    ("extra", "cls", "params"),
    [
        ({"staleness": "constant"}, ConstantStaleness, {}),
        ({"staleness": "polynomial", "staleness_exponent": 0.7}, PolynomialStaleness, {"a": 0.7}),
        (
            {"staleness": "hinge", "hinge_a": 3.0, "hinge_b": 2.0},
            HingeStaleness,
            {"a": 3.0, "b": 2.0},
        ),
    ],
)
def test_make_strategy_fedasync(extra: dict[str, object], cls: type, params: dict) -> None:
    config = AlgorithmConfig(
        name="fedasync", lr=0.04, batch_size=9, local_steps=3, alpha=0.3, **extra
    )  # type: ignore[arg-type]
    strategy = make_strategy(config)
    assert isinstance(strategy, FedAsync)
    assert strategy.alpha == 0.3
    assert isinstance(strategy.staleness, cls)
    for name, value in params.items():
        assert getattr(strategy.staleness, name) == value
    work = strategy.client_work()
    assert (work.kind, work.batch_size, work.local_steps, work.local_lr) == ("params", 9, 3, 0.04)


@pytest.mark.parametrize("weighting", [False, True])
def test_make_strategy_fedbuff(weighting: bool) -> None:
    config = AlgorithmConfig(
        name="fedbuff",
        lr=0.03,
        batch_size=11,
        local_steps=4,
        buffer_size=6,
        server_lr=0.8,
        staleness="hinge",
        hinge_a=2.0,
        hinge_b=1.0,
        staleness_weighting=weighting,
    )
    strategy = make_strategy(config)
    assert isinstance(strategy, FedBuff)
    assert (strategy.buffer_size, strategy.server_lr) == (6, 0.8)
    work = strategy.client_work()
    assert (work.kind, work.batch_size, work.local_steps, work.local_lr) == ("delta", 11, 4, 0.03)
    if weighting:
        assert isinstance(strategy.staleness, HingeStaleness)
        assert (strategy.staleness.a, strategy.staleness.b) == (2.0, 1.0)
    else:
        assert strategy.staleness is None


def test_reprs() -> None:
    assert repr(AsyncSGD(lr=0.1)) == "AsyncSGD(lr=0.1, batch_size=32)"
    assert repr(GeneralizedAsyncSGD(lr=0.1)).startswith("GeneralizedAsyncSGD(lr=0.1")
    assert "PolynomialStaleness(a=0.5)" in repr(
        FedAsync(alpha=0.5, staleness=PolynomialStaleness(a=0.5), local_lr=0.1)
    )
    assert repr(FedBuff(buffer_size=2, local_lr=0.1)).startswith("FedBuff(buffer_size=2")
