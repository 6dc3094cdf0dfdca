"""Ranking metrics on top-k id matrices against held-out interactions.

Two recall definitions are in use and they are not interchangeable:
* ``recall_at_k``       hits / min(k, |targets|)  (Liang et al.: ML-20M, Netflix, MSD)
* ``recall_at_k_bars``  hits / |targets|          (BARS benchmark: Amazon-Book, Gowalla)
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def _hits(ids: np.ndarray, targets: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(users, k) bool hit matrix and (users,) target counts; ids padded with -1 never hit."""
    if ids.ndim != 2 or ids.shape[0] != targets.shape[0]:
        raise ValueError(f"ids must be (n_users, k) with n_users={targets.shape[0]}, got {ids.shape}")
    if k > ids.shape[1]:
        raise ValueError(f"k={k} exceeds the {ids.shape[1]} recommendations per user")
    T = sp.csr_matrix(targets)
    if not T.has_sorted_indices:
        T = T.sorted_indices()  # a sorted copy: the caller's targets stay as they are
    top = ids[:, :k]
    rows = np.repeat(np.arange(top.shape[0]), k)
    cols = top.ravel()
    valid = cols >= 0
    hit = np.zeros(top.size, dtype=bool)
    if valid.any():
        hit[valid] = np.asarray(T[rows[valid], cols[valid]]).ravel() != 0
    return hit.reshape(top.shape), np.diff(T.indptr)


def _over_users_with_targets(values: np.ndarray, n_targets: np.ndarray) -> np.ndarray:
    """values of the users with targets (ValueError when no user has any)."""
    mask = n_targets > 0
    if not mask.any():
        raise ValueError("no user has any target item")
    return values[mask]


def _mean_over_users_with_targets(values: np.ndarray, n_targets: np.ndarray) -> float:
    return float(_over_users_with_targets(values, n_targets).mean())


def recall_per_user(ids: np.ndarray, targets: sp.csr_matrix, k: int) -> np.ndarray:
    """hits@k / min(k, |targets|) of each user with targets, in row order: float64 (users with targets,).
    Its mean is :func:`recall_at_k`; its spread gives standard errors (of one model's mean, or of the
    paired difference of two models scored on the same users)."""
    hit, n_t = _hits(ids, targets, k)
    return _over_users_with_targets(hit.sum(1) / np.maximum(1, np.minimum(k, n_t)), n_t)


def recall_at_k(ids: np.ndarray, targets: sp.csr_matrix, k: int) -> float:
    """Mean over users with targets of hits@k / min(k, |targets|)."""
    return float(recall_per_user(ids, targets, k).mean())


def recall_at_k_bars(ids: np.ndarray, targets: sp.csr_matrix, k: int) -> float:
    """Mean over users with targets of hits@k / |targets| (BARS / LightGCN convention)."""
    hit, n_t = _hits(ids, targets, k)
    return _mean_over_users_with_targets(hit.sum(1) / np.maximum(1, n_t), n_t)


def ndcg_at_k(ids: np.ndarray, targets: sp.csr_matrix, k: int) -> float:
    """Mean over users with targets of DCG@k / IDCG@k with binary gains, log2(rank + 2) discount."""
    hit, n_t = _hits(ids, targets, k)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = hit @ discount
    idcg = np.cumsum(discount)[np.clip(np.minimum(k, n_t) - 1, 0, None)]
    return _mean_over_users_with_targets(dcg / idcg, n_t)


def evaluate(ids: np.ndarray, targets: sp.csr_matrix, ks=(20,)) -> dict[str, float]:
    """All metrics at every k: {'recall@20', 'recall_bars@20', 'ndcg@20', ...}."""
    out = {}
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(ids, targets, k)
        out[f"recall_bars@{k}"] = recall_at_k_bars(ids, targets, k)
        out[f"ndcg@{k}"] = ndcg_at_k(ids, targets, k)
    return out
