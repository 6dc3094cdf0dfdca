"""scikit-learn's estimator contract for SANSA and EASE, checked with scikit-learn's own ``clone``."""

import numpy as np
import pytest

from conftest import require
from sansa_gpu import EASE, SANSA
from sansa_gpu.errors import NotFittedError


@pytest.fixture(scope="module")
def sklearn_base():
    return require("sklearn.base")


def test_clone_gives_an_unfitted_estimator_with_equal_parameters(sklearn_base, small_X):
    fitted = SANSA(l2=5, density=1e-1, device="cpu").fit(small_X)
    copy = sklearn_base.clone(fitted)
    assert type(copy) is SANSA and copy.get_params() == fitted.get_params()
    assert copy.get_params()["l2"] == 5 and copy.get_params()["density"] == 1e-1
    assert not hasattr(copy, "weights_")
    with pytest.raises(NotFittedError):
        copy.recommend(small_X, k=3)
    ease = sklearn_base.clone(EASE(l2=50))
    assert type(ease) is EASE and ease.get_params() == {"l2": 50}


def test_set_params_then_fit_and_bad_names(small_X):
    m = SANSA(device="cpu")
    assert m.set_params(l2=7.5, density=0.2, refine_sweeps=1) is m
    m.fit(small_X)
    assert m.stats_["density"] == 0.2 and m.l2 == 7.5 and len(m.history_) == 2
    with pytest.raises(ValueError, match="invalid parameter 'alpha'.*valid parameters are"):
        m.set_params(alpha=1)
    e = EASE().set_params(l2=30.0).fit(small_X)
    assert e.l2 == 30.0 and e.B_.shape == (small_X.shape[1],) * 2
    with pytest.raises(ValueError, match="invalid parameter"):
        EASE().set_params(density=0.1)


def test_invalid_parameters_raise_at_fit_not_at_construction(small_X):
    m = SANSA(l2=-1.0)  # scikit-learn builds estimators from any parameters (clone, grid search)
    assert m.get_params()["l2"] == -1.0
    with pytest.raises(ValueError, match="l2"):
        m.fit(small_X)
    with pytest.raises(ValueError, match="l2"):
        EASE(l2=0).fit(small_X)


def test_get_params_returns_what_was_set_and_saving_normalises(small_X, tmp_path):
    m = SANSA(l2=np.float32(12.0), refine_sweeps=np.int64(1), device="cpu").fit(small_X)
    assert isinstance(m.get_params()["l2"], np.float32)  # as set, for clone's identity check
    m.save(tmp_path / "m.npz")
    loaded = SANSA.load(tmp_path / "m.npz")
    assert type(loaded.l2) is float and loaded.l2 == 12.0 and loaded.refine_sweeps == 1
