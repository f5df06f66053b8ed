"""Every alert rule's tunable numbers, as each kind declares them (``KindSpec.params``), and the PATCH API.

A rule's settings for one run are ``RuleSettings(muted, params)``; ``validate_patch``
checks a PATCH body against ``RULES`` and names the offending key when it is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .kinds import SPECS
from .spec import Param, RuleSettings

#: kind -> parameter name -> Param (docs/alerts.md's tables; tests/server/test_alert_kinds.py checks them).
RULES: dict[str, Mapping[str, Param]] = {kind: spec.params for kind, spec in SPECS.items()}


def defaults(kind: str) -> dict[str, float]:
    return {name: p.default for name, p in RULES[kind].items()}


def settings(kind: str, muted: bool = False, params: dict[str, float] | None = None) -> RuleSettings:
    merged = defaults(kind)
    for k, v in (params or {}).items():
        if k in merged:  # a stored parameter that a newer version dropped is ignored
            merged[k] = float(v)
    return RuleSettings(muted, merged, RULES[kind])


class PatchError(ValueError):
    """A PATCH body the rules cannot take; ``str(e)`` names the key and the allowed values."""


def validate_patch(kind: str, body: dict[str, Any]) -> tuple[bool | None, dict[str, float]]:
    """``(muted or None, params)`` from ``{muted?: bool, params?: {name: number}}``; raises PatchError."""
    spec = RULES[kind]
    unknown = set(body) - {"muted", "params"}
    if unknown:
        raise PatchError(f"unknown field(s) {sorted(unknown)}; the body takes 'muted' (bool) and 'params' (object)")
    muted = body.get("muted")
    if muted is not None and not isinstance(muted, bool):
        raise PatchError(f"muted must be true or false (got {muted!r})")
    raw = body.get("params") or {}
    if not isinstance(raw, dict):
        raise PatchError(f"params must be an object of name: number (got {raw!r})")
    out: dict[str, float] = {}
    for name, value in raw.items():
        if name not in spec:
            known = ", ".join(sorted(spec)) or "none"
            raise PatchError(f"{kind} has no parameter {name!r}; its parameters: {known}")
        p = spec[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise PatchError(f"{kind}.{name} must be a finite number (got {value!r})")
        if p.integer and float(value) != int(value):
            raise PatchError(f"{kind}.{name} must be a whole number (got {value!r})")
        if not p.low <= value <= p.high:
            raise PatchError(f"{kind}.{name} must be between {p.low:g} and {p.high:g} (got {value!r})")
        out[name] = float(value)
    return muted, out
