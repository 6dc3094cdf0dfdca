"""Stage 4 on the GPU (CuPy): twin of ``sansa_gpu.cpu.weights``."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..weights import weights_from_inverse
from .refine import to_device


def assemble_weights(K, d: np.ndarray, p: np.ndarray) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """GPU twin of :func:`sansa_gpu.cpu.assemble_weights`; K host CSC or DeviceCompressed.
    Returns host CSR (Wt, Z)."""
    import cupy as cp

    K = to_device(K)
    n = K.shape[0]
    w_indptr, w_indices, w_data, z, col = weights_from_inverse(
        K.indptr, K.indices, K.data, cp.asarray(d, dtype=cp.float64), cp.asarray(p, dtype=cp.int64))
    # Z: CSC (same pattern as W) -> CSR by a stable sort on rows
    order = cp.lexsort(cp.stack([col, w_indices.astype(cp.int64)]))
    z_indptr = cp.zeros(n + 1, dtype=cp.int64)
    cp.cumsum(cp.bincount(w_indices, minlength=n), out=z_indptr[1:])
    Z = sp.csr_matrix((z[order].get(), col[order].astype(cp.int32).get(), z_indptr.get()), shape=(n, n))
    Wt = sp.csr_matrix((w_data.get(), w_indices.get(), w_indptr.get()), shape=(n, n))
    return Wt, Z
