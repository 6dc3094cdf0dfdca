"""Stage 1-2: fill-reducing ordering and sparse LDL^T of A = X^T X + l2*I, cut to an nnz budget.

Runs on the CPU only. scikit-sparse (CHOLMOD) is imported lazily so that the GPU stages, and
machines without SuiteSparse, can import the package.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp

from .selection import largest_magnitude_mask

logger = logging.getLogger(__name__)

ORDERINGS = ("colamd", "amd", "metis", "nesdis", "natural", "best")


@dataclass
class LDLFactor:
    """Sparse ``L D L^T ~= A[p][:, p]``.

    L : (n, n) scipy CSC, float32, unit lower triangular, sorted row indices (diagonal first).
    d : (n,) float64, the diagonal of D (all > 0).
    p : (n,) int64, the fill-reducing permutation (``A[p][:, p]`` is what was factorised).
    """

    L: sp.csc_matrix
    d: np.ndarray
    p: np.ndarray

    @property
    def n(self) -> int:
        return self.L.shape[0]

    def check(self) -> None:
        """Raise ValueError if the arrays do not form a valid factor."""
        n = self.L.shape[0]
        if self.L.shape != (n, n) or self.d.shape != (n,) or self.p.shape != (n,):
            raise ValueError(f"inconsistent factor shapes L {self.L.shape}, d {self.d.shape}, p {self.p.shape}")
        if not np.all(self.d > 0):
            raise ValueError("D must be positive")
        if not np.array_equal(np.sort(self.p), np.arange(n)):
            raise ValueError("p is not a permutation of 0..n-1")
        L = self.L
        starts = L.indptr[:-1]
        if np.any(np.diff(L.indptr) < 1) or not np.array_equal(L.indices[starts], np.arange(n)):
            raise ValueError("L must store its unit diagonal first in every column")
        if not np.allclose(L.data[starts], 1.0):
            raise ValueError("L must have a unit diagonal")


def nnz_budget(density: float, n: int) -> int:
    """Number of nonzeros allowed in each factor: ceil(density * n^2), at least n (the diagonal),
    at most n(n+1)/2 (a full lower triangle)."""
    return int(min(n * (n + 1) // 2, max(n, int(np.ceil(density * float(n) * float(n))))))


@numba.njit(cache=True, nogil=True)
def _keep_and_scale_columns(indptr, indices, data, keep, out_indptr, out_indices, out_data):
    """Compact the kept entries of a CSC Cholesky factor and divide each column by its diagonal
    (first entry), turning L_chol = L_unit * sqrt(D) into L_unit. Returns nothing; fills outputs."""
    n = indptr.shape[0] - 1
    pos = 0
    out_indptr[0] = 0
    for j in range(n):
        diag = data[indptr[j]]
        for s in range(indptr[j], indptr[j + 1]):
            if keep[s]:
                out_indices[pos] = indices[s]
                out_data[pos] = np.float32(data[s] / diag)
                pos += 1
        out_indptr[j + 1] = pos


def sparsify_cholesky_factor(L_chol: sp.csc_matrix, budget: int) -> tuple[sp.csc_matrix, np.ndarray]:
    """Keep the ``budget`` largest-|entry| values of a CSC Cholesky factor (diagonal always kept,
    ties by storage order), then split it into a unit-lower L (float32) and d = diag(L_chol)^2."""
    n = L_chol.shape[0]
    if not L_chol.has_sorted_indices:
        L_chol.sort_indices()
    starts = L_chol.indptr[:-1]
    if not np.array_equal(L_chol.indices[starts], np.arange(n)):
        raise RuntimeError("Cholesky factor is not lower triangular with a stored diagonal")
    diag = L_chol.data[starts].astype(np.float64)
    forced = np.zeros(L_chol.nnz, dtype=bool)
    forced[starts] = True
    keep = largest_magnitude_mask(L_chol.data, budget, forced)
    del forced
    nnz = int(np.count_nonzero(keep))
    indptr = np.empty(n + 1, dtype=np.int64)
    indices = np.empty(nnz, dtype=np.int32)
    data = np.empty(nnz, dtype=np.float32)
    _keep_and_scale_columns(L_chol.indptr.astype(np.int64, copy=False), L_chol.indices, L_chol.data, keep, indptr, indices, data)
    L = sp.csc_matrix((data, indices, indptr), shape=(n, n))
    return L, diag * diag


def ldlt_cholmod(X: sp.csr_matrix, l2: float, budget: int, ordering: str = "colamd") -> LDLFactor:
    """Exact CHOLMOD factorisation of ``A = X^T X + l2*I`` (the Gram is never formed: CHOLMOD
    factorises ``X^T (X^T)^T + beta*I`` directly), then magnitude-cut to ``budget`` nonzeros.

    X : (users, n) CSR, nonnegative. Memory: the exact factor, which for dense co-occurrence data
    can be a large fraction of n^2 (gowalla: 0.3 n^2); use a lower density with ``factorizer="icf"``
    on catalogs whose exact factor does not fit.
    """
    try:
        from sksparse import cholmod
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise ImportError(
            "factorizer='cholmod' needs scikit-sparse (apt-get install libsuitesparse-dev; pip install scikit-sparse)"
        ) from exc
    if ordering not in ORDERINGS:
        raise ValueError(f"ordering must be one of {ORDERINGS}, got {ordering!r}")
    n = X.shape[1]
    Xt = sp.csc_matrix(X.T, dtype=np.float64)
    t0 = time.perf_counter()
    factor = cholmod.analyze_AAt(Xt, mode="supernodal", ordering_method=ordering)
    t1 = time.perf_counter()
    factor.cholesky_AAt_inplace(Xt, beta=float(l2))
    del Xt
    p = np.asarray(factor.P(), dtype=np.int64)
    L_chol = factor.L()
    del factor
    t2 = time.perf_counter()
    logger.info(
        "factorize: ordering=%s %.2fs, CHOLMOD LL^T %.2fs, exact nnz(L)=%d (density %.3g)",
        ordering, t1 - t0, t2 - t1, L_chol.nnz, L_chol.nnz / float(n) ** 2,
    )
    L, d = sparsify_cholesky_factor(L_chol, budget)
    del L_chol
    logger.info("factorize: cut L to %d nnz (budget %d) in %.2fs", L.nnz, budget, time.perf_counter() - t2)
    return LDLFactor(L=L, d=d, p=p)
