"""Fault and hostile-input tests across real processes on loopback.

The protocol-speaking helpers live in ``tests/server/simtrainer.py``; this
folder puts that folder on ``sys.path`` (pytest runs in importlib mode) so
``from simtrainer import ...`` works here too (and ``from fittools import ...``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gradwatch.trainer_hooks.lifecycle import flush_at_exit

_HERE = Path(__file__).resolve().parent
for _path in (str(_HERE), str(_HERE.parent / "server")):  # fittools.py here, simtrainer.py in tests/server
    if _path not in sys.path:
        sys.path.insert(0, _path)


@pytest.fixture(autouse=True)
def _finish_open_runs(gradwatch_server: Any) -> Iterator[None]:
    # Asks for the server factory so that this ends before any server the test started is stopped.
    """A monitor's run outlives ``fit()`` (it ends at interpreter exit): end every test's runs with the test."""
    yield
    flush_at_exit(timeout=2.0)
