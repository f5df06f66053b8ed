"""SQLite tables of the alerts and of each run's rule settings (run on the store's database thread)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from gradwatch.protocol import SEVERITIES
from gradwatch.records import ALERT_FIELDS, ALERT_NAMES, RecordField, added_columns, create_table

from .engine import Alert
from .params import RULES, settings
from .spec import RuleSettings

SCHEMA = (
    create_table("alerts", ALERT_FIELDS)
    + """CREATE INDEX IF NOT EXISTS alerts_run ON alerts(run_id, id);
CREATE TABLE IF NOT EXISTS alert_rules (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    kind TEXT NOT NULL,
    muted INTEGER NOT NULL,
    params TEXT NOT NULL,
    PRIMARY KEY (run_id, kind)
);
"""
)
#: The alert columns an older file gains at open (``schema.create_or_upgrade``).
ADDED_COLUMNS = added_columns("alerts", ALERT_FIELDS)

_COLS = ", ".join(ALERT_NAMES)
#: What an update rewrites; an insert also writes the fixed fields (all but ``id``, which SQLite assigns).
_UPDATED = tuple(f for f in ALERT_FIELDS if not f.fixed)
_INSERTED = (*_UPDATED, *(f for f in ALERT_FIELDS if f.fixed and f.name != "id"))
_UPDATE = f"UPDATE alerts SET {', '.join(f'{f.name}=?' for f in _UPDATED)} WHERE id=?"
_INSERT = f"INSERT INTO alerts ({', '.join(f.name for f in _INSERTED)}) VALUES ({', '.join('?' * len(_INSERTED))})"


def _encode(f: RecordField, value: Any) -> Any:
    return json.dumps(value) if f.json and value is not None else value


def _alert(row: tuple[Any, ...]) -> Alert:
    return Alert(
        **{f.name: json.loads(v) if f.json and v is not None else v for f, v in zip(ALERT_FIELDS, row, strict=True)}
    )


def save_alerts(conn: sqlite3.Connection, alerts: list[Alert]) -> None:
    """Insert new alerts (``id`` 0, which is then set) and update the others, in one transaction."""
    with conn:
        conn.execute("BEGIN")
        for a in alerts:
            if a.id:
                conn.execute(_UPDATE, (*(_encode(f, getattr(a, f.name)) for f in _UPDATED), a.id))
            else:
                cur = conn.execute(_INSERT, tuple(_encode(f, getattr(a, f.name)) for f in _INSERTED))
                a.id = int(cur.lastrowid or 0)


def list_alerts(conn: sqlite3.Connection, run_id: int) -> list[Alert]:
    return [_alert(r) for r in conn.execute(f"SELECT {_COLS} FROM alerts WHERE run_id=? ORDER BY id", (run_id,))]


def alert_counts(conn: sqlite3.Connection) -> dict[int, dict[str, int]]:
    """run id -> {"info": i, "warning": n, "critical": m} (runs without alerts are absent)."""
    out: dict[int, dict[str, int]] = {}
    for run_id, severity, n in conn.execute("SELECT run_id, severity, COUNT(*) FROM alerts GROUP BY run_id, severity"):
        out.setdefault(run_id, dict.fromkeys(SEVERITIES, 0))[severity] = n
    return out


def load_rules(conn: sqlite3.Connection, run_id: int) -> dict[str, RuleSettings]:
    rows = conn.execute("SELECT kind, muted, params FROM alert_rules WHERE run_id=?", (run_id,)).fetchall()
    stored = {kind: (bool(muted), json.loads(params)) for kind, muted, params in rows}
    return {kind: settings(kind, *stored.get(kind, (False, {}))) for kind in RULES}


def save_rule(conn: sqlite3.Connection, run_id: int, kind: str, rule: RuleSettings) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO alert_rules (run_id, kind, muted, params) VALUES (?, ?, ?, ?)",
        (run_id, kind, int(rule.muted), json.dumps(rule.params)),
    )
