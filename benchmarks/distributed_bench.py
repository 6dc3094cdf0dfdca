"""The cost of the distribution layer: users/s of ``sansa_gpu.distributed.score_partitioned`` on a
local Dask cluster beside single-process ``score_to_parquet`` on the same cores, one JSON line per case.

Data: ``--users`` generated users (``sansa_gpu.synthetic.synthetic_interactions``, ``--per-user`` items
on average, same popularity and communities as the training users) over an ``--items``-item model
(ICF, ``--density``, fitted on ``--train-users`` users of the same generator; raw IDs, saved with
``SANSA.save``). The scoring table is written once as a Parquet folder of ``--input-files`` files whose
rows are in random order (every user's rows spread over every file, so the distributed job shuffles
by user), and once grouped by user (``partitioned_by_user=True``: no shuffle).

Cases, each in its own process (its peak RSS is its own) and run one after another:

- ``single``: read the Parquet folder with pandas, ``score_to_parquet`` (numba on all cores) to one file.
- ``dask``: a fresh ``LocalCluster(n_workers=--workers, threads_per_worker=1, processes=True)``, then
  ``score_partitioned`` from the Parquet folder (shuffled input: hash shuffle on the user column, one
  case per ``--partitions`` value: output partitions; grouped input: no shuffle). Cluster start-up is
  reported (``cluster_seconds``) but not in ``seconds``. ``peak_rss_gb_workers``: each worker
  process's own peak RSS (``ru_maxrss``), ``peak_rss_gb``: the client process (it also reads the
  result back to check it, so this is not the client's cost during the job).

``users_per_s`` = users in the table ÷ ``seconds`` (wall time from the input folder to a complete
result folder). ``ratio_to_single`` = this case's users/s ÷ the single-process users/s of the same run.
Each result is checked to hold every user exactly once and the single-process row count.

    python benchmarks/distributed_bench.py --users 2000000 --items 40000 --partitions 8 32 128 \\
        --out benchmarks/results/distributed.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _isolated import emit, peak_rss_gb, run_isolated  # noqa: E402

import numpy as np  # noqa: E402


def _table(n_users, n_items, per_user, seed, n_communities):
    import pandas as pd

    from sansa_gpu.synthetic import synthetic_interactions

    X = synthetic_interactions(n_users=n_users, n_items=n_items, mean_items_per_user=per_user,
                               n_communities=n_communities, seed=seed).tocoo()
    return pd.DataFrame({"user_id": X.row.astype(np.int64), "item_id": X.col.astype(np.int64)})


def prepare(args, work: Path) -> dict:
    """Fit and save the model, write the two Parquet folders; returns facts about the data."""
    from sansa_gpu import SANSA

    comm = max(50, args.items // 2000)
    t0 = time.perf_counter()
    train = _table(args.train_users, args.items, args.per_user, 0, comm)
    model = SANSA(l2=20.0, density=args.density, factorizer="icf", refine_sweeps=1, min_cooccurrence=0,
                  device="cpu").fit(train)
    fit_s = time.perf_counter() - t0
    model.save(work / "model.npz")
    t0 = time.perf_counter()
    df = _table(args.users, args.items, args.per_user, 1, comm)
    rng = np.random.default_rng(2)
    shuffled = df.iloc[rng.permutation(len(df))].reset_index(drop=True)
    for name, frame in (("shuffled", shuffled), ("grouped", df)):  # df is sorted by user (CSR order)
        folder = work / name
        folder.mkdir()
        bounds = np.linspace(0, len(frame), args.input_files + 1).astype(np.int64)
        if name == "grouped":  # cut at user boundaries so no user spans two files
            users = frame["user_id"].to_numpy()
            bounds = np.searchsorted(users, users[np.minimum(bounds, len(frame) - 1)], side="left")
            bounds[-1] = len(frame)
            bounds = np.unique(bounds)
        for j in range(len(bounds) - 1):
            frame.iloc[bounds[j]:bounds[j + 1]].to_parquet(folder / f"part{j:03d}.parquet", index=False)
    return {"n_users": int(df["user_id"].nunique()), "n_items": args.items, "nnz_X": int(len(df)),
            "density": args.density, "model_nnz": int(model.model_nnz), "fit_seconds": round(fit_s, 2),
            "data_seconds": round(time.perf_counter() - t0, 2), "input_files": args.input_files,
            "per_user": args.per_user, "k": args.k}


def _check(path: str, n_users: int | None, rows: int | None) -> tuple[int, int]:
    """(users, rows) of a result file or folder; each user has exactly one rank-1 row, so ``users``
    counts users once across files: it must equal ``n_users`` and the rows ``rows`` where given."""
    import pyarrow.parquet as pq

    files = [os.path.join(path, f) for f in sorted(os.listdir(path)) if f.endswith(".parquet")] \
        if os.path.isdir(path) else [path]
    seen = 0
    total = 0
    for f in files:
        t = pq.read_table(f, columns=["user_id", "rank"])
        u = t.column("user_id").to_numpy()
        r = t.column("rank").to_numpy()
        seen += int(np.count_nonzero(r == 1))
        total += len(u)
    if n_users is not None and seen != n_users:
        raise AssertionError(f"{path}: {seen} users with a rank-1 row, expected {n_users}")
    if rows is not None and total != rows:
        raise AssertionError(f"{path}: {total} rows, the single-process result has {rows}")
    return seen, total


def _single(work: str, k: int, n_users: int, queue) -> None:
    import pandas as pd

    from sansa_gpu import SANSA, score_to_parquet

    model = SANSA.load(os.path.join(work, "model.npz"))
    t0 = time.perf_counter()
    df = pd.read_parquet(os.path.join(work, "shuffled"))
    score_to_parquet(model, df, os.path.join(work, "single.parquet"), k=k, progress=False)
    seconds = time.perf_counter() - t0
    users, rows = _check(os.path.join(work, "single.parquet"), None, None)
    queue.put({"case": "single", "seconds": round(seconds, 2), "users_scored": users, "rows": rows,
               "peak_rss_gb": round(peak_rss_gb(), 3)})


def _worker_peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def _dask(work: str, k: int, n_users: int, rows: int, workers: int, partitions, grouped: bool, queue) -> None:
    import distributed

    from sansa_gpu import distributed as sd

    t0 = time.perf_counter()
    with sd.restored_environ(), distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                         dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        cluster_s = time.perf_counter() - t0
        out = os.path.join(work, "dask_out")
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        summary = sd.score_partitioned(os.path.join(work, "model.npz"), os.path.join(work, "grouped" if grouped else "shuffled"),
                                       out, k=k, client=client, partitioned_by_user=grouped,
                                       npartitions=None if grouped else partitions)
        seconds = time.perf_counter() - t0
        worker_rss = sorted(client.run(_worker_peak_rss_gb).values())
    _check(out, n_users, rows)
    queue.put({"case": "dask", "workers": workers, "threads_per_worker": 1, "shuffle": not grouped,
               "partitions": summary["partitions"], "users_per_partition": round(n_users / summary["partitions"]),
               "cluster_seconds": round(cluster_s, 2), "seconds": round(seconds, 2), "rows": summary["rows"],
               "peak_rss_gb_workers": [round(x, 3) for x in worker_rss], "peak_rss_gb": round(peak_rss_gb(), 3)})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=2_000_000)
    ap.add_argument("--items", type=int, default=40_000)
    ap.add_argument("--per-user", type=float, default=10.0)
    ap.add_argument("--train-users", type=int, default=200_000)
    ap.add_argument("--density", type=float, default=5e-5)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--input-files", type=int, default=16)
    ap.add_argument("--partitions", type=int, nargs="+", default=[8, 32, 128], help="output partitions (shuffled input)")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed at the end)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    work = Path(args.work or tempfile.mkdtemp(prefix="sansa-dist-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        facts = prepare(args, work)
        base = {"what": "distributed_scoring", **facts}
        print(json.dumps({"prepared": facts}), file=sys.stderr, flush=True)
        single = run_isolated(_single, (str(work), args.k, None), {"case": "single"})
        single["users_per_s"] = round(facts["n_users"] / single["seconds"], 1) if "seconds" in single else None
        emit({**base, **single}, args.out)
        cases = [(p, False) for p in args.partitions] + [(None, True)]
        for partitions, grouped in cases:
            rec = run_isolated(_dask, (str(work), args.k, single.get("users_scored"), single.get("rows"), args.workers,
                                       partitions, grouped), {"case": "dask", "shuffle": not grouped})
            if "seconds" in rec:
                rec["users_per_s"] = round(facts["n_users"] / rec["seconds"], 1)
                if single.get("users_per_s"):
                    rec["ratio_to_single"] = round(rec["users_per_s"] / single["users_per_s"], 3)
            emit({**base, **rec}, args.out)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
