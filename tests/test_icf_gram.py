"""Incomplete Cholesky and the column-parallel Gram."""

import logging

import numpy as np
import pytest
import scipy.sparse as sp

from sansa_gpu import SANSA
from sansa_gpu.factorize import icf, item_ordering, ldlt_icf, nnz_budget
from sansa_gpu.gram import gram_column_norms, gram_lower, gram_lower_nnz
from sansa_gpu.memory import structural_counts


def test_gram_lower_matches_dense_with_permutation_and_empty_items(small_X):
    X = sp.hstack([small_X, sp.csr_matrix((small_X.shape[0], 2), dtype=np.float32)]).tocsr()
    n = X.shape[1]
    p = np.random.default_rng(0).permutation(n)
    A = gram_lower(X, 5.0, p)
    G = (X.T @ X).toarray().astype(np.float64) + 5.0 * np.eye(n)
    np.testing.assert_allclose(A.toarray(), np.tril(G[p][:, p]), rtol=0, atol=1e-9)
    assert np.array_equal(A.indices[A.indptr[:-1]], np.arange(n))  # diagonal first


def test_gram_column_norms_match_dense(small_X):
    G = (small_X.T @ small_X).toarray().astype(np.float64)
    np.testing.assert_allclose(gram_column_norms(small_X), np.linalg.norm(G, axis=0), rtol=1e-12)


def test_gram_pruning_drops_weak_cooccurrences(small_X):
    A = gram_lower(small_X, 0.0, min_cooccurrence=3)
    G = (small_X.T @ small_X).toarray()
    keep = (G >= 3) | np.eye(G.shape[0], dtype=bool)
    np.testing.assert_allclose(A.toarray(), np.tril(np.where(keep, G, 0.0)))


@pytest.mark.parametrize("mc", [0.0, 2.0, 3.0])
def test_gram_count_pass_alone_counts_what_the_build_stores(small_X, mc):
    """The memory estimate counts the Gram without storing it: same nnz as the built Gram, with
    interaction-free items (no entry at l2 = 0, a diagonal entry at l2 > 0) and pruning."""
    X = sp.hstack([small_X, sp.csr_matrix((small_X.shape[0], 3), dtype=np.float32)]).tocsr()
    assert gram_lower_nnz(X, 0.0, mc) == gram_lower(X, 0.0, min_cooccurrence=mc).nnz
    assert structural_counts(X, "icf", mc) == (gram_lower(X, 1.0, min_cooccurrence=mc).nnz, None)
    assert gram_lower(X, 1.0, min_cooccurrence=mc).nnz == gram_lower_nnz(X, 1.0, mc) == gram_lower_nnz(X, 0.0, mc) + 3


def test_icf_equals_exact_cholesky_when_nothing_is_dropped(small_X):
    A = gram_lower(small_X, 0.0)
    L, shift = icf(A, 5.0, budget=10**7)
    G = (small_X.T @ small_X).toarray().astype(np.float64) + 5.0 * np.eye(small_X.shape[1])
    np.testing.assert_allclose(L.toarray(), np.linalg.cholesky(G), atol=1e-10)
    assert shift == 5.0


@pytest.mark.parametrize("density", [0.02, 0.1])
def test_icf_stays_within_budget_and_is_deterministic(medium_X, density):
    """Within, not exactly at, the budget: per-column caps leave part of it unused (7134 of 7200 at
    2e-2, 34230 of 36000 at 1e-1 on this data, while the exact factor has 170749 nonzeros)."""
    n = medium_X.shape[1]
    budget = nnz_budget(density, n)
    f1 = ldlt_icf(medium_X, 20.0, budget)
    f2 = ldlt_icf(medium_X, 20.0, budget)
    f1.check()
    assert f1.L.nnz <= budget
    assert (f1.L != f2.L).nnz == 0 and np.array_equal(f1.d, f2.d)


def test_icf_shift_restart_path(small_X, caplog):
    A = gram_lower(small_X, 0.0)
    with caplog.at_level(logging.INFO, logger="sansa_gpu"):
        L, shift = icf(A, 1e-12, budget=small_X.shape[1] + 40)  # very sparse + no shift: a pivot fails
    assert shift > 1e-12
    assert "restarting with shift" in caplog.text
    assert np.all(L.diagonal() > 0)


def test_icf_model_approaches_cholmod_model_with_density(medium_X):
    from sansa_gpu.data import random_holdout_split
    from sansa_gpu.metrics import recall_at_k

    s = random_holdout_split(medium_X, 0.2, seed=1)
    rec = {}
    users = s.eval_users
    for fz, density in (("cholmod", 0.05), ("icf", 0.05), ("icf", 0.3)):
        m = SANSA(l2=20.0, density=density, factorizer=fz, column_scaling=False, refine_sweeps=2, device="cpu",
                  ordering="colamd", min_cooccurrence=0).fit(s.train)
        ids, _ = m.recommend(s.train, k=20)
        rec[fz, density] = recall_at_k(ids[users], s.test[users], 20)
    # dropping during the factorisation costs accuracy at low density, and less as density grows
    assert rec["icf", 0.3] > rec["icf", 0.05]
    assert rec["icf", 0.3] > rec["cholmod", 0.05] - 0.01, rec


def test_item_ordering_methods_are_permutations(medium_X):
    n = medium_X.shape[1]
    counts = np.bincount(medium_X.indices, minlength=n)
    pop = item_ordering(medium_X, "popularity")
    assert np.array_equal(pop, np.argsort(counts, kind="stable"))
    assert np.all(np.diff(counts[pop]) >= 0)
    assert np.array_equal(item_ordering(medium_X, "natural"), np.arange(n))
    for method in ("colamd", "amd"):
        p = item_ordering(medium_X, method)
        assert p.dtype == np.int64 and np.array_equal(np.sort(p), np.arange(n))
    with pytest.raises(ValueError, match="ordering"):
        item_ordering(medium_X, "random")


@pytest.mark.parametrize("ordering", ["popularity", "amd"])
def test_icf_orderings_give_valid_models_within_budget(medium_X, ordering):
    m = SANSA(l2=20.0, density=0.02, factorizer="icf", ordering=ordering, refine_sweeps=1, device="cpu").fit(medium_X)
    budget = nnz_budget(0.02, medium_X.shape[1])
    assert m.stats_["nnz_L"] <= budget and m.stats_["nnz_K"] <= budget
    ids, scores = m.recommend(medium_X[:50], k=10)
    assert np.all(np.isfinite(scores[ids >= 0]))
    # the user's own items are never recommended
    for u in range(50):
        assert not set(ids[u][ids[u] >= 0]) & set(medium_X[u].indices)


def _unsorted_copy(X):
    """The same matrix with every row's (index, value) pairs reversed: valid CSR, unsorted indices."""
    X = sp.csr_matrix(X, copy=True)
    for u in range(X.shape[0]):
        a, b = X.indptr[u], X.indptr[u + 1]
        X.indices[a:b] = X.indices[a:b][::-1].copy()
        X.data[a:b] = X.data[a:b][::-1].copy()
    X.has_sorted_indices = False
    return X


def test_cholmod_calls_never_touch_the_callers_matrix(medium_X):
    """Regression: CHOLMOD sorts its input's indices in place, and SciPy's csc_matrix(X.T, dtype=)
    shares X's index arrays, so an unsorted X (e.g. after column scaling) came back with its
    indices sorted and its values not: a silently corrupted matrix and Gram."""
    from sansa_gpu.factorize import ldlt_cholmod

    X = _unsorted_copy(medium_X)
    X.data = X.data * np.linspace(0.5, 1.5, X.nnz, dtype=np.float32)
    before = (X.indices.copy(), X.data.copy(), X.indptr.copy())
    p = item_ordering(X, "colamd")
    f = ldlt_cholmod(X, 20.0, nnz_budget(0.05, X.shape[1]))
    for a, b in zip(before, (X.indices, X.data, X.indptr)):
        assert np.array_equal(a, b)
    Xs = sp.csr_matrix(X, copy=True)
    Xs.sort_indices()
    assert np.array_equal(p, item_ordering(Xs, "colamd"))
    g = ldlt_cholmod(Xs, 20.0, nnz_budget(0.05, X.shape[1]))
    assert (f.L != g.L).nnz == 0 and np.array_equal(f.d, g.d)


@pytest.mark.parametrize("factorizer", ["icf", "cholmod"])
def test_column_scaled_fit_equals_fit_on_prescaled_input(medium_X, factorizer):
    """column_scaling=True must factorise exactly the Gram of the scaled matrix (the scaled
    product has unsorted rows, which once reached CHOLMOD's in-place sort)."""
    from sansa_gpu.factorize import icf_column_scaling, ldlt_cholmod

    m = SANSA(l2=20.0, density=0.05, factorizer=factorizer, column_scaling=True, refine_sweeps=0, device="cpu",
              ordering="colamd", min_cooccurrence=0).fit(medium_X)
    s = icf_column_scaling(medium_X)
    Xs = sp.csr_matrix(medium_X @ sp.diags((1.0 / s).astype(np.float32)), dtype=np.float32)
    Xs.sort_indices()
    budget = nnz_budget(0.05, medium_X.shape[1])
    f = ldlt_icf(Xs, 20.0, budget) if factorizer == "icf" else ldlt_cholmod(Xs, 20.0, budget)
    assert m.stats_["nnz_L"] == f.L.nnz
    from sansa_gpu import cpu
    from sansa_gpu.cpu.refine import initial_inverse

    Wt, Z = cpu.assemble_weights(initial_inverse(f.L), f.d, f.p)
    np.testing.assert_allclose(m.weights_[0].toarray(), Wt.toarray(), rtol=1e-5, atol=1e-7)


def test_pruning_threshold_speaks_of_unscaled_cooccurrences(medium_X):
    """With column scaling the Gram's values are no longer counts; the pruning test must still be
    on counts (a threshold of 2 once dropped every scaled entry and left a diagonal model)."""
    from sansa_gpu.factorize import icf_column_scaling

    s = icf_column_scaling(medium_X)
    Xs = sp.csr_matrix(medium_X @ sp.diags((1.0 / s).astype(np.float32)), dtype=np.float32)
    Xs.sort_indices()
    p = np.random.default_rng(0).permutation(medium_X.shape[1])
    ref = gram_lower(medium_X, 0.0, p, min_cooccurrence=2.0)
    got = gram_lower(Xs, 0.0, p, min_cooccurrence=2.0, prune_scale=s)
    assert np.array_equal(ref.indptr, got.indptr) and np.array_equal(ref.indices, got.indices)
    assert got.nnz < gram_lower(Xs, 0.0, p).nnz  # something was pruned
    pruned = SANSA(l2=20.0, density=0.02, factorizer="icf", min_cooccurrence=2.0, device="cpu").fit(medium_X)
    full = SANSA(l2=20.0, density=0.02, factorizer="icf", device="cpu").fit(medium_X)
    assert pruned.stats_["nnz_L"] > 0.5 * full.stats_["nnz_L"]  # not a diagonal model


@pytest.mark.parametrize("block_slots", [1 << 25, 64])
def test_one_pass_gram_and_norms_match_dense_in_any_number_of_blocks(small_X, block_slots):
    """Gram and column norms come from one pass; building it in many small blocks changes nothing."""
    from sansa_gpu.cpu.gram import gram_lower_and_norms

    n = small_X.shape[1]
    p = np.random.default_rng(1).permutation(n)
    G = (small_X.T @ small_X).toarray().astype(np.float64)
    A, sq = gram_lower_and_norms(small_X, p, 0.0, None, None, block_slots)
    np.testing.assert_array_equal(A.toarray(), np.tril(G[p][:, p]))  # integer counts: exact
    np.testing.assert_allclose(np.sqrt(sq), np.linalg.norm(G, axis=0), rtol=1e-12)
    A1, sq1 = gram_lower_and_norms(small_X, p, 0.0, None, None, 1 << 25)
    assert np.array_equal(A.data, A1.data) and np.array_equal(sq, sq1)


@pytest.mark.parametrize("cap", [1, 4, 1000])
def test_gram_cap_keeps_the_largest_cooccurrences_per_column(small_X, cap):
    from sansa_gpu.cpu.gram import gram_lower_and_norms

    n = small_X.shape[1]
    p = np.random.default_rng(2).permutation(n)
    Gp = np.tril((small_X.T @ small_X).toarray().astype(np.float64)[p][:, p])
    A, sq_capped = gram_lower_and_norms(small_X, p, 2.0, None, cap, 97)
    _, sq = gram_lower_and_norms(small_X, p, 0.0)
    np.testing.assert_array_equal(sq_capped, sq)  # norms are of the full Gram, before any pruning
    Ad = A.toarray()
    for j in range(n):
        below = [i for i in range(j + 1, n) if Gp[i, j] >= 2.0]
        expected = sorted(sorted(below, key=lambda i: (-Gp[i, j], i))[:cap])
        assert list(np.flatnonzero(Ad[j + 1:, j]) + j + 1) == expected
        assert Ad[j, j] == Gp[j, j]
    assert np.all(np.diff(A.indptr) <= cap + 1)


def test_scaled_gram_equals_the_gram_of_the_scaled_matrix(medium_X):
    """The ICF's column scaling from the one-pass norms: the same matrix as the Gram of X with its
    columns divided by s (to float32 rounding of the scaled X), pruned on unscaled counts."""
    from sansa_gpu.factorize import icf_column_scaling
    from sansa_gpu.gram import scaled_gram

    n = medium_X.shape[1]
    p = np.random.default_rng(0).permutation(n)
    A, s = scaled_gram(medium_X, p, 2.0, column_scaling=True)
    np.testing.assert_allclose(s, icf_column_scaling(medium_X), rtol=1e-12)
    Xs = sp.csr_matrix(medium_X @ sp.diags((1.0 / s).astype(np.float32)), dtype=np.float32)
    Xs.sort_indices()
    ref = gram_lower(Xs, 0.0, p, min_cooccurrence=2.0, prune_scale=s)
    assert np.array_equal(A.indptr, ref.indptr) and np.array_equal(A.indices, ref.indices)
    np.testing.assert_allclose(A.data, ref.data, rtol=1e-6)


def test_max_gram_per_item_bounds_the_gram_and_is_named_when_memory_is_short(medium_X, monkeypatch):
    from sansa_gpu import memory
    from sansa_gpu import model as model_module

    m = SANSA(l2=20.0, density=0.02, max_gram_per_item=8, device="cpu").fit(medium_X)
    assert m.factorizer_ == "icf" and m.get_params()["max_gram_per_item"] == 8
    full = SANSA(l2=20.0, density=0.02, factorizer="icf", device="cpu").fit(medium_X)
    assert m.stats_["nnz_L"] <= full.stats_["nnz_L"]
    est = memory.estimate_memory(medium_X, 0.02, "icf", max_per_column=8)
    assert est["nnz_gram"] <= medium_X.shape[1] * 9
    with pytest.raises(ValueError, match="max_gram_per_item applies to factorizer='icf' only"):
        SANSA(factorizer="cholmod", max_gram_per_item=8).fit(medium_X)
    # a Gram that does not fit: the refusal names the settings that bound it, not the factoriser in use
    monkeypatch.setattr(model_module, "available_memory_bytes", lambda: 10_000, raising=False)
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 10_000)
    with pytest.raises(MemoryError, match=r"stage .* min_cooccurrence=2 .* max_gram_per_item=\d+") as info:
        SANSA(l2=20.0, density=0.001, factorizer="icf", min_cooccurrence=0).fit(medium_X)
    assert "factorizer='icf'" not in str(info.value)
    # the default already drops pairs seen once on 0/1 data: the refusal does not suggest it again
    with pytest.raises(MemoryError, match=r"stage .* max_gram_per_item=\d+") as info:
        SANSA(l2=20.0, density=0.001, factorizer="icf").fit(medium_X)
    assert "min_cooccurrence=2" not in str(info.value)
