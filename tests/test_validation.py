"""Bad input gets a clear error naming the problem."""

import numpy as np
import pytest
import scipy.sparse as sp

from sansa_gpu import EASE, SANSA


@pytest.fixture(scope="module")
def fitted(small_X):
    return SANSA(l2=10.0, density=0.1, refine_sweeps=1, device="cpu").fit(small_X)


def test_dense_input_rejected():
    with pytest.raises(TypeError, match="scipy.sparse"):
        SANSA(device="cpu").fit(np.ones((3, 3)))


def test_non_numeric_rejected():
    X = sp.csr_matrix(np.ones((3, 3), dtype=np.complex64))
    with pytest.raises(TypeError, match="real numeric dtype"):
        SANSA(device="cpu").fit(X)


def test_nan_and_inf_rejected():
    X = sp.csr_matrix(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        SANSA(device="cpu").fit(X)
    X = sp.csr_matrix(np.array([[1.0, np.inf], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        EASE().fit(X)


def test_negative_rejected():
    X = sp.csr_matrix(np.array([[1.0, -1.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="negative"):
        SANSA(device="cpu").fit(X)


def test_empty_rejected():
    with pytest.raises(ValueError, match="no interactions"):
        SANSA(device="cpu").fit(sp.csr_matrix((4, 5), dtype=np.float32))
    X = sp.csr_matrix((np.zeros(2), ([0, 1], [0, 1])), shape=(2, 2))  # explicit zeros only
    with pytest.raises(ValueError, match="no interactions"):
        SANSA(device="cpu").fit(X)


@pytest.mark.parametrize("kw,exc,msg", [
    ({"density": 0.0}, ValueError, "density"),
    ({"density": 1.5}, ValueError, "density"),
    ({"density": "x"}, TypeError, "density"),
    ({"l2": 0.0}, ValueError, "l2"),
    ({"l2": -1.0}, ValueError, "l2"),
    ({"l2": float("nan")}, ValueError, "l2"),
    ({"refine_sweeps": -1}, ValueError, "refine_sweeps"),
    ({"refine_sweeps": 1.5}, TypeError, "refine_sweeps"),
    ({"factorizer": "lu"}, ValueError, "factorizer"),
    ({"device": "tpu"}, ValueError, "device"),
    ({"ordering": "random"}, ValueError, "ordering"),
    ({"ordering": "popularity", "factorizer": "cholmod"}, ValueError, "factorizer=.icf."),
    ({"min_cooccurrence": 2.0, "factorizer": "cholmod"}, ValueError, "factorizer=.icf. only"),
    ({"refine_tol": 0.0}, ValueError, "refine_tol"),
    ({"min_cooccurrence": -1.0}, ValueError, "min_cooccurrence"),
    ({"column_scaling": "yes"}, TypeError, "column_scaling"),
])
def test_bad_hyperparameters(kw, exc, msg, small_X):
    """Checked when fit runs, not at construction (scikit-learn's contract: clone and set_params
    must be able to build any estimator), with the same messages."""
    model = SANSA(**kw)
    with pytest.raises(exc, match=msg):
        model.fit(small_X)
    with pytest.raises(exc, match=msg):
        model.estimate_memory(small_X)
    assert not hasattr(model, "weights_")


@pytest.mark.parametrize("k", [0, -3])
def test_bad_k(fitted, small_X, k):
    with pytest.raises(ValueError, match="k must be > 0"):
        fitted.recommend(small_X, k=k)


def test_k_not_int(fitted, small_X):
    with pytest.raises(TypeError, match="k must be an integer"):
        fitted.recommend(small_X, k=2.5)


def test_item_count_mismatch(fitted, small_X):
    X = sp.csr_matrix((2, small_X.shape[1] + 1), dtype=np.float32)
    with pytest.raises(ValueError, match="item columns but the model was fitted on"):
        fitted.recommend(X, k=5)
    with pytest.raises(ValueError, match="item columns"):
        fitted.score(X)


def test_not_fitted():
    """One error that is both ValueError and AttributeError, as scikit-learn's NotFittedError."""
    from sansa_gpu import EASE
    from sansa_gpu.errors import NotFittedError

    for model in (SANSA(device="cpu"), EASE()):
        with pytest.raises(NotFittedError, match="not fitted") as info:
            model.recommend(sp.csr_matrix((1, 3)), k=2)
        assert isinstance(info.value, ValueError) and isinstance(info.value, AttributeError)


def test_duplicates_summed_and_explicit_zeros_ignored(small_X):
    X = sp.coo_matrix(small_X)
    # duplicate every entry (values 2) and add explicit zeros: same model as 2 * X
    rows = np.concatenate([X.row, X.row, [0, 1]])
    cols = np.concatenate([X.col, X.col, [0, 1]])
    vals = np.concatenate([X.data, X.data, [0.0, 0.0]]).astype(np.float32)
    Xdup = sp.coo_matrix((vals, (rows, cols)), shape=X.shape)
    a = SANSA(l2=10.0, density=0.1, refine_sweeps=1, device="cpu").fit(Xdup)
    b = SANSA(l2=10.0, density=0.1, refine_sweeps=1, device="cpu").fit(2 * small_X)
    assert (a.weights_[0] != b.weights_[0]).nnz == 0 and (a.weights_[1] != b.weights_[1]).nnz == 0


def test_items_without_interactions_never_recommended(small_X):
    X = sp.hstack([small_X, sp.csr_matrix((small_X.shape[0], 3), dtype=np.float32)]).tocsr()
    m = SANSA(l2=10.0, density=0.2, refine_sweeps=2, device="cpu").fit(X)
    ids, _ = m.recommend(X, k=X.shape[1])
    assert not np.isin(ids, np.arange(small_X.shape[1], X.shape[1])).any()


def test_gpu_without_device_is_clear_error(small_X):
    from sansa_gpu.backend import gpu_status

    if gpu_status()[0]:
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="no GPU is usable"):
        SANSA(device="gpu").fit(small_X)


def test_auto_picks_cpu_without_gpu_and_logs(small_X, caplog):
    from sansa_gpu.backend import gpu_status

    if gpu_status()[0]:
        pytest.skip("a GPU is present")
    import logging

    with caplog.at_level(logging.INFO, logger="sansa_gpu"):
        m = SANSA(l2=10.0, density=0.1, refine_sweeps=1, device="auto").fit(small_X)
    assert m.device_ == "cpu"
    assert "using the CPU" in caplog.text


def test_canonical_input_is_not_copied_and_is_left_unchanged(small_X):
    """A canonical float32 CSR input passes through without a copy (fit and scoring batches do not
    pay one), every other form comes back as a new canonical matrix, and fitting / scoring never
    writes into the caller's matrix."""
    from sansa_gpu.validation import check_interactions

    X = sp.csr_matrix(small_X, dtype=np.float32)
    X.sum_duplicates()
    X.eliminate_zeros()
    assert X.has_canonical_format and check_interactions(X) is X
    before = (X.data.copy(), X.indices.copy(), X.indptr.copy())
    model = SANSA(l2=10.0, density=0.1, refine_sweeps=1, device="cpu").fit(X)
    model.recommend(X, k=5)
    model.score(X)
    for a, b in zip(before, (X.data, X.indices, X.indptr)):
        np.testing.assert_array_equal(a, b)
    # not canonical in some respect: a new matrix, canonical, the input untouched
    unsorted = X.copy()
    for u in range(X.shape[0]):  # each row's entries in reverse order
        lo, hi = X.indptr[u], X.indptr[u + 1]
        unsorted.indices[lo:hi], unsorted.data[lo:hi] = X.indices[lo:hi][::-1], X.data[lo:hi][::-1]
    unsorted.has_sorted_indices = False
    for Y in (X.astype(np.float64), sp.csr_array(X), X.tocsc(), unsorted):
        out = check_interactions(Y)
        assert out is not Y and type(out) is sp.csr_matrix and out.dtype == np.float32 and out.has_canonical_format
        assert (out != X).nnz == 0
    Z = X.copy()
    Z.data[0] = 0.0  # an explicit zero: copied and dropped
    out = check_interactions(Z)
    assert out is not Z and out.nnz == X.nnz - 1 and Z.nnz == X.nnz
    Z.data[0] = -1.0
    with pytest.raises(ValueError, match="negative"):
        check_interactions(Z)
    Z.data[0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        check_interactions(Z)
    with pytest.raises(ValueError, match="no interactions"):
        check_interactions(sp.csr_matrix((3, 4), dtype=np.float32), require_nonempty=True)


def test_canonical_check_does_not_trust_scipys_cached_flag():
    """scipy caches has_canonical_format on the matrix; an in-place edit of its indices afterwards
    leaves the flag True. check_interactions tests the rows itself, so such a matrix (and one with
    big-endian indices, which the numba kernels cannot take) still gets a sorted native copy."""
    from sansa_gpu.validation import check_interactions

    X = sp.random(50, 40, density=0.3, format="csr", dtype=np.float32, random_state=0)
    X.data += 0.1
    assert X.has_canonical_format  # now cached True on X
    lo, hi = X.indptr[3], X.indptr[4]
    X.indices[lo:hi] = X.indices[lo:hi][::-1].copy()
    X.data[lo:hi] = X.data[lo:hi][::-1].copy()
    out = check_interactions(X)
    assert out is not X
    assert all(np.all(np.diff(out.indices[out.indptr[u]:out.indptr[u + 1]]) > 0) for u in range(X.shape[0]))
    assert (out != sp.csr_matrix(X.toarray())).nnz == 0
    Y = sp.random(50, 40, density=0.3, format="csr", dtype=np.float32, random_state=1)
    Y.data += 0.1
    Y.indices = Y.indices.astype(">i4")
    out = check_interactions(Y)
    assert out is not Y and out.indices.dtype.isnative and (out != Y).nnz == 0
