"""Stage 5 on the CPU: fused sparse scoring ``s = (x Wt) Z`` with masked, sorted top-k.

Contract shared with the GPU kernels: per user the candidates are the items whose score is
structurally nonzero (reached through Wt and Z) and that the user has not interacted with;
the k best are returned sorted by score descending, ties broken by the lower item index,
padded with id -1 / score -inf. x Wt is accumulated in float64, the scores in float32 (as on
the GPU); they are compared as float32.

Three plans compute the same scores:

- ``factored`` (the GPU's too): per user, h = x Wt over the touched latent rows, then s = h Z by
  scattering each touched row of Z. Work per user: Σ |Z row| over the touched latents.
- ``product``: the item-item product B = Wt Z is formed once as a dense (items, items) float32
  matrix plus a bitmask of its structure (which items each row reaches), kept for the model (the
  *scoring cache*, as the GPU keeps its weights); per user s = Σ x_i B_i is a contiguous,
  vectorised row sum of |x| rows. At high density the touched latents reach most of the
  catalogue many times over (pinterest, 256 nonzeros per factor column: 0.8M scattered updates
  per user, against |x| x 9836 = 0.2M vectorised ones), so this plan is many times faster; on
  sparse models or large catalogues the factored plan is, and B would not fit.
- ``sparse_product``: the same B kept as CSR (its structure is its index list; uint16 indices when
  the catalogue has at most 65,536 items), per user s = Σ x_i B_i scattered row by row. It does
  more scattered updates than the factored plan where a user's items share latents (gowalla at
  5e-4: 717M against 562M) but each is cheaper: a few long contiguous rows per user instead of
  hundreds of short ones, and no x Wt gather or latent sort (gowalla: 2.6 s against 4.2 s at 5e-4,
  9.1 s against 19.2 s at 2e-3, where B takes 0.17 / 1.4 GB against 6.9 GB dense).

``plan="auto"`` (:func:`choose_plan`) estimates the per-user costs on a sample of the users and
takes a product plan when its B fits :func:`product_cache_bytes_cap` and it wins after paying for
B. Both product plans form each entry of B in float64 and round it once, then sum a user's rows
in float32 in the same order, so for finite inputs (:func:`sansa_gpu.validation.check_interactions`
rejects others) they give bit-identical results to each other, and scores that
match the factored plan's to float32 rounding (top-k identical except between near-ties).
Candidates are the same items except where x Wt cancels to exactly zero on a latent (the
factored plan then does not reach that latent's items; B's structure cannot know): with
nonnegative weights, as :func:`sansa_gpu.validation.check_interactions` requires, only by exact
rounding coincidence. Both caches (this one and the GPU's) assume the weights are not modified
in place: call the model's ``release_scoring_cache()`` after doing so.
"""

from __future__ import annotations

import logging

import numba
import numpy as np
import scipy.sparse as sp

from ..candidates import check_blocked
from ..scoring_cache import CacheBudgetExceeded, ScoringCache, scoring_cache_info
from ._accumulate import touch
from ._threads import parallel_call

logger = logging.getLogger(__name__)

PLANS = ("auto", "factored", "product", "sparse_product")
#: Cost model of :func:`choose_plan`, nanoseconds per operation on one core, measured on the 2-core
#: VM (benchmarks/score_bench.py --plans): a scattered update of the factored plan (load Z entry,
#: flag the item, add), an element of the product plan's vectorised row sum (column-tiled: 0.29 ns
#: on ml-1m at 1e-2, 0.75 before the tiles), a catalogue entry of its candidate scan, an update
#: while forming B, and an entry of B written. The sparse product plan's, in the same units (the
#: factored plan's update as NS_SCATTER; its real cost was 12 ns on gowalla at 5e-4, 6 at 2e-3):
#: a scattered update (0.48 / 0.56 x the factored plan's there: contiguous rows, no gather), an
#: update while forming its B (counting and filling pass together: 2 x 1.2 x the factored
#: update) and an entry of it written (15 ns measured, i.e. about 8 in these units).
NS_SCATTER = 5.0
NS_ROW_SUM = 0.35
NS_SCAN = 1.0
NS_BUILD = 3.0
NS_WRITE_B = 0.75
NS_SPARSE_SCATTER = 2.6
NS_SPARSE_BUILD = 12.0
NS_SPARSE_WRITE = 8.0
#: A product plan is taken when its predicted time (forming B included unless cached) is below this
#: fraction of the factored plan's: the dense B's vectorised row sums are a different kind of work
#: from the scatter the cost model is calibrated on (wider margin), the sparse B's are the same kind.
PRODUCT_MARGIN = 0.7
SPARSE_PRODUCT_MARGIN = 0.9
PLAN_SAMPLE_USERS = 2048
#: Bytes of B one column tile of the product plan spans: well inside the 32 MB shared L3 of the
#: benchmark VM (2 x AMD EPYC, 1 MB L2 per core), so a tile is read from memory once for all users.
PRODUCT_TILE_BYTES = 8 << 20


@numba.njit(inline="always")
def _push_topk(ids, scores, count, k, item, score):
    """Insert (item, score) into the descending top-k arrays holding ``count`` entries; returns the
    new count. Order: higher score first, then lower item index."""
    if count == k:
        if not (score > scores[k - 1] or (score == scores[k - 1] and item < ids[k - 1])):
            return count
        pos = k - 1
    else:
        pos = count
        count += 1
    while pos > 0 and (score > scores[pos - 1] or (score == scores[pos - 1] and item < ids[pos - 1])):
        scores[pos] = scores[pos - 1]
        ids[pos] = ids[pos - 1]
        pos -= 1
    scores[pos] = score
    ids[pos] = item
    return count


@numba.njit(inline="always")
def _write_padded(out_ids, out_scores, u, ids, scores, count, k):
    for a in range(count):
        out_ids[u, a] = ids[a]
        out_scores[u, a] = scores[a]
    for a in range(count, k):
        out_ids[u, a] = -1
        out_scores[u, a] = -np.inf


@numba.njit(inline="always")
def _scatter_flagged(s, reached, indices, data, lo, hi, v):
    """Dense mode: s[item] += v * data[q] over entries lo..hi of a row, flagging each item reached
    (no branch; the candidates are found afterwards by :func:`_take_flagged`)."""
    for q in range(lo, hi):
        item = indices[q]
        s[item] += v * data[q]
        reached[item] = 1


@numba.njit(inline="always")
def _scatter_listed(s, reached, s_list, ns, indices, data, lo, hi, v):
    """List mode: as :func:`_scatter_flagged`, also listing each item the first time it is reached
    (s_list[:ns]); returns the new ns."""
    for q in range(lo, hi):
        item = indices[q]
        if not reached[item]:
            reached[item] = 1
            s_list[ns] = item
            ns += 1
        s[item] += v * data[q]
    return ns


@numba.njit(inline="always")
def _add_own(s, reached, X_indices, X_data, lo, hi):
    """Scores of the user's own items reached (``exclude_seen`` off): s[i] += x_i, the identity of
    B = I + Wt Z (EASE's B, whose diagonal is zero, approximated), so an own item ranks as EASE ranks it."""
    for p in range(lo, hi):
        i = X_indices[p]
        if reached[i]:
            s[i] += np.float32(X_data[p])


@numba.njit(inline="always")
def _take_flagged(s, reached, excluded, ids, scores, k):
    """Top-k of the flagged items not excluded, scanning the catalogue once and clearing s / flags;
    returns how many are held."""
    count = 0
    for item in range(s.shape[0]):
        if reached[item]:
            if not excluded[item]:
                count = _push_topk(ids, scores, count, k, item, s[item])
            s[item] = 0
            reached[item] = 0
    return count


@numba.njit(inline="always")
def _take_listed(s, reached, excluded, s_list, ns, ids, scores, k):
    """Top-k of the listed items s_list[:ns] not excluded, clearing s / flags; returns how many are held."""
    count = 0
    for a in range(ns):
        item = s_list[a]
        if not excluded[item]:
            count = _push_topk(ids, scores, count, k, item, s[item])
        s[item] = 0
        reached[item] = 0
    return count


@numba.njit(parallel=True, cache=True)
def _recommend_sparse(
    X_indptr, X_indices, X_data, Wt_indptr, Wt_indices, Wt_data, Z_indptr, Z_indices, Z_data,
    blocked, exclude_seen, n_latent, k, n_chunks, out_ids, out_scores,
):
    """Factored plan. ``blocked`` (items,) uint8: never returned; ``exclude_seen``: nor the user's own."""
    n_users = X_indptr.shape[0] - 1
    n_items = blocked.shape[0]
    for c in numba.prange(n_chunks):
        h = np.zeros(n_latent, dtype=np.float64)
        h_mark = np.zeros(n_latent, dtype=np.int64)
        h_list = np.empty(n_latent, dtype=np.int64)
        # score row kept small (float32 + byte flags) so that it stays in L2 across the scatter
        s = np.zeros(n_items, dtype=np.float32)
        reached = np.zeros(n_items, dtype=np.uint8)
        excluded = blocked.copy()
        s_list = np.empty(n_items, dtype=np.int64)
        ids = np.empty(k, dtype=np.int64)
        scores = np.empty(k, dtype=np.float32)
        for u in range(c, n_users, n_chunks):
            stamp = u + 1
            nh = 0
            for p in range(X_indptr[u], X_indptr[u + 1]):
                i = X_indices[p]
                x = np.float64(X_data[p])
                if exclude_seen:
                    excluded[i] = 1
                for q in range(Wt_indptr[i], Wt_indptr[i + 1]):
                    t = Wt_indices[q]
                    nh = touch(h_mark, h_list, nh, t, stamp, h)
                    h[t] += x * np.float64(Wt_data[q])
            # second product, latent rows in increasing order so Z is read front to back. List mode
            # tracks reached items; dense mode (more updates expected than items) flags them
            # without a branch and scans the whole row once.
            h_list[:nh].sort()
            work = 0
            for a in range(nh):
                t = h_list[a]
                work += Z_indptr[t + 1] - Z_indptr[t]
            if work > n_items:
                for a in range(nh):
                    t = h_list[a]
                    hv = np.float32(h[t])
                    if hv != 0:
                        _scatter_flagged(s, reached, Z_indices, Z_data, Z_indptr[t], Z_indptr[t + 1], hv)
                if not exclude_seen:
                    _add_own(s, reached, X_indices, X_data, X_indptr[u], X_indptr[u + 1])
                count = _take_flagged(s, reached, excluded, ids, scores, k)
            else:
                ns = 0
                for a in range(nh):
                    t = h_list[a]
                    hv = np.float32(h[t])
                    if hv != 0:
                        ns = _scatter_listed(s, reached, s_list, ns, Z_indices, Z_data, Z_indptr[t], Z_indptr[t + 1],
                                             hv)
                if not exclude_seen:
                    _add_own(s, reached, X_indices, X_data, X_indptr[u], X_indptr[u + 1])
                count = _take_listed(s, reached, excluded, s_list, ns, ids, scores, k)
            for p in range(X_indptr[u], X_indptr[u + 1]):
                excluded[X_indices[p]] = blocked[X_indices[p]]
            _write_padded(out_ids, out_scores, u, ids, scores, count, k)


@numba.njit(parallel=True, cache=True)
def _topk_dense_rows(S, X_indptr, X_indices, blocked, exclude_seen, k, out_ids, out_scores, row_offset):
    """Masked top-k of each row of a dense score block S (rows = users row_offset...): not the
    ``blocked`` items, nor (``exclude_seen``) the user's own."""
    n_rows, n_items = S.shape
    for r in numba.prange(n_rows):
        u = row_offset + r
        ids = np.empty(k, dtype=np.int64)
        scores = np.empty(k, dtype=np.float32)
        excluded = blocked.copy()
        if exclude_seen:
            for p in range(X_indptr[u], X_indptr[u + 1]):
                excluded[X_indices[p]] = 1
        count = 0
        for item in range(n_items):
            if not excluded[item]:
                count = _push_topk(ids, scores, count, k, item, np.float32(S[r, item]))
        _write_padded(out_ids, out_scores, u, ids, scores, count, k)


def _n_chunks(n: int) -> int:
    return int(max(1, min(n, 8 * numba.get_num_threads())))


def _n_build_chunks(n_rows: int) -> int:
    """Chunks of the kernels that form the sparse B: one per thread (rows are dealt round-robin, so
    the work is balanced anyway), because each holds three catalogue-long arrays (16 bytes per
    item: 2.6 GB at 10M items if there were 16 chunks)."""
    return int(max(1, min(n_rows, numba.get_num_threads())))


@numba.njit(parallel=True, cache=True)
def _dense_product(Wt_indptr, Wt_indices, Wt_data, Z_indptr, Z_indices, Z_data, n_chunks, B, mask):
    """B[i] = Wt[i] Z (float64 sums, rounded once to float32) and mask[i] = its structure as bits."""
    n_rows, n_items = B.shape
    for c in numba.prange(n_chunks):
        acc = np.zeros(n_items, dtype=np.float64)
        for i in range(c, n_rows, n_chunks):
            for q in range(Wt_indptr[i], Wt_indptr[i + 1]):
                t = Wt_indices[q]
                w = np.float64(Wt_data[q])
                for r in range(Z_indptr[t], Z_indptr[t + 1]):
                    j = Z_indices[r]
                    acc[j] += w * np.float64(Z_data[r])
                    mask[i, j >> 6] |= np.uint64(1) << np.uint64(j & 63)
            for j in range(n_items):
                B[i, j] = np.float32(acc[j])
                acc[j] = 0.0


@numba.njit(parallel=True, cache=True)
def _recommend_product(X_indptr, X_indices, X_data, B, mask, allowed, exclude_seen, k, tile, n_chunks, out_ids,
                       out_scores, counts):
    """Column tiles of B one after another (``tile`` items, a multiple of 64), every user per tile:
    a tile of B stays in the last-level cache while all users read their rows of it (the whole
    B is read from memory once, not once per user). Each user's top-k so far lives in its output
    row (``counts[u]`` entries); rows are padded after the last tile. ``allowed``: one bit per
    item (uint64 words, 1 = may be returned); ``exclude_seen``: the user's own items never are."""
    n_users = X_indptr.shape[0] - 1
    n_items = B.shape[1]
    one = np.uint64(1)
    for t0 in range(0, n_items, tile):
        t1 = min(n_items, t0 + tile)
        w0 = t0 >> 6
        nw = ((t1 + 63) >> 6) - w0
        for c in numba.prange(n_chunks):
            s = np.zeros(t1 - t0, dtype=np.float32)
            m = np.zeros(nw, dtype=np.uint64)
            for u in range(c, n_users, n_chunks):
                for p in range(X_indptr[u], X_indptr[u + 1]):
                    i = X_indices[p]
                    x = np.float32(X_data[p])
                    if x == 0:  # an explicit zero reaches nothing (as in the factored plan)
                        continue
                    row = B[i, t0:t1]  # a contiguous slice: the loop below vectorises (B[i, t0 + j] does not)
                    for j in range(t1 - t0):
                        s[j] += x * row[j]
                    bits = mask[i, w0:w0 + nw]
                    for w in range(nw):
                        m[w] |= bits[w]
                for p in range(X_indptr[u], X_indptr[u + 1]):
                    i = X_indices[p]
                    if t0 <= i < t1:
                        bit = one << np.uint64(i & 63)
                        if exclude_seen:
                            m[(i >> 6) - w0] &= ~bit
                        elif m[(i >> 6) - w0] & bit:  # a reached own item: B = I + Wt Z (see _add_own)
                            s[i - t0] += np.float32(X_data[p])
                for w in range(nw):
                    m[w] &= allowed[w0 + w]
                ids = out_ids[u]
                scores = out_scores[u]
                count = counts[u]
                # items ascend (within the tile and tile after tile), so once k are held an equal
                # score never enters: only scores above the k-th are looked up in the mask
                for j in range(t1 - t0):
                    if count == k and not s[j] > scores[k - 1]:
                        continue
                    if (m[j >> 6] >> np.uint64(j & 63)) & one:
                        count = _push_topk(ids, scores, count, k, t0 + j, s[j])
                counts[u] = count
                s[:] = 0.0
                m[:] = 0
    for u in numba.prange(n_users):
        for a in range(counts[u], k):
            out_ids[u, a] = -1
            out_scores[u, a] = -np.inf


@numba.njit(parallel=True, cache=True)
def _sparse_product(Wt_indptr, Wt_indices, Wt_data, Z_indptr, Z_indices, Z_data, n_items, n_chunks, count_only,
                    B_indptr, B_indices, B_data, mismatch):
    """B = Wt Z as CSR: per row the distinct items it reaches structurally (zeros too), in the order
    they are first reached (deterministic; not sorted: sorting took 0.4 of the 0.8 s fill on gowalla
    at 5e-4 and did not speed up scoring), entries summed in float64 and rounded once (as
    :func:`_dense_product`). count_only: write each row's entry count to B_indptr[i + 1] (the caller
    takes the prefix sum); else fill B_indices / B_data from the finished B_indptr. A row whose
    entries differ from its slot (weights changed between the passes) is not written:
    mismatch[c] = that row + 1, for the caller to raise."""
    n_rows = Wt_indptr.shape[0] - 1
    for c in numba.prange(n_chunks):
        acc = np.zeros(n_items, dtype=np.float64)
        mark = np.zeros(n_items, dtype=np.int32)  # int32 flags and list: the three stay closer to L2 size
        lst = np.empty(n_items, dtype=np.int32)
        for i in range(c, n_rows, n_chunks):
            stamp = np.int32(i + 1)
            m = 0
            for q in range(Wt_indptr[i], Wt_indptr[i + 1]):
                t = Wt_indices[q]
                w = np.float64(Wt_data[q])
                for r in range(Z_indptr[t], Z_indptr[t + 1]):
                    j = Z_indices[r]
                    m = touch(mark, lst, m, j, stamp, acc)
                    acc[j] += w * np.float64(Z_data[r])
            if count_only:
                B_indptr[i + 1] = m
                continue
            base = B_indptr[i]
            if m != B_indptr[i + 1] - base:
                mismatch[c] = i + 1
                continue
            for a in range(m):
                j = lst[a]
                B_indices[base + a] = j
                B_data[base + a] = np.float32(acc[j])


@numba.njit(parallel=True, cache=True)
def _recommend_sparse_product(X_indptr, X_indices, X_data, B_indptr, B_indices, B_data, blocked, exclude_seen, k,
                              n_chunks, out_ids, out_scores):
    """Per user s = Σ x_i B_i over the CSR rows of B, then the masked top-k of the reached items
    (list mode; dense mode, flags without a branch and one scan of the catalogue, when more
    updates are expected than items: as the factored plan). ``blocked`` / ``exclude_seen``: as
    :func:`_recommend_sparse`."""
    n_users = X_indptr.shape[0] - 1
    n_items = blocked.shape[0]
    for c in numba.prange(n_chunks):
        s = np.zeros(n_items, dtype=np.float32)
        reached = np.zeros(n_items, dtype=np.uint8)
        excluded = blocked.copy()
        s_list = np.empty(n_items, dtype=np.int32)
        ids = np.empty(k, dtype=np.int64)
        scores = np.empty(k, dtype=np.float32)
        for u in range(c, n_users, n_chunks):
            work = 0
            for p in range(X_indptr[u], X_indptr[u + 1]):
                i = X_indices[p]
                if exclude_seen:
                    excluded[i] = 1
                work += B_indptr[i + 1] - B_indptr[i]
            # an explicit zero x reaches nothing (as in the other plans)
            if work > n_items:
                for p in range(X_indptr[u], X_indptr[u + 1]):
                    i = X_indices[p]
                    x = np.float32(X_data[p])
                    if x != 0:
                        _scatter_flagged(s, reached, B_indices, B_data, B_indptr[i], B_indptr[i + 1], x)
                if not exclude_seen:
                    _add_own(s, reached, X_indices, X_data, X_indptr[u], X_indptr[u + 1])
                count = _take_flagged(s, reached, excluded, ids, scores, k)
            else:
                ns = 0
                for p in range(X_indptr[u], X_indptr[u + 1]):
                    i = X_indices[p]
                    x = np.float32(X_data[p])
                    if x != 0:
                        ns = _scatter_listed(s, reached, s_list, ns, B_indices, B_data, B_indptr[i], B_indptr[i + 1], x)
                if not exclude_seen:
                    _add_own(s, reached, X_indices, X_data, X_indptr[u], X_indptr[u + 1])
                count = _take_listed(s, reached, excluded, s_list, ns, ids, scores, k)
            for p in range(X_indptr[u], X_indptr[u + 1]):
                excluded[X_indices[p]] = blocked[X_indices[p]]
            _write_padded(out_ids, out_scores, u, ids, scores, count, k)


@numba.njit(cache=True)
def _factored_work(X_indptr, X_indices, Wt_indptr, Wt_indices, Z_indptr, n_latent, users):
    """(Σ touched Z entries, Σ |x|, Σ touched Wt entries) over ``users``: the work of the
    factored plan and the size of the product plan's row sums."""
    mark = np.zeros(n_latent, dtype=np.int64)
    scatter = 0
    n_x = 0
    gather = 0
    for a in range(users.shape[0]):
        u = users[a]
        stamp = a + 1
        for p in range(X_indptr[u], X_indptr[u + 1]):
            i = X_indices[p]
            n_x += 1
            for q in range(Wt_indptr[i], Wt_indptr[i + 1]):
                t = Wt_indices[q]
                gather += 1
                if mark[t] != stamp:
                    mark[t] = stamp
                    scatter += Z_indptr[t + 1] - Z_indptr[t]
    return scatter, n_x, gather


def product_bytes(n_items: int) -> int:
    """Bytes of the product plan's cache: B (float32) and its structure bitmask."""
    return int(n_items) * int(n_items) * 4 + int(n_items) * ((int(n_items) + 63) // 64) * 8


def sparse_index_dtype(n_items: int) -> np.dtype:
    """Index dtype of the sparse product plan's B: uint16 when every item id fits (a quarter fewer
    bytes streamed per update: 2.4 s against 2.7 s on gowalla at 5e-4), else int32."""
    return np.dtype(np.uint16) if int(n_items) <= 1 << 16 else np.dtype(np.int32)


def sparse_product_bytes(nnz_B: int, n_items: int) -> int:
    """Bytes of the sparse product plan's cache: B's indices, float32 values and int64 row pointers."""
    return int(nnz_B) * (sparse_index_dtype(n_items).itemsize + 4) + (int(n_items) + 1) * 8


def product_tile(n_rows: int, n_items: int) -> int:
    """Items per column tile of the product plan: a multiple of 64 whose (n_rows, tile) float32 slice
    of B fits :data:`PRODUCT_TILE_BYTES` (at least 64, at most the catalogue rounded up)."""
    per = PRODUCT_TILE_BYTES // max(1, 4 * int(n_rows))
    return int(max(64, min((int(n_items) + 63) // 64 * 64, per // 64 * 64)))


def product_cache_bytes_cap() -> int:
    """Largest B :func:`choose_plan` allows: the scoring-cache budget of the process
    (:func:`sansa_gpu.set_scoring_cache_budget`; by default 25% of the available memory, at most 4 GB)."""
    return scoring_cache_info()["budget_bytes"]


def _build_updates(Wt: sp.csr_matrix, Z: sp.csr_matrix) -> float:
    """Σ over the entries of Wt of |Z row|: the updates of forming B = Wt Z (either layout)."""
    return float(np.diff(Z.indptr)[Wt.indices].sum())


def plan_costs(X: sp.csr_matrix, Wt: sp.csr_matrix, Z: sp.csr_matrix, B_row_nnz: np.ndarray | None = None) -> dict:
    """Predicted seconds (one core) of scoring the rows of X by each plan, from the work of a
    sample of :data:`PLAN_SAMPLE_USERS` rows: {'factored', 'product' (row sums + scans, B given),
    'build' (forming the dense B once), 'sparse_build_min' (forming the sparse B once, without
    writing its entries)}, and with ``B_row_nnz`` (entries per row of B, :func:`product_row_nnz`)
    also 'sparse_product' (B given) and 'sparse_build'."""
    n_items = X.shape[1]
    sample, per = _plan_sample(X.shape[0])
    scatter, n_x, gather = _factored_work(X.indptr, X.indices, Wt.indptr, Wt.indices, Z.indptr, Wt.shape[1], sample)
    updates = _build_updates(Wt, Z)
    ns = {"factored": (NS_SCATTER * scatter + NS_SCATTER * gather) * per,
          "product": (NS_ROW_SUM * n_x * n_items + NS_SCAN * sample.size * n_items) * per,
          "build": NS_BUILD * updates + NS_WRITE_B * n_items * n_items,
          "sparse_build_min": NS_SPARSE_BUILD * updates}
    cost = {key: value * 1e-9 for key, value in ns.items()}
    if B_row_nnz is not None:
        cost.update(_sparse_product_costs(X, B_row_nnz, cost["sparse_build_min"]))
    return cost


def _plan_sample(n_users: int) -> tuple[np.ndarray, float]:
    """The rows :func:`plan_costs` measures (:data:`PLAN_SAMPLE_USERS` spread over all) and the
    factor from their work to all rows'."""
    sample = np.unique(np.linspace(0, n_users - 1, min(n_users, PLAN_SAMPLE_USERS)).astype(np.int64))
    return sample, n_users / max(1, sample.size)


def _sparse_product_costs(X: sp.csr_matrix, B_row_nnz: np.ndarray, sparse_build_min: float) -> dict:
    """{'sparse_product', 'sparse_build'} seconds of :func:`plan_costs`, given the rows' entries of B
    and the (already predicted) 'sparse_build_min'."""
    sample, per = _plan_sample(X.shape[0])
    updates = float(np.asarray(B_row_nnz, dtype=np.float64)[X[sample].indices].sum())
    return {"sparse_product": NS_SPARSE_SCATTER * updates * per * 1e-9,
            "sparse_build": sparse_build_min + NS_SPARSE_WRITE * float(np.sum(B_row_nnz)) * 1e-9}


def choose_plan(X: sp.csr_matrix, Wt: sp.csr_matrix, Z: sp.csr_matrix, cached: str | None = None,
                cache: ScoringCache | None = None) -> tuple[str, str]:
    """('factored' | 'product' | 'sparse_product', why) for scoring the rows of X.

    A product plan is taken when its B fits :func:`product_cache_bytes_cap` and its predicted
    time, plus forming B unless ``cached`` names it (the plan whose B is already formed), is below
    :data:`PRODUCT_MARGIN` (dense B) / :data:`SPARSE_PRODUCT_MARGIN` (sparse B) x the factored
    plan's (:func:`plan_costs`); of two such, the faster. The sparse B's size needs its structure
    counted (:func:`product_row_nnz`, once per model): that is done only when forming it could
    pay, i.e. when even the lower bound 'sparse_build_min' is below that fraction of the factored
    plan's time (so a small batch never pays for the count); ``cache`` keeps that count."""
    n_items = Z.shape[1]
    if X.shape[0] == 0:
        return "factored", "no users"
    cap = product_cache_bytes_cap()
    cost = plan_costs(X, Wt, Z)
    margin = {"product": PRODUCT_MARGIN, "sparse_product": SPARSE_PRODUCT_MARGIN}
    options, notes = {}, []
    need = product_bytes(n_items)
    if cached != "product" and need > cap:  # (a cached B is already out of the available memory)
        notes.append(f"B = Wt Z would take {need / 1e9:.2f} GB > {cap / 1e9:.2f} GB")
    else:
        options["product"] = cost["product"] + (0.0 if cached == "product" else cost["build"])
    if cached == "sparse_product" or cost["sparse_build_min"] < SPARSE_PRODUCT_MARGIN * cost["factored"]:
        row_nnz = product_row_nnz(Wt, Z, cache)
        cost.update(_sparse_product_costs(X, row_nnz, cost["sparse_build_min"]))  # the sample's work is known
        need = sparse_product_bytes(row_nnz.sum(), n_items)
        if cached != "sparse_product" and need > cap:
            notes.append(f"sparse B would take {need / 1e9:.2f} GB > {cap / 1e9:.2f} GB")
        else:
            options["sparse_product"] = cost["sparse_product"] + (0.0 if cached == "sparse_product" else cost["sparse_build"])
    else:
        notes.append(f"forming a sparse B would take at least {cost['sparse_build_min']:.3g} s")
    why = ", ".join([f"predicted {cost['factored']:.3g} s factored"]
                    + [f"{options[p]:.3g} s {p}{'' if cached == p else ' incl. forming B'}" for p in options] + notes)
    wins = {p: t for p, t in options.items() if t < margin[p] * cost["factored"]}
    return min(wins, key=wins.get, default="factored"), why


def product_row_nnz(Wt: sp.csr_matrix, Z: sp.csr_matrix, cache: ScoringCache | None = None) -> np.ndarray:
    """Entries per row of B = Wt Z (its structure counted, B not formed), int64 (items,); kept in
    ``cache`` (entry 'B_row_nnz', apart from the formed B), so it is counted once per model."""
    def count():
        indptr = np.zeros(Wt.shape[0] + 1, dtype=np.int64)
        chunks = _n_build_chunks(Wt.shape[0])
        with parallel_call():
            _sparse_product(Wt.indptr, Wt.indices, Wt.data, Z.indptr, Z.indices, Z.data, Z.shape[1], chunks, True,
                            indptr, np.empty(0, dtype=np.int32), np.empty(0, dtype=np.float32),
                            np.zeros(chunks, dtype=np.int64))
        return indptr[1:]

    # a budget smaller than the count itself: counted, not kept
    return ScoringCache.or_for_call(cache).get_or_build("B_row_nnz", 8 * Wt.shape[0], count, oversize="build")


def _form_dense_B(Wt: sp.csr_matrix, Z: sp.csr_matrix) -> tuple:
    n_items = Z.shape[1]
    B = np.empty((Wt.shape[0], n_items), dtype=np.float32)
    mask = np.zeros((Wt.shape[0], (n_items + 63) // 64), dtype=np.uint64)
    with parallel_call():
        _dense_product(Wt.indptr, Wt.indices, Wt.data, Z.indptr, Z.indices, Z.data, _n_chunks(Wt.shape[0]), B, mask)
    return B, mask


def _form_sparse_B(Wt: sp.csr_matrix, Z: sp.csr_matrix, row_nnz: np.ndarray, cache: ScoringCache) -> tuple:
    n_items = Z.shape[1]
    indptr = np.zeros(Wt.shape[0] + 1, dtype=np.int64)
    np.cumsum(row_nnz, out=indptr[1:])
    indices = np.empty(indptr[-1], dtype=sparse_index_dtype(n_items))
    data = np.empty(indptr[-1], dtype=np.float32)
    chunks = _n_build_chunks(Wt.shape[0])
    mismatch = np.zeros(chunks, dtype=np.int64)
    with parallel_call():
        _sparse_product(Wt.indptr, Wt.indices, Wt.data, Z.indptr, Z.indices, Z.data, n_items, chunks, False,
                        indptr, indices, data, mismatch)
    if mismatch.any():
        cache.drop("B_row_nnz")
        raise RuntimeError(f"row {int(mismatch.max()) - 1} of B = Wt Z reaches a different number of items than "
                           f"counted: the weights changed in place; call release_scoring_cache() on the model after "
                           f"modifying them")
    return indptr, indices, data


def _product_state(Wt: sp.csr_matrix, Z: sp.csr_matrix, plan: str, cache: ScoringCache) -> tuple:
    """The formed B of ``plan`` for these weights, kept in ``cache`` (formed now, once, unless there):
    (B, mask) for 'product', (indptr, indices, data) for 'sparse_product'. MemoryError when B
    is larger than the scoring-cache budget or than the available memory."""
    state = cache.get(plan)
    if state is not None:
        return state
    from ..memory import available_memory_bytes

    n_items = Z.shape[1]
    if plan == "product":
        need, build = product_bytes(n_items), lambda: _form_dense_B(Wt, Z)
    else:
        row_nnz = product_row_nnz(Wt, Z, cache)
        need, build = sparse_product_bytes(row_nnz.sum(), n_items), lambda: _form_sparse_B(Wt, Z, row_nnz, cache)
    have = available_memory_bytes() + cache.nbytes  # what this model holds may be freed to make room
    if need > have:
        raise MemoryError(f"the {plan} plan needs B = Wt Z of {need / 1e9:.2f} GB, only {have / 1e9:.2f} GB are "
                          f"available: use plan='factored'")
    try:
        return cache.get_or_build(plan, need, build)
    except CacheBudgetExceeded as exc:
        raise MemoryError(f"the {plan} plan needs B = Wt Z of {need / 1e9:.2f} GB: {exc}; use plan='factored'") from None


def recommend_sparse(X: sp.csr_matrix, Wt: sp.csr_matrix, Z: sp.csr_matrix, k: int, plan: str = "auto", *,
                     cache: ScoringCache | None = None, blocked: np.ndarray | None = None,
                     exclude_seen: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of ``(X Wt) Z`` per row of X.

    X : (users, items) CSR float32.  Wt : (items, n) CSR.  Z : (n, items) CSR.
    plan : 'auto' (:func:`choose_plan`), 'factored', 'product' or 'sparse_product' (module docstring).
    cache : the model's :class:`~sansa_gpu.scoring_cache.ScoringCache`, where a formed B is kept
    (None: formed for this call only). blocked : None or uint8 (items,), 1 = never returned (the
    allow / block lists of :meth:`SANSA.recommend`). exclude_seen : the user's own items are never
    returned (True) or are candidates like any other (False).
    Returns ids (users, k) int64 and scores (users, k) float32. Parallel over users; safe to call
    from several threads at once (the cache forms B once; see :mod:`sansa_gpu.cpu._threads`).
    """
    if plan not in PLANS:
        raise ValueError(f"plan must be one of {PLANS}, got {plan!r}")
    n_users, n_items = X.shape[0], Z.shape[1]
    out_ids = np.empty((n_users, k), dtype=np.int64)
    out_scores = np.empty((n_users, k), dtype=np.float32)
    if not n_users:
        return out_ids, out_scores
    blocked = no_blocked(n_items) if check_blocked(blocked, n_items) is None else blocked
    cache = ScoringCache.or_for_call(cache)
    if plan == "auto":
        cached = next((p for p in ("sparse_product", "product") if cache.get(p) is not None), None)
        plan, why = choose_plan(X, Wt, Z, cached=cached, cache=cache)
        logger.debug("recommend: %s plan (%s)", plan, why)
    seen = np.uint8(bool(exclude_seen))
    if plan == "product":
        B, mask = _product_state(Wt, Z, "product", cache)
        counts = np.zeros(n_users, dtype=np.int64)
        tile = product_tile(*B.shape)
        if tile <= 0 or tile % 64:  # the kernel's mask words assume tiles aligned to 64 items
            raise AssertionError(f"product tile of {tile} items is not a positive multiple of 64")
        allowed = np.packbits(blocked == 0, bitorder="little")
        allowed = np.concatenate([allowed, np.zeros((-allowed.size) % 8, np.uint8)]).view(np.uint64)
        with parallel_call():
            _recommend_product(X.indptr, X.indices, X.data, B, mask, allowed, seen, k, tile, _n_chunks(n_users),
                               out_ids, out_scores, counts)
    elif plan == "sparse_product":
        indptr, indices, data = _product_state(Wt, Z, "sparse_product", cache)
        with parallel_call():
            _recommend_sparse_product(X.indptr, X.indices, X.data, indptr, indices, data, blocked, seen, k,
                                      _n_chunks(n_users), out_ids, out_scores)
    else:
        with parallel_call():
            _recommend_sparse(X.indptr, X.indices, X.data, Wt.indptr, Wt.indices, Wt.data, Z.indptr, Z.indices,
                              Z.data, blocked, seen, Wt.shape[1], k, _n_chunks(n_users), out_ids, out_scores)
    return out_ids, out_scores


def no_blocked(n_items: int) -> np.ndarray:
    """The ``blocked`` array that blocks nothing: uint8 zeros (items,)."""
    return np.zeros(int(n_items), dtype=np.uint8)


def topk_dense(S: np.ndarray, X: sp.csr_matrix, k: int, out_ids: np.ndarray, out_scores: np.ndarray, row_offset: int = 0,
               *, blocked: np.ndarray | None = None, exclude_seen: bool = True) -> None:
    """Masked top-k of the dense score rows S (rows row_offset.. of X): every item a candidate but
    the blocked ones (uint8 (items,), 1 = blocked) and, with ``exclude_seen``, the user's own."""
    blocked = no_blocked(S.shape[1]) if blocked is None else blocked
    with parallel_call():
        _topk_dense_rows(np.ascontiguousarray(S, dtype=np.float32), X.indptr, X.indices, blocked,
                         np.uint8(bool(exclude_seen)), k, out_ids, out_scores, row_offset)


def score_sparse(X: sp.csr_matrix, Wt: sp.csr_matrix, Z: sp.csr_matrix) -> sp.csr_matrix:
    """Raw scores ``(X Wt) Z`` as a (users, items) CSR float32 (no masking)."""
    return ((X @ Wt) @ Z).astype(np.float32).tocsr()


#: Where :func:`score_sparse` of this backend runs.
SCORE_SPARSE_DEVICE = "cpu"
