"""Alerts inside the running server: one ``RunAlerts`` engine per connected run, fed on ingest.

Raised, re-opened and resolved alerts are saved and pushed to every viewer at once
(``{"type": "alert", "run_id", "alert"}``); continuations of an alert already
raised (its ``last_step`` and evidence moving on) are saved and pushed at most
every ``UPDATE_INTERVAL`` seconds, and whenever alerts are read. A failing rule
is logged and never disturbs ingest.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gradwatch.protocol import (
    AlertMessage,
    AlertRulesMessage,
    AlertView,
    Command,
    NonfiniteOrigin,
    Probe,
    StepRecord,
    TrainerHello,
    decode_float,
    page_message_text,
)

from . import varsets
from .alerts import persist
from .alerts.engine import Alert, AlertEvent, Change, RunAlerts
from .alerts.params import RULES, PatchError, settings, validate_patch
from .alerts.rules import RunInfo
from .hub import Hub
from .store import AUTO_ORIGIN, RunRow, Store

log = logging.getLogger("gradwatch.server.alerts")

#: Seconds between saves/pushes of an ongoing alert's progress.
UPDATE_INTERVAL = 1.0
#: A run's frames that arrive within this many seconds of its last rule evaluation are evaluated
#: together (one timer at most this late): the rules are vectorised, so their cost is mostly per
#: call, and a trainer sending 20+ frames a second would otherwise pay it on every frame (on a
#: machine the trainer shares, that CPU is taken from training). A frame with a non-finite step
#: is evaluated at once: it may pause the run, and every step counts then.
COALESCE = 0.25


def _nonfinite(r: StepRecord) -> bool:
    return r.loss_nonfinite or r.weight_nonfinite > 0 or r.skipped or not math.isfinite(decode_float(r.global_norm))


#: ``post(run_id, command, origin)``: the server's own command to a run (``pause_on``, ``rewind_on``).
PostCommand = Callable[[int, Command, str], Awaitable[None]]


class UnknownKind(LookupError):
    pass


def alert_message(alert: Alert) -> str:
    return page_message_text(AlertMessage(run_id=alert.run_id, alert=AlertView(**alert.view())))


#: ``notify(alert, event)``: an alert was raised, re-opened (its next episode) or resolved; must not block.
Notify = Callable[[Alert, AlertEvent], None]


class Alerting:
    def __init__(self, store: Store, hub: Hub, command: PostCommand, notify: Notify | None = None) -> None:
        self.store = store
        self.hub = hub
        self.command = command
        self.notify = notify
        self.engines: dict[int, RunAlerts] = {}
        self.pause_on: dict[int, set[str]] = {}
        #: What each connected trainer's hello asked to rewind on (the trainer holds the snapshots: not stored).
        self.rewind_on: dict[int, set[str]] = {}
        #: Highest step each run's rules have seen, kept across reconnects so re-sent steps are not counted twice.
        self.seen_step: dict[int, int] = {}
        self._flushed: dict[int, float] = {}
        #: Fresh records not yet run through the rules, the last evaluation time and the pending timer, per run.
        self._pending: dict[int, list[StepRecord]] = {}
        self._evaluated: dict[int, float] = {}
        self._timers: dict[int, asyncio.Task[None]] = {}
        #: Probes ahead of the steps received, per run: judged once the steps up to theirs are in, so that
        #: rules see steps and probes in step order however the two streams interleave on the wire.
        self._probes: dict[int, list[Probe]] = {}

    async def attach(self, run: RunRow, hello: TrainerHello | None = None) -> None:
        """A trainer connected (or reconnected) to ``run``: start its engine from the stored alerts and rules.

        What its ``hello`` says of the model's layers holds for this connection (every connection says it anew).
        """
        existing, rules = await self.store.call(self._load, run.id)
        watched = [run.variables[i] for i in varsets.latest(run.variables, run.variable_sets)]  # the newest set's
        info = RunInfo(
            watched,
            run.bn_layers,
            run.relu_layers,
            run.guard_nonfinite,
            dict(hello.activations) if hello else {},
            list(hello.bn_inference) if hello else [],
        )
        self.engines[run.id] = RunAlerts(run.id, info, rules, existing)
        self.pause_on[run.id] = set(run.pause_on)
        self.rewind_on[run.id] = set(hello.rewind_on) if hello else set()

    def _load(self, run_id: int) -> tuple[list[Alert], dict[str, Any]]:
        return persist.list_alerts(self.store.conn, run_id), persist.load_rules(self.store.conn, run_id)

    async def detach(self, run_id: int) -> None:
        await self.evaluate(run_id, every_probe=True)
        await self.flush(run_id)
        timer = self._timers.pop(run_id, None)
        if timer is not None:
            timer.cancel()
        self.engines.pop(run_id, None)
        self._flushed.pop(run_id, None)
        self._pending.pop(run_id, None)
        self._evaluated.pop(run_id, None)
        self._probes.pop(run_id, None)

    # ------------------------------------------------------------------ ingest

    async def steps(self, run_id: int, records: list[StepRecord]) -> None:
        engine = self.engines.get(run_id)
        if engine is None:
            return
        seen = self.seen_step.get(run_id, -1)
        fresh = [r for r in records if r.step > seen]
        if not fresh:
            return
        if any(a.step >= b.step for a, b in itertools.pairwise(fresh)):
            fresh = sorted({r.step: r for r in fresh}.values(), key=lambda r: r.step)
        self.seen_step[run_id] = fresh[-1].step
        self._pending.setdefault(run_id, []).extend(fresh)
        wait = self._evaluated.get(run_id, -COALESCE) + COALESCE - time.monotonic()
        if any(_nonfinite(r) for r in fresh):
            await self.evaluate(run_id)  # a pending timer then finds nothing left to do
        elif wait <= 0 and run_id not in self._timers:
            await self.evaluate(run_id)
        elif run_id not in self._timers:
            self._timers[run_id] = asyncio.create_task(
                self._later(run_id, max(wait, 0.0)), name="gradwatch-alert-rules"
            )

    async def _later(self, run_id: int, wait: float) -> None:
        await asyncio.sleep(wait)
        self._timers.pop(run_id, None)
        try:
            await self.evaluate(run_id)
        except Exception:
            log.exception("evaluating the alert rules of run %d failed", run_id)

    async def evaluate(self, run_id: int, *, every_probe: bool = False) -> None:
        """Run the rules over the run's pending records now (also before anything reads alerts).

        Each held probe whose step the records reach is judged between the records up to its step
        and the rest (``every_probe``: also those the records do not reach, as when the trainer left).
        """
        records = self._pending.pop(run_id, None) or []
        engine = self.engines.get(run_id)
        if engine is None:
            return
        held = self._probes.get(run_id, [])
        reached = self.seen_step.get(run_id, -1)
        due = [p for p in held if every_probe or p.step <= reached]
        if not records and not due:
            return
        self._probes[run_id] = [p for p in held if p not in due]
        self._evaluated[run_id] = time.monotonic()
        for probe in sorted(due, key=lambda p: p.step):
            upto = [r for r in records if r.step <= probe.step]
            records = records[len(upto) :]
            await self._observe(run_id, engine.observe_steps, upto)
            await self._observe(run_id, engine.observe_probe, probe)
        await self._observe(run_id, engine.observe_steps, records)
        if engine.dirty and time.monotonic() - self._flushed.get(run_id, 0.0) >= UPDATE_INTERVAL:
            await self.flush(run_id)

    async def evaluate_all(self) -> None:
        for run_id in list(self._pending):
            await self.evaluate(run_id)

    async def _observe(self, run_id: int, observe: Callable[[Any], list[Change]], what: Any) -> None:
        if not what:
            return
        try:
            changes = observe(what)
        except Exception:
            log.exception(
                "alert rules failed on run %d; these %s are not checked",
                run_id,
                "steps" if isinstance(what, list) else "probe",
            )
            return
        await self._publish(run_id, changes)

    async def probe(self, run_id: int, probe: Probe) -> None:
        """Judge ``probe`` after every step up to its own (held until those steps are in)."""
        if run_id not in self.engines:
            return
        self._probes.setdefault(run_id, []).append(probe)
        await self.evaluate(run_id)

    async def origin(self, run_id: int, msg: NonfiniteOrigin) -> None:
        await self.evaluate(run_id)  # the non-finite step it explains raises its alert first
        engine = self.engines.get(run_id)
        change = engine.origin(msg) if engine is not None else None
        if change is not None:
            await self._publish(run_id, [change])  # an origin added: announced to no webhook

    async def _publish(self, run_id: int, changes: list[Change]) -> None:
        if not changes:
            return
        await self.store.call(persist.save_alerts, self.store.conn, [c.alert for c in changes])
        for c in changes:
            self.hub.broadcast(alert_message(c.alert))
            if c.event is not None and self.notify is not None:
                self.notify(c.alert, c.event)
        for c in changes:
            if not c.opened:  # never on resolving
                continue
            origin = f"{AUTO_ORIGIN}{c.alert.kind} alert #{c.alert.id}"
            if c.alert.kind in self.rewind_on.get(run_id, ()):  # rewinds instead of pausing
                log.info(
                    "run %d: %s alert #%d raised; rewinding before step %d (rewind_on)",
                    run_id,
                    c.alert.kind,
                    c.alert.id,
                    c.alert.step,
                )
                await self.command(run_id, Command(type="rewind", step=max(c.alert.step - 1, 0), auto=True), origin)
            elif c.alert.kind in self.pause_on.get(run_id, ()):
                log.info("run %d: %s alert #%d raised; pausing (pause_on)", run_id, c.alert.kind, c.alert.id)
                await self.command(run_id, Command(type="pause"), origin)

    async def flush(self, run_id: int) -> None:
        """Save and push the progress of ongoing alerts now."""
        if self._pending.get(run_id):
            await self.evaluate(run_id)
        engine = self.engines.get(run_id)
        self._flushed[run_id] = time.monotonic()
        if engine is None or not engine.dirty:
            return
        alerts = engine.take_dirty()
        if alerts:
            await self.store.call(persist.save_alerts, self.store.conn, alerts)
            for a in alerts:
                self.hub.broadcast(alert_message(a))

    # ------------------------------------------------------------------ REST

    async def list_alerts(self, run_id: int) -> list[dict[str, Any]]:
        await self.flush(run_id)
        alerts = await self.store.call(persist.list_alerts, self.store.conn, run_id)
        return [a.view() for a in alerts]

    async def counts(self) -> dict[int, dict[str, int]]:
        await self.evaluate_all()
        return await self.store.call(persist.alert_counts, self.store.conn)

    async def rules(self, run_id: int) -> dict[str, dict[str, Any]]:
        rules = await self.store.call(persist.load_rules, self.store.conn, run_id)
        return {kind: rule.view() for kind, rule in rules.items()}

    async def patch_rule(self, run_id: int, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Apply ``{muted?, params?}``; raises UnknownKind or PatchError (nothing changes then)."""
        if kind not in RULES:
            raise UnknownKind(kind)
        muted, params = validate_patch(kind, body)
        rules = await self.store.call(persist.load_rules, self.store.conn, run_id)
        current = rules[kind]
        new = settings(kind, current.muted if muted is None else muted, {**current.params, **params})
        await self.store.call(persist.save_rule, self.store.conn, run_id, kind, new)
        await self.evaluate(run_id)  # steps received before the change are judged by the old settings
        engine = self.engines.get(run_id)
        if engine is not None:
            engine.configure(kind, new)
        # Every page watching the run shows the new setting, not only the one that changed it.
        self.hub.publish(run_id, page_message_text(AlertRulesMessage(run_id=run_id, rules={kind: new.view()})))
        return new.view()


__all__ = ["AlertEvent", "Alerting", "PatchError", "UnknownKind", "alert_message"]
