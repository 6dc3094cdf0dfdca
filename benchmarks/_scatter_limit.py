"""The machine's own limit for the factored plan's access pattern (benchmarks/score_bench.py).

The factored CPU plan (``sansa_gpu/cpu/inference.py``) spends its time scattering, per user, the
Z rows of the touched latents into a score row of the catalogue's length. :func:`scatter_limit`
replays exactly that stream of (item, value) updates, precomputed, as a bare
``s[item] += value`` loop per user (plus the reset of the touched entries), on the same number
of threads: no Wᵀ gather, no latent bookkeeping, no reached-item flags, no top-k. Its time per
update is what this machine needs for the scatter alone; ours divided by it says how much of the
rest is overhead.
"""

from __future__ import annotations

import time

import numba
import numpy as np

from sansa_gpu.cpu._accumulate import touch


@numba.njit(cache=True)
def _touched(X_indptr, X_indices, X_data, Wt_indptr, Wt_indices, Wt_data, u, stamp, h, mark, lst):
    """h = x_u Wt over the latents user u touches (as the factored plan: float64 sums); returns how
    many, listed ascending in lst[:nh]."""
    nh = 0
    for p in range(X_indptr[u], X_indptr[u + 1]):
        i = X_indices[p]
        for q in range(Wt_indptr[i], Wt_indptr[i + 1]):
            t = Wt_indices[q]
            nh = touch(mark, lst, nh, t, stamp, h)  # the plan's own sparse accumulator
            h[t] += np.float64(X_data[p]) * np.float64(Wt_data[q])
    lst[:nh].sort()
    return nh


@numba.njit(cache=True)
def _streams(X_indptr, X_indices, X_data, Wt_indptr, Wt_indices, Wt_data, Z_indptr, Z_indices, Z_data, n_latent,
             users, count_only, out_ptr, out_items, out_vals):
    """Per user users[a], the factored plan's scatter stream (touched latents ascending, latents
    whose float32 h is 0 skipped as the plan skips them, each Z row front to back). count_only:
    out_ptr[a + 1] = out_ptr[a] + its length; else (out_items, out_vals)[out_ptr[a]:out_ptr[a + 1]]."""
    h = np.zeros(n_latent, dtype=np.float64)
    mark = np.zeros(n_latent, dtype=np.int64)
    lst = np.empty(n_latent, dtype=np.int64)
    for a in range(users.shape[0]):
        nh = _touched(X_indptr, X_indices, X_data, Wt_indptr, Wt_indices, Wt_data, users[a], a + 1, h, mark, lst)
        pos = out_ptr[a]
        for b in range(nh):
            t = lst[b]
            hv = np.float32(h[t])
            if hv == 0:
                continue
            if count_only:
                pos += Z_indptr[t + 1] - Z_indptr[t]
                continue
            for r in range(Z_indptr[t], Z_indptr[t + 1]):
                out_items[pos] = Z_indices[r]
                out_vals[pos] = hv * Z_data[r]
                pos += 1
        if count_only:
            out_ptr[a + 1] = pos


def _stream_ptr(X, Wt, Z, users) -> np.ndarray:
    ptr = np.zeros(users.size + 1, dtype=np.int64)
    _streams(X.indptr, X.indices, X.data, Wt.indptr, Wt.indices, Wt.data, Z.indptr, Z.indices, Z.data, Wt.shape[1],
             users, True, ptr, np.empty(0, dtype=Z.indices.dtype), np.empty(0, dtype=np.float32))
    return ptr


@numba.njit(parallel=True, cache=True)
def _replay(ptr, items, vals, n_items, n_chunks, sink):
    n_users = ptr.shape[0] - 1
    for c in numba.prange(n_chunks):
        s = np.zeros(n_items, dtype=np.float32)
        acc = np.float32(0.0)
        for u in range(c, n_users, n_chunks):
            for q in range(ptr[u], ptr[u + 1]):
                s[items[q]] += vals[q]
            acc += s[items[ptr[u]]] if ptr[u + 1] > ptr[u] else np.float32(0.0)
            for q in range(ptr[u], ptr[u + 1]):
                s[items[q]] = 0.0
        sink[c] = acc


def scatter_limit(X, Wt, Z, max_users: int = 4000, repeats: int = 3) -> dict:
    """Bare scatter-add of the factored plan's update stream for (up to) ``max_users`` rows of X
    spread over all of them: {'users', 'updates', 'ns_per_update' (median of ``repeats``, per
    update on one thread, i.e. wall seconds x threads / updates), 'threads'}. Wt, Z: CSR matrices,
    or anything with CSR arrays (indptr, indices, data) and a shape: the sparse product plan's B
    with its uint16 indices (which scipy would widen), so the replay reads the bytes the plan reads."""
    n_users = X.shape[0]
    users = np.unique(np.linspace(0, n_users - 1, min(n_users, max_users)).astype(np.int64))
    ptr = _stream_ptr(X, Wt, Z, users)
    items = np.empty(ptr[-1], dtype=Z.indices.dtype)
    vals = np.empty(ptr[-1], dtype=np.float32)
    _streams(X.indptr, X.indices, X.data, Wt.indptr, Wt.indices, Wt.data, Z.indptr, Z.indices, Z.data, Wt.shape[1],
             users, False, ptr, items, vals)
    threads = numba.get_num_threads()
    n_chunks = max(1, min(users.size, 8 * threads))
    sink = np.zeros(n_chunks, dtype=np.float32)
    _replay(ptr, items, vals, Z.shape[1], n_chunks, sink)  # compile, warm
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _replay(ptr, items, vals, Z.shape[1], n_chunks, sink)
        times.append(time.perf_counter() - t0)
    updates = int(ptr[-1])
    return {"users": int(users.size), "updates": updates, "threads": threads,
            "ns_per_update": float(np.median(times)) * threads / max(1, updates) * 1e9}


def factored_updates(X, Wt, Z) -> int:
    """Σ over all rows of X of the factored plan's scattered updates (Z entries of touched latents)."""
    return int(_stream_ptr(X, Wt, Z, np.arange(X.shape[0], dtype=np.int64))[-1])
