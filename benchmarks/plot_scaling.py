"""Fit time per stage and peak RSS against catalogue size, from the end-to-end synthetic runs of
``benchmarks/scale.py --synthetic N ... --density default --save-dir DIR`` (records with
``save_seconds``), with each stage's growth exponent: the slope of log(seconds) against log(nnz X)
by least squares (1 = linear in the data; the synthetic users grow with the items, 5 per item).

    python benchmarks/plot_scaling.py    # writes benchmarks/results/scaling.png, prints one JSON line per stage
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: (label, how to read the seconds of a record), in pipeline order
STAGES = [
    ("data", lambda r: r["data_seconds"]),
    ("estimate", lambda r: r["estimate_seconds"]),
    ("column scaling", lambda r: r["factorize_parts"]["column_scaling"]),
    ("ordering + gram", lambda r: r["factorize_parts"]["ordering"] + r["factorize_parts"]["gram"]),
    ("icf", lambda r: r["factorize_parts"]["icf"] + r["factorize_parts"]["cut"]),
    ("refine", lambda r: r["stage_seconds"]["refine_seconds"]),
    ("weights", lambda r: r["stage_seconds"]["weights_seconds"]),
    ("save", lambda r: r["save_seconds"]),
    ("total", lambda r: r["total_seconds"]),
]


def scaling_runs(path) -> list[dict]:
    """The last end-to-end synthetic run per catalogue size (ascending), default density."""
    rows = [json.loads(line) for line in open(path) if line.strip()]
    runs = {}
    for r in rows:
        if (r.get("implementation") == "ours" and str(r.get("data", "")).startswith("synthetic_")
                and "save_seconds" in r and r.get("density") is None and "error" not in r):
            runs[r["n_items"]] = r
    return [runs[n] for n in sorted(runs)]


def exponents(runs: list[dict]) -> dict:
    """{stage: slope of log seconds against log nnz_X} over the runs (None with fewer than 2)."""
    x = np.log([r["nnz_X"] for r in runs])
    out = {}
    for label, get in STAGES + [("peak RSS", lambda r: r["peak_rss_gb"])]:
        y = np.log([max(get(r), 1e-3) for r in runs])
        out[label] = round(float(np.polyfit(x, y, 1)[0]), 2) if len(runs) >= 2 else None
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "scale.jsonl"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scaling.png"))
    args = ap.parse_args(argv)
    runs = scaling_runs(args.results)
    if not runs:
        raise SystemExit(f"no end-to-end synthetic runs (with total_seconds) in {args.results}")
    exps = exponents(runs)
    for label, _ in STAGES:
        print(json.dumps({"what": "scaling_exponent", "stage": label, "exponent_vs_nnz_X": exps[label],
                          "seconds": [round(_get(r, label), 2) for r in runs],
                          "n_items": [r["n_items"] for r in runs]}))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = np.array([r["n_items"] for r in runs], dtype=float)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, get in STAGES:
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


def _get(r: dict, label: str) -> float:
    return dict(STAGES)[label](r)


if __name__ == "__main__":
    raise SystemExit(main())
