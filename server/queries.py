"""What the REST API and the pages read: runs, their details, metrics and commands, the store's health.

Reads never change a run; each first flushes the writer, so what was received is what is read.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
from collections.abc import Mapping
from pathlib import Path

from gradwatch.protocol import RunMessage, RunsMessage, RunSummary, page_message_text

from .alerting import Alerting
from .commands import TrainerLink
from .errors import RunNotFound
from .metrics import build_metrics
from .store import CommandRow, RunRow, Store
from .views import StoreHealth, run_detail, run_state, summary
from .writer import StepWriter


class Queries:
    """Reads over the store, with the connected runs' live state (``active``, ``links``) laid over it."""

    def __init__(
        self,
        store: Store,
        writer: StepWriter,
        alerting: Alerting,
        links: Mapping[int, TrainerLink],
        active: Mapping[int, RunRow],
        db_path: Path,
    ) -> None:
        self.store = store
        self.writer = writer
        self.alerting = alerting
        self.links = links
        self.active = active
        self.db_path = db_path

    def store_health(self) -> StoreHealth:
        """What ``/api/health`` says of the store: whether steps are written, and the disk's free space."""
        w = self.writer.health()
        try:
            free: int | None = shutil.disk_usage(self.db_path.parent).free
        except OSError:
            free = None
        return StoreHealth(
            writing=w.failing is None,
            error=w.failing,
            pending_steps=w.pending_steps,
            dropped_steps=w.dropped_steps,
            disk_free_bytes=free,
        )

    async def get_run(self, run_id: int) -> RunRow:
        await self.writer.flush()
        run = await self.store.call(self.store.get_run, run_id)
        if run is None:
            raise RunNotFound(run_id)
        return run

    async def list_runs(self) -> list[RunSummary]:
        await self.writer.flush()
        counts = await self.alerting.counts()
        return [summary(r, counts.get(r.id)) for r in await self.store.call(self.store.list_runs)]

    async def run_summary(self, run_id: int) -> RunSummary:
        run = await self.get_run(run_id)
        counts = await self.alerting.counts()
        return self.live(summary(run, counts.get(run_id)))

    async def run_detail_json(self, run_id: int) -> str:
        run = await self.get_run(run_id)
        gaps = await self.store.call(self.store.list_gaps, run_id)
        counts = await self.alerting.counts()
        return run_detail(run, gaps, counts.get(run_id), self.snapshots(run_id)).model_dump_json()

    def snapshots(self, run_id: int) -> list[int]:
        """The steps the connected trainer of ``run_id`` can rewind to ([] with none connected)."""
        link = self.links.get(run_id)
        return link.snapshots if link is not None else []

    async def metrics(
        self, run_id: int, since: int | None, until: int | None, max_points: int | None, omit_empty: bool = False
    ) -> str:
        run = await self.get_run(run_id)
        data = await self.store.call(self.store.read_steps, run, since, until)
        gaps = await self.store.call(self.store.list_gaps, run_id)
        probes = await self.store.call(self.store.read_probes, run_id, since, until)
        build = functools.partial(build_metrics, run, data, gaps, max_points, probes, omit_empty=omit_empty)
        return await asyncio.get_running_loop().run_in_executor(None, build)

    async def list_commands(self, run_id: int) -> list[CommandRow]:
        await self.get_run(run_id)
        return await self.store.call(self.store.list_commands, run_id)

    # ------------------------------------------------------------------ the pages' messages

    async def runs_message(self) -> str:
        runs = await self.list_runs()
        return page_message_text(RunsMessage(runs=[self.live(r) for r in runs]))

    def live(self, s: RunSummary) -> RunSummary:
        """``s`` with its run's live last step, when a connected trainer sent steps not yet on disk."""
        run = self.active.get(s.id)
        if run is not None and run.last_step is not None and (s.step is None or run.last_step > s.step):
            return s.model_copy(update={"step": run.last_step})
        return s

    async def run_message(self, run_id: int) -> str | None:
        run = self.active.get(run_id) or await self.store.call(self.store.get_run, run_id)
        if run is None:
            return None
        gaps = await self.store.call(self.store.list_gaps, run_id)
        counts = await self.alerting.counts()
        return page_message_text(RunMessage(run=run_state(run, gaps, counts.get(run_id), self.snapshots(run_id))))
