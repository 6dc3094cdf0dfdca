"""Stage 5 on the CPU: fused sparse scoring ``s = (x Wt) Z`` with masked, sorted top-k.

Contract shared with the GPU kernels: per user the candidates are the items whose score is
structurally nonzero (reached through Wt and Z) and that the user has not interacted with;
the k best are returned sorted by score descending, ties broken by the lower item index,
padded with id -1 / score -inf. x Wt is accumulated in float64, the scores in float32 (as on
the GPU); they are compared as float32.

Three plans compute the same scores:

- ``factored`` (the GPU's too): per user, h = x Wt over the touched latent rows, then s = h Z by
  scattering each touched row of Z. Work per user: Σ |Z row| over the touched latents.
- ``product``: the item-item product B = Wt Z is formed once as a dense (items, items) float32
  matrix plus a bitmask of its structure (which items each row reaches), kept for the model (the
  *scoring cache*, as the GPU keeps its weights); per user s = Σ x_i B_i is a contiguous,
  vectorised row sum of |x| rows. At high density the touched latents reach most of the
  catalogue many times over (pinterest, 256 nonzeros per factor column: 0.8M scattered updates
  per user, against |x| x 9836 = 0.2M vectorised ones), so this plan is many times faster; on
  sparse models or large catalogues the factored plan is, and B would not fit.
- ``sparse_product``: the same B kept as CSR (its structure is its index list; uint16 indices when
  the catalogue has at most 65,536 items), per user s = Σ x_i B_i scattered row by row. It does
  more scattered updates than the factored plan where a user's items share latents (gowalla at
  5e-4: 717M against 562M) but each is cheaper: a few long contiguous rows per user instead of
  hundreds of short ones, and no x Wt gather or latent sort (gowalla: 2.6 s against 4.2 s at 5e-4,
  9.1 s against 19.2 s at 2e-3, where B takes 0.17 / 1.4 GB against 6.9 GB dense).

``plan="auto"`` (:func:`choose_plan`) estimates the per-user costs on a sample of the users and
takes a product plan when its B fits :func:`product_cache_bytes_cap` and it wins after paying for
B. Both product plans form each entry of B in float64 and round it once, then sum a user's rows
in float32 in the same order, so for finite inputs (:func:`sansa_gpu.validation.check_interactions`
rejects others) they give bit-identical results to each other, and scores that
match the factored plan's to float32 rounding (top-k identical except between near-ties).
Candidates are the same items except where x Wt cancels to exactly zero on a latent (the
factored plan then does not reach that latent's items; B's structure cannot know): with
nonnegative weights, as :func:`sansa_gpu.validation.check_interactions` requires, only by exact
rounding coincidence. Both caches (this one and the GPU's) assume the weights are not modified
in place: call the model's ``release_scoring_cache()`` after doing so.

The plans live in :mod:`~sansa_gpu.cpu.plan_factored` and :mod:`~sansa_gpu.cpu.plan_product`, the
planner in :mod:`~sansa_gpu.cpu.planner`, the shared row helpers in :mod:`~sansa_gpu.cpu.topk`; this
module is the entry point the backend dispatches to.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from ..candidates import check_blocked
from ..scoring_cache import ScoringCache
from .plan_factored import recommend_factored
from .plan_product import recommend_product, recommend_sparse_product
from .planner import choose_plan
from .topk import no_blocked, topk_dense

__all__ = ["PLANS", "SCORE_SPARSE_DEVICE", "recommend_sparse", "score_sparse", "topk_dense"]

logger = logging.getLogger(__name__)

PLANS = ("auto", "factored", "product", "sparse_product")


def recommend_sparse(X: sp.csr_matrix, Wt: sp.csr_matrix, Z: sp.csr_matrix, k: int, plan: str = "auto", *,
                     cache: ScoringCache | None = None, blocked: np.ndarray | None = None,
                     exclude_seen: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of ``(X Wt) Z`` per row of X.

    X : (users, items) CSR float32.  Wt : (items, n) CSR.  Z : (n, items) CSR.
    plan : 'auto' (:func:`choose_plan`), 'factored', 'product' or 'sparse_product' (module docstring).
    cache : the model's :class:`~sansa_gpu.scoring_cache.ScoringCache`, where a formed B is kept
    (None: formed for this call only). blocked : None or uint8 (items,), 1 = never returned (the
    allow / block lists of :meth:`SANSA.recommend`). exclude_seen : the user's own items are never
    returned (True) or are candidates like any other (False).
    Returns ids (users, k) int64 and scores (users, k) float32. Parallel over users; safe to call
    from several threads at once (the cache forms B once; see :mod:`sansa_gpu.cpu._threads`).
    """
    if plan not in PLANS:
        raise ValueError(f"plan must be one of {PLANS}, got {plan!r}")
    n_users, n_items = X.shape[0], Z.shape[1]
    out_ids = np.empty((n_users, k), dtype=np.int64)
    out_scores = np.empty((n_users, k), dtype=np.float32)
    if not n_users:
        return out_ids, out_scores
    blocked = no_blocked(n_items) if check_blocked(blocked, n_items) is None else blocked
    cache = ScoringCache.or_for_call(cache)
    if plan == "auto":
        cached = next((p for p in ("sparse_product", "product") if cache.get(p) is not None), None)
        plan, why = choose_plan(X, Wt, Z, cached=cached, cache=cache)
        logger.debug("recommend: %s plan (%s)", plan, why)
    seen = np.uint8(bool(exclude_seen))
    if plan == "product":
        recommend_product(X, Wt, Z, k, blocked, seen, out_ids, out_scores, cache)
    elif plan == "sparse_product":
        recommend_sparse_product(X, Wt, Z, k, blocked, seen, out_ids, out_scores, cache)
    else:
        recommend_factored(X, Wt, Z, k, blocked, seen, out_ids, out_scores)
    return out_ids, out_scores


def score_sparse(X: sp.csr_matrix, Wt: sp.csr_matrix, Z: sp.csr_matrix) -> sp.csr_matrix:
    """Raw scores ``(X Wt) Z`` as a (users, items) CSR float32 (no masking)."""
    return ((X @ Wt) @ Z).astype(np.float32).tocsr()


#: Where :func:`score_sparse` of this backend runs.
SCORE_SPARSE_DEVICE = "cpu"
