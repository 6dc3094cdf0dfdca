"""PREDICTED device seconds per stage, from the CPU executor's counts -- predictions, not
measurements. One JSON line per (stage, size): ``what: "predicted_device_seconds"``,
``prediction: true``, ``device: "prediction (CPU executor counts), not a device measurement"``.

The stage's kernels run on the CPU executor with counting on (``ExecutorDevice(count=True)``,
``sansa_gpu/_testing/counts.py``, ``docs/executor_counts.md``): per launch, warp-level memory
instructions, the global-memory 32-byte sectors they touch, atomics, and busy lanes per phase.
The counts become seconds by a stated cost model (``MODEL``, ``DEVICES``, written into every
record):

    memory  = global sectors x 32 B / (achievable_bandwidth_fraction x peak DRAM bandwidth)
    atomics = global atomic lane-ops / global_atomics_per_s + shared atomic lane-ops / shared_atomics_per_s
    seconds = max(memory, atomics) + launches x launch_overhead_s

It ignores caches (every sector is a DRAM sector, L2 hits included), latency, occupancy limits
(whether enough warps are resident to reach the bandwidth) and instruction issue; the first
device run is to check it against measured kernel seconds (``refine_bench.py``, ``score_bench.py``).

Stages (kernels only: CuPy library calls such as the candidate sort of a refinement sweep are not
counted):

- ``refine``: the first sweep of ``sansa_gpu.gpu.refine_sweep`` (K0 = 2I - L) on factors of
  synthetic data (``--factor icf``: ``ldlt_icf`` of ``synthetic_interactions`` with 2 users per
  item, 16 nonzeros per item column, popularity ordering; ``--factor synthetic``: a synthetic unit
  lower L with 15 off-diagonals per column). A launch of a kernel that names its columns
  (``cols`` / ``n_cols``, or ``col_begin`` / ``col_end``: COLUMN_RANGE_PARAMS) runs only a
  stratified sample of them (``--sample-columns`` of a launch over all n, in ``--sample-ranges``
  contiguous runs, one at a random offset in each of as many equal strata); its counts are scaled
  by columns launched / columns sampled.
- ``score``: ``sansa_gpu.gpu.recommend_sparse`` (k = ``--k``) of ``--score-sample-users``
  synthetic users (``--per-user`` items on average) on the weights assembled from the same
  factors (K0); counts scaled to ``--score-users`` users.
- ``gram``: when ``kernels/gram.cu`` and ``sansa_gpu/gpu/gram.py`` exist (skipped with a message
  otherwise): the GPU Gram of the synthetic X (``--factor icf`` only) in the factor's ordering,
  columns sampled as for refine.

Sizes: the stages are measured at ``--measure-items`` (default 30,000 and 100,000 items) and
predicted for ``--items`` (default 100k, 1M, 10M); a predicted size above the measured ones is
extrapolated linearly from the per-column (refine, gram) or per-user (score) counts of the
largest measured size below it, at the same per-item density, and the record says so in
``extrapolated_from``. Its ``growth_check`` says how the per-unit sectors grew between the two
largest measured sizes and what the prediction would be if they kept growing so.

    python benchmarks/predict_device.py                       # -> benchmarks/results/predicted.jsonl
    python benchmarks/predict_device.py --stages score --measure-items 20000 --items 20000 --out /tmp/p.jsonl
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _isolated import emit, git_commit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEVICE_NOTE = "prediction (CPU executor counts), not a device measurement"
PER_ITEM = 16  # nonzeros per item column of each factor (the package's default density)

#: Peak DRAM bandwidth of the predicted devices (NVIDIA's data sheets; both GH100, 132 SMs).
DEVICES = {
    "h100": {"name": "NVIDIA H100 SXM5 80 GB (HBM3)", "dram_bytes_per_s": 3.35e12, "multiprocessors": 132},
    "h200": {"name": "NVIDIA H200 SXM 141 GB (HBM3e)", "dram_bytes_per_s": 4.8e12, "multiprocessors": 132},
}
#: The cost model's assumed constants (assumptions, to be checked by the first device run).
MODEL = {
    "sector_bytes": 32,
    "achievable_bandwidth_fraction": 0.8,  # of peak DRAM bandwidth, for every access pattern
    "global_atomics_per_s": 1.5e11,  # lane-level atomics resolved in L2 (distinct addresses), both devices
    "shared_atomics_per_s": 3.7e12,  # 132 SMs x ~1.75 GHz x 16 per clock, both devices
    "launch_overhead_s": 5e-6,  # per kernel launch
    "formula": "max(sectors * sector_bytes / (fraction * dram_bytes_per_s), global_atomics / global_atomics_per_s "
               "+ shared_atomics / shared_atomics_per_s) + launches * launch_overhead_s",
    "ignores": "caches (L2 hits count as DRAM sectors), latency, occupancy limits, instruction issue, "
               "CuPy library calls between launches",
}


def predict_seconds(counts: dict, launches: int, device: dict, model: dict = MODEL) -> dict:
    """PREDICTED seconds of launches with these (merged) counts on ``device`` (see MODEL)."""
    tot = counts["totals"]
    memory = tot["sectors"] * model["sector_bytes"] / (model["achievable_bandwidth_fraction"] * device["dram_bytes_per_s"])
    atomics = (tot["atomics"]["global"] / model["global_atomics_per_s"]
               + tot["atomics"]["shared"] / model["shared_atomics_per_s"])
    launch = launches * model["launch_overhead_s"]
    return {"predicted_seconds": max(memory, atomics) + launch, "memory_seconds": memory, "atomics_seconds": atomics,
            "launch_seconds": launch, "bound": "memory" if memory >= atomics else "atomics"}


# ------------------------------------------------------------------------------ sampling device
#: Parameter-name pairs by which a kernel says which columns it processes, and how its launches are
#: sampled (outputs of "within" and "list" kernels must be indexed by absolute column):
#:  * ("cols", "n_cols"), "list": the columns cols[0 .. n_cols) (the refinement): the launch gets a
#:    stratified sample of contiguous runs of that list; a later launch over sampled columns only (a
#:    retry of the columns that overflowed) runs whole, with the scale of their sample;
#:  * ("col_begin", "col_end"), "within": the range [begin, end): a stratified sample of sub-ranges;
#:  * ("b0", "b1"), "launches": [b0, b1) with outputs indexed from b0 (the Gram): a launch runs whole
#:    or not at all, each with probability = the sampled fraction (systematic sample).
COLUMN_RANGE_PARAMS = {("cols", "n_cols"): "list", ("col_begin", "col_end"): "within", ("b0", "b1"): "launches"}


def _sample_ranges(begin: int, end: int, fraction: float, ranges_full: int, n_full: int, rng) -> list[tuple[int, int]]:
    """Stratified sample of the columns [begin, end): about ``fraction`` of them, in contiguous
    ranges (``ranges_full`` for a launch over ``n_full`` columns, proportionally fewer for a shorter
    one), one range at a random offset inside each of as many equal strata. Empty: run them all."""
    total = end - begin
    want = math.ceil(fraction * total)
    if total <= 0 or want >= total:
        return []
    r = max(1, min(want, round(ranges_full * total / max(n_full, 1))))
    per = math.ceil(want / r)
    edges = np.linspace(begin, end, r + 1)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        lo, hi = int(round(lo)), int(round(hi))
        start = lo if hi - lo <= per else int(rng.integers(lo, hi - per + 1))
        out.append((start, min(start + per, hi)))
    return out


def _sampling_device(fraction: float, ranges: int, n_full: int, seed: int = 0, **kwargs):
    """An ExecutorDevice counting every launch; a kernel with column-range parameters
    (COLUMN_RANGE_PARAMS) runs only a stratified sample of about ``fraction`` of its columns
    (:func:`_sample_ranges`) and each of its records carries ``scale`` = columns launched / columns
    sampled (over the launch's sample) and ``columns_sampled`` (its own range). ``glue_launches``
    counts the launches the GPU glue made (what the device would run)."""
    from sansa_gpu._testing import cuda_executor as ce

    rng = np.random.default_rng(seed)
    systematic = {"position": float(rng.random())}  # launch sampling: systematic, equal probability

    class SamplingKernel:
        def __init__(self, kernel, device):
            self.kernel, self.device = kernel, device

        def __call__(self, grid, block, args, **kw):
            dev = self.device
            dev.glue_launches += 1
            names = [p.name for p in self.kernel.params]
            args = list(args)
            first = len(dev.launch_counts)
            pair, mode = next((((names.index(a), names.index(b)), m) for (a, b), m in COLUMN_RANGE_PARAMS.items()
                               if a in names and b in names), (None, None))
            plan = []
            if pair is not None and fraction < 1 and mode == "list":
                self._list(grid, block, args, pair, kw)
                return
            if pair is not None and fraction < 1:
                ib, ie = pair
                cb, cend = int(args[ib]), int(args[ie])
                if mode == "launches":
                    before = systematic["position"]
                    systematic["position"] += fraction
                    dev.skipped_columns += cend - cb
                    if int(systematic["position"]) == int(before):
                        return  # not in the sample: outputs stay as the glue initialised them
                    self.kernel(grid, block, tuple(args), device=dev, **kw)
                    dev.launch_counts[-1].update(scale=1.0 / fraction, columns_sampled=cend - cb,
                                                 columns_launched=cend - cb, sampling="launch")
                    return
                plan = _sample_ranges(cb, cend, fraction, ranges, n_full, rng)
            if not plan:
                self.kernel(grid, block, tuple(args), device=dev, **kw)
                for rec in dev.launch_counts[first:]:
                    rec["scale"] = 1.0
                return
            sampled = 0
            for s, e in plan:
                args[ib], args[ie] = type(args[ib])(s), type(args[ie])(e)
                self.kernel(grid, block, tuple(args), device=dev, **kw)
                dev.launch_counts[-1]["columns_sampled"] = e - s
                sampled += e - s
            for rec in dev.launch_counts[first:]:
                rec.update(scale=(cend - cb) / sampled, columns_launched=cend - cb, sampling="columns")

        def _list(self, grid, block, args, pair, kw):
            dev, (ic, inn) = self.device, pair
            total = int(args[inn])
            host = np.asarray(args[ic].view(np.ndarray)[:total]) if total else np.empty(0, dtype=np.int64)
            known = dev.sampled_scale
            if total and known and all(int(c) in known for c in host):  # a retry over sampled columns
                self.kernel(grid, block, tuple(args), device=dev, **kw)
                dev.launch_counts[-1].update(scale=float(np.mean([known[int(c)] for c in host])), columns_sampled=total,
                                             columns_launched=total, sampling="list-retry")
                return
            runs = _sample_ranges(0, total, fraction, ranges, n_full, rng)
            if not runs:
                self.kernel(grid, block, tuple(args), device=dev, **kw)
                dev.launch_counts[-1]["scale"] = 1.0
                return
            sub = host[np.concatenate([np.arange(a, b) for a, b in runs])]
            scale = total / sub.shape[0]
            known.update((int(c), scale) for c in sub)
            args[ic] = ce.xp.asarray(sub.astype(host.dtype, copy=False))
            args[inn] = type(args[inn])(sub.shape[0])
            self.kernel(grid, block, tuple(args), device=dev, **kw)
            dev.launch_counts[-1].update(scale=scale, columns_sampled=int(sub.shape[0]), columns_launched=total,
                                         sampling="list")

        def __repr__(self):
            return f"<sampled {self.kernel!r}>"

    class SamplingDevice(ce.ExecutorDevice):
        def __init__(self, **kw):
            super().__init__(count=True, **kw)
            self.glue_launches = 0
            self.skipped_columns = 0
            self.sampled_scale: dict[int, float] = {}  # list sampling: column -> its sample's scale

        def get_kernel(self, file, expression):
            return SamplingKernel(ce.get_module(file, True).get_function(expression), self)

    return SamplingDevice(**kwargs)


def _sample_info(records: list[dict], unit: str) -> dict:
    sampled = [r for r in records if "columns_sampled" in r]
    how = sorted({r.get("sampling") for r in sampled} - {None})
    notes = {"columns": "a launch runs a stratified sample of contiguous column ranges (one at a random offset per "
                        "stratum), its counts scaled by columns launched / columns sampled",
             "list": "a launch over a list of columns runs a stratified sample of contiguous runs of the list (one "
                     "at a random offset per stratum), its counts scaled by columns listed / columns sampled",
             "list-retry": "a later launch over sampled columns only (columns retried with larger tables) runs "
                           "whole, scaled as their sample",
             "launch": "launches over column blocks are run whole or skipped (systematic sample, each with "
                       "probability = the sampled fraction), a run launch's counts scaled by 1 / that fraction"}
    return {f"{unit}s_sampled": sum(r["columns_sampled"] for r in sampled), "sampled_executor_launches": len(sampled),
            "full_executor_launches": len(records) - len(sampled),
            "note": "; ".join(notes[h] for h in how) + ("; other launches ran in full" if len(sampled) < len(records)
                                                        else "")}


def _scaled(records: list[dict], extra: float = 1.0) -> dict:
    from sansa_gpu._testing.counts import merge_counts

    parts = [merge_counts([r], r.get("scale", 1.0) * extra) for r in records]
    return merge_counts(parts)


# ---------------------------------------------------------------------------------- data
def build_factors(n: int, factor: str, seed: int = 0) -> dict:
    """Factors of an n-item model at PER_ITEM nonzeros per column: L, K0 = 2I - L, d, p, budget,
    X (icf only), and a description."""
    from sansa_gpu.cpu.refine import initial_inverse

    t0 = time.perf_counter()
    if factor == "icf":
        from sansa_gpu.factorize import ldlt_icf
        from sansa_gpu.synthetic import synthetic_interactions

        X = synthetic_interactions(n_users=2 * n, n_items=n, mean_items_per_user=30,
                                   n_communities=max(50, n // 2000), seed=seed)
        budget = PER_ITEM * n
        f = ldlt_icf(X, 20.0, budget, 0.0, "popularity")
        L, d, p = f.L, f.d, f.p
        desc = (f"ldlt_icf(synthetic_interactions(n_users={2 * n}, n_items={n}, mean_items_per_user=30, seed={seed}), "
                f"l2=20, budget={PER_ITEM} per item, popularity ordering)")
    else:
        from refine_bench import synthetic_unit_lower

        X = None
        L = synthetic_unit_lower(n, PER_ITEM - 1, seed)
        budget = int(L.nnz)
        rng = np.random.default_rng(seed + 1)
        d = 20.0 + rng.gamma(2.0, 50.0, n)
        p = rng.permutation(n).astype(np.int64)
        desc = f"synthetic unit lower L (refine_bench.synthetic_unit_lower, {PER_ITEM - 1} off-diagonals per column, seed={seed})"
    K0 = initial_inverse(L)
    return {"n": n, "L": L, "K0": K0, "d": d, "p": p, "budget": budget, "X": X, "data": desc,
            "build_seconds": time.perf_counter() - t0}


def kernel_digest(files) -> str:
    """sha256 (12 hex) of the kernel sources a record's counts come from (the tree may be dirty)."""
    from sansa_gpu.gpu._kernels import kernel_dir

    h = hashlib.sha256()
    for name in sorted(set(files)) + ["sansa_common.cuh"]:
        path = kernel_dir() / name
        if path.is_file():
            h.update(name.encode() + path.read_bytes())
    return h.hexdigest()[:12]


# ---------------------------------------------------------------------------------- stages
def measure_refine(fac: dict, args) -> dict:
    from sansa_gpu import gpu

    n = fac["n"]
    dev = _sampling_device(args.sample_columns / n, args.sample_ranges, n, args.seed)
    t0 = time.perf_counter()
    with dev, np.errstate(invalid="ignore"):  # residual norms of unsampled columns are garbage
        try:
            gpu.refine_sweep(fac["L"], fac["K0"], fac["budget"])
        finally:
            gpu.release_scratch()
    return {"records": dev.launch_counts, "glue_launches": dev.glue_launches, "executor_seconds": time.perf_counter() - t0,
            "units": n, "unit": "column", "sizes": {"n_items": n, "nnz_L": int(fac["L"].nnz), "budget": fac["budget"]},
            "sample": _sample_info(dev.launch_counts, "column"),
            "what_ran": "gpu.refine_sweep(L, K0 = 2I - L, budget): the first sweep"}


def measure_score(fac: dict, args) -> dict:
    from sansa_gpu import cpu, gpu
    from sansa_gpu.synthetic import synthetic_interactions

    n = fac["n"]
    Wt, Z = cpu.assemble_weights(fac["K0"], fac["d"], fac["p"])
    X = synthetic_interactions(n_users=args.score_sample_users, n_items=n, mean_items_per_user=args.per_user,
                               n_communities=max(50, n // 2000), seed=args.seed + 7)
    # a small free_bytes: few resident warps, so the per-warp scratch the executor copies stays small
    # (per-user counts do not depend on the number of warps)
    dev = _sampling_device(1.0, 1, n, free_bytes=args.score_free_bytes)
    t0 = time.perf_counter()
    with dev:
        gpu.recommend_sparse(X, Wt, Z, args.k)  # no cache: the device state lives for this call only
    users = X.shape[0]
    return {"records": dev.launch_counts, "glue_launches": dev.glue_launches, "executor_seconds": time.perf_counter() - t0,
            "units": users, "unit": "user",
            "sizes": {"n_items": n, "nnz_Wt": int(Wt.nnz), "nnz_Z": int(Z.nnz), "users_sampled": users,
                      "nnz_X_sampled": int(X.nnz), "k": args.k},
            "sample": {"users_sampled": users, "mean_items_per_user": float(X.nnz / max(users, 1)),
                       "note": f"synthetic_interactions(n_users={users}, n_items={n}, "
                               f"mean_items_per_user={args.per_user}, seed={args.seed + 7})"},
            "what_ran": f"gpu.recommend_sparse(X, Wt, Z, k={args.k}) on weights assembled from K0"}


def measure_gram(fac: dict, args) -> dict | None:
    """The GPU Gram (kernels/gram.cu through sansa_gpu.gpu.gram), when both exist."""
    import importlib
    import inspect

    from sansa_gpu.gpu._kernels import kernel_dir

    if not (kernel_dir() / "gram.cu").is_file():
        print("# gram: kernels/gram.cu is absent: stage skipped", file=sys.stderr)
        return None
    try:
        mod = importlib.import_module("sansa_gpu.gpu.gram")
    except ImportError as exc:
        print(f"# gram: sansa_gpu.gpu.gram not importable ({exc}): stage skipped", file=sys.stderr)
        return None
    fn = next((getattr(mod, name) for name in ("gram_lower_and_norms", "gram_lower") if hasattr(mod, name)), None)
    if fn is None or fac["X"] is None:
        print("# gram: no gram_lower_and_norms / gram_lower in sansa_gpu.gpu.gram, or no X (--factor synthetic): "
              "stage skipped", file=sys.stderr)
        return None
    X, n = fac["X"], fac["n"]
    params = inspect.signature(fn).parameters
    kwargs = {"perm": fac["p"]} if "perm" in params else {}
    device_launches, block_note = None, None
    if "block_slots" in params:
        # small column blocks (about sample_columns / sample_ranges columns each), so that a
        # sample of whole launches is a sample of many small, spread column ranges
        lens = np.diff(X.indptr).astype(np.float64)
        per = max(1, args.sample_columns // args.sample_ranges)
        kwargs["block_slots"] = max(1, int(float((lens ** 2).sum()) * per / n))
        block_note = (f"run with block_slots={kwargs['block_slots']} (about {per} columns per launch) for the "
                      "sample; launches counted as the default plan makes them")
        try:  # what the default plan would launch on the device
            from sansa_gpu.cpu.gram import BLOCK_SLOTS, column_bounds, plan_blocks

            device_launches = len(plan_blocks(column_bounds(X, fac["p"] if kwargs.get("perm") is not None else
                                                            np.arange(n), None), BLOCK_SLOTS))
        except Exception as exc:  # noqa: BLE001 - informative only
            block_note += f" (default plan unavailable: {type(exc).__name__})"
    dev = _sampling_device(args.sample_columns / n, args.sample_ranges, n, args.seed)
    t0 = time.perf_counter()
    with dev:
        fn(X, **kwargs)
    sample = _sample_info(dev.launch_counts, "column")
    if block_note:
        sample["blocks"] = block_note
    return {"records": dev.launch_counts, "executor_seconds": time.perf_counter() - t0,
            "glue_launches": device_launches if device_launches is not None else dev.glue_launches,
            "units": n, "unit": "column", "sizes": {"n_items": n, "nnz_X": int(X.nnz), "users": int(X.shape[0])},
            "sample": sample,
            "what_ran": f"sansa_gpu.gpu.gram.{fn.__name__}(X{', perm=the factor ordering' if kwargs else ''})"}


def score_occupancy(n_items: int, device: dict) -> dict:
    """Warps the scoring glue would make resident on ``device`` (its launch_shape with the device's
    memory), for the record: the cost model assumes enough of them to reach the bandwidth."""
    from sansa_gpu.gpu import _device, inference

    class Fake:
        def free_bytes(self):
            return int(139e9)

        def multiprocessor_count(self):
            return device["multiprocessors"]

    with _device.use(Fake()):
        blocks, warps = inference.launch_shape(n_items, n_items)
    return {"blocks": blocks, "warps": warps, "warps_per_sm": warps / device["multiprocessors"],
            "assumed_free_bytes": int(139e9)}


# ---------------------------------------------------------------------------------- records
def _compact(counts: dict) -> tuple[dict, dict]:
    """The record's view of merged counts: totals without all-zero tallies, and per phase the busy
    and active-thread fractions, instructions, sectors and atomics."""
    from sansa_gpu._testing.counts import KINDS, SPACES

    def tallies(p):
        return {f"{sp}_{k}": {t: round(v, 1) for t, v in p[sp][k].items() if v}
                for sp in SPACES for k in KINDS if p[sp][k]["lane_ops"]}

    tot = counts["totals"]
    out = {"warp_instructions": round(tot["warp_instructions"], 1), "lane_instructions": round(tot["lane_instructions"], 1),
           "busy_fraction": tot["busy_fraction"], "sectors": round(tot["sectors"], 1),
           "atomics": {k: round(v, 1) for k, v in tot["atomics"].items()}, "barriers": round(counts["barriers"], 1),
           "blocks": round(counts["blocks"], 1), "threads_per_block": counts["threads_per_block"],
           "by_space": tallies(tot)}
    phases = {name: {"busy_fraction": p["busy_fraction"], "active_thread_fraction": p["active_thread_fraction"],
                     "warp_instructions": round(p["warp_instructions"], 1),
                     "global_sectors": round(sum(p["global"][k]["sectors"] for k in KINDS), 1),
                     "global_atomics": round(p["global"]["atomic"]["lane_ops"], 1),
                     "shared_atomics": round(p["shared"]["atomic"]["lane_ops"], 1)}
              for name, p in counts["phases"].items()}
    return out, phases


def _growth(history: list, target: int, factor_counts: dict, launches: int) -> dict | None:
    """Check of a linear extrapolation: how the per-unit (column / user) global sectors grew between
    the two largest measured sizes, and the PREDICTED seconds at ``target`` if they keep growing
    so (a power law in n_items fitted through those two points)."""
    if len(history) < 2:
        return None
    (n0, s0), (n1, s1) = history[-2], history[-1]
    if s0 <= 0 or s1 <= 0 or n1 == n0:
        return None
    alpha = math.log(s1 / s0) / math.log(n1 / n0)
    grow = (target / n1) ** alpha
    from sansa_gpu._testing.counts import merge_counts

    counts = merge_counts([factor_counts], grow)
    return {"per_unit_global_sectors": {str(n0): s0, str(n1): s1}, "exponent": alpha,
            "predicted_seconds_if_per_unit_work_grows_so": {name: predict_seconds(counts, launches, dev)["predicted_seconds"]
                                                           for name, dev in DEVICES.items()},
            "note": "per-unit work ~ n_items^exponent fitted through the two largest measured sizes; the main "
                    "prediction assumes exponent 0"}


def _extrapolation(measured_n: int, n: int, unit: str, times: str, grows_with: str) -> dict | None:
    """What a record predicted at ``n`` items from counts measured at ``measured_n`` says of its
    extrapolation (None when it was measured at that size)."""
    if n == measured_n:
        return None
    return {"n_items": measured_n, "rule": f"counts per {unit} measured on the {measured_n}-item model (same "
                                           f"{PER_ITEM} nonzeros per item column) x {times}; assumes the per-{unit} "
                                           f"work does not grow with {grows_with}"}


def records_for(stage: str, measured: dict, fac: dict, targets: list[int], args, base: dict,
                history: list | None = None) -> list[dict]:
    from sansa_gpu._testing.counts import merge_counts

    records = measured["records"]
    kernels = sorted({r["kernel"] for r in records})
    files = sorted({r["file"] for r in records})
    sample_counts = merge_counts(records)  # the launches as run on the executor (unscaled)
    out = []
    for n in targets:
        if stage == "score":
            users = args.score_users
            factor = users / measured["units"]
            extrapolated = _extrapolation(fac["n"], n, "user", "users", "n_items")
            sizes = {**measured["sizes"], "n_items": n, "users": users}
            if n != fac["n"]:
                sizes = {"n_items": n, "users": users, "k": args.k, "nnz_Wt": f"~{PER_ITEM} x n_items (extrapolated)",
                         "nnz_Z": f"~{PER_ITEM} x n_items (extrapolated)"}
            scale_note = f"counts of {measured['units']} sampled users x {factor:g}"
            launches = measured["glue_launches"]  # uploads of one users block: 1 per call at these sizes
        else:
            factor = n / measured["units"]
            extrapolated = _extrapolation(fac["n"], n, "column", "n_items", "n")
            sizes = measured["sizes"] if n == fac["n"] else {"n_items": n, "nnz": f"~{PER_ITEM} x n_items (extrapolated)"}
            scale_note = ("sampled columns scaled to the launched columns" +
                          (f", then x {factor:g} (n_items / measured n_items)" if n != fac["n"] else ""))
            launches = measured["glue_launches"]
        counts = _scaled(records, factor)
        totals, phases = _compact(counts)
        pred = {name: predict_seconds(counts, launches, dev) for name, dev in DEVICES.items()}
        rec = {"what": "predicted_device_seconds", "prediction": True, "device": DEVICE_NOTE, "stage": stage,
               "kernel": kernels, "kernel_files": files, "kernel_sha256": kernel_digest(files), "data": fac["data"],
               "sizes": sizes, "what_ran": measured["what_ran"],
               "predicted_seconds": {name: p["predicted_seconds"] for name, p in pred.items()},
               "predicted_breakdown": pred, "counts": totals, "busy_fraction_by_phase": phases,
               "sample": measured["sample"], "scaling": scale_note, "extrapolated_from": extrapolated,
               "measured_at_n_items": fac["n"],
               "sample_busy_fraction_by_phase": _compact(sample_counts)[1] if n == fac["n"] else None,
               "launches": launches, "executor_launches": len(records), "executor_seconds": round(measured["executor_seconds"], 2),
               "model": {**MODEL, "devices": DEVICES}, **base}
        if stage == "score":
            rec["predicted_seconds_per_million_users"] = {name: p["predicted_seconds"] * 1e6 / args.score_users
                                                          for name, p in pred.items()}
            try:
                rec["device_occupancy_h200"] = score_occupancy(n, DEVICES["h200"])
                rec["device_occupancy_h200"]["note"] = ("resident warps the glue would launch on an H200; the cost model "
                                                        "assumes they are enough to reach the bandwidth")
            except Exception as exc:  # noqa: BLE001 - informative only
                rec["device_occupancy_h200"] = f"unavailable ({type(exc).__name__}: {exc})"
        if rec["sample_busy_fraction_by_phase"] is None:
            del rec["sample_busy_fraction_by_phase"]
        if history and len(history) >= 2:
            rec["growth_check"] = _growth(history, n, counts, launches) if n != fac["n"] else {
                "per_unit_global_sectors": {str(a): b for a, b in history}}
        out.append(rec)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stages", nargs="+", default=["refine", "score", "gram"], choices=("refine", "score", "gram"))
    ap.add_argument("--measure-items", nargs="+", type=int, default=[30_000, 100_000],
                    help="model sizes run on the executor (each predicted size uses the largest one <= it; with two "
                         "or more, extrapolated records carry a growth_check)")
    ap.add_argument("--items", nargs="+", type=int, default=[100_000, 1_000_000, 10_000_000], help="sizes predicted")
    ap.add_argument("--factor", choices=("icf", "synthetic"), default="icf")
    ap.add_argument("--sample-columns", type=int, default=2048,
                    help="refine / gram: columns run on the executor (of a launch over all columns; proportionally "
                         "fewer for a launch over fewer)")
    ap.add_argument("--sample-ranges", type=int, default=64, help="contiguous ranges the sampled columns form")
    ap.add_argument("--score-sample-users", type=int, default=256, help="users scored on the executor")
    ap.add_argument("--score-users", type=int, default=1_000_000, help="users the score prediction is for")
    ap.add_argument("--score-free-bytes", type=int, default=64 << 20,
                    help="free_bytes the executor reports to the scoring glue (small: one block of warps)")
    ap.add_argument("--per-user", type=float, default=30.0, help="mean items per synthetic user")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "predicted.jsonl"))
    args = ap.parse_args(argv)

    base = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "git_commit": git_commit()}
    try:
        import subprocess

        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "kernels"], capture_output=True,
                               text=True).stdout.strip()
        base["kernels_uncommitted"] = bool(dirty)
    except OSError:
        pass
    measured_sizes = sorted(set(args.measure_items))
    below = [n for n in args.items if n < measured_sizes[0]]
    if below:
        print(f"# sizes {below} are below every measured size: not predicted", file=sys.stderr)
    ok = True
    per_unit: dict = {}  # stage -> [(n_items, global sectors per unit)] of the sizes measured so far
    for m in measured_sizes:
        # predicted here: m itself if asked, and the larger sizes no larger measured size serves
        targets = [n for n in args.items if n >= m and all(not (m < m2 <= n) for m2 in measured_sizes)]
        fac = build_factors(m, args.factor, args.seed)
        print(f"# factors n={m} ({args.factor}): nnz(L)={fac['L'].nnz} in {fac['build_seconds']:.1f}s", file=sys.stderr,
              flush=True)
        for stage in args.stages:
            try:
                measured = {"refine": measure_refine, "score": measure_score, "gram": measure_gram}[stage](fac, args)
            except Exception as exc:  # noqa: BLE001 - one failed stage is a record, the others go on
                ok = False
                emit({"what": "predicted_device_seconds", "prediction": True, "device": DEVICE_NOTE, "stage": stage,
                      "sizes": {"n_items": m}, "error": f"{type(exc).__name__}: {str(exc)[:2000]}", **base}, args.out)
                continue
            if measured is None:
                continue
            print(f"# {stage} n={m}: {len(measured['records'])} executor launches in "
                  f"{measured['executor_seconds']:.1f}s", file=sys.stderr, flush=True)
            per_unit.setdefault(stage, []).append((m, _scaled(measured["records"])["totals"]["sectors"] / measured["units"]))
            for rec in records_for(stage, measured, fac, targets, args, base, per_unit[stage]):
                emit(rec, args.out)
        del fac
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
