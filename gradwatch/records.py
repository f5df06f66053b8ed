"""The alert record's and the gap record's fields, declared once.

The SQLite tables and their reads and writes (``server/alerts/persist.py``, ``server/schema.py``,
``server/store.py``), and the checks of the wire views (``protocol.AlertView``, whose fields the
webhook's ``alert`` and the page's ``alert`` message carry; ``protocol.Gap``, ``GapView``,
``GapMessage``) derive from these tuples; ``tests/server/test_records.py`` fails when one drifts.
The step record has its own, richer table: ``gradwatch/stepfields.py``.

Standard library only: the server and the protocol import it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RecordField:
    name: str
    #: Its SQLite column declaration (the column has the field's name).
    sql: str
    #: A list or dict, kept as JSON text (``None`` stays SQL NULL).
    json: bool = False
    #: Set when the row is created, never updated afterwards.
    fixed: bool = False
    #: Added after the first release: an older file gains it at open (``ALTER TABLE ... ADD COLUMN``).
    added: bool = False


#: One alert episode (docs/alerts.md), in the ``alerts`` table's column order and ``AlertView``'s field order.
ALERT_FIELDS: tuple[RecordField, ...] = (
    RecordField("id", "INTEGER PRIMARY KEY AUTOINCREMENT", fixed=True),
    RecordField("run_id", "INTEGER NOT NULL REFERENCES runs(id)", fixed=True),
    RecordField("kind", "TEXT NOT NULL", fixed=True),
    RecordField("severity", "TEXT NOT NULL"),
    RecordField("step", "INTEGER NOT NULL"),
    RecordField("last_step", "INTEGER NOT NULL"),
    RecordField("layer", "TEXT"),
    RecordField("layers", "TEXT NOT NULL", json=True),
    RecordField("evidence", "TEXT NOT NULL", json=True),
    RecordField("message", "TEXT NOT NULL"),
    RecordField("remedies", "TEXT NOT NULL", json=True),
    RecordField("count", "INTEGER NOT NULL"),
    RecordField("created_at", "REAL NOT NULL", fixed=True),
    RecordField("updated_at", "REAL NOT NULL"),
    # Alerts stored before they could resolve are open.
    RecordField("state", "TEXT NOT NULL DEFAULT 'open'", added=True),
    RecordField("resolved_step", "INTEGER", added=True),
    RecordField("latest", "TEXT", json=True, added=True),
)

#: A stretch of steps the trainer dropped (its buffer overflowed while the server was away), as on the wire.
GAP_FIELDS: tuple[RecordField, ...] = (
    RecordField("from_step", "INTEGER NOT NULL"),
    RecordField("to_step", "INTEGER NOT NULL"),
    RecordField("dropped", "INTEGER NOT NULL"),
)
#: The ``gaps`` table: the record between the row's own bookkeeping columns.
GAP_TABLE: tuple[RecordField, ...] = (
    RecordField("id", "INTEGER PRIMARY KEY AUTOINCREMENT", fixed=True),
    RecordField("run_id", "INTEGER NOT NULL REFERENCES runs(id)", fixed=True),
    *GAP_FIELDS,
    RecordField("created_at", "REAL NOT NULL", fixed=True),
)

ALERT_NAMES: tuple[str, ...] = tuple(f.name for f in ALERT_FIELDS)
GAP_NAMES: tuple[str, ...] = tuple(f.name for f in GAP_FIELDS)


def create_table(table: str, fields: tuple[RecordField, ...]) -> str:
    """``CREATE TABLE IF NOT EXISTS`` with one column per field, in order."""
    columns = ",\n    ".join(f"{f.name} {f.sql}" for f in fields)
    return f"CREATE TABLE IF NOT EXISTS {table} (\n    {columns}\n);\n"


def added_columns(table: str, fields: tuple[RecordField, ...]) -> tuple[tuple[str, str, str], ...]:
    """``(table, column, declaration)`` of the fields added since the first release, in order."""
    return tuple((table, f.name, f.sql) for f in fields if f.added)


def check_model_fields(model: str, names: tuple[str, ...], fields: tuple[RecordField, ...]) -> None:
    """Raise unless a wire model's field names are ``fields``', in order."""
    want = tuple(f.name for f in fields)
    if names != want:
        raise TypeError(f"{model} fields {names} differ from gradwatch.records {want}")
