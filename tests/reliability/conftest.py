"""Fault and hostile-input tests across real processes on loopback.

The protocol-speaking helpers live in ``tests/server/simtrainer.py``; this
folder puts that folder on ``sys.path`` (pytest runs in importlib mode) so
``from simtrainer import ...`` works here too (and ``from fittools import ...``).
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for _path in (str(_HERE), str(_HERE.parent / "server")):  # fittools.py here, simtrainer.py in tests/server
    if _path not in sys.path:
        sys.path.insert(0, _path)
