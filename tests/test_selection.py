import numpy as np
import pytest

from sansa_gpu.selection import largest_magnitude_mask


def test_exact_count_and_ties_by_position():
    v = np.array([1.0, -3.0, 2.0, 2.0, -2.0, 0.5], dtype=np.float32)
    m = largest_magnitude_mask(v, 3)
    assert m.tolist() == [False, True, True, True, False, False]
    m = largest_magnitude_mask(v, 4)
    assert m.sum() == 4 and m[4]


def test_forced_entries_count_towards_budget():
    v = np.array([0.1, 5.0, 4.0, 0.2], dtype=np.float32)
    forced = np.array([True, False, False, True])
    m = largest_magnitude_mask(v, 3, forced)
    assert m.tolist() == [True, True, False, True]
    with pytest.raises(ValueError):
        largest_magnitude_mask(v, 1, forced)


def test_keep_all_and_none():
    v = np.arange(5, dtype=np.float32)
    assert largest_magnitude_mask(v, 10).all()
    assert not largest_magnitude_mask(v, 0).any()


def test_random_matches_sort():
    rng = np.random.default_rng(0)
    v = rng.integers(-20, 20, size=1000).astype(np.float32)  # many ties
    m = largest_magnitude_mask(v, 137)
    assert m.sum() == 137
    order = np.lexsort((np.arange(v.size), -np.abs(v)))
    assert np.array_equal(np.flatnonzero(m), np.sort(order[:137]))
