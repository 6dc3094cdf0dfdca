"""Every CUDA kernel compiles with NVRTC for each supported architecture (no GPU needed), and the
GPU scoring path matches its CPU twin (on the CPU executor always, on a device when present)."""

import numpy as np
import pytest

from sansa_gpu.gpu._kernels import KERNELS, SUPPORTED_ARCHS, compile_check, kernel_dir



def test_every_kernel_file_is_registered():
    on_disk = {p.name for p in kernel_dir().glob("*.cu")}
    assert on_disk == set(KERNELS), "register each kernels/*.cu (and its template instantiations) in KERNELS"


@pytest.mark.parametrize("arch", SUPPORTED_ARCHS)
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_kernel_compiles(name, arch, cupy_module):
    cubin = compile_check(name, arch)
    assert len(cubin) > 1000


def test_compile_error_is_reported(tmp_path, monkeypatch, cupy_module):
    import sansa_gpu.gpu._kernels as kern

    monkeypatch.setitem(kern.KERNELS, "broken.cu", ())
    monkeypatch.setattr(kern, "kernel_source", lambda name: "__global__ void f() { int x = ; }")
    with pytest.raises(RuntimeError, match="failed to compile"):
        compile_check("broken.cu", "sm_80")


@pytest.mark.gpu
def test_gpu_recommend_matches_cpu(medium_X, gpu_device):
    from sansa_gpu import SANSA
    from sansa_gpu import cpu, gpu

    m = SANSA(l2=20.0, density=0.02, refine_sweeps=2, factorizer="icf", device="cpu").fit(medium_X)
    Wt, Z = m.weights_
    X = medium_X[:200]
    ids_c, sc_c = cpu.recommend_sparse(X, Wt, Z, 20, plan="factored")
    ids_g, sc_g = gpu.recommend_sparse(X, Wt, Z, 20)
    # the kernel sums in the CPU's order with explicitly rounded operations: identical, ties included
    np.testing.assert_array_equal(ids_g, ids_c)
    np.testing.assert_array_equal(sc_g, sc_c)


@pytest.mark.gpu
def test_gpu_recommend_padding(gpu_device):
    import scipy.sparse as sp
    from sansa_gpu import gpu

    Wt = sp.csr_matrix(np.eye(3, dtype=np.float32))
    Z = sp.csr_matrix(np.array([[0, 1, 0], [0, 0, 0], [0, 0, 0]], dtype=np.float32))
    X = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32))
    ids, scores = gpu.recommend_sparse(X, Wt, Z, 2)
    assert ids.tolist() == [[1, -1], [-1, -1]]
    assert np.isneginf(scores[0, 1]) and np.all(np.isneginf(scores[1]))
