"""Stage 1-2: fill-reducing ordering and sparse LDL^T of A = X^T X + l2*I, cut to an nnz budget.

Runs on the CPU only. scikit-sparse (CHOLMOD) is imported lazily so that the GPU stages, and
machines without SuiteSparse, can import the package.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numba
import numpy as np
import scipy.sparse as sp

from .cpu._accumulate import touch
from .cpu.gram import cap_rows
from .gram import gram_column_norms, gram_lower, scaled_gram
from .selection import largest_magnitude_mask

logger = logging.getLogger(__name__)

CHOLMOD_ORDERINGS = ("colamd", "amd", "metis", "nesdis", "natural", "best")
"""CHOLMOD's fill-reducing methods (on X X^T's columns, i.e. the Gram)."""
ORDERINGS = CHOLMOD_ORDERINGS + ("popularity",)
"""All item orderings: CHOLMOD's, plus 'popularity' (items by ascending interaction count, O(nnz);
'icf' only)."""
ICF_MAX_RESTARTS = 60
#: What the incomplete Cholesky does at a non-positive pivot (:func:`incomplete_cholesky`).
ICF_BREAKDOWN_RULES = ("shift", "compensate", "local")
"""Restarts with a larger diagonal shift the incomplete Cholesky makes before giving up (the shift
grows geometrically: the 60th restart adds about 6e14 times the mean diagonal)."""


@dataclass
class LDLFactor:
    """Sparse ``L D L^T ~= A[p][:, p]``.

    L : (n, n) scipy CSC, float32, unit lower triangular, sorted row indices (diagonal first).
    d : (n,) float64, the diagonal of D (all > 0).
    p : (n,) int64, the fill-reducing permutation (``A[p][:, p]`` is what was factorised).
    shift : float or None, 'icf' only: the diagonal shift the incomplete Cholesky was computed with
        (``l2``, or larger after restarts); None for the exact CHOLMOD factor.
    breakdowns : list of dict, 'icf' only: one ``{"pivot": int, "shift": float}`` per failed attempt
        (the first non-positive pivot, a position in the order ``p``, and the shift tried), in
        order; empty without restarts.
    local_fixes : int, 'icf' with breakdown_rule='local' only: pivots replaced by their own diagonal.
    seconds : dict, wall seconds of the sub-stages that produced it ('ordering', 'gram', 'icf',
        'cut' for ICF; 'exact', 'cut' for CHOLMOD; a stage served from a FactorCache counts ~0).
    devices : dict, where each sub-stage ran ('cpu' or 'gpu'; the ICF's Gram can run on the GPU).
    """

    L: sp.csc_matrix
    d: np.ndarray
    p: np.ndarray
    shift: float | None = None
    breakdowns: list = field(default_factory=list)
    local_fixes: int = 0
    seconds: dict = field(default_factory=dict)
    devices: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.L.shape[0]

    def check(self) -> None:
        """Raise ValueError if the arrays do not form a valid factor."""
        n = self.L.shape[0]
        if self.L.shape != (n, n) or self.d.shape != (n,) or self.p.shape != (n,):
            raise ValueError(f"inconsistent factor shapes L {self.L.shape}, d {self.d.shape}, p {self.p.shape}")
        if not np.all(self.d > 0):
            raise ValueError("D must be positive")
        if not np.array_equal(np.sort(self.p), np.arange(n)):
            raise ValueError("p is not a permutation of 0..n-1")
        L = self.L
        starts = L.indptr[:-1]
        if np.any(np.diff(L.indptr) < 1) or not np.array_equal(L.indices[starts], np.arange(n)):
            raise ValueError("L must store its unit diagonal first in every column")
        if not np.allclose(L.data[starts], 1.0):
            raise ValueError("L must have a unit diagonal")


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


def nnz_budget(density: float, n: int) -> int:
    """Number of nonzeros allowed in each factor: ceil(density * n^2), at least n (the diagonal),
    at most n(n+1)/2 (a full lower triangle)."""
    return int(min(n * (n + 1) // 2, max(n, int(np.ceil(density * float(n) * float(n))))))


@numba.njit(cache=True, nogil=True)
def _keep_and_scale_columns(indptr, indices, data, keep, out_indptr, out_indices, out_data):
    """Compact the kept entries of a CSC Cholesky factor and divide each column by its diagonal
    (first entry), turning L_chol = L_unit * sqrt(D) into L_unit. Returns nothing; fills outputs."""
    n = indptr.shape[0] - 1
    pos = 0
    out_indptr[0] = 0
    for j in range(n):
        diag = data[indptr[j]]
        for s in range(indptr[j], indptr[j + 1]):
            if keep[s]:
                out_indices[pos] = indices[s]
                out_data[pos] = np.float32(data[s] / diag)
                pos += 1
        out_indptr[j + 1] = pos


def sparsify_cholesky_factor(L_chol: sp.csc_matrix, budget: int) -> tuple[sp.csc_matrix, np.ndarray]:
    """Keep the ``budget`` largest-|entry| values of a CSC Cholesky factor (diagonal always kept,
    ties by storage order), then split it into a unit-lower L (float32) and d = diag(L_chol)^2."""
    n = L_chol.shape[0]
    if not L_chol.has_sorted_indices:
        L_chol.sort_indices()
    starts = L_chol.indptr[:-1]
    if not np.array_equal(L_chol.indices[starts], np.arange(n)):
        raise RuntimeError("Cholesky factor is not lower triangular with a stored diagonal")
    diag = L_chol.data[starts].astype(np.float64)
    forced = np.zeros(L_chol.nnz, dtype=bool)
    forced[starts] = True
    keep = largest_magnitude_mask(L_chol.data, budget, forced)
    del forced
    nnz = int(np.count_nonzero(keep))
    indptr = np.empty(n + 1, dtype=np.int64)
    indices = np.empty(nnz, dtype=np.int32)
    data = np.empty(nnz, dtype=np.float32)
    _keep_and_scale_columns(L_chol.indptr.astype(np.int64, copy=False), L_chol.indices, L_chol.data, keep, indptr, indices, data)
    L = sp.csc_matrix((data, indices, indptr), shape=(n, n))
    return L, diag * diag


class FactorCache:
    """Work shared by several fits of ONE interaction matrix that differ in ``l2`` / ``density``
    (:func:`sansa_gpu.tune` passes one to :meth:`SANSA.fit`): the ICF column scaling; the item
    ordering and unshifted Gram per (ordering, min_cooccurrence); the exact CHOLMOD factor per
    (l2, ordering), cut to each density. It keeps the ``max_grams`` most recently used Grams (one per
    pruning level a search cycles through) and the most recent exact factor; :meth:`held_bytes` says
    how much memory that is. Results are identical to fits without a cache. ``hits`` counts reuses.

    The cache binds to the first matrix it sees; a fit on a different matrix raises ValueError.
    """

    def __init__(self, max_grams: int = 1):
        self._X = None
        self._scaling = None
        self._grams: dict = {}
        self._exact = None
        self.max_grams = max(1, int(max_grams))
        self.hits = {"scaling": 0, "gram": 0, "exact_factor": 0}

    def bind(self, X: sp.csr_matrix) -> None:
        """Check that ``X`` (canonical CSR) is the matrix this cache holds work for."""
        if self._X is None:
            self._X = X.copy()  # its own copy: X may be the caller's matrix, edited in place between fits
            return
        Y = self._X
        same = (X.shape == Y.shape and X.nnz == Y.nnz and np.array_equal(X.indptr, Y.indptr)
                          and np.array_equal(X.indices, Y.indices) and np.array_equal(X.data, Y.data))
        if not same:
            raise ValueError("this FactorCache holds work for another interaction matrix: use one cache per matrix")

    def _get(self, slot: str, key, build):
        held = getattr(self, slot)
        if held is not None and held[0] == key:
            self.hits["exact_factor" if slot == "_exact" else slot.strip("_")] += 1
            return held[1]
        setattr(self, slot, None)  # free the old one before building the new one
        value = build()
        setattr(self, slot, (key, value))
        return value

    def column_scaling(self, X: sp.csr_matrix) -> np.ndarray:
        return self._get("_scaling", "icf", lambda: icf_column_scaling(X))

    def gram(self, key, build):
        if key in self._grams:
            self.hits["gram"] += 1
            self._grams[key] = self._grams.pop(key)  # most recently used last
            return self._grams[key]
        while len(self._grams) >= self.max_grams:  # free before building the new one
            self._grams.pop(next(iter(self._grams)))
        self._grams[key] = build()
        return self._grams[key]

    def held_bytes(self) -> int:
        """Bytes of the Grams and exact factor held between fits."""
        mats = [A for _, A in self._grams.values()] + ([self._exact[1][1]] if self._exact is not None else [])
        return int(sum(M.data.nbytes + M.indices.nbytes + M.indptr.nbytes for M in mats))

    def exact_factor(self, key, build):
        return self._get("_exact", key, build)


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


def choose_factorizer(X: sp.csr_matrix, density: float, *, ordering: str | None = None,
                      min_cooccurrence: float = 0.0) -> tuple[str, str]:
    """The factoriser ``SANSA(factorizer="auto")`` uses for X at ``density``, and why.

    'cholmod' when all of: scikit-sparse is installed; the model keeps at least
    :data:`AUTO_CHOLMOD_MIN_NNZ_PER_ITEM` nonzeros per item column; users have at least
    :data:`AUTO_CHOLMOD_MIN_ITEMS_PER_USER` interactions on average (dense co-occurrence); and the
    exact factor is cheap: its time predicted from its structure (:func:`predict_exact_seconds` of
    :func:`sansa_gpu.memory.exact_factor_profile`, the rule ``tune`` uses) is at most
    :data:`AUTO_CHOLMOD_MAX_SECONDS` and the fit's predicted peak fits the available memory.
    Otherwise 'icf'. An ICF-only option (``min_cooccurrence > 0``, ``ordering='popularity'``) selects
    'icf'. The structural analysis (0.4-4 s on the shared datasets) runs only when the cheap tests pass.

    Evidence (docs/benchmarks.md, "Choosing the factoriser"; benchmarks/results/tune.jsonl, factorizers.jsonl, exact_cost.jsonl,
    auto_rule.jsonl): on ml-1m (133 items per user) the best CHOLMOD beat the best ICF on validation
    by +0.022, +0.059 and +0.016 Recall@20 at 16, 64 and 256 nonzeros per item and lost by 0.039 at
    4; on pinterest (21 per user) ICF beat CHOLMOD at every density at equal λ (+0.006 to +0.019 test
    Recall@20) in a fifth of the time; on gowalla (27 per user) ICF at 5e-4 (test Recall@20 0.169,
    4-5 s) beat CHOLMOD at 2e-3 and 1e-2 (0.153, 0.157; 216 s and 905 s). The items-per-user
    threshold lies somewhere between 39 (lastfm-2k, where ICF led on validation) and 133: no shared
    dataset in between was measured. Of the ten shared datasets only ml-1m passes it (exact factor
    predicted 1.6 s, measured 0.9 s).
    """
    n = X.shape[1]
    if min_cooccurrence > 0:
        return "icf", "min_cooccurrence > 0 applies to ICF only"
    if ordering == "popularity":
        return "icf", "ordering='popularity' applies to ICF only"
    if not cholmod_available():
        return "icf", "CHOLMOD (scikit-sparse) is not installed"
    per_item = density * n
    n_users = max(1, int(np.count_nonzero(np.diff(X.indptr))))
    per_user = X.nnz / n_users
    if per_item < AUTO_CHOLMOD_MIN_NNZ_PER_ITEM:
        return "icf", (f"{per_item:.1f} nonzeros per item column < {AUTO_CHOLMOD_MIN_NNZ_PER_ITEM:g}: ICF is the "
                       f"more accurate at this density")
    if per_user < AUTO_CHOLMOD_MIN_ITEMS_PER_USER:
        return "icf", (f"{per_user:.0f} interactions per user < {AUTO_CHOLMOD_MIN_ITEMS_PER_USER:g}: on data this "
                       f"sparse ICF matched or beat CHOLMOD")
    if n > EXACT_PROFILE_MAX_ITEMS:
        return "icf", f"{n} items > {EXACT_PROFILE_MAX_ITEMS}: the exact CHOLMOD factor is not analysed"
    from .memory import available_memory_bytes, estimate_memory, exact_factor_profile

    prof = exact_factor_profile(X, ordering or "colamd")
    seconds = predict_exact_seconds(prof)
    facts = f"exact factor of {prof['fill']:,} nonzeros predicted {seconds:.1f} s"
    if seconds > AUTO_CHOLMOD_MAX_SECONDS:
        return "icf", f"{facts} > {AUTO_CHOLMOD_MAX_SECONDS:g} s: ICF is the fast default"
    peak = estimate_memory(X, density, "cholmod", 0.0, ordering or "colamd", (prof["nnz_gram"], prof["fill"]))["peak"]
    have = available_memory_bytes()
    if peak > have:
        return "icf", f"{facts}, but its fit peak {peak / 1e9:.2f} GB > {have / 1e9:.2f} GB available"
    return "cholmod", (f"{per_item:.0f} nonzeros per item column, {per_user:.0f} interactions per user, {facts}: "
                       f"the exact factor is cheap and the more accurate on data this dense")


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


#: ``choose_factorizer`` thresholds (see its docstring for the evidence). A default fit should take
#: seconds, not minutes: the exact factor enters ``auto`` when predicted at most this long.
AUTO_CHOLMOD_MAX_SECONDS = 30.0
AUTO_CHOLMOD_MIN_NNZ_PER_ITEM = 16.0
AUTO_CHOLMOD_MIN_ITEMS_PER_USER = 50.0


def ldlt_cholmod(X: sp.csr_matrix, l2: float, budget: int, ordering: str = "colamd",
                 cache: "FactorCache | None" = None) -> LDLFactor:
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


# ----------------------------------------------------------------------------- incomplete Cholesky
@numba.njit(cache=True, nogil=True)
def _icf_core(n, Ap, Ai, Ax, shift, budget, Lp, Li, Lx, a, mark, touched, head, link, pos, rule, scale, comp,
              cand, kept, fixed):
    """Left-looking incomplete Cholesky of the lower CSC triangle A (+ shift on the diagonal).

    Column j keeps its diagonal plus at most (budget - nnz - (n - j)) // (n - j) off-diagonal
    entries of largest |value| (ties: lower row), so nnz(L) never exceeds ``budget``; a budget of
    the whole lower triangle keeps everything (the exact factor). Columns are
    linked by their next active row (head/link/pos) so each column k is visited exactly for the
    rows j where L[j, k] != 0. Returns nnz, or -(j + 1) if pivot j is not positive.

    ``rule`` says what a non-positive pivot does. 0: the factorisation stops (the caller restarts
    with a larger shift). 1 ('compensate'): diagonal compensation of every dropped entry (Ajiz &
    Jennings 1984), after which a positive definite A cannot break down: dropping
    s_ij of the current Schur complement adds |s_ij| w to its diagonal j and |s_ij| / w to its
    diagonal i (w = scale[j] / scale[i], scale = sqrt of A's diagonal): the change is positive
    semidefinite, so a positive definite A never breaks down, and only the columns that lose
    entries are regularised more (``comp`` (n,) accumulates what later diagonals receive; ``cand``,
    ``kept``: (n,) work arrays). 2 ('local'): a non-positive pivot j is replaced by A's own diagonal
    A_jj + shift (scale[j]^2), that column only; ``fixed[0]`` counts them.
    """
    for i in range(n):
        head[i] = -1
        mark[i] = -1
        comp[i] = 0.0
        kept[i] = -1
    full = n * (n + 1) // 2
    nnz = 0
    Lp[0] = 0
    for j in range(n):
        nt = 0
        diag = shift + comp[j]
        for idx in range(Ap[j], Ap[j + 1]):
            i = Ai[idx]
            if i == j:
                diag += Ax[idx]
            elif i > j:
                nt = touch(mark, touched, nt, i, j, a)
                a[i] += Ax[idx]
        k = head[j]
        while k != -1:
            next_k = link[k]
            p = pos[k]
            ljk = np.float64(Lx[p])
            diag -= ljk * ljk
            end = Lp[k + 1]
            for idx in range(p + 1, end):
                i = Li[idx]
                nt = touch(mark, touched, nt, i, j, a)
                a[i] -= np.float64(Lx[idx]) * ljk
            if p + 1 < end:
                pos[k] = p + 1
                r = Li[p + 1]
                link[k] = head[r]
                head[r] = k
            k = next_k
        # the budget spread evenly over the columns left; a budget that holds the whole lower triangle
        # (density 1) drops nothing, so the factor is the exact Cholesky factor
        cap = (budget - nnz - (n - j)) // (n - j) if budget < full else n
        # the nonzero candidates, then the cap (the package's rule: largest |value|, ties to the lower
        # row) before sorting, so that only what is kept gets sorted
        m = 0
        for b in range(nt):
            if a[touched[b]] != 0.0:
                touched[m] = touched[b]
                m += 1
        if m > cap:
            m_all = m
            if rule == 1:
                cand[:m_all] = touched[:m_all]
            m = cap_rows(touched, m, j, a, cap)
            if rule == 1:
                for b in range(m):
                    kept[touched[b]] = j
                for b in range(m_all):
                    i = cand[b]
                    if kept[i] != j:
                        w = scale[j] / scale[i]
                        diag += abs(a[i]) * w
                        comp[i] += abs(a[i]) / w
        if not diag > 0.0:
            if rule != 2 or not np.isfinite(diag):  # a non-finite pivot (growth) is a breakdown whatever the rule
                return -(j + 1)
            diag = scale[j] * scale[j]
            fixed[0] += 1
        ljj = np.sqrt(diag)
        rows = touched[:m]
        rows.sort()
        Li[nnz] = j
        Lx[nnz] = ljj
        nnz += 1
        first = nnz
        for b in range(m):
            i = rows[b]
            Li[nnz] = i
            Lx[nnz] = a[i] / ljj
            nnz += 1
        Lp[j + 1] = nnz
        if nnz > first:
            pos[j] = first
            r = Li[first]
            link[j] = head[r]
            head[r] = j
    return nnz


@dataclass
class ICFResult:
    """An incomplete Cholesky ``L L^T ~= A + shift I`` and how it was reached.

    L : (n, n) scipy CSC float64, lower triangular, diagonal first in every column.
    shift : float, the diagonal shift L was computed with (the one asked for unless it restarted).
    breakdowns : list of ``{"pivot": int, "shift": float}``, one per failed attempt in order: the
        first pivot (row of A) that was not positive and the shift of that attempt. ``len(breakdowns)`` is the
        number of restarts.
    """

    L: sp.csc_matrix
    shift: float
    breakdowns: list = field(default_factory=list)
    local_fixes: int = 0

    @property
    def restarts(self) -> int:
        return len(self.breakdowns)


def incomplete_cholesky(A_lower: sp.csc_matrix, shift: float, budget: int, shift_step: float = 1e-3,
                        shift_growth: float = 2.0, max_restarts: int | None = None,
                        breakdown_rule: str = "shift") -> ICFResult:
    """Incomplete Cholesky ``L L^T ~= A + shift I`` within ``budget`` nonzeros, restarting on breakdown.

    A_lower : (n, n) CSC lower triangle of a symmetric matrix, sorted rows. When a pivot is not
    positive the factorisation restarts with ``shift + shift_step * mean(diag A) * shift_growth**r``
    (r = 0, 1, ...: the schedule is independent of the scale of A), at most ``max_restarts`` times
    (default :data:`ICF_MAX_RESTARTS`). Each breakdown is logged and recorded in the result, and a
    factor reached by restarting is reported with a warning (it regularises more than asked).
    Raises ``numpy.linalg.LinAlgError`` (a ValueError) naming the pivot and the shifts tried when
    every attempt breaks down. Memory: exactly ``budget`` slots for L plus O(n) work arrays.
    ``breakdown_rule``: 'shift' (the above), 'compensate' (diagonal compensation of the dropped
    entries, :func:`_icf_core`; a restart then remains only for a matrix that is not positive
    definite, which a pruned Gram can be) or 'local' (a broken pivot alone replaced by its
    unfactorised diagonal; ``local_fixes`` counts them).
    """
    if breakdown_rule not in ICF_BREAKDOWN_RULES:
        raise ValueError(f"breakdown_rule must be one of {ICF_BREAKDOWN_RULES}, got {breakdown_rule!r}")
    n = A_lower.shape[0]
    budget = max(int(budget), n)
    max_restarts = ICF_MAX_RESTARTS if max_restarts is None else int(max_restarts)
    Lp = np.zeros(n + 1, dtype=np.int64)
    Li = np.empty(budget, dtype=np.int32)
    Lx = np.empty(budget, dtype=np.float64)
    work = (np.zeros(n, np.float64), np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64),
            np.empty(n, np.int64), np.empty(n, np.int64))
    Ap, Ai, Ax = A_lower.indptr.astype(np.int64, copy=False), A_lower.indices, A_lower.data.astype(np.float64, copy=False)
    diag_A = A_lower.diagonal().astype(np.float64)
    scale = np.sqrt(np.maximum(diag_A + float(shift), np.finfo(np.float64).tiny))
    fixed = np.zeros(1, np.int64)
    compensation = (ICF_BREAKDOWN_RULES.index(breakdown_rule), scale, np.zeros(n, np.float64), np.empty(n, np.int64),
                    np.empty(n, np.int64), fixed)
    used = float(shift)
    diag_mean = float(diag_A.mean()) or 1.0
    breakdowns: list[dict] = []
    for restart in range(max_restarts + 1):
        nnz = _icf_core(n, Ap, Ai, Ax, used, budget, Lp, Li, Lx, *work, *compensation)
        if nnz >= 0:
            if breakdowns:
                logger.warning("icf: %d pivot breakdown(s) at the budget of %d nnz; factorised with diagonal shift "
                               "%.4g instead of %.4g (stats_['icf_shift']), i.e. more regularisation than asked",
                               len(breakdowns), budget, used, float(shift))
            return ICFResult(L=sp.csc_matrix((Lx[:nnz], Li[:nnz], Lp), shape=(n, n)), shift=used,
                             breakdowns=breakdowns, local_fixes=int(fixed[0]))
        breakdowns.append({"pivot": int(-nnz - 1), "shift": used})
        if restart == max_restarts:
            break
        new = float(shift) + shift_step * diag_mean * shift_growth**restart
        logger.info("icf: pivot %d not positive with shift %.4g; restarting with shift %.4g", -nnz - 1, used, new)
        used = new
    last = breakdowns[-1]
    raise np.linalg.LinAlgError(
        f"incomplete Cholesky broke down: pivot {last['pivot']} of {n} was not positive with every diagonal shift "
        f"tried ({len(breakdowns)} attempts, shift {breakdowns[0]['shift']:.4g} up to {last['shift']:.4g}, "
        f"{max_restarts} restarts): keeping only {budget} nnz of its factor drops too much of the matrix (or it has "
        f"non-finite entries); raise l2 or density"
    )


def icf(A_lower: sp.csc_matrix, shift: float, budget: int, shift_step: float = 1e-3, shift_growth: float = 2.0,
        max_restarts: int | None = None) -> tuple[sp.csc_matrix, float]:
    """Incomplete Cholesky ``L L^T ~= A + shift I`` within ``budget`` nonzeros:
    :func:`incomplete_cholesky` returning only (L CSC float64 lower triangular with the diagonal
    first, the shift used)."""
    res = incomplete_cholesky(A_lower, shift, budget, shift_step, shift_growth, max_restarts)
    return res.L, res.shift


def item_ordering(X: sp.csr_matrix, method: str = "colamd") -> np.ndarray:
    """(n,) int64 permutation of X's item columns for the factorisation of X^T X.

    CHOLMOD's methods ('colamd' works on X itself; 'amd', 'metis', ... form the Gram's pattern)
    run CHOLMOD's symbolic analysis; 'popularity' orders items by ascending interaction count
    (ties by id) in O(nnz) time. Without scikit-sparse, CHOLMOD methods fall back to reverse
    Cuthill-McKee of the Gram pattern.
    """
    if method not in ORDERINGS:
        raise ValueError(f"ordering must be one of {ORDERINGS}, got {method!r}")
    n = X.shape[1]
    if method == "popularity":
        counts = np.bincount(X.indices, minlength=n)
        return np.argsort(counts, kind="stable").astype(np.int64)
    if method == "natural":
        return np.arange(n, dtype=np.int64)
    try:
        cholmod = import_cholmod()
    except ImportError:
        from scipy.sparse.csgraph import reverse_cuthill_mckee

        logger.warning("ordering %r needs CHOLMOD (not installed): using reverse Cuthill-McKee instead", method)
        G = sp.csr_matrix(X.T @ X)
        return np.asarray(reverse_cuthill_mckee(G, symmetric_mode=True), dtype=np.int64)
    factor = cholmod.analyze_AAt(_owned_transpose(X), mode="simplicial", ordering_method=method)
    return np.asarray(factor.P(), dtype=np.int64)


def icf_column_scaling(X: sp.csr_matrix) -> np.ndarray:
    """(n,) float64 s_j = sqrt(||(X^T X)[:, j]||_2) (1 for empty items). Dividing the columns of X
    by s makes the Gram's columns comparable before entries are dropped (the official package's
    ICF preprocessing, kept so that results match at the same l2)."""
    s = np.sqrt(gram_column_norms(X))
    s[s == 0] = 1.0
    return s


def ldlt_icf(X: sp.csr_matrix, l2: float, budget: int, min_cooccurrence: float = 0.0,
             ordering: str = "colamd", prune_scale: np.ndarray | None = None,
             cache: "FactorCache | None" = None, column_scaling: bool = False,
             max_per_column: int | None = None, backend=None, breakdown_rule: str = "shift",
             working_fill: float = 1.0) -> LDLFactor:
    """Ordering (:func:`item_ordering`), the Gram of the permuted X with its column norms in one pass
    (:func:`sansa_gpu.gram.scaled_gram`, on ``backend``: the CPU by default, or the GPU), incomplete
    Cholesky within ``budget``: the factor never exceeds the budget, so catalogues whose exact factor
    does not fit can be trained. The result records the shift used and any restarts (``shift``,
    ``breakdowns``: :func:`incomplete_cholesky`) and where each sub-stage ran (``devices``).

    X : (users, n) CSR, unscaled; ``column_scaling`` divides the Gram's entry (i, j) by s_i s_j,
    s_j = sqrt(||(X^T X)[:, j]||_2) (the official ICF preprocessing; the norms come from the same
    pass). ``min_cooccurrence`` / ``max_per_column``: pruning of the Gram while it is built, on the
    unscaled co-occurrences. ``prune_scale`` (legacy): X was already divided by these per-item
    factors, and the pruning test multiplies them back. ``cache`` (:class:`FactorCache`): the
    ordering and the unshifted Gram of this (X, ordering, pruning, scaling) are built once (``l2`` only
    shifts the diagonal, inside the incomplete Cholesky; ``budget`` only limits it). A GPU out of
    memory during the Gram builds it on the CPU (logged; ``devices['gram']`` says so).
    ``breakdown_rule``: :func:`incomplete_cholesky`. ``working_fill`` >= 1: the incomplete Cholesky
    keeps up to ``working_fill * budget`` nonzeros while it factorises (fewer dropped entries feed
    the later columns), and the factor is then cut to ``budget`` by magnitude over the whole factor,
    as the exact CHOLMOD factor is (1: the budget throughout, as before)."""
    from . import cpu
    from .errors import GPUOutOfMemory

    t0 = time.perf_counter()
    seconds = {"ordering": 0.0, "gram": 0.0}
    devices = {"ordering": "cpu", "gram": "cpu" if cache is None else "cached", "icf": "cpu", "cut": "cpu"}
    backend = cpu if backend is None else backend

    def build():
        p = item_ordering(X, ordering)
        t_p = time.perf_counter()
        if prune_scale is not None:
            A = gram_lower(X, 0.0, p, min_cooccurrence=min_cooccurrence, prune_scale=prune_scale,
                           max_per_column=max_per_column)
        else:
            where = "gpu" if backend is not cpu else "cpu"
            try:
                A, _ = scaled_gram(X, p, min_cooccurrence, column_scaling, max_per_column, backend)
            except GPUOutOfMemory as exc:
                logger.warning("gram: %s; building it on the CPU", exc)
                A, _ = scaled_gram(X, p, min_cooccurrence, column_scaling, max_per_column, cpu)
                where = "cpu (GPU out of memory)"
            devices["gram"] = where
        seconds.update(ordering=t_p - t0, gram=time.perf_counter() - t_p)
        return p, A

    if cache is None:
        p, A = build()
    else:
        scaling = "prescaled X" if prune_scale is not None else bool(column_scaling)
        key = (ordering, float(min_cooccurrence), scaling, max_per_column)
        p, A = cache.gram(key, build)
    t1 = time.perf_counter()
    n = A.shape[0]
    work_budget = int(min(n * (n + 1) // 2, max(budget, np.ceil(float(working_fill) * budget))))
    res = incomplete_cholesky(A, float(l2), work_budget, breakdown_rule=breakdown_rule)
    del A
    t2 = time.perf_counter()
    logger.info("factorize: ordering=%s + gram %.2fs, ICF %.2fs (shift %.4g, %d restart(s)), nnz(L)=%d "
                "(budget %d)", ordering, t1 - t0, t2 - t1, res.shift, res.restarts, res.L.nnz, budget)
    L, d = sparsify_cholesky_factor(res.L, budget)
    seconds.update(icf=t2 - t1, cut=time.perf_counter() - t2)
    return LDLFactor(L=L, d=d, p=p, shift=res.shift, breakdowns=res.breakdowns, local_fixes=res.local_fixes,
                     seconds=seconds, devices=devices)
