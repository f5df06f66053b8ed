"""The page's copy of the protocol: ``client/protocol.js``, generated from ``gradwatch/protocol/``.

The page cannot import Python, so every constant it shares with the server (the version, limits, close
codes and each vocabulary: run statuses, severities, commands, clip modes, alert kinds and labels, alert
states) is written here as ES module constants. ``python -m gradwatch.pagecontract > client/protocol.js``
regenerates it; tests/test_page_contract.py fails when the file and the protocol differ.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from pydantic import TypeAdapter

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


#: Vocabularies a message field may name instead of spelling its words (JSDoc type name -> words).
_NAMED = {
    "AlertKind": p.ALERT_KINDS,
    "Severity": p.SEVERITIES,
    "RunStatus": p.RUN_STATUSES,
    "TrainerState": p.TRAINER_STATES,
    "ClipMode": p.CLIP_MODES,
    "CommandType": p.COMMANDS,
    "AlertState": p.ALERT_STATES,
}


def _jsdoc_type(schema: dict[str, Any]) -> str:
    """A JSON schema (pydantic's) as a JSDoc type."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return "(" + "|".join(dict.fromkeys(_jsdoc_type(s) for s in schema["anyOf"])) + ")"
    if "const" in schema:
        return json.dumps(schema["const"])
    if "enum" in schema:
        named = [n for n, words in _NAMED.items() if tuple(schema["enum"]) == words]
        return named[0] if named else "|".join(json.dumps(v) for v in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        return f"Array<{_jsdoc_type(schema.get('items', {}))}>"
    if kind == "object":
        extra = schema.get("additionalProperties")
        return f"Object<string, {_jsdoc_type(extra)}>" if isinstance(extra, dict) else "Object"
    return {"integer": "number", "number": "number", "string": "string", "boolean": "boolean", "null": "null"}.get(
        str(kind), "*"
    )


def typedefs() -> list[str]:
    """JSDoc typedefs of every message the page receives or sends, with the models they contain.

    Every property is listed as present: the server sends every field (``model_dump``), the page every one it names.
    """
    schema = TypeAdapter(p.PageMessage | p.BrowserHello | p.Subscribe | p.Compare).json_schema(mode="serialization")
    lines = [f"/** @typedef {{{'|'.join(json.dumps(w) for w in words)}}} {name} */" for name, words in _NAMED.items()]
    for name, model in sorted(schema["$defs"].items()):
        lines += ["/**", f" * @typedef {{Object}} {name}"]
        for field, spec in model.get("properties", {}).items():
            lines.append(f" * @property {{{_jsdoc_type(spec)}}} {field}")
        lines.append(" */")
    return lines


def javascript() -> str:
    """The text of ``client/protocol.js``."""
    lines = [
        "// Generated from gradwatch/protocol/ by `python -m gradwatch.pagecontract`; do not edit.",
        "// tests/test_page_contract.py fails when this file and the protocol differ.",
        "",
    ]
    for name, (doc, value) in constants().items():
        text = _frozen(value) if isinstance(value, (list, dict)) else json.dumps(value)
        lines += [f"/** {doc[0].upper()}{doc[1:]}. */", f"export const {name} = {text};"]
    lines += ["", "// The messages' shapes (docs/protocol.md), as JSDoc types for editors.", *typedefs()]
    return "\n".join([*lines, ""])


if __name__ == "__main__":
    sys.stdout.write(javascript())
