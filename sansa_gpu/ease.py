"""Dense EASE (Steck 2019): the accuracy ceiling SANSA approximates, where n_items^2 fits in memory."""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import scipy.linalg.lapack as lapack
import scipy.sparse as sp

from . import __version__
from .candidates import blocked_items
from .cpu.topk import topk_dense
from .errors import NotFittedError
from .io import load_arrays, save_arrays
from .memory import available_memory_bytes
from .serving import item_rows
from .validation import check_interactions, check_positive_float, check_positive_int

logger = logging.getLogger(__name__)


#: Above this many items the Cholesky inverse runs on one BLAS thread. scipy 1.17's OpenBLAS 0.3.30
#: (threaded dpotrf) crashed with a segmentation fault at n = 24,915 (amazon-book-kgat) on 2 threads
#: of the 2-core VM, twice; on one thread the same call completes (631 s). n = 9,916 (pinterest) ran
#: threaded without fault; the same class of crash is reported upstream (OpenBLAS issues #2562:
#: n = 32,768 on 2 threads, #2821: dsyrk inside threaded dpotrf). The limit sits between the two.
SINGLE_THREAD_LAPACK_ITEMS = 16384
#: Float64 operations per second of dpotrf + dpotri on one core of the 2-core VM (n = 24,915:
#: n^3 operations in 631 s); :func:`ease_fit_seconds` uses it.
LAPACK_FLOPS_PER_CORE = 2.4e10


def ease_fit_seconds(n_items: int, threads: int | None = None) -> float:
    """Rough seconds of :func:`ease_weights` on ``n_items`` items (n^3 operations), on ``threads``
    cores (default: all, but one above :data:`SINGLE_THREAD_LAPACK_ITEMS`)."""
    if threads is None:  # the cores this process may run on (a container's limit, not the host's count)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = 1 if n_items > SINGLE_THREAD_LAPACK_ITEMS else cores
    return float(n_items) ** 3 / (LAPACK_FLOPS_PER_CORE * max(1, threads))


def _blas_threads(n: int):
    """A context that limits BLAS to one thread for catalogues above SINGLE_THREAD_LAPACK_ITEMS."""
    import contextlib

    if n <= SINGLE_THREAD_LAPACK_ITEMS:
        return contextlib.nullcontext()
    try:  # a well-kept library that finds and limits whichever BLAS scipy loaded (OpenBLAS, MKL, ...)
        from threadpoolctl import threadpool_limits
    except ImportError:  # not installed (a minimal environment): run as is
        logger.warning("EASE: threadpoolctl is not installed; LAPACK on %d items runs multi-threaded", n)
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def ease_weights(X: sp.csr_matrix, l2: float) -> np.ndarray:
    """B = I - P diag(1/diag(P)), P = (X^T X + l2 I)^{-1}; returns (n, n) float32 with zero diagonal.

    In-place LAPACK Cholesky inverse (dpotrf + dpotri) on one float64 n x n buffer, on one BLAS
    thread above :data:`SINGLE_THREAD_LAPACK_ITEMS` items (a threaded OpenBLAS dpotrf crashes there).
    """
    n = X.shape[1]
    G = (X.T @ X).toarray().astype(np.float64, copy=False)
    G[np.diag_indices(n)] += l2
    with _blas_threads(n):
        c, info = lapack.dpotrf(G, lower=True, overwrite_a=True, clean=False)
        if info != 0:
            raise np.linalg.LinAlgError(f"X^T X + l2 I is not positive definite (dpotrf info={info})")
        P, info = lapack.dpotri(c, lower=True, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"inverse failed (dpotri info={info})")
    # dpotri fills the lower triangle only: mirror it in row blocks (no n^2 index arrays)
    block = 1024
    for s in range(0, n, block):
        e = min(n, s + block)
        P[s:e, e:] = P[e:, s:e].T
        sub = P[s:e, s:e]
        P[s:e, s:e] = np.tril(sub) + np.tril(sub, -1).T
    diag = np.diag(P).copy()
    B = P
    B /= -diag[None, :]
    B[np.diag_indices(n)] = 0.0
    return B.astype(np.float32)


class EASE:
    """Embarrassingly Shallow AutoEncoder, dense, on the CPU: ``B = I - P diag(1/diag P)``.

    Same surface as :class:`sansa_gpu.SANSA` (fit / recommend / score / save / load). Needs about
    3 * 8 * n_items^2 bytes while fitting; refuses with a MemoryError naming the numbers when that
    exceeds the available memory.

    Fitted attributes: ``B_`` ((n_items, n_items) float32, zero diagonal), ``n_items_``, ``stats_``
    (``fit_seconds``, ``n_items``); all of them are saved with the model.
    """

    def __init__(self, l2: float = 500.0):
        self.l2 = l2  # scikit-learn's contract: stored as given, checked in fit

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's parameters as set (scikit-learn's ``clone`` contract)."""
        return {"l2": self.l2}

    def set_params(self, **params) -> "EASE":
        """Set parameters by name (checked when ``fit`` runs); returns self."""
        for name, value in params.items():
            if name != "l2":
                raise ValueError(f"invalid parameter {name!r} for estimator {self!r}; valid parameters are ['l2']")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        return f"EASE(l2={self.l2!r})"

    @staticmethod
    def estimate_fit_bytes(n_items: int) -> int:
        return int(3 * 8 * n_items * n_items)

    def fit(self, X) -> "EASE":
        l2 = check_positive_float(self.l2, "l2")
        X = check_interactions(X, require_nonempty=True)
        n = X.shape[1]
        need, have = self.estimate_fit_bytes(n), available_memory_bytes()
        if need > have:
            raise MemoryError(f"dense EASE on {n} items needs about {need / 1e9:.1f} GB, only {have / 1e9:.1f} GB available")
        t0 = time.perf_counter()
        self.B_ = ease_weights(X, l2)
        self.n_items_ = n
        self.stats_ = {"fit_seconds": time.perf_counter() - t0, "n_items": n}
        logger.info("EASE: fitted %d items in %.2fs", n, self.stats_["fit_seconds"])
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "B_"):
            raise NotFittedError("this EASE model is not fitted yet: call fit(X) or EASE.load(path)")

    def score(self, X) -> np.ndarray:
        """Dense scores X @ B: (users, n_items_) float32, own items not masked."""
        self._check_fitted()
        X = check_interactions(X, n_items=self.n_items_)
        return np.asarray(X @ self.B_, dtype=np.float32)

    def recommend(self, X, k: int = 20, batch_size: int = 4096, *, items=None, filter_items=None,
                  filter_already_liked_items: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Masked top-k, same contract and filters as SANSA.recommend (every item a candidate:
        B is dense)."""
        self._check_fitted()
        k = check_positive_int(k, "k")
        batch_size = check_positive_int(batch_size, "batch_size")
        X = check_interactions(X, n_items=self.n_items_)
        blocked = blocked_items(self.n_items_, items, filter_items)
        return self._topk(X, k, batch_size, blocked, bool(filter_already_liked_items))

    def _topk(self, X: sp.csr_matrix, k: int, batch_size: int, blocked, exclude_seen: bool):
        n_users = X.shape[0]
        ids = np.empty((n_users, k), dtype=np.int64)
        scores = np.empty((n_users, k), dtype=np.float32)
        for s in range(0, n_users, batch_size):
            e = min(n_users, s + batch_size)
            S = np.asarray(X[s:e] @ self.B_, dtype=np.float32)
            topk_dense(S, X, k, ids, scores, row_offset=s, blocked=blocked, exclude_seen=exclude_seen)
        return ids, scores

    def similar_items(self, items, k: int = 20, *, filter_items=None, candidates=None) -> tuple[np.ndarray, np.ndarray]:
        """The k items with the largest B[i, j] for each i in ``items`` (item indices), i itself
        excluded; as :meth:`SANSA.similar_items`."""
        self._check_fitted()
        k = check_positive_int(k, "k")
        rows = item_rows(items, self.n_items_)
        return self._topk(rows, k, 4096, blocked_items(self.n_items_, candidates, filter_items), True)

    def save(self, path) -> None:
        """Write the fitted model (``B_``, ``n_items_``, ``stats_``, ``l2``) to ``path`` atomically (no pickle)."""
        self._check_fitted()
        meta = {"package_version": __version__, "l2": float(self.l2), "n_items": int(self.n_items_),
                "stats": getattr(self, "stats_", {})}
        save_arrays(path, "EASE", meta, {"B": self.B_})

    @classmethod
    def load(cls, path) -> "EASE":
        """Read a model written by :meth:`save`: ``B_``, ``n_items_``, ``stats_`` and ``l2`` as saved
        (files written before ``stats_`` was saved load with ``stats_ = {}``)."""
        header, arrays = load_arrays(path, "EASE")
        B = arrays.get("B")
        n = header.get("n_items")
        if B is None or B.dtype != np.float32 or B.shape != (n, n):
            raise ValueError(f"{os.fspath(path)!r}: EASE weights missing or of the wrong shape")
        model = cls(l2=header["l2"])
        model.B_, model.n_items_ = B, int(n)
        model.stats_ = header.get("stats", {})
        return model
