"""Dense EASE's test accuracy over a λ grid: the accuracy ceiling the tuned and default SANSA models are held
to (issue 25's acceptance: tuned ≥ 98% and the default ≥ 95% of EASE at its best λ, on every shared dataset
where EASE fits this machine). One JSON line per (dataset, λ), each fit in its own spawned process, on the
same training split ``tune_bench.py`` uses (``sansa_gpu.data.load_split``, interactions binarised), scored
on its test split (own items excluded). A fit predicted (``sansa_gpu.ease.ease_fit_seconds``) to take more
than ``--max-fit-seconds``, or whose three n x n float64 matrices do not fit the memory, is not started.

    python benchmarks/ease_ceiling.py --data ml-1m-implicit pinterest --l2 100 300 1000 3000 \\
        --out benchmarks/results/ease_ceiling.jsonl
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _isolated import emit, git_commit, peak_rss_gb, run_isolated, test_metrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _fit(data_dir, data, l2, queue):
    from sansa_gpu import EASE
    from sansa_gpu.data import load_split

    split = load_split(Path(data_dir) / data)
    split.train.data[:] = 1.0
    t0 = time.perf_counter()
    model = EASE(l2=l2).fit(split.train)
    fit_s = time.perf_counter() - t0
    queue.put({"what": "ease_ceiling", "data": data, "l2": l2, "n_items": int(split.train.shape[1]),
               "fit_seconds": round(fit_s, 2), **test_metrics(model, split), "peak_rss_gb": round(peak_rss_gb(), 3)})


def main(argv=None) -> None:
    from sansa_gpu.data import load_split
    from sansa_gpu.ease import ease_fit_seconds
    from sansa_gpu.memory import available_memory_bytes

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--l2", nargs="+", type=float, required=True)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--max-fit-seconds", type=float, default=900.0)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    for data in args.data:
        n = load_split(Path(args.data_dir) / data).train.shape[1]
        label = {"what": "ease_ceiling", "data": data, "n_items": int(n), "commit": git_commit()}
        predicted, need = ease_fit_seconds(n), 3 * 8 * n * n
        if predicted > args.max_fit_seconds or need > available_memory_bytes():
            emit({**label, "skipped": f"predicted {predicted:.0f} s (limit {args.max_fit_seconds:g}), "
                                      f"{need / 1e9:.1f} GB of matrices"}, args.out)
            continue
        for l2 in args.l2:
            rec = run_isolated(_fit, (args.data_dir, data, l2), {**label, "l2": l2}, timeout=4 * args.max_fit_seconds)
            emit({**rec, "commit": git_commit()}, args.out)


if __name__ == "__main__":
    main()
