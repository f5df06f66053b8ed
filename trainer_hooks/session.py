"""One monitored run on the trainer side: statistics, control and transport wired together.

Both the Keras callback and the hand-written-loop hook drive a ``RunSession``:
after each step they call ``after_steps``, which is the whole per-step host
cost — one buffer read on reported steps, a buffer append, and a look at the
command inbox. Serialisation and I/O happen on the transport's threads.
"""

from __future__ import annotations

import math
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from gradwatch.protocol import (
    PROTOCOL_VERSION,
    ClipSetting,
    Command,
    Gap,
    NonfiniteOrigin,
    Probe,
    Snapshots,
    Status,
    TrainerHello,
    TrainerState,
    VariableSet,
    trainer_ws_url,
)
from gradwatch.stepfields import STEP_FIELDS

from .config import MonitorConfig, validate_clip
from .control import ControlState, RunControl
from .graph_stats import SCALARS
from .model_facts import ModelFacts
from .multi_optimizer import AnyStats, group_stats
from .origin import OriginFinder, Replay, explain_nonfinite
from .probe import Prober
from .rewind import Rewinder
from .spool import RunFile
from .transport import Transport
from .update_ratio import UpdateRatio

_UNHEALTHY, _WEIGHT_NONFINITE, _SKIPPED = (SCALARS.index(k) for k in ("unhealthy", "weight_nonfinite", "skipped"))


def _nonfinite(row: np.ndarray) -> bool:
    """Were the step's gradients or loss not finite?"""
    return bool(row[_UNHEALTHY])


class RunSession:
    """Constructed with everything it needs; ``start()`` opens the connection."""

    def __init__(
        self,
        config: MonitorConfig,
        *,
        stats: AnyStats,
        run_name: str,
        token: str | None,
        clip: tuple[str, float | None],
        meta: dict[str, Any],
        set_lr: Callable[[float, str | None], None] | None = None,
        prober: Prober | None = None,
        origin: OriginFinder | None = None,
        update_ratio: UpdateRatio | None = None,
        facts: Callable[[], ModelFacts] | None = None,
        rewinder: Rewinder | None = None,
    ) -> None:
        """``config`` says how to report; the rest are this run's facts: its statistics, its name and
        token (resolved by now), the clip in effect, the hello's ``meta`` and the host-side helpers."""
        self.stats = stats
        #: What the hello says of the model's layers, read on the sender thread before its first hello
        #: (tracing a large model takes seconds, which fit() must not wait for).
        self.facts = ModelFacts()
        self._read_facts = facts
        #: Unique to this session: a run file synced later continues its run on the server (spool.py).
        self.uid = uuid.uuid4().hex
        self.config = config
        self.rewinder = rewinder
        self._held: list[int] = []  # the snapshot steps last told to the server
        self._between_steps = True  # the host runs between two steps now (not inside a compiled one)
        self._last_nonfinite = -1  # the last step read whose gradients or loss were not finite
        self.prober = prober
        self.origin = origin
        self._weights_suspect = False  # after a non-finite step, until a weight scan comes back clean
        self._bn_samples: dict[int, list[list[float]]] = {}  # step -> BN rows, until that step is queued
        # step -> Keras' running-mean loss after it (logs["loss"]), until that step is queued: used only
        # when the step exposed no loss of its own, and only on its own step.
        self._mean_losses: dict[int, float] = {}
        self._last_queued: tuple[int, tuple[Any, ...]] | None = None
        self.update_ratio = update_ratio
        self._ratios: dict[int, np.ndarray] = {}  # step -> ||dw|| / ||w|| per variable, until queued
        self._last_probe_block = -1
        self._origins_sent: list[tuple[str, str | None]] = []
        self.run_name = run_name
        self.every = config.every
        self.clip = clip
        self.meta = meta
        #: The variables of the run's first set (the hello's); ``active`` those the records follow now.
        self.names = [getattr(v, "path", None) or v.name for v in stats.variables]
        self.active = list(self.names)
        self.bn_names = [getattr(layer, "path", None) or layer.name for layer in stats.bn_layers]
        run_file = None
        offline, spool_bytes = config.run_mode == "offline", int(config.spool_mb * 2**20)
        if offline or spool_bytes > 0:
            run_file = RunFile(
                config.run_dir, self.uid, run_name, "offline" if offline else "spool", None if offline else spool_bytes
            )
        self.transport = Transport(
            trainer_ws_url(config.server_url),
            token,
            hello=self._hello,
            on_command=lambda m: self.control.submit(m),
            encode=self._encode,
            max_buffer_bytes=int(config.max_buffer_mb * 2**20),
            run_file=run_file,
            offline=offline,
            prepare=self._prepare_hello,
            **{"prove_server": config.prove_server, **(config.transport_options or {})},
        )
        self.control = RunControl(
            on_clip=self.set_clip,
            send=self.transport.put_control,
            on_lr=set_lr,
            on_rewind=self._rewind if rewinder is not None else None,
        )
        self._last_seen = -1  # the last step read from the statistics ring
        self._expect_from = 0  # the first step the ring must still hold (this fit's or loop's first)
        self._warned_overrun = False
        self._last_time = time.monotonic()
        self._last_step_done = -1
        self._last_read, self._last_read_step, self._epoch = 0.0, -1, 0

    def _prepare_hello(self) -> None:
        if self._read_facts is not None:
            self.facts = self._read_facts()

    def start(self) -> None:
        self.stats.set_clip(*self.clip)
        self.transport.start()

    # ------------------------------------------------------------------ training thread

    #: Read the statistics buffer at most this often (seconds) when training is fast; the
    #: ring holds the rows in between. Each read is one host transfer plus Python work.
    READ_INTERVAL = 0.02

    def after_steps(
        self,
        next_step: int,
        epoch: int,
        fallback_loss: float | None = None,
        rows: np.ndarray | None = None,
        between_steps: bool = True,
    ) -> bool:
        """Called after the step ``next_step - 1``; returns True when training should stop.

        ``rows`` is the statistics buffer when the caller already has it on the host. ``between_steps``:
        False when the host runs inside a compiled step (a ``tf.function`` loop's host call), where no
        snapshot may be taken nor restored.
        """
        last = next_step - 1
        self._epoch = epoch
        if fallback_loss is not None and not self.stats.loss_recorded:
            self._mean_losses[last] = fallback_loss
        if last % self.every == 0 and self.stats.bn.due(last // self.every):
            self._bn_samples[last] = self.stats.bn.sample()  # the moving statistics right after step `last`
        # Inside a compiled loop the host runs before the step's update is done: no ratio there.
        meter = self.update_ratio if rows is None else None
        if meter is not None and (ratios := meter.measure(last)) is not None:
            self._ratios[last] = ratios
        self._report(last, rows, force=False)
        if self.prober is not None and last // self.config.probe_every > self._last_probe_block:
            self._last_probe_block = last // self.config.probe_every
            dead, gap = self.prober.run()
            self.transport.put_control(Probe(type="probe", step=last, dead_relu=dead, bn_gap=gap))
        self._between_steps = between_steps
        if self.rewinder is not None and between_steps and self.rewinder.after_step(last, lambda: self._healthy(last)):
            self._tell_snapshots()
        if self.control.has_pending:
            # Every step so far goes out before the confirmation ("paused at N" must not
            # overtake steps still sitting in the statistics ring).
            self._report(last, None, force=True)
        self.control.apply_pending(next_step)
        if self.control.state is ControlState.PAUSED:
            self._report(last, None, force=True)  # the page shows where it stopped
        self.control.wait_while_paused(next_step)
        if meter is not None:
            meter.keep(next_step)
        return self.control.stop_requested

    def _healthy(self, last: int) -> bool:
        """Were the gradients and loss of step ``last`` finite? (Reads the ring now if it was not read up to it.)"""
        self._report(last, None, force=True)
        return self._last_seen >= last and self._last_nonfinite < last

    def _tell_snapshots(self) -> None:
        assert self.rewinder is not None
        held = self.rewinder.snapshots.steps
        if held != self._held:
            self._held = held
            self.transport.put_control(Snapshots(type="snapshots", steps=held))

    def _rewind(self, command: Command) -> str:
        """A ``rewind`` command, on the training thread between two steps (``RunControl``)."""
        if self.rewinder is None:
            raise ValueError("the snapshots were dropped when the model was recompiled; new ones need a new run")
        if not self._between_steps:
            raise ValueError(
                "this loop's host call runs inside its compiled step, where the weights cannot be "
                "restored; rewind works with fit() and eager or XLA watch() loops"
            )
        detail = self.rewinder.apply(command)
        self._tell_snapshots()
        return detail

    def switch(self, stats: AnyStats, origin: OriginFinder | None, from_step: int) -> None:
        """The same run goes on from ``from_step`` with other statistics (a recompile, a trainable flip).

        The old statistics' last steps were queued when their fit ended (``settle``); if the watched
        variables changed, the server hears it before any step of the new set.
        """
        self.stats, self.origin = stats, origin
        if self.rewinder is not None:  # its snapshots are of the old optimizer's variables
            self.rewinder = None
            self.transport.put_control(Snapshots(type="snapshots", steps=[]))
        if self.prober is not None and self.prober.samples is not None and origin is not None:
            self.prober.samples = origin.samples  # the training batches the new step keeps
        stats.set_clip(*self.clip)
        if self.update_ratio is not None:  # the host's meter follows the new variables (else the graph measures)
            self.update_ratio = UpdateRatio(stats.variables, self.update_ratio.every)
        self._ratios.clear()
        self._bn_samples.clear()
        self._last_seen = self._last_read_step = from_step - 1
        self._expect_from = from_step
        names = [getattr(v, "path", None) or v.name for v in stats.variables]
        if names != self.active:
            self.active = names
            self.transport.put_control(VariableSet(type="variables", from_step=from_step, variables=names))

    def expect_from(self, step: int) -> None:
        """Training (re)starts at ``step``: every step from there on is read from the ring."""
        self._expect_from = step

    def resume(self, next_step: int) -> None:
        """Another fit (or ``watch()`` block) of the same run starts at ``next_step``."""
        self._expect_from = next_step
        self._last_step_done = -1  # no steps-per-second across the pause between two fits
        if self.update_ratio is not None:
            self.update_ratio.keep(next_step)
        self.transport.put_control(Status(type="status", state="running", step=next_step))

    def settle(self, step: int, state: TrainerState) -> None:
        """Training stopped after ``step``: queue every step up to it, then the run's ``state``.

        Queues only; nothing here waits for the server (``close`` does, at the very end).
        """
        self._report(step, None, force=True)
        last = self._last_queued
        if self.stats.bn_layers and last is not None and last[0] == step and last[1][-1] is None:
            # The state training ended in; sending a step again replaces its record.
            payload = (*last[1][:-1], self.stats.bn.sample())
            self.transport.put_record(step, payload, payload[0].nbytes)
        if state == "finished":
            self.control.finish()
        self.transport.put_control(Status(type="status", state=state, step=max(step, 0)))

    def close(self, timeout: float) -> bool:
        """Deliver what is buffered within ``timeout`` seconds and disconnect; True if nothing was left."""
        return self.transport.close(timeout)

    def _report(self, last: int, rows: np.ndarray | None, force: bool) -> None:
        """Queue every reportable step up to ``last`` not queued yet, reading the buffer when due.

        Reportable: every ``every``-th step, and any step whose gradients or loss were
        not finite whatever ``every`` is (the step a run went wrong must never be skipped).
        """
        if last <= self._last_seen:
            return  # no step since the last read
        now = time.monotonic()
        # Ring of R rows: reading every R // 2 steps loses none, and reading every
        # step of a fast run would cost more than the statistics themselves.
        due = last - self._last_read_step >= self.stats.ring // 2 or now - self._last_read >= self.READ_INTERVAL
        if not (due or force or rows is not None):
            return
        self._last_read_step, self._last_read = last, now
        rows = self.stats.read() if rows is None else rows
        fresh = [(int(r[0]), r) for r in rows if int(r[0]) > self._last_seen]
        if not fresh:
            return
        self._overrun(max(self._last_seen + 1, self._expect_from), min(step for step, _ in fresh))
        self._last_seen = max(step for step, _ in fresh)
        self._last_nonfinite = max([self._last_nonfinite, *(step for step, r in fresh if _nonfinite(r))])
        new = sorted((step, r) for step, r in fresh if step % self.every == 0 or _nonfinite(r))
        if not new:
            return
        self._scan_weights(new)
        wall = time.time()
        sps = (last - self._last_step_done) / max(now - self._last_time, 1e-9) if self._last_step_done >= 0 else None
        for step, row in new:
            ratios = self._ratios.pop(step, None)
            if ratios is not None and not row[_SKIPPED]:
                offset = self.stats.layout.update_ratio_offset
                row[offset : offset + len(ratios)] = ratios
            mean_loss = self._mean_losses.pop(step, None)
            payload = (row.copy(), self.stats, self._epoch, wall, sps, mean_loss, self._bn_samples.pop(step, None))
            self.transport.put_record(step, payload, row.nbytes)
            self._last_queued = (step, payload)
            if _nonfinite(row):
                self._send_origin(step, row)
        for pending in (self._bn_samples, self._ratios, self._mean_losses):
            for step in [s for s in pending if s <= self._last_seen]:
                del pending[step]  # its row was not reportable after all
        self._last_time, self._last_step_done = now, last

    def _overrun(self, first: int, oldest_held: int) -> None:
        """Steps ``first .. oldest_held - 1`` ran but their rows were overwritten before the host read them:
        a gap on the run, and one warning naming the fix."""
        if oldest_held <= first:
            return
        lost = range(first, oldest_held)
        dropped = sum(1 for step in lost if step % self.every == 0)
        if dropped:
            self.transport.put_control(Gap(type="gap", from_step=first, to_step=oldest_held - 1, dropped=dropped))
        if not self._warned_overrun:
            self._warned_overrun = True
            warnings.warn(
                f"gradwatch: steps {first}..{oldest_held - 1} ran before the host read the statistics ring, which "
                f"holds {self.stats.ring} steps, so they are lost (a gap on the run). Inside a "
                "tf.function(jit_compile=True) loop the host reads it when the loop reads `watch.stop_requested`: "
                f"read it at least every {self.stats.ring} steps",
                RuntimeWarning,
                stacklevel=2,
            )

    def _scan_weights(self, rows: list[tuple[int, np.ndarray]]) -> None:
        """After a non-finite step, and until clean: count non-finite weights (read now) into the rows."""
        first_bad = next((i for i, (_, row) in enumerate(rows) if _nonfinite(row)), None)
        if first_bad is None and not self._weights_suspect:
            return
        bad = self.stats.count_weight_nonfinite()
        for _, row in rows[0 if self._weights_suspect else first_bad :]:
            row[_WEIGHT_NONFINITE] = bad
        self._weights_suspect = bad > 0

    #: At most this many nonfinite_origin messages per run: the first ones are what matters.
    MAX_ORIGINS = 10

    def _send_origin(self, step: int, row: np.ndarray) -> None:
        if len(self._origins_sent) >= self.MAX_ORIGINS:
            return
        u = self.stats.layout.unpack(row)
        inputs_given = bool(getattr(self.stats, "inputs_given", True))
        origin = explain_nonfinite(u, self.stats.loss_recorded, lambda ok: self._replay(step, ok), inputs_given)
        key = (origin[0], origin[1])
        if key in self._origins_sent:
            return
        self._origins_sent.append(key)
        message = NonfiniteOrigin(
            type="nonfinite_origin", step=step, source=origin[0], layer=origin[1], detail=origin[2]
        )
        self.transport.put_control(message)

    def _replay(self, step: int, current_weights_ok: bool) -> Replay:
        if self.origin is None:
            return Replay(why_not="this model cannot be replayed layer by layer")
        return self.origin.replay(step, current_weights_ok)

    def set_clip(self, mode: str | None, threshold: float, group: str | None = None) -> None:
        mode = mode or self.clip[0]
        validate_clip(mode, threshold)
        if group is None:
            self.stats.set_clip(mode, threshold)
            self.clip = (mode, threshold)
        else:
            group_stats(self.stats, group).set_clip(mode, threshold)

    # ------------------------------------------------------------------ sender thread

    def _hello(self, run_id: int | None) -> TrainerHello:
        # Until the first welcome (run_id None) a resumed session asks for its old run.
        resume = self.config.resume
        resuming = resume is not None and run_id is None
        if resuming and isinstance(resume, int):
            run_id = resume
        return TrainerHello(
            type="hello",
            protocol=PROTOCOL_VERSION,
            run_name=self.run_name,
            run_id=run_id,
            resume=resuming,
            variables=self.names,
            bn_layers=self.bn_names,
            clip=ClipSetting(mode=self.clip[0], threshold=self.clip[1]),
            every=self.every,
            meta=self.meta,
            pause_on=list(self.config.pause_on),
            rewind_on=list(self.config.rewind_on),
            guard_nonfinite=self.config.guard_nonfinite,
            relu_layers=self.prober.relu_names if self.prober is not None else [],
            activations=self.facts.activations,
            bn_inference=self.facts.bn_inference,
            uid=self.uid,
        )

    def _encode(
        self, payload: tuple[np.ndarray, AnyStats, int, float, float | None, float | None, Any]
    ) -> dict[str, Any]:
        # The statistics the row was read from: a later fit of the run may watch other variables.
        row, stats, epoch, t, sps, mean_loss, bn = payload
        ring = stats.layout.step_values(row)  # what the compiled step measured (and the host's weight scan)
        is_mean = not stats.loss_recorded and mean_loss is not None
        loss = ring["loss"]
        host = {  # the host's own fields, and the loss it knows better (Keras' running mean, or none)
            "epoch": epoch,
            "time": t,
            "loss": mean_loss if is_mean else loss if stats.loss_recorded else None,
            "steps_per_sec": sps,
            "loss_nonfinite": stats.loss_recorded and not math.isfinite(loss),
            "bn": bn or [],
            "loss_is_mean": is_mean,
        }
        return {f.name: host[f.name] if f.name in host else ring[f.name] for f in STEP_FIELDS}
