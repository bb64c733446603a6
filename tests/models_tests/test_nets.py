from __future__ import annotations

import numpy as np
import pytest
import torch

from raysync.exceptions import ConfigError
from raysync.models import (
    MLP,
    MODEL_NAMES,
    LogisticRegression,
    SmallCNN,
    build_model,
    get_flat_params,
    num_parameters,
)

SHAPES = {"mnist": (1, 28, 28), "digits": (1, 8, 8)}


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_forward_shapes(name: str, shape: tuple[int, int, int]) -> None:
    features = int(np.prod(shape))
    model = build_model(name, in_features=features, num_classes=10, image_shape=shape, seed=0)
    out = model(torch.rand(5, features))
    assert out.shape == (5, 10) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # Image-shaped input gives the same logits as flat input.
    assert torch.equal(model(torch.ones(2, *shape)), model(torch.ones(2, features)))


def test_cnn_layout() -> None:
    lenet = SmallCNN((1, 28, 28), 10)
    assert lenet.flat_features == 16 * 5 * 5  # classic LeNet-5
    assert num_parameters(lenet) == 61_706
    small = SmallCNN((1, 8, 8), 10)
    assert small.flat_features == 16 * 2 * 2
    assert SmallCNN((3, 32, 32), 4)(torch.zeros(2, 3 * 32 * 32)).shape == (2, 4)
    with pytest.raises(ConfigError, match="image_shape"):
        SmallCNN((1, 3, 3), 10)
    with pytest.raises(ConfigError, match="image_shape"):
        SmallCNN((64,), 10)


def test_model_classes() -> None:
    assert num_parameters(LogisticRegression(64, 10)) == 650
    assert num_parameters(MLP(64, 10, hidden=(32, 16))) == 64 * 32 + 32 + 32 * 16 + 16 + 170
    assert num_parameters(MLP(64, 10, hidden=())) == 650
    with pytest.raises(ConfigError, match="hidden"):
        MLP(64, 10, hidden=(0,))
    with pytest.raises(ConfigError, match="num_classes"):
        LogisticRegression(64, 0)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_build_model_deterministic_without_global_rng(name: str) -> None:
    kw = {"in_features": 64, "num_classes": 10, "image_shape": (1, 8, 8)}
    state = torch.random.get_rng_state()
    a = get_flat_params(build_model(name, seed=7, **kw))
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    torch.manual_seed(12345)  # and not read either
    b = get_flat_params(build_model(name, seed=7, **kw))
    c = get_flat_params(build_model(name, seed=8, **kw))
    torch.random.set_rng_state(state)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_init_follows_pytorch_default_law() -> None:
    model = build_model("mlp", in_features=784, num_classes=10, image_shape=(1, 28, 28), seed=0)
    first = model.net[0]
    bound = 1 / np.sqrt(784)
    w = first.weight.detach().numpy()
    assert np.abs(w).max() <= bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.02 * bound  # std of U(-b, b)
    assert model.training


def test_build_model_errors() -> None:
    kw = {"num_classes": 10, "image_shape": (1, 8, 8), "seed": 0}
    with pytest.raises(ConfigError, match="unknown model 'resnet'"):
        build_model("resnet", in_features=64, **kw)
    with pytest.raises(ConfigError, match="in_features=784 does not match"):
        build_model("cnn", in_features=784, **kw)
    with pytest.raises(ConfigError, match="seed"):
        build_model("mlp", in_features=64, num_classes=10, image_shape=(1, 8, 8), seed=-1)
