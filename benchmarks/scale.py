"""Training at scale: ICF + column-parallel Gram, beside the official ICF, and on synthetic catalogues.

One JSON line per run (each in its own spawned process, so peak RSS is its own): stage seconds,
peak RSS, nnz of X, Gram, L, K, W, Z, the memory estimate, and recall where a split exists.

    python benchmarks/scale.py --data epinions gowalla --density 5e-4       # real data, ours vs official ICF
    python benchmarks/scale.py --synthetic 200000 500000 1000000 --density 5e-5 --impls ours
    python benchmarks/scale.py --data gowalla --impls ours --orderings colamd popularity --refine-tol 1e-2
    python benchmarks/scale.py --synthetic 10000000 --density default --impls ours --orderings popularity \
        --min-cooccurrence 2 --save-dir /tmp      # end to end: data, estimate, fit (per stage), save
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _isolated import emit, fit_summary, peak_rss_gb, run_isolated, test_metrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _run(impl, source, density, l2, sweeps, data_dir, ordering, refine_tol, min_cooccurrence, save_dir, queue):
    import numpy as np
    import scipy.sparse as sp

    from sansa_gpu.data import load_adjacency_split
    from sansa_gpu.metrics import evaluate

    rec = {"implementation": impl, "data": source, "density": density, "l2": l2}
    split = None
    t0 = time.perf_counter()
    if source.startswith("synthetic_"):
        from sansa_gpu.synthetic import synthetic_interactions

        n_items = int(source.split("_")[1])
        X = synthetic_interactions(n_users=5 * n_items, n_items=n_items, mean_items_per_user=4.5,
                                   n_communities=max(50, n_items // 2000), seed=0)
    else:
        split = load_adjacency_split(Path(data_dir) / source)
        X = split.train
    rec.update(n_users=int(X.shape[0]), n_items=int(X.shape[1]), nnz_X=int(X.nnz), data_seconds=time.perf_counter() - t0)
    tiny = sp.random(300, 60, density=0.2, format="csr", random_state=0, dtype=np.float32)
    tiny.data[:] = 1.0
    if impl == "official":
        import logging

        logging.disable(logging.WARNING)
        from sansa import ICFGramianFactorizerConfig, SANSA, SANSAConfig, UMRUnitLowerTriangleInverterConfig

        def make():
            return SANSA(SANSAConfig(l2=l2, weight_matrix_density=density,
                                     gramian_factorizer_config=ICFGramianFactorizerConfig(),
                                     lower_triangle_inverter_config=UMRUnitLowerTriangleInverterConfig(scans=1, finetune_steps=5)))

        make().fit(tiny)
        t0 = time.perf_counter()
        model = make().fit(X)
        rec["fit_seconds"] = time.perf_counter() - t0
        Wt, Z = model.weights
        rec.update(nnz_Wt=int(Wt.nnz), nnz_Z=int(Z.nnz))
        if split is not None:
            users = split.eval_users
            try:
                ids, _ = model.recommend(X[users], k=20, mask_input=True)
                rec.update({k: round(v, 5) for k, v in evaluate(ids, split.test[users], ks=(20,)).items()})
            except ValueError as exc:
                rec["recommend_error"] = str(exc)
    else:
        from sansa_gpu import SANSA

        SANSA(l2=l2, density=0.5, factorizer="icf", refine_sweeps=1, device="cpu").fit(tiny, check_memory=False)
        kw = {} if refine_tol is None else {"refine_tol": refine_tol}
        model = SANSA(l2=l2, density=density, factorizer="icf", refine_sweeps=sweeps, device="cpu", ordering=ordering,
                      min_cooccurrence=min_cooccurrence, **kw)
        rec.update(ordering=ordering, refine_tol=model.refine_tol, min_cooccurrence=min_cooccurrence)
        t0 = time.perf_counter()
        est = model.estimate_memory(X)
        rec["estimate_seconds"] = time.perf_counter() - t0
        rec["estimated_peak_gb"] = round(est["peak"] / 1e9, 3)
        rec["nnz_gram_lower"] = est["nnz_gram"]
        t0 = time.perf_counter()
        model.fit(X, check_memory=False)
        rec["fit_seconds"] = time.perf_counter() - t0
        rec.update(fit_summary(model))
        rec.update({k: model.stats_[k] for k in ("nnz_L", "nnz_K", "nnz_Wt", "nnz_Z", "factorize_parts")})
        rec["density_"] = model.density_
        if save_dir is not None:
            import os
            import tempfile

            with tempfile.TemporaryDirectory(dir=save_dir) as tmp:
                path = os.path.join(tmp, "model.npz")
                t0 = time.perf_counter()
                model.save(path)
                rec["save_seconds"] = time.perf_counter() - t0
                rec["saved_bytes"] = os.path.getsize(path)
        rec["total_seconds"] = round(sum(rec.get(k, 0.0) for k in ("data_seconds", "estimate_seconds", "fit_seconds",
                                                                    "save_seconds")), 2)
        if split is not None:
            rec.update(test_metrics(model, split))
    rec["peak_rss_gb"] = round(peak_rss_gb(), 3)
    queue.put(rec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--data", nargs="*", default=[])
    ap.add_argument("--synthetic", nargs="*", type=int, default=[])
    ap.add_argument("--density", type=lambda v: None if v == "default" else float(v), default=5e-4,
                    help="weights density, or 'default' (ours: SANSA's default, 16 nonzeros per item column)")
    ap.add_argument("--save-dir", default=None, help="ours: also time model.save into a temporary file here "
                    "(end to end: total_seconds = data + estimate + fit + save)")
    ap.add_argument("--l2", type=float, default=20.0)
    ap.add_argument("--sweeps", type=int, default=2)
    ap.add_argument("--impls", nargs="+", default=["official", "ours"])
    ap.add_argument("--orderings", nargs="+", default=["colamd"], help="item orderings for ours (SANSA ordering=)")
    ap.add_argument("--refine-tol", type=float, default=None, help="SANSA refine_tol for ours (default: the model's)")
    ap.add_argument("--min-cooccurrence", type=float, nargs="+", default=[0.0], help="Gram pruning thresholds for ours")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scale.jsonl"))
    args = ap.parse_args(argv)
    sources = list(args.data) + [f"synthetic_{n}" for n in args.synthetic]
    for source in sources:
        for impl in args.impls:
            ours = impl == "ours"
            for ordering in (args.orderings if ours else ["colamd"]):
                for mc in (args.min_cooccurrence if ours else [0.0]):
                    rec = run_isolated(_run, (impl, source, args.density, args.l2, args.sweeps, args.data_dir, ordering,
                                              args.refine_tol, mc, args.save_dir), {"implementation": impl, "data": source})
                    emit(rec, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
