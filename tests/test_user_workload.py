"""The workload plug-in contract with user code in a temporary module (not in the package).

Every bad-input case of issue 14 gives one line naming the factory, the rule and the value;
the CLI turns it into exit code 2.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from raysync.cli import main
from raysync.config import SystemConfig
from raysync.exceptions import ConfigError, DataError
from raysync.models import get_flat_params
from raysync.workload import build_workload, check_workload

USER_MODULE = """
import sys

import numpy as np
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, input_shape, num_classes, width=8):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), width),
                                  nn.Tanh(), nn.Linear(width, num_classes))

    def forward(self, x):
        return self.body(x)


def make_model(input_shape, num_classes, width=8):
    return TinyNet(input_shape, num_classes, width)


def make_data(n=240, clients=4, skew=True):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(n, 2, 3)).astype(np.float32)
    y = (x.reshape(n, -1).sum(axis=1) > 0).astype(np.int64) + 2 * (x[:, 0, 0] > 1)
    # natural, non-IID: client c holds rows c, c + clients, ... of a label-sorted order
    order = np.argsort(y, kind="stable")
    owner = np.empty(n, dtype=np.int64)
    owner[order] = np.arange(n) // (n // clients) if skew else np.arange(n) % clients
    return {"x_train": x, "y_train": y, "x_test": x[:40], "y_test": y[:40],
            "client_train": np.minimum(owner, clients - 1)}


def regression_data(n=120):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, 4))
    t = x @ np.array([1.0, -2.0, 0.5, 0.0])
    return {"x_train": x, "y_train": t, "x_test": x[:30], "y_test": t[:30]}


def linear(in_features):
    return nn.Linear(in_features, 1)


def huber(output, target):
    return torch.nn.functional.huber_loss(output.reshape(target.shape), target)


def neg_mae(output, target):  # higher is better, as every metric
    return -(output.reshape(target.shape) - target).abs().mean()


# ---- broken on purpose
def not_a_module(**kwargs):
    return [1, 2, 3]


def wrong_width(in_features):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, 2))  # 2 outputs, 4 classes


def not_a_mapping():
    return [np.zeros((3, 2))]


def mismatched():
    return {"x_train": np.zeros((10, 2)), "y_train": np.zeros(9, np.int64),
            "x_test": np.zeros((2, 2)), "y_test": np.zeros(2, np.int64)}


def too_wide(input_shape, num_classes):
    return TinyNet(input_shape, num_classes + 2, 4)


def one_class():
    d = make_data()
    d["y_train"] = np.zeros_like(d["y_train"])
    d["y_test"] = np.zeros_like(d["y_test"])
    return d


def few_clients():
    d = make_data(n=40)
    d["client_train"] = np.where(d["client_train"] == 2, 0, d["client_train"])
    return d


def vector_loss(output, target):
    return torch.nn.functional.cross_entropy(output, target, reduction="none")


def nan_loss(output, target):
    return torch.nn.functional.cross_entropy(output, target) * float("nan")


def raises(**kwargs):
    raise RuntimeError("disk full")


def raising_loss(output, target):
    raise KeyError("oops")


def detached_loss(output, target):
    return torch.nn.functional.cross_entropy(output.detach(), target)


def float_metric(output, target):
    return float((output.argmax(dim=1) == target).double().mean())


def numpy_metric(output, target):
    return np.float64((output.argmax(dim=1) == target).double().mean())


def nan_metric(output, target):
    return float("nan")


CALLS = [0]


def loss_nan_after_probe(output, target):
    # finite for the probe, NaN from the 6th call on: a loss that goes bad mid-run
    CALLS[0] += 1
    value = torch.nn.functional.cross_entropy(output, target)
    return value * float("nan") if CALLS[0] > 5 else value


def loss_raises_after_probe(output, target):
    CALLS[0] += 1
    if CALLS[0] > 5:
        raise RuntimeError("late failure")
    return torch.nn.functional.cross_entropy(output, target)


def printing_model(input_shape, num_classes):
    print("HELLO FROM MODEL FACTORY")
    return TinyNet(input_shape, num_classes)


def exits_data(**kwargs):
    sys.exit(0)  # a script's habit: ended the command silently, with exit code 0


def exits_model(input_shape, num_classes):
    sys.exit(3)


def loss_exits_after_probe(output, target):
    CALLS[0] += 1
    if CALLS[0] > 5:
        sys.exit(0)
    return torch.nn.functional.cross_entropy(output, target)


def late_vector_loss(output, target):
    # passes the 4-row probe, breaks on the clients' 8-row batches
    reduction = "none" if target.shape[0] > 4 else "mean"
    return torch.nn.functional.cross_entropy(output, target, reduction=reduction)
"""


@pytest.fixture()
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``userwl``: a module written to a temporary folder put on ``sys.path``."""
    (tmp_path / "userwl.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("userwl", None)
    module = importlib.import_module("userwl")
    yield module
    sys.modules.pop("userwl", None)


def config(
    *, clients: int = 4, model: dict[str, Any] | None = None, data: dict[str, Any] | None = None
) -> SystemConfig:
    return SystemConfig.from_dict(
        {
            "concurrency": 2,
            "seed": 5,
            "clients": [{"count": clients}],
            "run": {"num_updates": 40, "eval_every_updates": 20},
            "algorithm": {"lr": 0.1, "batch_size": 8},
            "model": model or {"factory": "userwl:make_model", "kwargs": {"width": 6}},
            "data": data or {"factory": "userwl:make_data", "partition": "natural"},
        }
    )


def test_user_factories_build_a_checked_workload(user_module: Any) -> None:
    wl = build_workload(config())
    assert wl.dataset.image_shape == (2, 3)  # the factory's sample shape is kept
    assert wl.dataset.x_train.shape[1:] == (2, 3)
    assert wl.dataset.num_classes == 4
    # kwargs reached the factory: 6*6 + 6 + 6*4 + 4 parameters
    assert wl.initial_params.size == 6 * 6 + 6 + 6 * 4 + 4
    # no x_val given: a seeded stratified 10 % validation split of the training set
    # (rounded per class: at most 0.5 sample off for each of the 4 classes)
    assert wl.dataset.num_val + wl.dataset.num_train == 240
    assert abs(wl.dataset.num_val - 24) <= 2
    probe = check_workload(wl)
    assert probe["output_shape"] == (8, 4) and probe["metric"] == "accuracy"


def test_natural_partition_is_respected(user_module: Any) -> None:
    wl = build_workload(config())
    owners = wl.dataset.client_train
    assert owners is not None
    for client, idx in enumerate(wl.client_indices):
        assert np.array_equal(idx, np.flatnonzero(owners == client))
    # label-sorted ownership: the partitions are non-IID (client 0 holds label 0 only)
    y = wl.dataset.y_train
    assert set(y[wl.client_indices[0]].tolist()) == {0}
    assert 3 in set(y[wl.client_indices[3]].tolist())


def test_same_seed_same_initial_parameters_without_touching_torch_rng(user_module: Any) -> None:
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = build_workload(config())
    after = torch.random.get_rng_state()
    assert torch.equal(before, after)  # the factory ran inside fork_rng
    b = build_workload(config())
    assert np.array_equal(a.initial_params, b.initial_params)
    assert np.array_equal(get_flat_params(b.model.build()), a.initial_params)
    other = build_workload(config().replace(seed=6))
    assert not np.array_equal(other.initial_params, a.initial_params)


def test_code_built_workload_needs_no_import_path(user_module: Any) -> None:
    from raysync.simulation import simulate

    cfg = config()
    wl = build_workload(
        cfg,
        model_factory=user_module.make_model,
        model_kwargs={"width": 6},
        data_factory=user_module.make_data,
        data_kwargs={"skew": False},
    )
    assert wl.model.factory is user_module.make_model
    # the same factory by reference gives the same initial parameters
    by_ref = build_workload(cfg)
    assert np.array_equal(wl.initial_params, by_ref.initial_params)
    result = simulate(cfg, workload=wl)
    assert np.isfinite(result.final_test_loss)
    assert 0.0 <= result.final_test_accuracy <= 1.0


def test_regression_with_mse_and_user_loss_and_metric(user_module: Any) -> None:
    from raysync.simulation import simulate

    data = {"factory": "userwl:regression_data"}
    mse = config(clients=3, data=data, model={"factory": "userwl:linear", "loss": "mse"})
    wl = build_workload(mse)
    assert wl.dataset.y_train.dtype == np.float32 and not wl.dataset.is_classification
    assert check_workload(wl)["metric"] == "neg_loss"
    first = wl.evaluate(wl.initial_params)[0]
    result = simulate(mse)
    assert result.final_test_loss < first  # SGD on a linear target lowers the loss
    # the metric slot holds the negated loss: higher is better, as the tuner maximises it
    assert result.final_test_accuracy == pytest.approx(-result.final_test_loss)
    user = config(
        clients=3,
        data=data,
        model={"factory": "userwl:linear", "loss": "userwl:huber", "metric": "userwl:neg_mae"},
    )
    loss, metric = build_workload(user).evaluate(wl.initial_params)
    assert np.isfinite(loss) and 0 < loss < first  # Huber is below the MSE here
    x, t = wl.split("test")
    model = wl.model.build()
    from raysync.models import set_flat_params

    set_flat_params(model, wl.initial_params)
    with torch.no_grad():
        mae = float((model(torch.from_numpy(x)).reshape(-1) - torch.from_numpy(t)).abs().mean())
    assert metric == pytest.approx(-mae, rel=1e-5)  # sample-weighted mean of batch means


@pytest.mark.parametrize(
    ("model", "data", "error", "words"),
    [
        (
            {"factory": "no_such_pkg.models:make"},
            None,
            ConfigError,
            [
                "model factory 'no_such_pkg.models:make' cannot be imported",
                "No module named 'no_such_pkg'",
                "runtime_env",
            ],
        ),
        (
            {"factory": "userwl:nothing"},
            None,
            ConfigError,
            ["model factory 'userwl:nothing'", "has no attribute 'nothing'"],
        ),
        (
            {"factory": "userwl:not_a_module"},
            None,
            ConfigError,
            ["model factory 'userwl:not_a_module' must return a torch.nn.Module, got list"],
        ),
        (
            {"factory": "userwl:make_model", "kwargs": {"depth": 3}},
            None,
            ConfigError,
            ["model factory 'userwl:make_model' cannot be called", "depth"],
        ),
        (
            {"factory": "userwl:wrong_width"},
            None,
            DataError,
            [
                "model factory 'userwl:wrong_width': output shape (8, 2)",
                "needs (8, K) with K >= 4 classes",
            ],
        ),
        (
            {"factory": "userwl:make_model", "loss": "userwl:vector_loss"},
            None,
            DataError,
            ["loss 'userwl:vector_loss' must return a scalar tensor", "shape (8,)"],
        ),
        (
            {"factory": "userwl:make_model", "loss": "userwl:nan_loss"},
            None,
            DataError,
            ["loss 'userwl:nan_loss' returned nan (not finite)"],
        ),
        (
            {"factory": "userwl:make_model", "loss": "userwl:raising_loss"},
            None,
            DataError,
            ["loss 'userwl:raising_loss' raised KeyError on a batch of 8 training samples"],
        ),
        (
            {"factory": "userwl:make_model", "loss": "userwl:detached_loss"},
            None,
            DataError,
            ["loss 'userwl:detached_loss' returned a tensor without a gradient"],
        ),
        (
            {"factory": "userwl:make_model", "loss": "userwl:late_vector_loss"},
            None,
            DataError,
            ["loss 'userwl:late_vector_loss' must return a scalar tensor", "shape (8,)"],
        ),
        (
            {"factory": "userwl:make_model", "metric": "userwl:nan_metric"},
            None,
            DataError,
            ["metric 'userwl:nan_metric' returned nan (not finite)"],
        ),
        (
            None,
            {"factory": "userwl:not_a_mapping"},
            DataError,
            ["data factory 'userwl:not_a_mapping' must return a mapping", "got list"],
        ),
        (
            None,
            {"factory": "userwl:mismatched"},
            DataError,
            ["data factory 'userwl:mismatched': x_train has 10 rows but y_train has 9"],
        ),
        (
            None,
            {"factory": "userwl:few_clients", "partition": "natural"},
            DataError,
            ["data factory 'userwl:few_clients'", "client 2 has no training samples"],
        ),
        (
            None,
            {"factory": "userwl:raises"},
            ConfigError,
            ["data factory 'userwl:raises' raised RuntimeError: disk full"],
        ),
        (
            None,
            {"factory": "userwl:regression_data"},
            DataError,
            ["loss 'cross_entropy' needs integer class labels", "float32"],
        ),
        (
            {"factory": "userwl:make_model", "loss": "mse"},
            None,
            DataError,
            [
                "loss 'mse' needs real targets, but the data factory 'userwl:make_data'",
                "integer labels (int64)",
            ],
        ),
        (
            None,
            {"factory": "userwl:regression_data", "partition": "dirichlet"},
            DataError,
            ["data.partition = 'dirichlet' splits by class label"],
        ),
        (
            None,
            {"factory": "userwl:regression_data", "partition": "natural"},
            DataError,
            ["needs the data factory 'userwl:regression_data' to return client_train"],
        ),
        (
            None,
            {"factory": "userwl:exits_data", "partition": "natural"},
            ConfigError,
            ["data factory 'userwl:exits_data' called sys.exit(0); a factory must return"],
        ),
        (
            {"factory": "userwl:exits_model"},
            None,
            ConfigError,
            ["model factory 'userwl:exits_model' called sys.exit(3); a factory must return"],
        ),
    ],
)
def test_bad_user_code_gives_one_line(
    user_module: Any,
    model: dict[str, Any] | None,
    data: dict[str, Any] | None,
    error: type[Exception],
    words: list[str],
) -> None:
    with pytest.raises(error) as info:
        build_workload(config(model=model, data=data))
    text = str(info.value)
    assert "\n" not in text
    for w in words:
        assert w in text, text


def test_validate_imports_and_checks_the_factories(
    user_module: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.toml"
    good.write_text(
        textwrap.dedent(
            """
            concurrency = 2
            [[clients]]
            count = 4
            [model]
            factory = "userwl:make_model"
            kwargs = { width = 6 }
            [data]
            factory = "userwl:make_data"
            partition = "natural"
            """
        )
    )
    assert main(["validate", str(good)]) == 0
    out = capsys.readouterr().out
    assert "workload: 70 parameters, output (32, 4)" in out
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text().replace("make_model", "wrong_width"))
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "userwl:wrong_width" in err
    # --no-workload never imports the factories
    missing = tmp_path / "missing.toml"
    missing.write_text(good.read_text().replace("userwl:make_model", "nowhere:make"))
    assert main(["validate", str(missing), "--no-workload"]) == 0
    capsys.readouterr()
    assert main(["validate", str(missing)]) == 2
    assert "'nowhere:make' cannot be imported" in capsys.readouterr().err


def test_config_refuses_malformed_references(user_module: Any) -> None:
    with pytest.raises(ConfigError, match=r"model.factory must look like 'package.module:"):
        config(model={"factory": "userwl.make_model"})
    with pytest.raises(ConfigError, match=r"model.loss must be one of cross_entropy, mse"):
        config(model={"factory": "a:b", "loss": "huber"})
    with pytest.raises(ConfigError, match=r"data.kwargs needs data.factory"):
        config(data={"dataset": "digits", "kwargs": {"n": 1}})
    with pytest.raises(ConfigError, match=r"'tuning', a layer above raysync"):
        build_workload(config(model={"factory": "tuning.study:make"}))


def test_builtin_models_go_through_the_factory_contract() -> None:
    from raysync.config import DataConfig, ModelConfig
    from raysync.data import load_digits_dataset

    digits = load_digits_dataset(seed=0)
    base = config(data={"dataset": "digits"}, model={"name": "cnn"})
    by_name = build_workload(base, dataset=digits)
    by_factory = build_workload(
        base.replace(model=ModelConfig(factory="raysync.models.nets:cnn_factory")), dataset=digits
    )
    assert by_name.model.factory_ref == "raysync.models.nets:cnn_factory"
    assert np.array_equal(by_name.initial_params, by_factory.initial_params)
    # the built-in dataset by its factory reference is the same data
    via_factory = build_workload(
        base.replace(
            data=DataConfig(factory="raysync.data.sources:load_digits_dataset", kwargs={"seed": 0})
        )
    )
    assert np.array_equal(via_factory.dataset.x_train, digits.x_train)
    assert [ix.tolist() for ix in via_factory.client_indices] == [
        ix.tolist() for ix in by_name.client_indices
    ]


def test_readme_bring_your_own_model_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import re

    from raysync.config import load_config
    from raysync.simulation import simulate

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Bring your own model", 1)[1].split("\n## ", 1)[0]
    python_blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    (toml,) = re.findall(r"```toml\n(.*?)```", section, flags=re.S)
    module, usage = python_blocks
    assert len(module.splitlines()) <= 30  # the "30-line example"
    (tmp_path / "my_fl.py").write_text(module)
    (tmp_path / "my_fl.toml").write_text(toml.replace("num_updates = 400", "num_updates = 60"))
    monkeypatch.chdir(tmp_path)  # "found on sys.path or in '.'"
    sys.modules.pop("my_fl", None)
    try:
        config = load_config("my_fl.toml")
        wl = build_workload(config)
        assert wl.num_clients == 4 and wl.dataset.client_train is not None
        area = [wl.dataset.x_train[ix, 3] for ix in wl.client_indices]
        for small, large in zip(area[:-1], area[1:], strict=True):
            assert small.max() <= large.min()  # quartiles of tumour area
        assert "raysync.build_workload(" in usage and "raysync.simulate(" in usage
        result = simulate(config, workload=wl)
        assert result.final_test_loss < result.test_loss[0]
        assert main(["validate", "my_fl.toml"]) == 0
    finally:
        sys.modules.pop("my_fl", None)


@pytest.mark.parametrize("metric", ["userwl:float_metric", "userwl:numpy_metric"])
def test_a_metric_may_return_a_float_or_numpy_scalar(user_module: Any, metric: str) -> None:
    wl = build_workload(config(model={"factory": "userwl:make_model", "metric": metric}))
    acc = build_workload(config(model={"factory": "userwl:make_model"}))
    assert check_workload(wl)["metric"] == metric
    assert wl.evaluate(wl.initial_params)[1] == pytest.approx(
        acc.evaluate(acc.initial_params)[1], abs=1e-12
    )


@pytest.mark.parametrize(
    ("model", "lr", "words"),
    [
        (
            {"factory": "userwl:make_model", "loss": "userwl:loss_nan_after_probe"},
            0.1,
            ["client ", " failed on task ", "training loss", "is nan"],
        ),
        (
            {"factory": "userwl:make_model", "loss": "userwl:loss_raises_after_probe"},
            0.1,
            ["client ", " raised RuntimeError on task ", "late failure"],
        ),
        ({"factory": "userwl:linear", "loss": "mse"}, 1e30, ["not finite", "lower algorithm.lr"]),
    ],
)
def test_training_that_breaks_mid_run_stops_with_one_line(
    user_module: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    model: dict[str, Any],
    lr: float,
    words: list[str],
) -> None:
    from raysync.exceptions import RaySyncError
    from raysync.simulation import simulate

    user_module.CALLS[0] = 0
    data = {"factory": "userwl:regression_data"} if model.get("loss") == "mse" else None
    cfg = config(clients=3 if data else 4, model=model, data=data)
    cfg = cfg.replace(algorithm=dataclasses.replace(cfg.algorithm, lr=lr))
    with pytest.raises(RaySyncError) as info:
        simulate(cfg)
    text = str(info.value)
    assert "\n" not in text
    for w in words:
        assert w in text, text


def test_the_probe_runs_once_so_warnings_are_not_repeated(
    user_module: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def batchnorm_model(in_features: int, num_classes: int) -> torch.nn.Module:
        return torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(in_features, 6), torch.nn.BatchNorm1d(6),
            torch.nn.Linear(6, num_classes),
        )  # fmt: skip

    with caplog.at_level("WARNING", logger="raysync.workload"):
        wl = build_workload(config(), model_factory=batchnorm_model, model_kwargs={})
        summary = check_workload(wl)  # as validate does after build_workload
    assert summary["output_shape"] == (8, 4)
    assert sum("floating buffers" in r.getMessage() for r in caplog.records) == 1


def test_suspicious_outputs_and_labels_are_warned_about(
    user_module: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from raysync.workload import check_workload

    with caplog.at_level(logging.WARNING, logger="raysync"):
        check_workload(build_workload(config()))
    assert not [r for r in caplog.records if "logits" in r.getMessage()]
    wide = config(model={"factory": "userwl:too_wide"})
    with caplog.at_level(logging.WARNING, logger="raysync"):
        summary = check_workload(build_workload(wide))
    assert summary["output_shape"][1] == 6  # allowed: 4 classes, 6 outputs
    assert ("model factory 'userwl:too_wide' outputs 6 logits for 4 classes (labels 0..3): "
            "the extra 2 are never a label") in caplog.text
    caplog.clear()
    single = config(data={"factory": "userwl:one_class", "partition": "iid"})
    with caplog.at_level(logging.WARNING, logger="raysync"):
        check_workload(build_workload(single))
    assert "the training labels hold one class only (0)" in caplog.text


def test_user_code_that_exits_is_one_line_and_exit_code_2(
    user_module: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """sys.exit in user code used to end the command silently (exit code 0 for exit(0))."""
    base = textwrap.dedent(
        """
        concurrency = 2
        [[clients]]
        count = 4
        [model]
        factory = "userwl:make_model"
        loss = "userwl:loss_exits_after_probe"
        [data]
        factory = "userwl:make_data"
        partition = "natural"
        [run]
        num_updates = 40
        """
    )
    path = tmp_path / "exits.toml"
    path.write_text(base)
    user_module.CALLS[0] = 0
    assert main(["simulate", str(path), "--no-progress", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "sys.exit(0) called from " in err and "userwl.py" in err
    assert "(loss_exits_after_probe); code run by raysync" in err
    # a module that exits on import
    (tmp_path / "exitsonimport.py").write_text("import sys\nsys.exit(4)\n")
    path.write_text(base.replace("userwl:make_model", "exitsonimport:make"))
    sys.modules.pop("exitsonimport", None)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(
        "model factory 'exitsonimport:make': importing module 'exitsonimport' called "
        "sys.exit(4); a module must not exit on import"
    ), err


@pytest.mark.parametrize("command", [["validate"], ["simulate", "--no-progress"]])
def test_user_prints_do_not_corrupt_json(
    user_module: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """--json's stdout is one JSON document; what user code prints goes to stderr."""
    path = tmp_path / "prints.toml"
    path.write_text(
        textwrap.dedent(
            """
            concurrency = 2
            [[clients]]
            count = 4
            [model]
            factory = "userwl:printing_model"
            [data]
            factory = "userwl:make_data"
            partition = "natural"
            [run]
            num_updates = 20
            """
        )
    )
    assert main([command[0], str(path), *command[1:], "--json"]) == 0
    captured = capsys.readouterr()
    json.loads(captured.out)  # the factory printed ahead of it before
    assert "HELLO FROM MODEL FACTORY" in captured.err
