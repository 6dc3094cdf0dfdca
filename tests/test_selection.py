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


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int32, np.int64])
def test_kth_smallest_is_numpys_partition_value(dtype):
    """The numba quickselect every per-column cap uses (in place of numba's np.partition, which compiles
    for seconds per dtype) returns np.partition's kth value, NaN last, ties and all, and leaves its
    input unchanged."""
    from sansa_gpu.cpu._accumulate import kth_smallest, magnitude_cut

    rng = np.random.default_rng(7)
    for trial in range(200):
        n = int(rng.integers(1, 80))
        if trial % 2:  # many ties
            a = rng.integers(0, 5, n).astype(dtype)
        elif np.issubdtype(dtype, np.floating):
            a = rng.standard_normal(n).astype(dtype)
            if trial % 4 == 0:
                a[rng.integers(0, n, max(1, n // 3))] = np.nan
        else:
            a = rng.integers(-50, 50, n).astype(dtype)
        before = a.copy()
        for kth in {0, n - 1, int(rng.integers(0, n))}:
            got, want = kth_smallest(a, kth), np.partition(a, kth)[kth]
            assert got == want or (np.isnan(got) and np.isnan(want)), (a, kth, got, want)
        np.testing.assert_array_equal(a, before)
    mags = np.array([3.0, 1.0, 3.0, 2.0, 3.0])
    assert magnitude_cut(mags, 2) == (3.0, 2)  # the 2nd largest is 3; both kept entries are tied at it
    assert magnitude_cut(mags, 4) == (2.0, 1)  # three above it, one of the entries equal to it


def test_kth_smallest_refuses_a_kth_outside_the_array():
    from sansa_gpu.cpu._accumulate import kth_smallest

    for kth in (-1, 3):
        with pytest.raises(IndexError, match="kth outside"):
            kth_smallest(np.array([3.0, 1.0, 2.0]), kth)
    with pytest.raises(IndexError):
        kth_smallest(np.empty(0), 0)
