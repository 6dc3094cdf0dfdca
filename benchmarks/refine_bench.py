"""Refinement sweep: CPU twin (numba, all cores) vs GPU kernel, one JSON line per (input, backend).

Inputs: saved factors (benchmarks/save_factors.py) and/or a synthetic unit lower-triangular L of
n items with a fixed nnz per column (no factorisation needed, so it runs on the GPU machine).

    python benchmarks/refine_bench.py --factors devdata/gowalla_d0.002.npz --synthetic 1000000 --out $OUT/refine.jsonl
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numba
import numpy as np
import scipy.sparse as sp


def synthetic_unit_lower(n: int, per_col: int, seed: int = 0) -> sp.csc_matrix:
    """Unit lower-triangular CSC float32 with up to ``per_col`` off-diagonals per column, rows drawn
    below the diagonal with a bias towards nearby rows (banded-ish, like an ordered factor)."""
    rng = np.random.default_rng(seed)
    cols = np.repeat(np.arange(n, dtype=np.int64), per_col)
    span = np.maximum(1, n - 1 - cols)
    offs = 1 + np.minimum(span - 1, (rng.pareto(1.2, cols.size) * 50).astype(np.int64))
    rows = cols + offs
    ok = rows < n
    rows, cols = rows[ok], cols[ok]
    vals = (rng.standard_normal(rows.size) * 0.1).astype(np.float32)
    L = sp.csc_matrix((vals, (rows, cols)), shape=(n, n))
    L.sum_duplicates()
    L = (L + sp.identity(n, dtype=np.float32, format="csc")).tocsc()
    L.sort_indices()
    return L


def _median_time(fn, repeats: int):
    times = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--factors", nargs="*", default=[])
    ap.add_argument("--synthetic", nargs="*", type=int, default=[])
    ap.add_argument("--per-col", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cpu-repeats", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from sansa_gpu import cpu
    from sansa_gpu.backend import gpu_status
    from sansa_gpu.cpu.refine import initial_inverse

    inputs = []
    for path in args.factors:
        z = np.load(path)
        n = int(z["d"].shape[0])
        L = sp.csc_matrix((z["L_data"], z["L_indices"], z["L_indptr"]), shape=(n, n))
        inputs.append((path.split("/")[-1], L, int(z["budget"])))
    for n in args.synthetic:
        L = synthetic_unit_lower(n, args.per_col)
        inputs.append((f"synthetic_n{n}", L, int(L.nnz)))
    has_gpu, gpu_name = gpu_status()
    for name, L, budget in inputs:
        K0 = initial_inverse(L)
        base = {"what": "refine_sweep", "data": name, "n": int(L.shape[0]), "nnz_L": int(L.nnz), "budget": budget,
                "machine": platform.node(), "cpu_threads": numba.get_num_threads()}
        cpu.refine_sweep(L, K0, budget)  # warm numba
        t_cpu, (Kc, rc) = _median_time(lambda: cpu.refine_sweep(L, K0, budget), args.cpu_repeats)
        rec = {**base, "device": "cpu", "seconds": t_cpu, "loss_before": float(rc @ rc / rc.size)}
        lines = [rec]
        if has_gpu:
            import cupy as cp

            from sansa_gpu import gpu

            Ld, Kd = gpu.to_device(L), gpu.to_device(K0)
            gpu.refine_sweep(Ld, Kd, budget)  # compile + allocate scratch
            cp.cuda.Device().synchronize()

            def run():
                out = gpu.refine_sweep(Ld, Kd, budget)
                cp.cuda.Device().synchronize()
                return out

            t_gpu, (Kg, rg) = _median_time(run, args.repeats)
            Kg = gpu.to_host(Kg)
            same = bool(np.array_equal(Kg.indptr, Kc.indptr) and np.array_equal(Kg.indices, Kc.indices))
            lines.append({**base, "device": gpu_name, "seconds": t_gpu, "speedup_vs_cpu": t_cpu / t_gpu,
                          "same_pattern_as_cpu": same,
                          "max_rel_residual_diff": float(np.max(np.abs(rg - rc) / np.maximum(rc, 1e-12))),
                          "peak_gpu_bytes": int(cp.get_default_memory_pool().total_bytes())})
        for line in lines:
            s = json.dumps(line)
            print(s, flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(s + "\n")


if __name__ == "__main__":
    main()
