"""Real peak device memory of a block of CuPy work (used by the GPU benchmarks).

CuPy's memory pool only says what it holds *now*: ``used_bytes()`` (held by live arrays) and
``total_bytes()`` (used plus cached free blocks). Read after a stage returns, neither is the
stage's peak. :func:`track_peak` installs a CuPy allocator that forwards every allocation to the
default pool's ``malloc`` and records the largest ``pool.used_bytes()`` seen right after each
one, which is the most memory the arrays alive at one time ever needed::

    with track_peak() as mem:
        run_stage()
    mem.peak_bytes          # max pool.used_bytes() during the block (absolute, includes start_bytes)
    mem.peak_above_start    # the part the block itself added

Memory outside the pool (the CUDA context, loaded modules, cuSPARSE/cuBLAS handles) is not
counted. The previous allocator is restored on exit, also when the block raises.

Also here: :func:`release_gpu_caches` empties sansa_gpu's device caches and the pool between
measurements. On the CPU executor of the test suite (``sansa_gpu._testing.cuda_executor``), where
there is no CuPy pool, track_peak yields a record with ``tracked=False`` and zero sizes.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

from _gpu_timing import on_cuda


@dataclass
class PeakMemory:
    """What :func:`track_peak` saw. All sizes in bytes, from the tracked pool."""

    start_bytes: int = 0  # pool.used_bytes() on entry
    peak_bytes: int = 0  # max pool.used_bytes() after any allocation in the block (>= start_bytes)
    end_bytes: int = 0  # pool.used_bytes() on exit
    reserved_bytes: int = 0  # pool.total_bytes() on exit (used + cached free blocks)
    allocations: int = 0  # number of allocations through the pool
    largest_allocation: int = 0  # bytes of the largest single allocation
    tracked: bool = True  # False on the test executor (no CuPy pool): every size above is 0

    @property
    def peak_above_start(self) -> int:
        return self.peak_bytes - self.start_bytes

    def as_record(self, prefix: str = "gpu_") -> dict:
        """Flat dict for a JSON line: ``{prefix}peak_bytes`` etc. plus ``{prefix}peak_above_start_bytes``."""
        rec = {f"{prefix}{k}": v for k, v in asdict(self).items()}
        rec[f"{prefix}peak_above_start_bytes"] = self.peak_above_start
        return rec


@contextlib.contextmanager
def track_peak(pool=None):
    """Record the peak of ``pool.used_bytes()`` (default: CuPy's default memory pool) over the
    block; yields a :class:`PeakMemory` filled in as the block runs (final on exit)."""
    if pool is None and not on_cuda():
        yield PeakMemory(tracked=False)
        return
    import cupy

    if pool is None:
        pool = cupy.get_default_memory_pool()
    rec = PeakMemory(start_bytes=int(pool.used_bytes()))
    rec.peak_bytes = rec.start_bytes

    def malloc(size):
        mem = pool.malloc(size)
        used = pool.used_bytes()
        rec.allocations += 1
        if size > rec.largest_allocation:
            rec.largest_allocation = int(size)
        if used > rec.peak_bytes:
            rec.peak_bytes = int(used)
        return mem

    previous = cupy.cuda.get_allocator()
    cupy.cuda.set_allocator(malloc)
    try:
        yield rec
    finally:
        cupy.cuda.set_allocator(previous)
        rec.end_bytes = int(pool.used_bytes())
        rec.reserved_bytes = int(pool.total_bytes())


def release_gpu_caches() -> None:
    """Free what sansa_gpu keeps on the device between calls (every model's scoring cache entries
    on the device, the refinement's scratch) and the pool's cached blocks, so that the next
    measurement starts from an empty pool. Tolerates those internals having moved."""
    from sansa_gpu.gpu import refine

    from sansa_gpu.scoring_cache import release_device_entries

    release_device_entries()  # every model's device weights and scoring scratch
    if hasattr(refine, "release_scratch"):
        refine.release_scratch()
    elif hasattr(refine, "_Scratch"):
        refine._Scratch.release()
    if on_cuda():
        import cupy

        cupy.get_default_memory_pool().free_all_blocks()
