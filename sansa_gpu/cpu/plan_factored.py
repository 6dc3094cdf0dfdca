"""The factored scoring plan (the GPU's too): per user, h = x Wt over the touched latent rows, then s = h Z
by scattering each touched row of Z, then the masked top-k. Work per user: Σ |Z row| over the touched
latents (:func:`factored_work` counts it for the planner)."""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

from ._accumulate import touch
from ._threads import parallel_call
from .topk import (_add_own, _scatter_flagged, _scatter_listed, _take_flagged, _take_listed, _write_padded,
                   n_chunks)


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


def recommend_factored(X: sp.csr_matrix, Wt: sp.csr_matrix, Z: sp.csr_matrix, k: int, blocked: np.ndarray,
                       exclude_seen: np.uint8, out_ids: np.ndarray, out_scores: np.ndarray) -> None:
    """Top-k of (X Wt) Z per row of X into out_ids / out_scores ((users, k) int64 / float32).
    blocked : uint8 (items,), 1 = never returned; exclude_seen : 1 = nor the user's own items."""
    with parallel_call():
        _recommend_sparse(X.indptr, X.indices, X.data, Wt.indptr, Wt.indices, Wt.data, Z.indptr, Z.indices,
                          Z.data, blocked, exclude_seen, Wt.shape[1], k, n_chunks(X.shape[0]), out_ids, out_scores)


@numba.njit(cache=True)
def factored_work(X_indptr, X_indices, Wt_indptr, Wt_indices, Z_indptr, n_latent, users):
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
