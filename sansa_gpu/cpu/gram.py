"""Stage 1 on the CPU: the lower triangle of the Gram ``X^T X`` and its column norms, in one pass.

Column j of the (permuted) Gram is accumulated from the users of item ``perm[j]``: for each such
user u (in CSC order), for each item of u (in CSR order), ``acc[row] += x_uj * x_u,row`` in
float64. Every row of the column is visited, so the column's full 2-norm (what the ICF column
scaling needs) comes from the same accumulator that yields the kept lower entries: one pass over
the data instead of the two (norms, then Gram) earlier versions made, and no count pass.

Memory is bounded by what is kept. The columns are built in blocks; each column owns a slot range
in the block buffer whose size is an exact upper bound of its kept entries (``column_bounds``), so a
block never overflows and never needs a second pass (entries beyond the cap are cut in per-thread scratch first); after each block, its kept entries are
compacted into the result. Pruning (``min_cooccurrence``, and the optional per-column cap
``max_per_column`` on the off-diagonal entries kept, largest values first, ties to the lower row)
is applied inside the block, so a few heavy users never make the stored Gram dense.

The GPU twin (``sansa_gpu.gpu.gram``, ``kernels/gram.cu``) has the same signature and gives the same
result bit for bit: products of float32 values are exact in float64, every entry is summed over
users in the same order, and the squared norm is summed in :func:`lane_tree_sum`'s fixed order
(32 lane-strided partial sums combined as a warp's shuffle tree), which both sides follow.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

from ._accumulate import accumulate_gram_column, kth_smallest, lane_tree_sum, magnitude_cut

#: Slots (12 bytes each: int32 row + float64 value) of one block buffer: 400 MB of address space, of
#: which only the pages holding kept entries become resident on the CPU (each thread appends its
#: columns to its own region). Smaller blocks cost time: columns with heavy bounds make few-column
#: blocks that leave threads idle (1M items: Gram 14.1 s with 2^23 slots, 10.8 s with 2^25).
BLOCK_SLOTS = 1 << 25


@numba.njit(cache=True, nogil=True)
def _pair_visits(indptr, indices, out):
    for u in range(indptr.shape[0] - 1):
        length = indptr[u + 1] - indptr[u]
        for p in range(indptr[u], indptr[u + 1]):
            out[indices[p]] += length


def pair_visits(indptr, indices, n: int) -> np.ndarray:
    """(n,) int64: for each item, the sum of |u| over its users (the pairs its Gram column visits),
    without a temporary of nnz(X) entries."""
    out = np.zeros(n, dtype=np.int64)
    _pair_visits(np.asarray(indptr), np.asarray(indices), out)
    return out


def column_bounds(X: sp.csr_matrix, perm: np.ndarray, max_per_column: int | None) -> np.ndarray:
    """(n,) int64 upper bound of the entries column j (permuted order) of the kept lower Gram can
    hold: min(pair visits of item perm[j] = sum of |u| over its users, n - j, max_per_column + 1)."""
    n = X.shape[1]
    visits = pair_visits(X.indptr, X.indices, n).astype(np.float64)
    bound = np.minimum(visits[perm], np.arange(n, 0, -1, dtype=np.float64))
    if max_per_column is not None:
        bound = np.minimum(bound, float(max_per_column) + 1.0)
    return bound.astype(np.int64)


def plan_blocks(bounds: np.ndarray, max_slots: int = BLOCK_SLOTS) -> list[tuple[int, int]]:
    """Consecutive column ranges [b0, b1) whose bounds sum to at most ``max_slots`` (a single column
    larger than that is a block of its own)."""
    n = bounds.shape[0]
    cum = np.concatenate([[0], np.cumsum(bounds)])
    blocks, b0 = [], 0
    while b0 < n:
        b1 = int(np.searchsorted(cum, cum[b0] + max_slots, side="right")) - 1
        b1 = min(n, max(b1, b0 + 1))
        blocks.append((b0, b1))
        b0 = b1
    return blocks


def gram_inputs(X: sp.csr_matrix, perm: np.ndarray | None, prune_scale: np.ndarray | None):
    """Arrays both twins start from: (Xc CSC of X, perm int64, inv_perm int64, scale float64 in
    permuted order)."""
    n = X.shape[1]
    perm = np.arange(n, dtype=np.int64) if perm is None else np.asarray(perm, dtype=np.int64)
    inv_perm = np.empty(n, dtype=np.int64)
    inv_perm[perm] = np.arange(n, dtype=np.int64)
    scale = np.ones(n) if prune_scale is None else np.asarray(prune_scale, dtype=np.float64)[perm]
    return X.tocsc(), perm, inv_perm, scale


def prune_threshold(min_cooccurrence: float, prune_scale) -> float:
    # rescaled values carry float32 rounding (a count of 2 comes back as 1.9999999): relative slack
    return float(min_cooccurrence) * (1.0 - 1e-5 if prune_scale is not None else 1.0)


@numba.njit(cache=True, nogil=True)
def cap_rows(rows, m, j, val_of_row, max_keep):
    """Keep, in place in rows[:m] (any order; row j, the diagonal, is always kept), the diagonal and
    the ``max_keep`` off-diagonal rows of largest |val_of_row[row]|, ties to the lower row. Returns
    the new count. The rule of every per-column cap in the package (``magnitude_cut``), applied
    before sorting so that a column of 50,000 candidates cut to 64 sorts only 64."""
    n_off = 0
    for a in range(m):
        if rows[a] != j:
            n_off += 1
    if n_off <= max_keep:
        return m
    tau = np.inf
    n_ties = 0
    if max_keep > 0:
        mags = np.empty(n_off, dtype=np.float64)
        b = 0
        for a in range(m):
            if rows[a] != j:
                mags[b] = abs(val_of_row[rows[a]])
                b += 1
        tau, n_ties = magnitude_cut(mags, max_keep)
    # the n_ties lowest rows among those tied at tau are kept: find the largest of them
    row_bound = -1
    if n_ties > 0:
        tied = np.empty(n_off, dtype=rows.dtype)
        t = 0
        for a in range(m):
            if rows[a] != j and abs(val_of_row[rows[a]]) == tau:
                tied[t] = rows[a]
                t += 1
        if t > 0:  # (none when the values are not finite: a broken factorisation the caller reports)
            row_bound = kth_smallest(tied[:t], min(n_ties, t) - 1)  # (all t tied kept: the largest)
    kept = 0
    for a in range(m):
        i = rows[a]
        mag = abs(val_of_row[i])
        if i == j or mag > tau or (mag == tau and i <= row_bound):
            rows[kept] = i
            kept += 1
    return kept


@numba.njit(parallel=True, cache=True)
def _gram_block(b0, b1, Xc_indptr, Xc_indices, Xc_data, Xr_indptr, Xr_indices, Xr_data, perm, inv_perm,
                min_value, scale, max_keep, chunk_start, out_rows, out_vals, out_start, out_count, sq_norms,
                acc_all, mark_all, touched_all, kept_all):
    """Columns b0 <= j < b1: full column accumulated (its squared norm to sq_norms[perm[j]]), kept
    lower entries (row >= j, value * scale_i * scale_j >= min_value or the diagonal, then at most
    max_keep off-diagonal ones if max_keep >= 0) written sorted by row to out_rows/out_vals; chunk c
    (columns b0 + c, b0 + c + n_chunks, ...) appends its columns from chunk_start[c] on, so only what
    is kept touches the buffer's pages; column j's entries start at out_start[j - b0], their number
    is out_count[j - b0]."""
    n_chunks = acc_all.shape[0]
    for c in numba.prange(n_chunks):
        pos = chunk_start[c]
        acc = acc_all[c]
        mark = mark_all[c]
        touched = touched_all[c]
        seg_all = kept_all[c]
        for j in range(b0 + c, b1, n_chunks):
            item = perm[j]
            nt = accumulate_gram_column(item, j, 0, Xc_indptr, Xc_indices, Xc_data, Xr_indptr, Xr_indices, Xr_data,
                                        inv_perm, mark, touched, acc)
            sq_norms[item] = lane_tree_sum(acc, touched, nt)
            m = np.int64(0)  # not the literal 0: cap_rows would be compiled for Literal[int](0) as well
            n_off = 0
            for a in range(nt):
                i = touched[a]
                if i == j:
                    seg_all[m] = i
                    m += 1
                elif i > j and acc[i] * scale[i] * scale[j] >= min_value:
                    seg_all[m] = i
                    m += 1
                    n_off += 1
            if max_keep >= 0 and n_off > max_keep:  # the cap first: only what is kept gets sorted
                m = cap_rows(seg_all, m, j, acc, max_keep)
            seg = seg_all[:m]
            seg.sort()
            for a in range(m):
                out_rows[pos + a] = seg[a]
                out_vals[pos + a] = acc[seg[a]]
            out_start[j - b0] = pos
            out_count[j - b0] = m
            pos += m


def _n_chunks(n: int) -> int:
    """One chunk (and one set of O(n) scratch arrays) per thread: numba's static schedule gives each
    thread a contiguous range of chunks, so more chunks would only add scratch (16 sets of 20 bytes
    per item at 1M items were 0.2 GB of the fit's peak), not balance: the columns are strided."""
    return int(max(1, min(n, numba.get_num_threads())))


def gram_lower_and_norms(X: sp.csr_matrix, perm: np.ndarray | None = None, min_cooccurrence: float = 0.0,
                         prune_scale: np.ndarray | None = None, max_per_column: int | None = None,
                         block_slots: int = BLOCK_SLOTS) -> tuple[sp.csc_matrix, np.ndarray]:
    """Lower triangle of ``P X^T X P^T`` (kept entries) and the squared column norms of ``X^T X``.

    X : (users, n) canonical CSR float32. perm : (n,) int64 ordering (identity when None): entry
    (i, j) of the result is G[perm[i], perm[j]]. min_cooccurrence : off-diagonal entries with
    ``G * s_i * s_j`` below it are dropped (s = ``prune_scale``, ones when None: for 0/1 data the test
    is on co-occurrence counts). max_per_column : keep at most this many off-diagonal entries per
    column (the largest values; None: no cap).
    Returns (A CSC float64 (n, n), rows sorted, diagonal first where the item has interactions,
    int64 indptr; sq_norms (n,) float64, ``||G[:, item]||^2`` in item order, of the full Gram
    (before any pruning)). Work O(sum over users of |u|^2) in one pass; memory O(nnz kept +
    block_slots + threads * n).
    """
    n = X.shape[1]
    Xc, perm, inv_perm, scale = gram_inputs(X, perm, prune_scale)
    bounds = column_bounds(X, perm, max_per_column)
    n_chunks = _n_chunks(n)
    acc = np.zeros((n_chunks, n), dtype=np.float64)
    # int32 stamps and row lists: half the cache footprint of int64 in the pair loop; the kept rows
    # (written once per kept entry) int64, the index type the other per-column caps and sorts use, so
    # a first run compiles one specialisation of them, not two
    mark = np.full((n_chunks, n), -1, dtype=np.int32)
    touched = np.empty((n_chunks, n), dtype=np.int32)
    kept = np.empty((n_chunks, n), dtype=np.int64)
    sq_norms = np.zeros(n, dtype=np.float64)
    max_keep = -1 if max_per_column is None else int(max_per_column)
    threshold = prune_threshold(min_cooccurrence, prune_scale)
    Xc_indptr, Xr_indptr = Xc.indptr.astype(np.int64), X.indptr.astype(np.int64)
    inv_perm32 = inv_perm.astype(np.int32)
    pieces = []
    for b0, b1 in plan_blocks(bounds, block_slots):
        # chunk c's columns are b0 + c, b0 + c + n_chunks, ...: its region holds their bounds
        chunk_bound = np.bincount(np.arange(b1 - b0) % n_chunks, weights=bounds[b0:b1], minlength=n_chunks)
        chunk_start = np.zeros(n_chunks + 1, dtype=np.int64)
        np.cumsum(chunk_bound.astype(np.int64), out=chunk_start[1:])
        rows = np.empty(int(chunk_start[-1]), dtype=np.int32)  # pages are touched only where written
        vals = np.empty(int(chunk_start[-1]), dtype=np.float64)
        start = np.zeros(b1 - b0, dtype=np.int64)
        count = np.zeros(b1 - b0, dtype=np.int64)
        _gram_block(b0, b1, Xc_indptr, Xc.indices, Xc.data, Xr_indptr, X.indices, X.data, perm, inv_perm32,
                    threshold, scale, max_keep, chunk_start, rows, vals, start, count, sq_norms, acc, mark, touched,
                    kept)
        pieces.append(compact_block(start, count, rows, vals))
        del rows, vals
    del acc, mark, touched, kept
    return assemble_columns(pieces, n), sq_norms


@numba.njit(cache=True, nogil=True)
def _compact_block(col_start, count, rows, vals, out_rows, out_vals):
    pos = 0
    for c in range(count.shape[0]):
        s = col_start[c]
        for a in range(count[c]):
            out_rows[pos] = rows[s + a]
            out_vals[pos] = vals[s + a]
            pos += 1


def compact_block(col_start, count, rows, vals):
    """(count (m,), rows, vals) of one block with the unused slots removed (host arrays)."""
    total = int(count.sum())
    out_rows = np.empty(total, dtype=np.int32)
    out_vals = np.empty(total, dtype=np.float64)
    _compact_block(col_start, count, rows, vals, out_rows, out_vals)
    return count, out_rows, out_vals


def assemble_columns(pieces, n: int) -> sp.csc_matrix:
    """Concatenate per-block (count, rows, vals) host pieces, in column order, into one CSC.

    The result arrays grow block by block with ``ndarray.resize`` (glibc's realloc moves large
    allocations by remapping their pages, not by copying) and each block is freed once copied, so
    the peak is the result plus one block, not twice the result."""
    counts = [np.asarray(c) for c, _, _ in pieces]
    indptr = np.zeros(n + 1, dtype=np.int64)
    if counts:
        np.cumsum(np.concatenate(counts), out=indptr[1:])
    indices = np.empty(0, dtype=np.int32)
    data = np.empty(0, dtype=np.float64)
    pos = 0
    for k in range(len(pieces)):
        _, r, v = pieces[k]
        pieces[k] = None
        m = r.shape[0]
        indices.resize(pos + m, refcheck=False)
        data.resize(pos + m, refcheck=False)
        indices[pos:pos + m] = r
        data[pos:pos + m] = v
        pos += m
        del r, v
    return sp.csc_matrix((data, indices, indptr), shape=(n, n))
