"""GPU stages against their CPU twins.

Tests marked ``gpu`` take the ``gpu_device`` fixture: they run the real glue of ``sansa_gpu/gpu``
and the real ``kernels/*.cu`` on the CPU executor (checked build: bounds and race checks) in
every CI run, and on the CUDA device as well when one answers. No test here needs CHOLMOD (the
device has no scikit-sparse): factors come from the ICF.
"""

import copy
import gc
import logging
import weakref

import numpy as np
import pytest
import scipy.sparse as sp

from sansa_gpu import SANSA, cpu, gpu
from sansa_gpu.cpu.refine import initial_inverse, sweep_candidates
from sansa_gpu.factorize import ldlt_icf, nnz_budget
from sansa_gpu.gpu.refine import cut_candidates
from sansa_gpu.refine import refine_inverse
from sansa_gpu.scoring_cache import ScoringCache
from sansa_gpu.weights import weights_from_inverse

PARAMS = dict(l2=20.0, density=0.02, refine_sweeps=2, factorizer="icf")


@pytest.fixture(scope="module")
def factor(medium_X):
    budget = nnz_budget(0.02, medium_X.shape[1])
    return ldlt_icf(medium_X, 20.0, budget, 0.0, "popularity"), budget


@pytest.fixture(scope="module")
def cpu_model(medium_X):
    return SANSA(**PARAMS, device="cpu").fit(medium_X)


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
    # the array-level function the GPU runs, against the dense formula (not against its CPU wrapper)
    w_indptr, w_indices, w_data, z, col = weights_from_inverse(K.indptr.astype(np.int64), K.indices, K.data, f.d, f.p)
    Wt_dense = sp.csr_matrix(W.T.astype(np.float32))
    np.testing.assert_array_equal(w_indptr, Wt_dense.indptr)
    np.testing.assert_array_equal(w_indices, Wt_dense.indices)
    np.testing.assert_array_equal(w_data, Wt_dense.data)
    Z_dense = Z0 * (-1.0 / r)[None, :]
    np.testing.assert_allclose(z, Z_dense[w_indices, col], rtol=1e-5, atol=1e-7)


def _assert_same_factor(Kg, Kc):
    """Same selected entries (unless magnitudes tie within rounding at the cut), values to rounding."""
    assert Kg.nnz == Kc.nnz
    if np.array_equal(Kg.indptr, Kc.indptr) and np.array_equal(Kg.indices, Kc.indices):
        np.testing.assert_allclose(Kg.data, Kc.data, rtol=1e-5, atol=1e-7)
    else:
        assert abs(Kg - Kc).max() < 1e-3 * np.abs(Kc.data).max()


@pytest.mark.gpu
def test_gpu_sweep_matches_cpu(factor, gpu_device):
    f, budget = factor
    K0 = initial_inverse(f.L)
    Kc, rc = cpu.refine_sweep(f.L, K0, budget)
    Kg, rg = gpu.refine_sweep(f.L, K0, budget)
    Kg = gpu.to_host(Kg)
    assert Kg.nnz == Kc.nnz == budget
    np.testing.assert_allclose(rg, rc, rtol=1e-6, atol=1e-9)
    _assert_same_factor(Kg, Kc)
    np.testing.assert_allclose(gpu.column_residual_norms(f.L, Kc), cpu.column_residual_norms(f.L, Kc), rtol=1e-6, atol=1e-9)


@pytest.mark.gpu
def test_gpu_consecutive_sweeps_match_cpu(factor, gpu_device):
    """Several sweeps on the same device scratch: the second sweep once ran on stale row stamps
    (loss 40x the CPU's); the loss history and the final K must match the CPU twin."""
    f, budget = factor
    Kc, hc = refine_inverse(f.L, budget, 4, cpu)
    Kg, hg = refine_inverse(f.L, budget, 4, gpu)
    for a, b in zip(hc, hg):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["nnz"] == a["nnz"]
    assert [h["device"] for h in hg] == ["gpu"] * 5
    _assert_same_factor(Kg, Kc)


@pytest.mark.gpu
def test_gpu_refine_tol_leaves_converged_columns(factor, gpu_device):
    """With a tolerance above some column residuals, exactly those columns keep their entries."""
    f, budget = factor
    K0 = initial_inverse(f.L)
    res = cpu.column_residual_norms(f.L, K0)
    tol = float(np.median(res[res > 0]))
    Kc, _ = cpu.refine_sweep(f.L, K0, budget, tol)
    Kg, _ = gpu.refine_sweep(f.L, K0, budget, tol)
    _assert_same_factor(gpu.to_host(Kg), Kc)


@pytest.mark.gpu
def test_gpu_fit_recommend_matches_cpu(medium_X, cpu_model, gpu_device):
    mg = SANSA(**PARAMS, device="gpu").fit(medium_X)
    assert mg.device_ == "gpu"
    # only the ordering and the factorisation on the CPU
    assert mg.stats_["stage_devices"] == {"ordering": "cpu", "gram": "gpu", "factorize": "cpu", "refine": "gpu",
                                          "weights": "gpu"}
    for a, b in zip(cpu_model.history_, mg.history_):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
    ic, sc = cpu_model.recommend(medium_X[:300], k=20)
    stats = copy.deepcopy(mg.stats_)
    ig, sg = mg.recommend(medium_X[:300], k=20)
    assert {"gpu_weights", "gpu_scratch"} <= set(mg._scoring_cache.names())  # scored on the device
    np.testing.assert_allclose(sg, sc, rtol=1e-3, atol=1e-5)
    assert (ig == ic).mean() > 0.99
    mg.score(medium_X[:5])
    assert mg.stats_ == stats  # scoring does not modify the model


@pytest.mark.gpu
def test_gpu_recommend_identical_to_cpu_on_the_same_weights(medium_X, cpu_model, gpu_device):
    """Bit-identical ids and scores (ties and padding included), users with no items, weighted
    rows, k beyond the catalogue, and repeated calls on the same cached device state."""
    X = medium_X[:150].copy()
    X.data = X.data * np.linspace(0.5, 2.0, X.nnz, dtype=np.float32)  # weighted rows exercise the float64 h
    X = sp.vstack([X, sp.csr_matrix((2, X.shape[1]), dtype=np.float32)]).tocsr()  # + users with no items
    Wt, Z = cpu_model.weights_
    for k in (1, 20, X.shape[1] + 3, 20):  # k beyond the catalogue: padding; 20 again on the cache
        ic, sc = cpu.recommend_sparse(X, Wt, Z, k, plan="factored")
        ig, sg = gpu.recommend_sparse(X, Wt, Z, k)
        np.testing.assert_array_equal(ig, ic)
        np.testing.assert_array_equal(sg, sc)
    assert np.all(ig[-2:] == -1) and np.all(np.isneginf(sg[-2:]))


def test_gpu_recommend_with_scratch_for_one_block_of_warps(medium_X, cpu_model):
    """Free memory for a single block of 8 warps: every warp serves many users in turn."""
    from sansa_gpu.gpu.inference import WARPS_PER_BLOCK, launch_shape, scratch_bytes_per_warp
    from sansa_gpu._testing.cuda_executor import ExecutorDevice

    Wt, Z = cpu_model.weights_
    need = WARPS_PER_BLOCK * scratch_bytes_per_warp(Wt.shape[1], Z.shape[1])
    with ExecutorDevice(free_bytes=int(need / 0.25) + 1, checked=True):
        assert launch_shape(Wt.shape[1], Z.shape[1]) == (1, WARPS_PER_BLOCK)
        ig, sg = gpu.recommend_sparse(medium_X[:100], Wt, Z, 10)
    ic, sc = cpu.recommend_sparse(medium_X[:100], Wt, Z, 10, plan="factored")
    np.testing.assert_array_equal(ig, ic)
    np.testing.assert_array_equal(sg, sc)


@pytest.mark.gpu
def test_gpu_odd_shapes(gpu_device):
    """A one-item catalogue, items nobody has (empty columns), k above the reachable items."""
    X1 = sp.csr_matrix(np.ones((5, 1), dtype=np.float32))
    m = SANSA(l2=1.0, density=1.0, refine_sweeps=2, factorizer="icf", device="gpu").fit(X1)
    ids, scores = m.recommend(X1, k=3)
    assert np.all(ids == -1) and np.all(np.isneginf(scores))  # the only item is the user's own
    rng = np.random.default_rng(1)
    X = sp.random(60, 30, density=0.2, random_state=rng, format="csr", dtype=np.float32)
    X.data[:] = 1.0
    X = X[:, :20]
    X = sp.hstack([X, sp.csr_matrix((60, 10), dtype=np.float32)]).tocsr()  # items 20..29 empty
    mg = SANSA(l2=5.0, density=0.3, refine_sweeps=3, factorizer="icf", device="gpu").fit(X)
    mc = SANSA(l2=5.0, density=0.3, refine_sweeps=3, factorizer="icf", device="cpu").fit(X)
    ig, sg = mg.recommend(X, k=25)
    ic, sc = cpu.recommend_sparse(X, *mg.weights_, 25, plan="factored")
    np.testing.assert_array_equal(ig, ic)
    np.testing.assert_array_equal(sg, sc)
    assert not np.isin(ig, np.arange(20, 30)).any()  # empty items are never recommended
    np.testing.assert_allclose(mg.weights_[1].toarray(), mc.weights_[1].toarray(), rtol=1e-4, atol=1e-6)


def test_gpu_memory_is_released_after_fit_and_with_the_model(medium_X):
    from sansa_gpu.gpu import inference, refine
    from sansa_gpu._testing.cuda_executor import ExecutorDevice

    with ExecutorDevice() as dev:
        m = SANSA(**PARAMS, device="gpu").fit(medium_X)
        assert dev.pool_releases >= 1  # the refinement holds no scratch between launches; its memory is freed
        m.recommend(medium_X[:10], k=5)
        cache = m._scoring_cache
        assert cache.names() == ["gpu_scratch", "gpu_weights"]  # the model keeps them between calls
        releases = dev.pool_releases
        m.release_scoring_cache()
        assert not cache.names() and dev.pool_releases == releases + 1
        m.recommend(medium_X[:10], k=5)
        ref = weakref.ref(cache := m._scoring_cache)
        del m, cache
        gc.collect()
        assert ref() is None  # dropping the model frees its cache and the device arrays with it


def test_out_of_memory_in_a_gpu_sweep_falls_back_to_cpu_with_warning(factor, caplog):
    """A backend that raises GPUOutOfMemory hands the loop to the CPU reference; same result."""
    import types

    from sansa_gpu.errors import GPUOutOfMemory

    f, budget = factor

    def refine_sweep(L, K, budget, tol):
        raise GPUOutOfMemory("simulated")

    fake = types.SimpleNamespace(to_device=lambda M: M, to_host=lambda M: M, refine_sweep=refine_sweep,
                                 column_residual_norms=cpu.column_residual_norms, release_scratch=lambda: None)
    with caplog.at_level(logging.WARNING, logger="sansa_gpu"):
        K_fb, h_fb = refine_inverse(f.L, budget, 2, fake)
    K_ref, h_ref = refine_inverse(f.L, budget, 2, cpu)
    assert "continuing on the CPU" in caplog.text
    assert (K_fb != K_ref).nnz == 0
    assert [h["loss"] for h in h_fb] == [h["loss"] for h in h_ref]


def _small_fit(X):
    return SANSA(l2=10.0, density=0.1, refine_sweeps=2, factorizer="icf", device="gpu").fit(X)


def _same_model(a, b):
    for Ma, Mb in zip(a.weights_, b.weights_):
        assert Ma.nnz == Mb.nnz
        np.testing.assert_allclose(Ma.toarray(), Mb.toarray(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["pool", "thrust", "driver"])
def test_every_device_allocation_failing_once_or_for_good_still_fits(small_X, kind, caplog):
    """Inject an out-of-memory at each device allocation of a fit in turn (as CuPy's pool, Thrust's
    plain MemoryError, or a driver error). Failing once: the chunked retry or the CPU takes over;
    failing from then on: the fit finishes on the CPU. Always with a warning and the same model."""
    from sansa_gpu._testing.cuda_executor import ExecutorDevice

    reference = SANSA(l2=10.0, density=0.1, refine_sweeps=2, factorizer="icf", device="cpu").fit(small_X)
    with ExecutorDevice() as dev:
        dev.fail_allocation(-1)  # count only
        _small_fit(small_X)
        n_alloc = dev.allocations
        assert n_alloc > 20
        for at in range(0, n_alloc, 1 if kind == "pool" else 3):
            for forever in (False, True):
                caplog.clear()
                dev.fail_allocation(at, kind, forever=forever)
                with caplog.at_level(logging.WARNING, logger="sansa_gpu"):
                    m = _small_fit(small_X)
                assert "out of memory" in caplog.text.lower(), (at, forever)
                _same_model(m, reference)
                if forever:
                    assert "gpu" not in m.stats_["stage_devices"]["weights"]
        dev.fail_allocation(-1)


def test_kernel_launch_failing_with_driver_out_of_memory_falls_back(small_X, caplog):
    from sansa_gpu._testing.cuda_executor import ExecutorDevice

    reference = SANSA(l2=10.0, density=0.1, refine_sweeps=2, factorizer="icf", device="cpu").fit(small_X)
    with ExecutorDevice() as dev:
        dev.fail_launch(-1)
        _small_fit(small_X)
        n_launch = len(dev.launches)
        for at in range(n_launch):
            for forever in (False, True):
                caplog.clear()
                dev.fail_launch(at, forever=forever)
                with caplog.at_level(logging.WARNING, logger="sansa_gpu"):
                    m = _small_fit(small_X)
                assert "out of memory" in caplog.text.lower()
                _same_model(m, reference)
                if forever:
                    assert m.stats_["stage_devices"]["refine"] != "gpu"
        dev.fail_launch(-1)


def test_recommend_out_of_memory_falls_back_to_cpu(small_X, caplog):
    from sansa_gpu._testing.cuda_executor import ExecutorDevice

    with ExecutorDevice() as dev:
        m = _small_fit(small_X)
        ic, sc = cpu.recommend_sparse(small_X, *m.weights_, 7, plan="factored")
        dev.fail_allocation(-1)
        m.recommend(small_X, k=7)
        n_alloc = dev.allocations
        m.release_scoring_cache()
        for at in range(n_alloc):
            for forever in (False, True):
                caplog.clear()
                dev.fail_allocation(at, "pool", forever=forever)
                with caplog.at_level(logging.WARNING, logger="sansa_gpu"):
                    ig, sg = m.recommend(small_X, k=7)
                np.testing.assert_array_equal(ig, ic)
                np.testing.assert_array_equal(sg, sc)
                assert "out of memory" in caplog.text.lower()
                assert ("scoring on the CPU" in caplog.text) == forever
                m.release_scoring_cache()
        dev.fail_allocation(-1)


def test_auto_stays_on_the_cpu_until_the_gpu_path_is_verified_on_a_device(small_X, caplog):
    from sansa_gpu import backend
    from sansa_gpu._testing.cuda_executor import ExecutorDevice

    assert backend.GPU_VERIFIED_ON_DEVICE is False
    with ExecutorDevice():
        assert backend.gpu_status()[0]
        with caplog.at_level(logging.INFO, logger="sansa_gpu"):
            m = SANSA(l2=10.0, density=0.1, refine_sweeps=1, factorizer="icf", device="auto").fit(small_X)
        assert m.device_ == "cpu" and m.stats_["stage_devices"]["refine"] == "cpu"
        assert "not yet verified on a device" in caplog.text
        backend._warned_unverified = False
        with pytest.warns(RuntimeWarning, match="verified on the CPU executor only"):
            assert backend.resolve_device("gpu") == "gpu"
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert backend.resolve_device("gpu") == "gpu"  # warned once per process
        backend._warned_unverified = False
        with pytest.warns(RuntimeWarning, match="verified on the CPU executor only") as record:
            SANSA(l2=10.0, density=0.1, refine_sweeps=1, factorizer="icf", device="gpu").fit(small_X)
        assert record[0].filename == __file__  # the warning names the caller's fit, not a line inside the package


def _random_weights(rng, n_items, n_latent, density, ties):
    """Random canonical Wt (items x latent) and Z (latent x items) with signed values; ``ties``
    draws values from a handful of levels so that many scores tie exactly."""
    def rand(shape):
        M = sp.random(*shape, density=density, random_state=rng, format="csr", dtype=np.float32)
        if ties:
            M.data = rng.choice(np.array([-1.0, -0.5, 0.25, 0.5, 1.0], dtype=np.float32), M.nnz)
        else:
            M.data = rng.standard_normal(M.nnz).astype(np.float32)
        M.sum_duplicates()
        M.sort_indices()
        return M
    return rand((n_items, n_latent)), rand((n_latent, n_items))


@pytest.mark.gpu
@pytest.mark.parametrize("seed", range(4))
def test_gpu_recommend_bit_identical_on_random_signed_weights_with_ties(gpu_device, seed):
    """Signed weights, exact ties, n_latent != n_items, k from 1 past the candidates: ids and the
    scores' bits equal the CPU's, and the kernel leaves its scratch zero."""
    from sansa_gpu.gpu import inference

    rng = np.random.default_rng(seed)
    n_items, n_latent = int(rng.integers(2, 90)), int(rng.integers(1, 70))
    Wt, Z = _random_weights(rng, n_items, n_latent, float(rng.uniform(0.03, 0.3)), ties=seed % 2 == 0)
    X = sp.random(40, n_items, density=0.1, random_state=rng, format="csr", dtype=np.float32)
    X.data = rng.uniform(0.5, 2.0, X.nnz).astype(np.float32)
    cache = ScoringCache()
    blocked = (rng.random(n_items) < 0.3).astype(np.uint8)
    for k in (1, 3, n_items + 2):
        for filters in ({}, {"blocked": blocked}, {"exclude_seen": False}, {"blocked": blocked, "exclude_seen": False}):
            ic, sc = cpu.recommend_sparse(X, Wt, Z, k, plan="factored", **filters)
            ig, sg = gpu.recommend_sparse(X, Wt, Z, k, cache=cache, **filters)
            np.testing.assert_array_equal(ig, ic)
            np.testing.assert_array_equal(sg.view(np.uint32), sc.view(np.uint32))
            h, hmark, _, s, flag, _ = (np.asarray(a.get()) for a in cache.get("gpu_scratch")[2])
            assert not h.any() and not hmark.any() and not s.any() and not flag.any()
    assert cache.builds["gpu_weights"] == 1 == cache.builds["gpu_scratch"]  # uploaded once for all the calls


def test_gpu_scoring_refuses_weights_with_repeated_indices(small_X):
    Wt = sp.csr_matrix((np.ones(2, np.float32), np.array([0, 0]), np.array([0, 2] + [2] * 79)), shape=(80, 3))
    Z = sp.csr_matrix(np.ones((3, 80), dtype=np.float32))
    assert not Wt.has_canonical_format
    with pytest.raises(ValueError, match="Wt has repeated or unsorted column indices"):
        gpu.recommend_sparse(small_X, Wt, Z, 5)


@pytest.mark.gpu
@pytest.mark.parametrize("mc, cap, block_slots", [(0.0, None, 1 << 25), (2.0, 3, 500), (0.0, 5, 40)])
def test_gpu_gram_is_bit_identical_to_the_cpu_twin(medium_X, gpu_device, mc, cap, block_slots):
    """kernels/gram.cu against sansa_gpu.cpu.gram: same entries, same bits (values and column norms),
    with pruning, the per-column cap and many blocks; an empty item and a weighted value included."""
    X = sp.hstack([medium_X, sp.csr_matrix((medium_X.shape[0], 1), dtype=np.float32)]).tocsr()
    X.data = X.data.copy()
    X.data[::7] = 0.37  # non-integer weights: sums depend on their order
    p = np.random.default_rng(4).permutation(X.shape[1])
    A, sq = cpu.gram_lower_and_norms(X, p, mc, None, cap, block_slots)
    B, sq_g = gpu.gram_lower_and_norms(X, p, mc, None, cap, block_slots)
    np.testing.assert_array_equal(A.indptr, B.indptr)
    np.testing.assert_array_equal(A.indices, B.indices)
    np.testing.assert_array_equal(A.data, B.data)
    np.testing.assert_array_equal(sq, sq_g)


@pytest.mark.gpu
def test_gpu_refinement_is_bit_identical_to_cpu_even_when_tables_overflow(factor, gpu_device, monkeypatch):
    """kernels/refine.cu sums in the CPU's order: every sweep, residual and selection gives the same
    bits; with tables too small for any column, every column takes the host's retry with larger ones."""
    from sansa_gpu.gpu import refine as gpu_refine

    f, budget = factor
    K0 = initial_inverse(f.L)
    Kc1, rc1 = cpu.refine_sweep(f.L, K0, budget, 1e-7)
    Kc2, rc2 = cpu.refine_sweep(f.L, Kc1, budget, 1e-7)
    for tiny in (False, True):
        if tiny:
            monkeypatch.setattr(gpu_refine, "TABLE_MIN_LOG2", 1)
            monkeypatch.setattr(gpu_refine, "_typical_need", lambda L, K: 1)
        Kg1, rg1 = gpu.refine_sweep(f.L, K0, budget, 1e-7)
        Kg2, rg2 = gpu.refine_sweep(f.L, Kg1, budget, 1e-7)
        for Kc, Kg in ((Kc1, gpu.to_host(Kg1)), (Kc2, gpu.to_host(Kg2))):
            np.testing.assert_array_equal(Kg.indptr, Kc.indptr)
            np.testing.assert_array_equal(Kg.indices, Kc.indices)
            np.testing.assert_array_equal(Kg.data, Kc.data)
        np.testing.assert_array_equal(rg1, rc1)
        np.testing.assert_array_equal(rg2, rc2)
        np.testing.assert_array_equal(gpu.column_residual_norms(f.L, Kg2), cpu.column_residual_norms(f.L, Kc2))


@pytest.mark.gpu
def test_gpu_fit_equals_cpu_fit_and_repeats_exactly(medium_X, cpu_model, gpu_device):
    """Gram, refinement and weights on the device: the same model as the CPU's (same pattern; values
    bit-identical on the executor, within 1e-6 relative on a device, where CuPy's reductions in the
    weight assembly may sum in another order), and two GPU fits give identical weights."""
    m1 = SANSA(**PARAMS, device="gpu").fit(medium_X)
    m2 = SANSA(**PARAMS, device="gpu").fit(medium_X)
    for a, b, c in zip(m1.weights_, m2.weights_, cpu_model.weights_):
        np.testing.assert_array_equal(a.indptr, b.indptr)
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.data, b.data)
        np.testing.assert_array_equal(a.indptr, c.indptr)
        np.testing.assert_array_equal(a.indices, c.indices)
        np.testing.assert_allclose(a.data, c.data, rtol=1e-6, atol=1e-9)
    assert [h["loss"] for h in m1.history_] == [h["loss"] for h in m2.history_]


@pytest.mark.gpu
def test_gpu_full_density_equals_dense_ease(small_X, gpu_device):
    """The master test on the GPU path (Gram, refinement and weights on the device; the exact ICF at
    density 1 on the CPU): a converged K gives EASE."""
    from conftest import dense_ease_minus_identity

    model = SANSA(l2=10.0, density=1.0, factorizer="icf", column_scaling=False, refine_sweeps=12, refine_tol=1e-7,
                  min_cooccurrence=0, device="gpu").fit(small_X)
    assert model.stats_["stage_devices"]["gram"] == "gpu" and model.stats_["stage_devices"]["refine"] == "gpu"
    Wt, Z = model.weights_
    exact = dense_ease_minus_identity(small_X, 10.0)
    rel = np.linalg.norm((Wt @ Z).toarray() - exact) / np.linalg.norm(exact)
    assert rel < 1e-4, rel


def test_grids_follow_the_kernels_real_occupancy(medium_X, cpu_model):
    """Persistent grids are one wave of what the SMs hold by the occupancy calculator (not a fixed
    warps-per-SM constant), capped by memory and by the work."""
    from sansa_gpu.gpu import _device
    from sansa_gpu.gpu.inference import WARPS_PER_BLOCK, launch_shape, scratch_bytes_per_warp
    from sansa_gpu._testing.cuda_executor import ExecutorDevice

    Wt, Z = cpu_model.weights_
    asked = []
    with ExecutorDevice(multiprocessor_count=5) as dev:
        dev.resident_blocks_per_sm = lambda kernel, threads: asked.append(threads) or 3
        assert launch_shape(Wt.shape[1], Z.shape[1]) == (15, 15 * WARPS_PER_BLOCK)
        kernel = dev.get_kernel("refine.cu", "refine_columns<long long>")
        assert _device.launch_grid(kernel, 128, work_items=1000) == 15
        assert _device.launch_grid(kernel, 128, work_items=4) == 4  # no more blocks than work
        assert _device.launch_grid(kernel, 128, work_items=1000, max_blocks=2) == 2  # memory
    assert asked == [256, 128, 128, 128]
    per_block = WARPS_PER_BLOCK * scratch_bytes_per_warp(Wt.shape[1], Z.shape[1])
    with ExecutorDevice(multiprocessor_count=5, free_bytes=int(2.5 * per_block / 0.25)) as dev:
        dev.resident_blocks_per_sm = lambda kernel, threads: 3
        assert launch_shape(Wt.shape[1], Z.shape[1])[0] == 2


@pytest.mark.gpu
@pytest.mark.parametrize("n, fill, budget", [(60, 0.3, 150), (64, 0.9, 64)])
def test_gpu_refinement_with_ties_and_exact_zeros_is_bit_identical(gpu_device, n, fill, budget):
    """L with values in {-0.5, 0.5, 0.25}: magnitudes tie at the per-column cut and residual entries
    cancel to exactly 0 (skipped by the q product). Found by review: a missing __syncwarp after the q
    loop let a lane's read of a skipped zero entry race with another lane's write in the next phase."""
    rng = np.random.default_rng(n)
    M = sp.tril(sp.random(n, n, density=fill, random_state=n, dtype=np.float32).tocsc(), -1).tocsc()
    M.data = rng.choice(np.array([-0.5, 0.5, 0.25], np.float32), M.nnz)
    L = (M + sp.eye(n, dtype=np.float32, format="csc")).tocsc()
    L.sort_indices()
    Kc, Kg = initial_inverse(L), initial_inverse(L)
    for _ in range(2):
        Kc, rc = cpu.refine_sweep(L, Kc, budget, 1e-7)
        Kg, rg = gpu.refine_sweep(L, Kg, budget, 1e-7)
        Kh = gpu.to_host(Kg)
        np.testing.assert_array_equal(Kh.indices, Kc.indices)
        np.testing.assert_array_equal(Kh.data, Kc.data)
        np.testing.assert_array_equal(rg, rc)
