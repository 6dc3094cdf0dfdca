"""Which CPU scoring plan serves a call (:func:`choose_plan`): a cost model of the three plans, in
nanoseconds per operation on one core, applied to the work of a sample of the users."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..scoring_cache import ScoringCache, scoring_cache_info
from .plan_factored import factored_work
from .plan_product import product_bytes, product_row_nnz, sparse_product_bytes

#: Cost model of :func:`choose_plan`, nanoseconds per operation on one core, measured on the 2-core
#: VM (benchmarks/score_bench.py --plans): a scattered update of the factored plan (load Z entry,
#: flag the item, add), an element of the product plan's vectorised row sum (column-tiled: 0.29 ns
#: on ml-1m at 1e-2, 0.75 before the tiles), a catalogue entry of its candidate scan, an update
#: while forming B, and an entry of B written. The sparse product plan's, in the same units (the
#: factored plan's update as NS_SCATTER; its real cost was 12 ns on gowalla at 5e-4, 6 at 2e-3):
#: a scattered update (0.48 / 0.56 x the factored plan's there: contiguous rows, no gather), an
#: update while forming its B (counting and filling pass together: 2 x 1.2 x the factored
#: update) and an entry of it written (15 ns measured, i.e. about 8 in these units).
NS_SCATTER = 5.0

NS_ROW_SUM = 0.35

NS_SCAN = 1.0

NS_BUILD = 3.0

NS_WRITE_B = 0.75

NS_SPARSE_SCATTER = 2.6

NS_SPARSE_BUILD = 12.0

NS_SPARSE_WRITE = 8.0
#: A product plan is taken when its predicted time (forming B included unless cached) is below this
#: fraction of the factored plan's: the dense B's vectorised row sums are a different kind of work
#: from the scatter the cost model is calibrated on (wider margin), the sparse B's are the same kind.
PRODUCT_MARGIN = 0.7

SPARSE_PRODUCT_MARGIN = 0.9

PLAN_SAMPLE_USERS = 2048


def product_cache_bytes_cap() -> int:
    """Largest B :func:`choose_plan` allows: the scoring-cache budget of the process
    (:func:`sansa_gpu.set_scoring_cache_budget`; by default 25% of the available memory, at most 4 GB)."""
    return scoring_cache_info()["budget_bytes"]


def _build_updates(Wt: sp.csr_matrix, Z: sp.csr_matrix) -> float:
    """Σ over the entries of Wt of |Z row|: the updates of forming B = Wt Z (either layout)."""
    return float(np.diff(Z.indptr)[Wt.indices].sum())


def plan_costs(X: sp.csr_matrix, Wt: sp.csr_matrix, Z: sp.csr_matrix, B_row_nnz: np.ndarray | None = None) -> dict:
    """Predicted seconds (one core) of scoring the rows of X by each plan, from the work of a
    sample of :data:`PLAN_SAMPLE_USERS` rows: {'factored', 'product' (row sums + scans, B given),
    'build' (forming the dense B once), 'sparse_build_min' (forming the sparse B once, without
    writing its entries)}, and with ``B_row_nnz`` (entries per row of B, :func:`product_row_nnz`)
    also 'sparse_product' (B given) and 'sparse_build'."""
    n_items = X.shape[1]
    sample, per = _plan_sample(X.shape[0])
    scatter, n_x, gather = factored_work(X.indptr, X.indices, Wt.indptr, Wt.indices, Z.indptr, Wt.shape[1], sample)
    updates = _build_updates(Wt, Z)
    ns = {"factored": (NS_SCATTER * scatter + NS_SCATTER * gather) * per,
          "product": (NS_ROW_SUM * n_x * n_items + NS_SCAN * sample.size * n_items) * per,
          "build": NS_BUILD * updates + NS_WRITE_B * n_items * n_items,
          "sparse_build_min": NS_SPARSE_BUILD * updates}
    cost = {key: value * 1e-9 for key, value in ns.items()}
    if B_row_nnz is not None:
        cost.update(_sparse_product_costs(X, B_row_nnz, cost["sparse_build_min"]))
    return cost


def _plan_sample(n_users: int) -> tuple[np.ndarray, float]:
    """The rows :func:`plan_costs` measures (:data:`PLAN_SAMPLE_USERS` spread over all) and the
    factor from their work to all rows'."""
    sample = np.unique(np.linspace(0, n_users - 1, min(n_users, PLAN_SAMPLE_USERS)).astype(np.int64))
    return sample, n_users / max(1, sample.size)


def _sparse_product_costs(X: sp.csr_matrix, B_row_nnz: np.ndarray, sparse_build_min: float) -> dict:
    """{'sparse_product', 'sparse_build'} seconds of :func:`plan_costs`, given the rows' entries of B
    and the (already predicted) 'sparse_build_min'."""
    sample, per = _plan_sample(X.shape[0])
    updates = float(np.asarray(B_row_nnz, dtype=np.float64)[X[sample].indices].sum())
    return {"sparse_product": NS_SPARSE_SCATTER * updates * per * 1e-9,
            "sparse_build": sparse_build_min + NS_SPARSE_WRITE * float(np.sum(B_row_nnz)) * 1e-9}


def choose_plan(X: sp.csr_matrix, Wt: sp.csr_matrix, Z: sp.csr_matrix, cached: str | None = None,
                cache: ScoringCache | None = None) -> tuple[str, str]:
    """('factored' | 'product' | 'sparse_product', why) for scoring the rows of X.

    A product plan is taken when its B fits :func:`product_cache_bytes_cap` and its predicted
    time, plus forming B unless ``cached`` names it (the plan whose B is already formed), is below
    :data:`PRODUCT_MARGIN` (dense B) / :data:`SPARSE_PRODUCT_MARGIN` (sparse B) x the factored
    plan's (:func:`plan_costs`); of two such, the faster. The sparse B's size needs its structure
    counted (:func:`product_row_nnz`, once per model): that is done only when forming it could
    pay, i.e. when even the lower bound 'sparse_build_min' is below that fraction of the factored
    plan's time (so a small batch never pays for the count); ``cache`` keeps that count."""
    n_items = Z.shape[1]
    if X.shape[0] == 0:
        return "factored", "no users"
    cap = product_cache_bytes_cap()
    cost = plan_costs(X, Wt, Z)
    margin = {"product": PRODUCT_MARGIN, "sparse_product": SPARSE_PRODUCT_MARGIN}
    options, notes = {}, []
    need = product_bytes(n_items)
    if cached != "product" and need > cap:  # (a cached B is already out of the available memory)
        notes.append(f"B = Wt Z would take {need / 1e9:.2f} GB > {cap / 1e9:.2f} GB")
    else:
        options["product"] = cost["product"] + (0.0 if cached == "product" else cost["build"])
    if cached == "sparse_product" or cost["sparse_build_min"] < SPARSE_PRODUCT_MARGIN * cost["factored"]:
        row_nnz = product_row_nnz(Wt, Z, cache)
        cost.update(_sparse_product_costs(X, row_nnz, cost["sparse_build_min"]))  # the sample's work is known
        need = sparse_product_bytes(row_nnz.sum(), n_items)
        if cached != "sparse_product" and need > cap:
            notes.append(f"sparse B would take {need / 1e9:.2f} GB > {cap / 1e9:.2f} GB")
        else:
            options["sparse_product"] = cost["sparse_product"] + (0.0 if cached == "sparse_product" else cost["sparse_build"])
    else:
        notes.append(f"forming a sparse B would take at least {cost['sparse_build_min']:.3g} s")
    why = ", ".join([f"predicted {cost['factored']:.3g} s factored"]
                    + [f"{options[p]:.3g} s {p}{'' if cached == p else ' incl. forming B'}" for p in options] + notes)
    wins = {p: t for p, t in options.items() if t < margin[p] * cost["factored"]}
    return min(wins, key=wins.get, default="factored"), why
