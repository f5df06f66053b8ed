"""Commands to a trainer: stored, forwarded, acknowledged, and shown to every page on the way.

A command is stored ``pending`` first, so it survives a server restart and a
trainer that is not connected right now gets it on its next hello. It is sent on
a link at most once; the trainer's acknowledgement resolves it exactly once
(applied at a step, or rejected with why).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from starlette.websockets import WebSocket

from gradwatch.protocol import Ack, Command, CommandMessage, CommandUpdate, TrainerHello, page_message_text

from .hub import Hub
from .store import CommandRow, Store
from .views import command_view

log = logging.getLogger("gradwatch.server")


@dataclass(eq=False)
class TrainerLink:
    """One connected trainer websocket and the commands already sent on it."""

    websocket: WebSocket
    run_id: int
    #: What the trainer said of its model on this connection (the alert rules read it on every restart).
    hello: TrainerHello | None = None
    sent: set[int] = field(default_factory=set)
    #: The steps the trainer can rewind to, as it last said (``Snapshots``): held by the trainer, so by the link.
    snapshots: list[int] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, text: str) -> None:
        async with self.lock:
            await asyncio.wait_for(self.websocket.send_text(text), timeout=10)


class CommandDesk:
    def __init__(self, store: Store, hub: Hub) -> None:
        self.store = store
        self.hub = hub

    async def post(self, run_id: int, command: Command, origin: str, link: TrainerLink | None) -> CommandRow:
        """Store a new pending command (``origin``: who asked) and send it if the trainer is connected."""
        cmd = await self.store.call(self.store.create_command, run_id, command, origin)
        self.publish(cmd)
        if link is not None:
            await self.forward(link, cmd)
        return cmd

    async def forward_pending(self, link: TrainerLink) -> None:
        """Every command of the link's run still pending, oldest first (a trainer just said hello)."""
        for cmd in await self.store.call(self.store.list_commands, link.run_id, "pending"):
            await self.forward(link, cmd)

    async def forward(self, link: TrainerLink, cmd: CommandRow) -> None:
        if cmd.id in link.sent:
            return
        link.sent.add(cmd.id)
        try:
            await link.send(CommandMessage(id=cmd.id, command=cmd.to_command()).model_dump_json(exclude_none=True))
        except Exception:  # the trainer is going away; it gets the command again when it reconnects
            log.info("could not deliver command %d to run %d now; it stays pending", cmd.id, link.run_id)

    async def resolve(self, run_id: int, ack: Ack) -> CommandRow | None:
        """Record the trainer's acknowledgement; the resolved command, or None if there was nothing to resolve."""
        cmd = await self.store.call(self.store.get_command, ack.id)
        if cmd is None or cmd.run_id != run_id:
            log.warning("run %d acknowledged unknown command %d; ignored", run_id, ack.id)
            return None
        step = ack.applied_step if ack.state == "applied" else None
        updated = await self.store.call(self.store.resolve_command, ack.id, ack.state, step, ack.detail)
        if updated is None:
            log.info("command %d was already %s; repeated ack ignored", ack.id, cmd.state)
            return None
        self.publish(updated)
        return updated

    async def reject_pending(self, run_id: int, detail: str) -> None:
        """The run ended: no pending command will ever be applied."""
        for cmd in await self.store.call(self.store.reject_pending, run_id, detail):
            self.publish(cmd)

    def publish(self, cmd: CommandRow) -> None:
        self.hub.publish(cmd.run_id, page_message_text(CommandUpdate(run_id=cmd.run_id, command=command_view(cmd))))
