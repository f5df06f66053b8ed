"""One monitored run on the trainer side: statistics, control and transport wired together.

Both the Keras callback and the hand-written-loop hook drive a ``RunSession``:
after each step they call ``after_steps``, which is the whole per-step host
cost — one buffer read on reported steps, a buffer append, and a look at the
command inbox. Serialisation and I/O happen on the transport's threads.
"""

from __future__ import annotations

import math
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from gradwatch.protocol import (
    CLIP_MODES,
    MAX_CLIP_THRESHOLD,
    PROTOCOL_VERSION,
    TRAINER_PATH,
    ClipSetting,
    Status,
    TrainerHello,
)

from .control import RunControl
from .graph_stats import GradientStats
from .transport import Transport


def trainer_ws_url(server: str) -> str:
    """``http://host:port`` (or ws://, https://, wss://) → the trainer websocket URL."""
    parts = urlsplit(server)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"server={server!r} is not a URL like 'http://127.0.0.1:8765'")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + TRAINER_PATH, "", ""))


def validate_clip(mode: str, threshold: float | None) -> None:
    if mode not in CLIP_MODES:
        raise ValueError(f"clip_mode={mode!r} is not one of {CLIP_MODES}")
    if threshold is not None and not (
        isinstance(threshold, (int, float)) and math.isfinite(threshold) and 0 < threshold <= MAX_CLIP_THRESHOLD
    ):
        raise ValueError(
            f"clip_threshold={threshold!r} must be None (measure only) "
            f"or a finite number in (0, {MAX_CLIP_THRESHOLD:g}]"
        )


class RunSession:
    """Constructed with everything it needs; ``start()`` opens the connection."""

    def __init__(
        self,
        *,
        stats: GradientStats,
        run_name: str,
        server: str,
        token: str | None,
        every: int,
        clip_mode: str,
        clip_threshold: float | None,
        meta: dict[str, Any],
        max_buffer_bytes: int,
        flush_timeout: float,
        transport_options: dict[str, Any] | None = None,
    ) -> None:
        self.stats = stats
        self.run_name = run_name
        self.every = every
        self.clip = (clip_mode, clip_threshold)
        self.meta = meta
        self.flush_timeout = flush_timeout
        self.names = [getattr(v, "path", None) or v.name for v in stats.variables]
        self.bn_names = [getattr(layer, "path", None) or layer.name for layer in stats.bn_layers]
        self.transport = Transport(
            trainer_ws_url(server),
            token,
            hello=self._hello,
            on_command=lambda m: self.control.submit(m),
            encode=self._encode,
            max_buffer_bytes=max_buffer_bytes,
            **(transport_options or {}),
        )
        self.control = RunControl(on_clip=self._set_clip, send=self.transport.put_control)
        self._last_reported = -1
        self._last_time = time.time()
        self._last_step_done = -1

    def start(self) -> None:
        self.stats.set_clip(*self.clip)
        self.transport.start()

    # ------------------------------------------------------------------ training thread

    def after_steps(self, next_step: int, epoch: int, fallback_loss: float | None = None) -> bool:
        """Called after the step ``next_step - 1``; returns True when training should stop."""
        last = next_step - 1
        if last // self.every * self.every > self._last_reported:  # a reportable step is due
            now = time.time()
            rows = self.stats.read()
            new = sorted(
                (int(r[0]), r) for r in rows if int(r[0]) > self._last_reported and int(r[0]) % self.every == 0
            )
            if new:
                sps = (
                    (last - self._last_step_done) / max(now - self._last_time, 1e-9)
                    if self._last_step_done >= 0
                    else None
                )
                for step, row in new:
                    self.transport.put_record(step, (row.copy(), epoch, now, sps, fallback_loss), row.nbytes)
                self._last_reported = new[-1][0]
                self._last_time, self._last_step_done = now, last
        self.control.wait_while_paused(next_step)
        return self.control.stop_requested

    def finish(self, step: int) -> None:
        self.control.finish()
        self.transport.put_control(Status(type="status", state="finished", step=max(step, 0)))
        self.transport.close(self.flush_timeout)

    def _set_clip(self, mode: str | None, threshold: float) -> None:
        mode = mode or self.clip[0]
        validate_clip(mode, threshold)
        self.stats.set_clip(mode, threshold)
        self.clip = (mode, threshold)

    # ------------------------------------------------------------------ sender thread

    def _hello(self, run_id: int | None) -> TrainerHello:
        return TrainerHello(
            type="hello",
            protocol=PROTOCOL_VERSION,
            run_name=self.run_name,
            run_id=run_id,
            variables=self.names,
            bn_layers=self.bn_names,
            clip=ClipSetting(mode=self.clip[0], threshold=self.clip[1]),  # type: ignore[arg-type]
            every=self.every,
            meta=self.meta,
        )

    def _encode(self, payload: tuple[np.ndarray, int, float, float | None, float | None]) -> dict[str, Any]:
        row, epoch, t, sps, fallback_loss = payload
        u = self.stats.layout.unpack(row)
        loss = u["loss"] if self.stats.loss_recorded or fallback_loss is None else fallback_loss
        threshold = u["clip_threshold"]
        return {
            "step": int(u["step"]),
            "epoch": epoch,
            "time": t,
            "loss": loss,
            "lr": u["lr"],
            "global_norm": u["global_norm"],
            "clip_mode": CLIP_MODES[int(u["clip_mode"])],
            "clip_threshold": threshold if threshold > 0 else None,
            "clip_scale": u["clip_scale"],
            "clipped": bool(u["clipped"]),
            "clipped_fraction": None if math.isnan(u["clipped_fraction"]) else u["clipped_fraction"],
            "steps_per_sec": sps,
            "grad_norm": u["grad_norm"].tolist(),
            "grad_nan": u["grad_nan"].astype(np.int64).tolist(),
            "grad_inf": u["grad_inf"].astype(np.int64).tolist(),
            "weight_nonfinite": int(u["weight_nonfinite"]),
            "loss_nonfinite": bool(u["loss_nonfinite"]),
            "bn": u["bn"].tolist(),
        }
