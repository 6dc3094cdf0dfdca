"""The factor every factoriser returns (:class:`LDLFactor`), the nonzero budget a density allows
(:func:`nnz_budget`), and the magnitude cut that turns a Cholesky factor into a unit-lower ``L`` and ``D``
within it (:func:`sparsify_cholesky_factor`; the exact factor is cut by it, and ICF's when it works wider)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np
import scipy.sparse as sp

from ..selection import largest_magnitude_mask


@dataclass
class LDLFactor:
    """Sparse ``L D L^T ~= A[p][:, p]``.

    L : (n, n) scipy CSC, float32, unit lower triangular, sorted row indices (diagonal first).
    d : (n,) float64, the diagonal of D (all > 0).
    p : (n,) int64, the fill-reducing permutation (``A[p][:, p]`` is what was factorised).
    shift : float or None, 'icf' only: the diagonal shift the incomplete Cholesky was computed with
        (``l2``, or larger after restarts); None for the exact CHOLMOD factor.
    breakdowns : list of dict, 'icf' only: one ``{"pivot": int, "shift": float}`` per failed attempt
        (the first non-positive pivot, a position in the order ``p``, and the shift tried), in
        order; empty without restarts.
    local_fixes : int, 'icf' with breakdown_rule='local' only: pivots replaced by their own diagonal.
    seconds : dict, wall seconds of the sub-stages that produced it ('ordering', 'gram', 'icf',
        'cut' for ICF; 'exact', 'cut' for CHOLMOD; a stage served from a FactorCache counts ~0).
    devices : dict, where each sub-stage ran ('cpu' or 'gpu'; the ICF's Gram can run on the GPU).
    """

    L: sp.csc_matrix
    d: np.ndarray
    p: np.ndarray
    shift: float | None = None
    breakdowns: list = field(default_factory=list)
    local_fixes: int = 0
    seconds: dict = field(default_factory=dict)
    devices: dict = field(default_factory=dict)

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


def working_budget(budget: int, n: int, working_fill: float = 1.0) -> int:
    """Nonzeros the incomplete Cholesky may keep while it factorises (``SANSA(icf_fill=)``):
    ``working_fill`` x the factor's budget, at least the budget, at most a full lower triangle."""
    return int(min(n * (n + 1) // 2, max(budget, np.ceil(float(working_fill) * budget))))


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
