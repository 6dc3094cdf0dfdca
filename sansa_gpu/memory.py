"""Know before you run out: predicted peak bytes of each training stage.

The prediction is built from exact structural counts, not guesses: nnz of the Gram (a counting
pass of the column-parallel Gram, no values stored), nnz of the exact Cholesky factor (elimination
tree + row-subtree counts, O(nnz(L)) time, O(n) memory) when CHOLMOD is used, and the nnz budget.
Bytes per entry follow the arrays each stage allocates (see the stage modules); the refinement's
candidate count is calibrated (``REFINE_CANDIDATES_PER_BUDGET``). Measured against peak RSS
(tests/test_memory.py, 4,000-20,000-item synthetic inputs at densities 0.005-0.02): 0.93-1.34 of it,
the overestimate where the refinement produces fewer candidates than counted (the safe direction).
"""

from __future__ import annotations

import os

import numba
import numpy as np
import scipy.sparse as sp

from .factorize import item_ordering, nnz_budget, working_budget
from .cpu.gram import BLOCK_SLOTS, pair_visits
from .gram import gram_lower, gram_lower_nnz

#: CHOLMOD supernodal factor + its simplicial CSC copy (factor.L()), bytes per nnz of the exact
#: factor: supernodes store relaxed dense blocks (8 B/entry + amalgamation zeros), the copy
#: 12 B/entry. Measured 30.6 on gowalla (496M nnz, 15.3 GB peak RSS of the whole fit) and 24 on a
#: 4,000-item synthetic set (RSS sampled during a warm fit); 28 is within 15% of both.
CHOLMOD_BYTES_PER_NNZ = 28.0

#: What the peak adds to the largest stage's count (not to CHOLMOD's factorisation, calibrated on RSS
#: already): memory a stage freed that the allocator keeps resident while the next one runs (glibc's
#: heap). Measured on the 4,000-item input of tests/test_memory.py: the weights stage's peak RSS
#: 1.2-1.4x its traced allocations, the fit's peak RSS 0.86-0.97x the largest stage counted without it
#: (four runs).
ALLOCATOR_ALLOWANCE = 0.15

#: Candidates one refinement sweep produces, as a multiple of the budget (the buffer they are written
#: to holds up to 4x): measured 1.0-2.1 on ml-1m, lastfm-2k and synthetic data; 2.5 counted.
REFINE_CANDIDATES_PER_BUDGET = 2.5


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux), else total physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - non-Linux
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@numba.njit(cache=True)
def _cholesky_column_counts(n, Up, Ui):
    """Entries per column of the Cholesky factor of a symmetric pattern given by its upper triangle in
    CSC (column i lists rows k <= i), diagonal included: int64 (n,). Elimination tree (Liu), then
    row-subtree path counting (row i of L holds the columns on the paths from the k of row i of A
    up the tree to i)."""
    parent = np.full(n, -1, dtype=np.int64)
    ancestor = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        for p in range(Up[i], Up[i + 1]):
            k = Ui[p]
            while k != -1 and k < i:
                nxt = ancestor[k]
                ancestor[k] = i
                if nxt == -1:
                    parent[k] = i
                k = nxt
    mark = np.full(n, -1, dtype=np.int64)
    counts = np.ones(n, dtype=np.int64)  # the diagonal
    for i in range(n):
        mark[i] = i
        for p in range(Up[i], Up[i + 1]):
            k = Ui[p]
            while k != -1 and k < i and mark[k] != i:
                mark[k] = i
                counts[k] += 1
                k = parent[k]
    return counts


def cholesky_column_counts(A_lower: sp.csc_matrix) -> np.ndarray:
    """Exact entries per column (int64 (n,)) of the Cholesky factor of the symmetric matrix whose
    lower triangle is given (its pattern; no values)."""
    U = sp.csc_matrix(A_lower.T)  # column i: rows k <= i
    U.sort_indices()
    return _cholesky_column_counts(U.shape[0], U.indptr.astype(np.int64), U.indices)


def cholesky_fill(A_lower: sp.csc_matrix) -> int:
    """Exact nnz(L) of the Cholesky factor of the symmetric matrix whose lower triangle is given."""
    return int(cholesky_column_counts(A_lower).sum())


def cholesky_flops(counts: np.ndarray) -> float:
    """Floating-point operations of a (supernodal or left-looking) Cholesky with these column counts:
    sum over columns of c_j^2 (each column's outer-product update; the textbook count up to lower terms)."""
    c = np.asarray(counts, dtype=np.float64)
    return float(np.dot(c, c))


def gram_bound_slots(X: sp.csr_matrix, max_per_column: int | None) -> int:
    """Sum over the columns of the one-pass Gram's per-column bounds (:mod:`sansa_gpu.cpu.gram`: pair
    visits, at most n and max_per_column + 1): the slots its blocks hold in all."""
    n = X.shape[1]
    visits = pair_visits(X.indptr, X.indices, n).astype(np.float64)
    bound = np.minimum(visits, float(n) if max_per_column is None else min(float(n), max_per_column + 1.0))
    return int(bound.sum())


def _stage_bytes(n_users: int, n: int, nnz_x: int, budget: int, nnz_g: int, fill: int | None, factorizer: str,
                 bound_slots: int | None = None, working_fill: float = 1.0,
                 intermediate_fill: float = 0.0) -> dict:
    """Bytes alive in each stage, given the structural counts (see estimate_memory)."""
    x_bytes = nnz_x * 8 + (n_users + 1) * 8
    threads = numba.get_num_threads()
    # per-chunk O(n) scratch of the numba loops: the Gram's acc (8 B), two int32 arrays and one int64
    # (one chunk per thread); the refinement's two float64 accumulators and four int64 arrays (8 chunks
    # per thread, but each chunk's arrays live only while it runs: one set per thread is alive; measured
    # at 400,000 items, 2 threads, 16 chunks: 35 MB of scratch, two sets of 19 MB)
    scratch = threads * n * 24
    refine_scratch = threads * n * 48
    out = {"budget": budget, "nnz_gram": nnz_g}
    out["input"] = 2 * x_bytes  # a second X (ICF column scaling, or the validated copy of a non-canonical input) + CSC copy
    gram_bytes = nnz_g * 12 + (n + 1) * 8
    # the one-pass build (sansa_gpu.cpu.gram): the entries kept so far, one block buffer and that block
    # compacted. The buffer's address space is the columns' bounds, but each thread appends what it
    # keeps to its own region, so only those pages become resident: about what the block keeps
    total = max(1, nnz_g if bound_slots is None else bound_slots)
    kept_per_block = nnz_g * min(BLOCK_SLOTS, total) / total
    block = int(12 * 2 * kept_per_block)
    out["gram"] = out["input"] + scratch + gram_bytes + block
    if factorizer == "icf":
        # Gram alive + L slots (int32 + float64; working_fill x the budget while it factorises, as
        # ldlt_icf keeps) + cut: float32 magnitudes x2 and two masks over those slots, the kept copy
        work = working_budget(budget, n, working_fill)
        # the intermediate tier (intermediate_fill x the working budget, int32 + float64) and its five
        # O(n) int64 work arrays
        second = int(intermediate_fill * work) * 12 + n * 48 if intermediate_fill > 0 else 0
        out["factorize"] = out["input"] + gram_bytes + work * 12 + n * 48 + second
        out["factorize"] = max(out["factorize"], out["input"] + work * (12 + 8 + 2) + budget * 8)
    else:
        out["nnz_exact_L"] = fill
        out["factorize"] = out["input"] + int(CHOLMOD_BYTES_PER_NNZ * fill)
    # refine (sansa_gpu.cpu.refine.refine_sweep): L and K (8 B/entry each) and the numba scratch, then
    # the larger of two moments: the candidate buffer (sum of the column caps <= 4 x the budget, 8 B/slot)
    # with the compacted candidates (9 B each), or -- the buffer freed -- the compacted candidates with
    # the selection's float32 magnitudes and mask (9 B more). Candidates produced: 1.0-2.1 x the budget
    # measured (ml-1m, lastfm-2k, synthetic), 2.5 counted. Both this stage and the next also count the
    # input stage's copies of X although fit has freed them by then: the RSS measured in these stages
    # needs that much more (heap the allocator keeps resident; tests/test_memory.py's 4,000-item input
    # reads about 0.87 without it)
    produced = int(REFINE_CANDIDATES_PER_BUDGET * budget)
    out["refine"] = (out["input"] + budget * 16 + refine_scratch
                     + max(4 * budget * 8 + produced * 9, produced * 18))
    # weights (sansa_gpu.weights.weights_from_inverse), L and K alive (and X's copies, as above): the
    # permutation's int64 slot, column and source indices, the float64 values and their product, the
    # results (W^T and Z, CSC and CSR): 44 B per entry at their peak (tracemalloc, 2M entries)
    out["weights"] = out["input"] + budget * (8 + 8 + 44)
    # the allowance on every stage but CHOLMOD's factorisation, whose bytes per nonzero were calibrated
    # against the whole fit's peak RSS already
    calibrated = ("factorize",) if factorizer != "icf" else ()
    counted = max(out[k] for k in ("input", "gram", "factorize", "refine", "weights") if k not in calibrated)
    out["peak"] = max([int((1.0 + ALLOCATOR_ALLOWANCE) * counted)] + [out[k] for k in calibrated])
    return out


def gram_nnz_upper_bound(X: sp.csr_matrix) -> int:
    """At most this many entries in the lower triangle of X^T X (+ the diagonal): min(n(n+1)/2,
    sum over users of |u|(|u|+1)/2 + n). O(users)."""
    n = X.shape[1]
    per_user = np.diff(X.indptr).astype(np.float64)
    return int(min(n * (n + 1) // 2, (per_user * (per_user + 1) / 2).sum() + n))


def memory_upper_bound(X: sp.csr_matrix, density: float, factorizer: str = "cholmod",
                       max_per_column: int | None = None, working_fill: float = 1.0,
                       intermediate_fill: float = 0.0) -> dict:
    """Like :func:`estimate_memory` but from worst-case counts only (O(users) time): the Gram has
    at most min(n(n+1)/2, sum_u |u|(|u|+1)/2, n (max_per_column + 1)) lower entries and the exact
    factor at most n(n+1)/2. When this bound fits, the exact counts are not needed."""
    n_users, n = X.shape
    full = n * (n + 1) // 2
    nnz_g = gram_nnz_upper_bound(X)
    if max_per_column is not None:
        nnz_g = min(nnz_g, n * (int(max_per_column) + 1))
    return _stage_bytes(n_users, n, int(X.nnz), nnz_budget(density, n), nnz_g, full, factorizer,
                        gram_bound_slots(X, max_per_column) if factorizer == "icf" else None, working_fill,
                        intermediate_fill)


def structural_counts(X: sp.csr_matrix, factorizer: str = "cholmod", min_cooccurrence: float = 0.0,
                      ordering: str = "colamd", max_per_column: int | None = None) -> tuple[int, int | None]:
    """(nnz of the Gram's lower triangle, nnz of the exact Cholesky factor -- None for 'icf'): the part
    of :func:`estimate_memory` that does not depend on the density. 'icf': the Gram's count pass
    alone (:func:`~sansa_gpu.gram.gram_lower_nnz`: its work, none of its memory; the count does not
    depend on the ordering); 'cholmod': the ordering, a Gram build and an O(nnz(L)) symbolic count."""
    if factorizer == "icf":  # the count pass alone, no entry stored (l2 > 0, as in the fit); a per-item
        # cap keeps at most max_per_column + 1 entries of a column (an upper bound of the capped count)
        nnz = gram_lower_nnz(X, 1.0, min_cooccurrence)
        if max_per_column is not None:
            nnz = min(nnz, X.shape[1] * (int(max_per_column) + 1))
        return nnz, None
    prof = exact_factor_profile(X, ordering)
    return prof["nnz_gram"], prof["fill"]


def exact_factor_profile(X: sp.csr_matrix, ordering: str = "colamd") -> dict:
    """What the exact factor of X^T X + l2 I costs, from its structure alone: {'nnz_gram' (lower
    triangle), 'fill' (nnz of the exact factor), 'flops' (:func:`cholesky_flops`), 'seconds' (the
    ordering, the Gram and the symbolic count that measured them)}. The ordering, one Gram build and
    an O(fill) count: no factor values."""
    import time

    t0 = time.perf_counter()
    A = gram_lower(X, 1.0, item_ordering(X, ordering))
    counts = cholesky_column_counts(A)
    return {"nnz_gram": int(A.nnz), "fill": int(counts.sum()), "flops": cholesky_flops(counts),
            "seconds": time.perf_counter() - t0}


def estimate_memory(X: sp.csr_matrix, density: float, factorizer: str = "cholmod", min_cooccurrence: float = 0.0,
                    ordering: str = "colamd", counts: tuple[int, int | None] | None = None,
                    max_per_column: int | None = None, working_fill: float = 1.0,
                       intermediate_fill: float = 0.0) -> dict:
    """Predicted peak bytes per stage of :meth:`SANSA.fit` on X (users x items CSR).

    Returns {'input', 'gram', 'factorize', 'refine', 'weights', 'peak', 'nnz_gram', 'nnz_exact_L'
    (cholmod only), 'budget'}; each stage counted with what is alive during it, and 'peak' the largest
    stage plus :data:`ALLOCATOR_ALLOWANCE` (CHOLMOD's factorisation without it: calibrated on RSS).
    ``counts``: :func:`structural_counts` of the same (X, factorizer, min_cooccurrence, ordering) when
    already known (estimates at several densities share them); else they are counted.
    ``working_fill``: ``SANSA(icf_fill=)``, the ICF's working budget as a multiple of the factor's;
    ``intermediate_fill``: ``SANSA(icf_intermediate_fill=)``, its intermediate tier as a multiple of that.
    """
    n_users, n = X.shape
    nnz_g, fill = (counts if counts is not None
                   else structural_counts(X, factorizer, min_cooccurrence, ordering, max_per_column))
    return _stage_bytes(n_users, n, int(X.nnz), nnz_budget(density, n), nnz_g, fill, factorizer,
                        gram_bound_slots(X, max_per_column) if factorizer == "icf" else None, working_fill,
                        intermediate_fill)
