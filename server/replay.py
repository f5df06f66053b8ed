"""Trainer sessions the server has seen (by ``hello.uid``), and what a re-played session adds.

A run file (``gradwatch sync``) says hello with its session's uid. A uid the
server already has continues that session's run *as a replay*: only steps,
probes and gaps the run does not have yet are taken (and alerted on), so
syncing the same file twice, or a spool file after its live run, adds nothing
that is already there. ``RUN_UIDS`` is the table behind it; the functions run
on the database thread (``Store.call``).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from gradwatch.protocol import Gap, Probe, StepRecord
from gradwatch.records import GAP_NAMES

#: One row per trainer session that said hello with a uid (a resumed run has several).
RUN_UIDS = """
CREATE TABLE IF NOT EXISTS run_uids (
    uid TEXT PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id)
) WITHOUT ROWID;
"""


def run_for_uid(conn: sqlite3.Connection, uid: str) -> int | None:
    row = conn.execute("SELECT run_id FROM run_uids WHERE uid=?", (uid,)).fetchone()
    return None if row is None else int(row[0])


def remember_uid(conn: sqlite3.Connection, uid: str, run_id: int) -> None:
    conn.execute("INSERT OR IGNORE INTO run_uids (uid, run_id) VALUES (?, ?)", (uid, run_id))


def _stored_steps(conn: sqlite3.Connection, run_id: int, low: int, high: int) -> set[int]:
    rows = conn.execute("SELECT step FROM steps WHERE run_id=? AND step BETWEEN ? AND ?", (run_id, low, high))
    return {int(r[0]) for r in rows}


def _has_probe(conn: sqlite3.Connection, run_id: int, step: int) -> bool:
    return conn.execute("SELECT 1 FROM probes WHERE run_id=? AND step=?", (run_id, step)).fetchone() is not None


def _has_gap(conn: sqlite3.Connection, run_id: int, gap: Gap) -> bool:
    where = " AND ".join(f"{name}=?" for name in GAP_NAMES)
    row = conn.execute(
        f"SELECT 1 FROM gaps WHERE run_id=? AND {where}", (run_id, *(getattr(gap, n) for n in GAP_NAMES))
    ).fetchone()
    return row is not None


@dataclass
class Replay:
    """A connection re-playing a session the run already has (part of): what it adds is new only.

    Call with the store's connection on the database thread, after the batched writer was flushed.
    """

    run_id: int
    #: Steps this connection added: a ``nonfinite_origin`` is only news for one of them.
    added: set[int] = field(default_factory=set)

    def new_records(self, conn: sqlite3.Connection, records: list[StepRecord]) -> list[StepRecord]:
        have = _stored_steps(conn, self.run_id, min(r.step for r in records), max(r.step for r in records))
        fresh = [r for r in records if r.step not in have and r.step not in self.added]
        self.added.update(r.step for r in fresh)
        return fresh

    def new_probe(self, conn: sqlite3.Connection, probe: Probe) -> bool:
        return not _has_probe(conn, self.run_id, probe.step)

    def new_gap(self, conn: sqlite3.Connection, gap: Gap) -> bool:
        return not _has_gap(conn, self.run_id, gap)
