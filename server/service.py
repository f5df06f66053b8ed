"""The server's core: runs and their trainer links; glues store, writer, hub, alerts and commands together.

All methods run on the event loop; database work goes through ``Store.call``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
import sqlite3
import weakref
from dataclasses import replace
from typing import Any

from starlette.websockets import WebSocket

from gradwatch.protocol import (
    Ack,
    CloseCode,
    Command,
    Gap,
    GapMessage,
    Mark,
    Marked,
    NonfiniteOrigin,
    Probe,
    ProbeMessage,
    ProbeView,
    RunMessage,
    RunsMessage,
    RunSummary,
    Snapshots,
    Status,
    StepRecord,
    TrainerHello,
    VariableSet,
    Welcome,
    decode_float,
    page_message_text,
)

from . import replay, varsets
from .admission import misfit
from .alerting import AlertEvent, Alerting
from .alerts.engine import Alert
from .commands import CommandDesk, TrainerLink
from .config import ServerConfig
from .hub import Hub
from .metrics import build_metrics
from .runstate import InvalidTransition, RunEvent, accepts_commands, next_status
from .store import CommandRow, RunRow, Store
from .views import StoreHealth, run_detail, run_state, steps_message, summary
from .webhooks import webhook_sender
from .writer import StepWriter

log = logging.getLogger("gradwatch.server")


class ProtocolError(Exception):
    """A peer broke the protocol; the connection is closed with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class RunNotFound(LookupError):
    pass


class RunFinished(Exception):
    pass


def _same_names(recorded: list[str], now: list[str], loose: bool) -> bool:
    """Equal; or, ``loose`` (a resumed run), equal but for a leading scope one side lacks: Keras'
    ``load_model`` drops the model's name from its variables' paths (``seq/dense/kernel`` -> ``dense/kernel``)."""
    if recorded == now:
        return True
    return (
        loose
        and len(recorded) == len(now)
        and all(a == b or a.endswith("/" + b) or b.endswith("/" + a) for a, b in zip(recorded, now))
    )


def _same_layout(run: RunRow, hello: TrainerHello) -> bool:
    """The hello's statistics fit the run's columns (same variables and BN layers, in order).

    The hello names the run's first variable set; variables that joined later (``varsets.py``) follow it.
    """
    first = [run.variables[i] for i in run.variable_sets[0][1]] if run.variable_sets else run.variables
    return _same_names(first, hello.variables, hello.resume) and _same_names(
        run.bn_layers, hello.bn_layers, hello.resume
    )


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
        #: Connections re-playing a session the server already has (a synced run file): news only.
        self.replays: dict[int, replay.Replay] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._marks: set[asyncio.Task[None]] = set()  # answers waiting for the writer (answer_mark)
        self._lifecycles: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()
        self.webhooks = webhook_sender(config)
        self.alerting = Alerting(
            self.store, self.hub, self._auto_command, notify=self._notify if self.webhooks is not None else None
        )

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
        for task in list(self._marks):
            task.cancel()
        for run_id in list(self.active):
            await self._transition(run_id, "disconnect")
        if self.webhooks is not None:
            await self.webhooks.stop()
        await asyncio.get_running_loop().run_in_executor(None, self.store.close)

    # ------------------------------------------------------------------ reads

    def store_health(self) -> StoreHealth:
        """What ``/api/health`` says of the store: whether steps are written, and the disk's free space."""
        w = self.writer.health()
        try:
            free: int | None = shutil.disk_usage(self.config.db_path.parent).free
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

    async def label_run(self, run_id: int, changes: dict[str, Any]) -> RunSummary:
        """Store a run's tags and/or note (``labels.RunLabels``); every page's run list hears of it."""
        await self.get_run(run_id)
        await self._update_run(run_id, touch=False, **changes)
        await self._broadcast_run(run_id)
        run = await self.get_run(run_id)
        counts = await self.alerting.counts()
        return self._live(summary(run, counts.get(run_id)))

    async def run_detail_json(self, run_id: int) -> str:
        run = await self.get_run(run_id)
        gaps = await self.store.call(self.store.list_gaps, run_id)
        counts = await self.alerting.counts()
        return run_detail(run, gaps, counts.get(run_id), self._snapshots(run_id)).model_dump_json()

    def _snapshots(self, run_id: int) -> list[int]:
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

    # ------------------------------------------------------------------ trainer side

    async def open_run(self, hello: TrainerHello, websocket: WebSocket) -> TrainerLink:
        """Create or continue the run of a trainer that just said hello; send welcome and pending commands."""
        self.check_storing()
        run = await (self._replay_target(hello) if hello.replay else self._run_to_continue(hello))
        if run is None:
            return await self._link(await self.store.call(self.store.create_run, hello), hello, websocket)
        async with self._lifecycle(run.id):  # the run's last connection has finished going away
            run = await self.store.call(self.store.get_run, run.id)
            assert run is not None  # runs are never deleted
            if not _same_layout(run, hello):
                raise ProtocolError(
                    CloseCode.BAD_MESSAGE,
                    f"run {run.id} was recorded with other variables or BN "
                    "layers; reconnect without run_id to start a new run",
                )
            old = self.links.pop(run.id, None)  # never a replay's target (_replay_target refused it)
            if old is not None:
                with contextlib.suppress(Exception):
                    await old.websocket.close(1000, "replaced by a newer connection of the same run")
            self.active[run.id] = run
            if not (hello.replay and run.status == "finished"):  # a re-synced finished run stays as it was
                await self._transition(run.id, "resume" if hello.resume and not hello.replay else "reconnect")
                run = await self.store.call(
                    self.store.update_run,
                    run.id,
                    clip_mode=hello.clip.mode,
                    clip_threshold=hello.clip.threshold,
                    every=hello.every,
                    meta=hello.meta or run.meta,
                    pause_on=list(hello.pause_on),
                    guard_nonfinite=int(hello.guard_nonfinite),
                    relu_layers=hello.relu_layers,
                )
                assert run is not None
            return await self._link(run, hello, websocket)

    def _lifecycle(self, run_id: int) -> asyncio.Lock:
        """The lock that keeps a run's connect (``open_run``) and disconnect (``trainer_gone``) apart:
        both await the store, and a reconnect racing the old connection's teardown would otherwise
        have its alert state detached and its run marked disconnected while it streams."""
        lock = self._lifecycles.get(run_id)
        if lock is None:
            lock = self._lifecycles[run_id] = asyncio.Lock()
        return lock

    async def _link(self, run: RunRow, hello: TrainerHello, websocket: WebSocket) -> TrainerLink:
        """Make ``websocket`` the trainer link of ``run``: welcome, broadcast, pending commands."""
        if hello.uid is not None:
            await self.store.call(replay.remember_uid, self.store.conn, hello.uid, run.id)
        if hello.replay:
            await self.writer.flush()  # what the run has is on disk, for the replay to compare with
            self.replays[run.id] = replay.Replay(run.id)
        else:
            self.replays.pop(run.id, None)
        self.active[run.id] = run
        await self.alerting.attach(run, hello)
        link = TrainerLink(websocket, run.id, hello)
        self.links[run.id] = link
        await link.send(Welcome(run_id=run.id).model_dump_json())
        await self._broadcast_run(run.id)
        await self.commands.forward_pending(link)
        return link

    async def _replay_target(self, hello: TrainerHello) -> RunRow | None:
        """The run a replayed file (``hello.replay``) goes into; None: a new run. Refuses what would
        overwrite: another session's run, a finished run it did not record, a run with a live trainer."""
        if hello.uid is None:
            raise ProtocolError(CloseCode.BAD_MESSAGE, "a replay needs the hello's uid (its run file's session)")
        own = await self.store.call(replay.run_for_uid, self.store.conn, hello.uid)
        if own is not None:
            if hello.run_id is not None and hello.run_id != own:
                raise ProtocolError(
                    CloseCode.BAD_MESSAGE,
                    f"refused: the file names run {hello.run_id} but its session recorded run {own}",
                )
            run = await self.store.call(self.store.get_run, own)
        elif hello.run_id is not None and not hello.resume:
            run = await self.store.call(self.store.get_run, hello.run_id)
            if run is not None:
                raise ProtocolError(
                    CloseCode.BAD_MESSAGE,
                    f"refused: the file names run {hello.run_id}, another session's run; a sync never writes into it",
                )
        else:
            run = await self._run_to_continue(hello)
            if run is not None and run.status == "finished":
                raise ProtocolError(
                    CloseCode.BAD_MESSAGE, f"refused: run {run.id} is finished; a sync never reopens or rewrites it"
                )
        if run is not None and run.id in self.links:
            # "try again later", not a refusal: the file's steps are welcome once that trainer ended
            raise ProtocolError(
                CloseCode.TRY_AGAIN_LATER, f"run {run.id} has its trainer connected; sync the file once it has ended"
            )
        return run

    async def _run_to_continue(self, hello: TrainerHello) -> RunRow | None:
        """The run a hello continues: its ``run_id`` (unless finished, or resumed), or with ``resume``
        and no id the newest run of that name recorded with the same variables; None: a new run."""
        if hello.run_id is None and hello.uid is not None and not hello.replay:
            # a live trainer whose first welcome got lost: its session's run, if the server made one
            own = await self.store.call(replay.run_for_uid, self.store.conn, hello.uid)
            run = None if own is None else await self.store.call(self.store.get_run, own)
            if run is not None and run.status != "finished":
                return run
        if hello.run_id is not None:
            run = await self.store.call(self.store.get_run, hello.run_id)
            if run is None and hello.resume:
                raise ProtocolError(
                    CloseCode.BAD_MESSAGE,
                    f"resume: there is no run {hello.run_id} on this server; "
                    "pass resume='auto' or a run id from the dashboard",
                )
            if run is not None and run.status == "finished" and not hello.resume:
                log.info("run %d is finished; trainer %r starts a new run", run.id, hello.run_name)
                return None
            return run
        if not hello.resume:
            return None
        runs = await self.store.call(self.store.list_runs)  # newest first
        return next((r for r in runs if r.name == hello.run_name and _same_layout(r, hello)), None)

    def check_storing(self) -> None:
        """Refuse a trainer's frame (or hello) while the writer cannot write: the trainer keeps it and retries."""
        failing = self.writer.failing
        if failing is not None:
            raise ProtocolError(
                CloseCode.STORAGE_UNAVAILABLE,
                f"the server cannot store steps now ({failing}); keep them and reconnect later",
            )

    async def ingest_steps(self, link: TrainerLink, records: list[StepRecord], size: int = 0) -> None:
        """Store and publish one ``steps`` frame (``size``: its bytes on the wire)."""
        self.check_storing()
        run = self.active[link.run_id]
        for rec in records:
            why = misfit(run, rec)
            if why is not None:
                raise ProtocolError(CloseCode.BAD_MESSAGE, why)
        again = self.replays.get(link.run_id)
        if again is not None:
            records = await self.store.call(again.new_records, self.store.conn, records)
            if not records:
                return
        top = max(r.step for r in records)
        if run.last_step is None or top > run.last_step:
            run.last_step = top
        if self.hub.has_subscribers(run.id):  # encoded once, the same text for every viewer
            self.hub.publish(run.id, steps_message(run.id, records), compared=True)
        await self.writer.add(run.id, records, size)
        last = records[-1]
        if run.variable_sets:  # the rules follow the newest variable set; a late step of an older one is stored only
            newest = int(run.variable_sets[-1][0])
            records = [r for r in records if r.step >= newest]
        if records:
            await self.alerting.steps(run.id, records)
        threshold = None if last.clip_threshold is None else decode_float(last.clip_threshold)
        if (last.clip_mode, threshold) != (run.clip_mode, run.clip_threshold):
            await self._update_run(run.id, clip_mode=last.clip_mode, clip_threshold=threshold)
            await self._broadcast_run(run.id)

    async def variable_set(self, link: TrainerLink, msg: VariableSet) -> None:
        """The run's watched variables change from ``msg.from_step`` on (``varsets.py``)."""
        run = self.active[link.run_id]
        variables, sets = varsets.declare(run.variables, run.variable_sets, msg.from_step, msg.variables)
        if (variables, sets) == (run.variables, run.variable_sets):
            return  # sent again after a reconnect
        await self.writer.flush()  # the steps before it are on disk under the old set
        await self.alerting.flush(link.run_id)
        await self._update_run(link.run_id, variables=variables, variable_sets=sets)
        await self.alerting.attach(self.active[link.run_id], link.hello)  # the rules follow the new set
        log.info("run %d: %d variables watched from step %d", link.run_id, len(msg.variables), msg.from_step)
        await self._broadcast_run(link.run_id)

    def answer_mark(self, link: TrainerLink, mark: Mark) -> None:
        """Answer ``mark`` once the steps of every frame before it are committed: the trainer may then
        forget them (``trainer_hooks/outbox.py``). Waits in a task, so the frames after it go on."""

        async def answer() -> None:
            await self.writer.written()
            with contextlib.suppress(Exception):  # the connection may have ended meanwhile
                await link.send(Marked(id=mark.id).model_dump_json())

        task = asyncio.create_task(answer(), name=f"gradwatch-mark-{link.run_id}")
        self._marks.add(task)
        task.add_done_callback(self._marks.discard)

    async def add_gap(self, link: TrainerLink, gap: Gap) -> None:
        await self.writer.flush()
        again = self.replays.get(link.run_id)
        if again is not None and not await self.store.call(again.new_gap, self.store.conn, gap):
            return
        await self.store.call(self.store.add_gap, link.run_id, gap.from_step, gap.to_step, gap.dropped)
        self.hub.publish(
            link.run_id,
            page_message_text(
                GapMessage(run_id=link.run_id, from_step=gap.from_step, to_step=gap.to_step, dropped=gap.dropped)
            ),
        )
        await self._broadcast_run(link.run_id)

    async def add_probe(self, link: TrainerLink, probe: Probe) -> None:
        again = self.replays.get(link.run_id)
        if again is not None and not await self.store.call(again.new_probe, self.store.conn, probe):
            return
        dead = {k: decode_float(v) for k, v in probe.dead_relu.items()}
        gap = {k: decode_float(v) for k, v in probe.bn_gap.items()}
        await self.store.call(self.store.add_probe, link.run_id, probe.step, dead, gap)
        self.hub.publish(
            link.run_id,
            page_message_text(ProbeMessage(run_id=link.run_id, probe=ProbeView(**probe.model_dump(exclude={"type"})))),
        )
        await self.alerting.probe(link.run_id, probe)

    async def nonfinite_origin(self, link: TrainerLink, msg: NonfiniteOrigin) -> None:
        again = self.replays.get(link.run_id)
        if again is not None and msg.step not in again.added:
            return  # its step was already there: so was its alert
        log.info("run %d: non-finite step %d comes from %s %s", link.run_id, msg.step, msg.source, msg.layer or "")
        await self.alerting.origin(link.run_id, msg)

    async def handle_ack(self, link: TrainerLink, ack: Ack) -> None:
        updated = await self.commands.resolve(link.run_id, ack)
        if updated is None:
            return
        if updated.state != "applied":
            return
        # A rewind may set the clip threshold and the learning rate too.
        if updated.type == "set_clip" or (updated.type == "rewind" and updated.threshold is not None):
            run = self.active.get(link.run_id)
            mode = updated.mode or (run.clip_mode if run else "global_norm")
            await self._update_run(link.run_id, clip_mode=mode, clip_threshold=updated.threshold)
            await self._broadcast_run(link.run_id)
        if updated.type in ("set_lr", "rewind") and updated.lr is not None:
            await self._update_run(link.run_id, lr=updated.lr)
            await self._broadcast_run(link.run_id)

    async def snapshots(self, link: TrainerLink, msg: Snapshots) -> None:
        """The steps the trainer can rewind to now: every page watching the run offers them.

        The run is pushed in the background: the trainer's next frames (its steps) are not held behind it.
        """
        link.snapshots = list(msg.steps)
        task = asyncio.create_task(self._broadcast_soon(link.run_id))
        self._background.add(task)  # held until done (the loop keeps only a weak reference)
        task.add_done_callback(self._background.discard)

    async def _broadcast_soon(self, run_id: int) -> None:
        try:
            await self._broadcast_run(run_id)
        except Exception as err:  # the server is shutting down: the page gets the run when it reconnects
            log.info("run %d: could not push its snapshot steps (%s)", run_id, err)

    async def handle_status(self, link: TrainerLink, status: Status) -> None:
        run = self.active.get(link.run_id)
        if link.run_id in self.replays and run is not None and run.status == "finished":
            return  # a re-synced file's old states do not reopen a finished run
        await self._transition(link.run_id, status.state)

    async def trainer_gone(self, link: TrainerLink) -> None:
        async with self._lifecycle(link.run_id):
            if self.links.get(link.run_id) is not link:
                return  # already replaced by a newer connection
            del self.links[link.run_id]
            self.replays.pop(link.run_id, None)
            await self.writer.flush()
            await self.alerting.detach(link.run_id)
            await self._transition(link.run_id, "disconnect")
            self.active.pop(link.run_id, None)

    async def _update_run(self, run_id: int, *, touch: bool = True, **fields: Any) -> None:
        """Store ``fields`` on the run; a connected run's copy in memory keeps its live last step."""
        row = await self.store.call(self.store.update_run, run_id, touch=touch, **fields)
        run = self.active.get(run_id)
        if row is not None and run is not None:
            self.active[run_id] = replace(row, last_step=run.last_step)

    async def _transition(self, run_id: int, event: RunEvent) -> None:
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
            await self._update_run(run_id, status=new)
        except sqlite3.OperationalError as e:
            if event != "disconnect":
                raise
            # The store cannot write (disk full): a run whose trainer left is marked disconnected at the next
            # start anyway, and a failed write must not turn the end of a connection into an error.
            log.warning("run %d: could not store its status %r (%s)", run_id, new, e)
            return
        if new == "finished":
            await self.commands.reject_pending(run_id, "run finished before it applied")
        await self._broadcast_run(run_id)

    # ------------------------------------------------------------------ commands

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

    # ------------------------------------------------------------------ browser side

    async def runs_message(self) -> str:
        runs = await self.list_runs()
        return page_message_text(RunsMessage(runs=[self._live(r) for r in runs]))

    def _live(self, s: RunSummary) -> RunSummary:
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
        return page_message_text(RunMessage(run=run_state(run, gaps, counts.get(run_id), self._snapshots(run_id))))

    async def _broadcast_run(self, run_id: int) -> None:
        text = await self.run_message(run_id)
        if text is not None:
            self.hub.broadcast(text)
