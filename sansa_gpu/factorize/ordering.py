"""Stage 1: the item order in which ``X^T X`` is factorised (:func:`item_ordering`): CHOLMOD's
fill-reducing methods, or 'popularity' (ascending interaction count, O(nnz), no SuiteSparse)."""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from .exact import CHOLMOD_ORDERINGS, _owned_transpose, import_cholmod

logger = logging.getLogger("sansa_gpu.factorize")  # one logger name for every factorisation stage

ORDERINGS = CHOLMOD_ORDERINGS + ("popularity",)
"""All item orderings: CHOLMOD's, plus 'popularity' (items by ascending interaction count, O(nnz);
'icf' only)."""


def item_ordering(X: sp.csr_matrix, method: str = "colamd") -> np.ndarray:
    """(n,) int64 permutation of X's item columns for the factorisation of X^T X.

    CHOLMOD's methods ('colamd' works on X itself; 'amd', 'metis', ... form the Gram's pattern)
    run CHOLMOD's symbolic analysis; 'popularity' orders items by ascending interaction count
    (ties by id) in O(nnz) time. Without scikit-sparse, CHOLMOD methods fall back to reverse
    Cuthill-McKee of the Gram pattern.
    """
    if method not in ORDERINGS:
        raise ValueError(f"ordering must be one of {ORDERINGS}, got {method!r}")
    n = X.shape[1]
    if method == "popularity":
        counts = np.bincount(X.indices, minlength=n)
        return np.argsort(counts, kind="stable").astype(np.int64)
    if method == "natural":
        return np.arange(n, dtype=np.int64)
    try:
        cholmod = import_cholmod()
    except ImportError:
        from scipy.sparse.csgraph import reverse_cuthill_mckee

        logger.warning("ordering %r needs CHOLMOD (not installed): using reverse Cuthill-McKee instead", method)
        G = sp.csr_matrix(X.T @ X)
        return np.asarray(reverse_cuthill_mckee(G, symmetric_mode=True), dtype=np.int64)
    factor = cholmod.analyze_AAt(_owned_transpose(X), mode="simplicial", ordering_method=method)
    return np.asarray(factor.P(), dtype=np.int64)
