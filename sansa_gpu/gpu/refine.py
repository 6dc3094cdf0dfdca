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

THREADS = 128
SCRATCH_BYTES_PER_ROW = 2 * 8 + 4 * 4  # acc_r, acc_q (double); mark_r, mark_q, list_r, list_q (int)
SCRATCH_FRACTION = 0.3  # at most this share of the free device memory goes to the per-block scratch
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


class _Scratch:
    """Per-block dense scratch slices, allocated once per (device, n, grid) and reused across the
    sweeps of a fit; :func:`release_scratch` frees them when the fit is done."""

    _key = None
    _arrays: tuple = ()
    _holder = None  # the device holding them

    @classmethod
    def get(cls, n: int, max_grid: int | None = None):
        dev = _device.current()
        grid = int(max(1, min(n, 4 * dev.multiprocessor_count(), max_grid or n)))
        if cls._key != (id(dev), n, grid):
            cls.release()
            xp = dev.xp
            fitting = int(SCRATCH_FRACTION * dev.free_bytes()) // (SCRATCH_BYTES_PER_ROW * n)
            g = int(max(1, min(grid, fitting)))
            cls._arrays = (
                g,
                xp.zeros(g * n, dtype=xp.float64), xp.zeros(g * n, dtype=xp.float64),
                xp.zeros(g * n, dtype=xp.int32), xp.zeros(g * n, dtype=xp.int32),
                xp.empty(g * n, dtype=xp.int32), xp.empty(g * n, dtype=xp.int32),
            )
            cls._key, cls._holder = (id(dev), n, grid), dev
        return cls._arrays

    @classmethod
    def release(cls):
        dev = cls._holder
        cls._key, cls._arrays, cls._holder = None, (), None
        if dev is not None:
            dev.release_pool()


def release_scratch() -> None:
    """Free the refinement scratch held between sweeps (called at the end of a fit)."""
    _Scratch.release()


def _launch(L, K, cap, offsets, tol, update, rows, vals, counts, rr, col_begin=0, col_end=None, max_grid=None):
    n = L.shape[0]
    col_end = n if col_end is None else col_end
    grid, acc_r, acc_q, mark_r, mark_q, list_r, list_q = _Scratch.get(n, max_grid)
    # The kernel marks touched rows with the stamp j + 1, and a column is processed by the same block
    # in every sweep: stale stamps from the previous launch would hide rows from the touched lists
    # (found by the CPU executor: the second sweep's loss was 40x the CPU twin's). Clear them.
    mark_r.fill(0)
    mark_q.fill(0)
    kernel = _device.current().get_kernel("refine.cu", "refine_columns<long long>")
    offset_base = int(offsets[col_begin]) if update else 0
    kernel(
        (grid,), (THREADS,),
        (np.int64(n), L.indptr, L.indices, L.data, K.indptr, K.indices, K.data, cap, offsets, np.int64(offset_base),
         np.int64(col_begin), np.int64(col_end), np.float64(tol), np.int32(1 if update else 0),
         acc_r, acc_q, mark_r, mark_q, list_r, list_q, rows, vals, counts, rr),
    )


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
