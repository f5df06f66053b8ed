"""SQLite tables of the alerts and of each run's rule settings (run on the store's database thread)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from gradwatch.protocol import SEVERITIES

from .engine import Alert
from .params import RULES, settings
from .spec import RuleSettings

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    step INTEGER NOT NULL,
    last_step INTEGER NOT NULL,
    layer TEXT,
    layers TEXT NOT NULL,
    evidence TEXT NOT NULL,
    message TEXT NOT NULL,
    remedies TEXT NOT NULL,
    count INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'open',
    resolved_step INTEGER,
    latest TEXT
);
CREATE INDEX IF NOT EXISTS alerts_run ON alerts(run_id, id);
CREATE TABLE IF NOT EXISTS alert_rules (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    kind TEXT NOT NULL,
    muted INTEGER NOT NULL,
    params TEXT NOT NULL,
    PRIMARY KEY (run_id, kind)
);
"""

_COLS = (
    "id, run_id, kind, severity, step, last_step, layer, layers, evidence, message, remedies, count, "
    "created_at, updated_at, state, resolved_step, latest"
)


def _alert(row: tuple[Any, ...]) -> Alert:
    return Alert(
        id=row[0],
        run_id=row[1],
        kind=row[2],
        severity=row[3],
        step=row[4],
        last_step=row[5],
        layer=row[6],
        layers=json.loads(row[7]),
        evidence=json.loads(row[8]),
        message=row[9],
        remedies=json.loads(row[10]),
        count=row[11],
        created_at=row[12],
        updated_at=row[13],
        state=row[14],
        resolved_step=row[15],
        latest=json.loads(row[16]) if row[16] is not None else None,
    )


def save_alerts(conn: sqlite3.Connection, alerts: list[Alert]) -> None:
    """Insert new alerts (``id`` 0, which is then set) and update the others, in one transaction."""
    with conn:
        conn.execute("BEGIN")
        for a in alerts:
            latest = json.dumps(a.latest) if a.latest is not None else None
            values = (
                a.step,
                a.last_step,
                a.layer,
                json.dumps(a.layers),
                json.dumps(a.evidence),
                a.message,
                json.dumps(a.remedies),
                a.count,
                a.updated_at,
                a.severity,
                a.state,
                a.resolved_step,
                latest,
            )
            if a.id:
                conn.execute(
                    "UPDATE alerts SET step=?, last_step=?, layer=?, layers=?, evidence=?, message=?, "
                    "remedies=?, count=?, updated_at=?, severity=?, state=?, resolved_step=?, latest=? "
                    "WHERE id=?",
                    (*values, a.id),
                )
            else:
                cur = conn.execute(
                    "INSERT INTO alerts (step, last_step, layer, layers, evidence, message, remedies, count, "
                    "updated_at, severity, state, resolved_step, latest, run_id, kind, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*values, a.run_id, a.kind, a.created_at),
                )
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
