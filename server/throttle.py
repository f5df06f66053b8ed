"""A token bucket per trainer connection: a flood of frames waits its turn instead of starving the server.

A frame that is already queued on a websocket is handed over without the event loop ever
getting a turn, so one trainer sending 20,000 frames as fast as it can kept every REST request
waiting for seconds. Each connection takes a frame (and its bytes) from its bucket before it is
handled; an empty bucket sleeps until it refills, and every frame yields to the loop once. A real
trainer sends a few dozen frames a second and never waits; a replayed file (``gradwatch sync``)
goes at the bucket's rate; a flood fills the socket, then TCP holds the sender back.
"""

from __future__ import annotations

import asyncio
import time


class Throttle:
    def __init__(self, frames_per_sec: float, bytes_per_sec: float, burst_seconds: float = 1.0) -> None:
        self.rates = (frames_per_sec, bytes_per_sec)
        self.capacity = (frames_per_sec * burst_seconds, bytes_per_sec * burst_seconds)
        self._tokens = list(self.capacity)
        self._at = time.monotonic()
        #: Seconds this connection has waited for its bucket (for the log and tests).
        self.waited = 0.0

    def _refill(self) -> None:
        now = time.monotonic()
        elapsed, self._at = now - self._at, now
        self._tokens = [min(cap, t + rate * elapsed) for t, rate, cap in zip(self._tokens, self.rates, self.capacity)]

    async def take(self, size: int) -> None:
        """Wait until one frame of ``size`` bytes may be handled (a frame larger than the burst still goes)."""
        self._refill()
        need = (1.0, float(min(size, self.capacity[1])))
        wait = max((n - t) / rate for n, t, rate in zip(need, self._tokens, self.rates))
        if wait > 0:
            self.waited += wait
            await asyncio.sleep(wait)
            self._refill()
        else:
            await asyncio.sleep(0)  # one turn for everyone else, even under the rate
        self._tokens = [t - n for t, n in zip(self._tokens, need)]
