"""The one dispatch point: which implementation (``sansa_gpu.cpu`` or ``sansa_gpu.gpu``) runs the
GPU-capable stages. Both modules expose the same functions with the same signatures."""

from __future__ import annotations

import functools
import logging
import warnings
from types import ModuleType

from .defaults import DEVICES
from .errors import GPUOutOfMemory  # noqa: F401  (re-exported: its historical home)

logger = logging.getLogger(__name__)

#: Whether the GPU path has passed its tests and compute-sanitizer on a real device. Until then
#: ``device="auto"`` chooses the CPU (and logs why), and ``device="gpu"`` runs the GPU path with a
#: one-time warning that it is verified on the CPU executor only (README.md, "Status").
GPU_VERIFIED_ON_DEVICE = False
_warned_unverified = False


def gpu_status() -> tuple[bool, str]:
    """(usable, reason): whether CuPy imports and a CUDA device answers (or the test suite has
    installed the CPU executor in its place)."""
    from .gpu import _device

    if _device.installed() is not None:
        return True, f"the CPU executor of the CUDA kernels ({_device.installed().name})"
    return _cuda_status()


@functools.lru_cache(maxsize=1)
def _cuda_status() -> tuple[bool, str]:
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install
        return False, f"CuPy is not importable ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return False, f"no CUDA device answers ({type(exc).__name__}: {exc})"
    if count < 1:
        return False, "CuPy found no CUDA device"
    try:
        name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # pragma: no cover - informational only
        name = "device 0"
    return True, f"CUDA device {name}"


def resolve_device(device: str) -> str:
    """Map the user's ``device`` ('auto' | 'cpu' | 'gpu') to 'cpu' or 'gpu'.

    'gpu' without a usable GPU raises RuntimeError naming the reason (and, while
    :data:`GPU_VERIFIED_ON_DEVICE` is False, warns once that the GPU path is verified on the CPU
    executor only); 'auto' picks the GPU only when one answers and the GPU path is verified on a
    device, and logs why it chose what it chose.
    """
    global _warned_unverified
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cpu":
        return "cpu"
    ok, reason = gpu_status()
    if device == "gpu":
        if not ok:
            raise RuntimeError(f"device='gpu' was requested but no GPU is usable: {reason}")
        if not GPU_VERIFIED_ON_DEVICE and not _warned_unverified:
            _warned_unverified = True
            warnings.warn("device='gpu': the GPU kernels are verified on the CPU executor only, not yet on a real "
                          "device (README.md, 'Status'); results are checked against the CPU path in the tests",
                          RuntimeWarning, stacklevel=3)
        return "gpu"
    if ok and not GPU_VERIFIED_ON_DEVICE:
        logger.info("device='auto': using the CPU; a GPU answers (%s) but the GPU path is not yet verified on a "
                    "device (pass device='gpu' to use it anyway)", reason)
        return "cpu"
    logger.info("device='auto': using the %s (%s)", "GPU" if ok else "CPU", reason)
    return "gpu" if ok else "cpu"


def backend_device(backend) -> str:
    """'gpu' for :mod:`sansa_gpu.gpu`, else 'cpu' (where a stage run by ``backend`` ran)."""
    return "gpu" if getattr(backend, "__name__", "").endswith(".gpu") else "cpu"


def get_backend(device: str) -> ModuleType:
    """The implementation module for a resolved device ('cpu' or 'gpu')."""
    if device == "gpu":
        from . import gpu

        return gpu
    if device == "cpu":
        from . import cpu

        return cpu
    raise ValueError(f"resolved device must be 'cpu' or 'gpu', got {device!r}")
