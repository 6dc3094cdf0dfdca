"""What ``SANSA(factorizer="auto")`` chooses on each shared dataset, and why: the inputs of
``sansa_gpu.factorize.choose_factorizer`` (items, interactions per user, nonzeros per item column at the
default density), the exact factor's predicted seconds from its structure (the time model ``tune``
uses) beside the seconds measured by ``benchmarks/exact_cost.py`` where there is a record, the choice
of the rule and of the old 20,000-item rule. No fit: the structural analysis only (0.4-4 s each).

    python benchmarks/auto_rule.py --data ml-1m-implicit pinterest ... --out benchmarks/results/auto_rule.jsonl
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


def _measured_exact_seconds() -> dict:
    path = ROOT / "benchmarks" / "results" / "exact_cost.jsonl"
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if "exact_seconds" in r:
                out[r["data"]] = r["exact_seconds"]
    return out


def main(argv=None) -> None:
    from sansa_gpu import SANSA
    from sansa_gpu.data import load_split
    from sansa_gpu.factorize import (AUTO_CHOLMOD_MAX_SECONDS, AUTO_CHOLMOD_MIN_ITEMS_PER_USER,
                                     AUTO_CHOLMOD_MIN_NNZ_PER_ITEM, EXACT_PROFILE_MAX_ITEMS, predict_exact_seconds)
    from sansa_gpu.factorize.rule import interactions_per_user
    from sansa_gpu.memory import exact_factor_profile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    measured = _measured_exact_seconds()
    for data in args.data:
        X = load_split(Path(args.data_dir) / data).train
        X.data[:] = 1.0
        model = SANSA()
        n = X.shape[1]
        per_user = interactions_per_user(X)
        per_item = model.density_for(n, per_user) * n  # what SANSA() would use on this data
        t0 = time.perf_counter()
        choice, reason = model.choose_factorizer(X)
        choose_s = time.perf_counter() - t0
        predicted = None
        if n <= EXACT_PROFILE_MAX_ITEMS:
            predicted = round(predict_exact_seconds(exact_factor_profile(X, "colamd")), 2)
        old = ("cholmod" if n <= 20_000 and per_item >= AUTO_CHOLMOD_MIN_NNZ_PER_ITEM
               and per_user >= AUTO_CHOLMOD_MIN_ITEMS_PER_USER else "icf")
        emit({"what": "auto_factorizer_rule", "data": data, "commit": git_commit(), "n_items": int(n),
              "n_users": int(X.shape[0]), "items_per_user": round(per_user, 1), "nnz_per_item": round(per_item, 1),
              "predicted_exact_seconds": predicted, "measured_exact_seconds": measured.get(data),
              "max_seconds": AUTO_CHOLMOD_MAX_SECONDS, "choice": choice, "reason": reason,
              "choose_seconds": round(choose_s, 2), "old_rule_choice": old, "machine": "vm", "cpus": 2,
              "device": "cpu"}, args.out)


if __name__ == "__main__":
    main()
