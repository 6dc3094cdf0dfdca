"""Behaviour that used to be silent is explicit: ``min_cooccurrence`` with CHOLMOD is refused, and
the incomplete Cholesky's diagonal-shift restarts are recorded (factor, ``stats_``, a warning) or,
when exhausted, raise an error naming the pivot and the shifts tried."""

import json
import logging

import numpy as np
import pytest

from sansa_gpu import SANSA, factorize
from sansa_gpu.factorize import icf, ldlt_icf, nnz_budget
from sansa_gpu.gram import gram_lower
from sansa_gpu.synthetic import synthetic_interactions


@pytest.fixture(scope="module")
def X():
    return synthetic_interactions(n_users=400, n_items=80, mean_items_per_user=12, n_communities=4, seed=3)


# ---------------------------------------------------------------- min_cooccurrence
def test_min_cooccurrence_with_cholmod_is_refused(X):
    with pytest.raises(ValueError, match="min_cooccurrence applies to factorizer='icf' only"):
        SANSA(min_cooccurrence=2, factorizer="cholmod").fit(X)
    m = SANSA(min_cooccurrence=2, factorizer="icf")  # where it does apply
    m.factorizer = "cholmod"  # changed after construction: fit checks again instead of ignoring it
    with pytest.raises(ValueError, match="min_cooccurrence applies to factorizer='icf' only"):
        m.fit(X)
    assert not hasattr(m, "weights_")
    SANSA(min_cooccurrence=0, factorizer="cholmod")  # the default (no pruning) stays valid


def test_model_file_with_cholmod_and_min_cooccurrence_still_loads(X, tmp_path, caplog):
    """Files written before the check: the pruning was never applied, so they load with
    min_cooccurrence=0 (what was fitted), logged, instead of being unreadable."""
    m = SANSA(l2=10.0, density=0.1, factorizer="cholmod", refine_sweeps=1, device="cpu").fit(X)
    m.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(arrays["__header__"].tobytes())
    header["params"]["min_cooccurrence"] = 2.0
    arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    with open(tmp_path / "old.npz", "wb") as f:
        np.savez(f, **arrays)
    with caplog.at_level(logging.WARNING, logger="sansa_gpu"):
        loaded = SANSA.load(tmp_path / "old.npz")
    assert loaded.get_params() == {**m.get_params(), "min_cooccurrence": 0.0}
    assert "min_cooccurrence" in caplog.text
    np.testing.assert_array_equal(loaded.recommend(X, k=5)[0], m.recommend(X, k=5)[0])


# ---------------------------------------------------------------- ICF restarts
@pytest.fixture
def core_shifts(monkeypatch):
    """Record the diagonal shift of every incomplete Cholesky attempt (the 5th argument of the core)."""
    shifts = []
    core = factorize.incomplete._icf_core

    def recording(*args):
        shifts.append(float(args[4]))
        return core(*args)

    monkeypatch.setattr(factorize.incomplete, "_icf_core", recording)
    return shifts


def test_icf_restart_is_recorded_in_factor_and_stats(X, core_shifts, caplog, tmp_path):
    # l2 = 1e-3 at density 0.02: dropping entries makes pivots non-positive, the ICF restarts
    with caplog.at_level(logging.WARNING, logger="sansa_gpu"):
        m = SANSA(l2=1e-3, density=0.02, factorizer="icf", refine_sweeps=1, device="cpu").fit(X)
    assert len(core_shifts) >= 2, "this case must force at least one restart"
    s = m.stats_
    assert s["icf_restarts"] == len(core_shifts) - 1
    assert [b["shift"] for b in s["icf_breakdowns"]] == core_shifts[:-1]  # every failed attempt, in order
    assert s["icf_breakdowns"][0]["shift"] == 1e-3
    assert all(type(b["pivot"]) is int and 0 <= b["pivot"] < X.shape[1] for b in s["icf_breakdowns"])
    assert s["icf_shift"] == core_shifts[-1] > 1e-3  # the shift the factor was really computed with
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "sansa_gpu.factorize"]
    assert warned and f"{s['icf_shift']:.4g}" in warned[-1].getMessage()
    m.save(tmp_path / "m.npz")
    assert SANSA.load(tmp_path / "m.npz").stats_ == s  # the record survives save / load

    core_shifts.clear()  # the factor itself carries the record
    f = ldlt_icf(X, 1e-3, nnz_budget(0.02, X.shape[1]), 0.0, "popularity")
    assert f.shift == core_shifts[-1] and [b["shift"] for b in f.breakdowns] == core_shifts[:-1]


def test_icf_without_restart_records_none(X, core_shifts):
    m = SANSA(l2=10.0, density=0.1, factorizer="icf", refine_sweeps=1, device="cpu").fit(X)
    assert core_shifts == [10.0]
    assert m.stats_["icf_restarts"] == 0 and m.stats_["icf_breakdowns"] == [] and m.stats_["icf_shift"] == 10.0


def test_icf_restarts_exhausted_raise_naming_the_last_shift_tried(X, core_shifts, caplog):
    A = gram_lower(X, 0.0)
    with caplog.at_level(logging.INFO, logger="sansa_gpu"):
        with pytest.raises(np.linalg.LinAlgError) as err:
            icf(A, 1e-12, budget=X.shape[1] + 40, max_restarts=2)
    assert len(core_shifts) == 3  # the first attempt and two restarts
    msg = str(err.value)
    assert "pivot" in msg and "not positive" in msg
    assert f"{core_shifts[0]:.4g}" in msg and f"{core_shifts[-1]:.4g}" in msg  # the shifts really tried
    assert caplog.text.count("restarting with shift") == 2  # no restart announced that never ran


def test_model_refuses_when_every_icf_attempt_breaks_down(X, monkeypatch):
    """A breakdown at every shift must stop the fit with the problem named, not return a model."""
    tried = []

    def always_breaks(*args):
        tried.append(float(args[4]))
        return -1  # pivot 0 not positive

    monkeypatch.setattr(factorize.incomplete, "_icf_core", always_breaks)
    m = SANSA(l2=10.0, density=0.1, factorizer="icf", device="cpu")
    with pytest.raises(ValueError, match=r"pivot 0 .*not positive") as err:
        m.fit(X)
    assert isinstance(err.value, np.linalg.LinAlgError)
    assert "density" in str(err.value) and "l2" in str(err.value)  # says what to change
    assert len(tried) > 1 and tried == sorted(tried)  # it did restart with growing shifts first
    assert not hasattr(m, "weights_")
