"""Every registered pattern, trained without and with the monitor on the same seed, then compared.

What is asserted, and how the reference is taken, is in ``harness.py``; the patterns (each citing
the public Keras code it was adapted from) are in ``compat_patterns/``.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import compat_patterns
import pytest
from harness import PATTERNS, Pattern, run_and_check

for _mod in pkgutil.iter_modules(compat_patterns.__path__):
    importlib.import_module(f"compat_patterns.{_mod.name}")


def test_at_least_25_patterns_each_citing_its_source() -> None:
    assert len(PATTERNS) >= 25, [p.name for p in PATTERNS]
    assert len({p.name for p in PATTERNS}) == len(PATTERNS)
    assert all(p.source.startswith(("https://", "keras-team/")) for p in PATTERNS)


@pytest.mark.parametrize("pat", [p.param() for p in PATTERNS])
def test_pattern_trains_as_without_the_monitor(pat: Pattern, shared_server: Any) -> None:
    run_and_check(pat, shared_server)
