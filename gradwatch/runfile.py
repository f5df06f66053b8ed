"""Reading run files (written by ``trainer_hooks/spool.py``; format in docs/protocol.md, "Run files").

Standard library and the protocol only: ``gradwatch sync`` runs where TensorFlow is not installed.
A file is read line by line, never whole, and never more than ``MAX_FRAME_BYTES`` of a line: a
longer one is no frame the server would take, so it is skipped unread (memory stays bounded
whatever the file holds). A line that is not a valid protocol message (the torn last line a
``kill -9`` leaves, or damage) is skipped and described, never guessed at.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from pydantic import ValidationError

from .protocol import (
    MAX_FRAME_BYTES,
    RUN_FILE_FORMAT,
    RUN_FILE_SUFFIX,
    Ack,
    Gap,
    Mark,
    NonfiniteOrigin,
    Probe,
    RunFileHeader,
    Status,
    Steps,
    TrainerHello,
    VariableSet,
    parse_trainer_hello,
    parse_trainer_message,
)

Message = Steps | Gap | Status | Probe | NonfiniteOrigin | VariableSet


class RunFileError(ValueError):
    """The file is not a run file at all (no valid header or hello): nothing of it can be synced."""


@dataclass(frozen=True)
class Line:
    """A valid message line of a run file: where it is, and the steps it carries."""

    number: int  # 1-based, as an editor shows it
    offset: int  # in bytes, to read it again (``RunFile.text``)
    steps: int
    top_step: int | None


@dataclass
class RunFile:
    """An open run file: its header and hello read, its messages still to iterate (``messages``)."""

    path: Path
    header: RunFileHeader
    hello: TrainerHello
    #: Lines left out so far, as ``"line N: why"`` (filled while ``messages`` runs).
    skipped: list[str] = field(default_factory=list)

    def messages(self) -> Iterator[tuple[Line, str]]:
        """Each valid message after the hello, with its text as written (acks of a live server left out)."""
        with self.path.open("rb") as f:
            for _ in range(2):
                _read_line(f)
            number = 2
            while True:
                number += 1
                offset = f.tell()
                raw, size, ended = _read_line(f)
                if size == 0:
                    return
                if not ended:
                    # The writer ends every line it finished: this one was cut short (kill -9, full disk).
                    self.skipped.append(f"line {number}: cut short after {size} bytes (the writer was killed)")
                    return
                if raw is None:
                    self.skipped.append(
                        f"line {number}: {size} bytes, longer than the {MAX_FRAME_BYTES} bytes "
                        "the server takes in one frame"
                    )
                    continue
                text = raw.decode("utf-8", errors="replace").strip()
                if not text:
                    continue
                try:
                    message = parse_trainer_message(text)
                except ValidationError as err:
                    self.skipped.append(f"line {number}: not a trainer message ({_first_error(err)})")
                    continue
                if isinstance(message, Ack | Mark):
                    continue  # answers commands of (or asks) the server it was streaming to, meaningless elsewhere
                steps = message.records if isinstance(message, Steps) else []
                yield Line(number, offset, len(steps), max((r.step for r in steps), default=None)), text

    def text(self, line: Line) -> str:
        """``line``'s message again (a line ``messages`` gave: it is complete and short enough)."""
        with self.path.open("rb") as f:
            f.seek(line.offset)
            raw, _, _ = _read_line(f)
        assert raw is not None
        return raw.decode("utf-8", errors="replace").strip()


def _read_line(f: BinaryIO) -> tuple[bytes | None, int, bool]:
    """The next line (None if longer than ``MAX_FRAME_BYTES``: read past in chunks, never held),
    its size in bytes, and whether it ended with a newline."""
    raw = f.readline(MAX_FRAME_BYTES + 1)
    size = len(raw)
    if raw.endswith(b"\n") or size <= MAX_FRAME_BYTES:
        return raw, size, raw.endswith(b"\n")
    while True:
        chunk = f.readline(1 << 20)
        size += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return None, size, chunk.endswith(b"\n")


def open_run_file(path: Path) -> RunFile:
    """Read ``path``'s header and hello; raises ``RunFileError`` naming the file and the problem."""
    try:
        with path.open("rb") as f:
            first, second = _read_line(f)[0] or b"", _read_line(f)[0] or b""
    except OSError as err:
        raise RunFileError(f"{path}: cannot read it ({err.strerror or err})") from None
    try:
        kind = json.loads(first).get("type") if first.strip() else None
    except (ValueError, AttributeError, RecursionError):  # RecursionError: deeply nested JSON
        kind = None
    if kind != "gradwatch_run":
        raise RunFileError(f"{path}: not a gradwatch run file (its first line is no gradwatch_run header)")
    try:
        header = RunFileHeader.model_validate_json(first)
    except ValidationError as err:
        raise RunFileError(f"{path}: bad header ({_first_error(err)})") from None
    if header.format != RUN_FILE_FORMAT:
        raise RunFileError(
            f"{path}: run file format {header.format}; this gradwatch reads {RUN_FILE_FORMAT}. Upgrade gradwatch"
        )
    try:
        hello = parse_trainer_hello(second)
    except ValidationError as err:
        raise RunFileError(f"{path}: line 2 is no valid hello ({_first_error(err)}); was it cut short?") from None
    if hello.uid != header.uid:
        raise RunFileError(f"{path}: the hello's uid {hello.uid!r} is not the header's {header.uid!r}")
    return RunFile(path, header, hello)


def find_run_files(paths: Iterable[Path]) -> list[Path]:
    """``paths``, with each folder replaced by the run files under it (sorted); raises naming a missing path."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(path.rglob(f"*{RUN_FILE_SUFFIX}")))
        elif path.exists():
            found.append(path)
        else:
            raise RunFileError(f"{path}: no such file or folder")
    return found


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "message"
    return f"{where}: {first.get('msg', 'invalid')}"
