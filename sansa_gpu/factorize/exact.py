"""Stage 2 with the exact factor: CHOLMOD (scikit-sparse, imported lazily so that machines without
SuiteSparse can import the package) factorises ``X^T X + l2 I`` exactly, then the factor is cut to the
budget (:func:`ldlt_cholmod`); and the exact factor's time predicted from its structure
(:func:`predict_exact_seconds`), which ``tune`` and the ``auto`` rule price it by."""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.sparse as sp

from .factor import LDLFactor, sparsify_cholesky_factor

logger = logging.getLogger("sansa_gpu.factorize")  # one logger name for every factorisation stage

CHOLMOD_ORDERINGS = ("colamd", "amd", "metis", "nesdis", "natural", "best")
"""CHOLMOD's fill-reducing methods (on X X^T's columns, i.e. the Gram)."""


def _owned_transpose(X: sp.csr_matrix) -> sp.csc_matrix:
    """X^T as a float64 CSC matrix that owns all of its arrays, rows sorted.

    CHOLMOD sorts the row indices of the matrix it is given *in place*; SciPy's ``csc_matrix(X.T,
    dtype=...)`` shares the index arrays with X while copying the values, so handing that to
    CHOLMOD silently reorders X's indices without its values whenever they were unsorted (for
    example after a column scaling), corrupting X. Always give CHOLMOD this private copy.
    """
    X = sp.csr_matrix(X)
    Xt = sp.csc_matrix((X.data.astype(np.float64), X.indices.copy(), X.indptr.copy()), shape=X.shape[::-1])
    Xt.sort_indices()
    return Xt


CHOLMOD_INSTALL_HINT = ("install SuiteSparse and the extra: apt-get install libsuitesparse-dev (Debian/Ubuntu; "
                        "suitesparse on conda/brew), then pip install 'sansa_gpu[cholmod]'")


def cholmod_available() -> bool:
    """Whether scikit-sparse's CHOLMOD can be imported (the optional extra ``sansa_gpu[cholmod]``)."""
    try:
        import_cholmod()
    except ImportError:
        return False
    return True


def import_cholmod():
    """``sksparse.cholmod``, or an ImportError that names the extra and the system package."""
    try:
        from sksparse import cholmod
    except ImportError as exc:
        raise ImportError(f"factorizer='cholmod' needs scikit-sparse, which is not installed: {CHOLMOD_INSTALL_HINT}. "
                          f"factorizer='icf' (the default choice without it) needs neither.") from exc
    return cholmod


#: Time model of the exact CHOLMOD factor (ordering, supernodal LLᵀ and the cut) on the 2-core VM,
#: fitted to the factors measured there (benchmarks/exact_cost.py --fit over
#: benchmarks/results/exact_cost.jsonl): seconds = EXACT_SECONDS_PER_GFLOP * GFlop (sum of squared
#: column counts) + EXACT_SECONDS_PER_MNNZ * million nonzeros of the factor. Predicted / measured on
#: the nine shared datasets whose exact factor fits (0.9 s on ml-1m to 134 s on gowalla): 0.87-1.09.
EXACT_SECONDS_PER_GFLOP = 0.0096

EXACT_SECONDS_PER_MNNZ = 0.109

#: Catalogues above this many items are not analysed for an exact factor by ``tune`` (the COLAMD
#: ordering alone takes minutes at 500k items, and no exact factor of real data that size fits memory).
EXACT_PROFILE_MAX_ITEMS = 200_000


def predict_exact_seconds(profile: dict) -> float:
    """Predicted seconds of the exact CHOLMOD factor from :func:`sansa_gpu.memory.exact_factor_profile`."""
    return float(EXACT_SECONDS_PER_GFLOP * profile["flops"] / 1e9 + EXACT_SECONDS_PER_MNNZ * profile["fill"] / 1e6)


def ldlt_cholmod(X: sp.csr_matrix, l2: float, budget: int, ordering: str = "colamd",
                 cache=None) -> LDLFactor:
    """Exact CHOLMOD factorisation of ``A = X^T X + l2*I`` (the Gram is never formed: CHOLMOD
    factorises ``X^T (X^T)^T + beta*I`` directly), then magnitude-cut to ``budget`` nonzeros.

    X : (users, n) CSR, nonnegative. Memory: the exact factor, which for dense co-occurrence data
    can be a large fraction of n^2 (gowalla: 0.3 n^2); use a lower density with ``factorizer="icf"``
    on catalogs whose exact factor does not fit. ``cache`` (:class:`FactorCache`): the exact factor
    of this (X, l2, ordering) is computed once and cut to each budget.
    """
    if ordering not in CHOLMOD_ORDERINGS:
        raise ValueError(f"ordering for factorizer='cholmod' must be one of {CHOLMOD_ORDERINGS}, got {ordering!r}")
    t0 = time.perf_counter()
    if cache is None:
        p, L_chol = _exact_cholmod(X, l2, ordering)
    else:
        p, L_chol = cache.exact_factor((float(l2), ordering), lambda: _exact_cholmod(X, l2, ordering))
    t2 = time.perf_counter()
    L, d = sparsify_cholesky_factor(L_chol, budget)
    del L_chol
    t3 = time.perf_counter()
    logger.info("factorize: cut L to %d nnz (budget %d) in %.2fs", L.nnz, budget, t3 - t2)
    return LDLFactor(L=L, d=d, p=p, seconds={"exact": t2 - t0, "cut": t3 - t2})


def _exact_cholmod(X: sp.csr_matrix, l2: float, ordering: str) -> tuple[np.ndarray, sp.csc_matrix]:
    """(p, exact CHOLMOD factor L with L L^T = P A P^T) of A = X^T X + l2 I."""
    cholmod = import_cholmod()
    n = X.shape[1]
    Xt = _owned_transpose(X)
    t0 = time.perf_counter()
    factor = cholmod.analyze_AAt(Xt, mode="supernodal", ordering_method=ordering)
    t1 = time.perf_counter()
    factor.cholesky_AAt_inplace(Xt, beta=float(l2))
    del Xt
    p = np.asarray(factor.P(), dtype=np.int64)
    L_chol = factor.L()
    del factor
    t2 = time.perf_counter()
    logger.info(
        "factorize: ordering=%s %.2fs, CHOLMOD LL^T %.2fs, exact nnz(L)=%d (density %.3g)",
        ordering, t1 - t0, t2 - t1, L_chol.nnz, L_chol.nnz / float(n) ** 2,
    )
    return p, L_chol
