"""How often the incomplete Cholesky breaks down on the shared datasets, and what each breakdown rule
costs: one JSON line per (dataset, nonzeros per item, l2, rule).

The Gram is the one a default ICF fit factorises: popularity ordering, column scaling, the 'auto' Gram
cap (16 entries per factor nonzero per item), training split with binary values. For each rule of
``sansa_gpu.factorize.incomplete_cholesky`` ('shift': restart with a larger global shift; 'compensate':
diagonal compensation of dropped entries; 'local': replace a broken pivot alone) the record has the
restarts, the shift used (``shift_ratio`` = used / asked), the local fixes, the ICF seconds and the
relative residual ||L Lᵀ - (A + l2 I)||_F / ||A + l2 I||_F on a sample of columns.

    python benchmarks/icf_breakdowns.py --data ml-1m-implicit pinterest gowalla --per-item 4 16 64 256 \\
        --l2 1 10 100 --out benchmarks/results/icf_breakdowns.jsonl
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _isolated import emit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _residual(L, A_lower, l2, sample=400, seed=0):
    """||L Lᵀ - (A + l2 I)||_F / ||A + l2 I||_F over a sample of columns (exact for small n)."""
    import numpy as np
    import scipy.sparse as sp

    n = A_lower.shape[0]
    cols = np.sort(np.random.default_rng(seed).choice(n, min(n, sample), replace=False))
    full = (A_lower + sp.tril(A_lower, -1).T).tocsc() + l2 * sp.identity(n, format="csc")
    approx = (L @ L.T[:, cols]).tocsc()
    exact = full[:, cols]
    diff = approx - exact
    return float(sp.linalg.norm(diff) / max(sp.linalg.norm(exact), 1e-300))


def run(args) -> None:
    import numpy as np

    from sansa_gpu import cpu
    from sansa_gpu.data import load_split
    from sansa_gpu.factorize import incomplete_cholesky, item_ordering, nnz_budget
    from sansa_gpu.gram import scaled_gram

    for data in args.data:
        X = load_split(Path(args.data_dir) / data).train.tocsr()  # the published split, or a seeded 80/20 one
        X.data[:] = 1.0
        n = X.shape[1]
        p = item_ordering(X, "popularity")
        for per_item in args.per_item:
            density = min(1.0, per_item / n)
            cap = None if density >= 1 else int(16 * per_item)
            t0 = time.perf_counter()
            A, _ = scaled_gram(X, p, 0.0, True, cap, cpu)
            gram_s = time.perf_counter() - t0
            budget = nnz_budget(density, n)
            for l2 in args.l2:
                for rule in args.rules:
                    rec = {"what": "icf_breakdowns", "data": data, "n_items": n, "n_users": int(X.shape[0]),
                           "nnz_X": int(X.nnz), "per_item": per_item, "density": density, "gram_cap": cap,
                           "gram_nnz": int(A.nnz), "gram_seconds": round(gram_s, 3), "l2": l2, "rule": rule}
                    t0 = time.perf_counter()
                    try:
                        res = incomplete_cholesky(A, float(l2), budget, breakdown_rule=rule)
                    except np.linalg.LinAlgError as exc:
                        rec.update(error=str(exc)[:300], icf_seconds=round(time.perf_counter() - t0, 3))
                        emit(rec, args.out)
                        continue
                    rec.update(icf_seconds=round(time.perf_counter() - t0, 3), restarts=res.restarts,
                               shift=res.shift, shift_ratio=round(res.shift / l2, 4), local_fixes=res.local_fixes,
                               first_breakdown_pivot=res.breakdowns[0]["pivot"] if res.breakdowns else None,
                               nnz_L=int(res.L.nnz), finite=bool(np.isfinite(res.L.data).all()))
                    if rec["finite"]:
                        rec["residual"] = round(_residual(res.L, A, float(l2)), 5)
                    emit(rec, args.out)


def table(path: str) -> str:
    """Markdown table of the records in ``path``: per dataset and nonzeros per item, the 'shift' rule's
    restarts and shift used / asked at each l2, and the residual of each rule at the smallest l2."""
    import json
    from collections import defaultdict

    recs = [json.loads(line) for line in open(path) if '"icf_breakdowns"' in line]
    by = defaultdict(dict)
    for r in recs:
        by[(r["data"], r["per_item"])][(r["l2"], r["rule"])] = r
    l2s = sorted({r["l2"] for r in recs})
    head = (["data", "per item"] + [f"λ = {l:g}: restarts, shift ×" for l in l2s]
            + [f"residual at λ = {l2s[0]:g}: shift / compensate / local"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def res(r):
        if r is None:
            return "—"
        if "error" in r or not r.get("finite", True):
            return "fails" if "error" in r else "non-finite"
        return f"{r['residual']:.3g}"

    for (data, per), cells in sorted(by.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        row = [data, f"{per:g}"]
        for l2 in l2s:
            r = cells.get((l2, "shift"))
            row.append("—" if r is None else ("fails" if "error" in r else f"{r['restarts']}, {r['shift_ratio']:g}"))
        row.append(" / ".join(res(cells.get((l2s[0], rule))) for rule in ("shift", "compensate", "local")))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--data", nargs="+", default=["ml-1m-implicit", "pinterest", "gowalla"])
    ap.add_argument("--per-item", nargs="+", type=float, default=[4, 16, 64, 256])
    ap.add_argument("--l2", nargs="+", type=float, default=[1.0, 10.0, 100.0])
    ap.add_argument("--rules", nargs="+", default=["shift", "compensate", "local"])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "icf_breakdowns.jsonl"))
    ap.add_argument("--table", action="store_true", help="only print the markdown table of the records in --out")
    args = ap.parse_args(argv)
    if args.table:
        print(table(args.out), end="")
        return 0
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
