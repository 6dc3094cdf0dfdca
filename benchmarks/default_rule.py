"""Candidate defaults of ``SANSA()`` side by side: test Recall@20 and fit seconds of each candidate on each
dataset, every fit in its own process after a warm-up (so numba's cache load is not timed), on the splits of
``tune_bench.py`` (issue 25: the default within 5% of dense EASE at a fit time within 2x of the old default).

A candidate is ``name=JSON`` of ``SANSA`` parameters plus two data-relative keys:
``per_item`` (density = per_item / n_items) and ``l2_per_diag`` (l2 = that many times the mean diagonal of
X^T X over the items with an interaction, i.e. the mean item popularity of binary data). Without ``--case``
the script runs the old default (``old``: l2 20, 16 per item, 2 sweeps, no Gram pruning, the auto factoriser) and
``SANSA()`` of this checkout (``default``).

    python benchmarks/default_rule.py --data ml-1m-implicit pinterest ... \\
        --case 'unscaled={"column_scaling": false, "l2_per_diag": 4}' --out benchmarks/results/default_rule.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _isolated import emit, fit_summary, git_commit, peak_rss_gb, run_isolated, test_metrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OLD_DEFAULT = {"l2": 20.0, "per_item": 16, "refine_sweeps": 2, "min_cooccurrence": 0}


def _resolve(spec: dict, X) -> dict:
    """SANSA keyword arguments of a candidate on the (users, items) CSR ``X``."""
    from sansa_gpu.gram import mean_gram_diagonal

    kw = dict(spec)
    if "per_item" in kw:
        kw["density"] = min(1.0, kw.pop("per_item") / X.shape[1])
    if "l2_per_diag" in kw:  # the same mean diagonal as SANSA's default l2 on the unscaled Gram
        kw["l2"] = kw.pop("l2_per_diag") * mean_gram_diagonal(X)
    return kw


def _fit(data_dir, data, name, spec, queue):
    import numpy as np

    from sansa_gpu import SANSA
    from sansa_gpu.data import load_split
    from sansa_gpu.warmup import warm_up

    split = load_split(Path(data_dir) / data)
    kw = _resolve(spec, split.train)
    model = SANSA(device="cpu", **kw)
    warm_up(model)
    t0 = time.perf_counter()
    model.fit(split.train)
    fit_seconds = time.perf_counter() - t0
    # where the budget went: the column lengths of W^T (an item whose column is its diagonal alone
    # takes no part in any other item's score)
    col_nnz = np.diff(model.weights_[0].tocsc().indptr)
    queue.put({"case": name, "spec": spec, "params": model.get_params(), "factorizer_": model.factorizer_,
               "l2_": model.l2_, "density_": model.density_, "refine_sweeps_": model.refine_sweeps_,
               "min_cooccurrence_": model.min_cooccurrence_,
               "nnz_per_item": round(model.density_ * split.train.shape[1], 1),
               "fit_seconds": round(fit_seconds, 2), **fit_summary(model), "model_bytes": model.model_bytes,
               "longest_weight_column": int(col_nnz.max()), "diagonal_only_items": round(float(np.mean(col_nnz <= 1)), 4),
               "icf_shift": model.stats_.get("icf_shift"), "icf_restarts": model.stats_.get("icf_restarts"),
               **test_metrics(model, split), "peak_rss_gb": round(peak_rss_gb(), 3)})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--case", action="append", default=[], help="name=JSON (repeatable)")
    ap.add_argument("--repeat", type=int, default=1, help="fits per case (fit seconds: the median is the record)")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    cases = [("old", OLD_DEFAULT), ("default", {})]
    for c in args.case:
        name, _, js = c.partition("=")
        cases.append((name, json.loads(js)))
    commit = git_commit()
    for data in args.data:
        for name, spec in cases:
            base = {"what": "default_rule", "data": data, "case": name, "commit": commit}
            runs = [run_isolated(_fit, (args.data_dir, data, name, spec), base, timeout=1800)
                    for _ in range(args.repeat)]
            rec = dict(runs[0])
            if "error" not in rec:
                times = sorted(r["fit_seconds"] for r in runs if "fit_seconds" in r)
                rec["fit_seconds_runs"] = times
                rec["fit_seconds"] = times[len(times) // 2]
            emit({**base, **rec}, args.out)


if __name__ == "__main__":
    main()
