"""A database written before columns were added opens, gains them, and keeps its runs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gradwatch.server.schema import ADDED_COLUMNS, create_or_upgrade
from gradwatch.server.store import Store
from simtrainer import hello

from gradwatch.protocol import TrainerHello


def columns(path: Path, table: str) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


def test_an_older_database_gains_the_added_columns_and_keeps_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store = Store(path)
    run = store.create_run(TrainerHello.model_validate(hello(name="before-the-upgrade")))
    store.close()
    with sqlite3.connect(path) as conn:  # back to the first release's tables
        for table, column, _ in ADDED_COLUMNS:
            conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    assert all(column not in columns(path, table) for table, column, _ in ADDED_COLUMNS)

    store = Store(path)
    try:
        assert all(column in columns(path, table) for table, column, _ in ADDED_COLUMNS)
        old = store.get_run(run.id)
        assert old is not None and old.name == "before-the-upgrade"
        assert (old.pause_on, old.guard_nonfinite, old.relu_layers, old.lr) == ([], False, [], None)  # the defaults
    finally:
        store.close()


def test_opening_twice_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "twice.db"
    with sqlite3.connect(path) as conn:
        create_or_upgrade(conn)
        first = conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
        create_or_upgrade(conn)
        assert conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall() == first
