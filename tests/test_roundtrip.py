"""save -> load keeps every fitted attribute of SANSA and EASE, not just the scores.

Compared after the round trip: the set of fitted attributes (names ending in ``_``), ``get_params()``,
``n_items_``, ``stats_`` (with the nested ``stage_devices``), ``history_`` (per-sweep ``device``, the
last entry's ``residual_device``), ``item_ids_`` (none, integer, string), ``weights_`` bit for bit
and ``device_`` as documented in :meth:`SANSA.load` (resolved again on the loading machine).
"""

import copy
import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sansa_gpu import EASE, SANSA
from sansa_gpu.backend import resolve_device
from sansa_gpu.synthetic import synthetic_interactions


@pytest.fixture(scope="module")
def X() -> sp.csr_matrix:
    return synthetic_interactions(n_users=400, n_items=80, mean_items_per_user=12, n_communities=4, seed=3)


def _table(X: sp.csr_matrix, kind: str) -> pd.DataFrame:
    """X as a user_id / item_id table: integer IDs beyond int32 and float64 precision, or
    non-ASCII strings (both sort in the same order as the column index)."""
    C = X.tocoo()
    if kind == "int":
        return pd.DataFrame({"user_id": C.row.astype(np.int64) * 7 + 1,
                             "item_id": C.col.astype(np.int64) * 3 + 2**62 + 1})
    return pd.DataFrame({"user_id": [f"u{r}" for r in C.row], "item_id": [f"item-{c:03d}-é" for c in C.col]})


def _fitted_attributes(model) -> list[str]:
    return sorted(k for k in vars(model) if k.endswith("_") and not k.startswith("_"))


def _assert_csr_identical(a: sp.csr_matrix, b: sp.csr_matrix, name: str) -> None:
    assert b.format == "csr" and a.shape == b.shape, name
    assert a.dtype == b.dtype == np.float32, name
    np.testing.assert_array_equal(b.indptr, a.indptr, err_msg=name)
    np.testing.assert_array_equal(b.indices, a.indices, err_msg=name)
    np.testing.assert_array_equal(b.data.view(np.uint32), a.data.view(np.uint32), err_msg=name)  # bit for bit


def _assert_same_sansa(fitted: SANSA, loaded: SANSA) -> None:
    assert _fitted_attributes(loaded) == _fitted_attributes(fitted)
    assert loaded.get_params() == fitted.get_params()
    assert loaded.n_items_ == fitted.n_items_ and type(loaded.n_items_) is int
    assert loaded.stats_ == fitted.stats_
    assert loaded.stats_["stage_devices"] == fitted.stats_["stage_devices"]
    assert loaded.history_ == fitted.history_
    assert [h["device"] for h in loaded.history_] == [h["device"] for h in fitted.history_]
    assert loaded.history_[-1]["residual_device"] == fitted.history_[-1]["residual_device"]
    if fitted.item_ids_ is None:
        assert loaded.item_ids_ is None
    else:
        assert loaded.item_ids_.kind == fitted.item_ids_.kind
        assert loaded.item_ids_.ids.dtype == fitted.item_ids_.ids.dtype
        np.testing.assert_array_equal(loaded.item_ids_.ids, fitted.item_ids_.ids)
    for name, a, b in zip(("Wt", "Z"), fitted.weights_, loaded.weights_):
        _assert_csr_identical(a, b, name)


@pytest.mark.parametrize("factorizer, source", [("icf", "matrix"), ("icf", "int"), ("icf", "str"),
                                                ("cholmod", "matrix")])
def test_sansa_round_trip_keeps_every_fitted_attribute(X, factorizer, source, tmp_path):
    data = X if source == "matrix" else _table(X, source)
    fitted = SANSA(l2=10.0, density=0.1, factorizer=factorizer, refine_sweeps=2, device="cpu").fit(data)
    stats = copy.deepcopy(fitted.stats_)
    fitted.recommend(X[:50], k=5)  # scoring does not modify the model (its cache is not saved)
    assert fitted.stats_ == stats and set(fitted.stats_["stage_devices"]) >= {"factorize", "refine", "weights"}
    if source != "matrix":
        assert fitted.item_ids_.kind == source
    fitted.save(tmp_path / "m.npz")
    loaded = SANSA.load(tmp_path / "m.npz")
    _assert_same_sansa(fitted, loaded)
    assert loaded.device_ == fitted.device_ == "cpu"
    if source != "matrix":  # the raw IDs still decode the same recommendations
        a = fitted.recommend_table(data.head(200), k=5).to_pandas()
        b = loaded.recommend_table(data.head(200), k=5).to_pandas()
        pd.testing.assert_frame_equal(a, b)


def test_sansa_device_after_load_is_as_documented(X, tmp_path):
    """SANSA.load: params['device'] as saved, except 'gpu' -> 'auto' or the ``device`` argument;
    ``device_`` is resolved from it on the loading machine; where the fit ran stays in
    ``stats_['stage_devices']`` and ``history_``."""
    fitted = SANSA(l2=10.0, density=0.1, factorizer="icf", refine_sweeps=1, device="auto").fit(X)
    fitted.save(tmp_path / "auto.npz")
    loaded = SANSA.load(tmp_path / "auto.npz")
    _assert_same_sansa(fitted, loaded)
    assert loaded.device == "auto" and loaded.device_ == resolve_device("auto")

    fitted.device = "gpu"  # as if trained on a GPU workstation
    fitted.save(tmp_path / "gpu.npz")
    loaded = SANSA.load(tmp_path / "gpu.npz")
    assert loaded.get_params() == {**fitted.get_params(), "device": "auto"}
    assert loaded.device_ == resolve_device("auto")
    assert loaded.stats_ == fitted.stats_ and loaded.history_ == fitted.history_

    loaded = SANSA.load(tmp_path / "gpu.npz", device="cpu")
    assert loaded.get_params() == {**fitted.get_params(), "device": "cpu"} and loaded.device_ == "cpu"
    assert loaded.stats_ == fitted.stats_ and loaded.history_ == fitted.history_


def test_ease_round_trip_keeps_every_fitted_attribute(X, tmp_path):
    fitted = EASE(l2=10.0).fit(X)
    fitted.save(tmp_path / "e.npz")
    loaded = EASE.load(tmp_path / "e.npz")
    assert _fitted_attributes(loaded) == _fitted_attributes(fitted)
    assert loaded.stats_ == fitted.stats_
    assert loaded.get_params() == fitted.get_params() == {"l2": 10.0}
    assert loaded.n_items_ == fitted.n_items_ and type(loaded.n_items_) is int
    assert loaded.B_.dtype == fitted.B_.dtype == np.float32 and loaded.B_.shape == fitted.B_.shape
    np.testing.assert_array_equal(loaded.B_.view(np.uint32), fitted.B_.view(np.uint32))


def test_ease_file_without_stats_loads_with_empty_stats(X, tmp_path):
    """EASE files written before ``stats_`` was saved: documented to load with ``stats_ = {}``."""
    fitted = EASE(l2=10.0).fit(X)
    fitted.save(tmp_path / "e.npz")
    with np.load(tmp_path / "e.npz") as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(arrays["__header__"].tobytes())
    header.pop("stats", None)
    arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    with open(tmp_path / "old.npz", "wb") as f:
        np.savez(f, **arrays)
    loaded = EASE.load(tmp_path / "old.npz")
    assert loaded.stats_ == {} and _fitted_attributes(loaded) == _fitted_attributes(fitted)
    np.testing.assert_array_equal(loaded.B_, fitted.B_)
