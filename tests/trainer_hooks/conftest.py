"""A monitor's run outlives ``fit()`` (it ends at interpreter exit): end every test's runs with the test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from gradwatch.trainer_hooks.lifecycle import flush_at_exit


@pytest.fixture(autouse=True)
def _finish_open_runs(gradwatch_server: Any) -> Iterator[None]:
    # Asks for the server factory so that this ends before any server the test started is stopped.
    yield
    flush_at_exit(timeout=2.0)
