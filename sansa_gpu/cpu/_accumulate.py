"""Numba building blocks shared by the per-column / per-user loops on the CPU."""

from __future__ import annotations

import numba
import numpy as np

WARP = 32
"""Lanes of a CUDA warp: the fixed summation order the CPU loops share with the GPU kernels."""


@numba.njit(inline="always")
def touch(mark, touched, n_touched, i, stamp, acc):
    """Sparse accumulator: the first time row ``i`` is seen under ``stamp``, zero ``acc[i]`` and
    list it in ``touched``. Returns the new number of touched rows."""
    if mark[i] != stamp:
        mark[i] = stamp
        acc[i] = 0.0
        touched[n_touched] = i
        return n_touched + 1
    return n_touched


@numba.njit(inline="always")
def _before(a, b):
    """a sorts before b in NumPy's order (NaN last)."""
    return a < b or (b != b and a == a)


@numba.njit(cache=True, nogil=True)
def kth_smallest(values, kth):
    """The value ``np.partition(values, kth)[kth]`` (the kth order statistic, NaN sorting last), without
    modifying ``values``: an iterative quickselect (median-of-three pivot, three-way split) on a copy.
    numba's own ``np.partition`` compiles a generic implementation per dtype (7 s for float64 on the
    2-core VM); this compiles in a fraction of that and gives the same value (the statistic is unique)."""
    if kth < 0 or kth >= values.shape[0]:  # numba does not check bounds: refuse instead of reading past the end
        raise IndexError("kth_smallest: kth outside the array")
    a = values.copy()
    lo = 0
    hi = a.shape[0] - 1
    while lo < hi:
        mid = lo + (hi - lo) // 2  # median of three as the pivot value
        x, y, z = a[lo], a[mid], a[hi]
        if _before(y, x):
            x, y = y, x
        if _before(z, y):
            y = z
            if _before(y, x):
                y = x
        pivot = y
        # three-way partition: [lo, lt) before the pivot, [lt, i) equal, (gt, hi] after
        lt = lo
        i = lo
        gt = hi
        while i <= gt:
            v = a[i]
            if _before(v, pivot):
                a[i] = a[lt]
                a[lt] = v
                lt += 1
                i += 1
            elif _before(pivot, v):
                a[i] = a[gt]
                a[gt] = v
                gt -= 1
            else:
                i += 1
        if kth < lt:
            hi = lt - 1
        elif kth > gt:
            lo = gt + 1
        else:
            return pivot
    return a[lo]


@numba.njit(inline="always")
def magnitude_cut(mags, n_keep):
    """For magnitudes ``mags`` (m > n_keep > 0 entries), the threshold tau = the n_keep-th largest
    and how many entries equal to tau are kept (the others above tau are all kept)."""
    kth = mags.shape[0] - n_keep
    tau = kth_smallest(mags, kth)
    n_above = 0
    for b in range(mags.shape[0]):
        if mags[b] > tau:
            n_above += 1
    return tau, n_keep - n_above


@numba.njit(inline="always")
def lane_tree_dot(a_vals, a_idx, b_vals, b_idx, n):
    """sum(a_vals[a_idx[k]] * b_vals[b_idx[k]] for k < n) in the fixed order of a 32-lane warp: lane l
    sums k = l, l + 32, ... in order, then the 32 partials combine as ``__shfl_down_sync`` with offsets
    16, 8, 4, 2, 1 does (partial[l] += partial[l + off]). The GPU kernels sum exactly this way, so
    both give the same bits. (Entries whose index is negative are skipped.)"""
    part = np.zeros(WARP, dtype=np.float64)
    for k in range(n):
        ia = a_idx[k]
        ib = b_idx[k]
        if ia >= 0 and ib >= 0:
            part[k % WARP] += a_vals[ia] * b_vals[ib]
    return warp_tree_combine(part)


@numba.njit(inline="always")
def warp_tree_combine(part):
    """part[0] after the shuffle-down tree of a warp (offsets 16, 8, 4, 2, 1) over 32 lane partials."""
    off = WARP // 2
    while off > 0:
        for lane in range(off):
            part[lane] += part[lane + off]
        off //= 2
    return part[0]


@numba.njit(inline="always")
def lane_tree_sum(vals, idx, n):
    """sum(vals[idx[k]] ** 2 for k < n) in a warp's fixed order (see :func:`lane_tree_dot`)."""
    return lane_tree_dot(vals, idx, vals, idx, n)


@numba.njit(inline="always")
def accumulate_gram_column(item, stamp, lowest, Xc_indptr, Xc_indices, Xc_data, Xr_indptr, Xr_indices, Xr_data,
                           inv_perm, mark, touched, acc):
    """Column ``item`` of X^T X into the sparse accumulator (acc, touched) under ``stamp``: for each
    user of the item (CSC order), each of the user's items (CSR order), in float64 (a product of two
    float32 values is exact). Rows are renumbered by ``inv_perm``; rows below ``lowest`` are skipped
    (0: the whole column). Returns the number of touched rows; the GPU Gram kernel sums in this order."""
    nt = 0
    for p in range(Xc_indptr[item], Xc_indptr[item + 1]):
        u = Xc_indices[p]
        xv = np.float64(Xc_data[p])
        for q in range(Xr_indptr[u], Xr_indptr[u + 1]):
            i = inv_perm[Xr_indices[q]]
            if i < lowest:
                continue
            nt = touch(mark, touched, nt, i, stamp, acc)
            acc[i] += xv * np.float64(Xr_data[q])
    return nt
