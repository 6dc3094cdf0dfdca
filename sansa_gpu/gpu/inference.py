"""Stage 5 on the GPU: fused scoring + masked top-k (kernels/score_topk.cu).

Same signatures and contract as ``sansa_gpu.cpu.inference``; scores agree with the CPU to float32
accumulation error, ids agree except between items whose scores tie within that error.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ._kernels import get_kernel

THREADS = 256


def _to_device_csr(M: sp.csr_matrix):
    import cupy as cp

    return (cp.asarray(M.indptr.astype(np.int64, copy=False)), cp.asarray(M.indices.astype(np.int32, copy=False)),
            cp.asarray(M.data.astype(np.float32, copy=False)))


_weights_cache: list = []  # [(Wt, Z, device Wt, device Z)]: the last model's weights stay on the device


def _device_weights(Wt: sp.csr_matrix, Z: sp.csr_matrix):
    """Device copies of (Wt, Z), uploaded once per model: streaming many blocks of users through
    :func:`recommend_sparse` must not re-send the weights for every block."""
    if _weights_cache and _weights_cache[0][0] is Wt and _weights_cache[0][1] is Z:
        return _weights_cache[0][2], _weights_cache[0][3]
    _weights_cache.clear()
    wt, z = _to_device_csr(Wt), _to_device_csr(Z)
    _weights_cache.append((Wt, Z, wt, z))
    return wt, z


def batch_size_for(n_latent: int, n_items: int, n_users: int, fraction: float = 0.25) -> int:
    """Users per launch so that the dense scratch rows use at most ``fraction`` of free memory."""
    import cupy as cp

    free, _ = cp.cuda.runtime.memGetInfo()
    per_user = 4 * n_latent + 5 * n_items
    return int(max(1, min(n_users, 65535, (fraction * free) // per_user)))


def recommend_sparse(X: sp.csr_matrix, Wt: sp.csr_matrix, Z: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of ``(X Wt) Z`` per row of X, own items excluded (see the CPU twin for the contract)."""
    import cupy as cp

    n_users, n_items = X.shape[0], Z.shape[1]
    n_latent = Wt.shape[1]
    ids = np.empty((n_users, k), dtype=np.int64)
    scores = np.empty((n_users, k), dtype=np.float32)
    if n_users == 0:
        return ids, scores
    kernel = get_kernel("score_topk.cu", "score_topk_dense<long long>")
    x = _to_device_csr(X)
    wt, z = _device_weights(Wt, Z)
    batch = batch_size_for(n_latent, n_items, n_users)
    h = cp.zeros(batch * n_latent, dtype=cp.float32)
    s = cp.zeros(batch * n_items, dtype=cp.float32)
    flag = cp.zeros(batch * n_items, dtype=cp.uint8)
    d_ids = cp.empty((batch, k), dtype=cp.int64)
    d_scores = cp.empty((batch, k), dtype=cp.float32)
    for start in range(0, n_users, batch):
        nb = min(batch, n_users - start)
        kernel(
            (nb,), (THREADS,),
            (*x, *wt, *z, np.int32(n_latent), np.int32(n_items), np.int32(k), np.int64(start), np.int32(nb),
             h, s, flag, d_ids, d_scores),
        )
        ids[start:start + nb] = cp.asnumpy(d_ids[:nb])
        scores[start:start + nb] = cp.asnumpy(d_scores[:nb])
    return ids, scores


def score_sparse(X: sp.csr_matrix, Wt: sp.csr_matrix, Z: sp.csr_matrix) -> sp.csr_matrix:
    """Raw scores ``(X Wt) Z`` as (users, items) CSR float32 on the host.

    A sparse score matrix is an inspection tool, not the serving path (that is the fused top-k
    above), and cuSPARSE SpGEMM through cupyx has open reports of silently wrong results and
    32-bit nnz overflow (DESIGN.md pitfalls): the product is formed by the CPU twin.
    """
    from ..cpu.inference import score_sparse as cpu_score_sparse

    return cpu_score_sparse(X, Wt, Z)
