"""Stage 4 on the GPU: twin of ``sansa_gpu.cpu.weights`` (array code shared in ``sansa_gpu.weights``)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..weights import weights_from_inverse
from . import _device
from .refine import to_device


def assemble_weights(K, d: np.ndarray, p: np.ndarray) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """GPU twin of :func:`sansa_gpu.cpu.assemble_weights`; K host CSC or DeviceCompressed.
    Returns host CSR (Wt, Z). A device out-of-memory raises :class:`GPUOutOfMemory` (the caller
    assembles on the CPU instead)."""
    with _device.out_of_memory_as("weight assembly does not fit in GPU memory"):
        xp = _device.current().xp
        K = to_device(K)
        n = K.shape[0]
        w_indptr, w_indices, w_data, z, col = weights_from_inverse(
            K.indptr, K.indices, K.data, xp.asarray(d, dtype=xp.float64), xp.asarray(p, dtype=xp.int64))
        # Z: CSC (same pattern as W) -> CSR: one sort of the int64 key (row, column)
        order = xp.argsort(w_indices.astype(xp.int64) * n + col)
        z_indptr = xp.zeros(n + 1, dtype=xp.int64)
        xp.cumsum(xp.bincount(w_indices, minlength=n), out=z_indptr[1:])
        Z = sp.csr_matrix((z[order].get(), col[order].astype(xp.int32).get(), z_indptr.get()), shape=(n, n))
        Wt = sp.csr_matrix((w_data.get(), w_indices.get(), w_indptr.get()), shape=(n, n))
    return Wt, Z
