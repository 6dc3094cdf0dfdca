"""Stage 3 on the GPU: the column-parallel refinement sweep (kernels/refine.cu).

Same signatures and results as ``sansa_gpu.cpu.refine`` (selected entries equal up to ties,
values to rounding), with matrices held on the device as :class:`DeviceCompressed` between sweeps.
The device is reached through :mod:`sansa_gpu.gpu._device` (CuPy, or the CPU executor in tests).
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from ..cpu.refine import DEFAULT_TOL, column_caps
from ..selection import array_module, largest_magnitude_mask
from . import _device
from ._arrays import DeviceCompressed

logger = logging.getLogger(__name__)

THREADS = 128  # 4 warps per block (kernels/refine.cu: SANSA_REFINE_THREADS), one column per warp at a time
WARPS_PER_BLOCK = THREADS // 32
#: Per-warp scratch per table slot: the r and q hash tables (int key + double value each) and the
#: lists of their used slots (half a table each).
TABLE_BYTES_PER_SLOT = 2 * (4 + 8) + 4
TABLE_MIN_LOG2 = 10
SCRATCH_FRACTION = 0.3  # at most this share of the free device memory goes to the per-warp tables
CHUNKS = 16  # column ranges of the retry after an out-of-memory
CHUNK_MAX_GRID = 64


def cut_candidates(offsets, counts, rows, vals, n: int, budget: int):
    """Global cut of one sweep's candidates to ``budget`` entries (NumPy or CuPy arrays).

    Column j's candidates are rows/vals[offsets[j] : offsets[j] + counts[j]] in any order (rows
    distinct within a column). They are sorted by (column, row) -- one sort of the int64 key
    ``column * n + row`` (a single radix sort on the GPU) -- then :func:`largest_magnitude_mask`
    keeps the diagonal plus the largest magnitudes, ties by (column, row) position, exactly as the
    CPU reference. Returns (indptr int64 (n+1,), indices int32, data float32) of the new CSC K.
    """
    xp = array_module(rows)
    slots = xp.arange(int(offsets[-1]), dtype=xp.int64)
    col = xp.searchsorted(offsets[1:], slots, side="right")
    valid = (slots - offsets[col]) < counts[col]
    col, r, v = col[valid], rows[valid].astype(xp.int64), vals[valid]
    order = xp.argsort(col * n + r)
    col, r, v = col[order], r[order], v[order]
    keep = largest_magnitude_mask(v, budget, r == col)
    indptr = xp.zeros(n + 1, dtype=xp.int64)
    xp.cumsum(xp.bincount(col[keep], minlength=n), out=indptr[1:])
    return indptr, r[keep].astype(xp.int32), v[keep].astype(xp.float32)


def to_device(M) -> DeviceCompressed:
    """M on the device (a host CSC/CSR is uploaded); an out-of-memory raises GPUOutOfMemory."""
    if isinstance(M, DeviceCompressed):
        return M
    what = f"a {M.shape[0]} x {M.shape[1]} matrix with {M.nnz} nonzeros does not fit in GPU memory"
    with _device.out_of_memory_as(what):
        return DeviceCompressed.from_host(M)


def to_host(M):
    return M.to_host() if isinstance(M, DeviceCompressed) else M


def release_scratch() -> None:
    """Return the device memory the refinement used to the driver (called at the end of a fit). The
    per-warp tables live only as long as one launch: no scratch is held between calls, so two fits
    (or two threads) never share any."""
    _device.current().release_pool()


def _table_log2(need: int, n: int) -> int:
    """log2 of a hash table holding ``need`` keys at most half full: at least 2^TABLE_MIN_LOG2, and
    never more than needed to hold every row (2n slots)."""
    want = max(1 << TABLE_MIN_LOG2, 2 * int(need))
    return int(min(int(np.ceil(np.log2(want))), max(1, int(np.ceil(np.log2(2 * max(1, n)))))))


def _typical_need(L, K) -> int:
    """Keys the q table of an average column needs: (rows of r) x (mean length of an L column)."""
    n = L.shape[0]
    l_len = float(int(L.indptr[-1])) / n
    r_rows = 1.0 + float(int(K.indptr[-1])) / n * (1.0 + l_len)
    return int(np.ceil(r_rows * l_len))


def _launch(L, K, cap, offsets, tol, update, rows, vals, counts, rr, col_begin=0, col_end=None, max_grid=None):
    """Run the kernel on columns col_begin .. col_end - 1: per-warp tables sized for a typical column,
    then the columns that did not fit again with larger tables until none is left. ``counts`` (n,)
    int64 must be zero on entry for the residual-only launch (``update`` False)."""
    dev = _device.current()
    xp = dev.xp
    n = L.shape[0]
    col_end = n if col_end is None else col_end
    kernel = dev.get_kernel("refine.cu", "refine_columns<long long>")
    offset_base = int(offsets[col_begin]) if update else 0
    need = xp.zeros(n, dtype=xp.int64)
    todo = xp.arange(col_begin, col_end, dtype=xp.int64)
    log2 = _table_log2(_typical_need(L, K), n)
    while todo.shape[0]:
        per_warp = (1 << log2) * TABLE_BYTES_PER_SLOT
        fitting_blocks = int(SCRATCH_FRACTION * dev.free_bytes()) // (per_warp * WARPS_PER_BLOCK)
        if fitting_blocks < 1:
            raise MemoryError(f"out of memory: refinement tables of {per_warp * WARPS_PER_BLOCK} bytes per block "
                              "do not fit")
        limit = fitting_blocks if max_grid is None else min(fitting_blocks, max_grid)
        grid = _device.launch_grid(kernel, THREADS, -(-int(todo.shape[0]) // WARPS_PER_BLOCK), limit)
        slots = grid * WARPS_PER_BLOCK << log2
        keys_r = xp.full(slots, -1, dtype=xp.int32)
        keys_q = xp.full(slots, -1, dtype=xp.int32)
        vals_r = xp.empty(slots, dtype=xp.float64)
        vals_q = xp.empty(slots, dtype=xp.float64)
        list_r = xp.empty(slots // 2, dtype=xp.int32)
        list_q = xp.empty(slots // 2, dtype=xp.int32)
        kernel(
            (grid,), (THREADS,),
            (np.int64(n), L.indptr, L.indices, L.data, K.indptr, K.indices, K.data, todo, np.int64(todo.shape[0]),
             cap, offsets, np.int64(offset_base), np.float64(tol), np.int32(1 if update else 0), np.int32(log2),
             keys_r, vals_r, keys_q, vals_q, list_r, list_q, rows, vals, counts, rr, need),
        )
        del keys_r, keys_q, vals_r, vals_q, list_r, list_q
        over = todo[counts[todo] < 0]
        if over.shape[0] == 0:
            break
        counts[over] = 0
        log2 = max(log2 + 1, _table_log2(int(need[over].max()), n))
        logger.debug("refine: %d column(s) need larger tables (2^%d slots)", int(over.shape[0]), log2)
        todo = over


def _sweep_full(L, K, budget, tol):
    xp = _device.current().xp
    n = L.shape[0]
    cap = column_caps(K, budget)
    offsets = xp.zeros(n + 1, dtype=xp.int64)
    xp.cumsum(cap, out=offsets[1:])
    total = int(offsets[-1])
    rows = xp.empty(total, dtype=xp.int32)
    vals = xp.empty(total, dtype=xp.float32)
    counts = xp.zeros(n, dtype=xp.int64)
    rr = xp.empty(n, dtype=xp.float64)
    _launch(L, K, cap, offsets, tol, True, rows, vals, counts, rr)
    indptr, indices, data = cut_candidates(offsets, counts, rows, vals, n, budget)
    return DeviceCompressed(indptr, indices, data, (n, n), "csc"), xp.sqrt(rr).get()


def _sweep_chunked(L, K, budget, tol, n_chunks: int):
    """The same sweep with candidates produced ``n_chunks`` column ranges at a time (smaller
    candidate buffer and scratch grid), gathered on the host and cut there by the same rule."""
    xp = _device.current().xp
    n = L.shape[0]
    cap = column_caps(K, budget)
    offsets = xp.zeros(n + 1, dtype=xp.int64)
    xp.cumsum(cap, out=offsets[1:])
    h_offsets = offsets.get()
    counts = xp.zeros(n, dtype=xp.int64)
    rr = xp.empty(n, dtype=xp.float64)
    rows_h = np.empty(int(h_offsets[-1]), dtype=np.int32)
    vals_h = np.empty(int(h_offsets[-1]), dtype=np.float32)
    bounds = np.searchsorted(h_offsets, np.linspace(0, h_offsets[-1], n_chunks + 1)[1:-1])
    edges = [0, *sorted(set(int(b) for b in bounds if 0 < b < n)), n]
    for c0, c1 in zip(edges[:-1], edges[1:]):
        size = int(h_offsets[c1] - h_offsets[c0])
        rows = xp.empty(size, dtype=xp.int32)
        vals = xp.empty(size, dtype=xp.float32)
        _launch(L, K, cap, offsets, tol, True, rows, vals, counts, rr, c0, c1, max_grid=CHUNK_MAX_GRID)
        rows.get(out=rows_h[h_offsets[c0]:h_offsets[c1]])
        vals.get(out=vals_h[h_offsets[c0]:h_offsets[c1]])
        del rows, vals
    indptr, indices, data = cut_candidates(h_offsets, counts.get(), rows_h, vals_h, n, budget)
    return DeviceCompressed.from_host(sp.csc_matrix((data, indices, indptr), shape=(n, n))), xp.sqrt(rr).get()


def refine_sweep(L, K, budget: int, tol: float = DEFAULT_TOL):
    """GPU twin of :func:`sansa_gpu.cpu.refine_sweep`; L, K on the device (or host, moved here).
    Returns (K_new DeviceCompressed CSC, residual norms of the input K as a host (n,) float64).

    Any device out-of-memory (an allocation from the pool or from Thrust, or a launch the driver
    cannot fit) retries the sweep in column chunks; if that also runs out of memory,
    :class:`sansa_gpu.errors.GPUOutOfMemory` is raised (the refinement loop then continues on the
    CPU with a warning). Other errors propagate.
    """
    try:
        L, K = to_device(L), to_device(K)
        return _sweep_full(L, K, budget, tol)
    except Exception as exc:
        if not _device.is_out_of_memory(exc):
            raise
        logger.warning("refine: GPU out of memory for a full sweep (%s); retrying in column chunks", exc)
    release_scratch()
    with _device.out_of_memory_as("refinement sweep does not fit in GPU memory even in column chunks",
                                  release_scratch):
        L, K = to_device(L), to_device(K)
        return _sweep_chunked(L, K, budget, tol, n_chunks=CHUNKS)


def column_residual_norms(L, K) -> np.ndarray:
    """GPU twin of :func:`sansa_gpu.cpu.column_residual_norms`; returns host (n,) float64."""
    with _device.out_of_memory_as("residual pass does not fit in GPU memory", release_scratch):
        L, K = to_device(L), to_device(K)
        xp = _device.current().xp
        n = L.shape[0]
        rr = xp.empty(n, dtype=xp.float64)
        dummy_i = xp.empty(1, dtype=xp.int32)
        dummy_f = xp.empty(1, dtype=xp.float32)
        counts = xp.zeros(n, dtype=xp.int64)
        cap = xp.ones(n, dtype=xp.int64)
        offsets = xp.zeros(n + 1, dtype=xp.int64)
        _launch(L, K, cap, offsets, DEFAULT_TOL, False, dummy_i, dummy_f, counts, rr)
        return xp.sqrt(rr).get()
