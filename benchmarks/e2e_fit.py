"""End-to-end fit, GPU vs CPU: ``SANSA(factorizer="icf", device="gpu")`` beside ``device="cpu"`` on one
synthetic catalogue, one JSON line per fit plus one comparing them.

Data: ``sansa_gpu.synthetic.synthetic_interactions`` with ``--items`` items and 5 users per item,
4.5 items per user on average (the setting of ``benchmarks/scale.py --synthetic``). Both fits use
ICF with the popularity ordering (no CHOLMOD needed) and ``check_memory=False`` (the estimate is
not what is measured). The factorisation runs on the CPU for both devices by design; the GPU
fit moves the refinement and the weight assembly to the device.

Per fit: the model's ``stats_`` (seconds and nnz per stage: factorize, refine, weights, fit),
the loss after each sweep, peak RSS so far and, on the GPU, the time in raw kernels
(``benchmarks/_gpu_timing.time_kernels``) and the real peak device memory of the fit
(``benchmarks/_gpu_memory.track_peak``). Last, a comparison line: weights' patterns
identical, largest weight difference, and the top-k of ``--check-users`` users from each model.
A tiny fit on each device first loads numba's and CuPy's compiled code outside the timing.

``backend`` says where a fit ran ("gpu" / "cpu"); ``device`` names the GPU of the run on every line
(the CPU fit's and the comparison's too; "cpu" when only ``--devices cpu`` runs). With
``SANSA_GPU_EXECUTOR=1`` the CPU executor of the kernels stands in for the GPU (gpu_check.sh --dry-run).

    python benchmarks/e2e_fit.py --items 200000 --devices gpu cpu --out $OUT/e2e_fit.jsonl
    python benchmarks/e2e_fit.py --items 5000 --devices cpu          # CPU only (no GPU here)
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _device_info import record_device, use_executor_from_env  # noqa: E402
from _isolated import emit, peak_rss_gb  # noqa: E402


def _stats(model) -> dict:
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in model.stats_.items()}


def fit_one(X, device: str, args):
    """Fit on ``device``; returns (model, record)."""
    from sansa_gpu import SANSA
    from sansa_gpu.synthetic import synthetic_interactions

    def make(density=args.density):
        return SANSA(l2=args.l2, density=density, factorizer="icf", refine_sweeps=args.sweeps,
                     refine_tol=args.refine_tol, min_cooccurrence=0, device=device)

    tiny = synthetic_interactions(n_users=2000, n_items=300, mean_items_per_user=8, n_communities=5, seed=1)
    make(0.05).fit(tiny, check_memory=False)  # load numba's / CuPy's compiled code; not timed
    rec = {}
    if device == "gpu":
        from _gpu_memory import release_gpu_caches, track_peak
        from _gpu_timing import time_kernels

        release_gpu_caches()
        with track_peak() as mem, time_kernels() as kt:
            t0 = time.perf_counter()
            model = make().fit(X, check_memory=False)
            wall = time.perf_counter() - t0
        rec.update(kernel_seconds=round(kt.seconds, 4), kernel_launches=kt.launches,
                   peak_gpu_bytes=mem.peak_bytes, **mem.as_record())
    else:
        t0 = time.perf_counter()
        model = make().fit(X, check_memory=False)
        wall = time.perf_counter() - t0
    rec.update(backend=model.device_, wall_seconds=round(wall, 3), stats=_stats(model),
               loss_history=[h["loss"] for h in model.history_], peak_rss_gb=round(peak_rss_gb(), 3))
    return model, rec


def compare(models: dict, X, args) -> dict:
    """GPU model vs CPU model: weights and the top-k of the first users."""
    gm, cm = models["gpu"], models["cpu"]
    rec = {}
    for name, G, C in zip(("Wt", "Z"), gm.weights_, cm.weights_):
        same = bool(G.nnz == C.nnz and np.array_equal(G.indptr, C.indptr) and np.array_equal(G.indices, C.indices))
        diff = abs(G.astype(np.float64) - C.astype(np.float64))
        scale = float(np.max(np.abs(C.data))) if C.nnz else 1.0
        rec[f"same_pattern_{name}"] = same
        rec[f"max_rel_diff_{name}"] = (float(diff.max()) / scale) if diff.nnz else 0.0
    users = X[:args.check_users]
    gi, gs = gm.recommend(users, k=20)
    ci, cs = cm.recommend(users, k=20)
    rec.update(check_users=int(users.shape[0]), same_topk_rows=float(np.mean(np.all(gi == ci, axis=1))),
               max_score_diff=float(np.max(np.abs(np.where(ci >= 0, gs, 0.0).astype(np.float64) - np.where(ci >= 0, cs, 0.0)))))
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--users-per-item", type=float, default=5.0)
    ap.add_argument("--per-user", type=float, default=4.5, help="mean items per synthetic user")
    ap.add_argument("--density", type=float, default=5e-5)
    ap.add_argument("--l2", type=float, default=20.0)
    ap.add_argument("--sweeps", type=int, default=2)
    ap.add_argument("--refine-tol", type=float, default=1e-2)
    ap.add_argument("--devices", nargs="+", choices=("gpu", "cpu"), default=["gpu", "cpu"],
                    help="fit order: the GPU fit first, so a cut-off run keeps it")
    ap.add_argument("--check-users", type=int, default=2000)
    ap.add_argument("--out", default=None, help="append the JSON lines to this file")
    args = ap.parse_args(argv)

    from sansa_gpu.backend import gpu_status
    from sansa_gpu.synthetic import synthetic_interactions

    if "gpu" in args.devices:
        use_executor_from_env()
    t0 = time.perf_counter()
    n_users = int(args.users_per_item * args.items)
    X = synthetic_interactions(n_users=n_users, n_items=args.items, mean_items_per_user=args.per_user,
                               n_communities=max(50, args.items // 2000), seed=0)
    base = {"what": "e2e_fit", "device": record_device("gpu" in args.devices), "data": f"synthetic_{args.items}",
            "n_users": n_users, "n_items": args.items, "nnz_X": int(X.nnz),
            "data_seconds": round(time.perf_counter() - t0, 2), "density": args.density, "l2": args.l2,
            "refine_sweeps": args.sweeps, "refine_tol": args.refine_tol, "factorizer": "icf",
            "ordering": "popularity", "machine": platform.node(), "cpus": os.cpu_count()}
    ok_gpu, gpu_name = gpu_status()
    models, failed = {}, False
    for device in args.devices:
        if device == "gpu" and not ok_gpu:
            emit({**base, "backend": "gpu", "error": gpu_name}, args.out)
            failed = True
            continue
        try:
            models[device], rec = fit_one(X, device, args)
            if device == "gpu":
                rec["gpu"] = gpu_name
            emit({**base, **rec}, args.out)
        except Exception as exc:
            emit({**base, "backend": device, "error": f"{type(exc).__name__}: {exc}"}, args.out)
            failed = True
    if "gpu" in models and "cpu" in models:
        try:
            emit({**base, "what": "e2e_fit_compare", **compare(models, X, args)}, args.out)
        except Exception as exc:
            emit({**base, "what": "e2e_fit_compare", "error": f"{type(exc).__name__}: {exc}"}, args.out)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
