"""The differential compatibility suite (issue 16 item 9): ``harness.py`` plus ``compat_patterns/``.

This folder goes on ``sys.path`` (pytest runs in importlib mode) so ``import harness`` works.
Op determinism is process-wide: it is switched on for this folder's tests only, and off again after.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gradwatch.trainer_hooks.lifecycle import flush_at_exit

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(scope="module", autouse=True)
def _op_determinism() -> Iterator[None]:
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    was = tf_config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    yield
    if not was:
        tf_config.disable_op_determinism()


@pytest.fixture(autouse=True)
def _finish_open_runs(shared_server: Any) -> Iterator[None]:
    # Asks for the server so that this ends before the server is stopped.
    yield
    flush_at_exit(timeout=2.0)
