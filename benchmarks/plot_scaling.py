"""Fit time per stage and peak RSS against catalogue size, from the end-to-end synthetic runs of
``benchmarks/scale.py --synthetic N ... --density default --save-dir DIR`` (the runs and stages of
``table.py scaling``), with each stage's growth exponent: the slope of log(seconds) against log(nnz X)
by least squares (1 = linear in the data; the synthetic users grow with the items, 5 per item).

    python benchmarks/plot_scaling.py    # writes benchmarks/results/scaling.png, prints one JSON line per stage
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import table  # noqa: E402  (the benchmarks page's table run selection, stages and slope: one definition for both)

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "scale.jsonl"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scaling.png"))
    args = ap.parse_args(argv)
    runs = table._scaling_runs({"scale": table.load_file(args.results)})
    if len(runs) < 2:
        raise SystemExit(f"fewer than 2 end-to-end synthetic runs (with save_seconds) in {args.results}")
    stages = table._SCALING_STAGES + [("total", lambda r: r["total_seconds"])]
    xs = [r["nnz_X"] for r in runs]
    exps = {label: round(table._slope(xs, [get(r) for r in runs]), 2) for label, get in stages}
    exps["peak RSS"] = round(table._slope(xs, [r["peak_rss_gb"] for r in runs]), 2)
    for label, get in stages:
        print(json.dumps({"what": "scaling_exponent", "stage": label, "exponent_vs_nnz_X": exps[label],
                          "seconds": [round(get(r), 2) for r in runs], "n_items": [r["n_items"] for r in runs]}))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["n_items"] for r in runs]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, get in stages:
        ax1.loglog(n, [max(get(r), 1e-2) for r in runs], marker="o", lw=2.5 if label == "total" else 1.2,
                   color="black" if label == "total" else None, label=f"{label} (×nnz^{exps[label]})")
    ax1.set_xlabel("items (users = 5 x items, ~4.2 interactions each)")
    ax1.set_ylabel("seconds (2-core VM)")
    ax1.set_title("fit end to end, per stage, 16 nonzeros per item column")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=7)
    ax2.loglog(n, [r["peak_rss_gb"] for r in runs], marker="o", color="C3", label="peak RSS (measured)")
    ax2.loglog(n, [r["estimated_peak_gb"] for r in runs], marker="x", ls="--", color="C0",
               label="estimate_memory (before the fit)")
    ax2.axhline(24, color="grey", ls=":", label="machine (24 GB)")
    ax2.set_xlabel("items")
    ax2.set_ylabel("GB")
    ax2.set_title(f"peak RSS (×nnz^{exps['peak RSS']})")
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    out = Path(args.out).resolve()
    print(json.dumps({"what": "scaling_plot", "path": str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out),
                      "runs": len(runs)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
