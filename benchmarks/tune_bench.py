"""Does tuning pay? ``sansa_gpu.tune`` on a dataset's training split, judged on its test split beside the
default-parameter model and the official ``sansa==1.1.0`` at the chosen density over the same λ grid.

Datasets are folders of ``--data-dir`` read by ``sansa_gpu.data.load_split``: the published split where
there is one (train.txt / test.txt, yelp's *.rating files), else a per-user 80/20 random holdout, seed 0
(citeulike-a/-t, lastfm-2k, amazon-videogames-sasrec). Per dataset (each step in its own spawned process,
one after another), JSON lines:

- ``tune``: ``tune(train, seed, max_seconds, ...)`` (validation carved out of train only: per-user
  random holdout of 20%; the test split is never seen), every trial (``trials``), the chosen
  parameters, the refit's *test* Recall@20 / BARS / nDCG@20, search seconds, peak RSS.
- ``default``: ``SANSA()`` with every default (its ``factorizer`` resolved by the auto rule) on train,
  test metrics.
- ``official``: the official package at the chosen density and factoriser (ICF ↔ its
  ICFGramianFactorizer, CHOLMOD ↔ CHOLMODGramianFactorizer; ``scans=1``, ``finetune_steps=5``) for
  every λ of the coarse grid the search tried with that factoriser, and the chosen λ (when the
  search refined it off the grid), fitted on train, test metrics per λ, and the best. Its own
  ``recommend`` ranks; where it fails because some user reaches fewer than k items (epinions), its
  weights are ranked by our masked top-k instead (``topk`` in each per-λ entry says which).
  ``--max-model-bytes`` passes a weights budget to the search (the record carries it).

    python benchmarks/tune_bench.py --data ml-1m-implicit pinterest gowalla --max-seconds 600 \\
        --out benchmarks/results/tune.jsonl --plot-dir benchmarks/results
    python benchmarks/tune_bench.py --data ml-1m-implicit --cases official     # from the last tune record
    python benchmarks/tune_bench.py --data epinions --cases official --jobs 2  # its λ fits in 2 processes
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _isolated import emit, git_commit, peak_rss_gb, run_isolated, test_metrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _split(data_dir, data):
    from sansa_gpu.data import load_split

    split = load_split(Path(data_dir) / data)  # published split, or a seeded 80/20 per-user holdout
    split.train.data[:] = 1.0  # binary implicit feedback (pinterest's files repeat some pairs)
    return split


def _tune(data_dir, data, seed, max_seconds, max_model_bytes, plot_dir, validation, queue):
    from sansa_gpu import tune

    split = _split(data_dir, data)
    t0 = time.perf_counter()
    r = tune(split.train, seed=seed, max_seconds=max_seconds, max_model_bytes=max_model_bytes,
             dense_ease=plot_dir is not None, progress=True, validation=validation)
    total = time.perf_counter() - t0
    rec = {"case": "tune", "seed": seed, "max_seconds": max_seconds, "max_model_bytes": max_model_bytes,
           "search_seconds": r.seconds,
           "total_seconds": round(total, 2), "chosen": r.best_params, "validation_metric": r.metric,
           "validation_best": r.best[r.metric], "not_started": r.extra["not_started"],
           "model_bytes": r.model.model_bytes, "factorizer_reason": r.model.stats_["factorizer_reason"],
           "dense_ease_validation": r.dense_ease, "validation": r.validation,
           "trials": [{k: v for k, v in t.items() if k != "peak_rss_bytes"} for t in r.trials],
           **test_metrics(r.model, split), "peak_rss_gb": round(peak_rss_gb(), 3)}
    if plot_dir is not None:
        path = Path(plot_dir) / f"tune_{data}.png"
        r.plot(path, title=f"{data}: validation Recall@20 against weights size (sansa_gpu.tune, seed {seed})")
        rec["plot"] = (str(path.resolve().relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path))
    queue.put(rec)


def _default(data_dir, data, queue):
    from sansa_gpu import SANSA

    split = _split(data_dir, data)
    model = SANSA(device="cpu")
    t0 = time.perf_counter()
    model.fit(split.train)
    queue.put({"case": "default", "params": model.get_params(), "factorizer_": model.factorizer_,
               "l2_": model.l2_, "refine_sweeps_": model.refine_sweeps_, "min_cooccurrence_": model.min_cooccurrence_,
               "density_": model.density_,
               "fit_seconds": round(time.perf_counter() - t0, 2), "model_bytes": model.model_bytes,
               **test_metrics(model, split), "peak_rss_gb": round(peak_rss_gb(), 3)})


def _official(data_dir, data, density, factorizer, l2s, queue):
    import logging

    import numpy as np
    import scipy.sparse as sp

    logging.disable(logging.WARNING)
    from sansa import (
        CHOLMODGramianFactorizerConfig,
        ICFGramianFactorizerConfig,
        SANSA,
        SANSAConfig,
        UMRUnitLowerTriangleInverterConfig,
    )

    from sansa_gpu.metrics import evaluate

    split = _split(data_dir, data)
    users = split.eval_users
    per_l2 = []
    for l2 in l2s:
        fac = ICFGramianFactorizerConfig() if factorizer == "icf" else CHOLMODGramianFactorizerConfig()
        config = SANSAConfig(l2=l2, weight_matrix_density=density, gramian_factorizer_config=fac,
                             lower_triangle_inverter_config=UMRUnitLowerTriangleInverterConfig(scans=1, finetune_steps=5))
        t0 = time.perf_counter()
        model = SANSA(config).fit(split.train)
        fit_s = time.perf_counter() - t0
        X = split.train[users]
        ids = np.full((X.shape[0], 20), -1, dtype=np.int64)
        has = np.flatnonzero(np.diff(X.indptr) > 0)
        topk = "official"
        try:
            ids[has], _ = model.recommend(X[has], k=20, mask_input=True)  # the official top-k fails on empty rows
        except ValueError:  # "kth out of bounds": some user reaches fewer than k items (a sparse model)
            # its own weights (Wᵀ, Z) ranked by our masked top-k, which pads such rows instead
            from sansa_gpu.cpu.inference import recommend_sparse

            Wt, Z = (sp.csr_matrix(M, dtype=np.float32) for M in model.weights)
            Wt.sum_duplicates()  # its Wᵀ comes out with unsorted rows
            Z.sum_duplicates()
            ids, _ = recommend_sparse(sp.csr_matrix(X, dtype=np.float32), Wt, Z, 20, plan="factored")
            topk = "ours on the official's weights (its recommend: fewer than k candidates for some user)"
        per_l2.append({"l2": l2, "fit_seconds": round(fit_s, 2), "topk": topk,
                       **{k: round(float(v), 5) for k, v in evaluate(ids, split.test[users], ks=(20,)).items()}})
        print(f"official {data} density={density:.3g} {per_l2[-1]}", file=sys.stderr, flush=True)  # slow fits: progress
    queue.put({"case": "official", "density": density, "factorizer": factorizer, **_best_of(per_l2),
               "peak_rss_gb": round(peak_rss_gb(), 3)})


def _best_of(per_l2: list) -> dict:
    """The official record's summary of its per-λ entries: all of them, and the best by test Recall@20."""
    best = max(per_l2, key=lambda r: r["recall@20"])
    return {"per_l2": per_l2, "best": best, "recall@20": best["recall@20"], "recall_bars@20": best["recall_bars@20"],
            "ndcg@20": best["ndcg@20"]}


def _official_parallel(data_dir, data, density, factorizer, l2s, jobs, label) -> dict:
    """``_official`` over ``l2s`` split round-robin across ``jobs`` spawned processes run at once (the
    official fits one λ on one core; epinions takes ~25 min per λ), merged into one record: per-λ
    entries in ``l2s`` order, the best over all of them. A failed group makes the record an error."""
    from concurrent.futures import ThreadPoolExecutor

    groups = [l2s[i::jobs] for i in range(min(jobs, len(l2s)))]
    with ThreadPoolExecutor(len(groups)) as pool:  # threads only wait on their processes
        parts = list(pool.map(lambda g: run_isolated(_official, (data_dir, data, density, factorizer, g), label), groups))
    failed = [p for p in parts if "error" in p]
    if failed:
        return failed[0]
    per_l2 = sorted((e for p in parts for e in p["per_l2"]), key=lambda e: l2s.index(e["l2"]))
    return {**parts[0], **_best_of(per_l2), "peak_rss_gb": max(p["peak_rss_gb"] for p in parts), "jobs": len(groups)}


def _last_tune(path: str, data: str) -> dict:
    import json

    found = [r for r in map(json.loads, Path(path).read_text().splitlines())
             if r.get("data") == data and r.get("case") == "tune" and "chosen" in r] if Path(path).exists() else []
    if not found:
        raise SystemExit(f"no tune record for {data} in {path}: run with --cases tune first")
    return found[-1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--data", nargs="+", default=["ml-1m-implicit", "pinterest", "gowalla"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-seconds", type=float, default=600.0)
    ap.add_argument("--max-model-bytes", type=float, default=None)
    ap.add_argument("--validation", choices=("holdout", "users"), default="holdout",
                    help="tune's validation split (the record's validation.kind says which)")
    ap.add_argument("--plot-dir", default=None, help="write tune_<data>.png here")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tune.jsonl"))
    ap.add_argument("--cases", nargs="+", choices=("tune", "default", "official"), default=["tune", "default", "official"],
                    help="without 'tune', 'official' uses the last tune record of the dataset in --out")
    ap.add_argument("--jobs", type=int, default=1,
                    help="official: fit its λ grid in this many processes at once (fit seconds then share cores)")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error(f"--jobs must be >= 1, got {args.jobs}")
    missing = [d for d in args.data if not (Path(args.data_dir) / d).is_dir()]
    if missing:
        ap.error(f"no dataset folder {missing} under --data-dir {args.data_dir}")
    commit = git_commit()
    for data in args.data:
        base = {"what": "tune_vs_default_vs_official", "data": data, "commit": commit}
        if "tune" in args.cases:
            t = run_isolated(_tune, (args.data_dir, data, args.seed, args.max_seconds, args.max_model_bytes, args.plot_dir,
                                     args.validation),
                             {**base, "case": "tune"})
            emit({**base, **t}, args.out)
        else:  # the last tune record of this dataset in --out
            t = _last_tune(args.out, data)
        if "default" in args.cases:
            emit({**base, **run_isolated(_default, (args.data_dir, data), {**base, "case": "default"})}, args.out)
        if "official" in args.cases and "chosen" in t:
            c = t["chosen"]
            from sansa_gpu.tuning import DEFAULT_L2_GRID

            l2s = sorted({tr["l2"] for tr in t["trials"] if tr["factorizer"] == c["factorizer"] and tr["status"] == "ok"
                          and tr["l2"] in DEFAULT_L2_GRID} | {c["l2"]},
                         key=lambda l2: abs(math.log(l2 / c["l2"])))  # the chosen λ first, then its neighbours
            emit({**base, **_official_parallel(args.data_dir, data, c["density"], c["factorizer"], l2s, args.jobs,
                                               {**base, "case": "official"})}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
