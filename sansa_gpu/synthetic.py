"""Seeded synthetic implicit feedback: Zipf item popularity, user communities, heavy-tailed
user activity. Vectorised (no per-user Python loop); used by the README job, tests and scale runs."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def synthetic_interactions(
    n_users: int = 20_000,
    n_items: int = 5_000,
    mean_items_per_user: float = 30.0,
    n_communities: int = 50,
    community_affinity: float = 0.7,
    zipf_exponent: float = 0.9,
    activity_sigma: float = 1.0,
    seed: int = 0,
) -> sp.csr_matrix:
    """Binary (n_users, n_items) CSR float32.

    Item popularity follows rank^-zipf_exponent (ranks shuffled over ids). Items and users belong
    to one of ``n_communities``; each interaction is drawn with probability ``community_affinity``
    from the user's community (popularity-weighted), else from the whole catalogue. Activity per
    user is lognormal (``activity_sigma``) with the given mean, at least 1. Duplicate draws
    collapse, so the realised mean is slightly below ``mean_items_per_user``.
    """
    if n_users <= 0 or n_items <= 0:
        raise ValueError("n_users and n_items must be > 0")
    if not 0.0 <= community_affinity <= 1.0:
        raise ValueError("community_affinity must lie in [0, 1]")
    rng = np.random.default_rng(seed)
    pop = rng.permutation(np.arange(1, n_items + 1, dtype=np.float64) ** -zipf_exponent)
    item_comm = rng.integers(0, n_communities, size=n_items)
    user_comm = rng.integers(0, n_communities, size=n_users)

    mu = np.log(mean_items_per_user) - 0.5 * activity_sigma**2
    activity = np.maximum(1, np.rint(rng.lognormal(mu, activity_sigma, size=n_users))).astype(np.int64)
    activity = np.minimum(activity, n_items)
    users = np.repeat(np.arange(n_users, dtype=np.int64), activity)
    total = users.shape[0]

    # global draw: inverse CDF of popularity
    global_cdf = np.cumsum(pop)
    global_cdf /= global_cdf[-1]
    items = np.searchsorted(global_cdf, rng.random(total), side="right")

    # community draw: items sorted by community, each community's CDF mapped to [c, c + 1)
    order = np.argsort(item_comm, kind="stable")
    comm_sorted = item_comm[order]
    w = pop[order]
    comm_tot = np.bincount(comm_sorted, weights=w, minlength=n_communities)
    cum = np.cumsum(w)
    starts = np.concatenate(([0.0], np.cumsum(comm_tot)[:-1]))
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = comm_sorted + (cum - starts[comm_sorted]) / comm_tot[comm_sorted]
    in_comm = rng.random(total) < community_affinity
    uc = user_comm[users[in_comm]]
    has_items = comm_tot[uc] > 0
    pos = np.searchsorted(scaled, uc + rng.random(uc.shape[0]), side="right")
    pos = np.minimum(pos, n_items - 1)
    drawn = order[pos]
    idx = np.flatnonzero(in_comm)
    items[idx[has_items]] = drawn[has_items]
    items = np.minimum(items, n_items - 1)

    X = sp.csr_matrix((np.ones(total, dtype=np.float32), (users, items)), shape=(n_users, n_items))
    X.sum_duplicates()
    X.data[:] = 1.0
    return X
