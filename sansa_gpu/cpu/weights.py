"""Stage 4 on the CPU: weights W^T and Z from K ~= L^{-1}, D and the permutation p."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..weights import weights_from_inverse


def assemble_weights(K: sp.csc_matrix, d: np.ndarray, p: np.ndarray) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Return (Wt, Z), both CSR float32, with ``Wt @ Z ~= B - I`` (EASE's B).

    K : (n, n) CSC, approximate L^{-1} of ``A[p][:, p] = L D L^T``.
    d : (n,) float64 diagonal of D.   p : (n,) int64 permutation.
    W = K[:, argsort(p)] (n x n, columns back in item order); Z0 = D^{-1} W;
    r_c = sum_i W_ic^2 / d_i (= diag(A^{-1}) approximately); Z = Z0 diag(-1/r).
    Wt (items x n) shares W's CSC arrays; Z (n x items) is converted to CSR for row gathers.
    """
    n = K.shape[0]
    w_indptr, w_indices, w_data, z, _ = weights_from_inverse(
        K.indptr.astype(np.int64, copy=False), K.indices, K.data, np.asarray(d, dtype=np.float64), np.asarray(p, dtype=np.int64))
    Z = sp.csc_matrix((z, w_indices.copy(), w_indptr.copy()), shape=(n, n)).tocsr()
    Wt = sp.csr_matrix((w_data, w_indices, w_indptr), shape=(n, n))
    return Wt, Z
