"""Stage 1: the Gram ``A = X^T X + l2 I`` as a sparse lower triangle, with its column norms.

The build itself is the one-pass kernel of the backends (:mod:`sansa_gpu.cpu.gram`, its GPU twin
:mod:`sansa_gpu.gpu.gram`): never anything dense of size n x n, int64 offsets, optional pruning while
it is built. This module applies the ICF column scaling and l2, and keeps two passes that store no
Gram: the count behind the memory estimate (:func:`gram_lower_nnz`) and the norms alone
(:func:`gram_column_norms`, for CHOLMOD's column scaling).
"""

from __future__ import annotations

import logging
import time

import numba
import numpy as np
import scipy.sparse as sp

from .cpu._accumulate import accumulate_gram_column, lane_tree_sum

logger = logging.getLogger(__name__)


@numba.njit(parallel=True, cache=True)
def _gram_lower_counts(n, Xc_indptr, Xc_indices, Xc_data, Xr_indptr, Xr_indices, Xr_data, min_value, out_count,
                       n_chunks):
    """Entries of column j of the lower triangle of X^T X that a build keeps (the diagonal, and rows
    i > j with a value >= min_value), none of them stored."""
    identity = np.arange(n)
    for c in numba.prange(n_chunks):
        acc = np.zeros(n, dtype=np.float64)
        mark = np.full(n, -1, dtype=np.int64)
        touched = np.empty(n, dtype=np.int64)
        for j in range(c, n, n_chunks):
            nt = accumulate_gram_column(j, j, j, Xc_indptr, Xc_indices, Xc_data, Xr_indptr, Xr_indices, Xr_data,
                                        identity, mark, touched, acc)
            cnt = 0
            for a in range(nt):
                i = touched[a]
                if i == j or acc[i] >= min_value:
                    cnt += 1
            out_count[j] = cnt


def _n_chunks(n: int) -> int:
    return int(max(1, min(n, 8 * numba.get_num_threads())))


def gram_lower_nnz(X: sp.csr_matrix, l2: float = 0.0, min_cooccurrence: float = 0.0) -> int:
    """nnz of ``gram_lower(X, l2, perm, min_cooccurrence)`` (any ``perm``: the count does not depend
    on it) from its count pass alone: no entry is stored. A column with an entry holds its diagonal;
    an item without interactions has none, and gets one when ``l2`` is positive."""
    X = sp.csr_matrix(X)
    n = X.shape[1]
    Xc = X.tocsc()
    counts = np.zeros(n, dtype=np.int64)
    _gram_lower_counts(n, Xc.indptr.astype(np.int64), Xc.indices, Xc.data, X.indptr.astype(np.int64), X.indices,
                       X.data, float(min_cooccurrence), counts, _n_chunks(n))
    return int(counts.sum()) + (int(np.count_nonzero(counts == 0)) if l2 else 0)


def gram_lower(X: sp.csr_matrix, l2: float = 0.0, perm: np.ndarray | None = None, min_cooccurrence: float = 0.0,
               prune_scale: np.ndarray | None = None, max_per_column: int | None = None) -> sp.csc_matrix:
    """Lower triangle (diagonal included) of ``P (X^T X + l2 I) P^T`` as CSC float64, int64 offsets.

    X : (users, n) CSR. perm : (n,) ordering (identity when None): entry (i, j) of the result is
    A[perm[i], perm[j]]. min_cooccurrence : off-diagonal entries below this value are dropped
    while building (0 keeps everything; for 0/1 data the value is the co-occurrence count).
    prune_scale : (n,) per-item factors s such that the pruning test is applied to
    ``G[i, j] * s[i] * s[j]`` (X's columns were divided by s: the threshold still speaks of the
    unscaled co-occurrences). None = ones. max_per_column : keep at most this many off-diagonal
    entries per column (largest first). Built by the one-pass CPU kernel
    (:func:`sansa_gpu.cpu.gram.gram_lower_and_norms`).
    Work O(sum over users of |items|^2), memory O(nnz(result) + block + threads * n).
    """
    from .cpu.gram import gram_lower_and_norms

    t0 = time.perf_counter()
    X = sp.csr_matrix(X)
    A, _ = gram_lower_and_norms(X, perm, min_cooccurrence, prune_scale, max_per_column)
    A = add_to_diagonal(A, l2)
    logger.info("gram: n=%d nnz(lower)=%d (%.1f MB) in %.2fs%s", A.shape[0], A.nnz,
                (A.data.nbytes + A.indices.nbytes) / 1e6, time.perf_counter() - t0,
                f", pruned below {min_cooccurrence}" if min_cooccurrence else "")
    return A


def mean_gram_diagonal(X: sp.csr_matrix) -> float:
    """Mean of the diagonal of X^T X over the items with an interaction (X's squared values summed per
    column, one pass over X.data; for 0/1 data the mean item popularity); 0 when X has no interaction."""
    diag = np.bincount(X.indices, weights=np.square(X.data, dtype=np.float64), minlength=X.shape[1])
    seen = diag > 0
    return float(diag[seen].mean()) if seen.any() else 0.0


def add_to_diagonal(A: sp.csc_matrix, l2: float) -> sp.csc_matrix:
    """A + l2 I for a lower CSC whose columns store their diagonal first where they have one
    (columns of interaction-free items get an explicit diagonal entry l2). In place when every
    column has its diagonal."""
    if not l2:
        return A
    n = A.shape[0]
    indptr, indices = A.indptr, A.indices
    has_diag = np.diff(indptr) > 0
    has_diag[has_diag] = indices[indptr[:-1][has_diag]] == np.arange(n)[has_diag]
    if has_diag.all():
        A.data[indptr[:-1]] += l2
        return A
    A = (A + sp.diags(np.full(n, l2), format="csc")).tocsc()
    A.sort_indices()
    return A


def column_scale_from_sq_norms(sq_norms: np.ndarray) -> np.ndarray:
    """(n,) float64 s_j = sqrt(||(X^T X)[:, j]||_2) from the squared norms (1 for empty items)."""
    s = np.sqrt(np.sqrt(sq_norms))
    s[s == 0] = 1.0
    return s


@numba.njit(cache=True, nogil=True)
def _scale_lower(indptr, indices, data, s_perm):
    for j in range(indptr.shape[0] - 1):
        for a in range(indptr[j], indptr[j + 1]):
            data[a] = data[a] / (s_perm[indices[a]] * s_perm[j])


def scaled_gram(X: sp.csr_matrix, perm: np.ndarray, min_cooccurrence: float = 0.0, column_scaling: bool = False,
                max_per_column: int | None = None, backend=None) -> tuple[sp.csc_matrix, np.ndarray | None]:
    """The ICF's input: the lower triangle of ``P S^-1 X^T X S^-1 P^T`` (no l2), in one pass.

    X : (users, n) canonical CSR float32, unscaled. perm : (n,) int64 ordering. Pruning
    (``min_cooccurrence``, ``max_per_column``) is decided on the unscaled co-occurrences. With
    ``column_scaling``, S = diag(s), s_j = sqrt(||(X^T X)[:, j]||_2) (the official ICF preprocessing)
    from the column norms the same pass computes, and entry (i, j) is divided by s_i s_j;
    without it S = I. ``backend``: :mod:`sansa_gpu.cpu` (default) or :mod:`sansa_gpu.gpu`, whose
    ``gram_lower_and_norms`` builds it (same result on both).
    Returns (A CSC float64 (n, n), s (n,) float64 in item order or None).
    """
    from . import cpu

    backend = cpu if backend is None else backend
    t0 = time.perf_counter()
    A, sq_norms = backend.gram_lower_and_norms(X, perm, min_cooccurrence, None, max_per_column)
    s = None
    if column_scaling:
        s = column_scale_from_sq_norms(sq_norms)
        _scale_lower(A.indptr, A.indices, A.data, s[np.asarray(perm, dtype=np.int64)])
    logger.info("gram: n=%d nnz(lower)=%d (%.1f MB) in %.2fs, with column norms%s%s", A.shape[0], A.nnz,
                (A.data.nbytes + A.indices.nbytes) / 1e6, time.perf_counter() - t0,
                f", pruned below {min_cooccurrence}" if min_cooccurrence else "",
                f", at most {max_per_column} per column" if max_per_column is not None else "")
    return A, s


@numba.njit(parallel=True, cache=True)
def _gram_column_sq_norms(n, Xc_indptr, Xc_indices, Xc_data, Xr_indptr, Xr_indices, Xr_data, out, n_chunks):
    identity = np.arange(n)
    for c in numba.prange(n_chunks):
        acc = np.zeros(n, dtype=np.float64)
        mark = np.full(n, -1, dtype=np.int64)
        touched = np.empty(n, dtype=np.int64)
        for j in range(c, n, n_chunks):
            nt = accumulate_gram_column(j, j, 0, Xc_indptr, Xc_indices, Xc_data, Xr_indptr, Xr_indices, Xr_data,
                                        identity, mark, touched, acc)
            out[j] = lane_tree_sum(acc, touched, nt)  # the one-pass Gram's order: the same bits


def gram_column_norms(X: sp.csr_matrix) -> np.ndarray:
    """(n,) float64 ``||(X^T X)[:, j]||_2`` without storing the Gram (O(threads * n) memory)."""
    X = sp.csr_matrix(X)
    n = X.shape[1]
    Xc = X.tocsc()
    out = np.zeros(n, dtype=np.float64)
    _gram_column_sq_norms(n, Xc.indptr.astype(np.int64), Xc.indices, Xc.data, X.indptr.astype(np.int64), X.indices,
                          X.data, out, _n_chunks(n))
    return np.sqrt(out)
