"""The optimizer helpers the hook relies on, against real Keras optimizers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import pytest
from gradwatch.trainer_hooks.optimizer_hook import learning_rate_variable, optimizer_clipping


@pytest.mark.parametrize(
    "make",
    [
        lambda: keras.optimizers.SGD(0.1),
        lambda: keras.optimizers.Adam(0.1),
        lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1)),  # its own rate is an unused 0
    ],
    ids=["sgd", "adam", "loss-scale"],
)
def test_learning_rate_variable_is_the_one_the_updates_use(make: Callable[[], Any]) -> None:
    optimizer = make()
    variable = learning_rate_variable(optimizer)
    assert variable is not None
    variable.assign(0.25)
    assert float(optimizer.learning_rate) == pytest.approx(0.25)


@pytest.mark.parametrize(
    "make",
    [
        lambda: keras.optimizers.SGD(keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)),
        lambda: keras.optimizers.LossScaleOptimizer(
            keras.optimizers.SGD(keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5))
        ),
    ],
    ids=["schedule", "loss-scale-schedule"],
)
def test_a_schedule_has_no_learning_rate_variable(make: Callable[[], Any]) -> None:
    assert learning_rate_variable(make()) is None


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, None),
        ({"global_clipnorm": 1.5}, ("global_norm", 1.5)),
        ({"clipnorm": 2.0}, ("norm", 2.0)),
        ({"clipvalue": 0.5}, ("value", 0.5)),
    ],
)
def test_optimizer_clipping_names_mode_and_threshold(kwargs: dict[str, float], expected: Any) -> None:
    assert optimizer_clipping(keras.optimizers.SGD(0.1, **kwargs)) == expected
