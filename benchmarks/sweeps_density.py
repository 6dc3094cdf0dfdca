"""Test accuracy against refinement sweeps at several densities: how far two sweeps leave ``K`` from what
more sweeps reach, per density (the evidence behind ``tune``'s phase 3 trying more sweeps on several
densities, not only on the best trial). One JSON line per (dataset, factoriser, λ, nonzeros per item,
sweeps); the factor of each density is computed once (``FactorCache``) and refined again per sweep count.
Fit seconds are recorded but not compared (other jobs may share the machine).

    python benchmarks/sweeps_density.py --data ml-1m-implicit --factorizer cholmod --l2 1000 \\
        --per-item 16 64 256 --sweeps 2 4 8 16 --out benchmarks/results/sweeps.jsonl
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _isolated import emit, git_commit, test_metrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    from sansa_gpu import SANSA
    from sansa_gpu.data import load_split
    from sansa_gpu.factorize import FactorCache

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--factorizer", choices=("icf", "cholmod"), required=True)
    ap.add_argument("--l2", type=float, required=True)
    ap.add_argument("--per-item", nargs="+", type=float, required=True)
    ap.add_argument("--sweeps", nargs="+", type=int, default=[2, 4, 8, 16])
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    split = load_split(Path(args.data_dir) / args.data)
    split.train.data[:] = 1.0
    n = split.train.shape[1]
    for per in args.per_item:
        cache = FactorCache()
        for sweeps in args.sweeps:
            t0 = time.perf_counter()
            model = SANSA(l2=args.l2, density=min(1.0, per / n), factorizer=args.factorizer, refine_sweeps=sweeps,
                          min_cooccurrence=0, device="cpu").fit(split.train, factor_cache=cache)
            emit({"what": "sweeps_density", "data": args.data, "factorizer": args.factorizer, "l2": args.l2,
                  "nnz_per_item": per, "density": model.density_, "refine_sweeps": sweeps,
                  **test_metrics(model, split), "loss": round(model.history_[-1]["loss"], 7),
                  "fit_seconds": round(time.perf_counter() - t0, 2), "commit": git_commit(), "machine": "vm",
                  "cpus": 2, "device": "cpu"}, args.out)


if __name__ == "__main__":
    main()
