"""The page's copies of protocol limits equal the protocol's (the page cannot import Python)."""

from __future__ import annotations

import re
from pathlib import Path

from gradwatch.protocol import MAX_COMPARE, PROTOCOL_VERSION

UTIL_JS = Path(__file__).resolve().parents[1] / "client" / "util.js"


def js_const(name: str) -> int:
    m = re.search(rf"^export const {name} = (\d+);", UTIL_JS.read_text(), re.M)
    assert m, f"client/util.js declares no {name}"
    return int(m.group(1))


def test_page_constants_match_the_protocol() -> None:
    assert js_const("MAX_COMPARE") == MAX_COMPARE
    assert js_const("PROTOCOL_VERSION") == PROTOCOL_VERSION
