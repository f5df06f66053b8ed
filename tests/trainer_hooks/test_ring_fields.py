"""The statistics ring's columns and the encoder derive from the step record (gradwatch/stepfields.py)."""

from __future__ import annotations

import numpy as np
from gradwatch.trainer_hooks.ring_layout import DERIVED, RING_FIELDS, RING_ONLY, SCALARS, VECTORS, Layout

from gradwatch.stepfields import FIELDS_BY_NAME, STEP_FIELDS

#: The fields ``RunSession._encode`` fills in on the host; every other one comes from the ring.
_HOST_ENCODED = {"epoch", "time", "loss", "steps_per_sec", "loss_nonfinite", "bn", "loss_is_mean"}


def test_every_step_field_is_in_the_ring_derived_from_it_or_the_hosts() -> None:
    ring = {f.name for f in RING_FIELDS}
    assert not ring & set(DERIVED) and not set(RING_ONLY) & set(FIELDS_BY_NAME)
    host_only = {f.name for f in STEP_FIELDS} - ring - set(DERIVED)
    assert host_only <= _HOST_ENCODED
    assert all(FIELDS_BY_NAME[n].writer == "host" for n in host_only)
    assert [n for n in SCALARS if n not in RING_ONLY] == [f.name for f in RING_FIELDS if f.shape == "scalar"]
    assert SCALARS[0] == "step"  # never-written rows (-1) and the merge of optimizer groups rely on it
    assert list(VECTORS) == [f.name for f in STEP_FIELDS if f.shape == "variable" and f.writer == "device"]


def test_a_row_unpacks_into_exactly_the_ring_fields_in_wire_types() -> None:
    layout = Layout(2)
    assert layout.width == len(SCALARS) + len(VECTORS) * 2
    row = np.zeros(layout.width)
    row[SCALARS.index("step")] = 41
    row[SCALARS.index("clip_threshold")] = 0.0  # clip nothing
    row[SCALARS.index("accumulated_norm")] = np.nan
    row[layout.offset("grad_norm") : layout.offset("grad_norm") + 2] = [9.0, 16.0]
    row[layout.update_ratio_offset : layout.update_ratio_offset + 2] = np.nan
    values = layout.step_values(row)
    assert list(values) == [f.name for f in STEP_FIELDS if f.name in {f.name for f in RING_FIELDS} | set(DERIVED)]
    assert values["step"] == 41 and isinstance(values["step"], int)
    assert values["grad_norm"] == [3.0, 4.0] and values["global_norm"] == 5.0
    assert values["clip_threshold"] is None and values["update_ratio"] is None and values["accumulated_norm"] is None
    assert values["clip_mode"] == "global_norm" and values["clipped"] is False and values["skipped"] is False
    assert values["grad_nan"] == [0, 0] and isinstance(values["grad_nan"][0], int)
