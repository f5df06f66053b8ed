"""The batched step writer: a record the store cannot hold is dropped alone and never blocks other runs."""

from __future__ import annotations

from gradwatch.server.store import Store
from gradwatch.server.writer import StepWriter
from simtrainer import hello, record, run

from gradwatch.protocol import StepRecord, TrainerHello


def test_unstorable_record_is_dropped_alone(tmp_path):
    store = Store(tmp_path / "w.db")

    async def body() -> tuple[list[int], list[int]]:
        good = await store.call(store.create_run, TrainerHello.model_validate(hello("good")))
        bad = await store.call(store.create_run, TrainerHello.model_validate(hello("bad")))
        writer = StepWriter(store, flush_interval=0.05, max_buffered=10_000)
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
