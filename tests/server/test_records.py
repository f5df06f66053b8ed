"""The alert and gap records' one declaration (gradwatch/records.py) and every copy derived from it agree."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

from gradwatch.server.alerts import persist
from gradwatch.server.alerts.engine import Alert
from gradwatch.server.export import schema as export_schema
from gradwatch.server.schema import create_or_upgrade
from gradwatch.server.stepcodec import STORED
from gradwatch.server.store import GapRow, RunRow, Store
from gradwatch.server.webhooks import payload

from gradwatch import records
from gradwatch.protocol import AlertView, Gap, GapMessage, GapView

#: The alerts and gaps tables as files in the field have them (PRAGMA table_info: name, type, notnull,
#: default, pk): the file format, which a derived schema must keep column for column.
_ALERTS_ON_DISK = [
    ("id", "INTEGER", 0, None, 1),
    ("run_id", "INTEGER", 1, None, 0),
    ("kind", "TEXT", 1, None, 0),
    ("severity", "TEXT", 1, None, 0),
    ("step", "INTEGER", 1, None, 0),
    ("last_step", "INTEGER", 1, None, 0),
    ("layer", "TEXT", 0, None, 0),
    ("layers", "TEXT", 1, None, 0),
    ("evidence", "TEXT", 1, None, 0),
    ("message", "TEXT", 1, None, 0),
    ("remedies", "TEXT", 1, None, 0),
    ("count", "INTEGER", 1, None, 0),
    ("created_at", "REAL", 1, None, 0),
    ("updated_at", "REAL", 1, None, 0),
    ("state", "TEXT", 1, "'open'", 0),
    ("resolved_step", "INTEGER", 0, None, 0),
    ("latest", "TEXT", 0, None, 0),
]
_GAPS_ON_DISK = [
    ("id", "INTEGER", 0, None, 1),
    ("run_id", "INTEGER", 1, None, 0),
    ("from_step", "INTEGER", 1, None, 0),
    ("to_step", "INTEGER", 1, None, 0),
    ("dropped", "INTEGER", 1, None, 0),
    ("created_at", "REAL", 1, None, 0),
]


def _table(conn: sqlite3.Connection, table: str) -> list[tuple[object, ...]]:
    return [tuple(r[1:]) for r in conn.execute(f"PRAGMA table_info({table})")]


def test_the_tables_are_the_declared_fields_and_keep_the_file_format() -> None:
    conn = sqlite3.connect(":memory:")
    create_or_upgrade(conn)
    assert _table(conn, "alerts") == _ALERTS_ON_DISK
    assert [c[0] for c in _ALERTS_ON_DISK] == list(records.ALERT_NAMES)
    assert _table(conn, "gaps") == _GAPS_ON_DISK
    assert [c[0] for c in _GAPS_ON_DISK] == [f.name for f in records.GAP_TABLE]


def test_the_wire_views_and_the_rows_are_the_declared_fields() -> None:
    assert tuple(AlertView.model_fields) == records.ALERT_NAMES
    assert set(records.ALERT_NAMES) <= {f.name for f in dataclasses.fields(Alert)}
    assert tuple(n for n in Gap.model_fields if n != "type") == records.GAP_NAMES
    assert tuple(GapView.model_fields) == records.GAP_NAMES
    assert tuple(n for n in GapMessage.model_fields if n not in ("type", "run_id")) == records.GAP_NAMES
    assert tuple(f.name for f in dataclasses.fields(GapRow)) == records.GAP_NAMES


def test_a_drifted_model_is_refused() -> None:
    records.check_model_fields("GapRow", records.GAP_NAMES, records.GAP_FIELDS)
    try:
        records.check_model_fields("GapRow", (*records.GAP_NAMES, "extra"), records.GAP_FIELDS)
    except TypeError as e:
        assert "differ" in str(e)
    else:
        raise AssertionError("an extra field passed")


def _alert() -> Alert:
    return Alert(
        1,
        "nonfinite",
        "critical",
        7,
        9,
        "dense/kernel",
        ["dense/kernel"],
        {"x": 1.5, "n": 2},
        "m",
        ["r"],
        latest={"step": 9, "evidence": {"x": 1.0}, "message": "later"},
    )


def test_the_store_keeps_every_declared_field_and_the_webhook_sends_them(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    try:
        store.conn.execute(
            "INSERT INTO runs (name, status, created_at, updated_at, variables, bn_layers, clip_mode, every, meta) "
            "VALUES ('r', 'running', 0, 0, '[]', '[]', 'global_norm', 1, '{}')"
        )
        alert = _alert()
        persist.save_alerts(store.conn, [alert])
        alert.count, alert.state, alert.resolved_step = 2, "resolved", 12
        persist.save_alerts(store.conn, [alert])
        (back,) = persist.list_alerts(store.conn, 1)
        assert back.view() == alert.view()
        assert tuple(back.view()) == records.ALERT_NAMES
        store.add_gap(1, 3, 5, 2)
        assert store.list_gaps(1) == [GapRow(3, 5, 2)]
    finally:
        store.close()
    body = payload(_alert(), "raised", "r", None)
    assert tuple(body["alert"]) == records.ALERT_NAMES


def test_every_export_column_is_a_stored_step_field() -> None:
    run = RunRow(1, "r", "running", 0.0, 0.0, None, ["v"], ["bn"], "global_norm", None, 1, {})
    columns = {f.stored_as for f in STORED}
    assert {name.split(":")[0] for name in export_schema(run).names} == columns
