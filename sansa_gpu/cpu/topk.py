"""Per-user row helpers shared by the CPU scoring plans: scatter into a user's score row, take its masked,
sorted top-k (higher score first, ties to the lower item index), write it padded with -1 / -inf; and the
masked top-k of dense score rows (:func:`topk_dense`, EASE's). numba, inlined into each plan's kernel."""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

from ._threads import parallel_call


def n_chunks(n: int) -> int:
    """Work chunks of a parallel loop over n rows: 8 per thread (rows are dealt round-robin)."""
    return int(max(1, min(n, 8 * numba.get_num_threads())))


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
