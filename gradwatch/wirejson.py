"""JSON on the gradwatch wire: floats that may be NaN or infinite, and bounded integers.

Plain JSON cannot carry NaN or Infinity, and gradient statistics are exactly
where they show up, so every float on the wire may also be one of the strings
``"NaN"``, ``"Infinity"``, ``"-Infinity"``. Standard library and pydantic only.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from pydantic import Field, StrictFloat, StrictInt

NonFinite = Literal["NaN", "Infinity", "-Infinity"]
#: A JSON number that is a finite float. A bare ``NaN``/``Infinity`` token (not JSON, but parsers take it) or
#: ``1e999`` is refused: a non-finite value travels as its string spelling, only where a field allows one.
FiniteFloat = Annotated[StrictFloat, Field(allow_inf_nan=False)]
#: A float as a peer sends it: a finite number or one of the ``NonFinite`` spellings.
WireFloat = FiniteFloat | NonFinite
#: A float the server computed (alert evidence): may be NaN/Infinity in memory, spelt the wire way when sent.
ServerFloat = StrictFloat | NonFinite
#: SQLite integers are signed 64-bit: anything larger could not be stored.
MAX_INT = 2**63 - 1
#: The largest step number (the server reads steps ``0..MAX_STEP``, so a larger one would be stored unseen).
MAX_STEP = 2**62
WireCount = Annotated[StrictInt, Field(ge=0, le=MAX_INT)]
WireStep = Annotated[StrictInt, Field(ge=0, le=MAX_STEP)]
WireId = Annotated[StrictInt, Field(ge=0, le=MAX_INT)]
#: Per-variable NaN and Inf element counts are summed when stored: each leaves room for the other in 64 bits.
MAX_ELEMENT_COUNT = MAX_INT // 2
WireElementCount = Annotated[StrictInt, Field(ge=0, le=MAX_ELEMENT_COUNT)]

_NONFINITE_TO_FLOAT: dict[str, float] = {
    "NaN": math.nan,
    "Infinity": math.inf,
    "-Infinity": -math.inf,
}


def encode_float(x: float) -> float | str:
    """A float as it travels: itself if finite, else its string spelling."""
    if math.isfinite(x):
        return x
    if math.isnan(x):
        return "NaN"
    return "Infinity" if x > 0 else "-Infinity"


def decode_float(x: float | int | str) -> float:
    """Inverse of ``encode_float``; raises ValueError on any other string."""
    if isinstance(x, str):
        try:
            return _NONFINITE_TO_FLOAT[x]
        except KeyError:
            raise ValueError(f"not a wire float: {x!r}; expected a number, 'NaN', 'Infinity' or '-Infinity'") from None
    return float(x)


def _default(obj: Any) -> Any:
    raise TypeError(f"cannot encode {type(obj).__name__} on the gradwatch wire")


def _sanitize(obj: Any) -> Any:
    if isinstance(obj, float):
        return encode_float(obj)
    if isinstance(obj, dict):
        return {k: _sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_sanitize(v) for v in obj]
    return obj


def dumps(obj: Any) -> str:
    """Serialise a message (plain dict/list data) with non-finite floats spelled out."""
    try:
        return json.dumps(obj, allow_nan=False, separators=(",", ":"), default=_default)
    except ValueError:  # a NaN/Inf somewhere: take the slow path once
        return json.dumps(_sanitize(obj), allow_nan=False, separators=(",", ":"), default=_default)
