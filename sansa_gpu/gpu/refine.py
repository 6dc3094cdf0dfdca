"""Stage 3 on the GPU: the column-parallel refinement sweep (kernels/refine.cu).

Same signatures and results as ``sansa_gpu.cpu.refine`` (selected entries equal up to ties,
values to rounding), with matrices held on the device as :class:`DeviceCompressed` between sweeps.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from ..backend import GPUOutOfMemory
from ..cpu.refine import DEFAULT_TOL, column_caps
from ..selection import array_module, largest_magnitude_mask
from ._arrays import DeviceCompressed
from ._kernels import get_kernel

logger = logging.getLogger(__name__)

THREADS = 128
SCRATCH_BYTES_PER_ROW = 2 * 8 + 4 * 4  # acc_r, acc_q (double); mark_r, mark_q, list_r, list_q (int)


def cut_candidates(offsets, counts, rows, vals, n: int, budget: int):
    """Global cut of one sweep's candidates to ``budget`` entries (NumPy or CuPy arrays).

    Column j's candidates are rows/vals[offsets[j] : offsets[j] + counts[j]] in any order. They
    are sorted by (column, row), then :func:`largest_magnitude_mask` keeps the diagonal plus the
    largest magnitudes, ties by (column, row) position, exactly as the CPU reference.
    Returns (indptr int64 (n+1,), indices int32, data float32) of the new CSC K.
    """
    xp = array_module(rows)
    slots = xp.arange(int(offsets[-1]), dtype=xp.int64)
    col = xp.searchsorted(offsets[1:], slots, side="right")
    valid = (slots - offsets[col]) < counts[col]
    col, r, v = col[valid], rows[valid], vals[valid]
    order = xp.lexsort(xp.stack([r.astype(xp.int64), col]))
    col, r, v = col[order], r[order], v[order]
    keep = largest_magnitude_mask(v, budget, r.astype(xp.int64) == col)
    indptr = xp.zeros(n + 1, dtype=xp.int64)
    xp.cumsum(xp.bincount(col[keep], minlength=n), out=indptr[1:])
    return indptr, r[keep].astype(xp.int32), v[keep].astype(xp.float32)


def to_device(M) -> DeviceCompressed:
    return M if isinstance(M, DeviceCompressed) else DeviceCompressed.from_host(M)


def to_host(M):
    return M.to_host() if isinstance(M, DeviceCompressed) else M


class _Scratch:
    """Per-block dense scratch slices, allocated once per (n, grid) and reused across sweeps."""

    _key = None
    _arrays: tuple = ()

    @classmethod
    def get(cls, n: int, max_grid: int | None = None):
        import cupy as cp

        sms = cp.cuda.Device().attributes["MultiProcessorCount"]
        grid = int(max(1, min(n, 4 * sms, max_grid or n)))
        if cls._key != (n, grid):
            cls.release()
            free, _ = cp.cuda.runtime.memGetInfo()
            grid = int(max(1, min(grid, int(0.3 * free) // (SCRATCH_BYTES_PER_ROW * n))))
            cls._arrays = (
                grid,
                cp.zeros(grid * n, dtype=cp.float64), cp.zeros(grid * n, dtype=cp.float64),
                cp.zeros(grid * n, dtype=cp.int32), cp.zeros(grid * n, dtype=cp.int32),
                cp.empty(grid * n, dtype=cp.int32), cp.empty(grid * n, dtype=cp.int32),
            )
            cls._key = (n, grid)
        return cls._arrays

    @classmethod
    def release(cls):
        import cupy as cp

        cls._key, cls._arrays = None, ()
        cp.get_default_memory_pool().free_all_blocks()


def _launch(L, K, cap, offsets, tol, update, rows, vals, counts, rr, col_begin=0, col_end=None, max_grid=None):
    n = L.shape[0]
    col_end = n if col_end is None else col_end
    grid, acc_r, acc_q, mark_r, mark_q, list_r, list_q = _Scratch.get(n, max_grid)
    kernel = get_kernel("refine.cu", "refine_columns<long long>")
    offset_base = int(offsets[col_begin]) if update else 0
    kernel(
        (grid,), (THREADS,),
        (np.int64(n), L.indptr, L.indices, L.data, K.indptr, K.indices, K.data, cap, offsets, np.int64(offset_base),
         np.int64(col_begin), np.int64(col_end), np.float64(tol), np.int32(1 if update else 0),
         acc_r, acc_q, mark_r, mark_q, list_r, list_q, rows, vals, counts, rr),
    )


def _sweep_full(L, K, budget, tol):
    import cupy as cp

    n = L.shape[0]
    cap = column_caps(K, budget)
    offsets = cp.zeros(n + 1, dtype=cp.int64)
    cp.cumsum(cap, out=offsets[1:])
    total = int(offsets[-1])
    rows = cp.empty(total, dtype=cp.int32)
    vals = cp.empty(total, dtype=cp.float32)
    counts = cp.zeros(n, dtype=cp.int64)
    rr = cp.empty(n, dtype=cp.float64)
    _launch(L, K, cap, offsets, tol, True, rows, vals, counts, rr)
    indptr, indices, data = cut_candidates(offsets, counts, rows, vals, n, budget)
    return DeviceCompressed(indptr, indices, data, (n, n), "csc"), cp.sqrt(rr).get()


def _sweep_chunked(L, K, budget, tol, n_chunks: int):
    """The same sweep with candidates produced ``n_chunks`` column ranges at a time (smaller
    candidate buffer and scratch grid), gathered on the host and cut there by the same rule."""
    import cupy as cp

    n = L.shape[0]
    cap = column_caps(K, budget)
    offsets = cp.zeros(n + 1, dtype=cp.int64)
    cp.cumsum(cap, out=offsets[1:])
    h_offsets = offsets.get()
    counts = cp.zeros(n, dtype=cp.int64)
    rr = cp.empty(n, dtype=cp.float64)
    rows_h = np.empty(int(h_offsets[-1]), dtype=np.int32)
    vals_h = np.empty(int(h_offsets[-1]), dtype=np.float32)
    bounds = np.searchsorted(h_offsets, np.linspace(0, h_offsets[-1], n_chunks + 1)[1:-1])
    edges = [0, *sorted(set(int(b) for b in bounds if 0 < b < n)), n]
    for c0, c1 in zip(edges[:-1], edges[1:]):
        size = int(h_offsets[c1] - h_offsets[c0])
        rows = cp.empty(size, dtype=cp.int32)
        vals = cp.empty(size, dtype=cp.float32)
        _launch(L, K, cap, offsets, tol, True, rows, vals, counts, rr, c0, c1, max_grid=64)
        rows_h[h_offsets[c0]:h_offsets[c1]] = rows.get()
        vals_h[h_offsets[c0]:h_offsets[c1]] = vals.get()
        del rows, vals
    indptr, indices, data = cut_candidates(h_offsets, counts.get(), rows_h, vals_h, n, budget)
    return DeviceCompressed.from_host(sp.csc_matrix((data, indices, indptr), shape=(n, n))), cp.sqrt(rr).get()


def refine_sweep(L, K, budget: int, tol: float = DEFAULT_TOL):
    """GPU twin of :func:`sansa_gpu.cpu.refine_sweep`; L, K on the device (or host, moved here).
    Returns (K_new DeviceCompressed CSC, residual norms of the input K as a host (n,) float64).

    A CUDA out-of-memory retries the sweep in column chunks; if that also runs out of memory,
    :class:`sansa_gpu.backend.GPUOutOfMemory` is raised (the refinement loop then continues on
    the CPU with a warning).
    """
    import cupy as cp

    L, K = to_device(L), to_device(K)
    try:
        return _sweep_full(L, K, budget, tol)
    except cp.cuda.memory.OutOfMemoryError as exc:
        logger.warning("refine: GPU out of memory for a full sweep (%s); retrying in column chunks", exc)
    _Scratch.release()
    try:
        return _sweep_chunked(L, K, budget, tol, n_chunks=16)
    except cp.cuda.memory.OutOfMemoryError as exc:
        _Scratch.release()
        raise GPUOutOfMemory(f"refinement sweep does not fit in GPU memory even in column chunks: {exc}") from exc


def column_residual_norms(L, K) -> np.ndarray:
    """GPU twin of :func:`sansa_gpu.cpu.column_residual_norms`; returns host (n,) float64."""
    import cupy as cp

    L, K = to_device(L), to_device(K)
    n = L.shape[0]
    rr = cp.empty(n, dtype=cp.float64)
    dummy_i = cp.empty(1, dtype=cp.int32)
    dummy_f = cp.empty(1, dtype=cp.float32)
    counts = cp.zeros(n, dtype=cp.int64)
    cap = cp.ones(n, dtype=cp.int64)
    offsets = cp.zeros(n + 1, dtype=cp.int64)
    try:
        _launch(L, K, cap, offsets, DEFAULT_TOL, False, dummy_i, dummy_f, counts, rr)
    except cp.cuda.memory.OutOfMemoryError as exc:
        _Scratch.release()
        raise GPUOutOfMemory(f"residual pass does not fit in GPU memory: {exc}") from exc
    return cp.sqrt(rr).get()
