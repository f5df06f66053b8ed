"""The page's copy of the protocol: ``client/protocol.js``, generated from ``gradwatch/protocol.py``.

The page cannot import Python, so every constant it shares with the server (the version, limits, close
codes and each vocabulary: run statuses, severities, commands, clip modes, alert kinds and labels, alert
states) is written here as ES module constants. ``python -m gradwatch.pagecontract > client/protocol.js``
regenerates it; tests/test_page_contract.py fails when the file and the protocol differ.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from . import protocol as p

JS_PATH = "client/protocol.js"


def _frozen(value: Any) -> str:
    return f"Object.freeze({json.dumps(value)})"


def constants() -> dict[str, tuple[str, Any]]:
    """name -> (what it is, value): what the page shares with the protocol."""
    return {
        "PROTOCOL_VERSION": ("the version both sides' hello carries", p.PROTOCOL_VERSION),
        "MAX_COMPARE": ("runs one comparison may hold (Compare.run_ids)", p.MAX_COMPARE),
        "MAX_CLIP_THRESHOLD": ("largest clip threshold a set_clip takes", p.MAX_CLIP_THRESHOLD),
        "MAX_LEARNING_RATE": ("largest learning rate a set_lr takes", p.MAX_LEARNING_RATE),
        "CLOSE": ("websocket close codes by name (CloseCode)", {c.name: c.value for c in p.CloseCode}),
        "RUN_STATUSES": ("a run's status (RunStatus)", list(p.RUN_STATUSES)),
        "SEVERITIES": ("an alert's severity, lowest first (Severity)", list(p.SEVERITIES)),
        "COMMANDS": ("control command types (CommandType)", list(p.COMMANDS)),
        "CLIP_MODES": ("clip modes (ClipMode)", list(p.CLIP_MODES)),
        "ALERT_KINDS": ("alert kinds, in the server's evaluation order (AlertKind)", list(p.ALERT_KINDS)),
        "ALERT_LABELS": ("what the page calls each alert kind", dict(p.ALERT_LABELS)),
        "ALERT_STATES": ("an alert's lifecycle (AlertView.state)", list(p.ALERT_STATES)),
    }


def javascript() -> str:
    """The text of ``client/protocol.js``."""
    lines = [
        "// Generated from gradwatch/protocol.py by `python -m gradwatch.pagecontract`; do not edit.",
        "// tests/test_page_contract.py fails when this file and the protocol differ.",
        "",
    ]
    for name, (doc, value) in constants().items():
        text = _frozen(value) if isinstance(value, (list, dict)) else json.dumps(value)
        lines += [f"/** {doc[0].upper()}{doc[1:]}. */", f"export const {name} = {text};"]
    return "\n".join([*lines, ""])


if __name__ == "__main__":
    sys.stdout.write(javascript())
