"""Markdown table from compare_official.py JSON lines: python benchmarks/table.py results.jsonl"""

import json
import sys


def main(path: str) -> None:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    print("| data | density | impl | Recall@20 | R@20 BARS | nDCG@20 | fit s | recommend s (all users) | nnz | peak RSS GB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['data']} | {r['density']:g} | {r['implementation']} | error: {r['error']} ||||||")
            continue
        rec = r.get("recommend_seconds")
        print(f"| {r['data']} | {r['density']:g} | {r['implementation']} | {r.get('recall@20', float('nan')):.4f} | "
              f"{r.get('recall_bars@20', float('nan')):.4f} | {r.get('ndcg@20', float('nan')):.4f} | {r['fit_seconds']:.1f} | "
              f"{'crash: ' + r['recommend_error'][:30] if rec is None else f'{rec:.2f}'} | {r['nnz']:,} | {r['peak_rss_gb']:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1])
