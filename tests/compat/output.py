"""What a run prints: file descriptors 1 and 2 (C++ logs too), ``sys.stdout``/``stderr``, warnings, logs."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator


def normalise(line: str) -> str:
    line = re.sub(r"0x[0-9a-fA-F]+", "0x?", line)
    return re.sub(r"\d+", "#", line).strip()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"log {record.name} {record.levelname}: {record.getMessage()}")


@contextlib.contextmanager
def captured(into: list[str]) -> Iterator[None]:
    """Everything printed meanwhile: file descriptors 1 and 2 (C++ logs too), warnings, log records."""
    loggers = [logging.getLogger(), logging.getLogger("tensorflow"), logging.getLogger("absl")]
    handler = _Records()
    for lg in loggers:
        lg.addHandler(handler)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        text = io.StringIO()  # sys.stdout may not be fd 1 (pytest's capture): take both
        try:
            with (
                warnings.catch_warnings(record=True) as caught,
                contextlib.redirect_stdout(text),
                contextlib.redirect_stderr(text),
            ):
                warnings.simplefilter("always")
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            for lg in loggers:
                lg.removeHandler(handler)
            tmp.seek(0)
            into.extend(tmp.read().decode(errors="replace").splitlines())
            into.extend(text.getvalue().splitlines())
            into.extend(f"warning {w.category.__name__}: {w.message}" for w in caught)
            into.extend(handler.lines)
