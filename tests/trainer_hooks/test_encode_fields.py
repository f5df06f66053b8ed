"""The trainer's encoder writes exactly the declared step fields (gradwatch/stepfields.py), in order."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from gradwatch.trainer_hooks.graph_stats import GradientStats

from gradwatch.protocol import StepRecord, dumps
from gradwatch.stepfields import STEP_FIELDS

from .test_session import make_session, queued


def test_encoded_records_are_the_declared_fields_and_validate() -> None:
    variables = [tf.Variable(np.ones((3, 4), np.float32)), tf.Variable(np.ones(4, np.float32))]
    stats = GradientStats(variables)
    step_fn = tf.function(lambda g: stats.process(g, 0.01, loss=tf.constant(0.5))[0])
    session = make_session(stats)
    for step, grads in enumerate([[tf.ones((3, 4)), tf.ones(4)], [tf.fill((3, 4), np.nan), tf.ones(4)]]):
        step_fn(grads)
        session.after_steps(step + 1, 0)
    records = queued(session)
    assert len(records) == 2
    for rec in records:
        assert list(rec) == [f.name for f in STEP_FIELDS]
        StepRecord.model_validate_json(dumps(rec))  # as sent: non-finite floats spelt the wire way
    assert records[1]["grad_nan"] == [12, 0] and records[1]["loss"] == 0.5
