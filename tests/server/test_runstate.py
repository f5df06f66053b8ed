"""The run status state machine."""

from __future__ import annotations

import pytest
from gradwatch.server.runstate import InvalidTransition, accepts_commands, next_status


@pytest.mark.parametrize(("current", "event", "expected"), [
    ("running", "paused", "paused"),
    ("paused", "running", "running"),
    ("running", "finished", "finished"),
    ("paused", "finished", "finished"),
    ("running", "disconnect", "disconnected"),
    ("paused", "disconnect", "disconnected"),
    ("disconnected", "reconnect", "running"),
    ("disconnected", "paused", "paused"),
    ("finished", "disconnect", "finished"),
])
def test_allowed(current, event, expected):
    assert next_status(current, event) == expected


@pytest.mark.parametrize(("current", "event"), [
    ("finished", "running"), ("finished", "paused"), ("finished", "reconnect"),
])
def test_refused(current, event):
    with pytest.raises(InvalidTransition, match=current):
        next_status(current, event)


def test_only_finished_refuses_commands():
    assert [accepts_commands(s) for s in ("running", "paused", "disconnected", "finished")] == [
        True, True, True, False]
