"""Run one benchmark case in its own spawned process (so its peak RSS is its own) and emit it."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import resource


def peak_rss_gb() -> float:
    """Peak resident set of this process in GB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def run_isolated(target, args: tuple, label: dict, timeout: float | None = None) -> dict:
    """Call ``target(*args, queue)`` in a fresh spawned process; returns the dict it put on the
    queue, or ``label`` plus the exit code if it died (for example killed for memory), or plus
    ``error: "timeout after T s"`` when it ran past ``timeout`` seconds (then it is killed)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    p.join(timeout)
    if p.is_alive():
        p.kill()
        p.join()
        rec = {**label, "error": f"timeout after {timeout:g} s"}
    else:
        rec = q.get() if p.exitcode == 0 else {**label, "error": f"exit code {p.exitcode}"}
    rec.update(machine=platform.node(), cpus=os.cpu_count(), device="cpu")
    return rec


def git_commit() -> str | None:
    """Short commit of the checkout these benchmarks run from (None outside git)."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or None


def emit(rec: dict, out: str | None) -> None:
    line = json.dumps(rec)
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


def test_metrics(model, split, k: int = 20) -> dict:
    """Recall@k, BARS recall@k and nDCG@k (5 decimals) of ``model`` on a ``sansa_gpu.data.Split``: the
    users with test items, scored from their training rows (own items excluded)."""
    from sansa_gpu.metrics import evaluate

    users = split.eval_users
    ids, _ = model.recommend(split.train[users], k=k)
    return {name: round(float(v), 5) for name, v in evaluate(ids, split.test[users], ks=(k,)).items()}


def fit_summary(model) -> dict:
    """``stage_seconds`` (2 decimals) and ``loss_history`` (per sweep, 6 decimals) of a fitted SANSA."""
    return {"stage_seconds": {k: round(v, 2) for k, v in model.stats_.items() if k.endswith("_seconds")},
            "loss_history": [round(h["loss"], 6) for h in model.history_]}
