"""The incomplete Cholesky against the exact factor on the same matrix, same density and λ: test Recall@20
of full fits (2 sweeps, exact Gram, binary training split), one JSON line per (dataset, nonzeros per item, λ);
``<variant>_paired_se``: the standard error of the variant's recall minus CHOLMOD's, paired over the test users.

``--mode scaled`` (the ICF's own problem, column scaling on): CHOLMOD with ``column_scaling=True`` (the
exact factor of the same scaled matrix, cut to the budget) beside ICF with ``icf_fill`` 1 (the plain ICF),
4 and 16 (a larger working budget, then the same cut as CHOLMOD's). ``--mode unscaled`` (EASE's own
problem): CHOLMOD with ``column_scaling=False`` beside ICF on the same unscaled matrix, with the shift
its restarts needed (``*_shift`` = used / asked). In both, ``--intermediate F ...`` adds ICF with an
intermediate fill of F times the budget (``SANSA(icf_intermediate_fill=F)``), and ``--variant NAME=JSON`` an ICF
with any SANSA parameters (recorded as ``NAME_params``). ``--objective`` records each model's EASE training
objective (``<variant>_objective``, :func:`training_objective`): whether a train-only number ranks the variants
as their test recall does.

    python benchmarks/icf_vs_exact.py --mode scaled --data ml-1m-implicit pinterest lastfm-2k citeulike-a \\
        --per-item 16 64 --l2 10 100 --out benchmarks/results/icf_vs_exact.jsonl
    python benchmarks/icf_vs_exact.py --mode unscaled --data ml-1m-implicit --per-item 16 64 --l2 100 500 2000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _isolated import emit, git_commit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def training_objective(model, X, scaled: bool, block: int = 4096) -> float:
    """EASE's objective on the training data for the fitted weights, per user: (||X~ M||_F^2 + l2 (||M||_F^2 - n))
    / users, where M = Wt Z = B - I (the weights read as EASE's B with its unit diagonal taken out; diag(M) = -1,
    so diag(B) = 0) and X~ is X with the columns scaled as the fit scaled them (the problem the factor solves)."""
    import numpy as np
    import scipy.sparse as sp

    from sansa_gpu.factorize import icf_column_scaling

    Xs = X if not scaled else sp.csr_matrix(X @ sp.diags(1.0 / icf_column_scaling(X)))
    Wt, Z = (sp.csr_matrix(W, dtype=np.float64) for W in model.weights_)
    Zc = sp.csc_matrix(Z)
    n = Wt.shape[0]
    fit_term = 0.0
    for lo in range(0, Xs.shape[0], block):
        S = (Xs[lo:lo + block] @ Wt) @ Zc
        fit_term += float(S.multiply(S).sum())
    norm_m = 0.0
    for lo in range(0, n, block):
        M = Wt @ Zc[:, lo:lo + block]
        norm_m += float(M.multiply(M).sum())
    return (fit_term + model.l2_ * (norm_m - n)) / X.shape[0]


def run(args) -> None:
    import numpy as np

    from sansa_gpu import SANSA
    from sansa_gpu.data import load_split
    from sansa_gpu.metrics import recall_per_user

    scaled = args.mode == "scaled"
    named = {name: json.loads(spec) for name, spec in (v.split("=", 1) for v in args.variant)}
    fills = args.fills if scaled else [1.0]
    # each variant sets both fills (SANSA()'s defaults resolve them by density: the pair from 64 per item)
    icf = dict(factorizer="icf", column_scaling=scaled, icf_fill=1.0, icf_intermediate_fill=0.0)
    variants = [("cholmod", dict(factorizer="cholmod", column_scaling=scaled))] + [
        (f"icf_fill{f:g}", dict(icf, icf_fill=f)) for f in fills] + [
        (f"icf_intermediate{f:g}", dict(icf, icf_intermediate_fill=f)) for f in args.intermediate] + [
        (name, {**icf, **spec}) for name, spec in named.items()]
    for data in args.data:
        split = load_split(Path(args.data_dir) / data)
        X = split.train.tocsr()
        X.data[:] = 1.0
        n = X.shape[1]
        users = np.flatnonzero(np.diff(split.test.indptr) > 0)
        for per in args.per_item:
            for l2 in args.l2:
                rec = {"what": "icf_vs_exact", "mode": args.mode, "data": data, "n_items": n, "per_item": per,
                       "density": min(1.0, per / n), "l2": l2, "commit": git_commit()}
                for name, kw in variants:
                    t0 = time.perf_counter()
                    model = SANSA(**{"l2": l2, "density": rec["density"], "refine_sweeps": 2, "device": "cpu",
                                     "max_gram_per_item": None, "min_cooccurrence": 0, **kw}).fit(X)
                    fit_s = time.perf_counter() - t0
                    ids, _ = model.recommend(X[users], k=20)
                    per_user = recall_per_user(ids, split.test[users], 20)
                    rec[name] = round(float(per_user.mean()), 5)
                    if name == "cholmod":
                        exact_per_user = per_user
                    else:  # the standard error of the difference, paired over the same test users
                        diff = per_user - exact_per_user
                        rec[f"{name}_paired_se"] = round(float(diff.std(ddof=1) / np.sqrt(diff.size)), 6)
                    rec[f"{name}_fit_seconds"] = round(fit_s, 2)
                    if name in named:
                        rec[f"{name}_params"] = named[name]
                    if args.objective:
                        rec[f"{name}_objective"] = training_objective(model, X, scaled)
                    if kw["factorizer"] == "icf":
                        rec[f"{name}_restarts"] = model.stats_["icf_restarts"]
                        rec[f"{name}_shift"] = round(model.stats_["icf_shift"] / l2, 4)
                emit(rec, args.out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--data", nargs="+", default=["ml-1m-implicit"])
    ap.add_argument("--mode", choices=("scaled", "unscaled"), default="scaled")
    ap.add_argument("--per-item", nargs="+", type=float, default=[16.0, 64.0])
    ap.add_argument("--l2", nargs="+", type=float, default=[10.0, 100.0])
    ap.add_argument("--fills", nargs="+", type=float, default=[1.0, 4.0, 16.0])
    ap.add_argument("--intermediate", nargs="*", type=float, default=[],
                    help="also ICF with these intermediate fills (Tismenetsky-Kaporin)")
    ap.add_argument("--variant", action="append", default=[],
                    help="name=JSON: also ICF with these SANSA parameters (repeatable)")
    ap.add_argument("--objective", action="store_true",
                    help="record each model's EASE training objective (<variant>_objective)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "icf_vs_exact.jsonl"))
    run(ap.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
