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
        assert (old.pause_on, old.guard_nonfinite, old.relu_layers, old.lr, old.tags, old.note) == (
            [],
            False,
            [],
            None,
            [],
            "",
        )  # the defaults
    finally:
        store.close()


def test_opening_twice_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "twice.db"
    with sqlite3.connect(path) as conn:
        create_or_upgrade(conn)
        first = conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
        create_or_upgrade(conn)
        assert conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall() == first


#: The steps table of the first release, verbatim: a file in the field still has it.
_FIRST_STEPS = """
CREATE TABLE steps (
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
"""


def test_a_first_release_steps_table_gains_the_step_fields_added_since(tmp_path: Path) -> None:
    from gradwatch.server.stepcodec import ROW_COLUMNS
    from simtrainer import record

    from gradwatch.protocol import StepRecord

    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(_FIRST_STEPS)
    store = Store(path)
    try:
        assert set(ROW_COLUMNS) <= columns(path, "steps")
        run = store.create_run(TrainerHello.model_validate(hello()))
        store.insert_steps(
            [(run.id, [StepRecord.model_validate(record(0, update_ratio=[1.0, 2.0, 3.0], skipped=True))])]
        )
        data = store.read_steps(run, None, None)
        assert data.skipped.tolist() == [1] and data.update_ratio.tolist() == [[1.0, 2.0, 3.0]]
    finally:
        store.close()
