"""recommend(): masking, sorting, padding, ties, agreement with score()."""

import numpy as np
import scipy.sparse as sp
import pytest

from sansa_gpu import EASE, SANSA
from sansa_gpu import scoring_cache_info, set_scoring_cache_budget
from sansa_gpu.cpu.inference import recommend_sparse
from sansa_gpu.scoring_cache import ScoringCache


@pytest.fixture(scope="module")
def fitted(medium_X):
    return SANSA(l2=20.0, density=0.02, refine_sweeps=2, device="cpu").fit(medium_X)


def _brute_force(S_row, seen, k):
    cand = [(np.float32(v), i) for i, v in zip(S_row.indices, S_row.data) if i not in seen]
    cand.sort(key=lambda t: (-t[0], t[1]))
    cand = cand[:k]
    ids = [i for _, i in cand] + [-1] * (k - len(cand))
    scores = [s for s, _ in cand] + [-np.inf] * (k - len(cand))
    return ids, scores


def test_recommend_matches_brute_force_on_scores(fitted, medium_X):
    Xu = medium_X[:200]
    ids, scores = fitted.recommend(Xu, k=15)
    assert ids.dtype == np.int64 and scores.dtype == np.float32 and ids.shape == (200, 15)
    S = fitted.score(Xu)
    for u in range(200):
        seen = set(Xu[u].indices.tolist())
        exp_ids, exp_scores = _brute_force(S[u], seen, 15)
        np.testing.assert_allclose(scores[u], exp_scores, rtol=1e-5, atol=1e-6)
        # ids agree wherever neighbouring scores are separated beyond float error
        assert not (set(ids[u][ids[u] >= 0].tolist()) & seen)
        strict = np.abs(np.diff(np.asarray(exp_scores, dtype=np.float64))) > 1e-5
        if strict.all():
            assert ids[u].tolist() == exp_ids


def test_scores_sorted_and_own_items_excluded(fitted, medium_X):
    ids, scores = fitted.recommend(medium_X, k=20)
    finite = np.where(np.isfinite(scores), scores, np.float32(-1e30))
    assert np.all(np.diff(finite, axis=1) <= 0)
    seen = medium_X[np.repeat(np.arange(medium_X.shape[0]), 20), np.clip(ids.ravel(), 0, None)]
    assert not np.any(np.asarray(seen).ravel()[ids.ravel() >= 0])


def test_padding_when_fewer_candidates_than_k():
    # two disconnected item groups {0,1,2} and {3,4}: a user of item 3 can only be offered item 4
    X = sp.csr_matrix(np.array([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 1, 1], [0, 0, 0, 1, 1]], dtype=np.float32))
    m = SANSA(l2=1.0, density=1.0, refine_sweeps=3, device="cpu").fit(X)
    ids, scores = m.recommend(sp.csr_matrix(np.array([[0, 0, 0, 1, 0], [0, 0, 0, 0, 0]], dtype=np.float32)), k=4)
    assert ids[0].tolist() == [4, -1, -1, -1]
    assert np.isfinite(scores[0, 0]) and np.all(np.isneginf(scores[0, 1:]))
    assert ids[1].tolist() == [-1] * 4 and np.all(np.isneginf(scores[1]))


def test_k_larger_than_catalogue(fitted, medium_X):
    ids, scores = fitted.recommend(medium_X[:3], k=medium_X.shape[1] + 5)
    assert ids.shape == (3, medium_X.shape[1] + 5)
    assert np.all(ids[:, -5:] == -1)


def test_ties_broken_by_lower_item_index():
    # Wt = identity, Z maps latent 0 to items 3, 1, 2 with the same score
    Wt = sp.csr_matrix(np.eye(4, dtype=np.float32)[:, :1].repeat(1, axis=1))
    Z = sp.csr_matrix(np.array([[0.0, 0.5, 0.5, 0.5]], dtype=np.float32))
    X = sp.csr_matrix(np.array([[1, 0, 0, 0]], dtype=np.float32))
    ids, scores = recommend_sparse(X, Wt, Z, 3)
    assert ids[0].tolist() == [1, 2, 3]


def test_ease_recommend_padding_and_masking(small_X):
    e = EASE(l2=10.0).fit(small_X)
    n = small_X.shape[1]
    full = sp.csr_matrix(np.ones((1, n), dtype=np.float32))
    ids, scores = e.recommend(full, k=3)
    assert ids.tolist() == [[-1, -1, -1]]
    ids, scores = e.recommend(small_X[:5], k=n)
    for u in range(5):
        assert (ids[u] >= 0).sum() == n - small_X[u].nnz


def _descending_ties(n_items, m, n_users):
    """Every user has item 0; item 0 reaches latents 0..m-1 and latent t reaches item n_items-1-t
    with the same weight: m tied candidates, first touched in descending item order."""
    Wt = sp.csr_matrix((np.ones(m, np.float32), np.arange(m), np.r_[0, np.full(n_items, m)]), shape=(n_items, m))
    Z = sp.csr_matrix((np.full(m, 0.5, np.float32), n_items - 1 - np.arange(m), np.arange(m + 1)), shape=(m, n_items))
    X = sp.csr_matrix((np.ones(n_users, np.float32), np.zeros(n_users, np.int64), np.arange(n_users + 1)),
                      shape=(n_users, n_items))
    return X, Wt, Z


@pytest.mark.parametrize("n_items, m", [(200, 30), (40, 39)])  # list mode, and dense mode (work > n_items)
def test_ties_at_the_k_boundary_keep_the_lowest_ids_whatever_the_feed_order(n_items, m, monkeypatch):
    """Every plan; the product plan also in 64-item column tiles, so the tied items span tiles (the
    sparse product plan's B row lists the tied items in descending order, as first reached)."""
    X, Wt, Z = _descending_ties(n_items, m, n_users=7)
    lowest = np.arange(n_items - m, n_items)
    monkeypatch.setattr(cpu_product, "PRODUCT_TILE_BYTES", 4 * n_items * 64)
    compared = 0
    for plan in ("factored", "product", "sparse_product"):
        for k in (1, 5, m - 1):
            ids, scores = recommend_sparse(X, Wt, Z, k, plan=plan)
            for u in range(X.shape[0]):
                assert ids[u].tolist() == lowest[:k].tolist(), plan
                assert np.all(scores[u] == np.float32(0.5))
                compared += 1
    assert compared == 63


def test_ease_ties_at_the_k_boundary_keep_the_lowest_ids():
    n = 50
    e = EASE(l2=1.0)
    e.B_ = np.zeros((n, n), dtype=np.float32)
    e.B_[0, 10:] = 0.25  # item 0 scores items 10..49 the same
    e.n_items_ = n
    X = sp.csr_matrix((np.ones(6, np.float32), np.zeros(6, np.int64), np.arange(7)), shape=(6, n))
    compared = 0
    for k in (1, 7, 40):
        ids, scores = e.recommend(X, k=k)
        for u in range(6):
            assert ids[u].tolist() == list(range(10, 10 + k))
            compared += 1
    assert compared == 18


# ------------------------------------------------- the product plans (B = Wt Z formed, dense or sparse)
from sansa_gpu.cpu import plan_product as cpu_product, planner as cpu_planner  # noqa: E402


def _same_topk(ids_a, sc_a, ids_b, sc_b, rel=1e-5):
    """Scores equal to float32 rounding; ids equal wherever neighbouring scores are not near-ties;
    padding (-1 / -inf) identical."""
    np.testing.assert_array_equal(ids_a == -1, ids_b == -1)
    np.testing.assert_array_equal(np.isneginf(sc_a), np.isneginf(sc_b))
    fin = np.isfinite(sc_a)
    np.testing.assert_allclose(sc_a[fin], sc_b[fin], rtol=rel, atol=1e-6)
    for u in range(ids_a.shape[0]):
        s = sc_a[u][np.isfinite(sc_a[u])].astype(np.float64)
        gaps = np.abs(np.diff(s)) > rel * np.maximum(1e-6, np.abs(s[1:]))
        if gaps.all():
            assert ids_a[u].tolist() == ids_b[u].tolist(), u


@pytest.mark.parametrize("n_items", [130, 64])
def test_product_plan_matches_factored_plan(n_items):
    """Weighted inputs, a user with no items, a user with one isolated item (fewer candidates than k:
    padding), catalogues of 130 (not a multiple of the 64-bit mask word) and 64 items."""
    rng = np.random.default_rng(7)
    X = sp.random(400, n_items, density=0.08, random_state=rng, format="csr", dtype=np.float32)
    X.data[:] = 1.0
    X = sp.lil_matrix(X)
    X[:, n_items - 1] = 0
    X[5, :] = 0
    X[6, :] = 0
    X[5, n_items - 1] = X[6, n_items - 1] = 1  # the last item's only users, who have nothing else: it reaches nothing
    X = sp.csr_matrix(X)
    m = SANSA(l2=5.0, density=0.3, refine_sweeps=2, factorizer="icf", device="cpu").fit(X)
    Xq = X.copy()
    Xq.data = Xq.data * rng.uniform(0.5, 2.0, Xq.nnz).astype(np.float32)
    Xq = sp.vstack([Xq, sp.csr_matrix((1, n_items), dtype=np.float32)]).tocsr()  # a user with no items
    for k in (10, n_items + 3):
        fa = recommend_sparse(Xq, *m.weights_, k, plan="factored")
        pr = recommend_sparse(Xq, *m.weights_, k, plan="product")
        _same_topk(*fa, *pr)
        sparse = recommend_sparse(Xq, *m.weights_, k, plan="sparse_product")
        np.testing.assert_array_equal(sparse[0], pr[0])  # the same B entries summed in the same order
        np.testing.assert_array_equal(sparse[1], pr[1])
        assert pr[0][5].tolist() == [-1] * k and pr[0][-1].tolist() == [-1] * k
        reach = (fa[0] >= 0).sum(axis=1)
        assert reach.min() < k  # some user has fewer candidates than k: padding was compared


def test_product_plan_tiles_give_the_same_bits_as_one_tile(monkeypatch):
    """Column tiles of B (as many as 3, the last partial, own items and padding inside tiles) change
    the order of the work, not the sums: ids and scores are bit-identical to a single tile."""
    rng = np.random.default_rng(11)
    X = sp.random(300, 150, density=0.1, random_state=rng, format="csr", dtype=np.float32)
    X.data[:] = 1.0
    m = SANSA(l2=5.0, density=0.2, refine_sweeps=1, factorizer="icf", device="cpu").fit(X)
    Xq = X.copy()
    Xq.data = Xq.data * rng.uniform(0.5, 2.0, Xq.nnz).astype(np.float32)
    assert cpu_product.product_tile(150, 150) == 192  # default: the whole catalogue in one tile
    one = recommend_sparse(Xq, *m.weights_, 170, plan="product")
    monkeypatch.setattr(cpu_product, "PRODUCT_TILE_BYTES", 4 * 150 * 64)
    assert cpu_product.product_tile(150, 150) == 64
    for k in (7, 170):
        tiled = recommend_sparse(Xq, *m.weights_, k, plan="product")
        np.testing.assert_array_equal(tiled[0], one[0][:, :k])
        np.testing.assert_array_equal(tiled[1], one[1][:, :k])
    assert (one[0] == -1).any()  # padding compared


def test_auto_plan_follows_the_cost_model_and_the_memory_cap(medium_X, monkeypatch):
    sparse = SANSA(l2=20.0, density=0.002, refine_sweeps=1, factorizer="icf", device="cpu").fit(medium_X)
    dense = SANSA(l2=20.0, density=0.2, refine_sweeps=1, factorizer="icf", device="cpu").fit(medium_X)
    # 2 nonzeros per factor column: B = Wt Z has 1.4k entries, its rows are the cheapest to scatter
    # (measured here: 3.3 ms sparse product, 4.6 factored, 7.2 dense product for the 3000 users)
    assert cpu_planner.choose_plan(medium_X, *sparse.weights_)[0] == "sparse_product"
    monkeypatch.setattr(cpu_planner, "SPARSE_PRODUCT_MARGIN", 0.0)
    assert cpu_planner.choose_plan(medium_X, *sparse.weights_)[0] == "factored"
    monkeypatch.undo()
    plan, why = cpu_planner.choose_plan(medium_X, *dense.weights_)
    assert plan == "product", why
    cost = cpu_planner.plan_costs(medium_X, *dense.weights_)
    assert cost["product"] < cost["factored"] and cost["build"] > 0
    set_scoring_cache_budget(cpu_product.product_bytes(medium_X.shape[1]) - 1)
    try:
        plan, why = cpu_planner.choose_plan(medium_X, *dense.weights_)
    finally:
        set_scoring_cache_budget(None)
    assert plan == "factored" and "GB >" in why
    with pytest.raises(ValueError, match="plan must be one of"):
        recommend_sparse(medium_X[:2], *dense.weights_, 5, plan="dense")


def test_product_cache_is_kept_per_model_and_dropped_on_refit(medium_X):
    m = SANSA(l2=20.0, density=0.2, refine_sweeps=1, factorizer="icf", device="cpu").fit(medium_X)
    a = m.recommend(medium_X[:50], 5, plan="product")
    B = m._scoring_cache.get("product")
    b = m.recommend(medium_X[50:100], 5, plan="product")
    assert m._scoring_cache.get("product") is B and m._scoring_cache.builds["product"] == 1  # reused
    old = m._scoring_cache
    m.fit(medium_X[:, :])  # new weights: what was formed from the old ones is not used again
    assert m._scoring_cache is not old and not m._scoring_cache.names()
    c = m.recommend(medium_X[:50], 5, plan="product")
    np.testing.assert_array_equal(a[0], c[0])  # same data, same fit: same top-k
    assert b[0].shape == (50, 5)
    m.release_scoring_cache()
    assert not m._scoring_cache.names()
    # a direct call without a cache forms B for the call only
    recommend_sparse(medium_X[:5], *m.weights_, 5, plan="product")
    assert not m._scoring_cache.names()


def test_product_plan_ignores_explicit_zeros_and_refuses_what_does_not_fit(medium_X, monkeypatch):
    m = SANSA(l2=20.0, density=0.2, refine_sweeps=1, factorizer="icf", device="cpu").fit(medium_X)
    X = medium_X[:40].copy()
    X.data[::3] = 0.0  # explicit zeros: those items reach nothing, in both plans
    fa = recommend_sparse(X, *m.weights_, 10, plan="factored")
    pr = recommend_sparse(X, *m.weights_, 10, plan="product")
    _same_topk(*fa, *pr)
    from sansa_gpu import memory

    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 1000)
    with pytest.raises(MemoryError, match="use plan='factored'"):
        recommend_sparse(X, *m.weights_, 10, plan="product")
    assert cpu_planner.choose_plan(X, *m.weights_)[0] == "factored"


# ---------------------------------------------------------------- the sparse product plan (CSR B)
def _structure_count(Wt, Z):
    """Entries per row of B = Wt Z counted by scipy on the 0/1 patterns (no cancellation)."""
    ones = lambda M: sp.csr_matrix((np.ones(M.nnz), M.indices, M.indptr), shape=M.shape)
    return np.diff((ones(Wt) @ ones(Z)).tocsr().indptr)


def test_sparse_product_B_holds_the_structure_and_float64_sums_of_Wt_Z(medium_X):
    m = SANSA(l2=20.0, density=0.02, refine_sweeps=1, factorizer="icf", device="cpu").fit(medium_X)
    Wt, Z = m.weights_
    np.testing.assert_array_equal(cpu_product.product_row_nnz(Wt, Z), _structure_count(Wt, Z))
    indptr, indices, data = cpu_product._product_state(Wt, Z, "sparse_product", ScoringCache())
    assert indices.dtype == np.uint16 and data.dtype == np.float32  # 300 items fit 16 bits
    B = sp.csr_matrix((data, indices.astype(np.int64), indptr), shape=(Wt.shape[0], Z.shape[1]))
    exact = (Wt.astype(np.float64) @ Z.astype(np.float64)).toarray()
    np.testing.assert_allclose(B.toarray(), exact.astype(np.float32), rtol=1e-6, atol=1e-12)
    for i in range(B.shape[0]):  # each row's items distinct
        row = indices[indptr[i]:indptr[i + 1]]
        assert np.unique(row).size == row.size


def test_sparse_product_plan_gives_the_same_bits_with_int32_indices(medium_X, monkeypatch):
    """Catalogues over 65,536 items store B's indices as int32: the same kernel, the same result."""
    m = SANSA(l2=20.0, density=0.02, refine_sweeps=1, factorizer="icf", device="cpu").fit(medium_X)
    X = medium_X[:120].copy()
    X.data[::4] = 0.0  # explicit zeros reach nothing, in every plan
    small = recommend_sparse(X, *m.weights_, 12, plan="sparse_product")
    monkeypatch.setattr(cpu_product, "sparse_index_dtype", lambda n_items: np.dtype(np.int32))
    cache = ScoringCache()
    wide = recommend_sparse(X, *m.weights_, 12, plan="sparse_product", cache=cache)
    assert cache.get("sparse_product")[1].dtype == np.int32
    np.testing.assert_array_equal(small[0], wide[0])
    np.testing.assert_array_equal(small[1], wide[1])
    dense = recommend_sparse(X, *m.weights_, 12, plan="product")
    np.testing.assert_array_equal(small[0], dense[0])
    np.testing.assert_array_equal(small[1], dense[1])


def test_auto_plan_takes_the_sparse_product_by_the_cost_model_and_counts_only_when_it_could_pay(
        medium_X, monkeypatch):
    m = SANSA(l2=20.0, density=0.02, refine_sweeps=1, factorizer="icf", device="cpu").fit(medium_X)
    Wt, Z = m.weights_
    cache = ScoringCache()
    # a small batch: forming a sparse B could not pay, so its structure is not even counted
    monkeypatch.setattr(cpu_planner, "NS_SPARSE_BUILD", 1e6)
    plan, why = cpu_planner.choose_plan(medium_X[:3], Wt, Z, cache=cache)
    assert plan != "sparse_product" and "forming a sparse B would take at least" in why
    assert not cache.names()
    # cheap sparse scatter, dense B out of the cap: the sparse product plan is chosen
    monkeypatch.setattr(cpu_planner, "NS_SPARSE_BUILD", 0.0)
    monkeypatch.setattr(cpu_planner, "NS_SPARSE_WRITE", 0.0)
    monkeypatch.setattr(cpu_planner, "NS_SPARSE_SCATTER", 0.01)
    monkeypatch.setattr(cpu_planner, "product_cache_bytes_cap", lambda: cpu_product.product_bytes(Z.shape[1]) - 1)
    plan, why = cpu_planner.choose_plan(medium_X, Wt, Z, cache=cache)
    assert plan == "sparse_product", why
    cost = cpu_planner.plan_costs(medium_X, Wt, Z, cpu_product.product_row_nnz(Wt, Z, cache))
    assert cost["sparse_product"] < cpu_planner.SPARSE_PRODUCT_MARGIN * cost["factored"]
    ids, _ = recommend_sparse(medium_X[:50], Wt, Z, 5, cache=cache)  # auto forms and keeps the sparse B
    assert cache.get("sparse_product") is not None and cache.get("product") is None
    np.testing.assert_array_equal(ids, recommend_sparse(medium_X[:50], Wt, Z, 5, plan="sparse_product")[0])
    # a sparse B over the cap is refused by auto; over the available memory by the plan itself
    nnz_B = int(cpu_product.product_row_nnz(Wt, Z).sum())
    monkeypatch.setattr(cpu_planner, "product_cache_bytes_cap",
                        lambda: cpu_product.sparse_product_bytes(nnz_B, Z.shape[1]) - 1)
    plan, why = cpu_planner.choose_plan(medium_X, Wt, Z)
    assert plan == "factored" and "sparse B would take" in why
    from sansa_gpu import memory

    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 1000)
    with pytest.raises(MemoryError, match="sparse_product plan needs .* use plan='factored'"):
        recommend_sparse(medium_X[:5], Wt, Z, 5, plan="sparse_product")


def test_each_model_keeps_its_own_B_and_the_counted_structure_once(medium_X):
    m = SANSA(l2=20.0, density=0.05, refine_sweeps=1, factorizer="icf", device="cpu").fit(medium_X)
    a = m.recommend(medium_X[:40], 6, plan="sparse_product")
    row_nnz = m._scoring_cache.get("B_row_nnz")
    b = m.recommend(medium_X[:40], 6, plan="product")
    assert m._scoring_cache.get("B_row_nnz") is row_nnz  # same weights: counted once
    np.testing.assert_array_equal(a[0], b[0])
    # another model's B and count never touch this model's
    other = SANSA(l2=20.0, density=0.01, refine_sweeps=1, factorizer="icf", device="cpu").fit(medium_X)
    B = m._scoring_cache.get("product")
    other.recommend(medium_X[:40], 6, plan="sparse_product")
    assert m._scoring_cache.get("product") is B and other._scoring_cache.get("product") is None
    assert dict(m._scoring_cache.builds) == {"B_row_nnz": 1, "sparse_product": 1, "product": 1}
    held = scoring_cache_info()["held_bytes"]
    del other
    import gc

    gc.collect()  # a dropped model's entries leave the process budget
    assert scoring_cache_info()["held_bytes"] < held


def test_weights_changed_in_place_without_release_raise_instead_of_corrupting_memory(medium_X):
    """The sparse B is formed from counted row lengths; weights whose structure changed between the
    count and the fill (same nnz, so the cache key cannot tell) give an error, not out-of-bounds writes."""
    m = SANSA(l2=20.0, density=0.05, refine_sweeps=1, factorizer="icf", device="cpu").fit(medium_X)
    Wt, Z = m.weights_
    cache = ScoringCache()
    cpu_product.product_row_nnz(Wt, Z, cache)
    Wt.indices[:] = Wt.indices[0]  # every entry on one latent: rows reach other item counts
    with pytest.raises(RuntimeError, match="weights changed in place; call release_scoring_cache"):
        cpu_product._product_state(Wt, Z, "sparse_product", cache)
    assert cache.get("B_row_nnz") is None  # the stale count is dropped
