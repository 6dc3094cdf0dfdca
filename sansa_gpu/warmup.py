"""Compile what a fit and the scoring calls need, before they are timed or served.

The CPU kernels are numba functions compiled on their first call (and then cached on disk by numba,
next to the package or under ``NUMBA_CACHE_DIR``), so the first fit after an install pays tens of
seconds of compilation that later runs do not (measured: ``benchmarks/first_run.py``). A server or a
benchmark calls :func:`warm_up` once at start-up; the quickstart reports its seconds apart from the
fit's.
"""

from __future__ import annotations

import time

import numpy as np


def warm_up(model=None, *, n_users: int = 300, n_items: int = 60) -> float:
    """Fit a copy of ``model`` (default: ``SANSA()``; an ``EASE`` works too) on a tiny generated matrix,
    score with every CPU plan and ask for similar items, so that the kernels a real fit and real
    scoring calls use are compiled (numba compiles per argument types, which the tiny inputs share).
    Returns the seconds it took: the compilation, on a first run; well under a second once numba's
    cache holds the kernels. ``model`` itself is not modified."""
    from .ease import EASE
    from .model import SANSA
    from .synthetic import synthetic_interactions

    t0 = time.perf_counter()
    X = synthetic_interactions(n_users=n_users, n_items=n_items, mean_items_per_user=8, n_communities=3, seed=0)
    template = SANSA() if model is None else model
    params = template.get_params()
    copy = type(template)(**params)
    if isinstance(copy, EASE):
        copy.fit(X)
        copy.recommend(X[:20], 5)
        copy.similar_items(np.arange(3), 5)
        return time.perf_counter() - t0
    copy.fit(X, check_memory=False)
    if params.get("factorizer") != "cholmod" and params.get("icf_intermediate_fill") is None:
        # from 64 per item the ICF resolves to an intermediate fill, whose kernel the tiny fit above does not reach
        wide = dict(params, factorizer="icf", icf_fill=2.0, icf_intermediate_fill=1.0, refine_sweeps=1)
        type(template)(**wide).fit(X, check_memory=False)
    for plan in ("factored", "product", "sparse_product"):
        copy.recommend(X[:20], 5, plan=plan if copy.device_ == "cpu" or plan == "factored" else "factored")
    copy.recommend(X[:20], 5)  # 'auto' (its cost model), and the GPU's kernel on a GPU model
    copy.similar_items(np.arange(3), 5)
    return time.perf_counter() - t0
