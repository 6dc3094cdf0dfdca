"""The CPU executor of the CUDA kernels (sansa_gpu/_testing): CUDA semantics, misuse reported as
errors, and the bounds / race checks proved able to fail on injected defects in the real kernels."""

import numpy as np
import pytest

from sansa_gpu import gpu
from sansa_gpu.cpu.refine import initial_inverse
from sansa_gpu.factorize import ldlt_icf, nnz_budget
from sansa_gpu.gpu._kernels import kernel_source
from sansa_gpu._testing import cuda_executor as ce
from sansa_gpu._testing.cuda_executor import ExecutorDevice, ExecutorModule, KernelFault, xp

WARP_OPS = r"""
__global__ void warp_ops(const int* in, int* down, int* xr, int* idx, unsigned int* ballot, double* dsum,
                         unsigned long long* cnt, int* amin, float* fexch) {
    const int t = threadIdx.x + blockIdx.x * blockDim.x;
    const int v = in[t];
    down[t] = __shfl_down_sync(0xffffffffu, v, 3);
    xr[t] = __shfl_xor_sync(0xffffffffu, v, 5);
    idx[t] = __shfl_sync(0xffffffffu, v, 7, 16);
    ballot[t] = __ballot_sync(0xffffffffu, v % 3 == 0);
    double s = (double)v;
    for (int off = 16; off > 0; off >>= 1) s += __shfl_down_sync(0xffffffffu, s, off);
    if ((threadIdx.x & 31) == 0) atomicAdd(dsum, s);
    atomicAdd(cnt, 1ull);
    atomicMin(amin, v);
    if (t == 5) atomicExch(fexch, 2.5f);
}
"""

MISUSE = r"""
__global__ void divergent_barrier(int* out) {
    if (threadIdx.x < 32) __syncthreads();
    out[threadIdx.x] = 1;
}
__global__ void early_exit(int* out) {
    if (threadIdx.x == 40) return;
    __syncthreads();
    out[threadIdx.x] = 1;
}
__global__ void half_warp_shuffle(int* out) {
    int v = threadIdx.x;
    if ((threadIdx.x & 31) < 16) v = __shfl_down_sync(0xffffffffu, v, 1);
    out[threadIdx.x] = v;
}
__global__ void takes_int(int* out, const int n) {
    if (threadIdx.x < n) out[threadIdx.x] = n;
}
"""


def _module(source, *names, checked=True):
    return ExecutorModule("test_kernels.cu", checked, source=source, expressions=names)


@pytest.mark.parametrize("checked", [False, True])
def test_warp_collectives_and_atomics_behave_as_in_cuda(checked):
    k = _module(WARP_OPS, "warp_ops", checked=checked).get_function("warp_ops")
    n = 128
    v = np.random.default_rng(0).integers(-100, 100, n).astype(np.int32)
    outs = [xp.zeros(n, dtype=np.int32) for _ in range(3)] + [xp.zeros(n, dtype=np.uint32)]
    dsum, cnt = xp.zeros(1, dtype=np.float64), xp.zeros(1, dtype=np.uint64)
    amin, fexch = xp.full(1, 1000, dtype=np.int32), xp.zeros(1, dtype=np.float32)
    k((2,), (64,), (xp.asarray(v), *outs, dsum, cnt, amin, fexch))
    outs = [o.get() for o in outs]
    lane = np.arange(n) % 32
    base = np.arange(n) - lane
    np.testing.assert_array_equal(outs[0], np.where(lane + 3 < 32, v[np.minimum(np.arange(n) + 3, n - 1)], v))
    np.testing.assert_array_equal(outs[1], v[base + (lane ^ 5)])
    np.testing.assert_array_equal(outs[2], v[base + (lane // 16) * 16 + 7])
    bits = [sum(1 << i for i in range(32) if v[w * 32 + i] % 3 == 0) for w in range(n // 32)]
    np.testing.assert_array_equal(outs[3], np.repeat(bits, 32).astype(np.uint32))
    assert dsum[0] == v.sum() and cnt[0] == n and amin[0] == v.min() and fexch[0] == 2.5


@pytest.mark.parametrize("kernel, pattern", [
    ("divergent_barrier", "__syncthreads\\(\\) is not reached by every thread"),
    ("early_exit", "thread 40 exited"),
    ("half_warp_shuffle", "not reached by every lane"),
])
def test_misuse_is_an_error_naming_kernel_block_and_threads(kernel, pattern):
    k = _module(MISUSE, "divergent_barrier", "early_exit", "half_warp_shuffle", "takes_int").get_function(kernel)
    out = xp.zeros(64, dtype=np.int32)
    with pytest.raises(KernelFault, match=pattern) as info:
        k((1,), (64,), (out,))
    assert f"kernel {kernel}, block (0,0,0)" in str(info.value)


def test_launch_arguments_are_checked_against_the_c_signature():
    k = _module(MISUSE, "divergent_barrier", "early_exit", "half_warp_shuffle", "takes_int").get_function("takes_int")
    out = xp.zeros(32, dtype=np.int32)
    k((1,), (32,), (out, np.int32(5)))
    assert out[:5].tolist() == [5] * 5 and out[5:].sum() == 0
    with pytest.raises(TypeError, match="takes 2 arguments, 1 given"):
        k((1,), (32,), (out,))
    with pytest.raises(TypeError, match=r"'n' \(int\): CuPy passes 5 as int64 \(8 bytes\)"):
        k((1,), (32,), (out, 5))  # a Python int is an int64 on a real launch
    with pytest.raises(TypeError, match="float64"):
        k((1,), (32,), (out, np.float64(5)))
    with pytest.raises(TypeError, match="reinterpret its bytes as int"):
        k((1,), (32,), (xp.zeros(32, dtype=np.int64), np.int32(5)))
    with pytest.raises(TypeError, match="needs a device array"):
        k((1,), (32,), (np.zeros(32, dtype=np.int32), np.int32(5)))  # a host array
    with pytest.raises(TypeError, match="not C-contiguous"):
        k((1,), (32,), (xp.zeros(64, dtype=np.int32)[::2], np.int32(5)))
    with pytest.raises(ValueError, match="more than 1024 threads"):
        k((1,), (64, 32), (out, np.int32(5)))


def test_device_arrays_refuse_host_arrays_like_cupy():
    a = xp.arange(4)
    with pytest.raises(TypeError, match="host NumPy array"):
        a + np.arange(4)
    with pytest.raises(TypeError, match="host NumPy array"):
        xp.searchsorted(np.arange(4), a)
    assert isinstance(a.get(), np.ndarray) and not isinstance(a.get(), ce.DeviceArray)


@pytest.fixture(scope="module")
def small_factor():
    from sansa_gpu.synthetic import synthetic_interactions

    X = synthetic_interactions(n_users=600, n_items=120, mean_items_per_user=20, n_communities=4, seed=5)
    budget = nnz_budget(0.05, 120)
    f = ldlt_icf(X, 20.0, budget, 0.0, "popularity")
    return f.L, initial_inverse(f.L), budget


def _sweep_with_source(source, small_factor, checked):
    L, K0, budget = small_factor
    kernel = ExecutorModule("refine.cu", checked, source=source).get_function("refine_columns<long long>")

    class Device(ExecutorDevice):
        def get_kernel(self, file, expression):
            return ce._DeviceKernel(kernel, self)

    with Device(checked=checked):
        try:
            return gpu.to_host(gpu.refine_sweep(L, K0, budget)[0])
        finally:
            gpu.release_scratch()


def test_race_check_reports_a_removed_syncthreads(small_factor):
    src = kernel_source("refine.cu")
    # the __syncwarp closing each step of a sparse product: a row in two consecutive L columns is
    # then added to by two lanes with nothing ordering them (a ballot does not order memory)
    marker = "    if (fresh) list[pos] = slot;\n    __syncwarp();"
    broken = src.replace(marker, "    if (fresh) list[pos] = slot;", 1)
    assert broken != src
    _sweep_with_source(src, small_factor, checked=True)  # the real kernel is clean
    with pytest.raises(KernelFault, match=r"data race .*vals_r_all.*refine\.cu:\d+"):
        _sweep_with_source(broken, small_factor, checked=True)


def test_bounds_check_reports_an_index_off_by_one(small_factor):
    src = kernel_source("refine.cu")
    # the bound loop reads one entry past k_j: past the end of K_indices for the last column
    broken = src.replace("for (Offset p = kb + lane; p < ke; p += 32) {", "for (Offset p = kb + lane; p <= ke; p += 32) {", 1)
    assert broken != src
    with pytest.raises(KernelFault, match=r"out-of-bounds read .* past the end of argument #5 'K_indices'.*refine\.cu:\d+"):
        _sweep_with_source(broken, small_factor, checked=True)


@pytest.mark.parametrize("schedule", ["reverse", "random"])
def test_refine_does_not_depend_on_the_thread_schedule(small_factor, schedule):
    L, K0, budget = small_factor
    with ExecutorDevice(checked=True):
        ref = gpu.to_host(gpu.refine_sweep(L, K0, budget)[0])
        gpu.release_scratch()
    with ExecutorDevice(checked=True, schedule=schedule, seed=3):
        other = gpu.to_host(gpu.refine_sweep(L, K0, budget)[0])
        gpu.release_scratch()
    # fixed summation order: the same bits under every schedule
    np.testing.assert_array_equal(other.indptr, ref.indptr)
    np.testing.assert_array_equal(other.indices, ref.indices)
    np.testing.assert_array_equal(other.data, ref.data)


@pytest.mark.parametrize("schedule", ["reverse", "random"])
def test_scoring_does_not_depend_on_the_thread_schedule(medium_X, schedule):
    from sansa_gpu import SANSA, cpu

    m = SANSA(l2=20.0, density=0.01, refine_sweeps=1, factorizer="icf", device="cpu").fit(medium_X)
    ic, sc = cpu.recommend_sparse(medium_X[:60], *m.weights_, 15, plan="factored")
    with ExecutorDevice(checked=True, schedule=schedule, seed=7):
        ig, sg = gpu.recommend_sparse(medium_X[:60], *m.weights_, 15)
    np.testing.assert_array_equal(ig, ic)
    np.testing.assert_array_equal(sg, sc)


CHECKS = r"""
__global__ void atomics_then_plain_read(int* c, int* out) {
    if (threadIdx.x < 2) atomicAdd(c, 1);
    if (threadIdx.x == 1) out[0] = c[0];  // lane 0's atomic is not ordered before this read
}
__global__ void far_store(float* a, const float* b, const long long off) {
    if (threadIdx.x == 0) a[off] = 1.0f;
}
__global__ void shuffles_use_low_five_bits(int* out) {
    out[threadIdx.x] = __shfl_down_sync(0xffffffffu, (int)threadIdx.x, 33u);
}
__global__ void scale_in_place(const float* in, float* out, const int n) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = 2.0f * in[i];
}
"""
CHECK_NAMES = ("atomics_then_plain_read", "far_store", "shuffles_use_low_five_bits", "scale_in_place")


def test_race_with_an_earlier_atomic_of_another_thread_is_reported():
    k = _module(CHECKS, *CHECK_NAMES).get_function("atomics_then_plain_read")
    with pytest.raises(KernelFault, match="data race.*argument #0 'c'.*read by thread 1.*atomic write by thread 0"):
        k((1,), (32,), (xp.zeros(1, dtype=np.int32), xp.zeros(1, dtype=np.int32)))


@pytest.mark.parametrize("off", [1000, 100_000, -3])
def test_far_out_of_bounds_store_never_lands_in_another_argument(off):
    k = _module(CHECKS, *CHECK_NAMES).get_function("far_store")
    a, b = xp.zeros(1000, dtype=np.float32), xp.zeros(100_000, dtype=np.float32)
    with pytest.raises(KernelFault, match="out-of-bounds write of 4 bytes"):
        k((1,), (32,), (a, b, np.int64(off)))
    assert a.get().sum() == 0 and b.get().sum() == 0


def test_shuffle_offsets_use_their_low_five_bits_as_on_the_device():
    k = _module(CHECKS, *CHECK_NAMES, checked=False).get_function("shuffles_use_low_five_bits")
    out = xp.zeros(64, dtype=np.int32)
    k((1,), (64,), (out,))
    lane = np.arange(64) % 32
    np.testing.assert_array_equal(out.get(), np.where(lane < 31, np.arange(64) + 1, np.arange(64)))


def test_the_same_array_passed_twice_is_one_buffer_in_the_checked_build():
    k = _module(CHECKS, *CHECK_NAMES).get_function("scale_in_place")
    a = xp.arange(100, dtype=np.float32)
    k((1,), (32,), (a, a, np.int32(100)))
    np.testing.assert_array_equal(a.get(), 2 * np.arange(100, dtype=np.float32))
