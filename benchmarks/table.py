"""The result tables of docs/benchmarks.md, generated from the JSON lines in ``benchmarks/results/``.

    python benchmarks/table.py                                # every table, each under its name
    python benchmarks/table.py compare_official               # one table (names: python benchmarks/table.py --list)
    python benchmarks/table.py --check docs/benchmarks.md     # exit 1, with a diff, where a marked table differs
    python benchmarks/table.py --write docs/benchmarks.md     # rewrite the marked tables in place
    python benchmarks/table.py results.jsonl                  # compare_official.py lines of any file, as one table

In docs/benchmarks.md each generated table sits between ``<!-- table:NAME -->`` and ``<!-- /table -->``; the
text between the two marker lines is exactly what ``NAME`` prints (``tests/test_benchmark_tables.py``
checks it). Every table is a function of the records alone: no figure is typed here.

Selection: a table row names the fields a record must have (data, density, implementation, ordering,
...). When several records match, the last one in the file is used (a later run of the same command
supersedes an earlier one); failed runs (``error``) never match; when none matches, generation fails
(no row without a record).
"""

from __future__ import annotations

import argparse
import difflib
import json
import statistics
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MARKER = re.compile(r"^<!-- table:(?P<name>[a-z_]+) -->\n(?P<body>.*?)^<!-- /table -->$", re.M | re.S)

Records = dict  # file stem -> list of records, in file order


def load(results_dir: Path | str = RESULTS) -> Records:
    """Every ``*.jsonl`` under ``results_dir``, by file stem, records in file order."""
    out = {}
    for path in sorted(Path(results_dir).glob("*.jsonl")):
        out[path.stem] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out


def load_file(path: str) -> list:
    """The records of one JSON-lines file, in order."""
    return [json.loads(line) for line in open(path) if line.strip()]


# ----------------------------------------------------------------------------------------- helpers
def _matches(rec: dict, key: dict) -> bool:
    for k, want in key.items():
        have = rec.get(k)
        if callable(want):
            if not want(have):
                return False
        elif have != want:
            return False
    return True


def _all(records: list, **key) -> list:
    """Records matching every ``field=value``; a run that failed (``error``) matches nothing."""
    return [r for r in records if "error" not in r and _matches(r, key)]


def _last(records: list, **key) -> dict:
    """The last record matching every ``field=value`` (``value`` may be a predicate)."""
    found = _all(records, **key)
    if not found:
        raise LookupError(f"no record with {key}")
    return found[-1]


def _no_pruning(v) -> bool:  # min_cooccurrence absent (older records) or 0: the exact Gram
    return not v


def _table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _sci(x: float) -> str:
    """5e-4, 2e-3, 1e-7 (one significant digit, no exponent padding)."""
    m, e = f"{x:.0e}".split("e")
    return f"{m}e{int(e)}"


def _count(n: int) -> str:
    """200k, 1M, 2.5M."""
    if n >= 1_000_000:
        return f"{n / 1e6:g}M"
    return f"{n / 1e3:g}k"


def _millions(n: int) -> str:
    return f"{n / 1e6:.1f}M"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×"


def _delta(a: float, b: float) -> str:
    return f"{a - b:+.4f}".replace("-", "−")


def _secs(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def _share(x: float) -> str:
    """Share of rows as a percentage with at most 2 decimals, never rounded up to 100%."""
    s = f"{100 * x:.2f}"
    if x < 1 and float(s) >= 100:
        s = "99.99"
    return s.rstrip("0").rstrip(".") + "%"


# ------------------------------------------------------------------------------ compare_official.py
def _compare_rows(records: list) -> list:
    """(official, ours) per (data, density), last record of each, in order of first appearance;
    ``official`` is None where no official record exists (gowalla at 1e-2: the only official run shared
    the machine with development work and peaked at 24 GB on this 24 GB VM, so it was dropped, not rerun)."""
    keys = []
    for r in records:
        k = (r["data"], r["density"])
        if k not in keys and "error" not in r:
            keys.append(k)
    out = []
    for d, dens in keys:
        off = _all(records, data=d, density=dens, implementation="official")
        out.append((off[-1] if off else None, _last(records, data=d, density=dens, implementation="ours")))
    return out


_COMPARE_HEADER = ["data", "density", "impl", "Recall@20", "R@20 BARS", "nDCG@20", "fit s", "recommend s (all users)",
                   "nnz", "peak RSS GB"]


def _compare_row(r: dict) -> list:
    fit = f"{r['fit_seconds']:.1f}"
    rec = r.get("recommend_seconds")
    rec = f"crash: {r.get('recommend_error', '')[:30]}" if rec is None else f"{rec:.2f}"
    return [r["data"], f"{r['density']:g}", r["implementation"], f"{r['recall@20']:.4f}", f"{r['recall_bars@20']:.4f}",
            f"{r['ndcg@20']:.4f}", fit, rec, f"{r['nnz']:,}", f"{r['peak_rss_gb']:.2f}"]


def compare_official_lines(records: list) -> str:
    """All records of one compare_official.py output file, one row each (the old ``table.py FILE``)."""
    rows = []
    for r in records:
        if "error" in r:
            rows.append([r["data"], f"{r['density']:g}", r["implementation"], f"error: {r['error']}"] + [""] * 6)
            continue
        rows.append(_compare_row(r))
    return _table(_COMPARE_HEADER, rows)


def compare_official(res: Records) -> str:
    rows = []
    for off, ours in _compare_rows(res["compare_official"]):
        rows += ([_compare_row(off)] if off else []) + [_compare_row(ours)]
    return _table(_COMPARE_HEADER, rows)


def compare_official_targets(res: Records) -> str:
    """Ours against the official package per pair: the issue-2 targets as differences and ratios."""
    rows = []
    for off, ours in _compare_rows(res["compare_official"]):
        if off is None:
            continue
        rows.append([off["data"], f"{off['density']:g}",
                     _delta(ours["recall@20"], off["recall@20"]), _delta(ours["recall_bars@20"], off["recall_bars@20"]),
                     _ratio(ours["fit_seconds"], off["fit_seconds"]), _ratio(ours["recommend_seconds"], off["recommend_seconds"]),
                     _ratio(ours["peak_rss_gb"], off["peak_rss_gb"])])
    return _table(["data", "density", "Δ Recall@20 (≥ −0.002)", "Δ R@20 BARS", "fit time ours / official (≤ 1)",
                   "recommend time ours / official (≤ 1/3)", "peak RSS ours / official (≤ 1)"], rows)


def _loss(hist: list) -> str:
    return " → ".join(f"{h:.3g}" for h in hist)


def compare_official_stages(res: Records) -> str:
    """Where our fit's time goes (CHOLMOD factoriser), and the refinement's loss after each sweep."""
    rows = []
    for _, r in _compare_rows(res["compare_official"]):
        s = r["stage_seconds"]
        rows.append([r["data"], f"{r['density']:g}", _secs(r["fit_seconds"]), _secs(s["factorize_seconds"]),
                     _secs(s["refine_seconds"]), _secs(s["weights_seconds"]), _loss(r["loss_history"])])
    return _table(["data", "density", "fit s", "factorise s (CHOLMOD + cut)", "refine s", "weights s",
                   "‖I − LK‖²_F / n: K₀ → sweep 1 → sweep 2"], rows)


# ------------------------------------------------------------------------------------ refine_tol
_REFINE_TOL_ROWS = [  # (file, key): ml-1m from compare_official.py --refine-tol T, the others from scale.py
    ("refine_tol", dict(data="ml-1m-implicit", density=0.002, implementation="ours")),
    ("refine_tol", dict(data="ml-1m-implicit", density=0.01, implementation="ours")),
    ("scale", dict(data="gowalla", density=0.0005, implementation="ours", ordering="popularity",
                   min_cooccurrence=_no_pruning)),
    ("scale", dict(data="epinions", density=0.0005, implementation="ours", ordering="popularity",
                   min_cooccurrence=_no_pruning)),
]


def refine_tol(res: Records) -> str:
    rows = []
    for stem, key in _REFINE_TOL_ROWS:
        tight = _last(res[stem], refine_tol=1e-7, **key)
        loose = _last(res[stem], refine_tol=0.01, **key)
        fact = "ICF" if stem == "scale" else "CHOLMOD"
        worst = max(abs(tight[m] - loose[m]) for m in ("recall@20", "recall_bars@20"))
        rows.append([tight["data"], f"{fact}, δ = {_sci(tight['density'])}",
                     f"{tight['recall@20']:.4f} / {loose['recall@20']:.4f}",
                     f"{tight['recall_bars@20']:.4f} / {loose['recall_bars@20']:.4f}", f"{worst:.4f}",
                     f"{tight['stage_seconds']['refine_seconds']:.2f} / {loose['stage_seconds']['refine_seconds']:.2f}",
                     f"`{stem}.jsonl`"])
    return _table(["data", "factoriser, density", "R@20 at 1e-7 / 1e-2", "R@20 BARS at 1e-7 / 1e-2", "largest change",
                   "refine s at 1e-7 / 1e-2", "records"], rows)


# ------------------------------------------------------------------------------------ score_bench.py
def score(res: Records) -> str:
    """Ours vs the official on the same weights, last record per (data, density, users repeated); the
    plan ours ran, and for the factored plan the bare scatter of the same update stream per update
    (benchmarks/_scatter_limit.py) over ours: the share of the machine's limit reached."""
    recs = _all(res["score"], what="score_cpu_vs_official")
    keys = list(dict.fromkeys((r["data"], r["density"], r.get("repeat_users", 1)) for r in recs))
    rows = []
    for d, dens, rep in keys:
        r = _last([x for x in recs if x.get("repeat_users", 1) == rep], data=d, density=dens)
        limit = (f"{r['ours_ns_per_update']:.1f} / {r['scatter_limit']['ns_per_update']:.1f} ns "
                 f"({r['limit_fraction']:.0%})" if "limit_fraction" in r else "—")
        plan = r.get("plan", "factored")
        if r.get("product_build_seconds") is not None:  # B formed once per model, before the timing
            plan += f" (B formed once: {r['product_build_seconds']:.1f} s)"
        rows.append([d + (f" (users ×{rep})" if rep > 1 else ""), _sci(dens), f"{r['n_users']:,}",
                     plan, f"{r['ours_users_per_s']:,.0f}", f"{r['official_users_per_s']:,.0f}",
                     f"{r['speedup']:.2f}×", limit, _share(r["same_topk_rows"]), r.get("commit") or "—"])
    return _table(["data", "density", "users", "our plan", "ours users/s", "official users/s", "speedup",
                   "ns per update: ours / bare scatter (share)", "identical top-k rows", "commit"], rows)


def score_plans(res: Records) -> str:
    """Our CPU scoring plans on the same weights (score_bench.py --plans), last record per (data,
    density): seconds per plan ('—' where not run), forming each B, what auto chooses, and the
    share of top-k rows each product plan gives identical to the factored plan's."""
    recs = _all(res["score"], what="score_plans")
    rows = []
    products = ("product", "sparse_product")
    for d, dens in dict.fromkeys((r["data"], r["density"]) for r in recs):
        r = _last(recs, data=d, density=dens)
        per_item = dens * r["n_items"]
        seconds = [f"{statistics.median(r[f'{p}_seconds']):.2f}" if f"{p}_seconds" in r else "—"
                   for p in ("factored", *products)]
        build = " / ".join("—" if r.get(f"{p}_build_seconds") is None else f"{r[f'{p}_build_seconds']:.2f}"
                           for p in products)
        same = " / ".join(_share(r[f"{p}_vs_factored_same_topk_rows"]) if f"{p}_vs_factored_same_topk_rows" in r
                          else "—" for p in products)
        rows.append([d, f"{dens:.2g}", f"{per_item:.0f}", f"{r['n_users']:,}", *seconds, build, r["auto_chooses"], same])
    return _table(["data", "density", "nonzeros per item", "users", "factored s", "product s", "sparse product s",
                   "forming B s (dense / sparse)", "auto chooses", "identical top-k rows (dense / sparse)"], rows)


def score_synthetic(res: Records) -> str:
    recs = _all(res["score"], what="score_synthetic", device="cpu")
    keys = list(dict.fromkeys((r["n_items"], r["n_users"], r["density"]) for r in recs))
    rows = []
    for items, users, dens in keys:
        r = _last(recs, n_items=items, n_users=users, density=dens)
        rows.append([f"{_count(items)} × {_count(users)}", f"{r['nnz_X'] / users:.1f}", _sci(dens), f"{r['model_nnz']:,}",
                     r["device"].upper(), f"{r['users_per_s']:,.0f}"])
    return _table(["items × users", "items per user", "density", "nnz(Wᵀ) + nnz(Z)", "device", "users/s"], rows)


# ------------------------------------------------------------------------------------ distributed_bench.py
def distributed(res: Records) -> str:
    """Single process beside a local Dask cluster, from the last run of distributed_bench.py."""
    recs = _all(res["distributed"], what="distributed_scoring")
    single = _last(recs, case="single")
    rows = [["single process (`score_to_parquet`)", "—", "—", f"{single['seconds']:.1f}", f"{single['users_per_s']:,.0f}",
             "1", f"{single['peak_rss_gb']:.2f}"]]
    for r in recs[recs.index(single) + 1:]:
        if r.get("case") != "dask":
            continue
        how = f"{r['workers']} workers, " + ("hash shuffle by user" if r["shuffle"] else "input partitioned by user")
        rows.append([how, str(r["partitions"]), f"{r['users_per_partition']:,}", f"{r['seconds']:.1f}",
                     f"{r['users_per_s']:,.0f}", f"{r['ratio_to_single']:.2f}×",
                     " / ".join(f"{x:.2f}" for x in r["peak_rss_gb_workers"])])
    return _table(["run", "partitions", "users per partition", "seconds", "users/s", "÷ single process",
                   "peak RSS GB (per process)"], rows)


# ------------------------------------------------------------------------------------ factorizers.py
_FACTORIZER_COLUMNS = (("icf", 0.0, "ICF"), ("icf", 2.0, "ICF, min_cooccurrence 2"), ("cholmod", 0.0, "CHOLMOD"))


def factorizers(res: Records) -> str:
    """CHOLMOD against ICF (with and without pruning) at equal density and λ: test Recall@20 (fit s, peak GB)."""
    recs = _all(res["factorizers"], what="factorizer_comparison")
    order = list(dict.fromkeys(r["data"] for r in recs))
    keys = sorted(set((r["data"], r["density"]) for r in recs), key=lambda k: (order.index(k[0]), k[1]))
    rows = []
    for data, dens in keys:
        first = _last(recs, data=data, density=dens)
        row = [data, f"{first['n_items']:,}", f"{first['nnz_X'] / first['n_users']:.0f}", f"{first['l2']:g}", _sci(dens)]
        found = []
        for fac, mc, _ in _FACTORIZER_COLUMNS:
            hit = _all(recs, data=data, density=dens, factorizer=fac, min_cooccurrence=mc)
            r = hit[-1] if hit else None
            found.append(r)
            if r is None:
                row.append("not run")
            elif "skipped" in r:
                row.append("refused: memory")
            else:
                row.append(f"{r['recall@20']:.4f} ({r['fit_seconds']:.1f} s, {r['peak_rss_gb']:.2f} GB)")
        done = [(r["recall@20"], label) for r, (_, _, label) in zip(found, _FACTORIZER_COLUMNS) if r and "recall@20" in r]
        row.append(max(done)[1] if done else "—")
        rows.append(row)
    return _table(["data", "items", "items per user", "λ", "density"] + [f"{lab}: R@20 (fit s, peak RSS)"
                                                                          for _, _, lab in _FACTORIZER_COLUMNS]
                  + ["best"], rows)


# ------------------------------------------------------------------------------------ auto_rule.py
def auto_rule(res: Records) -> str:
    """What factorizer='auto' chooses per dataset at the default density, the exact factor's predicted
    and measured seconds, and the old 20,000-item rule's choice."""
    recs = _all(res["auto_rule"], what="auto_factorizer_rule")
    rows = []
    for data in dict.fromkeys(r["data"] for r in recs):
        r = _last(recs, data=data)
        pred, meas = r["predicted_exact_seconds"], r["measured_exact_seconds"]
        rows.append([data, f"{r['n_items']:,}", f"{r['items_per_user']:.0f}", f"{r['nnz_per_item']:.0f}",
                     "not analysed" if pred is None else _secs(pred), "—" if meas is None else _secs(meas),
                     r["choice"].upper() if r["choice"] == "icf" else "CHOLMOD", r["reason"],
                     r["old_rule_choice"].upper() if r["old_rule_choice"] == "icf" else "CHOLMOD"])
    return _table(["data", "items", "items per user", "nonzeros per item", "exact factor s: predicted",
                   "measured s (exact_cost.py)", "auto chooses", "why", "old rule (≤ 20,000 items)"], rows)


# ------------------------------------------------------------------------------------ tune_bench.py
def tune(res: Records) -> str:
    """Per dataset: what tune chose, and test Recall@20 of the tuned, default and best official model."""
    recs = _all(res["tune"], what="tune_vs_default_vs_official")
    rows = []
    for data in dict.fromkeys(r["data"] for r in recs):
        t = _last(recs, data=data, case="tune")
        d = _default_record(res, data, recs)
        found = _all(recs, data=data, case="official")
        o = found[-1] if found else None
        c = t["chosen"]
        ok = sum(tr["status"] == "ok" for tr in t["trials"])
        chosen = (f"{'ICF' if c['factorizer'] == 'icf' else 'CHOLMOD'}, δ = {c['density']:.2g}, λ = {c['l2']:.3g}"
                  + (f", min_cooccurrence {c['min_cooccurrence']:g}" if c["min_cooccurrence"] else "")
                  + f", {c['refine_sweeps']} sweeps")
        rows.append([data, chosen, f"{ok} in {t['search_seconds']:.0f} s", f"{t['recall@20']:.4f}",
                     f"{d['recall@20']:.4f} ({d['factorizer_']}, "
                     + (f"δ = {d['params']['density']:g}" if d["params"]["density"] is not None
                        # the default density (16 nonzeros per item column) resolved, where recorded
                        else f"δ = {d['density_']:.2g} (default)" if "density_" in d else "default δ, 16 per item")
                     + f", λ = {d['l2_'] if d['params']['l2'] is None else d['params']['l2']:.3g})",
                     f"{o['recall@20']:.4f} (λ = {o['best']['l2']:.3g} of {len(o['per_l2'])})" if o else "not measured",
                     _delta(t["recall@20"], d["recall@20"]), _delta(t["recall@20"], o["recall@20"]) if o else "—"])
    return _table(["data", "chosen on validation", "trials, search time", "tuned: test R@20", "default: test R@20",
                   "official best at the chosen δ", "tuned − default", "tuned − official"], rows)


def ease_ceiling(res: Records) -> str:
    """Dense EASE at its best λ (test split) against the tuned, default and official models: issue 25's
    acceptance (tuned >= 98% of EASE and >= the official's best; default >= 95%)."""
    ease = [r for r in _all(res["ease_ceiling"], what="ease_ceiling") if "recall@20" in r]
    tunes = _all(res["tune"], what="tune_vs_default_vs_official")
    rows = []
    for data in dict.fromkeys(r["data"] for r in ease):
        per_l2 = {r["l2"]: r for r in ease if r["data"] == data}  # the last record of each λ
        best = max(per_l2.values(), key=lambda r: r["recall@20"])
        t = _last(tunes, data=data, case="tune")
        d = _default_record(res, data, tunes)
        found = [r for r in tunes if r["data"] == data and r.get("case") == "official"]
        o = found[-1] if found else None
        e = best["recall@20"]

        def share(x, bar):
            return f"{x:.4f} ({100 * x / e:.1f}%{'' if x >= bar * e else ', below ' + f'{100 * bar:g}%'})"

        rows.append([data, f"{best['n_items']:,}", f"{e:.4f} (λ = {best['l2']:g}, best of {len(per_l2)})",
                     share(t["recall@20"], 0.98), share(d["recall@20"], 0.95),
                     (f"{o['recall@20']:.4f}" + ("" if t["recall@20"] >= o["recall@20"] else " (above tuned)"))
                     if o else "not measured"])
    return _table(["data", "items", "dense EASE: test R@20 (best λ)", "tuned (≥ 98%)", "default (≥ 95%)",
                   "official best at the chosen δ"], rows)


def _icf_vs_exact_rows(res: Records, mode: str) -> list:
    """The last icf_vs_exact record per (data, nonzeros per item, λ) of ``mode``, in order of first appearance."""
    recs = _all(res["icf_vs_exact"], what="icf_vs_exact", mode=mode)
    keys = list(dict.fromkeys((r["data"], r["per_item"], r["l2"]) for r in recs))
    return [_last(recs, data=d, per_item=p, l2=l) for d, p, l in keys]


def _icf_cell(r: dict, name: str) -> str:
    """Test R@20 of one ICF variant of an icf_vs_exact record, with its restarts and shift when it restarted."""
    if name not in r:
        return "—"
    restarts = r.get(f"{name}_restarts", 0)
    return f"{r[name]:.4f}" + (f" ({restarts} restarts, shift {r[f'{name}_shift']:.3g}×)" if restarts else "")


def icf_vs_exact(res: Records) -> str:
    """ICF against CHOLMOD's exact factor of the same column-scaled Gram, cut to the same budget: test R@20 at
    equal density and λ (issue 25: within 2%)."""
    recs = _icf_vs_exact_rows(res, "scaled")
    # the other ICF variants recorded with a paired standard error: a larger working budget, an intermediate fill
    extra = [k[:-len("_paired_se")] for k in dict.fromkeys(k for r in recs for k in r if k.endswith("_paired_se"))
             if k != "icf_fill1_paired_se"]
    def in_se(r: dict, v: str) -> str:  # variant v's difference from CHOLMOD in paired standard errors
        se = r[f"{v}_paired_se"]
        return f"{(r[v] - r['cholmod']) / se:+.1f} SE" if se else "no spread"

    rows = []
    for r in recs:
        ratio = r["icf_fill1"] / r["cholmod"]
        paired = "icf_fill1_paired_se" in r
        rows.append([r["data"], f"{r['per_item']:g}", f"{r['l2']:g}", f"{r['cholmod']:.4f}", _icf_cell(r, "icf_fill1"),
                     f"{100 * ratio:.1f}%" + ("" if ratio >= 0.98 else ", more than 2% below"),
                     f"{r['icf_fill1'] - r['cholmod']:+.4f} ± {r['icf_fill1_paired_se']:.4f} ({in_se(r, 'icf_fill1')})"
                     if paired else "—"]
                    + [f"{r[v]:.4f} ({100 * r[v] / r['cholmod']:.1f}%, {in_se(r, v)})" if f"{v}_paired_se" in r else "—"
                       for v in extra])
    names = {"icf_fill": "ICF, icf_fill ", "icf_intermediate": "ICF, intermediate fill "}
    params = {v: r[f"{v}_params"] for r in recs for v in extra if f"{v}_params" in r}  # --variant name=JSON
    heads = ["ICF, " + ", ".join(f"{k} {x:g}" if isinstance(x, (int, float)) else f"{k} {x}"
                                 for k, x in params[v].items()) if v in params
             else next(names[p] + v[len(p):] for p in names if v.startswith(p)) for v in extra]
    return _table(["data", "per item", "λ", "CHOLMOD (exact, cut)", "ICF", "ICF ÷ CHOLMOD",
                   "ICF − CHOLMOD ± paired SE"] + heads, rows)


def icf_vs_exact_unscaled(res: Records) -> str:
    """The same on EASE's own, unscaled Gram, with the intermediate fill of the incomplete Cholesky."""
    recs = _icf_vs_exact_rows(res, "unscaled")
    fills = sorted({float(k[len("icf_intermediate"):]) for r in recs for k in r
                    if k.startswith("icf_intermediate") and k[len("icf_intermediate"):].replace(".", "").isdigit()})
    named = {k[:-len("_params")]: r[k] for r in recs for k in r if k.endswith("_params")}  # --variant name=JSON
    rows = [[r["data"], f"{r['per_item']:g}", f"{r['l2']:g}", f"{r['cholmod']:.4f}", _icf_cell(r, "icf_fill1")]
            + [_icf_cell(r, f"icf_intermediate{f:g}") for f in fills] + [_icf_cell(r, v) for v in named] for r in recs]
    return _table(["data", "per item", "λ", "CHOLMOD (exact, cut)", "ICF"]
                  + [f"ICF, intermediate fill {f:g}" for f in fills]
                  + ["ICF, " + ", ".join(f"{k} {x:g}" if isinstance(x, (int, float)) else f"{k} {x}"
                                         for k, x in p.items()) for p in named.values()], rows)


def _default_rule_pairs(res: Records) -> list:
    """(data, old, new) per dataset: the last run of default_rule.py that measured both the old default and
    ``SANSA()`` of its checkout, in order of first appearance."""
    recs = _all(res["default_rule"], what="default_rule")
    out = []
    for data in dict.fromkeys(r["data"] for r in recs):
        pairs = [(old, new) for new in _all(recs, data=data, case="default")
                 for old in _all(recs, data=data, case="old", commit=new["commit"])]
        if pairs:
            out.append((data, *pairs[-1]))
    return out


def _default_record(res: Records, data: str, tunes: list) -> dict:
    """``SANSA()`` on ``data`` as default_rule.py last measured it, else as tune_bench.py did."""
    newer = [new for d, _, new in _default_rule_pairs(res) if d == data]
    return newer[-1] if newer else _last(tunes, data=data, case="default")


def default_rule(res: Records) -> str:
    """The old default (λ 20, 16 per item, 2 sweeps, no pruning) against ``SANSA()`` now: what each resolves to,
    test Recall@20 and fit seconds, measured side by side in one run of default_rule.py."""
    ease = [r for r in _all(res["ease_ceiling"], what="ease_ceiling") if "recall@20" in r]
    rows = []
    for data, old, new in _default_rule_pairs(res):
        e = [r["recall@20"] for r in ease if r["data"] == data]
        p = new["params"]
        setting = (f"{'ICF' if new['factorizer_'] == 'icf' else 'CHOLMOD'}, {new['nnz_per_item']:g} per item, "
                   f"λ = {new['l2_']:.3g}, min_cooccurrence {new['min_cooccurrence_']:g}, "
                   f"{new['refine_sweeps_']} sweeps") if p["l2"] is None else "—"
        rows.append([data, f"{old['recall@20']:.4f} ({old['fit_seconds']:.2f} s)", setting,
                     f"{new['recall@20']:.4f} ({new['fit_seconds']:.2f} s)", _delta(new["recall@20"], old["recall@20"]),
                     f"{new['fit_seconds'] / old['fit_seconds']:.2f}×",
                     (f"{100 * new['recall@20'] / max(e):.1f}%" + ("" if new["recall@20"] >= 0.95 * max(e)
                                                                     else ", below 95%")) if e else "—"])
    return _table(["data", "old default: test R@20 (fit)", "SANSA() now resolves to", "SANSA() now: test R@20 (fit)",
                   "now − old", "fit time ÷ old", "of dense EASE"], rows)


def default_candidates(res: Records) -> str:
    """Every candidate default measured by default_rule.py: test Recall@20 per dataset (last record of each),
    its change against the old default and its fit time as a multiple of the old default's measured in the same
    run (same commit; the median fit of each)."""
    recs = _all(res["default_rule"], what="default_rule")
    cases = [c for c in dict.fromkeys(r["case"] for r in recs) if c not in ("old", "default")]
    rows = []
    for data in dict.fromkeys(r["data"] for r in recs):
        old = _last(recs, data=data, case="old")
        row = [data, f"{old['recall@20']:.4f}"]
        for c in cases:
            hit = _all(recs, data=data, case=c)
            if not hit:
                row.append("—")
                continue
            r = hit[-1]
            side = _all(recs, data=data, case="old", commit=r["commit"])
            ratio = f", {r['fit_seconds'] / side[-1]['fit_seconds']:.1f}× fit" if side and side[-1]["fit_seconds"] else ""
            row.append(f"{r['recall@20']:.4f} ({_delta(r['recall@20'], old['recall@20'])}{ratio})")
        rows.append(row)
    specs = {c: list(dict.fromkeys(json.dumps(r["spec"]) for r in recs if r["case"] == c)) for c in cases}
    return _table(["data", "old default"] + [f"{c}: {specs[c][0]}" if len(specs[c]) == 1
                                             else f"{c}: its own settings per dataset (records)" for c in cases], rows)


def sweeps(res: Records) -> str:
    """Test Recall@20 per refinement sweeps, per (dataset, factoriser, λ, nonzeros per item)."""
    recs = _all(res["sweeps"], what="sweeps_density")
    keys = list(dict.fromkeys((r["data"], r["factorizer"], r["l2"], r["nnz_per_item"]) for r in recs))
    counts = sorted({r["refine_sweeps"] for r in recs})
    rows = []
    for data, fac, l2, per in keys:
        row = [data, "ICF" if fac == "icf" else "CHOLMOD", f"{l2:g}", f"{per:g}"]
        for c in counts:
            hit = [r for r in recs if (r["data"], r["factorizer"], r["l2"], r["nnz_per_item"], r["refine_sweeps"])
                   == (data, fac, l2, per, c)]
            row.append(f"{hit[-1]['recall@20']:.4f}" if hit else "—")
        rows.append(row)
    return _table(["data", "factoriser", "λ", "nonzeros per item"] + [f"{c} sweeps" for c in counts], rows)


def near_tie(res: Records) -> str:
    """The one-standard-error rule against tune's plain maximum: what it picks and its test Recall@20."""
    recs = _all(res["near_tie"], what="near_tie_rule")
    rows = []
    for data in dict.fromkeys(r["data"] for r in recs):
        r = _last(recs, data=data)
        p = r["rule"]
        pick = (f"{'ICF' if p['factorizer'] == 'icf' else 'CHOLMOD'}, δ = {p['density']:.2g}, λ = {p['l2']:.3g}"
                + (f", min_cooccurrence {p['min_cooccurrence']:g}" if p["min_cooccurrence"] else "")
                + f", {p['refine_sweeps']} sweeps")
        rows.append([data, f"{r['validation_se']:.4f}", f"{r['within_one_se']} of {r['trials']}", pick,
                     f"{r['rule_model_bytes'] / r['tuned_model_bytes']:.2f}×", f"{r['tuned_test_recall@20']:.4f}",
                     f"{r['rule_test_recall@20']:.4f}", _delta(r["rule_test_recall@20"], r["tuned_test_recall@20"])])
    return _table(["data", "validation SE", "trials within 1 SE", "the rule's pick (smallest within 1 SE)",
                   "its weights ÷ tuned", "tuned: test R@20", "rule: test R@20", "rule − tuned"], rows)


def tune_factorizers(res: Records) -> str:
    """From the tune trials (validation split): per dataset and density, the best ICF (any pruning) and the
    best CHOLMOD trial, each at its own best λ."""
    recs = _all(res["tune"], what="tune_vs_default_vs_official", case="tune")
    rows = []
    for data in dict.fromkeys(r["data"] for r in recs):
        t = _last(recs, data=data, case="tune")
        ok = [tr for tr in t["trials"] if tr["status"] == "ok"]
        metric = t["validation_metric"]
        for dens in sorted({tr["density"] for tr in ok}):
            row = [data, f"{dens:.2g}"]
            best = {}
            for fac in ("icf", "cholmod"):
                at = [tr for tr in ok if tr["density"] == dens and tr["factorizer"] == fac]
                if not at:
                    row.append("—" if fac == "icf" else "not run (time budget)" if any(
                        tr["factorizer"] == "cholmod" for tr in t["trials"]) else "not in the search")
                    continue
                b = max(at, key=lambda tr: tr[metric])
                best[fac] = b[metric]
                mc = f", mc {b['min_cooccurrence']:g}" if b["min_cooccurrence"] else ""
                n_l2 = len({tr["l2"] for tr in at})
                row.append(f"{b[metric]:.4f} (λ {b['l2']:.3g}{mc}, best of {n_l2} λ; {b['fit_seconds']:.1f} s)")
            row.append(_delta(best["cholmod"], best["icf"]) if len(best) == 2 else "—")
            rows.append(row)
    return _table(["data", "density", "best ICF: validation R@20 (λ; fit s)", "best CHOLMOD: validation R@20 (λ; fit s)",
                   "CHOLMOD − ICF (same λ budget only where both tried the grid)"], rows)


# ------------------------------------------------------------------------------------ scale.py
def _scale_ours(res: Records, data: str, **key) -> dict:
    key.setdefault("min_cooccurrence", _no_pruning)
    key.setdefault("refine_tol", 0.01)
    key.setdefault("density", 0.0005)
    return _last(res["scale"], implementation="ours", data=data, **key)


_ORDERINGS = ("popularity", "colamd", "amd")


def scale_icf(res: Records) -> str:
    rows = []
    for data in ("gowalla", "epinions"):
        off = _last(res["scale"], implementation="official", data=data, density=0.0005)
        label = f"{data} ({off['n_items']:,} items)"
        if "recommend_error" in off:
            recall = [f"— (its `recommend` raises \"{off['recommend_error']}\")", "—"]
        else:
            recall = [f"{off['recall@20']:.4f}", f"{off['recall_bars@20']:.4f}"]
        rows.append([label, "official ICF", f"{off['fit_seconds']:.1f}", f"{off['peak_rss_gb']:.2f}", *recall])
        for o in _ORDERINGS:
            r = _scale_ours(res, data, ordering=o)
            name = f"ours, {o}" + (" (default)" if o == "popularity" else "")
            rows.append([data, name, f"{r['fit_seconds']:.1f}", f"{r['peak_rss_gb']:.2f}", f"{r['recall@20']:.4f}",
                         f"{r['recall_bars@20']:.4f}"])
    return _table(["data", "impl", "fit s", "peak RSS GB", "R@20", "R@20 BARS"], rows)


def scale_icf_targets(res: Records) -> str:
    rows = []
    for data in ("gowalla", "epinions"):
        off = _last(res["scale"], implementation="official", data=data, density=0.0005)
        for o in _ORDERINGS:
            r = _scale_ours(res, data, ordering=o)
            d = (_delta(r["recall_bars@20"], off["recall_bars@20"]) if "recall_bars@20" in off
                 else "— (no official recall)")
            rows.append([data, o, f"{off['fit_seconds'] / r['fit_seconds']:.1f}×", d])
    return _table(["data", "our ordering", "fit speed-up over the official ICF (≥ 2×)", "Δ R@20 BARS (≥ −0.002)"], rows)


def _synthetic_runs(res: Records) -> list:
    """The synthetic runs at an explicit density; the end-to-end ones at the default are :func:`scaling`'s."""
    recs = [r for r in _all(res["scale"], implementation="ours", data=lambda d: str(d).startswith("synthetic_"))
            if r.get("density") is not None]
    names = sorted(set(r["data"] for r in recs), key=lambda d: int(d.split("_")[1]))
    return [_last(recs, data=d) for d in names]


def synthetic(res: Records) -> str:
    rows = []
    for r in _synthetic_runs(res):
        s = r["stage_seconds"]
        total = r["data_seconds"] + r["estimate_seconds"] + r["fit_seconds"]
        rows.append([f"{_count(r['n_items'])} × {_count(r['n_users'])}", _millions(r["nnz_X"]),
                     _millions(r["nnz_gram_lower"]), _sci(r["refine_tol"]),
                     f"{r['fit_seconds']:.1f} ({s['factorize_seconds']:.1f} / {s['refine_seconds']:.1f} / "
                     f"{s['weights_seconds']:.1f})",
                     f"{total:.0f} ({total / 60:.1f} min)", f"{r['peak_rss_gb']:.2f}", f"{r['estimated_peak_gb']:.2f}"])
    return _table(["items × users", "interactions", "nnz(Gram, lower)", "refine_tol",
                   "fit s (factorise / refine / weights)", "data + estimate + fit s", "peak RSS GB", "estimate GB"], rows)


def _slope(xs, ys) -> float:
    """Least-squares slope of log ys against log xs."""
    import math

    lx, ly = [math.log(x) for x in xs], [math.log(max(y, 1e-3)) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


_SCALING_STAGES = [  # (column, seconds of a record): the end-to-end pipeline in order
    ("data", lambda r: r["data_seconds"]),
    ("estimate", lambda r: r["estimate_seconds"]),
    ("column scaling", lambda r: r["factorize_parts"]["column_scaling"]),
    ("ordering + Gram", lambda r: r["factorize_parts"]["ordering"] + r["factorize_parts"]["gram"]),
    ("ICF", lambda r: r["factorize_parts"]["icf"] + r["factorize_parts"]["cut"]),
    ("refine", lambda r: r["stage_seconds"]["refine_seconds"]),
    ("weights", lambda r: r["stage_seconds"]["weights_seconds"]),
    ("save", lambda r: r["save_seconds"]),
]


def _scaling_runs(res: Records, one_pass: bool = False) -> list:
    """The end-to-end synthetic runs, last per size: of the two-pass Gram (issue 14's runs, no
    ``commit`` field) or, with ``one_pass``, of the one-pass Gram (runs that name their commit)."""
    recs = [r for r in _all(res["scale"], implementation="ours", data=lambda d: str(d).startswith("synthetic_"))
            if "save_seconds" in r and r.get("density") is None and "error" not in r and ("commit" in r) == one_pass]
    last = {r["n_items"]: r for r in recs}
    return [last[n] for n in sorted(last)]


def scaling(res: Records) -> str:
    """End-to-end synthetic fits (scale.py --density default --save-dir): seconds per stage, total,
    peak RSS and the estimate; last row: each column's growth exponent against nnz(X)."""
    runs = _scaling_runs(res)
    rows = []
    for r in runs:
        rows.append([f"{_count(r['n_items'])} × {_count(r['n_users'])}", _millions(r["nnz_X"]),
                     f"{r['density_'] * r['n_items']:.0f}, {r['density_']:.2g}", f"{r['min_cooccurrence']:g}",
                     _millions(r["nnz_gram_lower"])]
                    + [f"{get(r):.1f}" for _, get in _SCALING_STAGES]
                    + [f"{r['total_seconds']:.0f} ({r['total_seconds'] / 60:.1f} min)", f"{r['peak_rss_gb']:.2f}",
                       f"{r['estimated_peak_gb']:.2f}"])
    if len(runs) >= 2:
        xs = [r["nnz_X"] for r in runs]
        rows.append(["growth exponent vs nnz(X)", "1", "", "", f"{_slope(xs, [r['nnz_gram_lower'] for r in runs]):.2f}"]
                    + [f"{_slope(xs, [get(r) for r in runs]):.2f}" for _, get in _SCALING_STAGES]
                    + [f"{_slope(xs, [r['total_seconds'] for r in runs]):.2f}",
                       f"{_slope(xs, [r['peak_rss_gb'] for r in runs]):.2f}",
                       f"{_slope(xs, [r['estimated_peak_gb'] for r in runs]):.2f}"])
    return _table(["items × users", "interactions", "nonzeros per item, δ", "min_cooccurrence", "nnz(Gram, lower)"]
                  + [f"{c} s" for c, _ in _SCALING_STAGES] + ["total s", "peak RSS GB", "estimate GB"], rows)


_ON_DEVICE = [  # the fit's stages that a GPU fit runs on the device, and those that stay on the CPU
    ("column scaling + Gram", lambda r: r["factorize_parts"]["column_scaling"] + r["factorize_parts"]["gram"]),
    ("refine", lambda r: r["stage_seconds"]["refine_seconds"]),
    ("weights", lambda r: r["stage_seconds"]["weights_seconds"]),
]
_ON_CPU = [("ordering", lambda r: r["factorize_parts"]["ordering"]),
           ("ICF + cut", lambda r: r["factorize_parts"]["icf"] + r["factorize_parts"]["cut"])]


def device_share(res: Records) -> str:
    """CPU fits at 1M and 10M items, two-pass Gram (before) and one-pass (after): the seconds of the
    stages a GPU fit runs on the device, of those that stay on the CPU, and the device's share (an
    Amdahl ceiling of 1 / (1 - share) for a whole GPU fit)."""
    rows = []
    for label, one_pass in (("two-pass Gram (issue 14)", False), ("one-pass Gram", True)):
        for r in _scaling_runs(res, one_pass):
            if r["n_items"] < 1_000_000:
                continue
            dev = [get(r) for _, get in _ON_DEVICE]
            cpu = [get(r) for _, get in _ON_CPU]
            fit = r["stage_seconds"]["fit_seconds"]
            share = sum(dev) / fit
            rows.append([f"{_count(r['n_items'])}", label + (f" ({r['commit']})" if one_pass else ""), f"{fit:.1f}"]
                        + [f"{v:.1f}" for v in dev] + [f"{v:.1f}" for v in cpu]
                        + [f"{share:.1%}", f"{1 / (1 - share):.1f}×", f"{r['peak_rss_gb']:.2f}"])
    return _table(["items", "code", "fit s"] + [f"{c} s (device)" for c, _ in _ON_DEVICE]
                  + [f"{c} s (CPU)" for c, _ in _ON_CPU] + ["device share", "Amdahl ceiling", "peak RSS GB"], rows)


def memory_estimate(res: Records) -> str:
    runs = ([_scale_ours(res, d, ordering="popularity") for d in ("gowalla", "epinions")] + _synthetic_runs(res)
            + _scaling_runs(res))
    rows = [[r["data"] + (" (end to end, 16 per item)" if "total_seconds" in r else ""), _sci(r["refine_tol"]),
             f"{r['estimated_peak_gb']:.2f}", f"{r['peak_rss_gb']:.2f}", f"{r['estimated_peak_gb'] / r['peak_rss_gb']:.2f}"]
            for r in runs]
    return _table(["data", "refine_tol", "estimate GB", "peak RSS GB (whole process)", "estimate / peak"], rows)


def pruning(res: Records) -> str:
    rows = []
    for data, thresholds in (("gowalla", (0.0, 2.0, 3.0)), ("epinions", (0.0, 2.0))):
        for mc in thresholds:
            r = _scale_ours(res, data, ordering="popularity", min_cooccurrence=_no_pruning if mc == 0 else mc)
            rows.append([data, f"{mc:g}", _millions(r["nnz_gram_lower"]), f"{r['fit_seconds']:.1f}",
                         f"{r['peak_rss_gb']:.2f}", f"{r['recall_bars@20']:.4f}"])
    return _table(["data", "min_cooccurrence", "nnz(Gram, lower)", "fit s", "peak RSS GB", "R@20 BARS"], rows)


TABLES = {f.__name__: f for f in (compare_official, compare_official_targets, compare_official_stages, refine_tol,
                                  score, score_plans, score_synthetic, scale_icf, scale_icf_targets, synthetic, memory_estimate,
                                  pruning, distributed, factorizers, auto_rule, ease_ceiling, default_rule, default_candidates, icf_vs_exact, icf_vs_exact_unscaled, sweeps, near_tie, tune, tune_factorizers, scaling, device_share)}


# ------------------------------------------------------------------------------------ page markers
def render(res: Records | None = None) -> dict:
    res = load() if res is None else res
    return {name: f(res) for name, f in TABLES.items()}


def marked(text: str) -> list:
    """(name, body) of every marked table in a page, in order."""
    return [(m["name"], m["body"]) for m in MARKER.finditer(text)]


def problems(text: str, tables: dict) -> list:
    """What differs between a page and the generated tables (empty: they agree)."""
    out = []
    found = marked(text)
    names = [n for n, _ in found]
    for n in sorted(set(names)):
        if names.count(n) > 1:
            out.append(f"table:{n} is marked {names.count(n)} times")
    for n in tables:
        if n not in names:
            out.append(f"table:{n} is not marked on the page")
    for n, body in found:
        if n not in tables:
            out.append(f"table:{n} has no generator")
        elif body != tables[n]:
            diff = difflib.unified_diff(body.splitlines(), tables[n].splitlines(), "page", "records", lineterm="")
            out.append(f"table:{n} differs from the records:\n" + "\n".join(diff))
    return out


def rewrite(text: str, tables: dict) -> str:
    return MARKER.sub(lambda m: f"<!-- table:{m['name']} -->\n{tables[m['name']]}<!-- /table -->", text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="tables to print (default all), or one compare_official.py .jsonl file")
    ap.add_argument("--results", default=str(RESULTS), help="folder of the *.jsonl records")
    ap.add_argument("--check", metavar="PAGE", help="exit 1 if a marked table differs from the records")
    ap.add_argument("--write", metavar="PAGE", help="rewrite the marked tables from the records")
    ap.add_argument("--list", action="store_true", help="the table names")
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join(TABLES))
        return 0
    if len(args.names) == 1 and args.names[0].endswith(".jsonl"):
        print(compare_official_lines(load_file(args.names[0])), end="")
        return 0
    tables = render(load(args.results))
    if args.check or args.write:
        path = Path(args.check or args.write)
        text = path.read_text()
        if args.write:
            text = rewrite(text, tables)
            path.write_text(text)
        errors = problems(text, tables)
        for e in errors:
            print(e, file=sys.stderr)
        return 1 if errors else 0
    unknown = [n for n in args.names if n not in TABLES]
    if unknown:
        ap.error(f"unknown table(s) {unknown}; known: {', '.join(TABLES)}")
    for name in args.names or TABLES:
        if not args.names or len(args.names) > 1:
            print(f"<!-- table:{name} -->")
        print(tables[name], end="")
        if not args.names or len(args.names) > 1:
            print("<!-- /table -->\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
