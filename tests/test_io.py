"""save -> load round trips; damaged or foreign files get a clear ValueError; writes are atomic."""

import json
import os
import zipfile

import numpy as np
import pytest
import scipy.sparse as sp

from sansa_gpu import EASE, SANSA
from sansa_gpu import io as sio


@pytest.fixture(scope="module")
def fitted(small_X):
    return SANSA(l2=10.0, density=0.1, refine_sweeps=2, device="cpu").fit(small_X)


def test_round_trip_identical_scores(fitted, small_X, tmp_path):
    path = tmp_path / "model.sansa"
    fitted.save(path)
    assert path.exists() and not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())
    loaded = SANSA.load(path)
    assert loaded.get_params() == fitted.get_params()
    ids_a, sc_a = fitted.recommend(small_X, k=10)
    ids_b, sc_b = loaded.recommend(small_X, k=10)
    np.testing.assert_array_equal(ids_a, ids_b)
    np.testing.assert_array_equal(sc_a, sc_b)
    assert (fitted.score(small_X) != loaded.score(small_X)).nnz == 0
    assert loaded.history_ == fitted.history_


def test_ease_round_trip(small_X, tmp_path):
    e = EASE(l2=10.0).fit(small_X)
    e.save(tmp_path / "e.sansa")
    e2 = EASE.load(tmp_path / "e.sansa")
    np.testing.assert_array_equal(e.B_, e2.B_)
    with pytest.raises(ValueError, match="EASE model, not a SANSA"):
        SANSA.load(tmp_path / "e.sansa")


def test_truncated_file(fitted, tmp_path):
    path = tmp_path / "m.sansa"
    fitted.save(path)
    data = path.read_bytes()
    (tmp_path / "cut.sansa").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        SANSA.load(tmp_path / "cut.sansa")


def test_not_a_model(tmp_path):
    (tmp_path / "x.sansa").write_text("hello")
    with pytest.raises(ValueError, match="not a readable"):
        SANSA.load(tmp_path / "x.sansa")
    np.savez(tmp_path / "other.npz", a=np.arange(3))
    with pytest.raises(ValueError, match="no header"):
        SANSA.load(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError):
        SANSA.load(tmp_path / "missing.sansa")


def _saved_arrays(model, tmp_path) -> dict:
    path = tmp_path / "m.sansa"
    model.save(path)
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def test_other_format_version(fitted, tmp_path):
    arrays = _saved_arrays(fitted, tmp_path)
    header = json.loads(arrays["__header__"].tobytes())
    header["format_version"] = 999
    arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    with open(tmp_path / "v.sansa", "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(ValueError, match="format version 999"):
        SANSA.load(tmp_path / "v.sansa")


def test_corrupt_arrays_rejected(fitted, tmp_path):
    arrays = _saved_arrays(fitted, tmp_path)
    arrays["Z_indices"] = arrays["Z_indices"].copy()
    arrays["Z_indices"][0] = 10**6
    with open(tmp_path / "c.sansa", "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(ValueError, match="inconsistent"):
        SANSA.load(tmp_path / "c.sansa")


def test_failed_save_leaves_old_file_and_no_partial(fitted, tmp_path, monkeypatch):
    path = tmp_path / "m.sansa"
    fitted.save(path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(sio.np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        fitted.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.sansa"]


def test_saved_file_is_a_plain_zip_without_pickles(fitted, tmp_path):
    path = tmp_path / "m.sansa"
    fitted.save(path)
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
    assert {"__header__.npy", "Wt_indptr.npy", "Z_data.npy"} <= names
    with np.load(path, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def test_model_saved_for_gpu_loads_anywhere(small_X, tmp_path):
    m = SANSA(l2=10.0, density=0.1, refine_sweeps=1, device="cpu").fit(small_X)
    m.device = "gpu"  # as if trained on a GPU workstation
    m.save(tmp_path / "g.sansa")
    loaded = SANSA.load(tmp_path / "g.sansa")
    from sansa_gpu.backend import GPU_VERIFIED_ON_DEVICE, gpu_status

    assert loaded.device_ == ("gpu" if gpu_status()[0] and GPU_VERIFIED_ON_DEVICE else "cpu")
    np.testing.assert_array_equal(loaded.recommend(small_X, k=5)[0], m.recommend(small_X, k=5)[0])


def test_model_file_with_a_repeated_index_is_refused_and_unsorted_rows_are_sorted(small_X, tmp_path):
    """The scoring kernels need distinct, ascending column indices per row of Wt and Z."""
    from sansa_gpu.io import csr_from_arrays

    M = sp.csr_matrix(np.array([[1, 0, 2], [0, 3, 0]], dtype=np.float32))
    arrays = {"W_indptr": M.indptr, "W_indices": np.array([2, 0, 1], dtype=np.int32),
              "W_data": np.array([2, 1, 3], dtype=np.float32)}
    loaded = csr_from_arrays("W", arrays, (2, 3), "m")
    assert loaded.has_canonical_format and (loaded != M).nnz == 0
    arrays["W_indices"] = np.array([0, 0, 1], dtype=np.int32)
    with pytest.raises(ValueError, match="repeats a column index within a row"):
        csr_from_arrays("W", arrays, (2, 3), "m")
