"""Batch-scoring throughput (users/s), one JSON line per case.

Real data: our CPU path beside the official ``sansa==1.1.0`` forward + mask + top-k, *on the same
weights* (ours, loaded into the official model with ``load_weights``), all users of the split, in
one run, median of ``--repeats`` interleaved runs each; the top-k lists are compared too.

Synthetic: users sampled from the generator (``--per-user`` items each) scored against a model of
``--items`` items fitted at each density, on ``--device`` (cpu or gpu); on the GPU the first
``--check-users`` users are compared with the CPU path.

    python benchmarks/score_bench.py --data gowalla --densities 5e-4 2e-3
    python benchmarks/score_bench.py --synthetic-users 1000000 10000000 --densities 5e-5 5e-4 2e-3 --device gpu
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _isolated import emit, peak_rss_gb  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _fit(X, density, l2, ordering):
    from sansa_gpu import SANSA

    t0 = time.perf_counter()
    model = SANSA(l2=l2, density=density, factorizer="icf", ordering=ordering, refine_sweeps=1, refine_tol=1e-2,
                  device="cpu").fit(X, check_memory=False)
    return model, time.perf_counter() - t0


def _official_topk(weights, X, k, block):
    import logging

    logging.disable(logging.WARNING)
    from sansa import (
        SANSA as Official,
        ICFGramianFactorizerConfig,
        SANSAConfig,
        UMRUnitLowerTriangleInverterConfig,
    )

    config = SANSAConfig(l2=1.0, weight_matrix_density=1e-3, gramian_factorizer_config=ICFGramianFactorizerConfig(),
                         lower_triangle_inverter_config=UMRUnitLowerTriangleInverterConfig())  # unused: weights loaded
    model = Official(config).load_weights(weights)
    ids = np.empty((X.shape[0], k), dtype=np.int64)
    scores = np.empty((X.shape[0], k), dtype=np.float32)
    for start in range(0, X.shape[0], block):
        i, s = model.recommend(X[start:start + block], k=k, mask_input=True)
        ids[start:start + block] = i
        scores[start:start + block] = s
    return ids, scores


def real_data(args) -> None:
    from sansa_gpu.data import load_adjacency_split

    split = load_adjacency_split(Path(args.data_dir) / args.data)
    X = split.train
    X = X[np.diff(X.indptr) > 0]  # users with a history (the official top-k fails on empty rows)
    for density in args.densities:
        model, fit_s = _fit(split.train, density, args.l2, args.ordering)
        Wt, Z = model.weights_
        model.recommend(X[:100], k=args.k)  # compile
        ours, official = [], []
        off = None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ids, scores = model.recommend(X, k=args.k)
            ours.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            try:
                off = _official_topk((Wt, Z), X, args.k, args.official_block)
                official.append(time.perf_counter() - t0)
            except ValueError as exc:  # rows with fewer than k candidates
                official.append(None)
                off = str(exc)
        rec = {"what": "score_cpu_vs_official", "data": args.data, "density": density, "k": args.k,
               "n_users": int(X.shape[0]), "n_items": int(X.shape[1]), "nnz_X": int(X.nnz), "model_nnz": model.model_nnz,
               "fit_seconds": round(fit_s, 2), "ours_seconds": [round(t, 3) for t in ours],
               "official_seconds": [None if t is None else round(t, 3) for t in official],
               "ours_users_per_s": round(X.shape[0] / statistics.median(ours), 1)}
        if isinstance(off, tuple) and all(t is not None for t in official):
            rec["official_users_per_s"] = round(X.shape[0] / statistics.median(official), 1)
            rec["speedup"] = round(statistics.median(official) / statistics.median(ours), 2)
            o_ids, o_scores = off
            valid = ids >= 0
            rec["same_topk_rows"] = float(np.mean(np.all(o_ids == ids, axis=1)))
            rec["max_score_diff"] = float(np.max(np.abs(np.where(valid, o_scores - scores, 0))))
        else:
            rec["official_error"] = off if isinstance(off, str) else None
        rec.update(peak_rss_gb=round(peak_rss_gb(), 3), machine=platform.node(), device="cpu")
        emit(rec, args.out)


def synthetic(args) -> None:
    from sansa_gpu.synthetic import synthetic_interactions

    train = synthetic_interactions(n_users=5 * args.items, n_items=args.items, mean_items_per_user=args.per_user,
                                   n_communities=max(50, args.items // 2000), seed=0)
    for density in args.densities:
        model, fit_s = _fit(train, density, args.l2, args.ordering)
        model.device = args.device
        from sansa_gpu.backend import resolve_device

        model.device_ = resolve_device(args.device)
        model.recommend(train[:100], k=args.k)  # compile / upload
        for n_users in args.synthetic_users:
            t0 = time.perf_counter()
            X = synthetic_interactions(n_users=n_users, n_items=args.items, mean_items_per_user=args.per_user,
                                       n_communities=max(50, args.items // 2000), seed=1)
            gen_s = time.perf_counter() - t0
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                first = None
                for start, ids, scores in model.recommend_batches(X, k=args.k, batch_size=args.batch_size):
                    if first is None:
                        first = (ids[:args.check_users], scores[:args.check_users])
                times.append(time.perf_counter() - t0)
            rec = {"what": "score_synthetic", "device": model.device_, "density": density, "k": args.k,
                   "n_users": n_users, "n_items": args.items, "nnz_X": int(X.nnz), "model_nnz": model.model_nnz,
                   "fit_seconds": round(fit_s, 2), "generate_seconds": round(gen_s, 2),
                   "seconds": [round(t, 3) for t in times], "users_per_s": round(n_users / statistics.median(times), 1)}
            if model.device_ == "gpu":
                from sansa_gpu.cpu.inference import recommend_sparse

                Xc = X[:first[0].shape[0]]
                c_ids, c_scores = recommend_sparse(Xc, *model.weights_, args.k)
                rec["check_users"] = int(Xc.shape[0])
                rec["same_topk_rows"] = float(np.mean(np.all(c_ids == first[0], axis=1)))
                rec["max_score_diff"] = float(np.max(np.abs(np.where(c_ids >= 0, c_scores - first[1], 0))))
            rec.update(peak_rss_gb=round(peak_rss_gb(), 3), machine=platform.node())
            emit(rec, args.out)
            del X


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--data", default=None, help="a split folder of --data-dir (ours vs official on the CPU)")
    ap.add_argument("--synthetic-users", nargs="*", type=int, default=[])
    ap.add_argument("--items", type=int, default=40_000)
    ap.add_argument("--per-user", type=float, default=30.0)
    ap.add_argument("--densities", nargs="+", type=float, default=[5e-4, 2e-3])
    ap.add_argument("--ordering", default="popularity", help="ICF ordering of the benchmark models")
    ap.add_argument("--l2", type=float, default=20.0)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--official-block", type=int, default=5000)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--check-users", type=int, default=20_000)
    ap.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "score.jsonl"))
    args = ap.parse_args(argv)
    if args.data:
        real_data(args)
    if args.synthetic_users:
        synthetic(args)
    if not (args.data or args.synthetic_users):
        ap.error("give --data and/or --synthetic-users")
    return 0


if __name__ == "__main__":
    sys.exit(main())
