"""``raysync._validation.check_int``: the library's one rule for integer arguments."""

from __future__ import annotations

import numpy as np
import pytest

from raysync._validation import check_int
from raysync.data.partition import dirichlet_partition
from raysync.exceptions import ConfigError
from raysync.models.flat import GradientComputer
from raysync.models.nets import build_model
from tuning.settings import check_int as tuning_check_int


def test_integers_in_range_come_back_as_int() -> None:
    assert check_int("k", 3, minimum=1) == 3
    value = check_int("k", np.int64(7), minimum=0, maximum=7)
    assert value == 7 and type(value) is int


@pytest.mark.parametrize(
    ("value", "maximum", "message"),
    [
        (0, None, "k must be an integer >= 1, got 0"),
        (True, None, "k must be an integer >= 1, got True"),  # an int to Python only
        (2.0, None, "k must be an integer >= 1, got 2.0"),
        ("3", None, "k must be an integer >= 1, got '3'"),
        (11, 10, "k must be an integer in [1, 10], got 11"),
        (np.int32(0), 10, "k must be an integer in [1, 10], got 0"),
    ],
)
def test_refusals_name_the_rule_and_the_value(
    value: object, maximum: int | None, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        check_int("k", value, minimum=1, maximum=maximum)
    assert str(info.value) == message


def test_library_arguments_share_the_message() -> None:
    # the partitioners, the flat models and the tuning settings said "must be an int",
    # "must be in [1, n]" or "an int >= 1"; one rule now words them alike
    labels = np.arange(20) % 2
    with pytest.raises(ConfigError, match=r"^num_clients \(with num_samples=20\) must be an "
                                          r"integer in \[1, 20\], got 21$"):
        dirichlet_partition(labels, 21, alpha=0.5, seed=0)
    with pytest.raises(ConfigError, match=r"^trials must be an integer >= 1, got 0$"):
        tuning_check_int("trials", 0, 1)
    model = build_model("logreg", in_features=4, num_classes=2, image_shape=(1, 2, 2), seed=0)
    computer = GradientComputer(model)
    x, y = np.zeros((4, 4), dtype=np.float32), np.zeros(4, dtype=np.int64)
    with pytest.raises(ConfigError, match=r"^steps must be an integer >= 0, got -1$"):
        computer.local_steps(computer.get_params(), x, y, steps=-1, batch_size=2, lr=0.1, rng=0)
