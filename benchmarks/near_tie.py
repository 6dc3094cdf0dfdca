"""Would a one-standard-error rule choose better than ``tune``'s plain maximum? Evaluated after the fact on the
searches in ``benchmarks/results/tune.jsonl`` (the last tune record per dataset), on validation data only for
the choice and on the test split for the verdict (issue 25, part 3).

Per dataset: the validation split of that search is rebuilt (same kind, fraction and seed, from the same binarised
training split), the chosen trial is refitted on it and its per-user Recall@20 gives the standard error of its
validation mean (std / sqrt(users)); the rule picks, among the completed trials whose validation Recall@20 is within
one standard error of the best, the smallest model (fewest weight bytes; ties: the larger l2). That model is
refitted on the whole training split and scored on the test split beside the tuned model's recorded test Recall@20.

    python benchmarks/near_tie.py --data ml-1m-implicit pinterest ... --out benchmarks/results/near_tie.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _isolated import emit, git_commit, test_metrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ("factorizer", "l2", "density", "min_cooccurrence", "refine_sweeps")


def _model(t: dict):
    from sansa_gpu import SANSA

    return SANSA(l2=t["l2"], density=t["density"], factorizer=t["factorizer"],
                 min_cooccurrence=t["min_cooccurrence"] if t["factorizer"] == "icf" else 0.0,
                 refine_sweeps=t["refine_sweeps"], device="cpu", max_gram_per_item=None)


def main(argv=None) -> None:
    from sansa_gpu.data import load_split
    from sansa_gpu.metrics import recall_per_user
    from sansa_gpu.tuning import validation_split

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--records", default=str(ROOT / "benchmarks" / "results" / "tune.jsonl"))
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    recs = [json.loads(line) for line in Path(args.records).read_text().splitlines() if line.strip()]
    for data in args.data:
        tuned = [r for r in recs if r.get("data") == data and r.get("case") == "tune" and "error" not in r][-1]
        metric = tuned["validation_metric"]
        ok = [t for t in tuned["trials"] if t["status"] == "ok"]
        best = max(ok, key=lambda t: (t[metric], -t["model_bytes"]))
        split = load_split(Path(args.data_dir) / data)
        split.train.data[:] = 1.0
        v = tuned["validation"]
        vs = validation_split(split.train, v["kind"], v["fraction"], v["seed"])
        t0 = time.perf_counter()
        ids, _ = _model(best).fit(vs.train).recommend(vs.inputs, k=20)
        per_user = recall_per_user(ids, vs.targets, 20)
        se = float(per_user.std(ddof=1) / np.sqrt(per_user.size))
        near = [t for t in ok if t[metric] >= best[metric] - se]
        pick = min(near, key=lambda t: (t["model_bytes"], -t["l2"]))
        same = all(pick[p] == best[p] for p in PARAMS)
        pick_test = tuned["recall@20"] if same else test_metrics(_model(pick).fit(split.train), split)["recall@20"]
        emit({"what": "near_tie_rule", "data": data, "tune_commit": tuned.get("commit"), "commit": git_commit(),
              "validation_best": best[metric], "validation_mean_check": round(float(per_user.mean()), 6),
              "validation_se": round(se, 6), "within_one_se": len(near), "trials": len(ok),
              "tuned": {p: best[p] for p in PARAMS}, "tuned_test_recall@20": tuned["recall@20"],
              "rule": {p: pick[p] for p in PARAMS}, "rule_test_recall@20": pick_test,
              "rule_model_bytes": pick["model_bytes"], "tuned_model_bytes": best["model_bytes"],
              "seconds": round(time.perf_counter() - t0, 1), "machine": "vm", "cpus": 2, "device": "cpu"}, args.out)


if __name__ == "__main__":
    main()
