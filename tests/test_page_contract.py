"""The page's contract (client/protocol.js) is generated from the protocol, and no client file copies it by hand."""

from __future__ import annotations

import re
from pathlib import Path

from gradwatch import pagecontract
from gradwatch.protocol import ALERT_KINDS, CLIP_MODES, COMMANDS, RUN_STATUSES, SEVERITIES, AlertView, CloseCode

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "client"
GENERATED = {"protocol.js", "stepfields.js"}
#: The page's hand-written files: its modules and its HTML.
HAND_WRITTEN = sorted(p for p in [*CLIENT.glob("*.js"), *CLIENT.glob("*.html")] if p.name not in GENERATED)


def test_client_protocol_js_is_generated_from_the_protocol() -> None:
    on_disk = (ROOT / pagecontract.JS_PATH).read_text()
    assert on_disk == pagecontract.javascript(), (
        f"{pagecontract.JS_PATH} is stale: run `python -m gradwatch.pagecontract > {pagecontract.JS_PATH}`"
    )


def test_no_client_file_declares_a_protocol_constant_of_its_own() -> None:
    names = "|".join(pagecontract.constants())
    codes = "|".join(str(int(c)) for c in CloseCode if c >= 4000)
    for path in HAND_WRITTEN:
        text = path.read_text()
        assert not re.search(rf"\bconst ({names})\b", text), f"{path.name} declares a constant of protocol.js"
        assert not re.search(rf"\b({codes})\b", text), f"{path.name} spells a close code; use CLOSE from protocol.js"


def test_no_client_file_copies_a_vocabulary() -> None:
    """Three words of one vocabulary quoted in one file is a hand-made copy of its list.

    A button names its one command (``data-cmd``; controls.js refuses one that is not in COMMANDS at load),
    and building or reading one command names its type (``type: "set_lr"``, ``c.type === "rewind"``):
    uses of one word, not copies of the list.
    """
    vocabularies = {
        "RUN_STATUSES": RUN_STATUSES,
        "SEVERITIES": SEVERITIES,
        "COMMANDS": COMMANDS,
        "ALERT_KINDS": ALERT_KINDS,
        "CLIP_MODES": CLIP_MODES,
    }
    for path in HAND_WRITTEN:
        text = re.sub(r'data-cmd="\w+"|type(?::|\s*===)\s*"\w+"', "", path.read_text())
        quoted = set(re.findall(r"[\"'](\w+)[\"']", text))
        for name, words in vocabularies.items():
            copied = sorted(quoted & set(words))
            assert len(copied) < 3, f"{path.name} spells {copied} of {name}: import {name} from protocol.js"


def test_the_words_the_page_compares_are_the_protocols() -> None:
    for path in HAND_WRITTEN:
        text = path.read_text()
        severities = set(re.findall(r"\.severity\s*[!=]==\s*\"(\w+)\"", text))
        statuses = set(re.findall(r"\.status\s*[!=]==\s*\"(\w+)\"", text))
        assert severities <= set(SEVERITIES), (path.name, severities)
        assert statuses <= set(RUN_STATUSES), (path.name, statuses)


def test_the_page_reads_an_alerts_state_from_fields_the_protocol_sends() -> None:
    text = (CLIENT / "alerts.js").read_text()
    body = re.search(r"export function isOpen\(a\) \{(.*?)\n\}", text, re.S)
    assert body, "client/alerts.js has no isOpen(a)"
    fields = set(re.findall(r"\ba\.(\w+)", body.group(1)))
    assert fields and fields <= set(AlertView.model_fields), fields  # only fields the protocol sends
    assert re.search(r"import \{[^}]*\bALERT_STATES\b[^}]*\} from \"\./protocol\.js\"", text)


def test_every_run_status_has_its_help_on_the_page() -> None:
    text = (CLIENT / "status.js").read_text()
    table = re.search(r"const RUN_STATUS_HELP = \{(.*?)\n\};", text, re.S)
    assert table, "client/status.js has no RUN_STATUS_HELP"
    assert tuple(re.findall(r"^  (\w+):", table.group(1), re.M)) == RUN_STATUSES
