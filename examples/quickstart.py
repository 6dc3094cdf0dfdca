"""The README's main job: synthetic data -> split -> SANSA and dense EASE side by side.

Prints Recall@20 (both definitions), nDCG@20, fit time and model size for each, then the top-10
items for a few users. Needs no download: the data is generated (seeded).
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from sansa_gpu import EASE, SANSA, warm_up
from sansa_gpu.data import random_holdout_split
from sansa_gpu.metrics import evaluate
from sansa_gpu.synthetic import synthetic_interactions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=5_000)
    ap.add_argument("--density", type=float, default=5e-3)
    ap.add_argument("--l2", type=float, default=50.0)
    ap.add_argument("--sweeps", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every pipeline stage")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s: %(message)s")

    X = synthetic_interactions(n_users=args.users, n_items=args.items, seed=0)
    split = random_holdout_split(X, test_fraction=0.2, seed=0)
    users = split.eval_users
    print(f"data: {X.shape[0]} users x {X.shape[1]} items, {X.nnz} interactions; "
          f"train {split.train.nnz}, test {split.test.nnz} ({users.size} users with test items)")

    rows = []
    models = {
        "SANSA": SANSA(l2=args.l2, density=args.density, refine_sweeps=args.sweeps, device=args.device),
        "EASE": EASE(l2=args.l2),
    }
    # numba compiles the CPU kernels on their first call and caches them on disk: on the first run after
    # an install this takes tens of seconds, on later runs well under one. Pay it here, apart from the fits.
    compile_s = sum(warm_up(model) for model in models.values())
    print(f"compile (first run after install only; cached afterwards): {compile_s:.2f} s")
    for name, model in models.items():
        t0 = time.perf_counter()
        model.fit(split.train)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ids, _ = model.recommend(split.train[users], k=20)
        rec_s = time.perf_counter() - t0
        m = evaluate(ids, split.test[users], ks=(20,))
        size = model.model_bytes if name == "SANSA" else model.B_.nbytes
        rows.append((name, m["recall@20"], m["recall_bars@20"], m["ndcg@20"], fit_s, rec_s, size / 1e6))

    print(f"\n{'model':<6} {'Recall@20':>9} {'R@20 BARS':>9} {'nDCG@20':>8} {'fit s':>7} {'rec s':>6} {'size MB':>8}")
    for r in rows:
        print(f"{r[0]:<6} {r[1]:>9.4f} {r[2]:>9.4f} {r[3]:>8.4f} {r[4]:>7.2f} {r[5]:>6.2f} {r[6]:>8.2f}")

    sansa = models["SANSA"]
    ids, scores = sansa.recommend(split.train[users[:3]], k=10)
    print("\nSANSA top-10 for three users (item id:score):")
    for u, (row_ids, row_scores) in zip(users[:3], zip(ids, scores)):
        print(f"  user {u}: " + " ".join(f"{i}:{s:.3f}" for i, s in zip(row_ids, row_scores) if i >= 0))
    ids, scores = sansa.similar_items([0, 1], k=5)
    print("\nSANSA: the five items most related to items 0 and 1 (item id:score):")
    for i, (row_ids, row_scores) in enumerate(zip(ids, scores)):
        print(f"  item {i}: " + " ".join(f"{j}:{s:.3f}" for j, s in zip(row_ids, row_scores) if j >= 0))


if __name__ == "__main__":
    main()
