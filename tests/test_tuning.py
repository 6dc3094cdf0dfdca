"""sansa_gpu.tune: the validation split never leaks, budgets hold, the search is reproducible,
bad budgets and grids fail clearly; FactorCache reuse changes nothing; factorizer='auto'."""

import json
import logging

import numpy as np
import pytest
import scipy.sparse as sp

from conftest import require
from sansa_gpu import SANSA, tune
from sansa_gpu import factorize, memory
from sansa_gpu.defaults import TUNE_ICF_FILLS
from sansa_gpu.factorize import FactorCache, choose_factorizer, nnz_budget
from sansa_gpu.memory import exact_factor_profile
from sansa_gpu.synthetic import synthetic_interactions
from sansa_gpu.tuning import density_ladder, validation_split

FAST = dict(l2_grid=(10.0, 100.0), min_cooccurrence=(0.0, 2.0), device="cpu", progress=False, refine_sweeps=1)


@pytest.fixture(scope="module")
def X():
    return synthetic_interactions(n_users=1500, n_items=300, mean_items_per_user=15, n_communities=8, seed=11)


def _pairs(M):
    M = sp.coo_matrix(M)
    return set(zip(M.row.tolist(), M.col.tolist()))


def _on_rows(M, rows, shape):
    """The rows of M placed at rows ``rows`` of a matrix of ``shape`` (back on X's user numbering)."""
    M = sp.coo_matrix(M)
    return sp.csr_matrix((M.data, (np.asarray(rows)[M.row], M.col)), shape=shape)


def test_holdout_split_never_leaks_and_partitions_X(X):
    s = validation_split(X, "holdout", 0.25, seed=3)
    assert s.inputs.shape[0] == s.targets.shape[0] == s.users.size > 0
    targets = _pairs(_on_rows(s.targets, s.users, X.shape))
    train = _pairs(_on_rows(s.train, s.train_rows, X.shape))
    assert not (train & targets)  # no held-out interaction is trained on
    assert train | targets == _pairs(X) and len(train) + len(targets) == X.nnz
    # the validation inputs are exactly those users' training rows, and none is empty
    assert _pairs(_on_rows(s.inputs, s.users, X.shape)) == {p for p in train if p[0] in set(s.users.tolist())}
    assert np.all(np.diff(s.inputs.indptr) > 0)
    assert validation_split(X, "holdout", 0.25, seed=4).targets.nnz > 0
    assert _pairs(validation_split(X, "holdout", 0.25, seed=4).targets) != _pairs(s.targets)


def test_user_split_removes_held_out_users_from_training(X):
    s = validation_split(X, "users", 0.2, seed=4)
    assert s.users.size > 0 and not (set(s.users.tolist()) & set(s.train_rows.tolist()))
    assert s.train.shape[0] == s.train_rows.size == X.shape[0] - round(0.2 * np.count_nonzero(np.diff(X.indptr) >= 2))
    assert _pairs(_on_rows(s.train, s.train_rows, X.shape)) == {p for p in _pairs(X) if p[0] in set(s.train_rows.tolist())}
    inputs, targets = _pairs(_on_rows(s.inputs, s.users, X.shape)), _pairs(_on_rows(s.targets, s.users, X.shape))
    assert not (inputs & targets)
    assert inputs | targets == {p for p in _pairs(X) if p[0] in set(s.users.tolist())}


def test_search_is_reproducible_with_a_seed(X):
    a = tune(X, seed=5, **FAST)
    b = tune(X, seed=5, **FAST)
    keys = ("factorizer", "min_cooccurrence", "density", "l2", "status", "recall@20", "ndcg@20", "model_bytes")
    assert [[t.get(k) for k in keys] for t in a.trials] == [[t.get(k) for k in keys] for t in b.trials]
    assert a.best_params == b.best_params
    c = tune(X, seed=6, **FAST)
    assert [t.get("recall@20") for t in c.trials] != [t.get("recall@20") for t in a.trials]
    # the refitted model is the best parameters fitted on all of X
    assert a.best["refine_sweeps"] in (1, 4, 8) and any(t["phase"] == "sweeps" for t in a.trials)
    ref = SANSA(l2=a.best["l2"], density=a.best["density"], factorizer=a.best["factorizer"],
                min_cooccurrence=a.best["min_cooccurrence"], refine_sweeps=a.best["refine_sweeps"], device="cpu",
                **TUNE_ICF_FILLS).fit(X)
    for M, R in zip(a.model.weights_, ref.weights_):
        assert (M != R).nnz == 0
    assert a.best[a.metric] == max(t[a.metric] for t in a.trials if t["status"] == "ok")


def test_max_model_bytes_caps_every_trial_and_is_checked(X):
    cap = 120_000
    r = tune(X, max_model_bytes=cap, **FAST)
    ok = [t for t in r.trials if t["status"] == "ok"]
    assert ok and all(t["model_bytes"] <= cap for t in ok)
    assert max(t["density"] for t in ok) == density_ladder(X.shape[1], cap)[-1]
    with pytest.raises(ValueError, match="below the smallest model"):
        tune(X, max_model_bytes=1000, **FAST)


def test_max_memory_skips_trials_with_a_log_line(X, caplog, monkeypatch):
    from sansa_gpu import memory

    # predicted peaks grow with density: put the cap between the two densities' predictions (far enough
    # apart that the Gram the cache holds between fits does not bridge them)
    lo, hi = 0.01, 0.5
    p_lo = memory.memory_upper_bound(X, lo, "icf")["peak"]
    p_hi = memory.memory_upper_bound(X, hi, "icf")["peak"]
    assert p_lo < p_hi
    with caplog.at_level(logging.INFO, logger="sansa_gpu.tuning"):
        r = tune(X, densities=(lo, hi), factorizers=("icf",), max_memory=(p_lo + p_hi) / 2, **FAST)
    skipped = [t for t in r.trials if t["status"].startswith("skipped")]
    assert skipped and all(t["density"] == hi for t in skipped)
    assert all(t["density"] == lo for t in r.trials if t["status"] == "ok")
    assert any("skipped: predicted fit peak" in rec.getMessage() for rec in caplog.records)
    with pytest.raises(ValueError, match="no trial completed"):
        tune(X, densities=(hi,), factorizers=("icf",), max_memory=(p_lo + p_hi) / 2, **FAST)


def test_max_seconds_still_returns_a_model(X):
    r = tune(X, max_seconds=1e-6, **FAST)
    assert sum(t["status"] == "ok" for t in r.trials) == 1  # only the first, cheapest trial ran
    assert r.extra["not_started"] > 0 and r.model is not None
    assert r.trials[0]["density"] == min(density_ladder(X.shape[1]))


@pytest.mark.parametrize("kw, match", [
    (dict(l2_grid=()), "l2_grid is empty"),
    (dict(densities=()), "densities is empty"),
    (dict(densities=(0.0,)), "densities must hold"),
    (dict(densities=(2.0,)), r"densities must lie in \(0, 1\]"),
    (dict(min_cooccurrence=(-1,)), "min_cooccurrence must hold"),
    (dict(factorizers=()), "factorizers is empty"),
    (dict(factorizers=("lu",)), "factorizers may hold"),
    (dict(max_seconds=0), "max_seconds must be a finite number > 0"),
    (dict(max_memory=-5), "max_memory must be a finite number > 0"),
    (dict(max_model_bytes=float("nan")), "max_model_bytes must be a finite number > 0"),
    (dict(metric="auc"), "metric must be"),
    (dict(validation="kfold"), "validation must be"),
    (dict(validation_fraction=1.0), "validation fraction"),
])
def test_bad_budgets_and_grids_are_clear_errors(X, kw, match):
    args = {**FAST, **kw}
    with pytest.raises(ValueError, match=match):
        tune(X, **args)


@pytest.mark.parametrize("factorizer", ["icf", "cholmod"])
def test_factor_cache_reuse_gives_identical_models(X, factorizer):
    if factorizer == "cholmod":
        require("sksparse")
    cache = FactorCache()
    for l2, density in [(10.0, 0.02), (10.0, 0.08), (100.0, 0.02)]:
        # the exact Gram, as tune fits (max_gram_per_item='auto' would cap it by the density)
        with_cache = SANSA(l2=l2, density=density, factorizer=factorizer, refine_sweeps=1, device="cpu",
                           max_gram_per_item=None).fit(X, factor_cache=cache)
        plain = SANSA(l2=l2, density=density, factorizer=factorizer, refine_sweeps=1, device="cpu",
                      max_gram_per_item=None).fit(X)
        for M, R in zip(with_cache.weights_, plain.weights_):
            assert (M != R).nnz == 0
    # ICF: the Gram (column scaling included: its norms come from the Gram's pass) does not depend on
    # l2 or density (2 reuses); CHOLMOD: the exact factor of l2=10 (1)
    assert cache.hits == ({"scaling": 0, "gram": 2, "exact_factor": 0} if factorizer == "icf"
                          else {"scaling": 0, "gram": 0, "exact_factor": 1})
    with pytest.raises(ValueError, match="another interaction matrix"):
        SANSA(l2=10.0, density=0.02, factorizer=factorizer, device="cpu").fit(X[:100], factor_cache=cache)


def test_factor_cache_sees_an_in_place_edit_of_the_callers_matrix(X):
    """A canonical X reaches fit uncopied; the cache keeps its own copy, so editing the caller's
    matrix between fits is a different matrix, not a silent reuse of stale work."""
    Y = sp.csr_matrix(X, dtype=np.float32, copy=True)
    Y.sum_duplicates()
    Y.eliminate_zeros()
    cache = FactorCache()
    SANSA(l2=10.0, density=0.02, factorizer="icf", refine_sweeps=1, device="cpu").fit(Y, factor_cache=cache)
    Y.data[:5] = 2.0
    with pytest.raises(ValueError, match="another interaction matrix"):
        SANSA(l2=10.0, density=0.02, factorizer="icf", refine_sweeps=1, device="cpu").fit(Y, factor_cache=cache)


def test_auto_uses_icf_without_cholmod_and_cholmod_names_the_extra(X, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sksparse", None)  # import sksparse -> ImportError
    assert not factorize.cholmod_available()
    name, reason = choose_factorizer(X, 0.5)
    assert name == "icf" and "not installed" in reason
    m = SANSA(density=0.05, refine_sweeps=1, device="cpu").fit(X)
    assert m.factorizer_ == "icf" and m.stats_["factorizer"] == "icf"
    with pytest.raises(ImportError, match=r"sansa_gpu\[cholmod\].*libsuitesparse-dev|libsuitesparse-dev.*sansa_gpu\[cholmod\]"):
        SANSA(density=0.05, factorizer="cholmod", device="cpu").fit(X)


def test_auto_rule_follows_its_thresholds(X, monkeypatch):
    require("sksparse")
    n = X.shape[1]
    per_user = X.nnz / np.count_nonzero(np.diff(X.indptr))
    monkeypatch.setattr(factorize.rule, "AUTO_CHOLMOD_MIN_NNZ_PER_ITEM", 30.0)
    monkeypatch.setattr(factorize.rule, "AUTO_CHOLMOD_MIN_ITEMS_PER_USER", per_user - 0.5)
    assert choose_factorizer(X, 31.0 / n)[0] == "cholmod"
    monkeypatch.setattr(factorize.rule, "AUTO_CHOLMOD_MIN_ITEMS_PER_USER", per_user + 0.5)
    assert choose_factorizer(X, 31.0 / n)[0] == "icf"
    monkeypatch.setattr(factorize.rule, "AUTO_CHOLMOD_MIN_ITEMS_PER_USER", per_user - 0.5)
    assert choose_factorizer(X, 29.0 / n)[0] == "icf"
    assert choose_factorizer(X, 31.0 / n, min_cooccurrence=2)[0] == "icf"
    assert choose_factorizer(X, 31.0 / n, ordering="popularity")[0] == "icf"
    # by the exact factor's predicted time and memory, not the catalogue size; a catalogue whose fully
    # dense factor is cheap is not analysed
    assert "exact factor of at most" in choose_factorizer(X, 31.0 / n)[1]
    profile = exact_factor_profile(X, "colamd")
    seconds = factorize.predict_exact_seconds(profile)
    monkeypatch.setattr(factorize.rule, "AUTO_CHOLMOD_MAX_SECONDS", seconds * 0.99)
    name, reason = choose_factorizer(X, 31.0 / n)
    assert name == "icf" and f"{profile['fill']:,} nonzeros" in reason and "ICF is the fast default" in reason
    monkeypatch.setattr(factorize.rule, "AUTO_CHOLMOD_MAX_SECONDS", seconds * 1.01)
    assert choose_factorizer(X, 31.0 / n)[0] == "cholmod"
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 1000)

    def not_analysed(*args, **kwargs):
        raise AssertionError("the exact factor's structure was analysed although its Gram cannot fit")

    monkeypatch.setattr(memory, "exact_factor_profile", not_analysed)
    name, reason = choose_factorizer(X, 31.0 / n)
    assert name == "icf" and "GB available" in reason and "not analysed" in reason
    monkeypatch.undo()
    monkeypatch.setattr(factorize.rule, "AUTO_CHOLMOD_MIN_NNZ_PER_ITEM", 30.0)
    monkeypatch.setattr(factorize.rule, "AUTO_CHOLMOD_MIN_ITEMS_PER_USER", per_user - 0.5)
    # the model records the choice and saves / loads it
    m = SANSA(density=40.0 / n, refine_sweeps=1, device="cpu").fit(X)
    assert m.factorizer_ == "cholmod" and m.get_params()["factorizer"] == "auto"
    assert m.stats_["nnz_L"] <= nnz_budget(40.0 / n, n)


def test_a_fit_analyses_the_exact_factor_once(X, monkeypatch):
    """When the auto rule analysed the exact factor's structure, the fit's exact memory count reuses it."""
    require("sksparse")
    n = X.shape[1]
    per_user = X.nnz / np.count_nonzero(np.diff(X.indptr))
    seconds = factorize.predict_exact_seconds(exact_factor_profile(X, "colamd"))
    monkeypatch.setattr(factorize.rule, "AUTO_CHOLMOD_MIN_NNZ_PER_ITEM", 30.0)
    monkeypatch.setattr(factorize.rule, "AUTO_CHOLMOD_MIN_ITEMS_PER_USER", per_user - 0.5)
    monkeypatch.setattr(factorize.rule, "AUTO_CHOLMOD_MAX_SECONDS", seconds * 1.01)  # below the dense bound: analysed
    calls = []
    real = memory.exact_factor_profile

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(memory, "exact_factor_profile", counting)
    monkeypatch.setattr(memory, "memory_upper_bound", lambda *a, **k: {"peak": float("inf")})  # count exactly
    model = SANSA(density=40.0 / n, refine_sweeps=1, device="cpu")
    exact = model.estimate_memory(X)
    assert len(calls) == 1 and exact["nnz_exact_L"] == exact_factor_profile(X, "colamd")["fill"]
    calls.clear()
    model.fit(X)
    assert model.factorizer_ == "cholmod" and len(calls) == 1


def test_plot_and_trials_file(X, tmp_path):
    require("matplotlib")
    r = tune(X, densities=(0.02, 0.08), factorizers=("icf",), dense_ease=True, **FAST)
    assert r.dense_ease is not None and r.dense_ease["l2"] == r.best["l2"]
    png = tmp_path / "tune.png"
    r.plot(png)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    r.to_jsonl(tmp_path / "trials.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "trials.jsonl").read_text().splitlines()]
    assert len(lines) == len(r.trials) and sum(x["chosen"] for x in lines) == 1
    assert [x for x in lines if x["chosen"]][0]["l2"] == r.best["l2"]


def test_dense_ease_point_respects_the_time_budget(X, monkeypatch, caplog):
    """A dense EASE predicted to take longer than what is left of max_seconds is not fitted (on
    25k items it takes 10 minutes on the 2-core VM); within the budget it is."""
    from sansa_gpu import ease

    monkeypatch.setattr(ease, "LAPACK_FLOPS_PER_CORE", 1.0)  # predicts years
    with caplog.at_level(logging.INFO, logger="sansa_gpu.tuning"):
        r = tune(X, densities=(0.02,), factorizers=("icf",), dense_ease=True, max_seconds=3600, **FAST)
    assert r.dense_ease is None
    assert "dense EASE: not fitted" in caplog.text
    monkeypatch.setattr(ease, "LAPACK_FLOPS_PER_CORE", 2.4e10)
    assert tune(X, densities=(0.02,), factorizers=("icf",), dense_ease=True, max_seconds=3600,
                **FAST).dense_ease is not None


def test_ease_runs_lapack_on_one_blas_thread_on_large_catalogues(small_X, monkeypatch):
    """Above SINGLE_THREAD_LAPACK_ITEMS the Cholesky inverse runs on one BLAS thread (a threaded
    OpenBLAS dpotrf segfaulted at 24,915 items); the weights are the same."""
    require("threadpoolctl")
    from threadpoolctl import threadpool_info

    from sansa_gpu import ease

    seen = []
    real = ease.lapack.dpotrf

    def spy(*args, **kwargs):
        seen.append(max((i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"), default=None))
        return real(*args, **kwargs)

    monkeypatch.setattr(ease.lapack, "dpotrf", spy)
    n = small_X.shape[1]
    monkeypatch.setattr(ease, "SINGLE_THREAD_LAPACK_ITEMS", n - 1)
    limited = ease.ease_weights(small_X, 10.0)
    monkeypatch.setattr(ease, "SINGLE_THREAD_LAPACK_ITEMS", n)
    threaded = ease.ease_weights(small_X, 10.0)
    assert seen[0] == 1
    np.testing.assert_allclose(limited, threaded, rtol=1e-5, atol=1e-6)


def test_cli_tune(X, tmp_path, capsys):
    require("matplotlib")
    pa = require("pyarrow")
    import pyarrow.parquet as pq

    from sansa_gpu.cli import main

    C = sp.coo_matrix(X)
    pq.write_table(pa.table({"user_id": C.row.astype(np.int64) + 100, "item_id": C.col.astype(np.int64) * 3}),
                   tmp_path / "x.parquet")
    rc = main(["tune", str(tmp_path / "x.parquet"), "-o", str(tmp_path / "m.npz"), "--l2-grid", "10", "100",
               "--densities", "0.02", "0.08", "--factorizers", "icf", "--min-cooccurrence", "0",
               "--trials", str(tmp_path / "t.jsonl"), "--plot", str(tmp_path / "t.png"), "-q"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    m = SANSA.load(tmp_path / "m.npz")
    assert m.item_ids_ is not None and out["l2"] == m.l2 and out["density"] == m.density
    assert (tmp_path / "t.png").stat().st_size > 0 and (tmp_path / "t.jsonl").read_text().count("\n") == out["trials"]
    rc = main(["tune", str(tmp_path / "x.parquet"), "-o", str(tmp_path / "m2.npz"), "--max-model-bytes", "10", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "max_model_bytes" in err[0]
    assert not (tmp_path / "m2.npz").exists()


def test_factor_cache_keeps_one_gram_per_pruning_level(X):
    cache = FactorCache(max_grams=2)
    for mc in (0.0, 2.0, 0.0, 2.0):
        SANSA(l2=10.0, density=0.02, factorizer="icf", min_cooccurrence=mc, refine_sweeps=1,
              device="cpu").fit(X, factor_cache=cache)
    assert cache.hits["gram"] == 2 and cache.held_bytes() > 0
    single = FactorCache(max_grams=1)
    for mc in (0.0, 2.0, 0.0):
        SANSA(l2=10.0, density=0.02, factorizer="icf", min_cooccurrence=mc, refine_sweeps=1,
              device="cpu").fit(X, factor_cache=single)
    assert single.hits["gram"] == 0  # evicted before it was needed again


# ---------------------------------------------------------------- cost-aware order and l2 narrowing
from sansa_gpu.tuning import ICF_COST_EXPONENT, KEEP_L2, predict_trial_seconds  # noqa: E402


def _t(fac, d, sec, reused=None):
    t = {"factorizer": fac, "density": d, "seconds": sec, "status": "ok"}
    if reused is not None:
        t["factor_reused"] = reused
    return t


def test_predicted_trial_seconds_from_the_trials_run():
    assert predict_trial_seconds([], "icf", 0.01) == 0.0  # nothing measured: the first trial runs
    trials = [_t("icf", 0.01, 1.0), _t("icf", 0.01, 3.0), _t("icf", 0.01, 2.0), _t("icf", 0.04, 8.0)]
    assert predict_trial_seconds(trials, "icf", 0.01) == 2.0  # the median at a measured density
    assert predict_trial_seconds(trials, "icf", 0.16) == pytest.approx(8.0 * 4 ** ICF_COST_EXPONENT)
    assert predict_trial_seconds(trials, "icf", 0.02) == pytest.approx(2.0 * 2 ** ICF_COST_EXPONENT)
    # CHOLMOD before any CHOLMOD trial: a cut priced like ICF there, the factor like the densest ICF trial
    # or, given, by its structural prediction
    dens = (0.01, 0.04, 0.16)
    assert predict_trial_seconds(trials, "cholmod", 0.01, factor_cached=True) == 2.0
    assert predict_trial_seconds(trials, "cholmod", 0.01, factor_cached=False, densities=dens) == pytest.approx(
        2.0 + 8.0 * 4 ** ICF_COST_EXPONENT)
    assert predict_trial_seconds(trials, "cholmod", 0.01, factor_cached=False, densities=dens,
                                 exact_seconds=30.0) == pytest.approx(32.0)
    # after CHOLMOD trials: cuts from the trials that reused the factor, the factor from the first ones
    trials += [_t("cholmod", 0.01, 10.5, reused=False), _t("cholmod", 0.04, 0.7, reused=True),
               _t("cholmod", 0.01, 0.5, reused=True)]
    assert predict_trial_seconds(trials, "cholmod", 0.01) == 0.5
    assert predict_trial_seconds(trials, "cholmod", 0.04, factor_cached=False, densities=dens) == pytest.approx(0.7 + 10.0)


def test_icf_narrowing_keeps_the_best_l2_and_the_step_below(X):
    grid = (1.0, 10.0, 100.0, 1000.0)
    d0, d1 = 0.02, 0.08
    r = tune(X, densities=(d0, d1), l2_grid=grid, min_cooccurrence=(0.0,), factorizers=("icf",), refine_l2=False,
             sweeps_grid=(), device="cpu", progress=False, refine_sweeps=1)
    low = sorted((t for t in r.trials if t["density"] == d0), key=lambda t: -t["recall@20"])
    assert sorted(t["l2"] for t in low) == list(grid)
    kept = sorted(t["l2"] for t in low[:KEEP_L2])
    below = [v for v in grid if v < kept[0]][-1:]
    assert sorted(t["l2"] for t in r.trials if t["density"] == d1) == sorted(set(kept + below))
    if below:  # at the top rung the speculative step-down runs last
        assert r.trials[-1]["density"] == d1 and r.trials[-1]["l2"] == below[0]


def test_time_budget_leaves_trials_predicted_to_overrun(X, monkeypatch):
    """A trial predicted to end past max_seconds is not started, but cheaper ones after it still run."""
    from sansa_gpu import tuning

    real = tuning.predict_trial_seconds
    monkeypatch.setattr(tuning, "predict_trial_seconds",
                        lambda trials, fac, d, **kw: 1e6 if d == 0.08 else real(trials, fac, d, **kw))
    r = tune(X, densities=(0.02, 0.08), l2_grid=(10.0, 100.0), min_cooccurrence=(0.0,), factorizers=("icf",),
             max_seconds=600, sweeps_grid=(4,), device="cpu", progress=False, refine_sweeps=1)
    assert not any(t["density"] == 0.08 for t in r.trials) and r.extra["not_started"] >= 2
    assert any(t["phase"] == "refine" for t in r.trials) and any(t["phase"] == "sweeps" for t in r.trials)
    assert all("seconds" in t and t["seconds"] >= t["fit_seconds"] for t in r.trials if t["status"] == "ok")


def test_cheaper_cholmod_blocks_run_before_an_expensive_icf_rung(X, monkeypatch):
    require("sksparse")
    from sansa_gpu import tuning

    real = tuning.predict_trial_seconds
    monkeypatch.setattr(tuning, "predict_trial_seconds",
                        lambda trials, fac, d, **kw: 1e3 if (fac, d) == ("icf", 0.08) else real(trials, fac, d, **kw))
    r = tune(X, densities=(0.02, 0.08), l2_grid=(10.0, 100.0), min_cooccurrence=(0.0,), refine_l2=False,
             sweeps_grid=(), device="cpu", progress=False, refine_sweeps=1)
    order = [(t["factorizer"], t["density"]) for t in r.trials]
    top_icf = order.index(("icf", 0.08))
    assert all(f == "cholmod" for f, _ in order[order.index(("cholmod", 0.02)):top_icf])
    assert sum(f == "cholmod" for f, _ in order[:top_icf]) == 4  # both l2 blocks, both densities
    assert [t["factor_reused"] for t in r.trials if t["factorizer"] == "cholmod"] == [False, True, False, True]


def test_default_factorizers_take_cholmod_by_predicted_time_and_memory(X, monkeypatch, caplog):
    """CHOLMOD enters the default search when one exact factor's predicted time fits half of
    max_seconds and its fit's predicted peak fits max_memory -- whatever the catalogue size."""
    require("sksparse")
    from sansa_gpu import tuning
    from sansa_gpu.memory import exact_factor_profile

    kw = dict(densities=(0.02,), l2_grid=(10.0,), min_cooccurrence=(0.0,), refine_l2=False, sweeps_grid=(),
              device="cpu", progress=False, refine_sweeps=1)
    seconds = factorize.predict_exact_seconds(exact_factor_profile(tune_split_train(X), "colamd"))
    with caplog.at_level(logging.INFO, logger="sansa_gpu.tuning"):
        r = tune(X, max_seconds=max(60.0, 4 * seconds), **kw)
    assert {t["factorizer"] for t in r.trials} == {"icf", "cholmod"}
    assert any("CHOLMOD tried: exact factor of" in rec.getMessage() for rec in caplog.records)
    caplog.clear()
    monkeypatch.setattr(factorize.exact, "EXACT_SECONDS_PER_GFLOP", 1e9)  # a factor predicted to take forever
    with caplog.at_level(logging.INFO, logger="sansa_gpu.tuning"):
        r = tune(X, max_seconds=600.0, **kw)
    assert {t["factorizer"] for t in r.trials} == {"icf"}
    assert any("CHOLMOD not tried" in m and "of max_seconds=600" in m for m in (x.getMessage() for x in caplog.records))
    monkeypatch.undo()
    keep, why, _ = tuning._exact_factor_fits(tune_split_train(X), 0.02, 1e3, None, {})  # 1 kB of memory
    assert not keep and "> max_memory" in why
    keep, why, _ = tuning._exact_factor_fits(tune_split_train(X), 0.02, 1e12, None, {})  # no time limit
    assert keep
    monkeypatch.setattr(factorize.exact, "EXACT_PROFILE_MAX_ITEMS", X.shape[1] - 1)
    keep, why, seconds = tuning._exact_factor_fits(X, 0.02, 1e12, None, {})
    assert not keep and "not analysed" in why and seconds is None


def tune_split_train(X):
    return validation_split(X, "holdout", 0.2, 0).train


def test_tune_searches_and_returns_the_plain_icf_at_every_density(X, monkeypatch):
    """Every trial and the refit use TUNE_ICF_FILLS (the plain ICF), also where SANSA() would resolve the
    doubled working budget with an intermediate fill (from ICF_FILL_FROM_NNZ_PER_ITEM per item)."""
    from sansa_gpu import defaults

    assert TUNE_ICF_FILLS == {"icf_fill": 1.0, "icf_intermediate_fill": 0.0}
    n = X.shape[1]
    wide = defaults.ICF_FILL_FROM_NNZ_PER_ITEM / n
    assert SANSA().icf_fills_for(n, wide) != (1.0, 0.0)
    fitted, bounded = [], []
    fit = SANSA.fit

    def spy(self, *args, **kw):
        fitted.append((self.icf_fill, self.icf_intermediate_fill))
        return fit(self, *args, **kw)

    bound = memory.memory_upper_bound

    def spy_bound(X, density, factorizer="cholmod", max_per_column=None, working_fill=None, intermediate_fill=None):
        bounded.append((working_fill, intermediate_fill))  # None: not passed (the bound's own default would hide it)
        return bound(X, density, factorizer, max_per_column, working_fill, intermediate_fill)

    monkeypatch.setattr(SANSA, "fit", spy)
    monkeypatch.setattr(memory, "memory_upper_bound", spy_bound)
    res = tune(X, densities=(wide,), l2_grid=(10.0,), min_cooccurrence=(0.0,), factorizers=("icf",),
               sweeps_grid=(), seed=0, progress=False)
    assert fitted and set(fitted) == {(1.0, 0.0)} and set(bounded) == {(1.0, 0.0)}
    assert res.model.icf_fill_ == 1.0 and res.model.icf_intermediate_fill_ == 0.0
    assert res.model.get_params()["icf_fill"] == 1.0


def test_default_density_is_sixteen_nonzeros_per_item(X, tmp_path):
    from sansa_gpu.model import DEFAULT_NNZ_PER_ITEM

    m = SANSA(refine_sweeps=1, factorizer="icf", device="cpu").fit(X)
    n = X.shape[1]
    assert m.get_params()["density"] is None and m.density_ == DEFAULT_NNZ_PER_ITEM / n
    assert m.stats_["density"] == DEFAULT_NNZ_PER_ITEM / n and m.stats_["budget"] == nnz_budget(DEFAULT_NNZ_PER_ITEM / n, n)
    ref = SANSA(density=DEFAULT_NNZ_PER_ITEM / n, refine_sweeps=1, factorizer="icf", device="cpu").fit(X)
    for M, R in zip(m.weights_, ref.weights_):
        assert (M != R).nnz == 0
    m.save(tmp_path / "m.npz")
    loaded = SANSA.load(tmp_path / "m.npz")
    assert loaded.density is None and loaded.density_ == m.density_
    assert SANSA(factorizer="icf").density_for(8) == 1.0  # tiny catalogues: capped at 1


def test_cholmod_l2_is_a_line_search_from_the_default_l2(X):
    """CHOLMOD's l2 line starts at the grid value nearest SANSA(l2=None)'s for the exact factor (4 mean
    Gram diagonals of the training split), steps to both neighbours, and goes on in a direction only
    while a block beats the one it stepped from."""
    require("sksparse")
    import math

    from sansa_gpu.defaults import L2_PER_MEAN_DIAGONAL
    from sansa_gpu.gram import mean_gram_diagonal

    grid = (0.01, 1.0, 10.0, 100.0, 1000.0, 1e5)
    r = tune(X, densities=(0.02, 0.08), l2_grid=grid, min_cooccurrence=(0.0,),
             refine_l2=False, sweeps_grid=(), device="cpu", progress=False, refine_sweeps=1)
    chol = [t for t in r.trials if t["factorizer"] == "cholmod"]
    run_l2 = list(dict.fromkeys(t["l2"] for t in chol))
    target = L2_PER_MEAN_DIAGONAL * mean_gram_diagonal(tune_split_train(X))
    start = min(grid, key=lambda l2: abs(math.log(l2 / target)))
    assert run_l2[0] == start and 0 < grid.index(start) < len(grid) - 1  # a start with two neighbours
    best = {l2: max(t["recall@20"] for t in chol if t["l2"] == l2 and t["status"] == "ok") for l2 in run_l2}
    s = grid.index(start)
    assert run_l2[1:3] == [grid[s + 1], grid[s - 1]]  # both neighbours of the start, the one above first
    for side in (1, -1):
        walked = [grid[s]]
        j = s + side
        while 0 <= j < len(grid) and grid[j] in best:
            walked.append(grid[j])
            j += side
        for a, b in zip(walked[1:-1], walked[2:]):  # b was run: a beat the block before it
            assert best[a] > best[walked[walked.index(a) - 1]]
        if 0 <= j < len(grid) and len(walked) > 1:  # the line stopped on this side: its last block was no better
            assert best[walked[-1]] <= best[walked[-2]]
    assert len(run_l2) < len(grid)  # the line ended before the whole grid (on this data)


def test_cholmod_l2_line_goes_on_while_it_improves(X, monkeypatch):
    """From the bottom of the grid the line climbs while each block beats the one below it and stops at
    the first that does not (this data's best l2 is about 100: see the test above)."""
    require("sksparse")
    from sansa_gpu import tuning

    monkeypatch.setattr(tuning._Search, "cholmod_start_l2", lambda self: 0.01)
    grid = (0.01, 1.0, 10.0, 100.0, 1000.0, 1e5)
    r = tune(X, densities=(0.02,), l2_grid=grid, min_cooccurrence=(0.0,), factorizers=("cholmod",),
             refine_l2=False, sweeps_grid=(), device="cpu", progress=False, refine_sweeps=1)
    run_l2 = list(dict.fromkeys(t["l2"] for t in r.trials))
    best = {l2: max(t["recall@20"] for t in r.trials if t["l2"] == l2) for l2 in run_l2}
    assert run_l2 == list(grid[:len(run_l2)]) and len(run_l2) >= 4  # upwards, one step at a time, past two steps
    assert all(best[b] > best[a] for a, b in zip(run_l2[:-2], run_l2[1:-1]))  # each step it took improved
    assert len(run_l2) == len(grid) or best[run_l2[-1]] <= best[run_l2[-2]]  # and it stopped at the first that did not
