"""Stage 5 on the GPU: fused scoring + masked top-k (kernels/score_topk.cu, one warp per user).

Same signatures and contract as ``sansa_gpu.cpu.inference``, and the same results bit for bit:
the kernel sums in the CPU twin's order with explicitly rounded operations (see the kernel's
header). Users are sent in blocks sized from free device memory. The weights and the kernel's
per-warp scratch stay on the device between calls, in the model's scoring cache
(:class:`~sansa_gpu.scoring_cache.ScoringCache`): ``SANSA.release_scoring_cache()`` frees them,
and so does dropping the model.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from . import _device
from ..candidates import check_blocked
from ..scoring_cache import ScoringCache, note_device_entries, release_device_entries
from ..cpu.inference import PLANS  # the same plan names on both twins (the CPU-only ones refused below)

logger = logging.getLogger(__name__)

THREADS = 256
WARPS_PER_BLOCK = THREADS // 32
SCRATCH_FRACTION = 0.25  # share of free device memory the per-warp scratch may take
USERS_FRACTION = 0.25  # share of free device memory one upload of users and results may take


def _to_device_csr(M: sp.csr_matrix):
    xp = _device.current().xp
    return (xp.asarray(M.indptr.astype(np.int64, copy=False)), xp.asarray(M.indices.astype(np.int32, copy=False)),
            xp.asarray(M.data.astype(np.float32, copy=False)))


def scratch_bytes_per_warp(n_latent: int, n_items: int) -> int:
    """Dense scratch of one warp: h (f64), hmark (u8), tlist (i32) per latent row; s (f32), flag (u8),
    list (u64: reached items, then their top-k keys) per item."""
    return 13 * n_latent + 13 * n_items


def launch_shape(n_latent: int, n_items: int, fraction: float = SCRATCH_FRACTION) -> tuple[int, int]:
    """(blocks, warps) of the largest persistent grid: the blocks the SMs hold at once by the kernel's
    real occupancy (registers and shared memory, from the CUDA occupancy calculator: 56 registers
    on sm_90 allow 4 blocks of 256 threads per SM, not the 8 a 2048-thread SM could take), one wave,
    unless the scratch would take more than ``fraction`` of free memory (then fewer blocks, never
    scratch that no resident warp uses)."""
    dev = _device.current()
    per_block = WARPS_PER_BLOCK * scratch_bytes_per_warp(n_latent, n_items)
    kernel = dev.get_kernel("score_topk.cu", "score_topk_warp<long long>")
    fitting = int(max(1, (fraction * dev.free_bytes()) // per_block))
    blocks = _device.launch_grid(kernel, THREADS, fitting, fitting)
    return blocks, blocks * WARPS_PER_BLOCK


def _device_state(Wt: sp.csr_matrix, Z: sp.csr_matrix, fraction: float, cache: ScoringCache):
    """Device copies of Wt and Z plus the kernel's zeroed per-warp scratch, kept in the model's
    ``cache`` (entries 'gpu_weights', 'gpu_scratch', kind 'device'): uploaded and allocated once
    per model and device, so streaming blocks of users (recommend_batches) re-sends and re-zeroes
    nothing (the kernel leaves its scratch zero). Call with ``cache.lock`` held: the scratch is
    written by every launch. Returns (weights, max_blocks, scratch)."""
    dev = _device.current()
    weights = cache.get("gpu_weights")
    if weights is None or weights[0] is not dev:
        cache.clear("device")  # another device's buffers (or none)
        weights = (dev, (_to_device_csr(Wt), _to_device_csr(Z)))
        cache.put("gpu_weights", weights, sum(int(a.nbytes) for m in weights[1] for a in m), kind="device")
        note_device_entries(cache)
    scratch = cache.get("gpu_scratch")
    if scratch is None or scratch[0] != fraction:
        cache.drop("gpu_scratch")  # free the old scratch before allocating the new one
        xp = dev.xp
        n_latent, n_items = Wt.shape[1], Z.shape[1]
        blocks, warps = launch_shape(n_latent, n_items, fraction)
        arrays = (xp.zeros(warps * n_latent, dtype=xp.float64), xp.zeros(warps * n_latent, dtype=xp.uint8),
                  xp.empty(warps * n_latent, dtype=xp.int32), xp.zeros(warps * n_items, dtype=xp.float32),
                  xp.zeros(warps * n_items, dtype=xp.uint8), xp.empty(warps * n_items, dtype=xp.uint64))
        scratch = (fraction, blocks, arrays)
        cache.put("gpu_scratch", scratch, sum(int(a.nbytes) for a in arrays), kind="device")
    return weights[1], scratch[1], scratch[2]


def users_per_block(X: sp.csr_matrix, k: int, fraction: float = USERS_FRACTION) -> int:
    """Users per upload so that the block's rows of X and its results use at most ``fraction`` of
    free device memory (at least 1)."""
    free = _device.current().free_bytes()
    n = X.shape[0]
    per_user = 8 + 8 * X.nnz / max(n, 1) + 12 * k
    return int(max(1, min(n, (fraction * free) // per_user)))


def _recommend(X, Wt, Z, k, fraction, cache, blocked, exclude_seen):
    dev = _device.current()
    xp = dev.xp
    n_users, n_items = X.shape[0], Z.shape[1]
    n_latent = Wt.shape[1]
    ids = np.empty((n_users, k), dtype=np.int64)
    scores = np.empty((n_users, k), dtype=np.float32)
    kernel = dev.get_kernel("score_topk.cu", "score_topk_warp<long long>")
    (wt, z), max_blocks, scratch = _device_state(Wt, Z, fraction, cache)
    blocks = min(max_blocks, -(-n_users // WARPS_PER_BLOCK))  # no more warps than users
    step = users_per_block(X, k, fraction)
    d_blocked = xp.asarray(blocked if blocked is not None and blocked.any() else np.zeros(1, np.uint8))
    has_blocked = np.int32(d_blocked.shape[0] == n_items)
    d_ids = xp.empty((min(step, n_users), k), dtype=xp.int64)
    d_scores = xp.empty((min(step, n_users), k), dtype=xp.float32)
    for start in range(0, n_users, step):
        block = X[start:start + step]
        nb = block.shape[0]
        x = _to_device_csr(block)
        kernel(
            (blocks,), (THREADS,),
            (*x, *wt, *z, d_blocked, has_blocked, np.int32(bool(exclude_seen)), np.int32(n_latent), np.int32(n_items),
             np.int32(k), np.int32(nb), *scratch, d_ids, d_scores),
        )
        d_ids[:nb].get(out=ids[start:start + nb])
        d_scores[:nb].get(out=scores[start:start + nb])
    return ids, scores


def recommend_sparse(X: sp.csr_matrix, Wt: sp.csr_matrix, Z: sp.csr_matrix, k: int, plan: str = "auto", *,
                     cache: ScoringCache | None = None, blocked: np.ndarray | None = None,
                     exclude_seen: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of ``(X Wt) Z`` per row of X (see the CPU twin for the contract and the arguments).
    X, Wt, Z: CSR in canonical format (distinct, sorted indices per row; ValueError otherwise).
    plan : 'auto' or 'factored' (the kernel's plan; the CPU twin's 'product' and 'sparse_product'
    plans are not built here: NotImplementedError). cache : the model's scoring cache, which keeps
    the device weights and scratch (None: uploaded for this call only). Calls on one model take
    turns on its scratch (its cache's lock); calls on different models run side by side.

    A device out-of-memory frees the other models' device entries and this one's, and retries with
    a quarter of the scratch and upload sizes; if that fails too, :class:`GPUOutOfMemory` is raised
    (the model then scores on the CPU with a warning).
    """
    if plan not in PLANS:
        raise ValueError(f"plan must be one of {PLANS}, got {plan!r}")
    if plan in ("product", "sparse_product"):
        raise NotImplementedError(f"the {plan} plan (B = Wt Z formed) runs on the CPU only; use plan='factored' on "
                                  f"the GPU")
    for name, M in (("X", X), ("Wt", Wt), ("Z", Z)):
        if not M.has_canonical_format:  # lanes split a row assuming its column indices are distinct
            raise ValueError(f"{name} has repeated or unsorted column indices in a row; call sum_duplicates() first")
    check_blocked(blocked, Z.shape[1])
    if X.shape[0] == 0:
        return np.empty((0, k), dtype=np.int64), np.empty((0, k), dtype=np.float32)
    cache = ScoringCache.or_for_call(cache)
    with cache.lock:
        scratch = cache.get("gpu_scratch")
        fraction = SCRATCH_FRACTION if scratch is None else scratch[0]  # after an out-of-memory: the sizes that worked
        try:
            return _recommend(X, Wt, Z, k, fraction, cache, blocked, exclude_seen)
        except Exception as exc:
            if not _device.is_out_of_memory(exc):
                raise
            logger.warning("recommend: GPU out of memory (%s); retrying with smaller scratch and uploads", exc)
        _release_device(cache, others=True)
        with _device.out_of_memory_as("scoring does not fit in GPU memory even with smaller blocks",
                                      lambda: _release_device(cache)):
            return _recommend(X, Wt, Z, k, SCRATCH_FRACTION / 4, cache, blocked, exclude_seen)


def _release_device(cache: ScoringCache, others: bool = False) -> None:
    """Free this cache's device entries (and, with ``others``, every other model's) and return the
    freed blocks to the driver."""
    cache.clear("device")
    if others:
        release_device_entries(keep=cache)
    _device.current().release_pool()


def score_sparse(X: sp.csr_matrix, Wt: sp.csr_matrix, Z: sp.csr_matrix) -> sp.csr_matrix:
    """Raw scores ``(X Wt) Z`` as (users, items) CSR float32 on the host.

    A sparse score matrix is an inspection tool, not the serving path (that is the fused top-k
    above), and cuSPARSE SpGEMM through cupyx has open reports of silently wrong results and
    32-bit nnz overflow: the product is formed by the CPU twin, and the
    model records this stage as CPU work (``SCORE_SPARSE_DEVICE``).
    """
    from ..cpu.inference import score_sparse as cpu_score_sparse

    return cpu_score_sparse(X, Wt, Z)


#: Where :func:`score_sparse` of this backend really runs.
SCORE_SPARSE_DEVICE = "cpu"
