"""Scoring from many threads at once: several models, every plan, the GPU path on the executor.

A threaded server or a Dask worker calls ``recommend`` on several fitted models concurrently. Each
model owns its scoring cache, so results must equal serial calls bit for bit, each model's B must be
formed exactly once however many threads ask for it, and what all caches hold together must never
exceed the process budget.
"""

import copy
import threading
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from sansa_gpu import SANSA, scoring_cache_info, set_scoring_cache_budget
from sansa_gpu.cpu import _threads
from sansa_gpu.scoring_cache import reset_peak

N_THREADS = 8
CALLS = 20
CPU_PLANS = ("factored", "product", "sparse_product")


@pytest.fixture(scope="module")
def models(medium_X):
    """Three models of one catalogue (the case where module-global caches keyed by shapes mixed up)."""
    return [SANSA(l2=20.0, density=d, refine_sweeps=1, factorizer="icf", device="cpu").fit(medium_X)
            for d in (0.005, 0.02, 0.05)]


def _requests(X, n_threads, calls, seed=0):
    """Per thread, per call: (model index, rows, k, filters); every thread mixes models and filters."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_threads):
        reqs = []
        for _ in range(calls):
            start = int(rng.integers(0, X.shape[0] - 40))
            filters = [{}, {"filter_items": np.arange(0, X.shape[1], 5)},
                       {"items": np.arange(0, X.shape[1], 2), "filter_already_liked_items": False}][int(rng.integers(3))]
            reqs.append((int(rng.integers(3)), slice(start, start + int(rng.integers(1, 40))), int(rng.integers(1, 30)),
                         filters))
        out.append(reqs)
    return out


def _run_threads(models, X, requests, plan):
    results = [[None] * len(r) for r in requests]
    errors = []
    barrier = threading.Barrier(len(requests))

    def work(t):
        try:
            barrier.wait()
            for c, (mi, rows, k, filters) in enumerate(requests[t]):
                results[t][c] = models[mi].recommend(X[rows], k, plan=plan, **filters)
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(len(requests))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    return results


def _serial(models, X, requests, plan):
    fresh = [copy.deepcopy(m) for m in models]  # copies start with empty caches
    return [[fresh[mi].recommend(X[rows], k, plan=plan, **filters) for mi, rows, k, filters in reqs]
            for reqs in requests]


def _assert_same(got, want):
    for t, (g_reqs, w_reqs) in enumerate(zip(got, want)):
        for c, ((gi, gs), (wi, ws)) in enumerate(zip(g_reqs, w_reqs)):
            np.testing.assert_array_equal(gi, wi, err_msg=f"thread {t} call {c}")
            np.testing.assert_array_equal(gs.view(np.uint32), ws.view(np.uint32), err_msg=f"thread {t} call {c}")


@pytest.mark.parametrize("plan", CPU_PLANS)
def test_threads_times_models_give_serial_results_and_form_each_B_once(models, medium_X, plan):
    requests = _requests(medium_X, N_THREADS, CALLS, seed=CPU_PLANS.index(plan))
    want = _serial(models, medium_X, requests, plan)
    ms = [copy.deepcopy(m) for m in models]
    set_scoring_cache_budget(64 << 20)  # room for every model's B: nothing is evicted
    reset_peak()
    try:
        got = _run_threads(ms, medium_X, requests, plan)
        info = scoring_cache_info()
    finally:
        set_scoring_cache_budget(None)
    _assert_same(got, want)
    for m in ms:
        builds = dict(m._scoring_cache.builds)
        if plan == "factored":
            assert builds == {}
        elif plan == "product":
            assert builds == {"product": 1}
        else:
            assert builds == {"B_row_nnz": 1, "sparse_product": 1}
    assert info["peak_bytes"] <= info["budget_bytes"]


def test_a_budget_smaller_than_all_Bs_evicts_and_stays_correct(models, medium_X):
    """Three dense Bs (1.5 MB each) under a 3.5 MB budget: at most two are held; models evict
    each other least-recently-used first and form B again, and results stay identical."""
    requests = _requests(medium_X, N_THREADS, CALLS, seed=11)
    want = _serial(models, medium_X, requests, "product")
    ms = [copy.deepcopy(m) for m in models]
    from sansa_gpu.cpu.plan_product import product_bytes

    budget = int(2.4 * product_bytes(medium_X.shape[1]))
    set_scoring_cache_budget(budget)
    reset_peak()
    try:
        got = _run_threads(ms, medium_X, requests, "product")
        info = scoring_cache_info()
    finally:
        set_scoring_cache_budget(None)
    _assert_same(got, want)
    assert info["peak_bytes"] <= budget and info["budget_bytes"] == budget
    assert sum(m._scoring_cache.builds["product"] for m in ms) > 3  # evicted and formed again
    assert sum(m._scoring_cache.get("product") is not None for m in ms) <= 2
    with pytest.raises(ValueError, match="budget must be None or an integer"):
        set_scoring_cache_budget(-1)


@pytest.mark.gpu
def test_threads_times_models_on_the_gpu_path(models, medium_X, gpu_device):
    """The GPU glue and kernel (on the executor in CI) from 8 threads on 3 models: identical to the
    CPU's factored plan called serially; each model uploads its weights and scratch once."""
    ms = []
    for m in models:
        g = copy.deepcopy(m)
        g.device_ = "gpu"  # score on the GPU path (the fit is the CPU's: the weights are the same)
        ms.append(g)
    requests = _requests(medium_X, N_THREADS, CALLS, seed=5)
    want = _serial(models, medium_X, requests, "factored")
    got = _run_threads(ms, medium_X, requests, "auto")
    _assert_same(got, want)
    for m in ms:
        assert m._scoring_cache.builds["gpu_weights"] == 1 and m._scoring_cache.builds["gpu_scratch"] == 1
        m.release_scoring_cache()


def test_recommend_does_not_modify_the_model(models, medium_X):
    m = copy.deepcopy(models[1])
    before = {k: copy.deepcopy(v) for k, v in vars(m).items() if k.endswith("_") and k != "weights_"}
    weights = [(M.data.copy(), M.indices.copy(), M.indptr.copy()) for M in m.weights_]
    for plan in CPU_PLANS:
        m.recommend(medium_X[:30], 5, plan=plan)
    m.similar_items([0, 1], 5)
    m.score(medium_X[:3])
    after = {k: v for k, v in vars(m).items() if k.endswith("_") and k != "weights_"}
    assert after.keys() == before.keys()
    for key in before:
        if key != "item_ids_":
            assert after[key] == before[key], key
    for M, (d, i, p) in zip(m.weights_, weights):
        np.testing.assert_array_equal(M.data, d)
        np.testing.assert_array_equal(M.indices, i)
        np.testing.assert_array_equal(M.indptr, p)


def test_pickled_and_cloned_models_do_not_carry_the_cache(models, medium_X):
    import pickle

    m = copy.deepcopy(models[2])
    m.recommend(medium_X[:20], 5, plan="product")
    assert m._scoring_cache.names() == ["product"]
    clone = pickle.loads(pickle.dumps(m))
    assert clone._scoring_cache.names() == [] and clone._scoring_cache is not m._scoring_cache
    np.testing.assert_array_equal(clone.recommend(medium_X[:20], 5, plan="product")[0],
                                  m.recommend(medium_X[:20], 5, plan="product")[0])


def test_parallel_calls_take_turns_on_an_unsafe_threading_layer(monkeypatch):
    """On numba's workqueue layer concurrent parallel launches would abort the process: they are
    serialised, with one warning when a thread has to wait."""
    monkeypatch.setattr(_threads, "_layer", ["workqueue"])
    monkeypatch.setattr(_threads, "_warned", [])
    inside = []
    overlap = []
    gate = threading.Event()

    def work():
        with _threads.parallel_call():
            inside.append(1)
            overlap.append(len(inside))
            gate.wait(0.2)
            inside.pop()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        threads = [threading.Thread(target=work) for _ in range(3)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert overlap == [1, 1, 1]
    assert sum("threading layer" in str(w.message) for w in caught) == 1
    monkeypatch.setattr(_threads, "_layer", ["omp"])
    with _threads.parallel_call():  # a safe layer: no lock taken
        assert not _threads._turns.locked()


def test_the_threading_layer_in_use_is_detected():
    assert _threads.threading_layer() in ("tbb", "omp", "workqueue")


def test_the_default_budget_keeps_a_B_that_fits_when_forming_it_takes_the_memory(models, medium_X, monkeypatch):
    """The default budget follows the available memory; forming B takes some of it. A B that fitted
    before it was formed must still be kept (not formed, refused, and formed again on every call)."""
    from sansa_gpu import memory
    from sansa_gpu.cpu import plan_product as cpu_product

    need = cpu_product.product_bytes(medium_X.shape[1])
    total = int(need / 0.22)  # B is 22% of the memory: inside the 25% default, not after subtracting it
    used = [0]
    form = cpu_product._form_dense_B

    def forming(Wt, Z):
        state = form(Wt, Z)
        used[0] += sum(a.nbytes for a in state)
        return state

    monkeypatch.setattr(cpu_product, "_form_dense_B", forming)
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: total - used[0])
    m = copy.deepcopy(models[0])
    set_scoring_cache_budget(None)
    a = m.recommend(medium_X[:20], 5, plan="product")
    b = m.recommend(medium_X[:20], 5, plan="product")
    assert m._scoring_cache.builds["product"] == 1 and m._scoring_cache.get("product") is not None
    np.testing.assert_array_equal(a[0], b[0])


def test_a_cache_serves_only_the_weights_it_was_formed_from(models, medium_X):
    a, b = copy.deepcopy(models[0]), copy.deepcopy(models[2])
    a.recommend(medium_X[:30], 5, plan="product")
    a.weights_ = b.weights_  # assigned, not refitted: the B formed from the old weights must not serve
    for plan in CPU_PLANS:
        np.testing.assert_array_equal(a.recommend(medium_X[:30], 5, plan=plan)[0],
                                      b.recommend(medium_X[:30], 5, plan=plan)[0])


def test_direct_calls_without_a_cache_never_evict_a_models_entries(models, medium_X):
    from sansa_gpu.cpu import inference as cpu_inference, plan_product as cpu_product

    m = copy.deepcopy(models[1])
    m.recommend(medium_X[:10], 5, plan="product")
    set_scoring_cache_budget(cpu_product.product_bytes(medium_X.shape[1]) + 1000)
    try:
        cpu_inference.recommend_sparse(medium_X[:10], *models[2].weights_, 5, plan="product")
        assert m._scoring_cache.get("product") is not None
    finally:
        set_scoring_cache_budget(None)


@pytest.mark.parametrize("plan", CPU_PLANS)
def test_every_parallel_scoring_launch_goes_through_the_threading_guard(models, medium_X, monkeypatch, plan):
    """On the workqueue layer an unguarded launch from two threads aborts the process: every
    parallel kernel a scoring call runs (forming B included) must enter parallel_call."""
    import contextlib

    from sansa_gpu.cpu import plan_product as cpu_product

    entered = []

    @contextlib.contextmanager
    def counting():
        entered.append(1)
        yield

    from sansa_gpu.cpu import plan_factored

    for module in (plan_factored, cpu_product):  # every module that launches a scoring kernel
        monkeypatch.setattr(module, "parallel_call", counting)
    m = copy.deepcopy(models[1])
    m.recommend(medium_X[:10], 5, plan=plan)
    assert len(entered) == {"factored": 1, "product": 2, "sparse_product": 3}[plan]  # B's count, B, the scoring
