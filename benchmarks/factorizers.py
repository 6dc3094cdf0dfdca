"""CHOLMOD against ICF (popularity ordering), with and without Gram pruning, at equal density on the
shared datasets: the evidence behind ``factorizer="auto"``. One JSON line per fit, each in its own
spawned process (its peak RSS is its own), one after another.

For each dataset and density: ``icf`` (min_cooccurrence 0 and 2) and ``cholmod`` (COLAMD), λ from
``L2`` (500 for ml-1m, as in compare_official.py; 20 elsewhere), 2 refinement sweeps, default
``refine_tol``; test Recall@20 / BARS Recall@20 / nDCG@20 on the dataset's own split. CHOLMOD runs are
skipped (``skipped``) when the fit's own memory check refuses them, and stopped at ``--timeout``.
Each line also carries the data's shape (``n_users``, ``n_items``, ``nnz_X``, ``x_density`` =
nnz / (users × items)), from which ``sansa_gpu.factorize.choose_factorizer``'s rule was read.

    python benchmarks/factorizers.py --data ml-1m-implicit pinterest gowalla amazon-book-kgat epinions \\
        --densities 5e-4 2e-3 --out benchmarks/results/factorizers.jsonl
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _isolated import emit, fit_summary, peak_rss_gb, run_isolated, test_metrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
L2 = {"ml-1m-implicit": 500.0}


def _run(data_dir, data, density, factorizer, min_cooccurrence, queue):
    import numpy as np
    import scipy.sparse as sp

    from sansa_gpu import SANSA
    from sansa_gpu.data import load_adjacency_split

    split = load_adjacency_split(Path(data_dir) / data)
    X = split.train
    X.data[:] = 1.0  # duplicates in some files (pinterest): binary implicit feedback
    l2 = L2.get(data, 20.0)
    rec = {"what": "factorizer_comparison", "data": data, "density": density, "l2": l2, "factorizer": factorizer,
           "min_cooccurrence": min_cooccurrence, "n_users": int(X.shape[0]), "n_items": int(X.shape[1]),
           "nnz_X": int(X.nnz), "x_density": round(X.nnz / (X.shape[0] * X.shape[1]), 6)}
    tiny = sp.random(300, 60, density=0.2, format="csr", random_state=0, dtype=np.float32)
    tiny.data[:] = 1.0
    SANSA(l2=l2, density=0.5, factorizer=factorizer, refine_sweeps=1, device="cpu").fit(tiny, check_memory=False)
    model = SANSA(l2=l2, density=density, factorizer=factorizer, min_cooccurrence=min_cooccurrence,
                  refine_sweeps=2, device="cpu")
    t0 = time.perf_counter()
    try:
        model.fit(X)
    except MemoryError as exc:
        rec.update(skipped=str(exc), peak_rss_gb=round(peak_rss_gb(), 3))
        queue.put(rec)
        return
    rec["fit_seconds"] = round(time.perf_counter() - t0, 2)
    rec.update(fit_summary(model))
    rec.update(test_metrics(model, split))
    rec["peak_rss_gb"] = round(peak_rss_gb(), 3)
    queue.put(rec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--data", nargs="+", default=["ml-1m-implicit", "pinterest", "gowalla", "amazon-book-kgat", "epinions"])
    ap.add_argument("--densities", nargs="+", type=float, default=[5e-4, 2e-3])
    ap.add_argument("--factorizers", nargs="+", default=["icf", "icf+prune", "cholmod"],
                    help="icf, icf+prune (min_cooccurrence 2), cholmod")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per fit before it is stopped")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "factorizers.jsonl"))
    args = ap.parse_args(argv)
    missing = [d for d in args.data if not (Path(args.data_dir) / d / "train.txt").is_file()]
    if missing:
        ap.error(f"no train.txt for {missing} under --data-dir {args.data_dir}")
    for data in args.data:
        for density in args.densities:
            for name in args.factorizers:
                factorizer, mc = ("icf", 2.0) if name == "icf+prune" else (name, 0.0)
                label = {"what": "factorizer_comparison", "data": data, "density": density, "factorizer": factorizer,
                         "min_cooccurrence": mc}
                emit(run_isolated(_run, (args.data_dir, data, density, factorizer, mc), label, args.timeout), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
