"""Reading run files (written by ``trainer_hooks/spool.py``; format in docs/protocol.md, "Run files").

Standard library and the protocol only: ``gradwatch sync`` runs where TensorFlow is not installed.
A file is read line by line, never whole. A line that is not a valid protocol message
(the torn last line a ``kill -9`` leaves, or damage) is skipped and described, never guessed at.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from .protocol import (
    RUN_FILE_FORMAT,
    RUN_FILE_SUFFIX,
    Ack,
    Gap,
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


@dataclass
class RunFile:
    """An open run file: its header and hello read, its messages still to iterate (``messages``)."""

    path: Path
    header: RunFileHeader
    hello: TrainerHello
    #: Lines left out so far, as ``"line N: why"`` (filled while ``messages`` runs).
    skipped: list[str] = field(default_factory=list)

    def messages(self) -> Iterator[tuple[str, Message]]:
        """Each valid message after the hello, with its line as written (acks of a live server left out)."""
        with self.path.open("rb") as f:
            for number, raw in enumerate(f, start=1):
                if number <= 2:
                    continue
                if not raw.endswith(b"\n"):
                    # The writer ends every line it finished: this one was cut short (kill -9, full disk).
                    self.skipped.append(f"line {number}: cut short after {len(raw)} bytes (the writer was killed)")
                    return
                text = raw.decode("utf-8", errors="replace").strip()
                if not text:
                    continue
                try:
                    message = parse_trainer_message(text)
                except ValidationError as err:
                    self.skipped.append(f"line {number}: not a trainer message ({_first_error(err)})")
                    continue
                if isinstance(message, Ack):
                    continue  # answers commands of the server it was streaming to, meaningless elsewhere
                yield text, message


def open_run_file(path: Path) -> RunFile:
    """Read ``path``'s header and hello; raises ``RunFileError`` naming the file and the problem."""
    try:
        with path.open("rb") as f:
            first, second = f.readline(), f.readline()
    except OSError as err:
        raise RunFileError(f"{path}: cannot read it ({err.strerror or err})") from None
    try:
        kind = json.loads(first).get("type") if first.strip() else None
    except (ValueError, AttributeError):
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
