"""Warm the caches of the device run before anything is timed, one part per process.

numba compiles the CPU twins on first use (about 40 s in all on one core, written to numba's
on-disk cache) and CuPy compiles the raw kernels and its own element-wise kernels with NVRTC
(CuPy's on-disk kernel cache). benchmarks/gpu_check.sh runs the parts in parallel processes, so
that the tests and benchmarks after it neither pay nor time the compilation:

    python benchmarks/_warmup.py refine      # numba: CPU refinement sweep + residual norms
    python benchmarks/_warmup.py fit         # numba: popularity ordering, Gram, ICF, weights (tiny ICF fit)
    python benchmarks/_warmup.py recommend   # numba: CPU fused scoring + top-k
    python benchmarks/_warmup.py kernels     # GPU: every GPU stage once on tiny inputs (no numba)
    python benchmarks/_warmup.py canary      # only under compute-sanitizer memcheck (see below)

The ``kernels`` part is also the kernel smoke test that gpu_check.sh runs under compute-sanitizer
memcheck after the benchmarks: it drives kernels/refine.cu (sweep and residual pass), the CuPy weight assembly and
kernels/score_topk.cu (k below and above the catalogue size, users without items) on tiny
inputs, independently of the test suite. With SANSA_GPU_NO_POOL=1 it disables CuPy's memory
pools first, so that pooled blocks cannot hide an overrun. With SANSA_GPU_EXECUTOR=1 it runs on the
CPU executor of the kernels instead (gpu_check.sh --dry-run).

The ``canary`` part proves that compute-sanitizer's kernel-name filter reaches kernels compiled by
NVRTC at run time (the sanitizer passes check only our kernels): a kernel named
``_device_info.CANARY_KERNEL`` writes one float just past the end of a 1 MiB allocation. Run under
``compute-sanitizer --tool memcheck`` with the passes' filter, the sanitizer must report an invalid
global write in it; if it does not, the filter matched nothing and gpu_check.sh drops it. Never run
it without the sanitizer (the write lands in the allocation's padding, but it is still out of bounds).

Each part prints one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))


def part_refine() -> dict:
    from refine_bench import synthetic_unit_lower

    from sansa_gpu import cpu
    from sansa_gpu.cpu.refine import initial_inverse

    L = synthetic_unit_lower(300, 5)
    K, _ = cpu.refine_sweep(L, initial_inverse(L), int(L.nnz))
    cpu.column_residual_norms(L, K)
    return {}


def part_fit() -> dict:
    from sansa_gpu import SANSA
    from sansa_gpu.synthetic import synthetic_interactions

    X = synthetic_interactions(n_users=600, n_items=120, mean_items_per_user=8, n_communities=4, seed=0)
    SANSA(l2=20.0, density=0.05, factorizer="icf", refine_sweeps=0, device="cpu").fit(X, check_memory=False)
    return {}


def part_recommend() -> dict:
    from sansa_gpu import cpu

    rng = np.random.default_rng(0)
    Wt = sp.random(120, 120, density=0.05, format="csr", random_state=rng, dtype=np.float32)
    Z = sp.random(120, 120, density=0.05, format="csr", random_state=rng, dtype=np.float32)
    X = sp.random(50, 120, density=0.05, format="csr", random_state=rng, dtype=np.float32)
    cpu.recommend_sparse(X, Wt, Z, 5)
    return {}


def part_kernels() -> dict:
    from _device_info import device_name, use_executor_from_env

    if use_executor_from_env() is None and os.environ.get("SANSA_GPU_NO_POOL") == "1":
        import cupy

        cupy.cuda.set_allocator(None)
        cupy.cuda.set_pinned_memory_allocator(None)
    from _gpu_timing import synchronize
    from refine_bench import synthetic_unit_lower

    from sansa_gpu import gpu
    from sansa_gpu.cpu.refine import initial_inverse
    from sansa_gpu.synthetic import synthetic_interactions

    n = 500
    L = synthetic_unit_lower(n, 6)
    budget = int(L.nnz)
    K1, res0 = gpu.refine_sweep(L, initial_inverse(L), budget)
    K2, res1 = gpu.refine_sweep(L, K1, budget)  # a second sweep starts from a device-resident K
    res2 = gpu.column_residual_norms(L, K2)
    K2 = gpu.to_host(K2)
    rng = np.random.default_rng(0)
    d = 20.0 + rng.gamma(2.0, 5.0, n)
    p = rng.permutation(n).astype(np.int64)
    Wt, Z = gpu.assemble_weights(K2, d, p)
    X = synthetic_interactions(n_users=300, n_items=n, mean_items_per_user=6, n_communities=4, seed=1)
    X = sp.vstack([X, sp.csr_matrix((2, n), dtype=np.float32)]).tocsr()  # two users without items
    out = {"device": device_name(), "nnz_K": int(K2.nnz), "loss": [float(r @ r / n) for r in (res0, res1, res2)]}
    for k in (1, 20, n + 7):  # k beyond the catalogue pads with -1 / -inf
        ids, scores = gpu.recommend_sparse(X, Wt, Z, k)
        assert ids.shape == (X.shape[0], k) and scores.shape == (X.shape[0], k)
        assert np.all(ids[-2:] == -1), "users without items must get only padding"
        out[f"valid_ids_k{k}"] = int((ids >= 0).sum())
    synchronize()
    return out


def part_canary() -> dict:
    import cupy
    from _device_info import CANARY_KERNEL

    from sansa_gpu.gpu._kernels import NVRTC_OPTIONS

    cupy.cuda.set_allocator(None)  # an exact cudaMalloc, so the sanitizer knows where it ends
    n = 1 << 18  # 1 MiB of float32
    a = cupy.zeros(n, dtype=cupy.float32)
    kernel = cupy.RawKernel(f'''extern "C" __global__ void {CANARY_KERNEL}(float* a, long long n) {{
        if (threadIdx.x == 0) a[n] = 1.0f;  // one past the end: memcheck must report it
    }}''', CANARY_KERNEL, options=NVRTC_OPTIONS)
    kernel((1,), (32,), (a, cupy.int64(n)))
    cupy.cuda.Device().synchronize()
    return {"note": "the out-of-bounds write was not stopped (expected only under compute-sanitizer memcheck)"}


PARTS = {"refine": part_refine, "fit": part_fit, "recommend": part_recommend, "kernels": part_kernels,
         "canary": part_canary}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] not in PARTS:
        print(__doc__, file=sys.stderr)
        print(f"usage: python benchmarks/_warmup.py {{{','.join(PARTS)}}}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    rec = {"what": "warmup", "part": argv[0]}
    try:
        rec.update(PARTS[argv[0]]())
        rec["ok"] = True
    except Exception as exc:
        traceback.print_exc()
        rec.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    rec["seconds"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(rec), flush=True)
    return 0 if rec["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
