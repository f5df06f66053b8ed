"""The update-to-weight ratio measured in the compiled step, every step, against the host's exact reference.

Oracle: the same seeded run (op determinism on) trained twice, once measured in the step (the default)
and once by the host copying every weight before each step and comparing after it
(``update_ratio_every=1``): the two must agree on every step and variable.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import httpx
import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from gradwatch import GradientMonitor
from gradwatch.protocol import decode_float

pytestmark = pytest.mark.timeout(300)
STEPS = 24


@pytest.fixture(autouse=True)
def _determinism() -> Iterator[None]:
    tf.config.experimental.enable_op_determinism()
    yield
    tf_config.disable_op_determinism()
    keras.mixed_precision.set_global_policy("float32")


def _optimizer(name: str) -> Any:
    return {
        "momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.9),
        "adam": lambda: keras.optimizers.Adam(1e-2),
        "rmsprop": lambda: keras.optimizers.RMSprop(1e-2),
    }[name]()


def _ratios(server: Any, run_name: str, opt: str, options: dict[str, Any], **monitor: Any) -> dict[str, list[float]]:
    if options.get("mixed"):
        keras.mixed_precision.set_global_policy("mixed_float16")
    if options.get("jit"):  # Keras turns XLA off under op determinism; a tiny CPU XLA step repeats exactly anyway
        tf_config.disable_op_determinism()
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((STEPS * 8, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    keras.utils.clear_session()  # the same variable names in both runs
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu", name="hidden"),
            keras.layers.Dense(2, dtype="float32", name="out"),
        ]
    )
    model.compile(
        optimizer=_optimizer(opt),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=bool(options.get("jit")),
    )
    mon = GradientMonitor(
        server=server.url, token=server.token, run_name=run_name, guard_nonfinite=bool(options.get("guard")), **monitor
    )
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[mon])
    mon.close()
    keras.mixed_precision.set_global_policy("float32")
    api = httpx.Client(base_url=server.url, headers=server.headers, timeout=10)
    run = next(r for r in api.get("/api/runs").json() if r["name"] == run_name)
    m = api.get(f"/api/runs/{run['id']}/metrics").json()
    assert len(m["step"]) == STEPS
    series = m["update_ratio"].items()
    return {k.split("/", 1)[1]: [math.nan if v is None else decode_float(v) for v in s] for k, s in series}


@pytest.mark.parametrize(
    ("opt", "options"),
    [
        ("momentum", {}),
        ("adam", {}),
        ("rmsprop", {"jit": True}),
        ("adam", {"mixed": True}),
        ("momentum", {"guard": True}),
    ],
    ids=["momentum", "adam", "rmsprop-xla", "adam-mixed-precision", "momentum-guard"],
)
def test_every_step_matches_the_host_reference(shared_server: Any, opt: str, options: dict[str, Any]) -> None:
    tag = f"{opt}-{'-'.join(options) or 'plain'}"
    in_graph = _ratios(shared_server, f"graph {tag}", opt, options)
    host = _ratios(shared_server, f"host {tag}", opt, options, update_ratio_every=1)
    assert set(in_graph) == set(host) == {"hidden/kernel", "hidden/bias", "out/kernel", "out/bias"}
    for name in in_graph:
        got, want = np.array(in_graph[name]), np.array(host[name])
        # The first step of a zero-initialised bias has no ratio (its weight norm is 0), in both.
        assert np.array_equal(np.isnan(got), np.isnan(want)), (name, got, want)
        assert np.isfinite(got[1:]).all(), (name, got)  # never empty on a run that trains
        np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=2e-3, err_msg=name)


def test_zero_turns_it_off(shared_server: Any) -> None:
    off = _ratios(shared_server, "off", "adam", {}, update_ratio_every=0)
    assert all(np.isnan(series).all() for series in off.values())  # never measured
