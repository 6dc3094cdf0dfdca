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
    assert params["l2"] == defaults.DEFAULT_L2
    assert params["refine_sweeps"] == defaults.DEFAULT_REFINE_SWEEPS
    assert params["refine_tol"] == defaults.REFINE_TOL
    assert SANSA().density_for(10_000) == defaults.DEFAULT_NNZ_PER_ITEM / 10_000
    fit = {a.dest: a for a in _subparser("fit")._actions}
    assert fit["l2"].default == defaults.DEFAULT_L2
    assert fit["refine_sweeps"].default == defaults.DEFAULT_REFINE_SWEEPS
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
