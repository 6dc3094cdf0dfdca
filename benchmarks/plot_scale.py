"""Peak RSS and fit time of our ICF runs against nnz of the Gram (benchmarks/results/scale.jsonl),
with a least-squares line through the origin-free fit ``RSS = a + b * nnz(Gram)``.

    python benchmarks/plot_scale.py          # writes benchmarks/results/scale_rss.png, prints the fit as JSON
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "scale.jsonl"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scale_rss.png"))
    args = ap.parse_args(argv)
    rows = [json.loads(line) for line in open(args.results) if line.strip()]
    rows = [r for r in rows if r.get("implementation") == "ours" and "peak_rss_gb" in r and "nnz_gram_lower" in r
            and not r.get("min_cooccurrence")]  # the exact Gram: pruned runs are a different curve
    g = np.array([r["nnz_gram_lower"] for r in rows], dtype=float) / 1e6
    rss = np.array([r["peak_rss_gb"] for r in rows])
    secs = np.array([r["fit_seconds"] for r in rows])
    b, a = np.polyfit(g, rss, 1)
    fit = {"what": "rss_vs_gram_fit", "rss_gb_intercept": round(float(a), 3), "rss_gb_per_million_gram_nnz": round(float(b), 4),
           "points": len(rows), "max_rel_residual": round(float(np.max(np.abs(rss - (a + b * g)) / rss)), 3)}
    print(json.dumps(fit))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for r, x, y, s in zip(rows, g, rss, secs):
        label = f"{r['data']} ({r.get('ordering', 'colamd')}, tol {r.get('refine_tol', 1e-7):g})"
        ax1.scatter(x, y)
        ax1.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax2.scatter(x, s)
        ax2.annotate(label, (x, s), fontsize=7, xytext=(3, 3), textcoords="offset points")
    xs = np.linspace(0, g.max() * 1.05, 50)
    ax1.plot(xs, a + b * xs, "k--", lw=0.8, label=f"{a:.2f} GB + {b * 1000:.1f} MB per 1M Gram nnz")
    ax1.set(xlabel="nnz of the Gram's lower triangle (millions)", ylabel="peak RSS (GB)", title="fit, ICF: peak memory")
    ax1.legend(fontsize=8)
    ax2.set(xlabel="nnz of the Gram's lower triangle (millions)", ylabel="fit seconds", title="fit, ICF: time (2 cores)")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
