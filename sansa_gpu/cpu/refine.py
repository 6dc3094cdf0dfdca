"""Stage 3 on the CPU: sparse K ~= L^{-1} by column-parallel minimal-residual sweeps (the reference).

Every column j is updated independently (docs/design.md, "The refinement"; the GPU twin: docs/gpu_training.md):

    r = e_j - L k_j,  q = L r,  alpha = r.q / q.q,  k_j <- k_j + alpha r,
    keep the ``cap_j`` largest |entries| (diagonal always kept),

then one global magnitude selection brings nnz(K) back to the budget. ``column_caps`` defines
the per-column cap; the GPU kernel uses the same function, the same float32 storage, float64
accumulation and the same tie rule (larger |value| first, then lower row), so both select the
same entries.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

from ..defaults import CONVERGED_REFINE_TOL as DEFAULT_TOL  # columns at or below it: nothing left to fit
from ..selection import array_module, largest_magnitude_mask
from ._accumulate import WARP, lane_tree_sum, magnitude_cut, touch, warp_tree_combine



def column_caps(K, budget: int):
    """(n,) int64 cap on the candidate entries of each refined column:
    ``min(n - j, max(2 * nnz(k_j), 2 * ceil(budget / n)))``. A column may at most double per sweep
    (or reach twice the average column), which bounds the candidate buffer by ~4x the budget.
    K: any CSC-like object with ``indptr`` and ``shape`` (host or device arrays)."""
    xp = array_module(K.indptr)
    n = K.shape[0]
    col_nnz = xp.diff(K.indptr).astype(xp.int64)
    floor = 2 * int(np.ceil(budget / n))
    return xp.minimum(xp.arange(n, 0, -1, dtype=xp.int64), xp.maximum(2 * col_nnz, floor))


def to_device(M):
    """Backend hook: matrices stay on the host for the CPU backend."""
    return M


def to_host(M):
    return M


def initial_inverse(L: sp.csc_matrix) -> sp.csc_matrix:
    """K0 = 2I - L (one Schulz step from I); L unit lower triangular CSC, returns CSC float32 with
    the same pattern as L."""
    K = L.copy().astype(np.float32)
    K.data = -K.data
    K.data[K.indptr[:-1]] += 2.0  # the diagonal is stored first in each column
    return K


@numba.njit(cache=True, nogil=True)
def _refine_column(
    j, n, L_indptr, L_indices, L_data, K_indptr, K_indices, K_data, cap, tol, update,
    acc_r, acc_q, mark_r, mark_q, list_r, list_q, out_rows, out_vals, out_start,
):
    """Residual of column j and (if ``update``) its minimal-residual update.

    Returns (count, ||r||^2): the candidate entries are written, sorted by row, to
    out_rows/out_vals[out_start:out_start+count]. Scratch arrays are length n; marks use the
    stamp j+1 so they never need clearing.
    """
    stamp = j + 1
    nr = 0
    # r = e_j - L k_j  (accumulated in float64)
    for p in range(K_indptr[j], K_indptr[j + 1]):
        i = K_indices[p]
        v = np.float64(K_data[p])
        for s in range(L_indptr[i], L_indptr[i + 1]):
            row = L_indices[s]
            nr = touch(mark_r, list_r, nr, row, stamp, acc_r)
            acc_r[row] -= np.float64(L_data[s]) * v
    nr = touch(mark_r, list_r, nr, j, stamp, acc_r)
    acc_r[j] += 1.0
    rr = lane_tree_sum(acc_r, list_r, nr)  # the GPU kernel's summation order (bit-identical twins)
    if not update:
        return 0, rr

    alpha = 0.0
    if np.sqrt(rr) > tol:  # the norm itself (as column_residual_norms reports it), not rr > tol**2
        # q = L r
        nq = 0
        for a in range(nr):
            t = list_r[a]
            rv = acc_r[t]
            if rv == 0.0:
                continue
            for s in range(L_indptr[t], L_indptr[t + 1]):
                row = L_indices[s]
                nq = touch(mark_q, list_q, nq, row, stamp, acc_q)
                acc_q[row] += np.float64(L_data[s]) * rv
        qq = lane_tree_sum(acc_q, list_q, nq)
        part = np.zeros(WARP, dtype=np.float64)
        for a in range(nr):
            t = list_r[a]
            if mark_q[t] == stamp:
                part[a % WARP] += acc_r[t] * acc_q[t]
        rq = warp_tree_combine(part)
        if qq > 0.0:
            alpha = rq / qq

    # candidate c = k_j + alpha r on supp(k_j) U supp(r), accumulated in acc_r
    for a in range(nr):
        acc_r[list_r[a]] *= alpha
    for p in range(K_indptr[j], K_indptr[j + 1]):
        i = K_indices[p]
        nr = touch(mark_r, list_r, nr, i, stamp, acc_r)
        acc_r[i] += np.float64(K_data[p])
    rows = np.sort(list_r[:nr])

    # select: diagonal + the (cap - 1) largest |float32 value| off the diagonal, ties by lower row
    m = 0
    for a in range(nr):
        t = rows[a]
        if t != j and np.float32(acc_r[t]) != 0:
            m += 1
    n_free = cap - 1
    tau = np.float32(0.0)
    n_ties = 0
    if m > n_free:
        mags = np.empty(m, dtype=np.float32)
        b = 0
        for a in range(nr):
            t = rows[a]
            v32 = np.float32(acc_r[t])
            if t != j and v32 != 0:
                mags[b] = abs(v32)
                b += 1
        if n_free > 0:
            tau, n_ties = magnitude_cut(mags, n_free)
        else:  # nothing but the diagonal (the kernel's tau = 0xffffffff)
            tau = np.float32(np.inf)
    count = 0
    for a in range(nr):
        t = rows[a]
        v32 = np.float32(acc_r[t])
        keep = False
        if t == j:
            keep = True
        elif v32 != 0:
            if m <= n_free:
                keep = True
            else:
                mag = abs(v32)
                if mag > tau:
                    keep = True
                elif mag == tau and n_ties > 0:
                    keep = True
                    n_ties -= 1
        if keep:
            out_rows[out_start + count] = t
            out_vals[out_start + count] = v32
            count += 1
    return count, rr


@numba.njit(parallel=True, cache=True)
def _refine_all_columns(
    n, L_indptr, L_indices, L_data, K_indptr, K_indices, K_data, cap, offsets, tol, update, n_chunks,
    out_rows, out_vals, out_count, out_rr,
):
    """Apply _refine_column to every column; chunk c owns columns c, c + n_chunks, ... (strided, so
    the heavy left-hand columns spread over all threads)."""
    for c in numba.prange(n_chunks):
        acc_r = np.zeros(n, dtype=np.float64)
        acc_q = np.zeros(n, dtype=np.float64)
        mark_r = np.zeros(n, dtype=np.int64)
        mark_q = np.zeros(n, dtype=np.int64)
        list_r = np.empty(n, dtype=np.int64)
        list_q = np.empty(n, dtype=np.int64)
        for j in range(c, n, n_chunks):
            cnt, rr = _refine_column(
                j, n, L_indptr, L_indices, L_data, K_indptr, K_indices, K_data, cap[j], tol, update,
                acc_r, acc_q, mark_r, mark_q, list_r, list_q, out_rows, out_vals, offsets[j],
            )
            out_count[j] = cnt
            out_rr[j] = rr


@numba.njit(cache=True, nogil=True)
def _compact_candidates(offsets, counts, rows, vals, out_indptr, out_rows, out_vals, out_diag):
    n = counts.shape[0]
    pos = 0
    out_indptr[0] = 0
    for j in range(n):
        start = offsets[j]
        for a in range(counts[j]):
            out_rows[pos] = rows[start + a]
            out_vals[pos] = vals[start + a]
            out_diag[pos] = rows[start + a] == j
            pos += 1
        out_indptr[j + 1] = pos


def _n_chunks(n: int) -> int:
    return int(max(1, min(n, 8 * numba.get_num_threads())))


def column_residual_norms(L: sp.csc_matrix, K: sp.csc_matrix) -> np.ndarray:
    """(n,) float64 ``||e_j - L k_j||_2`` for every column; both CSC, L unit lower triangular."""
    n = L.shape[0]
    rr = np.empty(n, dtype=np.float64)
    dummy_i = np.empty(0, dtype=np.int32)
    dummy_f = np.empty(0, dtype=np.float32)
    _refine_all_columns(
        n, L.indptr.astype(np.int64, copy=False), L.indices, L.data, K.indptr.astype(np.int64, copy=False), K.indices,
        K.data, np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64), DEFAULT_TOL, False, _n_chunks(n),
        dummy_i, dummy_f, np.empty(n, dtype=np.int64), rr,
    )
    return np.sqrt(rr)


def sweep_candidates(L: sp.csc_matrix, K: sp.csc_matrix, budget: int, tol: float = DEFAULT_TOL):
    """Per-column candidates of one sweep, before the global cut.

    Returns (offsets (n+1,) int64, counts (n,) int64, rows int32, vals float32, rr (n,) float64):
    column j's candidates are rows/vals[offsets[j] : offsets[j] + counts[j]], sorted by row, and
    rr[j] = ||e_j - L k_j||^2 for the input K.
    """
    n = L.shape[0]
    cap = column_caps(K, budget)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(cap, out=offsets[1:])
    rows = np.empty(int(offsets[-1]), dtype=np.int32)
    vals = np.empty(int(offsets[-1]), dtype=np.float32)
    counts = np.empty(n, dtype=np.int64)
    rr = np.empty(n, dtype=np.float64)
    _refine_all_columns(
        n, L.indptr.astype(np.int64, copy=False), L.indices, L.data, K.indptr.astype(np.int64, copy=False), K.indices,
        K.data, cap, offsets, float(tol), True, _n_chunks(n), rows, vals, counts, rr,
    )
    return offsets, counts, rows, vals, rr


def refine_sweep(L: sp.csc_matrix, K: sp.csc_matrix, budget: int, tol: float = DEFAULT_TOL) -> tuple[sp.csc_matrix, np.ndarray]:
    """One column-parallel minimal-residual sweep followed by the global cut to ``budget`` nnz.

    L : (n, n) CSC float32 unit lower triangular (diagonal first in each column).
    K : (n, n) CSC float32 lower triangular, current approximation of L^{-1}.
    Returns (K_new CSC float32 with sorted rows and nnz == min(budget, candidates),
    residual norms (n,) float64 of the *input* K).
    """
    n = L.shape[0]
    offsets, counts, rows, vals, rr = sweep_candidates(L, K, budget, tol)
    total = int(counts.sum())
    indptr = np.empty(n + 1, dtype=np.int64)
    c_rows = np.empty(total, dtype=np.int32)
    c_vals = np.empty(total, dtype=np.float32)
    c_diag = np.empty(total, dtype=np.bool_)
    _compact_candidates(offsets, counts, rows, vals, indptr, c_rows, c_vals, c_diag)
    del rows, vals
    keep = largest_magnitude_mask(c_vals, budget, c_diag)
    # every column keeps its diagonal, so no column is empty and reduceat is exact
    col_kept = np.add.reduceat(keep, indptr[:-1], dtype=np.int64)
    new_indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(col_kept, out=new_indptr[1:])
    K_new = sp.csc_matrix((c_vals[keep], c_rows[keep], new_indptr), shape=(n, n))
    return K_new, np.sqrt(rr)


def release_scratch() -> None:
    """Backend hook (the GPU twin frees its device scratch): nothing is held on the CPU."""
