"""Save (L, d, p) factors for device runs (the GPU machine has no scikit-sparse).

    python benchmarks/save_factors.py --data gowalla --density 2e-3 --out devdata/                   # CHOLMOD
    python benchmarks/save_factors.py --data gowalla --density 5e-4 --factorizer icf --out devdata/  # ICF, seconds
writes devdata/gowalla_d0.002.npz (devdata/gowalla_icf_d0.0005.npz for ICF): L as CSC arrays, d, p,
the budget, plus the train/test split as CSR arrays, so that `benchmarks/refine_bench.py` and the
GPU tests can run the GPU stages on real factors. ICF factors are built as SANSA(factorizer="icf")
builds them (column scaling, popularity ordering); CHOLMOD's exact factor of gowalla needs about
15 GB and two minutes, ICF's a few seconds and well under 1 GB.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from sansa_gpu.data import load_adjacency_split
from sansa_gpu.factorize import icf_column_scaling, ldlt_cholmod, ldlt_icf, nnz_budget

ROOT = Path(__file__).resolve().parents[1]


def factorize(X: sp.csr_matrix, l2: float, budget: int, factorizer: str):
    if factorizer == "cholmod":
        return ldlt_cholmod(X, l2, budget)
    scale = icf_column_scaling(X)  # as SANSA.fit does for 'icf'
    Xs = sp.csr_matrix(X @ sp.diags((1.0 / scale).astype(np.float32)), dtype=np.float32)
    Xs.sort_indices()
    return ldlt_icf(Xs, l2, budget, 0.0, "popularity", prune_scale=scale)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--data", default="gowalla")
    ap.add_argument("--density", type=float, default=2e-3)
    ap.add_argument("--l2", type=float, default=20.0)
    ap.add_argument("--factorizer", choices=("cholmod", "icf"), default="cholmod")
    ap.add_argument("--out", default=str(ROOT / "devdata"))
    args = ap.parse_args()
    split = load_adjacency_split(Path(args.data_dir) / args.data)
    budget = nnz_budget(args.density, split.train.shape[1])
    f = factorize(split.train, args.l2, budget, args.factorizer)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "" if args.factorizer == "cholmod" else f"_{args.factorizer}"
    path = out / f"{args.data}{tag}_d{args.density:g}.npz"
    np.savez(
        path, L_indptr=f.L.indptr, L_indices=f.L.indices, L_data=f.L.data, d=f.d, p=f.p,
        budget=np.int64(budget), l2=np.float64(args.l2),
        train_indptr=split.train.indptr, train_indices=split.train.indices,
        test_indptr=split.test.indptr, test_indices=split.test.indices, shape=np.array(split.train.shape),
    )
    print(path, f.L.nnz, "nnz", round(path.stat().st_size / 2**20, 1), "MiB")


if __name__ == "__main__":
    main()
