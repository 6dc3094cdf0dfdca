"""The product plans: B = Wt Z formed once per model and kept in its scoring cache, then per user
s = Σ x_i B_i and the masked top-k. ``product`` keeps B dense (float32) with a bitmask of its structure and
sums rows column tile by column tile; ``sparse_product`` keeps B as CSR (uint16 indices when the catalogue
allows) and scatters its rows. Both form each entry of B in float64 and round it once, so they agree bit for
bit (module docstring of :mod:`sansa_gpu.cpu.inference`)."""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

from ..scoring_cache import CacheBudgetExceeded, ScoringCache
from ._threads import parallel_call
from ._accumulate import touch
from .topk import (_add_own, _push_topk, _scatter_flagged, _scatter_listed, _take_flagged, _take_listed, _write_padded,
                   n_chunks)

#: Bytes of B one column tile of the product plan spans: well inside the 32 MB shared L3 of the
#: benchmark VM (2 x AMD EPYC, 1 MB L2 per core), so a tile is read from memory once for all users.
PRODUCT_TILE_BYTES = 8 << 20


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


def product_row_nnz(Wt: sp.csr_matrix, Z: sp.csr_matrix, cache: ScoringCache | None = None) -> np.ndarray:
    """Entries per row of B = Wt Z (its structure counted, B not formed), int64 (items,); kept in
    ``cache`` (entry 'B_row_nnz', apart from the formed B), so it is counted once per model."""
    def count():
        indptr = np.zeros(Wt.shape[0] + 1, dtype=np.int64)
        chunks = _n_build_chunks(Wt.shape[0])
        with parallel_call():  # empty outputs of the filling pass's dtypes: one compiled specialisation for both
            _sparse_product(Wt.indptr, Wt.indices, Wt.data, Z.indptr, Z.indices, Z.data, Z.shape[1], chunks, True,
                            indptr, np.empty(0, dtype=sparse_index_dtype(Z.shape[1])), np.empty(0, dtype=np.float32),
                            np.zeros(chunks, dtype=np.int64))
        return indptr[1:]

    # a budget smaller than the count itself: counted, not kept
    return ScoringCache.or_for_call(cache).get_or_build("B_row_nnz", 8 * Wt.shape[0], count, oversize="build")


def _form_dense_B(Wt: sp.csr_matrix, Z: sp.csr_matrix) -> tuple:
    n_items = Z.shape[1]
    B = np.empty((Wt.shape[0], n_items), dtype=np.float32)
    mask = np.zeros((Wt.shape[0], (n_items + 63) // 64), dtype=np.uint64)
    with parallel_call():
        _dense_product(Wt.indptr, Wt.indices, Wt.data, Z.indptr, Z.indices, Z.data, n_chunks(Wt.shape[0]), B, mask)
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


def recommend_product(X: sp.csr_matrix, Wt: sp.csr_matrix, Z: sp.csr_matrix, k: int, blocked: np.ndarray,
                      exclude_seen: np.uint8, out_ids: np.ndarray, out_scores: np.ndarray,
                      cache: ScoringCache) -> None:
    """The dense product plan: as :func:`sansa_gpu.cpu.plan_factored.recommend_factored`, with the dense B
    of ``cache`` (formed now if absent)."""
    B, mask = _product_state(Wt, Z, "product", cache)
    n_users = X.shape[0]
    counts = np.zeros(n_users, dtype=np.int64)
    tile = product_tile(*B.shape)
    if tile <= 0 or tile % 64:  # the kernel's mask words assume tiles aligned to 64 items
        raise AssertionError(f"product tile of {tile} items is not a positive multiple of 64")
    allowed = np.packbits(blocked == 0, bitorder="little")
    allowed = np.concatenate([allowed, np.zeros((-allowed.size) % 8, np.uint8)]).view(np.uint64)
    with parallel_call():
        _recommend_product(X.indptr, X.indices, X.data, B, mask, allowed, exclude_seen, k, tile, n_chunks(n_users),
                           out_ids, out_scores, counts)


def recommend_sparse_product(X: sp.csr_matrix, Wt: sp.csr_matrix, Z: sp.csr_matrix, k: int, blocked: np.ndarray,
                             exclude_seen: np.uint8, out_ids: np.ndarray, out_scores: np.ndarray,
                             cache: ScoringCache) -> None:
    """The sparse product plan, with the CSR B of ``cache`` (formed now if absent)."""
    indptr, indices, data = _product_state(Wt, Z, "sparse_product", cache)
    with parallel_call():
        _recommend_sparse_product(X.indptr, X.indices, X.data, indptr, indices, data, blocked, exclude_seen, k,
                                  n_chunks(X.shape[0]), out_ids, out_scores)
