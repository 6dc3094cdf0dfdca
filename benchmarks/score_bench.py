"""Batch-scoring throughput (users/s, k best unseen items per user), one JSON line per case.

Real data (``--data``, CPU only): our CPU path beside the official ``sansa==1.1.0`` forward + mask +
top-k, *on the same weights* (ours, loaded into the official model with ``load_weights``), all
users of the split, median of ``--repeats`` interleaved runs each; the top-k lists are compared too.

Synthetic (``--synthetic-users``): users drawn from ``sansa_gpu.synthetic.synthetic_interactions``
(``--per-user`` items on average, same item popularity and communities as the training data when
``--user-seed`` equals the training seed 0) scored against an ``--items``-item model at each
density, on ``--device``. The model is either

- ``--model fit``: SANSA(factorizer="icf") fitted on the CPU on ``--train-users`` synthetic users
  (no CHOLMOD needed), or
- ``--model synthetic``: synthetic factors, no fit (for catalogues too large to fit in a short
  slot): a unit lower L with ``round(density * items)`` off-diagonals per column, K = 2I - L,
  random positive pivots and permutation, weights assembled by the CPU reference.

Each case reports, per configuration:

- ``users_per_s``: the public API, ``SANSA.recommend_batches`` (input checks, host->device copy,
  kernel, device->host copy: transfers included), median of ``--repeats`` passes.
- GPU only, ``users_per_s_kernel``: the same passes counted by the time of the scoring kernel
  alone (``kernels/score_topk.cu``; CUDA events around each launch, ``benchmarks/_gpu_timing``):
  transfers and input checks excluded. ``non_kernel_share`` is the rest's share of the wall time.
- GPU only: the first ``--check-users`` users' top-k compared with the CPU path (ids and scores
  must be identical: ``topk_identical``), the CPU path's users/s on them, and the real peak
  device memory of the warm-up and the passes (``benchmarks/_gpu_memory.track_peak``).

Synthetic lines carry ``backend`` ("gpu" / "cpu": where the scoring ran) and ``device``: the GPU's
name on a GPU run ("cpu" on a CPU run). With ``SANSA_GPU_EXECUTOR=1`` the CPU executor of the kernels
stands in for the GPU (gpu_check.sh --dry-run; no speed meaning).

``--time-cap`` bounds each measurement: a pass stops after the batch that crosses it and the
line reports ``users_scored`` < ``n_users`` and ``capped``: true (users/s stay exact).

    python benchmarks/score_bench.py --data gowalla --densities 5e-4 2e-3
    python benchmarks/score_bench.py --data ml-1m-implicit --densities 2e-3 1e-2 --repeat-users 5
    python benchmarks/score_bench.py --data pinterest --densities 1.6e-3 6.5e-3 2.6e-2 --plans factored product --skip-official
    python benchmarks/score_bench.py --data gowalla --densities 5e-4 2e-3 --plans factored sparse_product --skip-official
    python benchmarks/score_bench.py --synthetic-users 1000000 --densities 5e-5 5e-4 --device gpu --repeats 1 \\
        --check-users 10000 --time-cap 7 --out $OUT/score.jsonl
    python benchmarks/score_bench.py --synthetic-users 200000 --items 1000000 --model synthetic --densities 2e-5 --device gpu
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _device_info import record_device, use_executor_from_env  # noqa: E402
from _isolated import emit, git_commit, peak_rss_gb  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SEED = 0


def _fit(X, density, l2, ordering):
    from sansa_gpu import SANSA

    t0 = time.perf_counter()
    model = SANSA(l2=l2, density=density, factorizer="icf", ordering=ordering, refine_sweeps=1, refine_tol=1e-2,
                  min_cooccurrence=0, device="cpu").fit(X, check_memory=False)
    return model, time.perf_counter() - t0


def _official_topk(weights, X, k, block):
    import logging

    logging.disable(logging.WARNING)
    from sansa import (
        SANSA as Official,
        ICFGramianFactorizerConfig,
        SANSAConfig,
        UMRUnitLowerTriangleInverterConfig,
    )

    config = SANSAConfig(l2=1.0, weight_matrix_density=1e-3, gramian_factorizer_config=ICFGramianFactorizerConfig(),
                         lower_triangle_inverter_config=UMRUnitLowerTriangleInverterConfig())  # unused: weights loaded
    model = Official(config).load_weights(weights)
    ids = np.empty((X.shape[0], k), dtype=np.int64)
    scores = np.empty((X.shape[0], k), dtype=np.float32)
    for start in range(0, X.shape[0], block):
        i, s = model.recommend(X[start:start + block], k=k, mask_input=True)
        ids[start:start + block] = i
        scores[start:start + block] = s
    return ids, scores


def real_data(args) -> None:
    import scipy.sparse as sp
    from _scatter_limit import factored_updates, scatter_limit

    from sansa_gpu.cpu import inference as cpu_inference, plan_product as cpu_product, planner as cpu_planner
    from sansa_gpu.data import load_adjacency_split

    split = load_adjacency_split(Path(args.data_dir) / args.data)
    X = split.train
    X = X[np.diff(X.indptr) > 0]  # users with a history (the official top-k fails on empty rows)
    if args.repeat_users > 1:
        X = sp.vstack([X] * args.repeat_users, format="csr")
    for density in args.densities:
        model, fit_s = _fit(split.train, density, args.l2, args.ordering)
        Wt, Z = model.weights_
        cache = model._scoring_cache  # what model.recommend scores with
        plan, plan_reason = cpu_planner.choose_plan(X, Wt, Z, cache=cache)
        model.release_scoring_cache()
        build_s = None
        if plan in ("product", "sparse_product"):  # formed before timing, as a nightly job's first batch would
            cpu_product._product_state(Wt, Z, plan, cache)  # compiles the kernels that form B
            model.release_scoring_cache()
            t0 = time.perf_counter()
            cpu_product._product_state(Wt, Z, plan, cache)
            build_s = time.perf_counter() - t0
        # the structure count auto's choice needs (kept per model), outside the timing as B is
        cpu_planner.choose_plan(X, Wt, Z, cached=None if plan == "factored" else plan, cache=cache)
        model.recommend(X[:100], k=args.k)  # compile
        cpu_inference.recommend_sparse(X[:100], Wt, Z, args.k, plan=plan, cache=cache)  # the plan auto takes for all of X
        if args.skip_official:
            emit(compare_plans(args, X, Wt, Z, density), args.out)
            continue
        ours, official = [], []
        off = None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ids, scores = model.recommend(X, k=args.k)
            ours.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            try:
                off = _official_topk((Wt, Z), X, args.k, args.official_block)
                official.append(time.perf_counter() - t0)
            except ValueError as exc:  # rows with fewer than k candidates
                official.append(None)
                off = str(exc)
        rec = {"what": "score_cpu_vs_official", "data": args.data, "commit": git_commit(), "density": density,
               "k": args.k, "repeat_users": args.repeat_users,
               "n_users": int(X.shape[0]), "n_items": int(X.shape[1]), "nnz_X": int(X.nnz), "model_nnz": model.model_nnz,
               "fit_seconds": round(fit_s, 2), "ours_seconds": [round(t, 3) for t in ours],
               "official_seconds": [None if t is None else round(t, 3) for t in official],
               "ours_users_per_s": round(X.shape[0] / statistics.median(ours), 1)}
        if isinstance(off, tuple) and all(t is not None for t in official):
            rec["official_users_per_s"] = round(X.shape[0] / statistics.median(official), 1)
            rec["speedup"] = round(statistics.median(official) / statistics.median(ours), 2)
            o_ids, o_scores = off
            valid = ids >= 0
            rec["same_topk_rows"] = float(np.mean(np.all(o_ids == ids, axis=1)))
            rec["max_score_diff"] = float(np.max(np.abs(np.where(valid, o_scores - scores, 0))))
        else:
            rec["official_error"] = off if isinstance(off, str) else None
        rec["plan"], rec["plan_reason"] = plan, plan_reason  # what recommend ran (B formed before timing)
        if build_s is not None:  # once per model; the speedup with it paid by this one batch, too
            rec["product_build_seconds"] = round(build_s, 3)
            if "speedup" in rec:
                rec["speedup_incl_build"] = round(statistics.median(official) / (statistics.median(ours) + build_s), 2)
        if plan in ("factored", "sparse_product"):  # ours per scattered update against the bare scatter of the same stream
            # the sparse product plan scatters the rows of B for the user's items: the factored
            # stream with Wt = I and Z = B (a user's items ascend, as its touched latents do)
            if plan == "sparse_product":  # B as the plan holds it (uint16 indices where they fit: the same bytes)
                indptr, indices, data = cpu_product._product_state(Wt, Z, plan, cache)
                Wt_s = sp.identity(X.shape[1], dtype=np.float32, format="csr")
                Z_s = SimpleNamespace(indptr=indptr, indices=indices, data=data, shape=(X.shape[1], X.shape[1]))
            else:
                Wt_s, Z_s = Wt, Z
            updates = factored_updates(X, Wt_s, Z_s)
            limit = scatter_limit(X, Wt_s, Z_s)  # on the threads recommend ran on
            del Wt_s, Z_s
            ours_ns = statistics.median(ours) * limit["threads"] / max(1, updates) * 1e9
            rec.update(scattered_updates=updates, ours_ns_per_update=round(ours_ns, 3),
                       scatter_limit={k_: round(v, 3) if isinstance(v, float) else v for k_, v in limit.items()},
                       limit_fraction=round(limit["ns_per_update"] / ours_ns, 3))
        rec.update(peak_rss_gb=round(peak_rss_gb(), 3), machine=platform.node(), device="cpu")
        emit(rec, args.out)
        if args.plans:
            emit(compare_plans(args, X, Wt, Z, density), args.out)


def compare_plans(args, X, Wt, Z, density) -> dict:
    """Our CPU plans side by side on the same weights and users (``--plans``): median seconds of
    ``--repeats`` interleaved runs each (B formed before timing the product plan, its time reported
    apart), what ``plan="auto"`` chooses and the cost model's predictions, and the top-k agreement."""
    from sansa_gpu.cpu import inference as cpu_inference, plan_product as cpu_product, planner as cpu_planner
    from sansa_gpu.scoring_cache import ScoringCache

    for plan in args.plans:  # compile every kernel (forming B and scoring) before anything is timed
        cpu_inference.recommend_sparse(X[:50], Wt, Z, args.k, plan=plan)
    cache = ScoringCache()
    build = {}
    for plan in ("product", "sparse_product"):  # each B formed once, timed apart
        if plan in args.plans:
            t0 = time.perf_counter()
            cpu_product._product_state(Wt, Z, plan, cache)
            build[plan] = round(time.perf_counter() - t0, 3)
    times = {plan: [] for plan in args.plans}
    results = {}
    for _ in range(args.repeats):
        for plan in args.plans:
            if plan in build:
                cpu_product._product_state(Wt, Z, plan, cache)  # (re)formed outside the timing if the budget dropped it
            t0 = time.perf_counter()
            results[plan] = cpu_inference.recommend_sparse(X, Wt, Z, args.k, plan=plan, cache=cache)
            times[plan].append(time.perf_counter() - t0)
    cost = cpu_planner.plan_costs(X, Wt, Z, cpu_product.product_row_nnz(Wt, Z, cache))
    rec = {"what": "score_plans", "data": args.data, "density": density, "k": args.k, "n_users": int(X.shape[0]),
           "n_items": int(X.shape[1]), "model_nnz": int(Wt.nnz + Z.nnz),
           **{f"{plan}_build_seconds": t for plan, t in build.items()},
           **{f"{plan}_seconds": [round(t, 3) for t in ts] for plan, ts in times.items()},
           **{f"{plan}_users_per_s": round(X.shape[0] / statistics.median(ts), 1) for plan, ts in times.items()},
           "auto_chooses": cpu_planner.choose_plan(X, Wt, Z, cached=None)[0],
           "predicted_core_seconds": {key: round(v, 3) for key, v in cost.items()}}
    for plan in ("product", "sparse_product"):
        if "factored" in results and plan in results:
            rec.update({f"{plan}_vs_factored_{key}": v for key, v in topk_agreement(*results["factored"],
                                                                                  *results[plan]).items()})
    rec.update(peak_rss_gb=round(peak_rss_gb(), 3), machine=platform.node(), device="cpu")
    return rec


# --------------------------------------------------------------------------------------- synthetic
def _communities(n_items: int) -> int:
    return max(50, n_items // 2000)


def synthetic_model(n_items: int, density: float, seed: int = 0):
    """A SANSA model with synthetic factors (no fit): returns (model, seconds, per_col)."""
    from refine_bench import synthetic_unit_lower

    from sansa_gpu import SANSA, cpu
    from sansa_gpu.cpu.refine import initial_inverse

    t0 = time.perf_counter()
    per_col = max(1, round(density * n_items))
    K = initial_inverse(synthetic_unit_lower(n_items, per_col, seed))
    rng = np.random.default_rng(seed + 1)
    d = 20.0 + rng.gamma(2.0, 50.0, n_items)  # positive pivots, l2 + a heavy-tailed item count
    p = rng.permutation(n_items).astype(np.int64)
    Wt, Z = cpu.assemble_weights(K, d, p)
    model = SANSA(density=density, factorizer="icf", device="cpu")
    model.weights_, model.n_items_, model.item_ids_ = (Wt, Z), n_items, None
    model.history_, model.stats_, model.device_ = [], {}, "cpu"
    return model, time.perf_counter() - t0, per_col


def score_api(model, X, k: int, batch_size, time_cap, keep: int, on_gpu: bool) -> dict:
    """One pass of ``model.recommend_batches`` over X (stopping after the batch that crosses
    ``time_cap``). On the GPU the raw kernel's launches are timed with CUDA events in the same pass.
    Returns {"seconds", "scored", "kernel_seconds", "launches", "first": (ids, scores) of the first
    ``keep`` users or None}."""
    kept_ids, kept_scores, have = [], [], 0
    scored = 0
    timer = contextlib.nullcontext(None)
    if on_gpu:
        from _gpu_timing import time_kernels

        timer = time_kernels()
    with timer as kt:
        t0 = time.perf_counter()
        for start, ids, scores in model.recommend_batches(X, k=k, batch_size=batch_size):
            scored = start + ids.shape[0]
            if have < keep:
                take = min(keep - have, ids.shape[0])
                kept_ids.append(ids[:take])
                kept_scores.append(scores[:take])
                have += take
            if time_cap is not None and time.perf_counter() - t0 > time_cap:
                break
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "scored": scored,
            "kernel_seconds": kt.seconds if kt is not None else None,
            "launches": kt.launches if kt is not None else None,
            "first": (np.concatenate(kept_ids), np.concatenate(kept_scores)) if kept_ids else None}


def topk_agreement(ids_a, scores_a, ids_b, scores_b) -> dict:
    """How far two top-k results (same users) agree; identical means ids and scores bit for bit."""
    valid = ids_a >= 0  # padding (-1 / -inf) compared by ids only
    diff = np.abs(np.where(valid, scores_a, 0.0).astype(np.float64) - np.where(valid, scores_b, 0.0))
    return {"topk_identical": bool(np.array_equal(ids_a, ids_b) and np.array_equal(scores_a, scores_b)),
            "same_topk_rows": float(np.mean(np.all(ids_a == ids_b, axis=1))) if ids_a.size else 1.0,
            "max_score_diff": float(np.nanmax(diff)) if diff.size else 0.0}


def _default_batch() -> int:
    from sansa_gpu.model import DEFAULT_BATCH_USERS

    return DEFAULT_BATCH_USERS


def _users(args, n_users: int, cache: dict):
    """Scoring users (generated once per size and reused across densities)."""
    from sansa_gpu.synthetic import synthetic_interactions

    if n_users not in cache:
        t0 = time.perf_counter()
        X = synthetic_interactions(n_users=n_users, n_items=args.items, mean_items_per_user=args.per_user,
                                   n_communities=_communities(args.items), seed=args.user_seed)
        cache[n_users] = (X, time.perf_counter() - t0)
    return cache[n_users]


def synthetic_case(args, model, X, gen_s: float, base: dict, gpu_name: str | None) -> dict:
    """Measure one (model, users) configuration on args.device; returns the JSON record."""
    n_users = X.shape[0]
    on_gpu = args.device == "gpu"
    keep = min(args.check_users, n_users) if on_gpu else 0
    warm = X[:min(args.warm_users, n_users)]
    rec = {**base, "n_users": n_users, "nnz_X": int(X.nnz), "generate_seconds": round(gen_s, 2),
           "batch_size": args.batch_size or _default_batch(), "time_cap": args.time_cap, "repeats": args.repeats}
    if args.repeats == 1:
        rec["note"] = "one repeat per configuration (device time budget)"

    def passes():
        return [score_api(model, X, args.k, args.batch_size, args.time_cap, keep, on_gpu) for _ in range(args.repeats)]

    if on_gpu:
        from _gpu_memory import release_gpu_caches, track_peak
        from _gpu_timing import synchronize

        release_gpu_caches()
        with track_peak() as mem:
            t0 = time.perf_counter()
            model.recommend(warm, k=args.k)  # loads the kernel, uploads the model, allocates scratch
            synchronize()
            rec["warmup_seconds"] = round(time.perf_counter() - t0, 3)
            runs = passes()
        rec.update(peak_gpu_bytes=mem.peak_bytes, **mem.as_record())
    else:
        model.recommend(warm, k=args.k)  # numba compile / cache load
        runs = passes()
    rec.update(seconds=[round(r["seconds"], 3) for r in runs], users_scored=[r["scored"] for r in runs],
               capped=any(r["scored"] < n_users for r in runs),
               users_per_s=round(statistics.median(r["scored"] / r["seconds"] for r in runs), 1))
    if on_gpu:
        # transfers excluded: the same passes' kernel time (CUDA events around each launch)
        kern = [r["kernel_seconds"] for r in runs]
        rec.update(kernel_seconds=[round(t, 4) for t in kern], kernel_launches=[r["launches"] for r in runs],
                   users_per_s_kernel=round(statistics.median(r["scored"] / t for r, t in zip(runs, kern)), 1)
                   if all(kern) else None,
                   non_kernel_share=round(1 - sum(kern) / sum(r["seconds"] for r in runs), 3))
        first = runs[0]["first"]
        if first is not None:
            from sansa_gpu.cpu.inference import recommend_sparse

            Xc = X[:first[0].shape[0]]
            t0 = time.perf_counter()
            c_ids, c_scores = recommend_sparse(Xc, *model.weights_, args.k)
            cpu_s = time.perf_counter() - t0
            rec.update(check_users=int(Xc.shape[0]), cpu_check_seconds=round(cpu_s, 3),
                       cpu_users_per_s_on_check=round(Xc.shape[0] / cpu_s, 1) if cpu_s > 0 else None,
                       **topk_agreement(c_ids, c_scores, *first))
        rec["gpu"] = gpu_name
    rec.update(peak_rss_gb=round(peak_rss_gb(), 3), machine=platform.node(), cpus=os.cpu_count())
    return rec


def synthetic(args) -> bool:
    """All synthetic cases; returns False if any failed (each failure is its own JSON line)."""
    from sansa_gpu.backend import gpu_status, resolve_device
    from sansa_gpu.synthetic import synthetic_interactions

    gpu_name = None
    if args.device == "gpu":
        use_executor_from_env()  # the CPU executor when SANSA_GPU_EXECUTOR asks for it (dry run)
        ok, gpu_name = gpu_status()
        if not ok:
            emit({"what": "score_synthetic", "backend": "gpu", "device": record_device(True), "error": gpu_name},
                 args.out)
            return False
    device = record_device(args.device == "gpu")  # the GPU's name on every line of a GPU run
    train = None
    if args.model == "fit":
        t0 = time.perf_counter()
        train = synthetic_interactions(n_users=args.train_users or 5 * args.items, n_items=args.items,
                                       mean_items_per_user=args.per_user, n_communities=_communities(args.items),
                                       seed=TRAIN_SEED)
        print(f"# training data {train.shape} nnz={train.nnz} in {time.perf_counter() - t0:.1f}s", file=sys.stderr,
              flush=True)
    users: dict = {}
    ok = True
    for density in args.densities:
        base = {"what": "score_synthetic", "backend": args.device, "device": device, "model": args.model,
                "density": density, "k": args.k, "n_items": args.items, "per_user": args.per_user,
                "user_seed": args.user_seed}
        try:
            if args.model == "fit":
                model, build_s = _fit(train, density, args.l2, args.ordering)
                base.update(train_users=int(train.shape[0]), nnz_train=int(train.nnz), ordering=args.ordering)
            else:
                model, build_s, per_col = synthetic_model(args.items, density)
                base["model_per_col"] = per_col
            model.device = args.device
            model.device_ = resolve_device(args.device)
            base.update(fit_seconds=round(build_s, 2), model_nnz=model.model_nnz,
                        model_density=model.model_nnz / 2 / args.items**2)
        except Exception as exc:
            emit({**base, "error": f"building the model: {type(exc).__name__}: {exc}"}, args.out)
            ok = False
            continue
        for n_users in args.synthetic_users:
            try:
                X, gen_s = _users(args, n_users, users)
                emit(synthetic_case(args, model, X, gen_s, base, gpu_name), args.out)
            except Exception as exc:
                emit({**base, "n_users": n_users, "error": f"{type(exc).__name__}: {exc}"}, args.out)
                ok = False
        del model
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--data", default=None, help="a split folder of --data-dir (ours vs official on the CPU)")
    ap.add_argument("--synthetic-users", nargs="*", type=int, default=[], help="numbers of synthetic users to score")
    ap.add_argument("--items", type=int, default=40_000, help="catalogue size of the synthetic model")
    ap.add_argument("--model", choices=("fit", "synthetic"), default="fit",
                    help="fit: ICF fit on synthetic training users; synthetic: synthetic factors, no fit")
    ap.add_argument("--train-users", type=int, default=None, help="training users of --model fit (default 5 x items)")
    ap.add_argument("--per-user", type=float, default=30.0, help="mean items per synthetic user")
    ap.add_argument("--user-seed", type=int, default=TRAIN_SEED,
                    help="generator seed of the scored users (the training seed gives the same item distribution)")
    ap.add_argument("--densities", nargs="+", type=float, default=[5e-4, 2e-3])
    ap.add_argument("--ordering", default="popularity", help="ICF ordering of the benchmark models")
    ap.add_argument("--l2", type=float, default=20.0)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--official-block", type=int, default=5000)
    ap.add_argument("--repeat-users", type=int, default=1, help="real data: score the users this many times over "
                    "(a larger batch of the same users)")
    ap.add_argument("--plans", nargs="*", choices=("factored", "product", "sparse_product"), default=[],
                    help="real data: also time these CPU plans side by side (a score_plans record per density)")
    ap.add_argument("--skip-official", action="store_true", help="real data: only the --plans record")
    ap.add_argument("--batch-size", type=int, default=None, help="users per recommend_batches block (default the model's)")
    ap.add_argument("--check-users", type=int, default=20_000, help="GPU: users compared with the CPU path")
    ap.add_argument("--warm-users", type=int, default=100, help="users scored once before timing")
    ap.add_argument("--time-cap", type=float, default=None, help="seconds after which a pass stops (users/s stay exact)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "score.jsonl"))
    args = ap.parse_args(argv)
    if not (args.data or args.synthetic_users):
        ap.error("give --data and/or --synthetic-users")
    if args.data:
        real_data(args)
    ok = synthetic(args) if args.synthetic_users else True
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
