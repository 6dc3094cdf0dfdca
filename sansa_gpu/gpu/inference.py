"""Stage 5 on the GPU: fused scoring + masked top-k (kernels/score_topk.cu, one warp per user).

Same signatures and contract as ``sansa_gpu.cpu.inference``, and the same results bit for bit:
the kernel sums in the CPU twin's order with explicitly rounded operations (see the kernel's
header). Users are sent in blocks sized from free device memory; the weights stay on the device
between calls for the same model.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ._kernels import get_kernel

THREADS = 256
WARPS_PER_BLOCK = THREADS // 32
WARPS_PER_SM = 64  # resident warps per SM on sm_80 / sm_90 (2048 threads)


def _to_device_csr(M: sp.csr_matrix):
    import cupy as cp

    return (cp.asarray(M.indptr.astype(np.int64, copy=False)), cp.asarray(M.indices.astype(np.int32, copy=False)),
            cp.asarray(M.data.astype(np.float32, copy=False)))


_device_cache: dict = {}  # the last model's device state: key (Wt, Z), weights, max_blocks, scratch


def scratch_bytes_per_warp(n_latent: int, n_items: int) -> int:
    """Dense scratch of one warp: h (f64), hmark (u8), tlist (i32) per latent row; s (f32), flag (u8),
    rlist (i32) per item."""
    return 13 * n_latent + 9 * n_items


def launch_shape(n_latent: int, n_items: int, fraction: float = 0.25) -> tuple[int, int]:
    """(blocks, warps) of the largest persistent grid: every SM full, unless the scratch would take
    more than ``fraction`` of free memory."""
    import cupy as cp

    free, _ = cp.cuda.runtime.memGetInfo()
    sms = cp.cuda.Device().attributes["MultiProcessorCount"]
    per_block = WARPS_PER_BLOCK * scratch_bytes_per_warp(n_latent, n_items)
    blocks = int(max(1, min(sms * WARPS_PER_SM // WARPS_PER_BLOCK, (fraction * free) // per_block)))
    return blocks, blocks * WARPS_PER_BLOCK


def _device_state(Wt: sp.csr_matrix, Z: sp.csr_matrix):
    """Device copies of Wt, Z and Z's transpose (CSR of Z's columns, rows ascending) plus the
    kernel's zeroed per-warp scratch, for the last model used. Uploaded and allocated once per
    model: streaming blocks of users (recommend_batches) re-sends and re-zeroes nothing, since the
    kernel leaves its scratch zero. Returns (weights, max_blocks, scratch)."""
    import cupy as cp

    key = _device_cache.get("key")
    if key is None or key[0] is not Wt or key[1] is not Z:
        _device_cache.clear()  # free the previous model's buffers before allocating
        Zt = sp.csr_matrix(Z.T)
        Zt.sort_indices()
        weights = (_to_device_csr(Wt), _to_device_csr(Z), _to_device_csr(Zt))
        n_latent, n_items = Wt.shape[1], Z.shape[1]
        blocks, warps = launch_shape(n_latent, n_items)
        scratch = (cp.zeros(warps * n_latent, dtype=cp.float64), cp.zeros(warps * n_latent, dtype=cp.uint8),
                   cp.empty(warps * n_latent, dtype=cp.int32), cp.zeros(warps * n_items, dtype=cp.float32),
                   cp.zeros(warps * n_items, dtype=cp.uint8), cp.empty(warps * n_items, dtype=cp.int32))
        _device_cache.update(key=(Wt, Z), weights=weights, max_blocks=blocks, scratch=scratch)
    return _device_cache["weights"], _device_cache["max_blocks"], _device_cache["scratch"]


def users_per_block(X: sp.csr_matrix, k: int, fraction: float = 0.25) -> int:
    """Users per upload so that the block's rows of X and its results use at most ``fraction`` of
    free device memory (at least 1)."""
    import cupy as cp

    free, _ = cp.cuda.runtime.memGetInfo()
    n = X.shape[0]
    per_user = 8 + 8 * X.nnz / max(n, 1) + 12 * k
    return int(max(1, min(n, (fraction * free) // per_user)))


def recommend_sparse(X: sp.csr_matrix, Wt: sp.csr_matrix, Z: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of ``(X Wt) Z`` per row of X, own items excluded (see the CPU twin for the contract)."""
    import cupy as cp

    n_users, n_items = X.shape[0], Z.shape[1]
    n_latent = Wt.shape[1]
    ids = np.empty((n_users, k), dtype=np.int64)
    scores = np.empty((n_users, k), dtype=np.float32)
    if n_users == 0:
        return ids, scores
    kernel = get_kernel("score_topk.cu", "score_topk_warp<long long>")
    (wt, z, zt), max_blocks, scratch = _device_state(Wt, Z)
    blocks = min(max_blocks, -(-n_users // WARPS_PER_BLOCK))  # no more warps than users
    step = users_per_block(X, k)
    d_ids = cp.empty((min(step, n_users), k), dtype=cp.int64)
    d_scores = cp.empty((min(step, n_users), k), dtype=cp.float32)
    for start in range(0, n_users, step):
        block = X[start:start + step]
        nb = block.shape[0]
        x = _to_device_csr(block)
        kernel(
            (blocks,), (THREADS,),
            (*x, *wt, *z, *zt, np.int32(n_latent), np.int32(n_items), np.int32(k), np.int32(nb),
             *scratch, d_ids, d_scores),
        )
        d_ids[:nb].get(out=ids[start:start + nb])
        d_scores[:nb].get(out=scores[start:start + nb])
    return ids, scores


def score_sparse(X: sp.csr_matrix, Wt: sp.csr_matrix, Z: sp.csr_matrix) -> sp.csr_matrix:
    """Raw scores ``(X Wt) Z`` as (users, items) CSR float32 on the host.

    A sparse score matrix is an inspection tool, not the serving path (that is the fused top-k
    above), and cuSPARSE SpGEMM through cupyx has open reports of silently wrong results and
    32-bit nnz overflow (DESIGN.md pitfalls): the product is formed by the CPU twin.
    """
    from ..cpu.inference import score_sparse as cpu_score_sparse

    return cpu_score_sparse(X, Wt, Z)
