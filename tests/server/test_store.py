"""``Store.read_steps``: decoding chunk by chunk gives exactly what one chunk gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gradwatch.server.stepcodec import FLOAT_COLUMNS, INT_COLUMNS, StepColumns
from gradwatch.server.store import Store
from simtrainer import hello, record

from gradwatch.protocol import StepRecord, TrainerHello


def fields(c: StepColumns) -> dict[str, Any]:
    out: dict[str, Any] = {
        "step": c.step,
        "time": c.time,
        "grad_norm": c.grad_norm,
        "nonfinite": c.nonfinite,
        "bn": c.bn,
        "bn_missing": c.bn_missing,
        "update_ratio": c.update_ratio,
        "update_ratio_missing": c.update_ratio_missing,
        "skipped": c.skipped,
    }
    out.update({f"float:{k}": c.floats[k] for k in FLOAT_COLUMNS})
    out.update({f"missing:{k}": c.missing[k] for k in FLOAT_COLUMNS})
    out.update({f"int:{k}": c.ints[k] for k in INT_COLUMNS})
    return out


def stored(tmp_path: Path, records: list[dict[str, Any]], bn_layers: list[str]) -> tuple[Store, Any]:
    store = Store(tmp_path / "s.db")
    run = store.create_run(TrainerHello.model_validate(hello(bn_layers=bn_layers)))
    store.insert_steps([(run.id, [StepRecord.model_validate(r) for r in records])])
    return store, store.get_run(run.id)


@pytest.mark.parametrize("sparse", [False, True], ids=["eventful", "healthy"])
def test_chunked_read_equals_single_read(tmp_path, sparse):
    records = [record(i, n_bn=1) for i in range(50)]
    if not sparse:  # NaN counts, update ratios and a step without BN rows, spread over several chunks
        records[3] = record(3, n_bn=1, grad_nan=[0, 2, 0], global_norm="NaN")
        records[20] = record(20, n_bn=1, update_ratio=[1e-3, "NaN", 2e-3])
        records[41] = record(41, bn=[], grad_inf=[1, 0, 0])
    store, run = stored(tmp_path, records, ["bn1"])
    try:
        whole = store.read_steps(run, None, None)
        store.READ_CHUNK = 7
        chunked = store.read_steps(run, None, None)
        ranged = store.read_steps(run, 5, 44)
    finally:
        store.close()
    assert list(chunked.step) == list(range(50)) and list(ranged.step) == list(range(5, 45))
    a, b = fields(whole), fields(chunked)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        assert a[key].dtype == b[key].dtype, key
    # the usual all-zero / never-measured matrices stay zero-copy views across chunks
    assert chunked.nonfinite.flags.writeable is not sparse
    assert chunked.update_ratio.flags.writeable is not sparse
