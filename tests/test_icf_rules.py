"""The incomplete Cholesky's breakdown rules and its working fill (issue 25)."""

import numpy as np
import pytest
import scipy.sparse as sp

from sansa_gpu import SANSA
from sansa_gpu.factorize import incomplete_cholesky, sparsify_cholesky_factor
from sansa_gpu.gram import gram_lower
from sansa_gpu.synthetic import synthetic_interactions


@pytest.fixture(scope="module")
def scaled_gram():
    """The lower triangle of a column-scaled Gram of dense synthetic data, where a tight budget breaks
    the plain incomplete Cholesky down."""
    X = synthetic_interactions(1500, 300, 40, n_communities=4, seed=2)
    A = gram_lower(X, 0.0)
    d = np.sqrt(A.diagonal())
    d[d == 0] = 1
    S = sp.diags(1 / d)
    As = sp.tril(S @ (A + sp.tril(A, -1).T) @ S).tocsc()
    As.sort_indices()
    return As


def _full(A_lower, l2):
    return (A_lower + sp.tril(A_lower, -1).T).toarray() + l2 * np.eye(A_lower.shape[0])


def test_the_shift_rule_restarts_where_compensation_does_not_break_down(scaled_gram):
    n = scaled_gram.shape[0]
    shifted = incomplete_cholesky(scaled_gram, 0.5, n * 5)
    assert shifted.restarts > 0 and shifted.shift > 0.5  # the case the rules are for
    comp = incomplete_cholesky(scaled_gram, 0.5, n * 5, breakdown_rule="compensate")
    assert comp.restarts == 0 and comp.shift == 0.5 and comp.L.nnz <= n * 5
    # L Lᵀ = A + l2 I - R + D with D - R positive semidefinite (the dropped entries, compensated)
    E = (comp.L @ comp.L.T).toarray() - _full(scaled_gram, 0.5)
    assert np.linalg.eigvalsh(E).min() > -1e-8 * np.abs(E).max()


def test_the_local_rule_replaces_the_broken_pivots_only(scaled_gram):
    n = scaled_gram.shape[0]
    res = incomplete_cholesky(scaled_gram, 0.5, n * 3, breakdown_rule="local")
    assert res.restarts == 0 and res.local_fixes > 0 and res.shift == 0.5
    plain = incomplete_cholesky(scaled_gram, 0.5, n * 3)
    first = plain.breakdowns[0]["pivot"]
    # before the first breakdown both factorisations are the same computation
    np.testing.assert_array_equal(res.L[:, :first].toarray(), incomplete_cholesky(
        scaled_gram, 0.5, n * 3, breakdown_rule="local").L[:, :first].toarray())
    with pytest.raises(ValueError, match="breakdown_rule must be one of"):
        incomplete_cholesky(scaled_gram, 0.5, n * 3, breakdown_rule="nope")


def test_a_full_working_fill_cuts_the_exact_factor_as_cholmod_does():
    """icf_fill large enough that nothing is dropped while factorising: the factor is the exact one cut
    to the budget, i.e. what the CHOLMOD path computes from the same (ordered, scaled) Gram."""
    from sansa_gpu.factorize import ldlt_icf

    X = synthetic_interactions(600, 60, 12, n_communities=3, seed=4)
    n = X.shape[1]
    budget = n * 6
    fac = ldlt_icf(X, 3.0, budget, ordering="popularity", column_scaling=True, working_fill=n)
    from sansa_gpu.gram import scaled_gram

    A, _ = scaled_gram(X, fac.p, 0.0, True, None)
    exact = sp.csc_matrix(np.linalg.cholesky(_full(A, 3.0)))
    exact.eliminate_zeros()
    L, d = sparsify_cholesky_factor(exact, budget)
    np.testing.assert_allclose(fac.d, d, rtol=1e-9)
    np.testing.assert_allclose(fac.L.toarray(), L.toarray(), rtol=1e-5, atol=1e-6)


def test_model_parameters_are_checked_at_fit(small_X):
    with pytest.raises(ValueError, match="icf_fill must be None or a number >= 1"):
        SANSA(icf_fill=0.5).fit(small_X)
    with pytest.raises(ValueError, match="icf_intermediate_fill must be None or a number >= 0"):
        SANSA(icf_intermediate_fill=-1.0).fit(small_X)
    plain = SANSA(l2=5.0, density=0.1, factorizer="icf", refine_sweeps=1, device="cpu").fit(small_X)
    wide = SANSA(l2=5.0, density=0.1, factorizer="icf", refine_sweeps=1, device="cpu", icf_fill=3.0).fit(small_X)
    assert wide.stats_["nnz_L"] <= wide.stats_["budget"] == plain.stats_["budget"]  # cut back to the budget
    assert wide.get_params()["icf_fill"] == 3.0 and plain.get_params()["icf_fill"] is None
    assert (wide.icf_fill_, plain.icf_fill_) == (3.0, 1.0)  # 8 per item: the plain ICF by default


def test_the_icf_fills_resolve_from_the_nonzeros_per_item():
    """From ICF_FILL_FROM_NNZ_PER_ITEM nonzeros per item the ICF keeps a doubled working budget and an
    intermediate fill of one budget by default; each can be set on its own; a fit records what it used and
    computes exactly what the explicit values compute."""
    from sansa_gpu import defaults

    n, at = 10_000, defaults.ICF_FILL_FROM_NNZ_PER_ITEM
    wide = (defaults.DENSE_ICF_FILL, defaults.DENSE_ICF_INTERMEDIATE_FILL)
    assert wide == (2.0, 1.0)
    assert SANSA().icf_fills_for(n, (at - 1) / n) == (1.0, 0.0)
    assert SANSA().icf_fills_for(n, at / n) == wide
    assert SANSA().icf_fills_for(n, 1.0) == (1.0, 0.0)  # density 1: nothing is dropped
    assert SANSA().icf_fills_for(n, 256 / n, "cholmod") == (1.0, 0.0)
    assert SANSA().icf_fills_for(n, 256 / n, "icf", 2.0) == (1.0, 0.0)  # a pruned Gram: the plain ICF
    assert SANSA(icf_fill=2.0).icf_fills_for(n, 256 / n, "icf", 2.0) == (2.0, 0.0)
    assert SANSA().icf_fills_for(n, 256 / n, "icf", 0.0, column_scaling=False) == (1.0, 0.0)  # EASE's own Gram
    assert SANSA(icf_fill=3.0, icf_intermediate_fill=2.0).icf_fills_for(n, 256 / n, "cholmod") == (1.0, 0.0)
    # the dense-data default density (64 / n) resolves to the pair at every catalogue size, 64 / n * n rounding
    # below 64 included (n = 98, 103, 10015, ...)
    for m in (98, 103, 10015, *range(65, 20_000, 7)):
        assert SANSA().icf_fills_for(m, SANSA().density_for(m, defaults.DENSE_DATA_ITEMS_PER_USER)) == wide, m
        assert SANSA().icf_fills_for(m, (at - 1) / m) == (1.0, 0.0), m
    assert SANSA(icf_fill=3.0).icf_fills_for(n, 256 / n) == (3.0, 1.0)
    assert SANSA(icf_intermediate_fill=0).icf_fills_for(n, 256 / n) == (2.0, 0.0)
    assert SANSA(icf_fill=1.5, icf_intermediate_fill=2).icf_fills_for(n, 4 / n) == (1.5, 2.0)

    # 400 items with a dense Gram: the plain ICF drops entries at 64 per item
    X = synthetic_interactions(n_users=1500, n_items=400, mean_items_per_user=40, n_communities=4, seed=5)
    kw = dict(l2=5.0, density=at / X.shape[1], factorizer="icf", refine_sweeps=1, device="cpu", min_cooccurrence=0)
    auto = SANSA(**kw).fit(X)
    pruned = SANSA(**{**kw, "min_cooccurrence": None}).fit(X)  # 0/1 data: pairs seen once dropped, the plain ICF
    assert pruned.min_cooccurrence_ == 2.0 and (pruned.icf_fill_, pruned.icf_intermediate_fill_) == (1.0, 0.0)
    explicit = SANSA(**kw, icf_fill=2.0, icf_intermediate_fill=1.0).fit(X)
    plain = SANSA(**kw, icf_fill=1.0, icf_intermediate_fill=0.0).fit(X)
    assert (auto.icf_fill_, auto.icf_intermediate_fill_) == wide
    assert (auto.stats_["icf_fill"], auto.stats_["icf_intermediate_fill"]) == wide
    assert auto.get_params()["icf_fill"] is None and auto.get_params()["icf_intermediate_fill"] is None
    for a, b in zip(auto.weights_, explicit.weights_):
        assert a.shape == b.shape and (a != b).nnz == 0
    assert any((a != b).nnz for a, b in zip(auto.weights_, plain.weights_))  # the fills change the factor here
    assert (plain.icf_fill_, plain.icf_intermediate_fill_) == (1.0, 0.0)


def test_the_memory_estimate_counts_the_wider_working_factor(small_X, monkeypatch):
    """icf_fill keeps up to icf_fill x the budget while the ICF runs: the preflight must count it, or a fit
    it lets through can run out of memory."""
    est = {f: SANSA(l2=5.0, density=0.05, factorizer="icf", device="cpu", icf_fill=f).estimate_memory(small_X)
           for f in (1.0, 4.0)}
    budget = est[1.0]["budget"]
    assert est[4.0]["budget"] == budget
    assert est[4.0]["factorize"] - est[1.0]["factorize"] >= 3 * budget * 12  # three budgets more of L's slots
    assert est[4.0]["gram"] == est[1.0]["gram"] and est[4.0]["refine"] == est[1.0]["refine"]
    # and fit's preflight asks for that estimate
    from sansa_gpu import memory

    asked = []

    def bound(X, density, factorizer, max_per_column=None, working_fill=1.0, intermediate_fill=0.0):
        asked.append(working_fill)
        return dict.fromkeys(("peak", "gram", "factorize", "refine", "weights"), 0)

    monkeypatch.setattr(memory, "memory_upper_bound", bound)
    SANSA(l2=5.0, density=0.05, factorizer="icf", device="cpu", icf_fill=4.0, refine_sweeps=1).fit(small_X)
    assert asked == [4.0]


@pytest.fixture(scope="module")
def unscaled_gram():
    """The lower triangle of the unscaled Gram of dense synthetic data (60 items per user over 300 items):
    the plain incomplete Cholesky at 16 per item breaks down there again and again."""
    X = synthetic_interactions(n_users=2000, n_items=300, mean_items_per_user=60, n_communities=5, seed=0)
    A = gram_lower(X, 0.0).tocsc()
    A.sort_indices()
    return A


def test_intermediate_fill_is_exact_at_full_budget_and_stops_the_breakdowns(unscaled_gram):
    A = unscaled_gram
    n = A.shape[0]
    full = n * (n + 1) // 2
    exact = incomplete_cholesky(A, 10.0, full, intermediate_fill=2.0)
    L = exact.L.toarray()
    np.testing.assert_allclose(L @ L.T, _full(A, 10.0), rtol=0, atol=1e-9 * np.abs(_full(A, 10.0)).max())
    plain = incomplete_cholesky(A, 100.0, 16 * n)
    wide = incomplete_cholesky(A, 100.0, 16 * n, intermediate_fill=32.0)
    assert plain.restarts >= 10 and plain.shift > 4 * 100.0  # the plain factor regularises far more than asked
    assert wide.restarts == 0 and wide.shift == 100.0 and wide.L.nnz <= 16 * n  # R is discarded: L keeps the budget
    M = _full(A, 100.0)
    res = [np.linalg.norm(r.L.toarray() @ r.L.toarray().T - M) / np.linalg.norm(M) for r in (plain, wide)]
    assert res[1] < 0.5 * res[0], res
    # some intermediate fill, less breakdown: the shift needed falls as the intermediate fill grows
    mid = incomplete_cholesky(A, 100.0, 16 * n, intermediate_fill=8.0)
    assert wide.shift <= mid.shift <= plain.shift and mid.restarts < plain.restarts
    with pytest.raises(ValueError, match="intermediate_fill applies with breakdown_rule='shift' only"):
        incomplete_cholesky(A, 100.0, 16 * n, intermediate_fill=2.0, breakdown_rule="compensate")
    with pytest.raises(ValueError, match="intermediate_fill must be a finite number >= 0"):
        incomplete_cholesky(A, 100.0, 16 * n, intermediate_fill=-1.0)


def test_the_estimator_takes_the_intermediate_fill_and_the_preflight_counts_it(small_X):
    with pytest.raises(ValueError, match="icf_intermediate_fill must be None or a number >= 0"):
        SANSA(icf_intermediate_fill=-1).fit(small_X)
    kw = dict(l2=5.0, density=0.05, factorizer="icf", column_scaling=False, device="cpu", min_cooccurrence=0)
    est = {f: SANSA(**kw, icf_intermediate_fill=f).estimate_memory(small_X) for f in (0.0, 4.0)}
    assert est[4.0]["factorize"] - est[0.0]["factorize"] >= 4 * est[0.0]["budget"] * 12
    plain = SANSA(**kw, refine_sweeps=1).fit(small_X)
    wide = SANSA(**kw, refine_sweeps=1, icf_intermediate_fill=4.0).fit(small_X)
    assert wide.stats_["nnz_L"] <= wide.stats_["budget"] == plain.stats_["budget"]
    assert wide.stats_["icf_restarts"] <= plain.stats_["icf_restarts"]
    assert wide.get_params()["icf_intermediate_fill"] == 4.0


def test_a_refused_fit_at_the_factorisation_names_the_plain_icf_when_the_fills_are_wider():
    """The pair (from 64 per item) keeps up to twice the budget and an intermediate fill while it factorises: when
    that stage does not fit, the refusal names the plain ICF's settings before a lower density."""
    from sansa_gpu import defaults

    X = synthetic_interactions(n_users=1500, n_items=400, mean_items_per_user=40, n_communities=4, seed=5)
    kw = dict(l2=5.0, density=defaults.ICF_FILL_FROM_NNZ_PER_ITEM / X.shape[1], factorizer="icf", device="cpu",
              min_cooccurrence=0)
    est = {"gram": 1, "factorize": 10, "refine": 1, "weights": 1, "peak": 12, "budget": 100}
    wide, plain = SANSA(**kw), SANSA(**kw, icf_fill=1.0, icf_intermediate_fill=0.0)
    said = wide._memory_advice(est, 5, wide._fit_plan(X))
    assert "icf_fill=1, icf_intermediate_fill=0" in said and "intermediate fill of 1x" in said
    assert "icf_fill=1" not in plain._memory_advice(est, 5, plain._fit_plan(X))
