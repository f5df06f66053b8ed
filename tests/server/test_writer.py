"""The batched step writer: a record the store cannot hold is dropped alone and never blocks other runs."""

from __future__ import annotations

import asyncio

from gradwatch.server.store import Store
from gradwatch.server.writer import StepWriter
from simtrainer import hello, record, run

from gradwatch.protocol import StepRecord, TrainerHello


def test_unstorable_record_is_dropped_alone(tmp_path):
    store = Store(tmp_path / "w.db")

    async def body() -> tuple[list[int], list[int]]:
        good = await store.call(store.create_run, TrainerHello.model_validate(hello("good")))
        bad = await store.call(store.create_run, TrainerHello.model_validate(hello("bad")))
        writer = StepWriter(store, flush_interval=0.05, max_buffered=10_000, max_buffered_bytes=2**26)
        await writer.add(good.id, [StepRecord.model_validate(record(0))])
        # Only possible if ingest validation is bypassed: a step beyond SQLite's 64-bit integers.
        await writer.add(bad.id, [StepRecord.model_construct(**record(2**64))])
        await writer.add(good.id, [StepRecord.model_validate(record(1))])
        await writer.flush()
        await writer.add(good.id, [StepRecord.model_validate(record(2))])
        await writer.flush()  # the next flush is not blocked by a retried bad batch
        good_run = await store.call(store.get_run, good.id)
        bad_run = await store.call(store.get_run, bad.id)
        assert good_run is not None and bad_run is not None
        g = await store.call(store.read_steps, good_run, None, None)
        b = await store.call(store.read_steps, bad_run, None, None)
        return list(g.step), list(b.step)

    try:
        good_steps, bad_steps = run(body(), 30)
    finally:
        store.close()
    assert good_steps == [0, 1, 2]
    assert bad_steps == []


def test_writer_commits_within_an_interval_and_sleeps_while_empty(tmp_path):
    """Records reach the database one flush_interval after they arrive, with no reader asking; with nothing
    buffered the commit task waits on an event (no timer: an idle server stays asleep)."""
    store = Store(tmp_path / "w.db")
    calls: list[object] = []
    real_call = store.call

    async def counting_call(fn, *args, **kwargs):
        calls.append(fn)
        return await real_call(fn, *args, **kwargs)

    async def body() -> tuple[int, int, int]:
        run_row = await store.call(store.create_run, TrainerHello.model_validate(hello("idle")))
        store.call = counting_call
        writer = StepWriter(store, flush_interval=0.05, max_buffered=10_000, max_buffered_bytes=2**26)
        writer.start()
        try:
            await asyncio.sleep(0.3)  # stays: counting store calls per stretch of time (idle, one, idle)
            idle_calls = len(calls)
            await writer.add(run_row.id, [StepRecord.model_validate(record(0))])
            await asyncio.sleep(0.3)
            stored = await real_call(store.count_steps, run_row.id)
            after_one = len(calls)
            await asyncio.sleep(0.3)
            return idle_calls, stored, len(calls) - after_one
        finally:
            await writer.stop()

    try:
        idle_calls, stored, later_calls = run(body(), 30)
    finally:
        store.close()
    assert idle_calls == 0 and stored == 1 and later_calls == 0


def test_row_the_database_rejects_is_dropped_and_logged_once(tmp_path, caplog):
    """A NaN time (only possible past the door) fails SQLite's NOT NULL: the frame is dropped, never retried, and
    every later frame of every run is stored; the cause is logged once however often it recurs."""
    store = Store(tmp_path / "w.db")

    async def body() -> tuple[list[int], list[int], int, str | None]:
        good = await store.call(store.create_run, TrainerHello.model_validate(hello("good")))
        bad = await store.call(store.create_run, TrainerHello.model_validate(hello("bad")))
        writer = StepWriter(store, flush_interval=0.05, max_buffered=10_000, max_buffered_bytes=2**26)
        for step in range(3):
            await writer.add(good.id, [StepRecord.model_validate(record(step))])
            await writer.add(bad.id, [StepRecord.model_construct(**record(step, time=float("nan")))])
            await writer.flush()
        good_run = await store.call(store.get_run, good.id)
        bad_run = await store.call(store.get_run, bad.id)
        assert good_run is not None and bad_run is not None
        g = await store.call(store.read_steps, good_run, None, None)
        b = await store.call(store.read_steps, bad_run, None, None)
        health = writer.health()
        return list(g.step), list(b.step), health.dropped_steps, health.failing

    try:
        good_steps, bad_steps, dropped, failing = run(body(), 30)
    finally:
        store.close()
    assert good_steps == [0, 1, 2] and bad_steps == []
    assert dropped == 3 and failing is None  # the store works: one run's bad rows do not make it "failing"
    logged = [r for r in caplog.records if "NOT NULL constraint failed: steps.time" in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in caplog.records]
