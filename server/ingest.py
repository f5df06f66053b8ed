"""The trainer side of the server: a trainer's hello opens or continues its run, then each of its frames
is stored, published to the pages and fed to the alert rules; its leaving ends the link.

All methods run on the event loop; database work goes through ``Store.call``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import TYPE_CHECKING

from starlette.status import WS_1000_NORMAL_CLOSURE
from starlette.websockets import WebSocket

from gradwatch.protocol import (
    Ack,
    CloseCode,
    Gap,
    GapMessage,
    Mark,
    Marked,
    NonfiniteOrigin,
    Probe,
    ProbeMessage,
    ProbeView,
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
from .commands import TrainerLink
from .errors import ProtocolError
from .matching import replay_target, run_to_continue, same_layout
from .store import RunRow
from .views import steps_message

if TYPE_CHECKING:
    from .service import Gradwatch

log = logging.getLogger("gradwatch.server")


class Ingest:
    """The trainers' links and what they send; the runs' shared state stays on ``Gradwatch``."""

    def __init__(self, gw: Gradwatch) -> None:
        self.gw = gw
        #: Connections re-playing a session the server already has (a synced run file): news only.
        self.replays: dict[int, replay.Replay] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._marks: set[asyncio.Task[None]] = set()  # answers waiting for the writer (answer_mark)
        self._lifecycles: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()

    def cancel_marks(self) -> None:
        """Stop waiting to answer marks (the server is stopping: the trainers resend what was not confirmed)."""
        for task in list(self._marks):
            task.cancel()

    # ------------------------------------------------------------------ a link's start and end

    async def open_run(self, hello: TrainerHello, websocket: WebSocket) -> TrainerLink:
        """Create or continue the run of a trainer that just said hello; send welcome and pending commands."""
        gw = self.gw
        self.check_storing()
        run = await (replay_target(gw.store, gw.links, hello) if hello.replay else run_to_continue(gw.store, hello))
        if run is None:
            return await self._link(await gw.store.call(gw.store.create_run, hello), hello, websocket)
        async with self._lifecycle(run.id):  # the run's last connection has finished going away
            run = await gw.store.call(gw.store.get_run, run.id)
            assert run is not None  # runs are never deleted
            if not same_layout(run, hello):
                raise ProtocolError(
                    CloseCode.BAD_MESSAGE,
                    f"run {run.id} was recorded with other variables or BN "
                    "layers; reconnect without run_id to start a new run",
                )
            old = gw.links.pop(run.id, None)  # never a replay's target (replay_target refused it)
            if old is not None:
                with contextlib.suppress(Exception):
                    await old.websocket.close(WS_1000_NORMAL_CLOSURE, "replaced by a newer connection of the same run")
            gw.active[run.id] = run
            if not (hello.replay and run.status == "finished"):  # a re-synced finished run stays as it was
                await gw.transition(run.id, "resume" if hello.resume and not hello.replay else "reconnect")
                run = await gw.store.call(
                    gw.store.update_run,
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
        gw = self.gw
        if hello.uid is not None:
            await gw.store.call(replay.remember_uid, gw.store.conn, hello.uid, run.id)
        if hello.replay:
            await gw.writer.flush()  # what the run has is on disk, for the replay to compare with
            self.replays[run.id] = replay.Replay(run.id)
        else:
            self.replays.pop(run.id, None)
        gw.active[run.id] = run
        await gw.alerting.attach(run, hello)
        link = TrainerLink(websocket, run.id, hello)
        gw.links[run.id] = link
        await link.send(Welcome(run_id=run.id).model_dump_json())
        await gw.broadcast_run(run.id)
        await gw.commands.forward_pending(link)
        return link

    async def trainer_gone(self, link: TrainerLink) -> None:
        gw = self.gw
        async with self._lifecycle(link.run_id):
            if gw.links.get(link.run_id) is not link:
                return  # already replaced by a newer connection
            del gw.links[link.run_id]
            self.replays.pop(link.run_id, None)
            await gw.writer.flush()
            await gw.alerting.detach(link.run_id)
            await gw.transition(link.run_id, "disconnect")
            gw.active.pop(link.run_id, None)

    # ------------------------------------------------------------------ the trainer's frames

    def check_storing(self) -> None:
        """Refuse a trainer's frame (or hello) while the writer cannot write: the trainer keeps it and retries."""
        failing = self.gw.writer.failing
        if failing is not None:
            raise ProtocolError(
                CloseCode.STORAGE_UNAVAILABLE,
                f"the server cannot store steps now ({failing}); keep them and reconnect later",
            )

    async def steps(self, link: TrainerLink, records: list[StepRecord], size: int = 0) -> None:
        """Store and publish one ``steps`` frame (``size``: its bytes on the wire)."""
        gw = self.gw
        self.check_storing()
        run = gw.active[link.run_id]
        for rec in records:
            why = misfit(run, rec)
            if why is not None:
                raise ProtocolError(CloseCode.BAD_MESSAGE, why)
        again = self.replays.get(link.run_id)
        if again is not None:
            records = await gw.store.call(again.new_records, gw.store.conn, records)
            if not records:
                return
        top = max(r.step for r in records)
        if run.last_step is None or top > run.last_step:
            run.last_step = top
        if gw.hub.has_subscribers(run.id):  # encoded once, the same text for every viewer
            gw.hub.publish(run.id, steps_message(run.id, records), compared=True)
        await gw.writer.add(run.id, records, size)
        last = records[-1]
        if run.variable_sets:  # the rules follow the newest variable set; a late step of an older one is stored only
            newest = int(run.variable_sets[-1][0])
            records = [r for r in records if r.step >= newest]
        if records:
            await gw.alerting.steps(run.id, records)
        threshold = None if last.clip_threshold is None else decode_float(last.clip_threshold)
        if (last.clip_mode, threshold) != (run.clip_mode, run.clip_threshold):
            await gw.update_run(run.id, clip_mode=last.clip_mode, clip_threshold=threshold)
            await gw.broadcast_run(run.id)

    async def variable_set(self, link: TrainerLink, msg: VariableSet) -> None:
        """The run's watched variables change from ``msg.from_step`` on (``varsets.py``)."""
        gw = self.gw
        run = gw.active[link.run_id]
        variables, sets = varsets.declare(run.variables, run.variable_sets, msg.from_step, msg.variables)
        if (variables, sets) == (run.variables, run.variable_sets):
            return  # sent again after a reconnect
        await gw.writer.flush()  # the steps before it are on disk under the old set
        await gw.alerting.flush(link.run_id)
        await gw.update_run(link.run_id, variables=variables, variable_sets=sets)
        await gw.alerting.attach(gw.active[link.run_id], link.hello)  # the rules follow the new set
        log.info("run %d: %d variables watched from step %d", link.run_id, len(msg.variables), msg.from_step)
        await gw.broadcast_run(link.run_id)

    def answer_mark(self, link: TrainerLink, mark: Mark) -> None:
        """Answer ``mark`` once the steps of every frame before it are committed: the trainer may then
        forget them (``trainer_hooks/outbox.py``). Waits in a task, so the frames after it go on."""

        async def answer() -> None:
            await self.gw.writer.written()
            with contextlib.suppress(Exception):  # the connection may have ended meanwhile
                await link.send(Marked(id=mark.id).model_dump_json())

        task = asyncio.create_task(answer(), name=f"gradwatch-mark-{link.run_id}")
        self._marks.add(task)
        task.add_done_callback(self._marks.discard)

    async def add_gap(self, link: TrainerLink, gap: Gap) -> None:
        gw = self.gw
        await gw.writer.flush()
        again = self.replays.get(link.run_id)
        if again is not None and not await gw.store.call(again.new_gap, gw.store.conn, gap):
            return
        await gw.store.call(gw.store.add_gap, link.run_id, gap.from_step, gap.to_step, gap.dropped)
        gw.hub.publish(
            link.run_id,
            page_message_text(GapMessage(run_id=link.run_id, **gap.model_dump(exclude={"type"}))),
        )
        await gw.broadcast_run(link.run_id)

    async def add_probe(self, link: TrainerLink, probe: Probe) -> None:
        gw = self.gw
        again = self.replays.get(link.run_id)
        if again is not None and not await gw.store.call(again.new_probe, gw.store.conn, probe):
            return
        dead = {k: decode_float(v) for k, v in probe.dead_relu.items()}
        gap = {k: decode_float(v) for k, v in probe.bn_gap.items()}
        await gw.store.call(gw.store.add_probe, link.run_id, probe.step, dead, gap)
        gw.hub.publish(
            link.run_id,
            page_message_text(ProbeMessage(run_id=link.run_id, probe=ProbeView(**probe.model_dump(exclude={"type"})))),
        )
        await gw.alerting.probe(link.run_id, probe)

    async def nonfinite_origin(self, link: TrainerLink, msg: NonfiniteOrigin) -> None:
        again = self.replays.get(link.run_id)
        if again is not None and msg.step not in again.added:
            return  # its step was already there: so was its alert
        log.info("run %d: non-finite step %d comes from %s %s", link.run_id, msg.step, msg.source, msg.layer or "")
        await self.gw.alerting.origin(link.run_id, msg)

    async def handle_ack(self, link: TrainerLink, ack: Ack) -> None:
        gw = self.gw
        updated = await gw.commands.resolve(link.run_id, ack)
        if updated is None:
            return
        if updated.state != "applied":
            return
        # A rewind may set the clip threshold and the learning rate too.
        if updated.type == "set_clip" or (updated.type == "rewind" and updated.threshold is not None):
            run = gw.active.get(link.run_id)
            mode = updated.mode or (run.clip_mode if run else "global_norm")
            await gw.update_run(link.run_id, clip_mode=mode, clip_threshold=updated.threshold)
            await gw.broadcast_run(link.run_id)
        if updated.type in ("set_lr", "rewind") and updated.lr is not None:
            await gw.update_run(link.run_id, lr=updated.lr)
            await gw.broadcast_run(link.run_id)

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
            await self.gw.broadcast_run(run_id)
        except Exception as err:  # the server is shutting down: the page gets the run when it reconnects
            log.info("run %d: could not push its snapshot steps (%s)", run_id, err)

    async def handle_status(self, link: TrainerLink, status: Status) -> None:
        gw = self.gw
        run = gw.active.get(link.run_id)
        if link.run_id in self.replays and run is not None and run.status == "finished":
            return  # a re-synced file's old states do not reopen a finished run
        await gw.transition(link.run_id, status.state)
