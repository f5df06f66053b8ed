"""The page's copies of protocol limits equal the protocol's (the page cannot import Python)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from gradwatch.protocol import ALERT_STATES, MAX_COMPARE, PROTOCOL_VERSION, AlertView

UTIL_JS = Path(__file__).resolve().parents[1] / "client" / "util.js"
ALERTS_JS = UTIL_JS.with_name("alerts.js")


def js_const(name: str) -> int:
    m = re.search(rf"^export const {name} = (\d+);", UTIL_JS.read_text(), re.M)
    assert m, f"client/util.js declares no {name}"
    return int(m.group(1))


def test_page_constants_match_the_protocol() -> None:
    assert js_const("MAX_COMPARE") == MAX_COMPARE
    assert js_const("PROTOCOL_VERSION") == PROTOCOL_VERSION


def test_the_page_reads_an_alerts_state_as_the_protocol_declares_it() -> None:
    text = ALERTS_JS.read_text()
    m = re.search(r"^export const ALERT_STATES = Object\.freeze\((\[.*?\])\);", text, re.M)
    assert m, "client/alerts.js declares no ALERT_STATES"
    assert tuple(json.loads(m.group(1))) == ALERT_STATES
    body = re.search(r"export function isOpen\(a\) \{(.*?)\n\}", text, re.S)
    assert body, "client/alerts.js has no isOpen(a)"
    fields = set(re.findall(r"\ba\.(\w+)", body.group(1)))
    assert fields and fields <= set(AlertView.model_fields), fields  # only fields the protocol sends
