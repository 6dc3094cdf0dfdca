"""The one-pass Gram (issue "Training on one GPU"): CPU fits before and after, side by side, and the
heavy-user catalogue.

Each fit runs in its own process (peak RSS is its own) and imports the package from a source tree:
``--before DIR`` is a checkout of the earlier code (e.g. ``git worktree add /tmp/sansa_before <commit>``),
the current checkout is "after". Runs alternate before / after ``--repeats`` times so that the noise of a
shared machine falls on both; one JSON line per fit, then one summary line per case with the medians.

    python benchmarks/gram_pass.py --cases synthetic_1000000 --before /tmp/sansa_before --repeats 1
    python benchmarks/gram_pass.py --cases heavy_100000 ordinary_100000

Cases: ``synthetic_N`` (the scale benchmark's generator: N items, 5N users, 4.5 items per user,
default density, min_cooccurrence 2, popularity ordering); ``ordinary_N`` (N items, 2N users, the
same generator) and ``heavy_N`` (the same plus 1,000 users of 5,000 items each, drawn by item
popularity: music / news data), fitted with every default first; when that is refused for memory,
the record keeps the message and the fit is repeated with the setting the message names.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _isolated import emit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def make_data(case: str):
    import numpy as np
    import scipy.sparse as sp

    from sansa_gpu.synthetic import synthetic_interactions

    kind, n = case.rsplit("_", 1)
    n = int(n)
    if kind == "synthetic":
        return synthetic_interactions(n_users=5 * n, n_items=n, mean_items_per_user=4.5,
                                      n_communities=max(50, n // 2000), seed=0)
    X = synthetic_interactions(n_users=2 * n, n_items=n, mean_items_per_user=4.5, n_communities=max(50, n // 2000),
                               seed=0)
    if kind == "ordinary":
        return X
    rng = np.random.default_rng(1)
    pop = np.bincount(X.indices, minlength=n).astype(np.float64) + 1.0
    pop /= pop.sum()
    rows = [rng.choice(n, size=5000, replace=False, p=pop) for _ in range(1000)]
    H = sp.csr_matrix((np.ones(5_000_000, np.float32), np.concatenate(rows), np.arange(0, 5_000_001, 5000)),
                      shape=(1000, n))
    H.sort_indices()
    return sp.vstack([X, H]).tocsr()


def child(case: str, params: dict) -> dict:
    import resource

    import numpy as np
    import scipy.sparse as sp

    from sansa_gpu import SANSA

    tiny = sp.random(300, 60, density=0.2, format="csr", random_state=0, dtype=np.float32)
    tiny.data[:] = 1.0
    SANSA(l2=20.0, density=0.5, factorizer="icf", refine_sweeps=1, device="cpu").fit(tiny, check_memory=False)  # compile
    t0 = time.perf_counter()
    X = make_data(case)
    rec = {"data_seconds": round(time.perf_counter() - t0, 2), "n_users": int(X.shape[0]), "n_items": int(X.shape[1]),
           "nnz_X": int(X.nnz), "sum_user_len_sq": float((np.diff(X.indptr).astype(np.float64) ** 2).sum())}
    model = SANSA(device="cpu", **params)
    t0 = time.perf_counter()
    try:
        model.fit(X)
    except MemoryError as exc:
        rec.update(refused=str(exc), refuse_seconds=round(time.perf_counter() - t0, 2))
    else:
        st = model.stats_
        rec.update(fit_seconds=round(time.perf_counter() - t0, 2), factorize_parts=st["factorize_parts"],
                   refine_seconds=round(st["refine_seconds"], 2), weights_seconds=round(st["weights_seconds"], 2),
                   nnz_L=st["nnz_L"], stage_devices=st.get("stage_devices"), icf_shift=st.get("icf_shift"))
    rec["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 3)
    return rec


def run_child(tree: Path, case: str, params: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", case, "--params", json.dumps(params)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=str(tree))
    line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if proc.returncode != 0 or not line.startswith("{"):
        return {"error": f"rc={proc.returncode}: {proc.stderr[-800:]}"}
    return json.loads(line)


def commit_of(tree: Path) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=["synthetic_1000000"])
    ap.add_argument("--before", default=None, help="source tree of the earlier code (compared side by side)")
    ap.add_argument("--after", default=str(ROOT), help="source tree of the new code (default: this checkout)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gram_pass.jsonl"))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, json.loads(args.params))))
        return 0
    import statistics

    trees = [("after", Path(args.after).resolve())] + ([("before", Path(args.before).resolve())] if args.before else [])
    for case in args.cases:
        params = {"factorizer": "icf", "min_cooccurrence": 2.0, "ordering": "popularity"} if case.startswith(
            "synthetic") else {}
        runs: dict = {name: [] for name, _ in trees}
        for rep in range(args.repeats):
            for name, tree in (trees if rep % 2 == 0 else trees[::-1]):
                rec = run_child(tree, case, params)
                if "refused" in rec:  # the default was refused: fit again with the setting the message names
                    m = re.search(r"max_gram_per_item=(\d+)", rec["refused"])
                    if m:
                        again = run_child(tree, case, {**params, "max_gram_per_item": int(m.group(1))})
                        rec = {**again, "default_refused": rec["refused"], "refuse_seconds": rec["refuse_seconds"],
                               "params_used": {**params, "max_gram_per_item": int(m.group(1))}}
                rec = {"what": "gram_pass_fit", "data": case, "tree": name, "commit": commit_of(tree),
                       "params": params, "repeat": rep, "device": "cpu (2-core VM)",
                       "date": time.strftime("%Y-%m-%d"), **rec}
                runs[name].append(rec)
                emit(rec, args.out)
        summary = {"what": "gram_pass_summary", "data": case, "repeats": args.repeats, "device": "cpu (2-core VM)",
                   "date": time.strftime("%Y-%m-%d")}
        for name, recs in runs.items():
            ok = [r for r in recs if "fit_seconds" in r]
            if ok:
                summary[f"{name}_fit_seconds_median"] = statistics.median(r["fit_seconds"] for r in ok)
                summary[f"{name}_peak_rss_gb_median"] = statistics.median(r["peak_rss_gb"] for r in ok)
        if "before_fit_seconds_median" in summary and "after_fit_seconds_median" in summary:
            summary["fit_speedup"] = round(summary["before_fit_seconds_median"] / summary["after_fit_seconds_median"], 3)
        emit(summary, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
