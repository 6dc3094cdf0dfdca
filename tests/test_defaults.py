"""The defaults are defined once (sansa_gpu/defaults.py): the estimator, the command line and tune agree."""

import inspect

from sansa_gpu import SANSA, defaults, tuning
from sansa_gpu.cli import build_parser


def _subparser(name):
    parser = build_parser()
    for action in parser._actions:
        if getattr(action, "choices", None) and name in action.choices:
            return action.choices[name]
    raise AssertionError(f"no subcommand {name}")


def test_the_estimator_the_cli_and_tune_read_one_set_of_defaults():
    params = SANSA().get_params()
    assert params["l2"] is None and params["refine_sweeps"] is None and params["density"] is None  # from the data
    assert params["min_cooccurrence"] is None
    assert params["refine_tol"] == defaults.REFINE_TOL
    assert SANSA().density_for(10_000) == defaults.DEFAULT_NNZ_PER_ITEM / 10_000
    assert SANSA().density_for(10_000, defaults.DENSE_DATA_ITEMS_PER_USER) == defaults.DENSE_NNZ_PER_ITEM / 10_000
    assert SANSA().refine_sweeps_for() == defaults.DEFAULT_REFINE_SWEEPS
    assert SANSA().refine_sweeps_for(defaults.DENSE_DATA_ITEMS_PER_USER) == defaults.DENSE_REFINE_SWEEPS
    fit = {a.dest: a for a in _subparser("fit")._actions}
    assert fit["l2"].default is None and fit["refine_sweeps"].default is None
    assert f"default: {defaults.DEFAULT_L2:g} on the column-scaled Gram" in fit["l2"].help
    assert f"{defaults.DENSE_REFINE_SWEEPS} with at least" in fit["refine_sweeps"].help
    assert fit["min_cooccurrence"].default is None
    assert f"default: {defaults.DEFAULT_MIN_COOCCURRENCE:g} for 0/1 data" in fit["min_cooccurrence"].help
    assert tuple(fit["factorizer"].choices) == defaults.FACTORIZERS and fit["factorizer"].default == params["factorizer"]
    assert tuple(fit["device"].choices) == defaults.DEVICES and fit["device"].default == params["device"]
    assert f"default: {defaults.DEFAULT_NNZ_PER_ITEM} nonzeros per item" in fit["density"].help
    tune_cli = {a.dest: a for a in _subparser("tune")._actions}
    assert "1 10 100 1000" in tune_cli["l2_grid"].help and "0 2 3" in tune_cli["min_cooccurrence"].help
    sig = inspect.signature(tuning.tune).parameters
    assert sig["l2_grid"].default == defaults.TUNE_L2_GRID
    assert sig["min_cooccurrence"].default == defaults.TUNE_MIN_COOCCURRENCE
    assert sig["sweeps_grid"].default == defaults.TUNE_SWEEPS_GRID
    assert defaults.DEFAULT_NNZ_PER_ITEM in defaults.TUNE_NNZ_PER_ITEM  # the default model is on tune's ladder
    ladder = tuning.density_ladder(1000)
    assert ladder == [c / 1000 for c in defaults.TUNE_NNZ_PER_ITEM]


def test_warm_up_compiles_on_a_copy_and_leaves_the_model_alone():
    from sansa_gpu import EASE, warm_up

    model = SANSA(l2=7.0, density=0.05, device="cpu")
    seconds = warm_up(model)
    assert seconds > 0 and not hasattr(model, "weights_") and model.get_params()["l2"] == 7.0
    ease = EASE(l2=3.0)
    assert warm_up(ease) > 0 and not hasattr(ease, "B_")


def _dense_and_sparse():
    from sansa_gpu.synthetic import synthetic_interactions

    dense = synthetic_interactions(n_users=400, n_items=600, mean_items_per_user=150, n_communities=4, seed=1)
    sparse = synthetic_interactions(n_users=400, n_items=600, mean_items_per_user=8, n_communities=4, seed=1)
    return dense, sparse


def test_default_density_and_sweeps_follow_the_interactions_per_user():
    from sansa_gpu.factorize.rule import interactions_per_user

    dense, sparse = _dense_and_sparse()
    assert interactions_per_user(dense) >= defaults.DENSE_DATA_ITEMS_PER_USER > interactions_per_user(sparse)
    d = SANSA(factorizer="icf", device="cpu").fit(dense)
    s = SANSA(factorizer="icf", device="cpu").fit(sparse)
    assert d.density_ == defaults.DENSE_NNZ_PER_ITEM / 600 and d.refine_sweeps_ == defaults.DENSE_REFINE_SWEEPS
    assert s.density_ == defaults.DEFAULT_NNZ_PER_ITEM / 600 and s.refine_sweeps_ == defaults.DEFAULT_REFINE_SWEEPS
    assert len(d.history_) == defaults.DENSE_REFINE_SWEEPS + 1 and len(s.history_) == defaults.DEFAULT_REFINE_SWEEPS + 1
    # what the caller sets is used as it is, on dense data too
    e = SANSA(factorizer="icf", density=0.1, refine_sweeps=1, l2=3.0, device="cpu").fit(dense)
    assert (e.density_, e.refine_sweeps_, e.l2_) == (0.1, 1, 3.0)


def test_default_l2_is_20_on_the_scaled_gram_and_scales_with_popularity_on_the_unscaled_gram():
    import numpy as np

    _, X = _dense_and_sparse()
    X = X.copy()
    X.data[::3] = 2.5  # weighted: the diagonal of X^T X is the column sum of squares
    assert SANSA(factorizer="icf", device="cpu").fit(X).l2_ == defaults.DEFAULT_L2
    unscaled = SANSA(factorizer="icf", column_scaling=False, device="cpu").fit(X)
    diag = np.asarray(X.multiply(X).sum(axis=0)).ravel()
    expected = defaults.L2_PER_MEAN_DIAGONAL * diag[diag > 0].mean()
    assert np.isclose(unscaled.l2_, expected, rtol=1e-12) and unscaled.stats_["l2"] == unscaled.l2_
    # the same model as with that l2 given
    given = SANSA(factorizer="icf", column_scaling=False, l2=unscaled.l2_, device="cpu").fit(X)
    for a, b in zip(unscaled.weights_, given.weights_):
        assert (a != b).nnz == 0


def test_resolved_defaults_survive_save_and_load(tmp_path):
    dense, _ = _dense_and_sparse()
    m = SANSA(factorizer="icf", device="cpu").fit(dense)
    m.save(tmp_path / "m.npz")
    back = SANSA.load(tmp_path / "m.npz")
    assert back.get_params()["l2"] is None and back.get_params()["refine_sweeps"] is None
    assert (back.l2_, back.density_, back.refine_sweeps_) == (m.l2_, m.density_, m.refine_sweeps_)


def test_default_pruning_is_2_for_icf_on_binary_data_and_0_on_weighted_data_or_cholmod():
    _, X = _dense_and_sparse()
    binary = SANSA(factorizer="icf", device="cpu").fit(X)
    assert binary.min_cooccurrence_ == defaults.DEFAULT_MIN_COOCCURRENCE
    pruned = SANSA(factorizer="icf", min_cooccurrence=defaults.DEFAULT_MIN_COOCCURRENCE, device="cpu").fit(X)
    for a, b in zip(binary.weights_, pruned.weights_):
        assert (a != b).nnz == 0  # the same model as the value given
    assert SANSA(factorizer="icf", min_cooccurrence=0, device="cpu").fit(X).min_cooccurrence_ == 0.0
    counts = X.copy()
    counts.data[:3] = 2.0  # a repeated interaction summed: still counts, still pruned
    assert SANSA(factorizer="icf", device="cpu").fit(counts).min_cooccurrence_ == defaults.DEFAULT_MIN_COOCCURRENCE
    weighted = X.copy()
    weighted.data[::2] = 0.5  # values are not counts: nothing is pruned by default
    assert SANSA(factorizer="icf", device="cpu").fit(weighted).min_cooccurrence_ == 0.0
    assert SANSA().min_cooccurrence_for(X, "cholmod") == 0.0
    # density 1 stays EASE: nothing is pruned
    assert SANSA(factorizer="icf", density=1.0, device="cpu").fit(X).min_cooccurrence_ == 0.0


def test_the_memory_estimate_counts_the_resolved_dense_default():
    from sansa_gpu.factorize import nnz_budget

    dense, sparse = _dense_and_sparse()
    for X, per_item in ((dense, defaults.DENSE_NNZ_PER_ITEM), (sparse, defaults.DEFAULT_NNZ_PER_ITEM)):
        est = SANSA(factorizer="icf").estimate_memory(X)
        assert est["budget"] == nnz_budget(per_item / X.shape[1], X.shape[1])
