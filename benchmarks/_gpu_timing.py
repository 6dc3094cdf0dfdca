"""GPU timing helpers for the benchmarks: wait for the device, and time sansa_gpu's raw kernels
inside an ordinary call of the public code.

:func:`time_kernels` wraps the ``get_kernel`` of the device seam (``sansa_gpu.gpu._device``;
every launch of a ``kernels/*.cu`` function goes through it) so that each launch is bracketed by
CUDA events. The code under test runs unchanged, so the kernel time comes from the same pass as
the wall time, and ``wall - kernel`` is what the pass spent on transfers, CuPy's own kernels and
host work::

    with time_kernels() as kt:
        model.recommend(X, k=20)
    kt.seconds, kt.launches, kt.by_kernel     # read after the block

On the test suite's CPU executor (``sansa_gpu._testing.cuda_executor``) launches are synchronous
and timed with the wall clock instead.
"""

from __future__ import annotations

import contextlib
import time


def on_cuda() -> bool:
    """True when sansa_gpu's GPU glue runs on CUDA (not on an installed test executor)."""
    from sansa_gpu.gpu import _device

    return _device.installed() is None


def synchronize() -> None:
    """Wait until the device has finished all queued work (no-op on the test executor)."""
    if on_cuda():
        import cupy

        cupy.cuda.Device().synchronize()


class KernelTimes:
    """Launch count and seconds of the kernels launched in a :func:`time_kernels` block."""

    def __init__(self):
        self.launches = 0
        self.by_kernel: dict[str, float] = {}  # expression -> seconds
        self._pending: list = []  # (expression, start event, end event) not yet read

    def add(self, expression: str, seconds: float) -> None:
        self.by_kernel[expression] = self.by_kernel.get(expression, 0.0) + seconds

    def collect(self) -> None:
        """Read the recorded CUDA events (waits for the last one)."""
        if not self._pending:
            return
        import cupy

        self._pending[-1][2].synchronize()
        for expression, e0, e1 in self._pending:
            self.add(expression, cupy.cuda.get_elapsed_time(e0, e1) / 1e3)
        self._pending.clear()

    @property
    def seconds(self) -> float:
        self.collect()
        return sum(self.by_kernel.values())


class _TimedKernel:
    def __init__(self, kernel, expression: str, times: KernelTimes, cuda: bool):
        self._kernel, self._expression, self._times, self._cuda = kernel, expression, times, cuda

    def __call__(self, grid, block, args, **kwargs):
        self._times.launches += 1
        if self._cuda:
            import cupy

            e0, e1 = cupy.cuda.Event(), cupy.cuda.Event()
            e0.record()
            out = self._kernel(grid, block, args, **kwargs)
            e1.record()
            self._times._pending.append((self._expression, e0, e1))
            return out
        t0 = time.perf_counter()
        out = self._kernel(grid, block, args, **kwargs)
        self._times.add(self._expression, time.perf_counter() - t0)
        return out

    def __getattr__(self, name):  # attributes of the real kernel (max_threads_per_block, ...)
        return getattr(self._kernel, name)


@contextlib.contextmanager
def time_kernels():
    """Time every raw-kernel launch made through ``sansa_gpu.gpu._device.current().get_kernel``
    inside the block; yields a :class:`KernelTimes` (complete after the block)."""
    from sansa_gpu.gpu import _device

    dev = _device.current()
    times = KernelTimes()
    cuda = on_cuda()
    had_own = "get_kernel" in vars(dev)
    original = dev.get_kernel

    def get_kernel(file: str, expression: str):
        return _TimedKernel(original(file, expression), expression, times, cuda)

    dev.get_kernel = get_kernel
    try:
        yield times
    finally:
        if had_own:
            dev.get_kernel = original
        else:
            del dev.get_kernel
        times.collect()
