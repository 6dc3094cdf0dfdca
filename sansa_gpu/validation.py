"""Input checks shared by every estimator: fail at the door with a message that names the problem."""

from __future__ import annotations

import numbers

import numba
import numpy as np
import scipy.sparse as sp


@numba.njit(cache=True)
def _rows_strictly_increasing(indptr, indices, n_cols) -> bool:
    """True when indptr does not decrease and every row's column indices are strictly increasing and
    in [0, n_cols) (sorted, no duplicates): scipy's canonical-format test, computed afresh instead of
    read from (and cached on) the caller's matrix, whose cached flag goes stale if its index arrays
    are edited in place."""
    for u in range(indptr.shape[0] - 1):
        if indptr[u + 1] < indptr[u]:
            return False
        prev = -1
        for p in range(indptr[u], indptr[u + 1]):
            j = indices[p]
            if j <= prev or j >= n_cols:
                return False
            prev = j
    return True


def _is_canonical_csr(X) -> bool:
    """X is exactly a float32 ``scipy.sparse.csr_matrix`` with native-endian int32/int64 index arrays
    of consistent length and sorted, duplicate-free, in-range rows: safe to use without a copy."""
    if type(X) is not sp.csr_matrix or X.dtype != np.float32:
        return False
    ip, ix = X.indptr, X.indices
    if not all(a.dtype in (np.int32, np.int64) and a.dtype.isnative and a.ndim == 1 for a in (ip, ix)):
        return False
    if ip.shape[0] != X.shape[0] + 1 or ip[0] != 0 or ip[-1] != ix.shape[0] or X.data.shape != ix.shape:
        return False
    return bool(_rows_strictly_increasing(ip, ix, X.shape[1]))


def check_interactions(X, *, name: str = "X", n_items: int | None = None, require_nonempty: bool = False) -> sp.csr_matrix:
    """Validate a users x items interaction matrix and return it in canonical form.

    Accepts any SciPy sparse matrix or array of a real numeric dtype. Returns a CSR matrix,
    float32, with duplicates summed, explicit zeros removed and sorted indices. Values are kept
    as interaction weights (a 0/1 matrix gives the classic implicit-feedback model).

    An input that is already canonical (a ``scipy.sparse.csr_matrix``, float32, native int32/int64
    indices, sorted without duplicates — checked afresh, not read from scipy's cached flag — no
    explicit zeros) is returned itself, not copied: the checks read it
    once, and a 212M-interaction fit or a nightly scoring batch does not pay a second copy. The
    package never writes into the returned matrix; anything else is a new canonical copy.

    Raises TypeError for non-sparse or non-numeric input, ValueError for wrong shape, NaN/inf,
    negative values, an item count that differs from ``n_items``, or (``require_nonempty``) no
    interactions at all.
    """
    if not sp.issparse(X):
        kind = type(X).__name__
        raise TypeError(
            f"{name} must be a scipy.sparse matrix (users x items), got {kind}; "
            "wrap dense data with scipy.sparse.csr_matrix(...)"
        )
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (users x items), got shape {X.shape}")
    if X.dtype == np.bool_:
        X = X.astype(np.float32)
    if not (np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.floating)):
        raise TypeError(f"{name} must have a real numeric dtype, got {X.dtype}")
    if n_items is not None and X.shape[1] != n_items:
        raise ValueError(f"{name} has {X.shape[1]} item columns but the model was fitted on {n_items} items")
    canonical = _is_canonical_csr(X)
    if not canonical:  # a new float32 CSR with duplicates summed and rows sorted
        X = sp.csr_matrix(X, dtype=np.float32, copy=True)
        X.sum_duplicates()
    data = X.data
    low, high = (data.min(), data.max()) if data.size else (1.0, 1.0)  # NaN propagates: no temporary mask
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"{name} contains NaN or infinite values ({int(np.count_nonzero(~np.isfinite(data)))} entries)")
    if low < 0:
        raise ValueError(f"{name} contains negative values ({int(np.count_nonzero(data < 0))} entries); interactions must be >= 0")
    if low == 0:  # explicit zeros: dropped, from a copy when X is the caller's matrix
        X = X.copy() if canonical else X
        X.eliminate_zeros()
    if require_nonempty and X.nnz == 0:
        raise ValueError(f"{name} has no interactions (all entries are zero); nothing to fit")
    return X


def check_positive_int(value, name: str) -> int:
    """Return ``value`` as int; TypeError if not integral, ValueError if <= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return int(value)


def check_nonnegative_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def check_positive_float(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def check_density(value) -> float:
    """Weight density delta: nnz of each factor is about delta * n_items**2; must lie in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"density must be a real number, got {type(value).__name__}")
    value = float(value)
    if not (0.0 < value <= 1.0):
        raise ValueError(f"density must lie in (0, 1], got {value}")
    return value
