"""Stage 5 on the CPU: fused sparse scoring ``s = (x Wt) Z`` with masked, sorted top-k.

Contract shared with the GPU kernels: per user the candidates are the items whose score is
structurally nonzero (reached through Wt and Z) and that the user has not interacted with;
the k best are returned sorted by score descending, ties broken by the lower item index,
padded with id -1 / score -inf. x Wt is accumulated in float64, the scores in float32 (as on
the GPU); they are compared as float32.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

from ._accumulate import touch


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


@numba.njit(parallel=True, cache=True)
def _recommend_sparse(
    X_indptr, X_indices, X_data, Wt_indptr, Wt_indices, Wt_data, Z_indptr, Z_indices, Z_data,
    n_latent, n_items, k, n_chunks, out_ids, out_scores,
):
    n_users = X_indptr.shape[0] - 1
    for c in numba.prange(n_chunks):
        h = np.zeros(n_latent, dtype=np.float64)
        h_mark = np.zeros(n_latent, dtype=np.int64)
        h_list = np.empty(n_latent, dtype=np.int64)
        # score row kept small (float32 + byte flags) so that it stays in L2 across the scatter
        s = np.zeros(n_items, dtype=np.float32)
        reached = np.zeros(n_items, dtype=np.uint8)
        excluded = np.zeros(n_items, dtype=np.uint8)
        s_list = np.empty(n_items, dtype=np.int64)
        ids = np.empty(k, dtype=np.int64)
        scores = np.empty(k, dtype=np.float32)
        for u in range(c, n_users, n_chunks):
            stamp = u + 1
            nh = 0
            for p in range(X_indptr[u], X_indptr[u + 1]):
                i = X_indices[p]
                x = np.float64(X_data[p])
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
            count = 0
            if work > n_items:
                for a in range(nh):
                    t = h_list[a]
                    hv = np.float32(h[t])
                    if hv == 0:
                        continue
                    for q in range(Z_indptr[t], Z_indptr[t + 1]):
                        item = Z_indices[q]
                        s[item] += hv * Z_data[q]
                        reached[item] = 1
                for item in range(n_items):
                    if reached[item]:
                        if not excluded[item]:
                            count = _push_topk(ids, scores, count, k, item, s[item])
                        s[item] = 0
                        reached[item] = 0
            else:
                ns = 0
                for a in range(nh):
                    t = h_list[a]
                    hv = np.float32(h[t])
                    if hv == 0:
                        continue
                    for q in range(Z_indptr[t], Z_indptr[t + 1]):
                        item = Z_indices[q]
                        if not reached[item]:
                            reached[item] = 1
                            s_list[ns] = item
                            ns += 1
                        s[item] += hv * Z_data[q]
                for a in range(ns):
                    item = s_list[a]
                    if not excluded[item]:
                        count = _push_topk(ids, scores, count, k, item, s[item])
                    s[item] = 0
                    reached[item] = 0
            for p in range(X_indptr[u], X_indptr[u + 1]):
                excluded[X_indices[p]] = 0
            _write_padded(out_ids, out_scores, u, ids, scores, count, k)


@numba.njit(parallel=True, cache=True)
def _topk_dense_rows(S, X_indptr, X_indices, k, out_ids, out_scores, row_offset):
    """Masked top-k of each row of a dense score block S (rows = users row_offset...)."""
    n_rows, n_items = S.shape
    for r in numba.prange(n_rows):
        u = row_offset + r
        ids = np.empty(k, dtype=np.int64)
        scores = np.empty(k, dtype=np.float32)
        excluded = np.zeros(n_items, dtype=np.bool_)
        for p in range(X_indptr[u], X_indptr[u + 1]):
            excluded[X_indices[p]] = True
        count = 0
        for item in range(n_items):
            if not excluded[item]:
                count = _push_topk(ids, scores, count, k, item, np.float32(S[r, item]))
        _write_padded(out_ids, out_scores, u, ids, scores, count, k)


def _n_chunks(n: int) -> int:
    return int(max(1, min(n, 8 * numba.get_num_threads())))


def recommend_sparse(X: sp.csr_matrix, Wt: sp.csr_matrix, Z: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of ``(X Wt) Z`` per row of X, own items excluded.

    X : (users, items) CSR float32.  Wt : (items, n) CSR.  Z : (n, items) CSR.
    Returns ids (users, k) int64 and scores (users, k) float32. O(sum over users of the touched
    entries of Wt and Z) work, one pass, parallel over users.
    """
    n_users = X.shape[0]
    out_ids = np.empty((n_users, k), dtype=np.int64)
    out_scores = np.empty((n_users, k), dtype=np.float32)
    if n_users:
        _recommend_sparse(
            X.indptr, X.indices, X.data, Wt.indptr, Wt.indices, Wt.data, Z.indptr, Z.indices, Z.data,
            Wt.shape[1], Z.shape[1], k, _n_chunks(n_users), out_ids, out_scores,
        )
    return out_ids, out_scores


def topk_dense(S: np.ndarray, X: sp.csr_matrix, k: int, out_ids: np.ndarray, out_scores: np.ndarray, row_offset: int = 0) -> None:
    """Masked top-k of the dense score rows S (rows row_offset.. of X), every unseen item a candidate."""
    _topk_dense_rows(np.ascontiguousarray(S, dtype=np.float32), X.indptr, X.indices, k, out_ids, out_scores, row_offset)


def score_sparse(X: sp.csr_matrix, Wt: sp.csr_matrix, Z: sp.csr_matrix) -> sp.csr_matrix:
    """Raw scores ``(X Wt) Z`` as a (users, items) CSR float32 (no masking)."""
    return ((X @ Wt) @ Z).astype(np.float32).tocsr()


def release_scoring_cache() -> None:
    """Backend hook (the GPU twin frees the device copy of the weights): nothing is cached here."""


#: Where :func:`score_sparse` of this backend runs.
SCORE_SPARSE_DEVICE = "cpu"
