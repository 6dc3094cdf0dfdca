"""What does validating the input cost? ``check_interactions`` (called by fit, recommend, score and tune)
on a canonical float32 ``csr_matrix`` (returned without a copy) against the same matrix as a
``csr_array`` (converted, so copied: the cost every input paid before the no-copy path).

One JSON line per case: sizes, median seconds of ``--repeat`` calls, peak bytes allocated during a call
(tracemalloc, which sees NumPy's buffers), whether the input came back itself.

    python benchmarks/check_bench.py --users 2000000 --items 200000 --nnz 40000000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _isolated import emit, git_commit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    import platform

    import numpy as np
    import scipy.sparse as sp

    from sansa_gpu.validation import check_interactions

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=2_000_000)
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--nnz", type=int, default=40_000_000, help="pairs drawn (duplicates merged)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "check.jsonl"))
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    rows = np.sort(rng.integers(0, args.users, args.nnz))
    cols = rng.integers(0, args.items, args.nnz)
    X = sp.csr_matrix((np.ones(args.nnz, np.float32), (rows, cols)), shape=(args.users, args.items))
    X.sum_duplicates()
    X.data[:] = 1.0
    del rows, cols
    check_interactions(X[:10])  # compile the row check
    for case, M in (("canonical csr_matrix (no copy)", X), ("csr_array (copied)", sp.csr_array(X))):
        seconds, peaks, same = [], [], None
        for _ in range(args.repeat):
            tracemalloc.start()
            t0 = time.perf_counter()
            out = check_interactions(M)
            seconds.append(time.perf_counter() - t0)
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
            same = out is M
            del out
        emit({"what": "check_interactions", "case": case, "data": "synthetic uniform", "users": args.users,
              "items": args.items, "nnz": int(X.nnz), "seconds": round(statistics.median(seconds), 4),
              "seconds_all": [round(s, 4) for s in seconds], "peak_alloc_mb": round(statistics.median(peaks) / 1e6, 1),
              "returned_input": same, "commit": git_commit(), "machine": platform.node(), "device": "cpu"}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
