"""Save (L, d, p) factors for device runs (the GPU machine has no scikit-sparse).

    python benchmarks/save_factors.py --data gowalla --density 2e-3 --out devdata/
writes devdata/gowalla_d0.002.npz (L as CSC arrays, d, p, plus the train/test split as CSR arrays)
so that `benchmarks/refine_bench.py` and the GPU tests can run the GPU stages on real factors.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from sansa_gpu.data import load_adjacency_split
from sansa_gpu.factorize import ldlt_cholmod, nnz_budget

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--data", default="gowalla")
    ap.add_argument("--density", type=float, default=2e-3)
    ap.add_argument("--l2", type=float, default=20.0)
    ap.add_argument("--out", default=str(ROOT / "devdata"))
    args = ap.parse_args()
    split = load_adjacency_split(Path(args.data_dir) / args.data)
    budget = nnz_budget(args.density, split.train.shape[1])
    f = ldlt_cholmod(split.train, args.l2, budget)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.data}_d{args.density:g}.npz"
    np.savez(
        path, L_indptr=f.L.indptr, L_indices=f.L.indices, L_data=f.L.data, d=f.d, p=f.p,
        budget=np.int64(budget), l2=np.float64(args.l2),
        train_indptr=split.train.indptr, train_indices=split.train.indices,
        test_indptr=split.test.indptr, test_indices=split.test.indices, shape=np.array(split.train.shape),
    )
    print(path, f.L.nnz, "nnz", round(path.stat().st_size / 2**20, 1), "MiB")


if __name__ == "__main__":
    main()
