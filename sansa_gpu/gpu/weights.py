"""Stage 4 on the GPU: W^T and Z from K, D, p with CuPy (twin of ``sansa_gpu.cpu.weights``)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..selection import array_module


def permute_columns(indptr, indices, data, perm):
    """Columns ``perm`` of a compressed matrix (NumPy or CuPy): new column c = old column perm[c]."""
    xp = array_module(indptr)
    lengths = xp.diff(indptr)[perm]
    new_indptr = xp.zeros(perm.shape[0] + 1, dtype=xp.int64)
    xp.cumsum(lengths, out=new_indptr[1:])
    total = int(new_indptr[-1])
    slots = xp.arange(total, dtype=xp.int64)
    col = xp.searchsorted(new_indptr[1:], slots, side="right")
    src = indptr[perm][col] + (slots - new_indptr[col])
    return new_indptr, indices[src], data[src], col


def weights_from_inverse(indptr, indices, data, d, p):
    """Array-level weight assembly (NumPy or CuPy): returns (W indptr, indices, data) = K[:, argsort(p)]
    (read as W^T in CSR) and Z in CSC with the same pattern, values
    ``W_ic / d_i * (-1 / r_c)``, ``r_c = sum_i W_ic^2 / d_i``."""
    xp = array_module(indptr)
    w_indptr, w_indices, w_data, col = permute_columns(indptr, indices, data, xp.argsort(p))
    w64 = w_data.astype(xp.float64)
    z0 = w64 / d[w_indices]
    r = xp.bincount(col, weights=w64 * z0, minlength=w_indptr.shape[0] - 1)
    z = (z0 * (-1.0 / r)[col]).astype(xp.float32)
    return w_indptr, w_indices, w_data.astype(xp.float32), z, col


def assemble_weights(K, d: np.ndarray, p: np.ndarray) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """GPU twin of :func:`sansa_gpu.cpu.assemble_weights`; K host CSC or DeviceCompressed.
    Returns host CSR (Wt, Z)."""
    import cupy as cp

    from .refine import to_device

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
