"""What the exact CHOLMOD factor costs on the shared datasets, against its structural prediction: the
evidence behind ``sansa_gpu.factorize.predict_exact_seconds`` (which ``tune`` uses to decide whether
CHOLMOD enters its search). One JSON line per dataset, each in its own spawned process, one after another.

Each record: the exact factor's structure (``sansa_gpu.memory.exact_factor_profile``: nnz of the Gram,
fill, flops = sum of squared column counts, the seconds the analysis took), the measured seconds of
``ldlt_cholmod`` (ordering + supernodal LLᵀ + cut to 16 nonzeros per item) with its peak RSS, and the
prediction of the current constants. ``--fit`` prints the least-squares constants over the records.

    python benchmarks/exact_cost.py --data ml-1m-implicit pinterest citeulike-a yelp-diffnet lastfm-2k \\
        amazon-videogames-sasrec citeulike-t amazon-book-kgat gowalla --out benchmarks/results/exact_cost.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _isolated import emit, peak_rss_gb, run_isolated  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _run(data_dir, data, l2, queue):
    from sansa_gpu.data import load_split
    from sansa_gpu.factorize import ldlt_cholmod, nnz_budget, predict_exact_seconds
    from sansa_gpu.memory import exact_factor_profile

    X = load_split(Path(data_dir) / data).train.tocsr()
    X.data[:] = 1.0
    n = X.shape[1]
    prof = exact_factor_profile(X, "colamd")
    rec = {"what": "exact_factor_cost", "data": data, "n_items": n, "n_users": int(X.shape[0]), "nnz_X": int(X.nnz),
           "nnz_gram": prof["nnz_gram"], "fill": prof["fill"], "gflops": round(prof["flops"] / 1e9, 3),
           "analysis_seconds": round(prof["seconds"], 3), "predicted_seconds": round(predict_exact_seconds(prof), 2)}
    t0 = time.perf_counter()
    fac = ldlt_cholmod(X, l2, nnz_budget(min(1.0, 16 / n), n), "colamd")
    rec.update(exact_seconds=round(time.perf_counter() - t0, 3), factor_seconds=fac.seconds,
               peak_rss_gb=round(peak_rss_gb(), 3))
    queue.put(rec)


def fit_constants(path: str) -> dict:
    """Least-squares (seconds per GFlop, seconds per million nonzeros) over the records of ``path``."""
    import numpy as np

    recs = [json.loads(line) for line in open(path) if '"exact_factor_cost"' in line]
    recs = [r for r in recs if r.get("exact_seconds") is not None]
    A = np.array([[r["gflops"], r["fill"] / 1e6] for r in recs])
    y = np.array([r["exact_seconds"] for r in recs])
    w = 1.0 / np.maximum(y, 1.0)  # relative error: small and large factors count alike
    coef, *_ = np.linalg.lstsq(A * w[:, None], y * w, rcond=None)
    coef = np.maximum(coef, 0.0)
    pred = A @ coef
    return {"seconds_per_gflop": float(coef[0]), "seconds_per_mnnz": float(coef[1]),
            "ratios": {r["data"]: round(float(p / r["exact_seconds"]), 2) for r, p in zip(recs, pred)}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--data", nargs="+", default=["ml-1m-implicit", "pinterest"])
    ap.add_argument("--l2", type=float, default=20.0)
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per dataset before it is stopped")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "exact_cost.jsonl"))
    ap.add_argument("--fit", action="store_true", help="only print the constants fitted to --out")
    args = ap.parse_args(argv)
    if args.fit:
        print(json.dumps(fit_constants(args.out)))
        return 0
    for data in args.data:
        rec = run_isolated(_run, (args.data_dir, data, args.l2), {"what": "exact_factor_cost", "data": data},
                           args.timeout)
        emit(rec, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
