"""Waiting in tests for the condition asserted next, polled and bounded, instead of sleeping a guess.

A fixed sleep is either too short on a loaded machine (a flaky test) or too long everywhere (a slow one);
polling returns as soon as the condition holds and fails with what it last saw. Sleeps that remain in the
tests are part of a scenario (a slow peer, time that must pass), each with a comment saying so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

TIMEOUT = 30.0  # generous: a first trace or a loaded CI machine takes its time, and a passing wait ends early
INTERVAL = 0.05


def _timed_out(message: str, timeout: float, last: object) -> AssertionError:
    return AssertionError(f"timed out after {timeout:g} s waiting for {message}; last value: {last!r}")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = TIMEOUT,
    interval: float = INTERVAL,
    message: str = "the condition",
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """The predicate's first truthy value; AssertionError after ``timeout`` s. Exceptions in ``ignore``
    count as a falsy value (e.g. a connection refused while a server restarts)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except ignore as e:
            last: object = e
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise _timed_out(message, timeout, last)
        time.sleep(interval)


async def async_wait_until(
    predicate: Callable[[], T],
    timeout: float = TIMEOUT,
    interval: float = INTERVAL,
    message: str = "the condition",
) -> T:
    """``wait_until`` inside an event loop: the loop runs (and serves what the predicate waits for) meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise _timed_out(message, timeout, last)
        await asyncio.sleep(interval)
