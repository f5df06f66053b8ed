"""The server's core: the runs' shared state, and what glues store, writer, hub, alerts and commands together.

The trainer side is ``ingest.py``, the reads ``queries.py``; both work on the state held here.
All methods run on the event loop; database work goes through ``Store.call``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from dataclasses import replace
from typing import Any

from gradwatch.protocol import CloseCode, Command, RunSummary

from .alerting import AlertEvent, Alerting
from .alerts.engine import Alert
from .commands import CommandDesk, TrainerLink
from .config import ServerConfig
from .errors import RunFinished, RunNotFound
from .hub import Hub
from .ingest import Ingest
from .queries import Queries
from .runstate import InvalidTransition, RunEvent, accepts_commands, next_status
from .store import CommandRow, RunRow, Store
from .webhooks import webhook_sender
from .writer import StepWriter

log = logging.getLogger("gradwatch.server")


class Gradwatch:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.store = Store(config.db_path)
        self.writer = StepWriter(
            self.store, config.flush_interval, config.max_buffered_records, config.max_buffered_bytes
        )
        self.hub = Hub(config.viewer_queue_size, config.viewer_queue_bytes)
        self.commands = CommandDesk(self.store, self.hub)
        self.links: dict[int, TrainerLink] = {}
        #: Runs with a trainer connected, kept current in memory (last_step included).
        self.active: dict[int, RunRow] = {}
        self.webhooks = webhook_sender(config)
        self.alerting = Alerting(
            self.store, self.hub, self._auto_command, notify=self._notify if self.webhooks is not None else None
        )
        self.queries = Queries(self.store, self.writer, self.alerting, self.links, self.active, config.db_path)
        self.ingest = Ingest(self)

    async def start(self) -> None:
        await self.store.call(self.store.mark_stale_runs_disconnected)
        self.writer.start()
        if self.webhooks is not None:
            self.webhooks.start()

    def _notify(self, alert: Alert, event: AlertEvent) -> None:
        run = self.active.get(alert.run_id)
        assert self.webhooks is not None
        self.webhooks.offer(alert, event, run.name if run is not None else None)

    async def stop(self) -> None:
        self.hub.close_all(CloseCode.SERVER_SHUTDOWN, "server shutting down")
        for link in list(self.links.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(link.websocket.close(CloseCode.SERVER_SHUTDOWN, "server shutting down"), 2)
        await self.writer.stop()
        self.ingest.cancel_marks()
        for run_id in list(self.active):
            await self.transition(run_id, "disconnect")
        if self.webhooks is not None:
            await self.webhooks.stop()
        await asyncio.get_running_loop().run_in_executor(None, self.store.close)

    # ------------------------------------------------------------------ a run's state

    async def update_run(self, run_id: int, *, touch: bool = True, **fields: Any) -> None:
        """Store ``fields`` on the run; a connected run's copy in memory keeps its live last step."""
        row = await self.store.call(self.store.update_run, run_id, touch=touch, **fields)
        run = self.active.get(run_id)
        if row is not None and run is not None:
            self.active[run_id] = replace(row, last_step=run.last_step)

    async def transition(self, run_id: int, event: RunEvent) -> None:
        run = self.active.get(run_id) or await self.store.call(self.store.get_run, run_id)
        if run is None:
            return
        try:
            new = next_status(run.status, event)
        except InvalidTransition as e:
            log.warning("run %d: %s; ignored", run_id, e)
            return
        if new == run.status:
            return
        try:
            await self.update_run(run_id, status=new)
        except sqlite3.OperationalError as e:
            if event != "disconnect":
                raise
            # The store cannot write (disk full): a run whose trainer left is marked disconnected at the next
            # start anyway, and a failed write must not turn the end of a connection into an error.
            log.warning("run %d: could not store its status %r (%s)", run_id, new, e)
            return
        if new == "finished":
            await self.commands.reject_pending(run_id, "run finished before it applied")
        await self.broadcast_run(run_id)

    async def broadcast_run(self, run_id: int) -> None:
        """Every page hears of the run's new state."""
        text = await self.queries.run_message(run_id)
        if text is not None:
            self.hub.broadcast(text)

    # ------------------------------------------------------------------ what the REST API changes

    async def label_run(self, run_id: int, changes: dict[str, Any]) -> RunSummary:
        """Store a run's tags and/or note (``labels.RunLabels``); every page's run list hears of it."""
        await self.queries.get_run(run_id)
        await self.update_run(run_id, touch=False, **changes)
        await self.broadcast_run(run_id)
        return await self.queries.run_summary(run_id)

    async def post_command(self, run_id: int, command: Command, origin: str) -> CommandRow:
        run = self.active.get(run_id) or await self.store.call(self.store.get_run, run_id)
        if run is None:
            raise RunNotFound(run_id)
        if not accepts_commands(run.status):
            raise RunFinished(run_id)
        return await self.commands.post(run_id, command, origin, self.links.get(run_id))

    async def _auto_command(self, run_id: int, command: Command, origin: str) -> None:
        """``pause_on``, ``rewind_on``: an alert pauses or rewinds its run through the ordinary command path
        (audited with ``origin``)."""
        try:
            await self.post_command(run_id, command, origin)
        except (RunNotFound, RunFinished):
            log.info("run %d: no %s for %s; the run takes no commands", run_id, command.type, origin)
