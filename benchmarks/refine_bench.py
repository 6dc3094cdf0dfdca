"""One refinement sweep (stage 3, K0 = 2I - L -> K1): GPU kernel vs its CPU twin (numba, all cores).

Measures, per input factor L, one JSON line per backend:

- GPU (``kernels/refine.cu`` through ``sansa_gpu.gpu.refine_sweep``): seconds per sweep (median of
  ``--repeats`` after one warm-up sweep that compiles the kernel and allocates its scratch), the
  part of it spent in the raw kernel (CUDA events, ``benchmarks/_gpu_timing.time_kernels``; the
  rest is the CuPy candidate cut and host work), upload and download seconds, and the real peak
  device memory of upload + first sweep (``benchmarks/_gpu_memory.track_peak``: max of the pool's
  used bytes after every allocation).
  ``repeat_*``: whether the last timed sweep reproduced the first one (same K0 in, same K1 out; a
  difference means one sweep's leftover device state changed the next).
- CPU twin (``sansa_gpu.cpu.refine_sweep``): seconds per sweep (median of ``--cpu-repeats`` after a
  numba warm-up), and the equality with the GPU's first sweep: indices identical
  (``same_indices``), values equal to rounding (``max_abs_value_diff``, ``values_close``),
  residual norms of K0 (``max_rel_residual_diff``).
  Above ``--cpu-max-n`` items the CPU twin is skipped and its line says so.

``backend`` says which of the two a line measures; ``device`` names the GPU of the run on every line
(the CPU twin's line with ``gpu_speedup`` too; "cpu" in a CPU-only run). With ``SANSA_GPU_EXECUTOR=1``
the CPU executor of the kernels stands in for the GPU (gpu_check.sh --dry-run; no speed meaning).

The GPU line is written first, so a run killed during a slow CPU twin keeps the GPU numbers.

Inputs: saved factors (``benchmarks/save_factors.py``, e.g. carried to the GPU machine in devdata/;
missing files are reported and skipped) and synthetic unit lower-triangular L of n items with
``--per-col`` off-diagonals per column (no factorisation, so it runs without CHOLMOD).
The budget is the saved factor's budget, or nnz(L) for synthetic L.

    python benchmarks/refine_bench.py --factors devdata/*.npz --synthetic 100000 1000000 --cpu-max-n 1000000 \\
        --device gpu --out $OUT/refine_bench.jsonl
    python benchmarks/refine_bench.py --synthetic 20000 --device cpu --out /tmp/refine.jsonl   # CPU twin only
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _device_info import record_device, use_executor_from_env  # noqa: E402
from _isolated import emit  # noqa: E402


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
    """(median seconds, all seconds, last result) of ``repeats`` calls of ``fn``."""
    times, out = [], None
    for _ in range(max(1, repeats)):
        out = None  # drop the previous result first (device memory)
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), times, out


def load_inputs(args):
    """Yield (name, L, budget) or (name, None, error message) for each requested input, lazily
    (a synthetic 1M factor is only built when its turn comes)."""
    for path in args.factors:
        try:
            z = np.load(path)
            n = int(z["d"].shape[0])
            L = sp.csc_matrix((z["L_data"], z["L_indices"], z["L_indptr"]), shape=(n, n))
            yield Path(path).name, L, int(z["budget"])
        except Exception as exc:  # missing or damaged file: report, go on
            yield Path(path).name, None, f"{type(exc).__name__}: {exc}"
    for n in args.synthetic:
        t0 = time.perf_counter()
        L = synthetic_unit_lower(n, args.per_col)
        print(f"# synthetic n={n}: nnz(L)={L.nnz} built in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
        yield f"synthetic_n{n}", L, int(L.nnz)


def gpu_case(L, K0, budget: int, args) -> tuple[dict, sp.csc_matrix, np.ndarray, sp.csc_matrix, np.ndarray]:
    """Upload, first sweep (tracked for peak memory; compiles the kernel, allocates its scratch),
    then ``--repeats`` timed sweeps of the same K0. Returns (record fields, host K1 and residual
    norms of the first sweep, the same of the last timed sweep). First and last must agree: a
    difference means state left behind by one sweep (scratch) changed the next."""
    from _gpu_memory import release_gpu_caches, track_peak
    from _gpu_timing import synchronize as sync, time_kernels
    from sansa_gpu import gpu

    release_gpu_caches()
    with track_peak() as mem:
        t0 = time.perf_counter()
        Ld, Kd = gpu.to_device(L), gpu.to_device(K0)
        sync()
        upload_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        K_first, r_first = gpu.refine_sweep(Ld, Kd, budget, args.tol)
        sync()
        first_s = time.perf_counter() - t0
    K_first = gpu.to_host(K_first)

    def run():
        out = gpu.refine_sweep(Ld, Kd, budget, args.tol)
        sync()
        return out

    with time_kernels() as kt:
        t_gpu, times, (K_last, r_last) = _median_time(run, args.repeats)
    t0 = time.perf_counter()
    K_last = gpu.to_host(K_last)
    download_s = time.perf_counter() - t0
    rec = {"seconds": t_gpu, "seconds_all": [round(t, 4) for t in times], "repeats": len(times),
           "kernel_seconds_per_sweep": kt.seconds / len(times), "kernel_launches_per_sweep": kt.launches / len(times),
           "first_sweep_seconds": first_s, "upload_seconds": upload_s, "download_seconds": download_s,
           "peak_gpu_bytes": mem.peak_bytes, **mem.as_record()}
    return rec, K_first, r_first, K_last, r_last  # the device copies go with this frame


def compare(Kc: sp.csc_matrix, rc: np.ndarray, Kg: sp.csc_matrix, rg: np.ndarray) -> dict:
    """Equality of the GPU sweep's result with the CPU twin's."""
    same = bool(Kg.nnz == Kc.nnz and np.array_equal(Kg.indptr, Kc.indptr) and np.array_equal(Kg.indices, Kc.indices))
    scale = float(np.max(np.abs(Kc.data))) if Kc.nnz else 1.0
    if same:
        diff = np.abs(Kg.data.astype(np.float64) - Kc.data.astype(np.float64))
        n_diff_pattern = 0
    else:  # compare on the union of the patterns (entries missing from one side count as 0)
        diff = abs(Kg.astype(np.float64) - Kc.astype(np.float64)).tocsc().data

        def pattern(K):
            return sp.csc_matrix((np.ones(K.nnz, dtype=np.int32), K.indices, K.indptr), shape=K.shape)

        n_diff_pattern = int(abs(pattern(Kg) - pattern(Kc)).sum())
    max_abs = float(diff.max()) if diff.size else 0.0
    return {
        "same_indices": same,
        "entries_in_one_pattern_only": n_diff_pattern,
        "max_abs_value_diff": max_abs,
        "max_rel_value_diff": max_abs / scale if scale else max_abs,
        "values_close": bool(same and np.allclose(Kg.data, Kc.data, rtol=1e-5, atol=1e-7)),
        "max_rel_residual_diff": float(np.max(np.abs(rg - rc) / np.maximum(rc, 1e-12))) if rc.size else 0.0,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--factors", nargs="*", default=[], help="saved factors (save_factors.py .npz)")
    ap.add_argument("--synthetic", nargs="*", type=int, default=[], help="sizes n of synthetic unit lower L")
    ap.add_argument("--per-col", type=int, default=20, help="off-diagonals per column of synthetic L")
    ap.add_argument("--tol", type=float, default=None,
                    help="sweep tolerance (columns with residual <= tol are left alone); default the CPU "
                         "reference's DEFAULT_TOL, so every column is refined")
    ap.add_argument("--repeats", type=int, default=3, help="timed GPU sweeps (median reported)")
    ap.add_argument("--cpu-repeats", type=int, default=1, help="timed CPU-twin sweeps (median reported)")
    ap.add_argument("--cpu-max-n", type=int, default=None, help="skip the CPU twin above this many items")
    ap.add_argument("--device", choices=("auto", "gpu", "cpu"), default="auto",
                    help="gpu: GPU required (exit 1 without one); cpu: CPU twin only; auto: GPU if usable")
    ap.add_argument("--out", default=None, help="append the JSON lines to this file")
    args = ap.parse_args(argv)
    if not (args.factors or args.synthetic):
        ap.error("give --factors and/or --synthetic")

    import numba

    from sansa_gpu import cpu
    from sansa_gpu.backend import gpu_status
    from sansa_gpu.cpu.refine import DEFAULT_TOL, initial_inverse

    if args.tol is None:
        args.tol = DEFAULT_TOL
    if args.device != "cpu":
        use_executor_from_env()
    has_gpu, gpu_name = gpu_status()
    use_gpu = args.device == "gpu" or (args.device == "auto" and has_gpu)
    device = record_device(use_gpu)  # the GPU's name on every line of a GPU run
    failed = False
    if use_gpu and not has_gpu:
        emit({"what": "refine_sweep", "backend": "gpu", "device": device, "error": gpu_name}, args.out)
        use_gpu, failed = False, True
    cpu_warm = False
    for name, L, budget in load_inputs(args):
        if L is None:
            emit({"what": "refine_sweep", "data": name, "device": device, "error": budget}, args.out)
            failed = True
            continue
        n = int(L.shape[0])
        K0 = initial_inverse(L)
        base = {"what": "refine_sweep", "device": device, "data": name, "n": n, "nnz_L": int(L.nnz), "budget": budget,
                "tol": args.tol, "machine": platform.node(), "cpus": os.cpu_count()}
        Kg = rg = t_gpu = None
        if use_gpu:
            try:
                fields, Kg, rg, K_last, r_last = gpu_case(L, K0, budget, args)
                t_gpu = fields["seconds"]
                again = compare(Kg, rg, K_last, r_last)  # last timed sweep vs first: same inputs, same result?
                fields.update(repeat_same_indices=again["same_indices"],
                              repeat_max_rel_value_diff=again["max_rel_value_diff"],
                              repeat_max_rel_residual_diff=again["max_rel_residual_diff"])
                emit({**base, "backend": "gpu", "gpu": gpu_name, **fields, "nnz_K1": int(Kg.nnz)}, args.out)
            except Exception as exc:
                failed = True
                emit({**base, "backend": "gpu", "gpu": gpu_name, "error": f"{type(exc).__name__}: {exc}"}, args.out)
        if args.cpu_max_n is not None and n > args.cpu_max_n:
            emit({**base, "backend": "cpu", "skipped": True, "reason": f"n = {n} > --cpu-max-n {args.cpu_max_n}",
                   "equality_checked": False}, args.out)
            continue
        if not cpu_warm:  # compile (or load from numba's cache) on a tiny factor, not inside the timing
            Lw = synthetic_unit_lower(200, 4)
            cpu.refine_sweep(Lw, initial_inverse(Lw), int(Lw.nnz))
            cpu_warm = True
        t_cpu, times, (Kc, rc) = _median_time(lambda: cpu.refine_sweep(L, K0, budget, args.tol), args.cpu_repeats)
        rec = {**base, "backend": "cpu", "cpu_threads": numba.get_num_threads(), "seconds": t_cpu,
               "seconds_all": [round(t, 4) for t in times], "repeats": len(times), "nnz_K1": int(Kc.nnz),
               "loss_before": float(rc @ rc / rc.size)}
        if Kg is not None:
            rec.update(gpu_speedup=t_cpu / t_gpu if t_gpu else None, equality_checked=True, **compare(Kc, rc, Kg, rg))
        emit(rec, args.out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
