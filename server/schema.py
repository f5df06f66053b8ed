"""The database's tables, and the columns added since the first release (added to older files at open)."""

from __future__ import annotations

import sqlite3

from .alerts import persist as alert_persist

_SCHEMA = """
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
CREATE TABLE IF NOT EXISTS steps (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    step INTEGER NOT NULL,
    time REAL NOT NULL,
    loss REAL, lr REAL, global_norm REAL, clip_threshold REAL, clip_scale REAL,
    clipped_fraction REAL, steps_per_sec REAL,
    epoch INTEGER NOT NULL, clipped INTEGER NOT NULL, weight_nonfinite INTEGER NOT NULL,
    loss_nonfinite INTEGER NOT NULL,
    clip_mode TEXT NOT NULL,
    nan_mask INTEGER NOT NULL,
    grad_norm BLOB NOT NULL,
    nonfinite BLOB,
    bn BLOB,
    PRIMARY KEY (run_id, step)
) WITHOUT ROWID;
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
CREATE TABLE IF NOT EXISTS gaps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    from_step INTEGER NOT NULL,
    to_step INTEGER NOT NULL,
    dropped INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS gaps_run ON gaps(run_id, id);
CREATE TABLE IF NOT EXISTS probes (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    step INTEGER NOT NULL,
    dead_relu TEXT NOT NULL,
    bn_gap TEXT NOT NULL,
    PRIMARY KEY (run_id, step)
) WITHOUT ROWID;
"""

#: Columns added after the first release: (table, column, declaration). Added to older databases at open.
ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("runs", "pause_on", "TEXT NOT NULL DEFAULT '[]'"),
    ("runs", "guard_nonfinite", "INTEGER NOT NULL DEFAULT 0"),
    ("runs", "relu_layers", "TEXT NOT NULL DEFAULT '[]'"),
    ("runs", "lr", "REAL"),
    ("steps", "update_ratio", "BLOB"),
    ("steps", "skipped", "INTEGER NOT NULL DEFAULT 0"),
    ("commands", "lr", "REAL"),
)


def create_or_upgrade(conn: sqlite3.Connection) -> None:
    """Create what is missing: a new file gets every table, an older one the columns added since."""
    conn.executescript(_SCHEMA)
    conn.executescript(alert_persist.SCHEMA)
    for table, column, decl in ADDED_COLUMNS:
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
