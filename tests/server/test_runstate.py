"""The run status state machine."""

from __future__ import annotations

import pytest
from gradwatch.server.runstate import InvalidTransition, accepts_commands, next_status


@pytest.mark.parametrize(
    ("current", "event", "expected"),
    [
        ("running", "paused", "paused"),
        ("paused", "running", "running"),
        ("running", "finished", "finished"),
        ("paused", "finished", "finished"),
        ("running", "disconnect", "disconnected"),
        ("paused", "disconnect", "disconnected"),
        ("disconnected", "reconnect", "running"),
        ("disconnected", "paused", "paused"),
        ("finished", "disconnect", "finished"),
        ("running", "idle", "idle"),  # a fit() ended; the monitor may train on
        ("idle", "running", "running"),  # the next fit() continues the run
        ("running", "interrupted", "interrupted"),
        ("interrupted", "running", "running"),
        ("interrupted", "disconnect", "interrupted"),  # what happened last stays visible
        ("idle", "disconnect", "disconnected"),
        ("idle", "reconnect", "idle"),
        ("idle", "finished", "finished"),
        ("interrupted", "finished", "finished"),
        ("disconnected", "idle", "idle"),  # the trainer says what it is after a reconnect
    ],
)
def test_allowed(current, event, expected):
    assert next_status(current, event) == expected


@pytest.mark.parametrize(
    ("current", "event"),
    [
        ("finished", "running"),
        ("finished", "paused"),
        ("finished", "reconnect"),
        ("finished", "idle"),
        ("finished", "interrupted"),
    ],
)
def test_refused(current, event):
    with pytest.raises(InvalidTransition, match=current):
        next_status(current, event)


def test_only_finished_refuses_commands():
    states = ("running", "paused", "idle", "interrupted", "disconnected", "finished")
    assert [accepts_commands(s) for s in states] == [True, True, True, True, True, False]
