"""GPU stages against their CPU twins.

The array-level glue of the GPU path (candidate cut, weight assembly) is written for NumPy and
CuPy alike, so it is checked here on the CPU; the kernels themselves are checked by the tests
marked ``gpu`` whenever a device is present.
"""

import numpy as np
import pytest

from sansa_gpu import SANSA, cpu
from sansa_gpu.cpu.refine import initial_inverse, sweep_candidates
from sansa_gpu.factorize import ldlt_cholmod, nnz_budget
from sansa_gpu.gpu.refine import cut_candidates
from sansa_gpu.weights import weights_from_inverse
from sansa_gpu.refine import refine_inverse


@pytest.fixture(scope="module")
def factor(medium_X):
    budget = nnz_budget(0.02, medium_X.shape[1])
    return ldlt_cholmod(medium_X, 20.0, budget), budget


def test_cut_candidates_in_any_order_matches_cpu_sweep(factor):
    f, budget = factor
    K0 = initial_inverse(f.L)
    expected, _ = cpu.refine_sweep(f.L, K0, budget)
    offsets, counts, rows, vals, _ = sweep_candidates(f.L, K0, budget)
    rng = np.random.default_rng(0)
    for j in range(f.n):  # the GPU kernel writes candidates in arbitrary order within a column
        s, c = offsets[j], counts[j]
        perm = rng.permutation(c)
        rows[s:s + c] = rows[s:s + c][perm]
        vals[s:s + c] = vals[s:s + c][perm]
    indptr, indices, data = cut_candidates(offsets, counts, rows, vals, f.n, budget)
    np.testing.assert_array_equal(indptr, expected.indptr)
    np.testing.assert_array_equal(indices, expected.indices)
    np.testing.assert_array_equal(data, expected.data)


def test_weights_match_dense_formula(factor):
    """W = K[:, argsort(p)], Z = D^{-1} W diag(-1 / diag(W^T D^{-1} W)), checked densely."""
    f, budget = factor
    K, _ = refine_inverse(f.L, budget, 1, cpu)
    Wt, Z = cpu.assemble_weights(K, f.d, f.p)
    W = K.toarray().astype(np.float64)[:, np.argsort(f.p)]
    Z0 = W / f.d[:, None]
    r = (W * Z0).sum(axis=0)
    np.testing.assert_array_equal(Wt.toarray(), W.T.astype(np.float32))
    np.testing.assert_allclose(Z.toarray(), Z0 * (-1.0 / r)[None, :], rtol=1e-5, atol=1e-7)
    # the array-level function is what the GPU runs (on CuPy arrays)
    w_indptr, w_indices, w_data, z, col = weights_from_inverse(K.indptr.astype(np.int64), K.indices, K.data, f.d, f.p)
    np.testing.assert_array_equal(w_indptr, Wt.indptr)


@pytest.mark.gpu
def test_gpu_sweep_matches_cpu(factor):
    from sansa_gpu import gpu

    f, budget = factor
    K0 = initial_inverse(f.L)
    Kc, rc = cpu.refine_sweep(f.L, K0, budget)
    Kg, rg = gpu.refine_sweep(f.L, K0, budget)
    Kg = gpu.to_host(Kg)
    assert Kg.nnz == Kc.nnz == budget
    np.testing.assert_allclose(rg, rc, rtol=1e-6, atol=1e-9)
    same = (Kg.indices.size == Kc.indices.size) and np.array_equal(Kg.indptr, Kc.indptr) and np.array_equal(Kg.indices, Kc.indices)
    if not same:  # allowed only where magnitudes tie within rounding at the cut
        diff = abs(Kg - Kc)
        assert diff.max() < 1e-3 * np.abs(Kc.data).max()
    else:
        np.testing.assert_allclose(Kg.data, Kc.data, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gpu.column_residual_norms(f.L, Kc), cpu.column_residual_norms(f.L, Kc), rtol=1e-6, atol=1e-9)


@pytest.mark.gpu
def test_gpu_refine_loss_history_matches_cpu(factor):
    from sansa_gpu import gpu

    f, budget = factor
    _, hc = refine_inverse(f.L, budget, 3, cpu)
    _, hg = refine_inverse(f.L, budget, 3, gpu)
    for a, b in zip(hc, hg):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["nnz"] == a["nnz"]


@pytest.mark.gpu
def test_gpu_fit_recommend_matches_cpu(medium_X):
    mc = SANSA(l2=20.0, density=0.02, refine_sweeps=2, device="cpu").fit(medium_X)
    mg = SANSA(l2=20.0, density=0.02, refine_sweeps=2, device="gpu").fit(medium_X)
    assert mg.device_ == "gpu"
    ic, sc = mc.recommend(medium_X, k=20)
    ig, sg = mg.recommend(medium_X, k=20)
    np.testing.assert_allclose(sg, sc, rtol=1e-3, atol=1e-5)
    assert (ig == ic).mean() > 0.99


def test_out_of_memory_in_a_gpu_sweep_falls_back_to_cpu_with_warning(factor, caplog):
    """A backend that raises GPUOutOfMemory hands the loop to the CPU reference; same result."""
    import logging
    import types

    from sansa_gpu.backend import GPUOutOfMemory

    f, budget = factor

    def refine_sweep(L, K, budget, tol):
        raise GPUOutOfMemory("simulated")

    fake = types.SimpleNamespace(to_device=lambda M: M, to_host=lambda M: M, refine_sweep=refine_sweep,
                                 column_residual_norms=cpu.column_residual_norms)
    with caplog.at_level(logging.WARNING, logger="sansa_gpu"):
        K_fb, h_fb = refine_inverse(f.L, budget, 2, fake)
    K_ref, h_ref = refine_inverse(f.L, budget, 2, cpu)
    assert "continuing on the CPU" in caplog.text
    assert (K_fb != K_ref).nnz == 0
    assert [h["loss"] for h in h_fb] == [h["loss"] for h in h_ref]


def _score_topk_warp_reference(X, Wt, Z, k):
    """Python transcription of kernels/score_topk.cu's steps (own items, h in CPU order, reached
    items, scores gathered over Z's columns in ascending latent order, k rounds of arg-best),
    with each operation rounded as the kernel's intrinsics round it."""
    Zt = Z.T.tocsr()
    Zt.sort_indices()
    n_users = X.shape[0]
    ids = np.full((n_users, k), -1, dtype=np.int64)
    scores = np.full((n_users, k), -np.inf, dtype=np.float32)
    for u in range(n_users):
        own = set(X.indices[X.indptr[u]:X.indptr[u + 1]].tolist())
        h, tlist = {}, []
        for p in range(X.indptr[u], X.indptr[u + 1]):
            x = np.float64(X.data[p])
            for q in range(Wt.indptr[X.indices[p]], Wt.indptr[X.indices[p] + 1]):
                t = int(Wt.indices[q])
                if t not in h:
                    h[t] = np.float64(0.0)
                    tlist.append(t)
                h[t] = np.float64(h[t] + np.float64(x * np.float64(Wt.data[q])))
        reached = []
        seen = set()
        for t in tlist:
            if np.float32(h[t]) == 0:
                continue
            for c in Z.indices[Z.indptr[t]:Z.indptr[t + 1]].tolist():
                if c not in seen and c not in own:
                    seen.add(c)
                    reached.append(c)
        s = {}
        for c in reached:
            acc = np.float32(0.0)
            for q in range(Zt.indptr[c], Zt.indptr[c + 1]):
                t = int(Zt.indices[q])
                if t in h and np.float32(h[t]) != 0:
                    acc = np.float32(acc + np.float32(np.float32(h[t]) * Zt.data[q]))
            s[c] = acc
        order = sorted(reached, key=lambda c: (-s[c], c))[:k]
        ids[u, :len(order)] = order
        scores[u, :len(order)] = [s[c] for c in order]
    return ids, scores


def test_score_topk_kernel_algorithm_matches_cpu_bit_for_bit(medium_X):
    """The kernel gathers each score over Z's column instead of scattering Z's rows: same terms,
    same ascending-t order, so the same float32 sums as the CPU path (ties and padding included)."""
    m = SANSA(l2=20.0, density=0.01, refine_sweeps=1, device="cpu").fit(medium_X)
    X = medium_X[:40].copy()
    X.data = X.data * np.linspace(0.5, 2.0, X.nnz, dtype=np.float32)  # weighted rows exercise the float64 h
    ids_c, sc_c = cpu.inference.recommend_sparse(X, *m.weights_, 30)
    ids_r, sc_r = _score_topk_warp_reference(X, *m.weights_, 30)
    np.testing.assert_array_equal(ids_r, ids_c)
    np.testing.assert_array_equal(sc_r, sc_c)


@pytest.mark.gpu
def test_gpu_recommend_identical_to_cpu_on_the_same_weights(medium_X):
    import scipy.sparse as sp

    from sansa_gpu import gpu

    m = SANSA(l2=20.0, density=0.01, refine_sweeps=1, device="cpu").fit(medium_X)
    X = sp.vstack([medium_X, sp.csr_matrix((2, medium_X.shape[1]), dtype=np.float32)]).tocsr()  # + empty users
    for k in (1, 20, medium_X.shape[1] + 3):  # k beyond the catalogue: padding
        ic, sc = cpu.inference.recommend_sparse(X, *m.weights_, k)
        ig, sg = gpu.inference.recommend_sparse(X, *m.weights_, k)
        np.testing.assert_array_equal(ig, ic)
        np.testing.assert_array_equal(sg, sc)
