"""Host reads of many variables: one compiled read past a few, the same values either way."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from gradwatch.trainer_hooks.readback import FlatReader, host_array
from gradwatch.trainer_hooks.update_ratio import UpdateRatio


def variables(n: int) -> list[tf.Variable]:
    rng = np.random.default_rng(n)
    shapes = [(3, 4), (0,), (5,), (2, 2, 3)]
    return [tf.Variable(rng.normal(size=shapes[i % len(shapes)]).astype(np.float32)) for i in range(n)]


@pytest.mark.parametrize("n", [1, FlatReader.FEW, FlatReader.FEW + 1, 40])
def test_flat_read_matches_each_variable(n):
    vs = variables(n)
    reader = FlatReader(vs)
    assert (reader._compiled is not None) == (n > FlatReader.FEW)
    flat = reader.read()
    np.testing.assert_array_equal(flat, np.concatenate([host_array(v).ravel() for v in vs]))
    sums = reader.per_variable(np.add, flat.astype(np.float64))
    np.testing.assert_allclose(sums, [host_array(v).sum() for v in vs], rtol=1e-6, atol=1e-6)  # 0 when empty
    before = flat.copy()
    vs[-1].assign_add(tf.ones_like(vs[-1]))
    assert np.array_equal(flat, before)  # a copy, not a view of the variable
    assert not np.array_equal(reader.read(), before) or vs[-1].shape.num_elements() == 0


def test_keras_variables_and_the_update_ratio_in_one_compiled_read():
    model = keras.Sequential([keras.Input((6,))] + [keras.layers.Dense(6) for _ in range(10)])  # 20 variables
    meter = UpdateRatio(model.trainable_variables, every=1)
    assert meter.reader._compiled is not None
    before = [v.numpy().copy() for v in model.trainable_variables]
    meter.keep(0)
    for v in model.trainable_variables:
        v.assign(v.numpy() * 1.5 + 0.25)
    ratios = meter.measure(0)
    expected = [
        np.linalg.norm(v.numpy() - b) / np.linalg.norm(b) if np.linalg.norm(b) > 0 else np.nan
        for v, b in zip(model.trainable_variables, before)
    ]
    np.testing.assert_allclose(ratios, expected, rtol=1e-5)
    assert np.isnan(ratios[1])  # a bias at its initial zeros: undefined


def test_mirrored_variables_are_read_once():
    # Logical devices must be configured before TensorFlow initialises: a fresh process.
    script = textwrap.dedent(
        """
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from gradwatch.trainer_hooks.readback import FlatReader
        with tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope():
            vs = [tf.Variable(np.full(3, i, np.float32)) for i in range(FlatReader.FEW + 2)]
        print(FlatReader(vs).read().tolist())
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == np.repeat(np.arange(FlatReader.FEW + 2), 3).tolist()
