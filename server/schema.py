"""The database's tables, and the columns added since the first release (added to older files at open)."""

from __future__ import annotations

import sqlite3

from gradwatch.records import GAP_TABLE, create_table

from .alerts import persist as alert_persist
from .replay import RUN_UIDS
from .stepcodec import STORED, sql_declaration


def steps_table() -> str:
    """``CREATE TABLE steps``, one column per stored step field (``gradwatch.stepfields``)."""
    columns = ",\n    ".join(f"{f.stored_as} {sql_declaration(f)}" for f in STORED)
    return (
        f"CREATE TABLE IF NOT EXISTS steps (\n    run_id INTEGER NOT NULL REFERENCES runs(id),\n    {columns},\n"
        "    nan_mask INTEGER NOT NULL,\n    PRIMARY KEY (run_id, step)\n) WITHOUT ROWID;\n"
    )


_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    last_step INTEGER,
    variables TEXT NOT NULL,
    bn_layers TEXT NOT NULL,
    clip_mode TEXT NOT NULL,
    clip_threshold REAL,
    every INTEGER NOT NULL,
    meta TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    type TEXT NOT NULL,
    mode TEXT,
    threshold REAL,
    origin TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    state TEXT NOT NULL,
    applied_step INTEGER,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS commands_run ON commands(run_id, id);
"""
    + create_table("gaps", GAP_TABLE)  # gradwatch/records.py
    + """CREATE INDEX IF NOT EXISTS gaps_run ON gaps(run_id, id);
CREATE TABLE IF NOT EXISTS probes (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    step INTEGER NOT NULL,
    dead_relu TEXT NOT NULL,
    bn_gap TEXT NOT NULL,
    PRIMARY KEY (run_id, step)
) WITHOUT ROWID;
"""
)

#: Columns added after the first release: (table, column, declaration). Added to older databases at open.
#: (The steps table's come from the step fields: any stored field missing from an older file.)
ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("runs", "pause_on", "TEXT NOT NULL DEFAULT '[]'"),
    ("runs", "guard_nonfinite", "INTEGER NOT NULL DEFAULT 0"),
    ("runs", "relu_layers", "TEXT NOT NULL DEFAULT '[]'"),
    ("runs", "lr", "REAL"),
    ("commands", "lr", "REAL"),
    ("runs", "tags", "TEXT NOT NULL DEFAULT '[]'"),
    ("runs", "note", "TEXT NOT NULL DEFAULT ''"),
    ("commands", "optimizer_group", "TEXT"),  # Command.group ("group" is an SQL keyword)
    ("runs", "variable_sets", "TEXT NOT NULL DEFAULT '[]'"),  # server/varsets.py
    ("commands", "target_step", "INTEGER"),  # Command.step (rewind)
    *alert_persist.ADDED_COLUMNS,  # the alert record's (gradwatch/records.py)
)


def create_or_upgrade(conn: sqlite3.Connection) -> None:
    """Create what is missing: a new file gets every table, an older one the columns added since."""
    conn.executescript(_SCHEMA)
    conn.executescript(steps_table())
    conn.executescript(alert_persist.SCHEMA)
    conn.executescript(RUN_UIDS)
    added = [("steps", f.stored_as, sql_declaration(f)) for f in STORED]
    for table, column, decl in (*ADDED_COLUMNS, *added):
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
