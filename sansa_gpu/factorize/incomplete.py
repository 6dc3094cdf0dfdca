"""Stage 2 within the budget: the incomplete Cholesky factor (ICF) of the Gram, which never stores more
than its nonzero budget, so catalogues whose exact factor does not fit can be trained
(:func:`ldlt_icf`: ordering, Gram with its column norms, :func:`incomplete_cholesky`, cut)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numba
import numpy as np
import scipy.sparse as sp

from ..cpu._accumulate import touch
from ..cpu.gram import cap_rows
from ..gram import gram_column_norms, gram_lower, scaled_gram
from .factor import LDLFactor, sparsify_cholesky_factor, working_budget
from .ordering import item_ordering

logger = logging.getLogger("sansa_gpu.factorize")  # one logger name for every factorisation stage

#: What the incomplete Cholesky does at a non-positive pivot (:func:`incomplete_cholesky`).
ICF_BREAKDOWN_RULES = ("shift", "compensate", "local")
#: Restarts with a larger diagonal shift the incomplete Cholesky makes before giving up (the shift
#: grows geometrically: the 60th restart adds about 6e14 times the mean diagonal).
ICF_MAX_RESTARTS = 60


@numba.njit(inline="always")
def _scatter_column(j, Ap, Ai, Ax, mark, touched, a, diag):
    """Column j of the lower CSC A into the sparse accumulator ``a`` (its rows below j, listed in
    ``touched``) and its diagonal added to ``diag``. Returns (rows touched, diag)."""
    nt = 0
    for idx in range(Ap[j], Ap[j + 1]):
        i = Ai[idx]
        if i == j:
            diag += Ax[idx]
        elif i > j:
            nt = touch(mark, touched, nt, i, j, a)
            a[i] += Ax[idx]
    return nt, diag


@numba.njit(inline="always")
def _subtract_scaled(lo, hi, rows, vals, factor, j, mark, touched, nt, a):
    """a[rows[idx]] -= vals[idx] * factor for idx in lo..hi-1 (the update of column j by one earlier
    column; the rows join column j's accumulator). Returns the rows touched."""
    for idx in range(lo, hi):
        i = rows[idx]
        nt = touch(mark, touched, nt, i, j, a)
        a[i] -= np.float64(vals[idx]) * factor
    return nt


@numba.njit(inline="always")
def _link_next(k, p, end, rows, head, link, pos):
    """Column k moves on to its entry after index p: linked under that entry's row (head / link), with
    pos[k] at it; pos[k] = end when the column has no entry left."""
    if p + 1 < end:
        pos[k] = p + 1
        r = rows[p + 1]
        link[k] = head[r]
        head[r] = k
    else:
        pos[k] = end


@numba.njit(inline="always")
def _nonzero_rows(touched, nt, a):
    """Compact touched[:nt] to the rows whose accumulated value is not zero; returns their number."""
    m = np.int64(0)  # not the literal 0: cap_rows would be compiled for Literal[int](0) as well
    for b in range(nt):
        if a[touched[b]] != 0.0:
            touched[m] = touched[b]
            m += 1
    return m


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
        nt, diag = _scatter_column(j, Ap, Ai, Ax, mark, touched, a, shift + comp[j])
        k = head[j]
        while k != -1:
            next_k = link[k]
            p = pos[k]
            ljk = np.float64(Lx[p])
            diag -= ljk * ljk
            end = Lp[k + 1]
            nt = _subtract_scaled(p + 1, end, Li, Lx, ljk, j, mark, touched, nt, a)
            _link_next(k, p, end, Li, head, link, pos)
            k = next_k
        # the budget spread evenly over the columns left; a budget that holds the whole lower triangle
        # (density 1) drops nothing, so the factor is the exact Cholesky factor
        cap = (budget - nnz - (n - j)) // (n - j) if budget < full else n
        # the nonzero candidates, then the cap (the package's rule: largest |value|, ties to the lower
        # row) before sorting, so that only what is kept gets sorted
        m = _nonzero_rows(touched, nt, a)
        if m > cap:
            m_all = m
            if rule == 1:
                for b in range(m_all):  # (a slice assignment compiles numba's shape-mismatch error text)
                    cand[b] = touched[b]
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
        _link_next(j, first - 1, nnz, Li, head, link, pos)
    return nnz


@numba.njit(cache=True, nogil=True)
def _icf_intermediate_core(n, Ap, Ai, Ax, shift, budget, rbudget, Lp, Li, Lx, Rp, Ri, Rx, a, mark, touched, head,
                           link, pos, rhead, rlink, rpos, cand, kept):
    """Left-looking incomplete Cholesky with intermediate fill (Tismenetsky 1991; Kaporin 1998): every column
    is split into its kept part (L: the diagonal and at most the per-column share of ``budget``, the rule of
    :func:`_icf_core`), an intermediate part (R: the next largest entries, at most the per-column share of
    ``rbudget``) and the rest, which is dropped. R takes part in the updates of later columns through the
    products L R^T and R L^T, but R R^T is never formed and R never touches a pivot: what is left out is
    then (up to the dropped rest) the positive semidefinite R R^T, so the pivots are those of A plus a
    positive semidefinite term and do not break down the way a plain drop does. R is discarded at the end.

    Returns nnz(L), or -(j + 1) if pivot j is not positive. pos[k] / rpos[k]: the index of the first entry
    of L[:, k] / R[:, k] in a row not yet factorised (the end of the column when there is none); head /
    rhead link the columns by that row, as in :func:`_icf_core`.
    """
    for i in range(n):
        head[i] = -1
        rhead[i] = -1
        mark[i] = -1
        kept[i] = -1
    full = n * (n + 1) // 2
    nnz = 0
    rnnz = 0
    Lp[0] = 0
    Rp[0] = 0
    for j in range(n):
        nt, diag = _scatter_column(j, Ap, Ai, Ax, mark, touched, a, shift)
        k = head[j]  # the columns k with L[j, k] != 0: subtract L[:, k] L[j, k] and R[:, k] L[j, k]
        while k != -1:
            next_k = link[k]
            p = pos[k]
            ljk = np.float64(Lx[p])
            diag -= ljk * ljk
            end = Lp[k + 1]
            nt = _subtract_scaled(p + 1, end, Li, Lx, ljk, j, mark, touched, nt, a)
            # R[j, k] == 0, so R's rows from rpos[k] on are all below j
            nt = _subtract_scaled(rpos[k], Rp[k + 1], Ri, Rx, ljk, j, mark, touched, nt, a)
            _link_next(k, p, end, Li, head, link, pos)
            k = next_k
        k = rhead[j]  # the columns k with R[j, k] != 0: subtract L[:, k] R[j, k] (never R R^T, never the pivot)
        while k != -1:
            next_k = rlink[k]
            q = rpos[k]
            # L[j, k] == 0, so L's rows from pos[k] on are all below j
            nt = _subtract_scaled(pos[k], Lp[k + 1], Li, Lx, np.float64(Rx[q]), j, mark, touched, nt, a)
            _link_next(k, q, Rp[k + 1], Ri, rhead, rlink, rpos)
            k = next_k
        if not diag > 0.0 or not np.isfinite(diag):
            return -(j + 1)
        ljj = np.sqrt(diag)
        cap = (budget - nnz - (n - j)) // (n - j) if budget < full else n
        rcap = max(np.int64(0), (rbudget - rnnz) // (n - j))
        m = _nonzero_rows(touched, nt, a)
        m_l = m
        m_r = np.int64(0)
        if m > cap:
            m = cap_rows(touched, m, j, a, cap + rcap)  # the kept and the intermediate entries
            for b in range(m):
                cand[b] = touched[b]
            m_l = cap_rows(cand, m, j, a, cap)  # the kept ones
            for b in range(m_l):
                kept[cand[b]] = j
            for b in range(m):
                i = touched[b]
                if kept[i] != j:
                    touched[m_r] = i  # the intermediate rows, compacted in place (m_r <= b)
                    m_r += 1
            for b in range(m_l):
                touched[m - m_l + b] = cand[b]  # ... and the kept rows after them
        lrows = touched[m - m_l:m] if m > cap else touched[:m_l]
        lrows.sort()
        Li[nnz] = j
        Lx[nnz] = ljj
        nnz += 1
        first = nnz
        for b in range(m_l):
            i = lrows[b]
            Li[nnz] = i
            Lx[nnz] = a[i] / ljj
            nnz += 1
        Lp[j + 1] = nnz
        _link_next(j, first - 1, nnz, Li, head, link, pos)
        rrows = touched[:m_r]
        rrows.sort()
        rfirst = rnnz
        for b in range(m_r):
            i = rrows[b]
            Ri[rnnz] = i
            Rx[rnnz] = a[i] / ljj
            rnnz += 1
        Rp[j + 1] = rnnz
        _link_next(j, rfirst - 1, rnnz, Ri, rhead, rlink, rpos)
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
                        breakdown_rule: str = "shift", intermediate_fill: float = 0.0) -> ICFResult:
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
    unfactorised diagonal; ``local_fixes`` counts them). ``intermediate_fill`` > 0: the factorisation also
    keeps up to ``intermediate_fill * budget`` intermediate entries that feed the later columns and are then
    discarded (:func:`_icf_intermediate_core`; Tismenetsky-Kaporin); only with the 'shift' rule.
    """
    if breakdown_rule not in ICF_BREAKDOWN_RULES:
        raise ValueError(f"breakdown_rule must be one of {ICF_BREAKDOWN_RULES}, got {breakdown_rule!r}")
    if not (np.isfinite(intermediate_fill) and intermediate_fill >= 0):
        raise ValueError(f"intermediate_fill must be a finite number >= 0, got {intermediate_fill!r}")
    if intermediate_fill > 0 and breakdown_rule != "shift":
        raise ValueError(f"intermediate_fill applies with breakdown_rule='shift' only, got {breakdown_rule!r}")
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
    if intermediate_fill > 0:
        rbudget = max(1, int(intermediate_fill * budget))
        second = (np.zeros(n + 1, np.int64), np.empty(rbudget, np.int32), np.empty(rbudget, np.float64))
        second_work = (np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64),
                       np.empty(n, np.int64))
    for restart in range(max_restarts + 1):
        if intermediate_fill > 0:
            a, mark, touched, head, link, pos = work
            rhead, rlink, rpos, cand, kept = second_work
            nnz = _icf_intermediate_core(n, Ap, Ai, Ax, used, budget, rbudget, Lp, Li, Lx, *second, a, mark,
                                         touched, head, link, pos, rhead, rlink, rpos, cand, kept)
        else:
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


def icf_column_scaling(X: sp.csr_matrix) -> np.ndarray:
    """(n,) float64 s_j = sqrt(||(X^T X)[:, j]||_2) (1 for empty items). Dividing the columns of X
    by s makes the Gram's columns comparable before entries are dropped (the official package's
    ICF preprocessing, kept so that results match at the same l2)."""
    s = np.sqrt(gram_column_norms(X))
    s[s == 0] = 1.0
    return s


def ldlt_icf(X: sp.csr_matrix, l2: float, budget: int, min_cooccurrence: float = 0.0,
             ordering: str = "colamd", prune_scale: np.ndarray | None = None,
             cache=None, column_scaling: bool = False,
             max_per_column: int | None = None, backend=None, breakdown_rule: str = "shift",
             working_fill: float = 1.0, intermediate_fill: float = 0.0) -> LDLFactor:
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
    from .. import cpu
    from ..errors import GPUOutOfMemory

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
    res = incomplete_cholesky(A, float(l2), working_budget(budget, n, working_fill), breakdown_rule=breakdown_rule,
                              intermediate_fill=intermediate_fill)
    del A
    t2 = time.perf_counter()
    logger.info("factorize: ordering=%s + gram %.2fs, ICF %.2fs (shift %.4g, %d restart(s)), nnz(L)=%d "
                "(budget %d)", ordering, t1 - t0, t2 - t1, res.shift, res.restarts, res.L.nnz, budget)
    L, d = sparsify_cholesky_factor(res.L, budget)
    seconds.update(icf=t2 - t1, cut=time.perf_counter() - t2)
    return LDLFactor(L=L, d=d, p=p, shift=res.shift, breakdowns=res.breakdowns, local_fixes=res.local_fixes,
                     seconds=seconds, devices=devices)
