"""build_workload: seeded subsample, partition and initial model, shared by both backends."""

from __future__ import annotations

import dataclasses
import pickle
import re

import numpy as np
import pytest

from raysync.config import ClientSpec, DataConfig, ModelConfig, SystemConfig
from raysync.data import Dataset, load_dataset
from raysync.exceptions import ConfigError, DataError
from raysync.workload import ClientShard, ModelSpec, Workload, build_workload


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits", seed=0)


def make_config(n: int = 5, *, seed: int = 0, **data: object) -> SystemConfig:
    model = data.pop("model", ModelConfig())
    return SystemConfig(
        clients=tuple(ClientSpec() for _ in range(n)),
        concurrency=n,
        data=DataConfig(**data),  # type: ignore[arg-type]
        model=model,  # type: ignore[arg-type]
        seed=seed,
    )


def test_partition_covers_the_training_set(digits: Dataset) -> None:
    wl = build_workload(make_config(5), dataset=digits)
    assert wl.num_clients == 5
    joined = np.sort(np.concatenate(wl.client_indices))
    np.testing.assert_array_equal(joined, np.arange(digits.num_train))
    assert wl.client_sizes.sum() == digits.num_train
    x, y = wl.client_data(2)
    assert x.shape == (wl.client_sizes[2], 64) and y.shape == (wl.client_sizes[2],)
    np.testing.assert_array_equal(y, digits.y_train[wl.client_indices[2]])


def test_loads_the_configured_dataset_itself() -> None:
    wl = build_workload(make_config(3))
    assert wl.dataset.name == "digits" and wl.has_validation


def test_same_seed_same_workload_other_seed_differs(digits: Dataset) -> None:
    a = build_workload(make_config(4, seed=7), dataset=digits)
    b = build_workload(make_config(4, seed=7), dataset=digits)
    c = build_workload(make_config(4, seed=8), dataset=digits)
    for ia, ib in zip(a.client_indices, b.client_indices, strict=True):
        np.testing.assert_array_equal(ia, ib)
    np.testing.assert_array_equal(a.initial_params, b.initial_params)
    assert not np.array_equal(a.client_indices[0], c.client_indices[0])
    assert not np.array_equal(a.initial_params, c.initial_params)


def test_max_train_samples_is_a_seeded_subsample(digits: Dataset) -> None:
    a = build_workload(make_config(4, max_train_samples=300), dataset=digits)
    b = build_workload(make_config(4, max_train_samples=300), dataset=digits)
    assert a.dataset.num_train == 300 and a.client_sizes.sum() == 300
    np.testing.assert_array_equal(a.dataset.y_train, b.dataset.y_train)
    assert a.dataset.num_test == digits.num_test  # test set untouched
    big = build_workload(make_config(4, max_train_samples=10**6), dataset=digits)
    assert big.dataset.num_train == digits.num_train


def test_partition_parameters_are_passed(digits: Dataset) -> None:
    skewed = build_workload(make_config(5, partition="dirichlet", alpha=0.05), dataset=digits)
    iid = build_workload(make_config(5), dataset=digits)

    def classes_per_client(wl: Workload) -> float:
        return float(np.mean([np.unique(wl.client_data(i)[1]).size for i in range(5)]))

    assert classes_per_client(skewed) < classes_per_client(iid)
    shards = build_workload(make_config(5, partition="shards", shards_per_client=1), dataset=digits)
    assert classes_per_client(shards) <= 3
    unequal = build_workload(make_config(5, partition="unequal", size_spread=2.0), dataset=digits)
    assert unequal.client_sizes.max() > 2 * unequal.client_sizes.min()


def test_initial_params_and_evaluation(digits: Dataset) -> None:
    wl = build_workload(make_config(3, model=ModelConfig(name="mlp", hidden=(16,))), dataset=digits)
    assert wl.initial_params.dtype == np.float32
    assert not wl.initial_params.flags.writeable
    assert wl.initial_params.size == 64 * 16 + 16 + 16 * 10 + 10
    loss, acc = wl.evaluate(wl.initial_params)
    assert np.isfinite(loss) and 0.0 <= acc <= 1.0
    computer = wl.make_computer()
    assert wl.evaluate(wl.initial_params, split="val", computer=computer)[0] > 0
    np.testing.assert_array_equal(computer.get_params(), wl.initial_params)
    with pytest.raises(ValueError, match="split"):
        wl.evaluate(wl.initial_params, split="bogus")


def test_cnn_spec_uses_image_shape(digits: Dataset) -> None:
    wl = build_workload(make_config(2, model=ModelConfig(name="cnn")), dataset=digits)
    assert wl.model.image_shape == (1, 8, 8)
    assert isinstance(wl.model, ModelSpec)
    rebuilt = ModelSpec(**{**wl.model.__dict__})
    from raysync.models import get_flat_params

    np.testing.assert_array_equal(get_flat_params(rebuilt.build()), wl.initial_params)


def test_shards_are_small_to_pickle(digits: Dataset) -> None:
    wl = build_workload(make_config(10), dataset=digits)
    shard = wl.client_shard(3)
    assert isinstance(shard, ClientShard) and shard.num_samples == wl.client_sizes[3]
    blob = pickle.dumps(shard)
    assert len(blob) < 1.3 * (shard.x.nbytes + shard.y.nbytes) + 1000
    back = pickle.loads(blob)
    np.testing.assert_array_equal(back.x, shard.x)
    assert len(pickle.dumps(wl.model)) < 1000
    again = pickle.loads(pickle.dumps(wl))
    np.testing.assert_array_equal(again.initial_params, wl.initial_params)


def test_errors(digits: Dataset) -> None:
    # A dataset smaller than the fleet (here 20 samples for 30 clients): refused once loaded.
    small = dataclasses.replace(digits, x_train=digits.x_train[:20], y_train=digits.y_train[:20])
    with pytest.raises(ConfigError, match="cannot partition 20 training samples over 30"):
        build_workload(make_config(30), dataset=small)
    # more shards than samples: only known once the data is loaded, named by its field
    shards = dataclasses.replace(
        make_config(4), data=DataConfig(dataset="digits", partition="shards", shards_per_client=6)
    )
    with pytest.raises(
        ConfigError,
        match=r"^data\.shards_per_client must be at most training samples / clients = "
        r"20 / 4 = 5 \(a shard holds a sample at least\), got 6$",
    ):
        build_workload(shards, dataset=small)
    wl = build_workload(make_config(3), dataset=digits)
    with pytest.raises(ValueError, match="client must be in"):
        wl.client_data(3)
    with pytest.raises(DataError, match="client_indices"):
        Workload(
            dataset=digits,
            client_indices=(np.array([digits.num_train]),),
            model=wl.model,
            initial_params=wl.initial_params,
        )


@pytest.mark.parametrize(
    ("n", "data", "needed", "least"),
    [
        (30, {"max_train_samples": 29}, "at least the number of clients (30)", 30),
        (4, {"max_train_samples": 7, "partition": "shards", "shards_per_client": 2},
         "at least clients x data.shards_per_client = 4 x 2 = 8", 8),
    ],
)
def test_a_cap_no_dataset_could_meet_is_refused_with_the_config(
    digits: Dataset, n: int, data: dict[str, object], needed: str, least: int
) -> None:
    # Refused on construction (every command, validate without --workload too), not
    # once the data is loaded; the smallest cap that is enough is accepted and partitions.
    with pytest.raises(ConfigError, match="^data.max_train_samples must be " + re.escape(needed)):
        make_config(n, **data)
    wl = build_workload(make_config(n, **{**data, "max_train_samples": least}), dataset=digits)
    assert sum(wl.client_sizes) == least and min(wl.client_sizes) >= 1


def test_warnings_of_a_failing_user_call_are_dropped_and_of_a_passing_one_shown() -> None:
    # torch's three-line UserWarning came before the one-line error of a loss that raised
    import warnings

    from raysync.exceptions import DataError
    from raysync.workload import _user_call

    def failing() -> None:
        warnings.warn("noise\nover two lines", UserWarning, stacklevel=1)
        raise ValueError("the real problem")

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(DataError, match=r"^loss 'f' raised ValueError here: the real"):
            _user_call("loss 'f'", failing, "here")
    assert seen == []

    def passing() -> int:
        warnings.warn("worth seeing", RuntimeWarning, stacklevel=1)
        return 3

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert _user_call("loss 'f'", passing, "here") == 3
    assert [(w.category, str(w.message)) for w in seen] == [(RuntimeWarning, "worth seeing")]
    # a filter that turns it into an error still makes the call's one-line failure
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match=r"^loss 'f' raised RuntimeWarning here: worth"):
            _user_call("loss 'f'", passing, "here")


@pytest.mark.parametrize("name", ["logreg", "mlp", "cnn"])
def test_a_built_in_models_size_is_known_without_loading_its_data(
    name: str, digits: Dataset
) -> None:
    from raysync.workload import builtin_num_params

    # digits: against the workload built on the loaded data
    cfg = make_config(3, model=ModelConfig(name=name, hidden=(32, 16)))
    assert builtin_num_params(cfg) == build_workload(cfg, dataset=digits).initial_params.size
    # mnist: against the workload built on 28 x 28 stand-in images (the real ones are
    # 55,000 rows; only their shape sizes the model) and, for the flat models, by hand
    rng = np.random.default_rng(0)

    def rows(k: int) -> tuple[np.ndarray, np.ndarray]:
        return rng.random((k, 784), dtype=np.float32), np.arange(k, dtype=np.int64) % 10

    (xtr, ytr), (xva, yva), (xte, yte) = rows(30), rows(10), rows(10)
    images = Dataset(name="mnist", x_train=xtr, y_train=ytr, x_val=xva, y_val=yva,
                     x_test=xte, y_test=yte, num_classes=10, image_shape=(1, 28, 28))
    cfg = make_config(3, dataset="mnist", model=ModelConfig(name=name))
    size = build_workload(cfg, dataset=images).initial_params.size
    assert builtin_num_params(cfg) == size
    by_hand = {"logreg": 784 * 10 + 10, "mlp": 784 * 128 + 128 + 128 * 10 + 10}
    assert size == by_hand.get(name, size)


def test_a_user_models_or_datas_size_is_unknown_before_it_is_built(tmp_path: object) -> None:
    from raysync.workload import builtin_num_params

    assert builtin_num_params(make_config(2, dataset="directory", path=str(tmp_path))) is None
    assert builtin_num_params(make_config(2, factory="pkg.mod:data")) is None
    user_model = ModelConfig(factory="pkg.mod:model")
    assert builtin_num_params(make_config(2, model=user_model)) is None
