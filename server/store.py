"""SQLite persistence (WAL): runs, steps, commands, gaps, probes (alerts: ``alerts/persist.py``).

``Store`` is synchronous and owns one connection; every call goes through its
single worker thread (``await store.call(fn, ...)``), which both keeps big
SQLite work off the event loop and serialises writes with reads, so a read
submitted after a write sees it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any, TypeVar

from gradwatch.protocol import MAX_STEP, Command, CommandState, RunStatus, StepRecord, TrainerHello, decode_float
from gradwatch.records import GAP_FIELDS, GAP_NAMES, check_model_fields
from gradwatch.stepfields import Shape

from . import varsets
from .schema import create_or_upgrade
from .stepcodec import ROW_COLUMNS, StepColumns, concat_columns, record_to_row, rows_to_columns

T = TypeVar("T")
#: How the commands the server posts itself (pause_on, rewind_on) begin their ``origin``.
AUTO_ORIGIN = "auto: "


@dataclass
class RunRow:
    id: int
    name: str
    status: RunStatus
    created_at: float
    updated_at: float
    last_step: int | None
    variables: list[str]
    bn_layers: list[str]
    clip_mode: str
    clip_threshold: float | None
    every: int
    meta: dict[str, Any]
    pause_on: list[str] = field(default_factory=list)
    guard_nonfinite: bool = False
    relu_layers: list[str] = field(default_factory=list)
    #: The learning rate of the latest stored step that reported one.
    lr: float | None = None
    #: The user's labels (``PATCH /api/runs/{id}``), for filtering and comparing runs.
    tags: list[str] = field(default_factory=list)
    note: str = ""
    #: Where the watched variables changed: ``[from_step, [indices into variables]]`` (``server/varsets.py``).
    variable_sets: list[list[Any]] = field(default_factory=list)

    def width(self, shape: Shape, step: int | None = None) -> int:
        """Entries a vector of ``shape`` has: in step ``step``'s record (the door checks records with it; the
        watched variables may change within a run, ``varsets.py``), or with ``step=None`` in the run's columns
        (every variable it ever watched: what reads widen stored rows to)."""
        if shape == "variable":
            return len(self.variables) if step is None else len(varsets.watched_at(self, step))
        return {"scalar": 1, "bn_layer": len(self.bn_layers)}[shape]


@dataclass
class CommandRow:
    id: int
    run_id: int
    type: str
    mode: str | None
    threshold: float | None
    origin: str
    created_at: float
    updated_at: float
    state: CommandState
    applied_step: int | None
    detail: str | None
    lr: float | None = None
    group: str | None = None
    step: int | None = None  # rewind's target

    def to_command(self) -> Command:
        # The server's own rewinds (rewind_on) are the ones it posts with an "auto:" origin, as pause_on's.
        auto = True if self.type == "rewind" and self.origin.startswith(AUTO_ORIGIN) else None
        return Command(
            type=self.type,
            mode=self.mode,
            threshold=self.threshold,
            lr=self.lr,
            group=self.group,
            step=self.step,
            auto=auto,
        )


@dataclass
class GapRow:
    """A stored gap: the fields of ``gradwatch.records.GAP_FIELDS`` (checked below)."""

    from_step: int
    to_step: int
    dropped: int


check_model_fields("GapRow", tuple(f.name for f in dataclass_fields(GapRow)), GAP_FIELDS)

_RUN_COLS = (
    "id, name, status, created_at, updated_at, last_step, variables, bn_layers, clip_mode, clip_threshold, "
    "every, meta, pause_on, guard_nonfinite, relu_layers, lr, tags, note, variable_sets"
)
_CMD_COLS = (
    "id, run_id, type, mode, threshold, origin, created_at, updated_at, state, applied_step, detail, lr, "
    "optimizer_group, target_step"
)
_GAP_COLS = ", ".join(GAP_NAMES)
_INSERT_GAP = f"INSERT INTO gaps (run_id, {_GAP_COLS}, created_at) VALUES (?, {', '.join('?' * len(GAP_NAMES))}, ?)"
_INSERT_STEP = f"INSERT OR REPLACE INTO steps ({', '.join(ROW_COLUMNS)}) VALUES ({', '.join('?' * len(ROW_COLUMNS))})"


def _run(row: Sequence[Any]) -> RunRow:
    return RunRow(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        json.loads(row[6]),
        json.loads(row[7]),
        row[8],
        row[9],
        row[10],
        json.loads(row[11]),
        json.loads(row[12]),
        bool(row[13]),
        json.loads(row[14]),
        row[15],
        json.loads(row[16]),
        row[17],
        json.loads(row[18]),
    )


class Store:
    #: Rows ``read_steps`` decodes at a time.
    READ_CHUNK = 5000

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")  # durable across a process crash
        self._conn.execute("PRAGMA mmap_size=268435456")  # long-run reads map the file instead of copying it
        create_or_upgrade(self._conn)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gradwatch-db")

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection, for functions run through ``call`` (on the database thread only)."""
        return self._conn

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the database thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._conn.close()

    # ------------------------------------------------------------------ runs

    def mark_stale_runs_disconnected(self) -> None:
        """At start-up no trainer is connected yet, whatever the last process believed."""
        self._conn.execute("UPDATE runs SET status='disconnected' WHERE status IN ('running', 'paused', 'idle')")

    def create_run(self, hello: TrainerHello) -> RunRow:
        now = time.time()
        cur = self._conn.execute(
            "INSERT INTO runs (name, status, created_at, updated_at, last_step, variables, bn_layers, clip_mode, "
            "clip_threshold, every, meta, pause_on, guard_nonfinite, relu_layers) "
            "VALUES (?, 'running', ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                hello.run_name,
                now,
                now,
                json.dumps(hello.variables),
                json.dumps(hello.bn_layers),
                hello.clip.mode,
                hello.clip.threshold,
                hello.every,
                json.dumps(hello.meta),
                json.dumps(list(hello.pause_on)),
                int(hello.guard_nonfinite),
                json.dumps(hello.relu_layers),
            ),
        )
        run = self.get_run(int(cur.lastrowid or 0))
        assert run is not None
        return run

    def get_run(self, run_id: int) -> RunRow | None:
        row = self._conn.execute(f"SELECT {_RUN_COLS} FROM runs WHERE id=?", (run_id,)).fetchone()
        return _run(row) if row else None

    def list_runs(self) -> list[RunRow]:
        return [_run(r) for r in self._conn.execute(f"SELECT {_RUN_COLS} FROM runs ORDER BY id DESC")]

    def update_run(self, run_id: int, *, touch: bool = True, **fields: Any) -> RunRow | None:
        """Set ``fields``; ``touch=False`` keeps ``updated_at`` (the user's labels are not the run's activity)."""
        allowed = {
            "status",
            "clip_mode",
            "clip_threshold",
            "every",
            "meta",
            "name",
            "pause_on",
            "guard_nonfinite",
            "relu_layers",
            "lr",
            "tags",
            "note",
            "variables",
            "variable_sets",
        }
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update run fields {sorted(unknown)}")
        for name in ("meta", "pause_on", "relu_layers", "tags", "variables", "variable_sets"):
            if name in fields:
                fields[name] = json.dumps(fields[name])
        if touch:
            fields["updated_at"] = time.time()
        sets = ", ".join(f"{k}=?" for k in fields)
        self._conn.execute(f"UPDATE runs SET {sets} WHERE id=?", (*fields.values(), run_id))
        return self.get_run(run_id)

    # ------------------------------------------------------------------ steps

    def insert_steps(self, batch: list[tuple[int, list[StepRecord]]]) -> None:
        """Write a batch in one transaction; a re-sent step replaces the stored one."""
        now = time.time()
        with self._conn:
            self._conn.execute("BEGIN")
            for run_id, records in batch:
                self._conn.executemany(_INSERT_STEP, [record_to_row(run_id, r) for r in records])
                top = max(r.step for r in records)
                latest = max(records, key=lambda r: r.step)
                lr = None if latest.lr is None else decode_float(latest.lr)
                lr = lr if lr is not None and math.isfinite(lr) else None
                self._conn.execute(
                    "UPDATE runs SET lr=CASE WHEN ? >= COALESCE(last_step, -1) AND ? IS NOT NULL THEN ? ELSE lr END, "
                    "last_step=MAX(COALESCE(last_step, -1), ?), updated_at=? WHERE id=?",
                    (top, lr, lr, top, now, run_id),
                )

    def read_steps(self, run: RunRow, since_step: int | None, until_step: int | None) -> StepColumns:
        lo = since_step if since_step is not None else -1
        hi = until_step if until_step is not None else MAX_STEP
        cursor = self._conn.execute(
            f"SELECT {', '.join(ROW_COLUMNS[1:])} FROM steps WHERE run_id=? AND step BETWEEN ? AND ? ORDER BY step",
            (run.id, lo, hi),
        )
        # Decoded chunk by chunk: a whole long run's rows (100,000 tuples and blobs) at once
        # would cost a fresh few hundred MB, and page faults, on every request.
        parts = []
        while rows := cursor.fetchmany(self.READ_CHUNK):
            parts += self._decode(run, rows)
        return concat_columns(parts, len(run.variables), len(run.bn_layers))

    def read_step_page(self, run: RunRow, after_step: int, until_step: int, limit: int) -> StepColumns:
        """At most ``limit`` steps in ``(after_step, until_step]``, in order (an export reads a run page by page)."""
        rows = self._conn.execute(
            f"SELECT {', '.join(ROW_COLUMNS[1:])} FROM steps WHERE run_id=? AND step > ? AND step <= ? "
            "ORDER BY step LIMIT ?",
            (run.id, after_step, until_step, limit),
        ).fetchall()
        return concat_columns(self._decode(run, rows), len(run.variables), len(run.bn_layers))

    @staticmethod
    def _decode(run: RunRow, rows: list[tuple[Any, ...]]) -> list[StepColumns]:
        """Rows (in step order) as the run's columns, each stretch by the variables its steps carried."""
        nv, nb = len(run.variables), len(run.bn_layers)
        if not run.variable_sets or not rows:
            return [rows_to_columns(rows, nv, nb)]
        steps = [r[0] for r in rows]
        out = []
        for start, end in varsets.segments(steps, run.variables, run.variable_sets):
            active = varsets.variables_at(run.variables, run.variable_sets, steps[start])
            out.append(varsets.widen(rows_to_columns(rows[start:end], len(active), nb), active, nv))
        return out

    def count_steps(self, run_id: int) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM steps WHERE run_id=?", (run_id,)).fetchone()[0])

    # ------------------------------------------------------------------ gaps

    def add_gap(self, run_id: int, from_step: int, to_step: int, dropped: int) -> None:
        self._conn.execute(_INSERT_GAP, (run_id, from_step, to_step, dropped, time.time()))

    def list_gaps(self, run_id: int) -> list[GapRow]:
        rows = self._conn.execute(f"SELECT {_GAP_COLS} FROM gaps WHERE run_id=? ORDER BY id", (run_id,))
        return [GapRow(*r) for r in rows]

    # ------------------------------------------------------------------ probes

    def add_probe(self, run_id: int, step: int, dead_relu: dict[str, float], bn_gap: dict[str, float]) -> None:
        """A probe at a step already stored is replaced (a trainer re-sends after a reconnect)."""
        self._conn.execute(
            "INSERT OR REPLACE INTO probes (run_id, step, dead_relu, bn_gap) VALUES (?, ?, ?, ?)",
            (run_id, step, json.dumps(dead_relu), json.dumps(bn_gap)),
        )

    def read_probes(
        self, run_id: int, since_step: int | None, until_step: int | None
    ) -> list[tuple[int, dict[str, float], dict[str, float]]]:
        lo = since_step if since_step is not None else -1
        hi = until_step if until_step is not None else MAX_STEP
        rows = self._conn.execute(
            "SELECT step, dead_relu, bn_gap FROM probes WHERE run_id=? AND step BETWEEN ? AND ? ORDER BY step",
            (run_id, lo, hi),
        )
        return [(step, json.loads(dead), json.loads(gap)) for step, dead, gap in rows]

    # ------------------------------------------------------------------ commands

    def create_command(self, run_id: int, command: Command, origin: str) -> CommandRow:
        now = time.time()
        threshold = float(command.threshold) if command.threshold is not None else None
        lr = float(command.lr) if command.lr is not None else None
        cur = self._conn.execute(
            "INSERT INTO commands (run_id, type, mode, threshold, lr, optimizer_group, target_step, origin, created_at,"
            " updated_at, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending')",
            (run_id, command.type, command.mode, threshold, lr, command.group, command.step, origin, now, now),
        )
        cmd = self.get_command(int(cur.lastrowid or 0))
        assert cmd is not None
        return cmd

    def get_command(self, command_id: int) -> CommandRow | None:
        row = self._conn.execute(f"SELECT {_CMD_COLS} FROM commands WHERE id=?", (command_id,)).fetchone()
        return CommandRow(*row) if row else None

    def list_commands(self, run_id: int, state: CommandState | None = None) -> list[CommandRow]:
        if state is None:
            rows = self._conn.execute(f"SELECT {_CMD_COLS} FROM commands WHERE run_id=? ORDER BY id", (run_id,))
        else:
            rows = self._conn.execute(
                f"SELECT {_CMD_COLS} FROM commands WHERE run_id=? AND state=? ORDER BY id", (run_id, state)
            )
        return [CommandRow(*r) for r in rows]

    def resolve_command(
        self, command_id: int, state: CommandState, applied_step: int | None, detail: str | None
    ) -> CommandRow | None:
        """pending -> applied/rejected; returns None when the command was not pending (guarded transition)."""
        cur = self._conn.execute(
            "UPDATE commands SET state=?, applied_step=?, detail=?, updated_at=? WHERE id=? AND state='pending'",
            (state, applied_step, detail, time.time(), command_id),
        )
        return self.get_command(command_id) if cur.rowcount == 1 else None

    def reject_pending(self, run_id: int, detail: str) -> list[CommandRow]:
        """Commands still pending when a run finishes can never apply."""
        ids = [c.id for c in self.list_commands(run_id, "pending")]
        out = []
        for cid in ids:
            cmd = self.resolve_command(cid, "rejected", None, detail)
            if cmd is not None:
                out.append(cmd)
        return out
