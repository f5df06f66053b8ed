"""The trainer's delivery rules, without a socket: drops and the gap, control ordering, the re-send window."""

from __future__ import annotations

from gradwatch.trainer_hooks.outbox import MAX_BATCH, Outbox

from gradwatch.protocol import Ack, Status


def box(max_bytes: int = 1000) -> Outbox:
    return Outbox(max_bytes)


def test_past_the_budget_the_oldest_are_dropped_into_one_gap():
    b = box(max_bytes=100)
    wakes = [b.add_record(step, None, 30, now=0.0) for step in range(6)]
    assert wakes[0] and not any(wakes[1:])  # the sender wakes for the first record only
    assert [i.step for i in b.records] == [3, 4, 5] and b.dropped == 3 and b.queued_bytes == 90
    gap, resend, batch = b.take()
    assert gap == [0, 2, 3] and resend == [] and [i.step for i in batch] == [3, 4, 5]
    assert b.gap is None
    b.not_sent(gap)  # the frame failed: its records buffered again, the gap merged with newer drops
    assert [i.step for i in b.records] == [3, 4, 5] and b.queued_bytes == 90
    for step in range(6, 10):
        b.add_record(step, None, 30, now=0.0)
    assert b.gap == [0, 6, 3 + 4] and [i.step for i in b.records] == [7, 8, 9]


def test_records_on_the_wire_are_never_counted_as_dropped():
    # The training thread overflows the buffer while the sender is sending a frame: what is in that
    # frame may reach the server, so only records not yet taken are dropped (a gap never claims a
    # stored step; tests/reliability/test_trainer_outage.py saw 187 dropped for 185 missing).
    b = box(max_bytes=100)
    for step in range(3):
        b.add_record(step, None, 30, now=0.0)
    _, resend, batch = b.take()
    for step in range(3, 10):
        b.add_record(step, None, 30, now=0.0)
    assert [i.step for i in batch] == [0, 1, 2] and b.pending_count() == 6
    assert b.gap == [3, 6, 4] and [i.step for i in b.records] == [7, 8, 9]
    b.delivered(0.0, resend, batch)
    assert b.sent == 3 and b.dropped == 4 and [i.step for i in b.records] == [7, 8, 9]


def test_a_full_batch_wakes_the_sender_and_a_frame_holds_at_most_max_batch():
    b = box(max_bytes=10**9)
    wakes = [b.add_record(step, None, 1, now=0.0) for step in range(MAX_BATCH + 5)]
    assert wakes[MAX_BATCH - 1]
    _, _, batch = b.take()
    assert len(batch) == MAX_BATCH


def test_a_status_waits_for_the_records_before_it_an_ack_does_not():
    b = box()
    b.add_record(0, None, 1, now=0.0)
    b.add_control(Status(type="status", state="paused", step=0))
    b.add_control(Ack(type="ack", id=1, state="applied", applied_step=1))
    assert [m.type for _, m in b.ready_controls()] == ["ack"]
    _, resend, batch = b.take()
    b.delivered(0.1, resend, batch)
    assert [m.type for _, m in b.ready_controls()] == ["status", "ack"]


def send_all(b: Outbox, now: float) -> None:
    _, resend, batch = b.take()
    b.delivered(now, resend, batch)


def test_sent_records_are_sent_again_after_a_reconnect_until_the_server_confirms_them():
    b = box(max_bytes=400)  # kept for re-sending: at most a quarter, 100 bytes
    for step in range(2):
        b.add_record(step, None, 30, now=0.0)
    send_all(b, now=1.0)
    first = b.next_mark()  # covers steps 0 and 1
    b.add_record(2, None, 30, now=1.5)
    send_all(b, now=100.0)  # no answer yet: however long ago they were sent, they are kept
    b.reconnected()
    assert [i.step for i in b.resend] == [0, 1, 2]
    send_all(b, now=101.0)  # re-sent on the new connection, kept again
    b.confirmed(first)  # an answer from the old connection confirms nothing sent since
    b.reconnected()
    assert [i.step for i in b.resend] == [0, 1, 2]
    send_all(b, now=102.0)
    b.confirmed(b.next_mark())  # committed on the server: forgotten
    b.add_record(3, None, 30, now=104.5)
    send_all(b, now=104.5)
    b.reconnected()
    assert [i.step for i in b.resend] == [3]
    assert b.pending()


def test_what_is_kept_for_a_re_send_is_bounded_confirmed_or_not():
    b = box(max_bytes=400)
    for step in range(5):
        b.add_record(step, None, 30, now=0.0)
    send_all(b, now=0.0)
    b.reconnected()
    assert [i.step for i in b.resend] == [2, 3, 4]  # 5 x 30 bytes is over the 100-byte budget: the oldest go


def test_an_offline_outbox_keeps_nothing_for_a_re_send():
    b = Outbox(1000, keep_sent=False)
    b.add_record(0, None, 30, now=0.0)
    send_all(b, now=0.0)
    b.reconnected()
    assert not b.resend and not b.pending()


def test_clear_forgets_everything():
    b = box()
    b.add_record(0, None, 1, now=0.0)
    b.add_control(Status(type="status", state="finished", step=0))
    b.clear()
    assert not b.pending() and b.pending_count() == 0


def test_with_spill_the_overflow_waits_for_the_disk_and_only_what_it_refuses_is_a_gap():
    b = Outbox(100, spill=True)
    wakes = [b.add_record(step, None, 30, now=0.0) for step in range(6)]
    assert wakes[3]  # the first spilled record wakes the sender, so it writes it out
    assert [i.step for i in b.spilled] == [0, 1, 2] and b.dropped == 0 and b.gap is None
    taken = b.take_spilled()
    assert [i.step for i in taken] == [0, 1, 2] and not b.spilled
    b.lose(taken[2])  # the spool's budget refused it
    assert b.dropped == 1 and b.gap == [2, 2, 1]
