"""An append-only run file on the trainer's disk: an offline run, or reports spooled while the server was away.

Line 1 is a ``RunFileHeader`` (the session's unique id), line 2 the session's
``hello``, then the messages the websocket would carry, one JSON object per
line (docs/protocol.md, "Run files"). ``gradwatch sync`` uploads it later.

Only the transport's sender thread writes, never the training thread. Every
line is flushed to the kernel as it is written (the sender writes at most one
frame per ``LINGER``), so a ``kill -9`` of the trainer loses nothing that was
handed to the file; a machine crash may lose what the kernel had not written.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import IO, Literal

from gradwatch.protocol import RUN_FILE_SUFFIX, RunFileHeader

#: Where run files go when neither ``log_dir=`` nor ``$GRADWATCH_LOG_DIR`` says otherwise.
LOG_DIR_ENV = "GRADWATCH_LOG_DIR"


def resolve_log_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``explicit``, else ``$GRADWATCH_LOG_DIR``, else ``~/.gradwatch/runs``."""
    chosen = explicit or os.environ.get(LOG_DIR_ENV)
    return Path(chosen).expanduser() if chosen else Path.home() / ".gradwatch" / "runs"


class SpoolFull(Exception):
    """The file reached its disk budget: the line was not written."""


class RunFile:
    """One run's file under ``directory``, created by ``open`` (on the sender thread).

    ``budget_bytes``: the file never grows past it (``None``: no bound); a line that
    would cross it raises ``SpoolFull`` and is not written.
    """

    def __init__(
        self,
        directory: Path,
        uid: str,
        run_name: str,
        source: Literal["offline", "spool"],
        budget_bytes: int | None = None,
    ) -> None:
        self.directory = directory
        self.uid = uid
        self.source = source
        self.budget_bytes = budget_bytes
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", run_name)[:80].strip("._") or "run"
        self.path = directory / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{uid[:8]}-{source}{RUN_FILE_SUFFIX}"
        self.size = 0
        self._file: IO[str] | None = None

    @property
    def opened(self) -> bool:
        return self._file is not None

    def open(self, hello_json: str) -> None:
        """Create the file with its header and ``hello`` (once)."""
        if self._file is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        # "x": never append to another run's file; line-buffered text, flushed per line below.
        self._file = open(self.path, "x", encoding="utf-8")  # noqa: SIM115  # closed by close()
        header = RunFileHeader(uid=self.uid, source=self.source, created_at=time.time())
        self._write(header.model_dump_json(), bounded=False)
        self._write(hello_json, bounded=False)

    def send(self, text: str) -> None:
        """Append one message (the websocket's ``send``, so the transport can treat the file as its link)."""
        self._write(text, bounded=True)

    def _write(self, text: str, bounded: bool) -> None:
        if self._file is None:
            raise RuntimeError("RunFile.send before open")
        line = text + "\n"
        size = len(line.encode("utf-8"))
        if bounded and self.budget_bytes is not None and self.size + size > self.budget_bytes:
            raise SpoolFull(f"{self.path} reached its budget of {self.budget_bytes} bytes")
        self._file.write(line)
        self._file.flush()  # to the kernel: survives a kill -9 of this process
        self.size += size

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
