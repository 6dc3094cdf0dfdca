"""The CPU refinement reference: budgets, loss behaviour, caps, residuals."""

import numpy as np
import scipy.sparse as sp

from sansa_gpu.cpu.refine import column_caps, column_residual_norms, initial_inverse, refine_sweep
from sansa_gpu.factorize import LDLFactor, ldlt_cholmod, nnz_budget
from sansa_gpu.refine import refine_inverse
from sansa_gpu import cpu


def _factor(X, density, l2=20.0):
    budget = nnz_budget(density, X.shape[1])
    return ldlt_cholmod(X, l2, budget), budget


def test_factor_is_valid_and_meets_budget_exactly(medium_X):
    f, budget = _factor(medium_X, 0.02)
    f.check()
    assert f.L.nnz == budget
    assert f.L.dtype == np.float32
    # at full density the factor reproduces A[p][:, p]
    f_full, _ = _factor(medium_X, 1.0)
    A = (medium_X.T @ medium_X).toarray().astype(np.float64) + 20.0 * np.eye(medium_X.shape[1])
    Ap = A[f_full.p][:, f_full.p]
    L = f_full.L.toarray().astype(np.float64)
    np.testing.assert_allclose(L @ np.diag(f_full.d) @ L.T, Ap, rtol=1e-4, atol=1e-3)


def test_loss_is_monotone_over_sweeps_and_budget_exact(medium_X):
    f, budget = _factor(medium_X, 0.02)
    K, hist = refine_inverse(f.L, budget, 4, cpu)
    losses = [h["loss"] for h in hist]
    assert len(losses) == 5
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.5 * losses[0]
    assert K.nnz == budget
    assert all(h["nnz"] == budget for h in hist)
    # lower triangular, diagonal kept, sorted rows
    K.sort_indices()
    assert sp.triu(K, 1).nnz == 0
    assert np.array_equal(K.indices[K.indptr[:-1]], np.arange(K.shape[0]))


def test_residual_norms_match_dense(medium_X):
    f, budget = _factor(medium_X, 0.02)
    K, _ = refine_inverse(f.L, budget, 1, cpu)
    res = column_residual_norms(f.L, K)
    dense = np.eye(K.shape[0]) - f.L.toarray().astype(np.float64) @ K.toarray().astype(np.float64)
    np.testing.assert_allclose(res, np.linalg.norm(dense, axis=0), rtol=1e-6, atol=1e-9)


def test_sweep_matches_dense_minimal_residual_step_when_nothing_is_cut(small_X):
    f, _ = _factor(small_X, 1.0)
    n = f.n
    K0 = initial_inverse(f.L)
    big = n * (n + 1) // 2
    K1, res = refine_sweep(f.L, K0, big)
    Ld = f.L.toarray().astype(np.float64)
    Kd = K0.toarray().astype(np.float64)
    R = np.eye(n) - Ld @ Kd
    Q = Ld @ R
    qq = (Q * Q).sum(0)
    alpha = np.where(qq > 0, (R * Q).sum(0) / np.where(qq > 0, qq, 1.0), 0.0)
    expect = Kd + R * alpha[None, :]
    cap = column_caps(K0, big)
    # columns whose candidate count fits the cap are exact minimal-residual updates
    full = np.count_nonzero(np.abs(expect) > 0, axis=0) <= cap
    assert full.sum() > n // 2
    np.testing.assert_allclose(K1.toarray()[:, full], expect[:, full], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res, np.linalg.norm(R, axis=0), rtol=1e-6, atol=1e-9)


def test_column_caps_bound_and_double():
    K = sp.csc_matrix(np.tril(np.ones((6, 6), dtype=np.float32)))
    caps = column_caps(K, budget=6)
    assert caps.tolist() == [6, 5, 4, 3, 2, 1]
    K = sp.csc_matrix(np.eye(10, dtype=np.float32))
    caps = column_caps(K, budget=30)
    assert caps[0] == 6 and caps[-1] == 1


def test_converged_column_is_left_unchanged():
    # L = I: K0 = I is exact, every residual is 0, the sweep must keep K
    L = sp.csc_matrix(np.eye(5, dtype=np.float32))
    K0 = initial_inverse(L)
    K1, res = refine_sweep(L, K0, 5)
    assert np.all(res == 0)
    np.testing.assert_array_equal(K1.toarray(), np.eye(5))


def test_ldl_factor_check_rejects_bad_factor():
    L = sp.csc_matrix(np.eye(3, dtype=np.float32))
    bad = LDLFactor(L=L, d=np.array([1.0, -1.0, 1.0]), p=np.arange(3))
    try:
        bad.check()
    except ValueError as e:
        assert "positive" in str(e)
    else:
        raise AssertionError("negative D accepted")


def test_refine_tol_leaves_exactly_the_columns_within_tolerance(medium_X):
    """Columns with 0 < ||r_j|| <= tol stay as they are, columns with ||r_j|| > tol change (nothing
    is cut: the budget holds every candidate)."""
    f, _ = _factor(medium_X, 0.02)
    n = f.n
    K0 = initial_inverse(f.L)
    res = column_residual_norms(f.L, K0)
    tol = float(np.median(res[res > 0]))
    within, above = (res > 0) & (res <= tol), res > tol
    assert within.sum() > 10 and above.sum() > 10
    K1, res1 = refine_sweep(f.L, K0, n * (n + 1) // 2, tol)
    np.testing.assert_array_equal(res1, res)
    D0, D1 = K0.toarray(), K1.toarray()
    unchanged = np.all(D0 == D1, axis=0)
    assert unchanged[within].all()
    assert not unchanged[above].any()


def test_refine_is_bit_identical_with_one_and_two_threads(medium_X):
    """Each chunk of columns owns its scratch: a scratch shared between threads (a race) makes 2-thread
    sweeps differ from the 1-thread one. Races are timing-dependent, so the 2-thread sweep is repeated
    (with the accumulator hoisted out of the parallel loop: failed 5 of 5 pytest runs; one 2-thread sweep: 2 of 6)."""
    import numba

    f, budget = _factor(medium_X, 0.05)
    K0 = initial_inverse(f.L)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        K1, r1 = refine_sweep(f.L, K0, budget)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        runs = [refine_sweep(f.L, K0, budget) for _ in range(8)]
    finally:
        numba.set_num_threads(before)
    for K2, r2 in runs:
        assert np.array_equal(K1.indptr, K2.indptr) and np.array_equal(K1.indices, K2.indices)
        assert np.array_equal(K1.data.view(np.uint32), K2.data.view(np.uint32)) and np.array_equal(r1, r2)
