"""Min/max bucket downsampling: unit and property tests."""

from __future__ import annotations

import numpy as np
import pytest
from gradwatch.server.downsample import bucket_starts, minmax, minmax_int, positions
from hypothesis import given, settings
from hypothesis import strategies as st


def test_no_downsampling_when_it_fits():
    assert bucket_starts(10, 10) is None
    assert bucket_starts(0, 2) is None


@pytest.mark.parametrize("max_points", [1, 0, -3])
def test_max_points_below_two_is_an_error(max_points):
    with pytest.raises(ValueError, match="max_points"):
        bucket_starts(100, max_points)


def test_spike_nan_and_inf_survive():
    v = np.ones(1000)
    v[123] = 50.0
    v[500] = np.nan
    v[900] = -np.inf
    starts = bucket_starts(1000, 20)
    assert starts is not None
    out, missing = minmax(v, starts)
    assert out.shape == (20,) and not missing.any()
    assert np.nanmax(out) == 50.0
    assert np.isnan(out).sum() == 1
    assert -np.inf in out


def test_missing_values_are_ignored_and_all_missing_stays_missing():
    v = np.array([1.0, np.nan, np.nan, np.nan, 5.0, 6.0])
    missing = np.array([False, True, True, True, False, False])
    out, out_missing = minmax(v, np.array([0, 2, 4]), missing)
    assert out_missing.tolist() == [False, False, True, True, False, False]
    assert out[:2].tolist() == [1.0, 1.0]  # the missing value is not a NaN
    assert out[4:].tolist() == [5.0, 6.0]


def test_2d_columns_are_independent():
    v = np.zeros((100, 3))
    v[10, 0] = 7.0
    v[90, 2] = np.nan
    starts = bucket_starts(100, 10)
    assert starts is not None
    out, _ = minmax(v, starts)
    assert out.shape == (10, 3)
    assert out[:, 0].max() == 7.0 and out[:, 1].max() == 0.0
    assert np.isnan(out[:, 2]).sum() == 1


def test_positions_are_first_and_last_of_each_bucket():
    starts = np.array([0, 3, 6])
    assert positions(starts, 8).tolist() == [0, 2, 3, 5, 6, 7]


def test_integer_series():
    v = np.array([0, 0, 3, 0, 0, 0, 0, 1], dtype=np.int64)
    assert minmax_int(v, np.array([0, 4])).tolist() == [0, 3, 0, 1]


floats = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=200, deadline=None)
@given(st.lists(floats, min_size=1, max_size=300), st.integers(2, 50))
def test_property_extremes_and_nan_survive(values, max_points):
    v = np.array(values, dtype=np.float64)
    starts = bucket_starts(len(v), max_points)
    if starts is None:
        return
    out, missing = minmax(v, starts)
    assert len(out) <= max_points and len(out) == 2 * len(starts)
    assert not missing.any()
    finite = v[~np.isnan(v)]
    if finite.size:
        assert np.nanmax(out) == finite.max()  # maxima (spikes, +Inf) always survive
        if finite.size == v.size:  # a bucket's NaN takes its minimum's place, so only without NaN
            assert np.nanmin(out) == finite.min()
    assert np.isnan(out).any() == np.isnan(v).any()
