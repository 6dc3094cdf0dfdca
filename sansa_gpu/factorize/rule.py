"""The rule of ``SANSA(factorizer="auto")``: which factoriser a fit uses, and why (:func:`choose_factorizer`)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from . import exact  # its limits read at call time, so that they can be set (and patched) in one place
from ..defaults import DENSE_DATA_ITEMS_PER_USER
from .exact import cholmod_available, predict_exact_seconds

#: ``choose_factorizer`` thresholds (see its docstring for the evidence). A default fit should take
#: seconds, not minutes: the exact factor enters ``auto`` when predicted at most this long.
AUTO_CHOLMOD_MAX_SECONDS = 30.0

AUTO_CHOLMOD_MIN_NNZ_PER_ITEM = 16.0

AUTO_CHOLMOD_MIN_ITEMS_PER_USER = DENSE_DATA_ITEMS_PER_USER  # the one threshold of "dense data" (sansa_gpu.defaults)


def interactions_per_user(X: sp.csr_matrix) -> float:
    """Mean interactions per user of X (users, items) CSR, over the users with at least one: what makes
    training data dense (:data:`~sansa_gpu.defaults.DENSE_DATA_ITEMS_PER_USER`)."""
    return X.nnz / max(1, int(np.count_nonzero(np.diff(X.indptr))))


def exact_factor_cost(X: sp.csr_matrix, density: float, memory_cap: float, ordering: str = "colamd",
                      cap_text: str | None = None) -> dict:
    """What the exact CHOLMOD factor of X would cost, from its structure: {'analysed': True, 'nnz_gram', 'fill',
    'flops', 'seconds' (of the analysis), 'predicted_seconds' (:func:`predict_exact_seconds`), 'peak' (a fit's
    predicted peak bytes at ``density``)}; or {'analysed': False, 'why'} when it is not analysed: catalogues above
    :data:`~sansa_gpu.factorize.exact.EXACT_PROFILE_MAX_ITEMS` (the ordering alone takes minutes there), or a
    Gram (which the analysis builds whole: int32 index + float64 value per entry) that may not fit
    ``memory_cap`` (described in 'why' by ``cap_text``, default "<cap> GB available"). The one analysis the
    ``auto`` rule and ``tune`` both price the exact factor by."""
    from ..memory import estimate_memory, exact_factor_profile, gram_nnz_upper_bound

    n = X.shape[1]
    if n > exact.EXACT_PROFILE_MAX_ITEMS:
        return {"analysed": False,
                "why": f"{n} items > {exact.EXACT_PROFILE_MAX_ITEMS}: the exact factor is not analysed"}
    gram_bytes = 12 * gram_nnz_upper_bound(X)
    if gram_bytes > memory_cap:
        cap_text = f"{memory_cap / 1e9:.2f} GB available" if cap_text is None else cap_text
        return {"analysed": False,
                "why": f"the exact factor is not analysed: the Gram may hold {gram_bytes / 1e9:.2f} GB > {cap_text}"}
    prof = exact_factor_profile(X, ordering)
    return {"analysed": True, **prof, "predicted_seconds": predict_exact_seconds(prof),
            "peak": estimate_memory(X, density, "cholmod", 0.0, ordering, (prof["nnz_gram"], prof["fill"]))["peak"]}


def choose_factorizer(X: sp.csr_matrix, density: float, *, ordering: str | None = None,
                      min_cooccurrence: float = 0.0, counts: dict | None = None) -> tuple[str, str]:
    """The factoriser ``SANSA(factorizer="auto")`` uses for X at ``density``, and why. ``counts``: when
    given, the structural counts of an analysed exact factor are recorded there as
    ``counts[("cholmod", ordering)] = (nnz_gram, fill)`` (what :func:`sansa_gpu.memory.estimate_memory`
    takes), so that a fit's memory check does not analyse the same structure again.

    'cholmod' when all of: scikit-sparse is installed; the model keeps at least
    :data:`AUTO_CHOLMOD_MIN_NNZ_PER_ITEM` nonzeros per item column; users have at least
    :data:`AUTO_CHOLMOD_MIN_ITEMS_PER_USER` interactions on average (dense co-occurrence); and the
    exact factor is cheap: its time predicted from its structure (:func:`predict_exact_seconds` of
    :func:`sansa_gpu.memory.exact_factor_profile`, the rule ``tune`` uses) is at most
    :data:`AUTO_CHOLMOD_MAX_SECONDS` and the fit's predicted peak fits the available memory.
    Otherwise 'icf'. An ICF-only option (``min_cooccurrence > 0``, ``ordering='popularity'``) selects
    'icf'. The structural analysis (0.4-4 s on the shared datasets) runs only when the cheap tests pass,
    even a fully dense factor of this catalogue would not be cheap or fit (above about 16,000 items), and
    the Gram it builds surely fits the available memory.

    Evidence (docs/benchmarks.md, "Choosing the factoriser"; benchmarks/results/tune.jsonl, factorizers.jsonl, exact_cost.jsonl,
    auto_rule.jsonl): on ml-1m (133 items per user) the best CHOLMOD beat the best ICF on validation
    by +0.022, +0.059 and +0.016 Recall@20 at 16, 64 and 256 nonzeros per item and lost by 0.039 at
    4; on pinterest (21 per user) ICF beat CHOLMOD at every density at equal λ (+0.006 to +0.019 test
    Recall@20) in a fifth of the time; on gowalla (27 per user) ICF at 5e-4 (test Recall@20 0.169,
    4-5 s) beat CHOLMOD at 2e-3 and 1e-2 (0.153, 0.157; 216 s and 905 s). The items-per-user
    threshold lies somewhere between 39 (lastfm-2k, where ICF led on validation) and 133: no shared
    dataset in between was measured. Of the ten shared datasets only ml-1m passes it (exact factor
    predicted 1.6 s, measured 0.9 s).
    """
    n = X.shape[1]
    if min_cooccurrence > 0:
        return "icf", "min_cooccurrence > 0 applies to ICF only"
    if ordering == "popularity":
        return "icf", "ordering='popularity' applies to ICF only"
    if not cholmod_available():
        return "icf", "CHOLMOD (scikit-sparse) is not installed"
    per_item = density * n
    per_user = interactions_per_user(X)
    if per_item < AUTO_CHOLMOD_MIN_NNZ_PER_ITEM:
        return "icf", (f"{per_item:.1f} nonzeros per item column < {AUTO_CHOLMOD_MIN_NNZ_PER_ITEM:g}: ICF is the "
                       f"more accurate at this density")
    if per_user < AUTO_CHOLMOD_MIN_ITEMS_PER_USER:
        return "icf", (f"{per_user:.0f} interactions per user < {AUTO_CHOLMOD_MIN_ITEMS_PER_USER:g}: on data this "
                       f"sparse ICF matched or beat CHOLMOD")
    from ..memory import available_memory_bytes, estimate_memory

    have = available_memory_bytes()
    order = ordering or "colamd"
    # a fully dense factor bounds every other: when even that is cheap and fits, no structural analysis
    # (which takes longer than the exact factor itself on small catalogues: ml-1m 1.3 s against 0.9 s)
    full = n * (n + 1) // 2
    dense = {"nnz_gram": full, "fill": full, "flops": float(n) * (n + 1) * (2 * n + 1) / 6}
    seconds = predict_exact_seconds(dense)
    if seconds <= AUTO_CHOLMOD_MAX_SECONDS and estimate_memory(X, density, "cholmod", 0.0, order,
                                                               (full, full))["peak"] <= have:
        return "cholmod", (f"{per_item:.0f} nonzeros per item column, {per_user:.0f} interactions per user, exact "
                           f"factor of at most {full:,} nonzeros predicted at most {seconds:.1f} s: the exact factor "
                           f"is cheap and the more accurate on data this dense")
    cost = exact_factor_cost(X, density, have, order)
    if not cost["analysed"]:
        return "icf", cost["why"]
    if counts is not None:
        counts[("cholmod", order)] = (cost["nnz_gram"], cost["fill"])
    seconds = cost["predicted_seconds"]
    facts = f"exact factor of {cost['fill']:,} nonzeros predicted {seconds:.1f} s"
    if seconds > AUTO_CHOLMOD_MAX_SECONDS:
        return "icf", f"{facts} > {AUTO_CHOLMOD_MAX_SECONDS:g} s: ICF is the fast default"
    if cost["peak"] > have:
        return "icf", f"{facts}, but its fit peak {cost['peak'] / 1e9:.2f} GB > {have / 1e9:.2f} GB available"
    return "cholmod", (f"{per_item:.0f} nonzeros per item column, {per_user:.0f} interactions per user, {facts}: "
                       f"the exact factor is cheap and the more accurate on data this dense")
