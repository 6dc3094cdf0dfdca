"""What the first run after an install pays for compilation: one JSON line per process, each in a fresh
process; the first with an empty numba cache (``NUMBA_CACHE_DIR`` set to a new temporary folder), the
second reusing it.

Per part, on the tiny inputs of ``sansa_gpu.warm_up`` (so the seconds are compilation, or loading the
cache, and no real work): the ICF fit, the first call of each CPU scoring plan, similar_items, and EASE's
fit + top-k.

    python benchmarks/first_run.py --out benchmarks/results/first_run.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _isolated import emit, git_commit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def parts() -> dict:
    """Seconds of each first call, in this process (run by main() in a child process)."""
    t_import = time.perf_counter()
    import numpy as np

    from sansa_gpu import EASE, SANSA
    from sansa_gpu.synthetic import synthetic_interactions

    out = {"import": time.perf_counter() - t_import}
    X = synthetic_interactions(n_users=300, n_items=60, mean_items_per_user=8, n_communities=3, seed=0)
    t = time.perf_counter()
    model = SANSA(device="cpu").fit(X, check_memory=False)
    out["sansa_fit"] = time.perf_counter() - t
    for plan in ("factored", "product", "sparse_product"):
        t = time.perf_counter()
        model.recommend(X[:20], 5, plan=plan)
        out[f"recommend_{plan}"] = time.perf_counter() - t
    t = time.perf_counter()
    model.recommend(X[:20], 5)
    model.similar_items(np.arange(3), 5)
    out["auto_and_similar_items"] = time.perf_counter() - t
    t = time.perf_counter()
    EASE().fit(X).recommend(X[:20], 5)
    out["ease"] = time.perf_counter() - t
    return {k: round(v, 3) for k, v in out.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "first_run.jsonl"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(parts()))
        return 0
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for run in ("empty cache", "cached"):
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True, text=True,
                                  check=True)
            seconds = json.loads(proc.stdout.strip().splitlines()[-1])
            emit({"what": "first_run_compile", "run": run, "process_seconds": round(time.perf_counter() - t0, 2),
                  "seconds": seconds, "total_first_calls": round(sum(seconds.values()), 2), "commit": git_commit(),
                  "machine": os.uname().nodename, "device": "cpu"}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
