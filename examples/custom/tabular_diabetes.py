"""A non-image workload: tabular regression on scikit-learn's diabetes data (offline).

442 patients, 10 standardised clinical features, a disease-progression score one year
later (Efron et al., "Least Angle Regression", Annals of Statistics 2004). The clients
are *age groups*: each client holds the patients of one age quantile, a natural non-IID
split (feature and target distributions differ by age), returned as ``client_train``
and used with ``[data] partition = "natural"``. The loss is ``mse`` on the standardised
score; the metric is `neg_loss` (the loss negated, higher is better).

Run from the repository root::

    raysync validate examples/custom/diabetes.toml
    raysync simulate examples/custom/diabetes.toml
    raysync run examples/custom/diabetes.toml
"""

from __future__ import annotations

import numpy as np
from torch import nn


def load_by_age(num_clients: int = 4, test_fraction: float = 0.2, seed: int = 0) -> dict:
    """The data factory: features, standardised targets and one client id per patient.

    Args:
        num_clients: Age groups (must equal the config's number of clients).
        test_fraction: Share of the patients held out for testing (all ages).
        seed: Seed of the train/test split.
    """
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    y = (y - y.mean()) / y.std()
    perm = np.random.default_rng(seed).permutation(len(y))
    cut = int(round(test_fraction * len(y)))
    test, train = perm[:cut], perm[cut:]
    age = x[train, 0]  # feature 0 is the (standardised) age
    edges = np.quantile(age, np.linspace(0, 1, num_clients + 1)[1:-1])
    return {
        "x_train": x[train].astype(np.float32),
        "y_train": y[train].astype(np.float32),
        "x_test": x[test].astype(np.float32),
        "y_test": y[test].astype(np.float32),
        "client_train": np.searchsorted(edges, age, side="right"),
        "name": "diabetes-by-age",
    }


def make_mlp(in_features: int, hidden: int = 32) -> nn.Module:
    """The model factory: one hidden layer, one output (the predicted score)."""
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))
