import importlib
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from sansa_gpu.backend import _cuda_status
from sansa_gpu.synthetic import synthetic_interactions
from sansa_gpu.scoring_cache import release_device_entries

SHARED_DATA = Path(os.environ.get("SANSA_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")).resolve()


#: Where tests marked ``gpu`` run the GPU path: always on the CPU executor of the CUDA kernels
#: (checked build: bounds and race checks on every access), and on the real device when one answers.
#: SANSA_GPU_TEST_KINDS=cuda (the device script) runs them on the device only.
GPU_KINDS = ["executor"] + (["cuda"] if _cuda_status()[0] else [])
_REQUESTED_KINDS = [k for k in os.environ.get("SANSA_GPU_TEST_KINDS", "").split(",") if k]
if _REQUESTED_KINDS:
    _missing = [k for k in _REQUESTED_KINDS if k not in GPU_KINDS]
    if _missing:  # the device script must not pass with every GPU test skipped
        raise pytest.UsageError(f"SANSA_GPU_TEST_KINDS asks for {_missing}, not available here "
                                f"({_cuda_status()[1]})")
    GPU_KINDS = _REQUESTED_KINDS

if os.environ.get("SANSA_GPU_NO_POOL") == "1" and "cuda" in GPU_KINDS:
    # compute-sanitizer passes: no pooled blocks that could hide an overrun
    import cupy

    cupy.cuda.set_allocator(None)
    cupy.cuda.set_pinned_memory_allocator(None)


@pytest.fixture(params=GPU_KINDS)
def gpu_device(request):
    """The device the GPU glue runs on in this test: the CPU executor (checked build) or CUDA."""
    from sansa_gpu import gpu
    from sansa_gpu.gpu import _device

    if request.param == "cuda":
        dev = _device.current()
        yield dev
    else:
        from sansa_gpu._testing.cuda_executor import ExecutorDevice

        with ExecutorDevice(checked=True) as dev:
            yield dev
            gpu.release_scratch()
            release_device_entries()
            return
    gpu.release_scratch()
    release_device_entries()


def pytest_collection_modifyitems(config, items):
    has_data = SHARED_DATA.is_dir()
    for item in items:
        if "data" in item.keywords and not has_data:
            item.add_marker(pytest.mark.skip(reason=f"{SHARED_DATA} is absent"))


def require(name: str):
    """Import an optional test dependency. Without it the test using it is skipped -- except under
    CI=true, where a missing dependency means a broken set-up and fails the test."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return importlib.import_module(name)
    return pytest.importorskip(name, reason=f"{name} is not installed")


@pytest.fixture
def pd():
    return require("pandas")


@pytest.fixture
def cupy_module():
    return require("cupy")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return SHARED_DATA


@pytest.fixture(scope="session")
def small_X() -> sp.csr_matrix:
    """400 users x 80 items, binary, every item used."""
    return synthetic_interactions(n_users=400, n_items=80, mean_items_per_user=12, n_communities=4, seed=3)


@pytest.fixture(scope="session")
def medium_X() -> sp.csr_matrix:
    return synthetic_interactions(n_users=3000, n_items=600, mean_items_per_user=20, n_communities=10, seed=5)


def dense_ease_minus_identity(X: sp.csr_matrix, l2: float) -> np.ndarray:
    G = (X.T @ X).toarray().astype(np.float64) + l2 * np.eye(X.shape[1])
    P = np.linalg.inv(G)
    return -P / np.diag(P)[None, :]  # = B - I
