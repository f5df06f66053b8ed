"""Online with a ``RunFile`` (spool.py): the records the buffer cannot hold are written to the file instead
of being dropped (up to its disk budget, then the gap as before); ``gradwatch sync`` uploads them later.

Runs on the transport's sender thread, between its sends and while it waits to reconnect.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from gradwatch.protocol import TrainerHello, dumps

from .outbox import Item, Outbox
from .spool import RunFile, SpoolFull


class Spill:
    """Moves the outbox's overflow (``outbox.take_spilled``, under ``cond``) to ``run_file``."""

    def __init__(
        self,
        run_file: RunFile,
        outbox: Outbox,
        cond: threading.Condition,
        hello: Callable[[int | None], TrainerHello],
        encode: Callable[[Any], dict[str, Any]],
        warn: Callable[[str], None],
    ) -> None:
        self.run_file = run_file
        self._outbox = outbox
        self._cond = cond
        self._hello = hello
        self._encode = encode
        self._warn = warn
        #: Records written to the file because the buffer could not hold them (guarded by ``cond``).
        self.spooled = 0

    def write(self) -> None:
        """Write what overflowed so far; past the file's budget it is lost (counted in the next gap)."""
        run_file = self.run_file
        while True:
            with self._cond:
                items = self._outbox.take_spilled()
            if not items:
                return
            lost: list[Item] = []
            try:
                run_file.open(self._hello(None).model_dump_json())
                run_file.send(dumps({"type": "steps", "records": [self._encode(item.payload) for item in items]}))
            except SpoolFull:
                lost = items
            except Exception as err:
                lost = items
                self._warn(
                    f"gradwatch: cannot write the spool file {run_file.path} ({err}); "
                    "reports the buffer cannot hold are dropped"
                )
            with self._cond:
                for item in lost:
                    self._outbox.lose(item)
                if not lost:
                    self.spooled += len(items)
