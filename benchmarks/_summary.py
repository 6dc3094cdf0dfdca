"""Compact summary of a device run's output folder (the end of benchmarks/gpu_check.sh's stdout).

The full JSON lines stay in the folder; this prints each step's outcome and the headline numbers
of each benchmark line (without ``device``, the same on every line: printed once at the end), short
enough to survive a truncated console tail.

    python benchmarks/_summary.py $OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

KEYS = {
    "refine_sweep": ("data", "backend", "seconds", "kernel_seconds_per_sweep", "peak_gpu_bytes", "repeat_same_indices",
                     "gpu_speedup", "same_indices", "max_rel_value_diff", "skipped", "error"),
    "score_synthetic": ("model", "n_items", "density", "n_users", "users_per_s", "users_per_s_kernel",
                        "non_kernel_share", "capped", "topk_identical", "same_topk_rows", "cpu_users_per_s_on_check",
                        "peak_gpu_bytes", "error"),
    "e2e_fit": ("n_items", "backend", "wall_seconds", "stats", "kernel_seconds", "peak_gpu_bytes", "error"),
    "predicted_device_seconds": ("stage", "sizes", "predicted_seconds", "error"),
    "e2e_fit_compare": ("same_pattern_Wt", "same_pattern_Z", "max_rel_diff_Wt", "max_rel_diff_Z", "same_topk_rows",
                        "error"),
}
STATS = ("factorize_seconds", "refine_seconds", "weights_seconds", "fit_seconds")


def _lines(path: Path):
    for line in path.read_text().splitlines():
        try:
            yield json.loads(line)
        except ValueError:
            continue


def short(rec: dict) -> dict:
    keys = KEYS.get(rec.get("what"), tuple(rec))
    out = {"what": rec.get("what")}
    for k in keys:
        if k not in rec:
            continue
        v = rec[k]
        if k == "stats" and isinstance(v, dict):
            v = {s: v[s] for s in STATS if s in v}
        elif isinstance(v, float):
            v = float(f"{v:.4g}")
        out[k] = v
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0] if argv else ".")
    steps = out / "steps.jsonl"
    device = None
    if steps.is_file():
        print("# steps")
        for rec in _lines(steps):
            device = rec.pop("device", device)  # the same on every record: printed once
            print(json.dumps(rec))
    for path in sorted(out.glob("*.jsonl")):
        if path.name in ("steps.jsonl", "device.jsonl"):
            continue
        print(f"# {path.name}")
        for rec in _lines(path):
            print(json.dumps(short(rec)))
    print(f"# device: {device}; files: {', '.join(sorted(p.name for p in out.iterdir()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
