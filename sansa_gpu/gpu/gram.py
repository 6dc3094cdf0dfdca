"""Stage 1 on the GPU: the lower Gram and its column norms in one pass (``kernels/gram.cu``).

Twin of :func:`sansa_gpu.cpu.gram.gram_lower_and_norms`: same signature, same result bit for bit
(see the kernel's header). The columns are built in the same blocks, planned from exact bounds of
what a column can keep, so the device buffer of a block never overflows; each block's kept entries
come back to the host, where they are sorted by row and, with ``max_per_column``, cut by the CPU's
rule (that selection is O(kept) host work beside the device's O(sum |u|^2) pair work).
"""

from __future__ import annotations

import logging

import numba
import numpy as np
import scipy.sparse as sp

from ..cpu.gram import BLOCK_SLOTS, assemble_columns, cap_rows, column_bounds, gram_inputs, plan_blocks, prune_threshold
from . import _device

logger = logging.getLogger(__name__)

THREADS = 128  # 4 warps per block, one column per warp at a time
SCRATCH_BYTES_PER_ROW = 8 + 4 + 4  # acc (double), mark, list (int) per warp and row
SCRATCH_FRACTION = 0.3  # at most this share of the free device memory goes to the per-warp scratch


@numba.njit(cache=True, nogil=True)
def _sort_and_cap(b0, count, rows, vals, max_keep, val_of_row, out_count, out_rows, out_vals):
    """Per column (in block order): at most ``max_keep`` off-diagonal entries kept by the CPU kernel's
    rule (:func:`~sansa_gpu.cpu.gram.cap_rows`; max_keep < 0: all), then sorted by row.
    ``val_of_row``: (n,) float64 scratch."""
    pos_in = 0
    pos_out = 0
    for c in range(count.shape[0]):
        j = b0 + c
        m = count[c]
        seg = rows[pos_in:pos_in + m].copy()
        for a in range(m):
            val_of_row[seg[a]] = vals[pos_in + a]
        if max_keep >= 0:
            m = cap_rows(seg, m, j, val_of_row, max_keep)
        kept = np.sort(seg[:m])
        for a in range(m):
            out_rows[pos_out + a] = kept[a]
            out_vals[pos_out + a] = val_of_row[kept[a]]
        out_count[c] = m
        pos_out += m
        pos_in += count[c]
    return pos_out


def gram_lower_and_norms(X: sp.csr_matrix, perm: np.ndarray | None = None, min_cooccurrence: float = 0.0,
                         prune_scale: np.ndarray | None = None, max_per_column: int | None = None,
                         block_slots: int = BLOCK_SLOTS) -> tuple[sp.csc_matrix, np.ndarray]:
    """GPU twin of :func:`sansa_gpu.cpu.gram.gram_lower_and_norms` (host in, host out). A device
    out-of-memory raises :class:`~sansa_gpu.errors.GPUOutOfMemory` (the caller builds the Gram on the
    CPU instead)."""
    what = f"the Gram of a {X.shape[0]} x {X.shape[1]} matrix with {X.nnz} interactions does not fit in GPU memory"
    with _device.out_of_memory_as(what):
        return _gram(X, perm, min_cooccurrence, prune_scale, max_per_column, block_slots)


def _gram(X, perm, min_cooccurrence, prune_scale, max_per_column, block_slots):
    dev = _device.current()
    xp = dev.xp
    n = X.shape[1]
    Xc, perm, inv_perm, scale = gram_inputs(X, perm, prune_scale)
    bounds = column_bounds(X, perm, None)  # the cap is applied after the kernel: bound what it writes
    kernel = dev.get_kernel("gram.cu", "gram_columns<long long>")
    warps_per_block = THREADS // 32
    fitting_warps = int(SCRATCH_FRACTION * dev.free_bytes()) // (SCRATCH_BYTES_PER_ROW * max(1, n))
    if fitting_warps < warps_per_block:
        raise MemoryError(f"out of memory: one block's Gram scratch ({warps_per_block * SCRATCH_BYTES_PER_ROW * n} "
                          f"bytes) does not fit")
    grid = _device.launch_grid(kernel, THREADS, -(-n // warps_per_block), fitting_warps // warps_per_block)
    n_warps = grid * warps_per_block
    d = dict(
        Xc_indptr=xp.asarray(Xc.indptr.astype(np.int64)), Xc_indices=xp.asarray(Xc.indices.astype(np.int32)),
        Xc_data=xp.asarray(Xc.data.astype(np.float32)), Xr_indptr=xp.asarray(X.indptr.astype(np.int64)),
        Xr_indices=xp.asarray(X.indices.astype(np.int32)), Xr_data=xp.asarray(X.data.astype(np.float32)),
        perm=xp.asarray(perm), inv_perm=xp.asarray(inv_perm), scale=xp.asarray(scale))
    acc = xp.zeros(n_warps * n, dtype=xp.float64)
    mark = xp.zeros(n_warps * n, dtype=xp.int32)
    lists = xp.empty(n_warps * n, dtype=xp.int32)
    sq_norms = xp.zeros(n, dtype=xp.float64)
    threshold = np.float64(prune_threshold(min_cooccurrence, prune_scale))
    max_keep = -1 if max_per_column is None else int(max_per_column)
    pieces = []
    val_of_row = np.zeros(n, dtype=np.float64)
    for b0, b1 in plan_blocks(bounds, block_slots):
        slot_start = np.zeros(b1 - b0 + 1, dtype=np.int64)
        np.cumsum(bounds[b0:b1], out=slot_start[1:])
        total = int(slot_start[-1])
        rows = xp.empty(max(1, total), dtype=xp.int32)
        vals = xp.empty(max(1, total), dtype=xp.float64)
        count = xp.zeros(b1 - b0, dtype=xp.int64)
        kernel((grid,), (THREADS,), (
            np.int64(n), np.int64(b0), np.int64(b1), d["Xc_indptr"], d["Xc_indices"], d["Xc_data"],
            d["Xr_indptr"], d["Xr_indices"], d["Xr_data"], d["perm"], d["inv_perm"], threshold, d["scale"],
            xp.asarray(slot_start), acc, mark, lists, rows, vals, count, sq_norms))
        h_count = count.get()
        # compact on the device (only the used slots travel), then sort and cap on the host
        slot = xp.arange(total, dtype=xp.int64)
        d_start = xp.asarray(slot_start)
        col = xp.searchsorted(d_start[1:], slot, side="right")
        used = (slot - d_start[col]) < count[col]
        h_rows, h_vals = rows[:total][used].get(), vals[:total][used].get()
        del rows, vals, slot, col, used
        out_count = np.empty(b1 - b0, dtype=np.int64)
        out_rows = np.empty(h_rows.shape[0], dtype=np.int32)
        out_vals = np.empty(h_rows.shape[0], dtype=np.float64)
        kept = _sort_and_cap(b0, h_count, h_rows, h_vals, max_keep, val_of_row, out_count, out_rows, out_vals)
        # copies: views would keep the uncapped arrays alive until the end
        pieces.append((out_count, out_rows[:kept].copy(), out_vals[:kept].copy()))
        del out_rows, out_vals
    norms = sq_norms.get()
    del acc, mark, lists, d
    dev.release_pool()
    return assemble_columns(pieces, n), norms
