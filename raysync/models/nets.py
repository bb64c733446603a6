"""Small torch classifiers for flat image inputs, and a seeded factory.

All models take flat inputs of shape ``(N, in_features)`` (as stored in
:class:`raysync.data.Dataset`) and return logits of shape ``(N, num_classes)``; the CNN
reshapes internally with ``image_shape``. :func:`build_model` initialises parameters from a
seed with its own ``torch.Generator``: it never reads or advances torch's global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from raysync.exceptions import ConfigError

__all__ = [
    "MLP",
    "MODEL_FACTORIES",
    "MODEL_NAMES",
    "LogisticRegression",
    "SmallCNN",
    "build_model",
    "cnn_factory",
    "init_parameters",
    "logreg_factory",
    "mlp_factory",
]

#: Names accepted by :func:`build_model`.
MODEL_NAMES: tuple[str, ...] = ("logreg", "mlp", "cnn")


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")
    return value


class LogisticRegression(nn.Module):
    """Multinomial logistic regression: one linear layer to the class logits.

    Args:
        in_features: Length of a flat input.
        num_classes: Number of classes.
    """

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(
            _positive("in_features", in_features), _positive("num_classes", num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(N, num_classes)`` for inputs ``(N, ...)`` (flattened first)."""
        return self.linear(x.flatten(1))


class MLP(nn.Module):
    """Fully connected network with ReLU hidden layers.

    Args:
        in_features: Length of a flat input.
        num_classes: Number of classes.
        hidden: Width of each hidden layer; empty gives logistic regression.
    """

    def __init__(
        self, in_features: int, num_classes: int, *, hidden: Sequence[int] = (128,)
    ) -> None:
        super().__init__()
        widths = [_positive("in_features", in_features)]
        widths += [_positive(f"hidden[{i}]", h) for i, h in enumerate(hidden)]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], _positive("num_classes", num_classes)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(N, num_classes)`` for inputs ``(N, ...)`` (flattened first)."""
        return self.net(x.flatten(1))


class SmallCNN(nn.Module):
    """LeNet-5-like CNN: conv 5x5 (6) -> pool -> conv 5x5 (16) -> pool -> 120 -> 84 -> out.

    The first convolution is padded to keep the image size (as LeNet-5 on 28x28 MNIST). The
    second is unpadded (classic LeNet-5, 16x5x5 features on 28x28) when its input is at least
    10 pixels on each side, and padded otherwise, so that small images such as the 8x8
    digits also work (16x2x2 features). The flattened size is computed from ``image_shape``.

    Args:
        image_shape: ``(channels, height, width)``; height and width must be >= 4.
        num_classes: Number of classes.
    """

    def __init__(self, image_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        shape = tuple(int(s) for s in image_shape)
        if len(shape) != 3 or min(shape) < 1 or min(shape[1:]) < 4:
            raise ConfigError(
                f"SmallCNN needs image_shape=(channels, height, width) with height and "
                f"width >= 4, got {tuple(image_shape)}"
            )
        c, h, w = shape
        self.image_shape = shape
        h1, w1 = h // 2, w // 2
        pad2 = 0 if min(h1, w1) >= 10 else 2
        h2, w2 = (h1 + 2 * pad2 - 4) // 2, (w1 + 2 * pad2 - 4) // 2
        self.features = nn.Sequential(
            nn.Conv2d(c, 6, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5, padding=pad2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.flat_features = 16 * h2 * w2
        self.classifier = nn.Sequential(
            nn.Linear(self.flat_features, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, _positive("num_classes", num_classes)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(N, num_classes)`` for flat ``(N, C*H*W)`` or ``(N, C, H, W)``."""
        x = x.reshape(x.shape[0], *self.image_shape)
        return self.classifier(self.features(x).flatten(1))


@torch.no_grad()
def init_parameters(model: nn.Module, generator: torch.Generator) -> None:
    """Initialise a model's linear and conv layers in place from ``generator``.

    Uses PyTorch's default law for these layers, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for
    weights and biases, but draws from ``generator`` instead of the global RNG.

    Args:
        model: A model whose parameters all belong to ``nn.Linear`` or ``nn.Conv*`` layers.
        generator: A CPU ``torch.Generator``.

    Raises:
        ConfigError: If a parameter belongs to another kind of layer.
    """
    handled: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d):
            weight = module.weight
            bound = 1.0 / math.sqrt(weight[0].numel()) if weight[0].numel() else 0.0
            for p in (weight, module.bias):
                if p is None:
                    continue
                sample = torch.empty(p.shape, dtype=p.dtype).uniform_(
                    -bound, bound, generator=generator
                )
                p.copy_(sample)
                handled.add(id(p))
    for name, p in model.named_parameters():
        if id(p) not in handled:
            raise ConfigError(f"init_parameters cannot initialise parameter {name!r}")


def build_model(
    name: str,
    *,
    in_features: int,
    num_classes: int,
    image_shape: Sequence[int],
    hidden: Sequence[int] = (128,),
    seed: int,
) -> nn.Module:
    """Build a model by name with parameters initialised deterministically from ``seed``.

    The layers are created on the ``meta`` device (so construction draws no random numbers)
    and then initialised on the CPU by :func:`init_parameters` with a private
    ``torch.Generator`` seeded with ``seed``. Torch's global RNG state is neither read nor
    changed, so the same seed gives the same parameters in any process.

    Args:
        name: ``"logreg"``, ``"mlp"`` or ``"cnn"``.
        in_features: Length of a flat input; for ``"cnn"`` it must equal
            ``prod(image_shape)``.
        num_classes: Number of classes.
        image_shape: ``(channels, height, width)`` of an image (used by ``"cnn"``).
        hidden: Hidden widths of ``"mlp"``.
        seed: Seed of the initialisation.

    Returns:
        The model, in float32 on the CPU, in training mode.

    Raises:
        ConfigError: If the name is unknown or a size is invalid.
    """
    key = name.lower().strip() if isinstance(name, str) else name
    if key not in MODEL_NAMES:
        raise ConfigError(f"unknown model {name!r}; choose one of {list(MODEL_NAMES)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative int, got {seed!r}")
    _positive("in_features", in_features)
    model: nn.Module
    with torch.device("meta"):
        if key == "logreg":
            model = LogisticRegression(in_features, num_classes)
        elif key == "mlp":
            model = MLP(in_features, num_classes, hidden=tuple(hidden))
        else:
            if math.prod(int(s) for s in image_shape) != in_features:
                raise ConfigError(
                    f"cnn: in_features={in_features} does not match image_shape "
                    f"{tuple(image_shape)} (product {math.prod(image_shape)})"
                )
            model = SmallCNN(image_shape, num_classes)
    model = model.to_empty(device="cpu")
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    init_parameters(model, generator)
    return model.train()


# The built-in models as workload factories: ``[model] name = "cnn"`` is the same as
# ``[model] factory = "raysync.models.nets:cnn_factory"`` (raysync.workload resolves both
# through one code path, filling in the data-derived keywords each factory names).


def logreg_factory(*, in_features: int, num_classes: int, seed: int) -> nn.Module:
    """Workload factory of ``logreg`` (see :func:`build_model`)."""
    return build_model(
        "logreg", in_features=in_features, num_classes=num_classes, image_shape=(), seed=seed
    )


def mlp_factory(
    *, in_features: int, num_classes: int, seed: int, hidden: Sequence[int] = (128,)
) -> nn.Module:
    """Workload factory of ``mlp`` (see :func:`build_model`)."""
    return build_model(
        "mlp",
        in_features=in_features,
        num_classes=num_classes,
        image_shape=(),
        hidden=hidden,
        seed=seed,
    )


def cnn_factory(
    *, in_features: int, num_classes: int, image_shape: Sequence[int], seed: int
) -> nn.Module:
    """Workload factory of ``cnn`` (see :func:`build_model`)."""
    return build_model(
        "cnn",
        in_features=in_features,
        num_classes=num_classes,
        image_shape=image_shape,
        seed=seed,
    )


#: Built-in model name -> its factory reference (the registry of ``model.name``).
MODEL_FACTORIES: dict[str, str] = {
    name: f"raysync.models.nets:{name}_factory" for name in MODEL_NAMES
}
