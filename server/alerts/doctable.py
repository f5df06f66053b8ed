"""docs/alerts.md's parameter table of each kind, written from the kinds' declarations (``KindSpec.params``).

``python -m gradwatch.server.alerts.doctable`` rewrites the tables in docs/alerts.md in place;
tests/server/test_alert_kinds.py fails when the file and the declarations differ.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

from .kinds import SPECS
from .spec import KindSpec

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "alerts.md"
HEADER = "| parameter | default | range | meaning |\n|---|---|---|---|\n"


def number(x: float) -> str:
    """A bound or default as the docs spell it: ``1e5`` for large powers of ten, else the shortest form."""
    if x >= 1e5 and math.log10(x).is_integer():
        return f"1e{round(math.log10(x))}"
    return re.sub(r"e([+-])0*(\d)", lambda m: "e" + m.group(1).replace("+", "") + m.group(2), f"{x:g}")


def table(spec: KindSpec) -> str:
    rows = []
    for name, p in spec.params.items():
        bounds = f"{number(p.low)} \u2013 {number(p.high)}" + (" (integer)" if p.integer else "")
        meaning = re.sub(r"(?<=\S) x (?=\S)", " \u00d7 ", p.doc)
        rows.append(f"| `{name}` | {number(p.default)} | {bounds} | {meaning} |\n")
    return HEADER + "".join(rows)


def section_heading(spec: KindSpec) -> str:
    """The start of the kind's section: its name and default severity."""
    return f"### `{spec.kind}` — {spec.severity}"


def update(text: str) -> str:
    """``text`` (docs/alerts.md) with each kind's table (the first after its section heading) as declared."""
    for spec in SPECS.values():
        start = text.find(section_heading(spec))
        if start < 0:
            raise LookupError(f"docs/alerts.md has no section starting {section_heading(spec)!r}")
        at = text.find(HEADER, start)
        following = text.find("\n### ", start + 1)
        if at < 0 or (following >= 0 and at > following):
            raise LookupError(f"docs/alerts.md: the section of {spec.kind} has no parameter table")
        end = text.find("\n\n", at)
        end = len(text) if end < 0 else end + 1
        text = text[:at] + table(spec) + text[end:]
    return text


if __name__ == "__main__":
    DOC_PATH.write_text(update(DOC_PATH.read_text()))
    sys.stdout.write(f"wrote {DOC_PATH}\n")
