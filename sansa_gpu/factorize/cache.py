"""Work shared by the fits of a search on one interaction matrix (:class:`FactorCache`)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .incomplete import icf_column_scaling


class FactorCache:
    """Work shared by several fits of ONE interaction matrix that differ in ``l2`` / ``density``
    (:func:`sansa_gpu.tune` passes one to :meth:`SANSA.fit`): the ICF column scaling; the item
    ordering and unshifted Gram per (ordering, min_cooccurrence); the exact CHOLMOD factor per
    (l2, ordering), cut to each density. It keeps the ``max_grams`` most recently used Grams (one per
    pruning level a search cycles through) and the most recent exact factor; :meth:`held_bytes` says
    how much memory that is. Results are identical to fits without a cache. ``hits`` counts reuses.

    The cache binds to the first matrix it sees; a fit on a different matrix raises ValueError.
    """

    def __init__(self, max_grams: int = 1):
        self._X = None
        self._scaling = None
        self._grams: dict = {}
        self._exact = None
        self.max_grams = max(1, int(max_grams))
        self.hits = {"scaling": 0, "gram": 0, "exact_factor": 0}

    def bind(self, X: sp.csr_matrix) -> None:
        """Check that ``X`` (canonical CSR) is the matrix this cache holds work for."""
        if self._X is None:
            self._X = X.copy()  # its own copy: X may be the caller's matrix, edited in place between fits
            return
        Y = self._X
        same = (X.shape == Y.shape and X.nnz == Y.nnz and np.array_equal(X.indptr, Y.indptr)
                          and np.array_equal(X.indices, Y.indices) and np.array_equal(X.data, Y.data))
        if not same:
            raise ValueError("this FactorCache holds work for another interaction matrix: use one cache per matrix")

    def _get(self, slot: str, key, build):
        held = getattr(self, slot)
        if held is not None and held[0] == key:
            self.hits["exact_factor" if slot == "_exact" else slot.strip("_")] += 1
            return held[1]
        setattr(self, slot, None)  # free the old one before building the new one
        value = build()
        setattr(self, slot, (key, value))
        return value

    def column_scaling(self, X: sp.csr_matrix) -> np.ndarray:
        return self._get("_scaling", "icf", lambda: icf_column_scaling(X))

    def gram(self, key, build):
        if key in self._grams:
            self.hits["gram"] += 1
            self._grams[key] = self._grams.pop(key)  # most recently used last
            return self._grams[key]
        while len(self._grams) >= self.max_grams:  # free before building the new one
            self._grams.pop(next(iter(self._grams)))
        self._grams[key] = build()
        return self._grams[key]

    def held_bytes(self) -> int:
        """Bytes of the Grams and exact factor held between fits."""
        mats = [A for _, A in self._grams.values()] + ([self._exact[1][1]] if self._exact is not None else [])
        return int(sum(M.data.nbytes + M.indices.nbytes + M.indptr.nbytes for M in mats))

    def exact_factor(self, key, build):
        return self._get("_exact", key, build)
