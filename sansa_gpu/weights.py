"""Stage 4: weights W^T and Z from K ~= L^{-1}, D and the permutation p.

Written once for NumPy and CuPy arrays (``weights_from_inverse``); the backends wrap it:
``cpu.assemble_weights`` on the host, ``gpu.assemble_weights`` on the device."""

from __future__ import annotations

from .selection import array_module


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
