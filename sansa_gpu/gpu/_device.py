"""The one seam between the GPU glue (``sansa_gpu/gpu``) and CUDA.

Everything in ``sansa_gpu/gpu`` reaches the device through :func:`current`: its ``xp`` (the array
module: CuPy), ``get_kernel`` (a compiled ``kernels/*.cu`` function, called like a
``cupy.RawKernel``: ``kernel(grid, block, args)``), ``free_bytes``, ``multiprocessor_count`` and
``release_pool``. On a machine with a GPU that is :class:`CudaDevice`. The test suite installs the
CPU executor instead (:class:`sansa_gpu._testing.cuda_executor.ExecutorDevice`, with :func:`use`):
the same glue then runs the real kernel sources, compiled as host C++, on NumPy arrays that stand
in for CuPy arrays -- so CI, which has no GPU, executes every line of the GPU path.

Rules for code in ``sansa_gpu/gpu``: take the array module from ``current().xp`` (never import
cupy directly), launch through ``current().get_kernel``, and classify failures with
:func:`is_out_of_memory`.
"""

from __future__ import annotations

import contextlib
import functools

from ..errors import GPUOutOfMemory

_override = None  # a device installed by use() (the executor in tests), else None

#: CUDA status of an allocation failure: CUDA_ERROR_OUT_OF_MEMORY (driver) and
#: cudaErrorMemoryAllocation (runtime) are both 2.
_CUDA_OUT_OF_MEMORY = 2


class CudaDevice:
    """CuPy on CUDA device 0."""

    name = "cuda"

    def __init__(self):
        import cupy

        self.xp = cupy

    def free_bytes(self) -> int:
        """Device memory a new allocation can use: free in the driver plus what CuPy's pool holds
        unused (both can be handed out)."""
        free, _ = self.xp.cuda.runtime.memGetInfo()
        return int(free + self.xp.get_default_memory_pool().free_bytes())

    def multiprocessor_count(self) -> int:
        return int(self.xp.cuda.Device().attributes["MultiProcessorCount"])

    def get_kernel(self, file: str, expression: str):
        from ._kernels import get_kernel

        return get_kernel(file, expression)

    def resident_blocks_per_sm(self, kernel, block_threads: int) -> int:
        """Blocks of ``block_threads`` threads of ``kernel`` (a RawKernel) that one SM holds at once,
        from the CUDA occupancy calculator (registers, shared memory, the kernel's launch bounds)."""
        from cupy_backends.cuda.api import driver

        return int(driver.occupancyMaxActiveBlocksPerMultiprocessor(kernel.kernel.ptr, int(block_threads), 0))

    def release_pool(self) -> None:
        """Return CuPy's cached blocks to the driver (after dropping our references)."""
        self.xp.get_default_memory_pool().free_all_blocks()


@functools.lru_cache(maxsize=1)
def _cuda_device() -> CudaDevice:
    return CudaDevice()


def current():
    """The device the GPU glue runs on: the installed override (tests) or CuPy's CUDA device."""
    return _override if _override is not None else _cuda_device()


#: Blocks per SM assumed where the device cannot say (the CPU executor, which has no occupancy).
DEFAULT_RESIDENT_BLOCKS = 2


def launch_grid(kernel, block_threads: int, work_items: int, max_blocks: int | None = None) -> int:
    """Grid size for a persistent kernel: every block resident at once (the kernel's real occupancy
    times the SMs, one wave), no more blocks than ``work_items`` need, at most ``max_blocks``."""
    dev = current()
    per_sm = getattr(dev, "resident_blocks_per_sm", None)
    resident = per_sm(kernel, block_threads) if per_sm is not None else DEFAULT_RESIDENT_BLOCKS
    grid = max(1, int(resident)) * int(dev.multiprocessor_count())
    grid = min(grid, max(1, int(work_items)))
    if max_blocks is not None:
        grid = min(grid, max(1, int(max_blocks)))
    return int(grid)


def installed():
    """The device installed with :func:`use`, or None."""
    return _override


@contextlib.contextmanager
def use(device):
    """Run the GPU glue on ``device`` inside the block (the test suite's executor)."""
    global _override
    previous, _override = _override, device
    try:
        yield device
    finally:
        _override = previous


@contextlib.contextmanager
def out_of_memory_as(what: str, on_oom=None):
    """Inside the block, a device out-of-memory (:func:`is_out_of_memory`) becomes
    ``GPUOutOfMemory(f"{what}: {exc}")`` -- the error on which callers continue on the CPU -- after
    ``on_oom()`` (freeing what the stage holds). A GPUOutOfMemory from a nested stage passes as it
    is; other errors propagate unchanged."""
    try:
        yield
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        if on_oom is not None:
            on_oom()
        if isinstance(exc, GPUOutOfMemory):
            raise
        raise GPUOutOfMemory(f"{what}: {exc}") from exc


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` means the device ran out of memory: CuPy's ``OutOfMemoryError`` and the
    plain ``MemoryError`` Thrust raises (both MemoryError), or a driver / runtime error with the
    out-of-memory status (a launch or a library call that could not allocate)."""
    if isinstance(exc, MemoryError):
        return True
    return (type(exc).__name__ in ("CUDADriverError", "CUDARuntimeError")
            and getattr(exc, "status", None) == _CUDA_OUT_OF_MEMORY)
