"""The trainer-side run-control state machine: guarded transitions, one ack per command."""

from __future__ import annotations

import threading
import time

import pytest
from gradwatch.trainer_hooks.control import ControlState, RunControl

from gradwatch.protocol import Ack, Command, CommandMessage, Status


def make_control():
    sent: list[Ack | Status] = []
    clips: list[tuple[str | None, float]] = []

    def on_clip(mode, threshold, group=None):
        if threshold > 100:
            raise ValueError("threshold too large for this test")
        clips.append((mode, threshold))

    return RunControl(on_clip=on_clip, send=sent.append), sent, clips


def msg(i: int, **command) -> CommandMessage:
    return CommandMessage(id=i, command=Command(**command))


def acks(sent):
    return [(m.id, m.state, m.applied_step) for m in sent if isinstance(m, Ack)]


@pytest.mark.parametrize(
    ("sequence", "final", "states"),
    [
        (["pause"], ControlState.PAUSED, ["applied"]),
        (["pause", "pause"], ControlState.PAUSED, ["applied", "rejected"]),
        (["resume"], ControlState.RUNNING, ["rejected"]),
        (["pause", "resume"], ControlState.RUNNING, ["applied", "applied"]),
        (["stop", "resume"], ControlState.STOPPING, ["applied", "rejected"]),
        (["pause", "stop"], ControlState.STOPPING, ["applied", "applied"]),
        (["stop", "stop"], ControlState.STOPPING, ["applied", "rejected"]),
    ],
)
def test_transitions(sequence, final, states):
    control, sent, _ = make_control()
    for i, kind in enumerate(sequence):
        control.submit(msg(i, type=kind))
    control.apply_pending(next_step=5)
    assert control.state is final
    assert [a[1] for a in acks(sent)] == states
    assert all(step == 5 for _, state, step in acks(sent) if state == "applied")


def test_set_clip_applies_and_reports_the_next_step():
    control, sent, clips = make_control()
    control.submit(msg(1, type="set_clip", threshold=0.5))
    control.submit(msg(2, type="set_clip", mode="value", threshold=2))
    control.apply_pending(next_step=42)
    assert clips == [(None, 0.5), ("value", 2.0)]
    assert acks(sent) == [(1, "applied", 42), (2, "applied", 42)]


def test_set_clip_rejected_by_the_trainer_keeps_running():
    control, sent, clips = make_control()
    control.submit(msg(1, type="set_clip", threshold=1000))
    control.apply_pending(next_step=1)
    assert clips == [] and control.state is ControlState.RUNNING
    ack = next(m for m in sent if isinstance(m, Ack))
    assert ack.state == "rejected" and "too large" in (ack.detail or "")


def test_pause_blocks_until_resume_from_another_thread():
    control, sent, _ = make_control()
    control.submit(msg(1, type="pause"))
    released = threading.Event()

    def train():
        control.wait_while_paused(next_step=10)
        released.set()

    t = threading.Thread(target=train)
    t.start()
    time.sleep(0.3)  # stays: an absence (the thread not released) needs time in which it could have been
    assert not released.is_set() and control.state is ControlState.PAUSED
    control.submit(msg(2, type="set_clip", threshold=1.0))  # applied while paused
    control.submit(msg(3, type="resume"))
    assert released.wait(5)
    t.join(5)
    assert acks(sent) == [(1, "applied", 10), (2, "applied", 10), (3, "applied", 10)]
    statuses = [m.state for m in sent if isinstance(m, Status)]
    assert statuses == ["paused", "running"]


def test_stop_while_paused_releases_and_requests_stop():
    control, _, _ = make_control()
    control.submit(msg(1, type="pause"))
    control.submit(msg(2, type="stop"))
    control.wait_while_paused(next_step=3)
    assert control.stop_requested


def test_finish_rejects_whatever_is_still_queued():
    control, sent, _ = make_control()
    control.submit(msg(7, type="pause"))
    control.finish()
    assert acks(sent) == [(7, "rejected", None)]
    assert control.state is ControlState.FINISHED
