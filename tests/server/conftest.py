"""Server tests import their protocol-speaking helpers from ``simtrainer.py`` next to this file.

pytest runs in importlib mode (see pyproject), which does not put test folders
on ``sys.path``; this folder is added so ``from simtrainer import ...`` works.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
