"""The SANSA estimator: fit / recommend / score / save / load."""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from . import __version__, cpu
from .backend import backend_device, get_backend, resolve_device
from .candidates import blocked_items
from .defaults import (  # noqa: F401  (FACTORIZERS, REFINE_TOL, ... are also read from here by older code)
    DEFAULT_BATCH_USERS,
    DEFAULT_L2,
    DEFAULT_MIN_COOCCURRENCE,
    DEFAULT_NNZ_PER_ITEM,
    DEFAULT_REFINE_SWEEPS,
    DENSE_DATA_ITEMS_PER_USER,
    DENSE_ICF_FILL,
    DENSE_ICF_INTERMEDIATE_FILL,
    DENSE_NNZ_PER_ITEM,
    DENSE_REFINE_SWEEPS,
    DEVICES,
    FACTORIZERS,
    GRAM_PER_FACTOR_ENTRY,
    ICF_FILL_FROM_NNZ_PER_ITEM,
    L2_PER_MEAN_DIAGONAL,
    REFINE_TOL,
)
from .errors import GPUOutOfMemory, NotFittedError
from .factorize import ORDERINGS, FactorCache, choose_factorizer, icf_column_scaling, ldlt_cholmod, ldlt_icf, nnz_budget
from .factorize.rule import interactions_per_user
from .gram import mean_gram_diagonal
from .ids import IdMap, encode_interactions, is_table
from .io import csr_from_arrays, csr_to_arrays, load_arrays, save_arrays
from .refine import refine_inverse
from .scoring_cache import ScoringCache
from .serving import item_rows, long_format, similar_format
from .validation import (
    check_density,
    check_interactions,
    check_nonnegative_int,
    check_positive_float,
    check_positive_int,
)

logger = logging.getLogger(__name__)
_CACHE_CREATION = threading.Lock()  # guards only the creation of a model's scoring cache (see SANSA._cache_for)


@dataclass(frozen=True)
class _FitPlan:
    """What :meth:`SANSA.fit` decided before any work (:meth:`SANSA._fit_plan`)."""

    factorizer: str  # 'icf' or 'cholmod'
    reason: str  # why (the auto rule's words, or 'set by the caller')
    ordering: str
    n: int  # items
    density: float
    budget: int  # nonzeros per factor
    gram_cap: int | None  # max_gram_per_item resolved
    column_scaling: bool
    l2: float  # l2 resolved (SANSA.l2_for)
    refine_sweeps: int  # refine_sweeps resolved
    min_cooccurrence: float  # min_cooccurrence resolved (0 for CHOLMOD)
    icf_fill: float  # icf_fill resolved (SANSA.icf_fills_for; 1 for CHOLMOD)
    icf_intermediate_fill: float  # icf_intermediate_fill resolved (0 for CHOLMOD)
    exact_counts: tuple | None = None  # (nnz_gram, fill) when the auto rule analysed this exact factor
    device: str | None = None  # 'cpu' or 'gpu', resolved after the memory check
    backend: object = None  # sansa_gpu.cpu or sansa_gpu.gpu


class SANSA:
    """Scalable Approximate NonSymmetric Autoencoder (Spisak et al., RecSys 2023).

    A sparse, factorised approximation of EASE: ``B - I ~= Wt @ Z`` with ``A^{-1} ~= W^T D^{-1} W``
    for ``A = X^T X + l2*I``. Scores for users X_u are ``(X_u Wt) Z``.

    Parameters
    ----------
    l2 : float > 0, or None
        Ridge regularisation lambda of EASE, added to the diagonal of the Gram that is factorised. None
        (default): resolved per fit (``l2_``) for the problem the fit solves: :data:`DEFAULT_L2` (20) on the
        column-scaled Gram (``column_scaling``, the ICF default), whose diagonal is at most 1; on the
        unscaled Gram (the CHOLMOD default), :data:`L2_PER_MEAN_DIAGONAL` (4) times the mean of its diagonal
        over the items with an interaction (the mean item popularity of 0/1 data), because that diagonal,
        and with it EASE's best lambda, grows with the data (mean diagonal 218 and best lambda 700 on ml-1m;
        9.7 and 50 on citeulike-a).
    density : float in (0, 1], or None
        Weight density delta: each factor (L, then K ~= L^{-1}) keeps about ``delta * n_items**2``
        nonzeros (at least the diagonal). 1 keeps everything: the model then equals EASE. None
        (default): :data:`DEFAULT_NNZ_PER_ITEM` nonzeros per item column, delta = 16 / n_items
        (capped at 1), or :data:`DENSE_NNZ_PER_ITEM` (64) per item on dense data (at least
        :data:`DENSE_DATA_ITEMS_PER_USER`, 50, interactions per user: no 16-per-item model comes within 5%
        of EASE on ml-1m), resolved per fit (``density_``). A fixed delta scales badly with the
        catalogue (5e-4 is 2 per item on ml-1m, 500 on a million items); 16 per item is where the
        validation curves of the shared datasets bend (``sansa_gpu.tune`` trials, docs/benchmarks.md: gowalla
        0.187 / 0.195 / 0.195 validation Recall@20 at 4 / 16 / 64 per item, pinterest 0.120 / 0.140
        / 0.144), at a quarter of 64's memory and scoring work.
    factorizer : 'auto' | 'cholmod' | 'icf'
        'cholmod': exact CHOLMOD LDL^T, then cut to the budget (the exact factor must fit in memory;
        needs the ``sansa_gpu[cholmod]`` extra). 'icf': column-parallel Gram + incomplete Cholesky that
        never exceeds the budget (no SuiteSparse needed). 'auto' (default) picks one per fit by the
        measured rule of :func:`sansa_gpu.factorize.choose_factorizer`; the choice and its reason are in
        ``factorizer_`` and ``stats_["factorizer_reason"]``.
    refine_sweeps : int >= 0, or None
        Minimal-residual sweeps refining K from K0 = 2I - L. None (default): :data:`DEFAULT_REFINE_SWEEPS`
        (2), or :data:`DENSE_REFINE_SWEEPS` (4) on dense data, where the denser K converges more slowly;
        resolved per fit (``refine_sweeps_``).
    device : 'auto' | 'cpu' | 'gpu'
        Where the refinement, weight assembly and inference run. The factorisation always runs on
        the CPU.
    ordering : str or None
        Item ordering before factorising: one of CHOLMOD's fill-reducing methods ('colamd', 'amd',
        'metis', 'nesdis', 'natural', 'best') or, for 'icf' only, 'popularity' (ascending item
        count, O(nnz), no SuiteSparse needed). None = 'colamd' for 'cholmod', 'popularity' for 'icf'.
        For 'icf' the ordering decides which entries are dropped, so it changes accuracy: measured
        BARS recall@20 at density 5e-4 is 0.165 (popularity) vs 0.152 (colamd) on gowalla and
        0.057 vs 0.052 on epinions (docs/benchmarks.md), and COLAMD is the slowest stage at 500k items.
    column_scaling : bool or None
        Divide item column j of X by sqrt(||(X^T X)[:, j]||_2) before fitting (the official ICF
        preprocessing: it evens out the Gram before entries are dropped and, since scoring uses the
        unscaled X, damps popular items). None = True for 'icf', False for 'cholmod'.
    min_cooccurrence : float >= 0, or None
        'icf' only: drop Gram entries below this value while building it (for 0/1 data, items seen
        together by fewer users; the test is on the unscaled Gram even with column_scaling). 0 keeps
        the exact Gram. A positive value with factorizer='cholmod' (which factorises the exact Gram)
        is a ValueError. None (default): resolved per fit (``min_cooccurrence_``):
        :data:`DEFAULT_MIN_COOCCURRENCE` (2: pairs seen by one user only are dropped) for ICF below density 1
        on 0/1 or count data (whole numbers >= 1, repeated interactions summed), else 0 (fractional weights,
        whose Gram entries are not counts; density 1, which then stays EASE; CHOLMOD).
    max_gram_per_item : 'auto', int > 0 or None
        'icf' only: keep at most this many off-diagonal Gram entries per item column while the Gram
        is built (the largest co-occurrences, ties to the earlier item in the ordering), so that a few
        users with thousands of items cannot make the stored Gram dense: its memory is then at most
        ``n_items * (max_gram_per_item + 1)`` entries. 'auto' (default): :data:`GRAM_PER_FACTOR_ENTRY`
        (16) times the factor's nonzeros per item column, 256 at the default density (1024 on dense data), no cap at density
        1 (resolved per fit: ``stats_["max_gram_per_item"]``). Measured at the default density on six
        shared datasets (docs/gpu_training.md): 256 changed test Recall@20 by at most 0.0001 against no
        cap and sped up the ICF up to 7x; 64 cost 0.0018 on ml-1m, 32 cost 0.024 there. None: no cap.
        With factorizer='cholmod' only 'auto' is accepted (CHOLMOD factorises the exact Gram).
    refine_tol : float > 0
        Columns of K whose residual ||e_j - L k_j|| is at or below this are left as they are in a
        sweep (their minimal-residual step, the costly part, is skipped). Default 1e-2
        (:data:`REFINE_TOL`); 1e-7 converges K.
    icf_fill : float >= 1, or None
        'icf' only: the incomplete Cholesky keeps up to ``icf_fill`` times the factor's budget while it
        factorises (fewer entries dropped before they feed later columns), then the factor is cut to
        the budget by magnitude over the whole factor, as CHOLMOD's exact factor is. 1: the budget
        throughout. None (default): resolved per fit (``icf_fill_``, :meth:`icf_fills_for`):
        :data:`DENSE_ICF_FILL` (2) on the exact, column-scaled Gram (``min_cooccurrence`` 0) from
        :data:`ICF_FILL_FROM_NNZ_PER_ITEM` (64) nonzeros per item column, where, together with the intermediate
        fill below, it keeps the ICF within 2% of the exact factor cut to the same density on the shared
        datasets (docs/benchmarks.md), at 1.1-3.3x the fit time; else 1 (below 64 per item the plain ICF is
        the better one; on the pruned Gram the pair changed nothing but the time, on the unscaled one it breaks
        down).
    icf_intermediate_fill : float >= 0, or None
        'icf' only: besides the factor, the incomplete Cholesky keeps up to this many times its working
        budget of intermediate entries, which feed the later columns (through L R^T and R L^T, never R R^T
        or a pivot) and are then discarded (Tismenetsky-Kaporin): the pivots no longer break down the way
        they do when the entries are just dropped, which matters on the unscaled Gram of dense data
        (``column_scaling=False``). 0: none. None (default): resolved per fit as ``icf_fill`` is
        (``icf_intermediate_fill_``): :data:`DENSE_ICF_INTERMEDIATE_FILL` (1) where ``icf_fill`` resolves to 2,
        else 0. On ml-1m's unscaled Gram at l2 1000
        (docs/icf_robustness.md): 16 per item 0.187 (18 restarts) -> 0.374 with 64, no restart, above
        CHOLMOD's 0.359; 64 per item 0.231 -> 0.328, below CHOLMOD's 0.376. Memory: 12 bytes per entry.

    Input values are used as interaction weights (a 0/1 matrix is the usual implicit feedback);
    duplicates are summed and explicit zeros ignored. Items without interactions are never
    recommended.

    Fitted attributes: ``l2_``, ``density_``, ``refine_sweeps_``, ``min_cooccurrence_``, ``icf_fill_``,
    ``icf_intermediate_fill_`` (the values the fit used, the defaults resolved), ``weights_`` (Wt, Z), ``n_items_``, ``history_`` (loss per sweep, with the
    device each sweep ran on), ``stats_`` (seconds and nnz per stage; ``stats_["stage_devices"]``:
    where each fitting stage actually ran -- after a GPU out-of-memory fallback too; scoring never
    modifies the model, and logs where it ran at DEBUG level; for 'icf' also ``icf_shift``, the diagonal shift the incomplete
    Cholesky was computed with -- ``l2_`` unless it restarted --, ``icf_restarts`` and
    ``icf_breakdowns``, one ``{"pivot", "shift"}`` per failed attempt: a non-positive pivot
    restarts it with a larger shift, i.e. more regularisation than asked, with a logged warning),
    ``device_`` (the device the model was set to use), ``item_ids_`` (an :class:`~sansa_gpu.ids.IdMap`
    of raw item IDs when fitted from a table, else None). All of them are saved with the model
    (:meth:`load` says what is resolved again on loading).
    """

    def __init__(
        self,
        l2: float | None = None,
        density: float | None = None,
        factorizer: str = "auto",
        refine_sweeps: int | None = None,
        device: str = "auto",
        ordering: str | None = None,
        column_scaling: bool | None = None,
        min_cooccurrence: float | None = None,
        refine_tol: float = REFINE_TOL,
        max_gram_per_item: int | str | None = "auto",
        icf_fill: float | None = None,
        icf_intermediate_fill: float | None = None,
    ):
        self.l2 = l2
        self.density = density
        self.factorizer = factorizer
        self.refine_sweeps = refine_sweeps
        self.device = device
        self.ordering = ordering
        self.column_scaling = column_scaling
        self.min_cooccurrence = min_cooccurrence
        self.refine_tol = refine_tol
        self.max_gram_per_item = max_gram_per_item  # scikit-learn's contract: stored as given, checked in fit
        self.icf_fill = icf_fill
        self.icf_intermediate_fill = icf_intermediate_fill

    def _check_params(self) -> None:
        if self.l2 is not None:
            check_positive_float(self.l2, "l2")
        if self.density is not None:
            check_density(self.density)
        if self.refine_sweeps is not None:
            check_nonnegative_int(self.refine_sweeps, "refine_sweeps")
        check_positive_float(self.refine_tol, "refine_tol")
        if self.factorizer not in FACTORIZERS:
            raise ValueError(f"factorizer must be one of {FACTORIZERS}, got {self.factorizer!r}")
        if self.ordering is not None and self.ordering not in ORDERINGS:
            raise ValueError(f"ordering must be None or one of {ORDERINGS}, got {self.ordering!r}")
        if self.ordering == "popularity" and self.factorizer == "cholmod":
            raise ValueError("ordering='popularity' needs factorizer='icf' (CHOLMOD computes its own orderings)")
        if self.column_scaling not in (None, True, False):
            raise TypeError(f"column_scaling must be None, True or False, got {self.column_scaling!r}")
        if self.min_cooccurrence is not None and not (
                isinstance(self.min_cooccurrence, (int, float)) and not isinstance(self.min_cooccurrence, bool)
                and np.isfinite(self.min_cooccurrence) and self.min_cooccurrence >= 0):
            raise ValueError(f"min_cooccurrence must be None or a finite number >= 0, got {self.min_cooccurrence!r}")
        if self.min_cooccurrence and self.factorizer == "cholmod":
            raise ValueError(f"min_cooccurrence applies to factorizer='icf' only (CHOLMOD factorises the exact Gram); "
                             f"got min_cooccurrence={self.min_cooccurrence!r} with factorizer={self.factorizer!r}")
        if self.max_gram_per_item is not None and not (isinstance(self.max_gram_per_item, str)
                                                       and self.max_gram_per_item == "auto"):
            if isinstance(self.max_gram_per_item, str):
                raise ValueError(f"max_gram_per_item must be 'auto', None or an integer > 0, got "
                                 f"{self.max_gram_per_item!r}")
            check_positive_int(self.max_gram_per_item, "max_gram_per_item")
            if self.factorizer == "cholmod":
                raise ValueError(f"max_gram_per_item applies to factorizer='icf' only (CHOLMOD factorises the exact "
                                 f"Gram); got max_gram_per_item={self.max_gram_per_item!r} with factorizer='cholmod'")
        if self.icf_fill is not None and not (
                isinstance(self.icf_fill, (int, float)) and not isinstance(self.icf_fill, bool)
                and np.isfinite(self.icf_fill) and self.icf_fill >= 1):
            raise ValueError(f"icf_fill must be None or a number >= 1, got {self.icf_fill!r}")
        if self.icf_intermediate_fill is not None and not (
                isinstance(self.icf_intermediate_fill, (int, float)) and not isinstance(self.icf_intermediate_fill, bool)
                and np.isfinite(self.icf_intermediate_fill) and self.icf_intermediate_fill >= 0):
            raise ValueError(f"icf_intermediate_fill must be None or a number >= 0, "
                             f"got {self.icf_intermediate_fill!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be 'auto', 'cpu' or 'gpu', got {self.device!r}")

    def gram_cap_for(self, n_items: int, factorizer: str = "icf", density: float | None = None) -> int | None:
        """The per-item cap on the Gram a fit on ``n_items`` items at ``density`` (default:
        :meth:`density_for` on sparse data) uses (``max_gram_per_item`` resolved; None: no cap, as always
        with CHOLMOD)."""
        if factorizer != "icf" or self.max_gram_per_item is None:
            return None
        if self.max_gram_per_item != "auto":
            return int(self.max_gram_per_item)
        return self._auto_gram_cap(n_items, self.density_for(n_items) if density is None else density)

    @staticmethod
    def _auto_gram_cap(n_items: int, density: float) -> int | None:
        """``max_gram_per_item='auto'`` at ``density``: GRAM_PER_FACTOR_ENTRY per factor nonzero of an
        item column; None when that keeps every entry anyway."""
        per_item = max(1, int(np.ceil(density * n_items)))
        cap = GRAM_PER_FACTOR_ENTRY * per_item
        return None if cap >= n_items - 1 else int(cap)

    def density_for(self, n_items: int, interactions_per_user: float = 0.0) -> float:
        """The density a fit on ``n_items`` items uses: ``density``, or by default
        :data:`DEFAULT_NNZ_PER_ITEM` / n_items, :data:`DENSE_NNZ_PER_ITEM` / n_items when the training
        data has at least :data:`DENSE_DATA_ITEMS_PER_USER` ``interactions_per_user`` (at most 1)."""
        if self.density is not None:
            return float(self.density)
        per_item = DENSE_NNZ_PER_ITEM if _dense_data(interactions_per_user) else DEFAULT_NNZ_PER_ITEM
        return min(1.0, per_item / max(1, int(n_items)))

    def refine_sweeps_for(self, interactions_per_user: float = 0.0) -> int:
        """The refinement sweeps a fit uses: ``refine_sweeps``, or by default :data:`DEFAULT_REFINE_SWEEPS`,
        :data:`DENSE_REFINE_SWEEPS` on dense data (as :meth:`density_for`)."""
        if self.refine_sweeps is not None:
            return int(self.refine_sweeps)
        return DENSE_REFINE_SWEEPS if _dense_data(interactions_per_user) else DEFAULT_REFINE_SWEEPS

    def l2_for(self, X: sp.csr_matrix, column_scaling: bool) -> float:
        """The l2 a fit on X (users, items) uses: ``l2``, or by default :data:`DEFAULT_L2` when the Gram is
        column-scaled, else :data:`L2_PER_MEAN_DIAGONAL` times the mean diagonal of X^T X over the items with
        an interaction (:func:`sansa_gpu.gram.mean_gram_diagonal`)."""
        if self.l2 is not None:
            return float(self.l2)
        if column_scaling:
            return DEFAULT_L2
        mean_diag = mean_gram_diagonal(X)
        return L2_PER_MEAN_DIAGONAL * mean_diag if mean_diag > 0 else DEFAULT_L2

    def min_cooccurrence_for(self, X: sp.csr_matrix, factorizer: str, density: float = 0.0) -> float:
        """The Gram pruning a fit on X with ``factorizer`` at ``density`` uses: ``min_cooccurrence``, or by
        default :data:`DEFAULT_MIN_COOCCURRENCE` for 'icf' below density 1 when every stored value of X is a
        whole number >= 1 (0/1 data, or counts, repeated interactions summed: a Gram entry below 2 is then a
        pair seen by one user once), else 0 (fractional weights, whose Gram entries are not counts; density 1,
        which is EASE itself; CHOLMOD, which factorises the exact Gram)."""
        if self.min_cooccurrence is not None:
            return float(self.min_cooccurrence)
        if factorizer != "icf" or density >= 1.0 or X.nnz == 0:
            return 0.0
        counts = bool(np.all(X.data >= 1)) and bool(np.all(X.data == np.floor(X.data)))
        return float(DEFAULT_MIN_COOCCURRENCE) if counts else 0.0

    def icf_fills_for(self, n_items: int, density: float, factorizer: str = "icf", min_cooccurrence: float = 0.0,
                      column_scaling: bool = True) -> tuple[float, float]:
        """(working fill, intermediate fill) of the incomplete Cholesky a fit on ``n_items`` items at ``density``
        with the Gram pruned at ``min_cooccurrence`` and ``column_scaling`` (both resolved) uses: ``icf_fill`` and
        ``icf_intermediate_fill``, each by default :data:`DENSE_ICF_FILL` and :data:`DENSE_ICF_INTERMEDIATE_FILL`
        on the exact, column-scaled Gram from :data:`ICF_FILL_FROM_NNZ_PER_ITEM` nonzeros per item column of the
        factor; 1 and 0 below, on a pruned Gram (where the pair changed nothing but the time), on the unscaled
        Gram (where it breaks down as the plain ICF does) and at density 1 (where nothing is dropped); (1, 0) with
        CHOLMOD, whatever is set (it does not read them)."""
        if factorizer != "icf":
            return 1.0, 0.0
        # (the relative slack: density = 64 / n times n is 63.999... for some n)
        wide = (density < 1.0 and not min_cooccurrence and column_scaling
                and density * n_items * (1 + 1e-9) >= ICF_FILL_FROM_NNZ_PER_ITEM)
        fill = (DENSE_ICF_FILL if wide else 1.0) if self.icf_fill is None else float(self.icf_fill)
        intermediate = ((DENSE_ICF_INTERMEDIATE_FILL if wide else 0.0) if self.icf_intermediate_fill is None
                        else float(self.icf_intermediate_fill))
        return fill, intermediate

    def _fitted_setting(self, name: str, fallback):
        """A setting the last fit resolved (recorded in ``stats_``; models saved before it was recorded:
        ``fallback()``)."""
        self._check_fitted()
        value = self.stats_.get(name)
        return fallback() if value is None else value

    @property
    def density_(self) -> float:
        """The density the last fit used (see ``density``)."""
        return float(self._fitted_setting("density", lambda: self.density_for(self.n_items_)))

    @property
    def l2_(self) -> float:
        """The l2 the last fit used (see ``l2``)."""
        return float(self._fitted_setting("l2", lambda: DEFAULT_L2 if self.l2 is None else self.l2))

    @property
    def min_cooccurrence_(self) -> float:
        """The Gram pruning the last fit used (see ``min_cooccurrence``)."""
        return float(self._fitted_setting("min_cooccurrence", lambda: self.min_cooccurrence or 0.0))

    @property
    def icf_fill_(self) -> float:
        """The ICF working fill the last fit used (see ``icf_fill``; 1 with CHOLMOD)."""
        return float(self._fitted_setting("icf_fill", lambda: 1.0 if self.icf_fill is None else self.icf_fill))

    @property
    def icf_intermediate_fill_(self) -> float:
        """The ICF intermediate fill the last fit used (see ``icf_intermediate_fill``; 0 with CHOLMOD)."""
        return float(self._fitted_setting("icf_intermediate_fill", lambda: self.icf_intermediate_fill or 0.0))

    @property
    def refine_sweeps_(self) -> int:
        """The refinement sweeps the last fit used (see ``refine_sweeps``)."""
        return int(self._fitted_setting("refine_sweeps", self.refine_sweeps_for))

    @property
    def ordering_(self) -> str:
        """The ordering used: ``ordering``, or by default 'colamd' for 'cholmod' and 'popularity' for 'icf'
        (with factorizer='auto': for the factoriser chosen by the last fit; before one, 'icf')."""
        return self._ordering_for(getattr(self, "factorizer_", None) or self.factorizer)

    def _ordering_for(self, factorizer: str) -> str:
        if self.ordering is not None:
            return self.ordering
        return "colamd" if factorizer == "cholmod" else "popularity"

    def choose_factorizer(self, X, counts: dict | None = None) -> tuple[str, str]:
        """(factoriser, reason) a fit on X would use: ``factorizer`` itself unless it is 'auto'.
        ``counts``: see :func:`sansa_gpu.factorize.choose_factorizer`."""
        if self.factorizer != "auto":
            return self.factorizer, "set by the caller"
        if self.max_gram_per_item is not None and self.max_gram_per_item != "auto":
            return "icf", "max_gram_per_item applies to ICF only"
        return choose_factorizer(X, self.density_for(X.shape[1], interactions_per_user(X)), ordering=self.ordering,
                                 min_cooccurrence=float(self.min_cooccurrence or 0.0), counts=counts)

    _PARAM_NAMES = ("l2", "density", "factorizer", "refine_sweeps", "device", "ordering", "column_scaling",
                    "min_cooccurrence", "refine_tol", "max_gram_per_item", "icf_fill",
                    "icf_intermediate_fill")

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's parameters as set (scikit-learn's contract: ``clone``, grid search and
        pipelines rebuild the model from them). ``deep`` is accepted for scikit-learn; there are no
        nested estimators."""
        return {name: getattr(self, name) for name in self._PARAM_NAMES}

    def set_params(self, **params) -> "SANSA":
        """Set parameters by name (checked when ``fit`` runs, as scikit-learn does); returns self."""
        for name, value in params.items():
            if name not in self._PARAM_NAMES:
                raise ValueError(f"invalid parameter {name!r} for estimator {self!r}; valid parameters are "
                                 f"{list(self._PARAM_NAMES)}")
            setattr(self, name, value)
        return self

    def _params_for_file(self) -> dict:
        """The parameters as plain JSON values (NumPy scalars and ints made floats where a float is meant)."""
        p = self.get_params()
        cap = p["max_gram_per_item"]
        return {
            "l2": None if p["l2"] is None else float(p["l2"]),
            "density": None if p["density"] is None else float(p["density"]),
            "factorizer": p["factorizer"],
            "refine_sweeps": None if p["refine_sweeps"] is None else int(p["refine_sweeps"]), "device": p["device"],
            "ordering": p["ordering"], "column_scaling": p["column_scaling"],
            "min_cooccurrence": None if p["min_cooccurrence"] is None else float(p["min_cooccurrence"]),
            "refine_tol": float(p["refine_tol"]),
            "max_gram_per_item": cap if cap in (None, "auto") else int(cap),
            "icf_fill": None if p["icf_fill"] is None else float(p["icf_fill"]),
            "icf_intermediate_fill": None if p["icf_intermediate_fill"] is None else float(p["icf_intermediate_fill"]),
        }

    # ------------------------------------------------------------------ fit
    def estimate_memory(self, X) -> dict:
        """Predicted peak bytes of each fit stage on X with these settings (see
        :func:`sansa_gpu.memory.estimate_memory`): exact Gram and factor fill counts, no values."""
        from .memory import estimate_memory

        self._check_params()
        X = check_interactions(X, require_nonempty=True)
        plan = self._fit_plan(X)
        return estimate_memory(X, plan.density, plan.factorizer, plan.min_cooccurrence, plan.ordering,
                               counts=plan.exact_counts, max_per_column=plan.gram_cap,
                               working_fill=plan.icf_fill, intermediate_fill=plan.icf_intermediate_fill)

    def fit(self, X, check_memory: bool = True, *, user_col: str = "user_id", item_col: str = "item_id",
            value_col: str | None = None, factor_cache: FactorCache | None = None) -> "SANSA":
        """Fit on X: (users, items) scipy sparse, nonnegative, or a pandas / pyarrow table of
        interactions with raw user and item IDs in ``user_col`` / ``item_col`` (integers or
        strings) and optional weights in ``value_col``. Returns self.

        With ``check_memory`` the peak memory is estimated first (:meth:`estimate_memory`) and a
        MemoryError naming the numbers is raised, instead of being killed, when it exceeds the
        available memory.

        ``factor_cache`` (:class:`~sansa_gpu.factorize.FactorCache`): reuse the Gram / exact factor of
        earlier fits on the same X with other ``l2`` / ``density`` (:func:`sansa_gpu.tune` does); the
        result is the same as without it.
        """
        self._check_params()
        item_ids = None
        if is_table(X):
            enc = encode_interactions(X, user_col, item_col, value_col)
            X, item_ids = enc.X, enc.items
        X = check_interactions(X, require_nonempty=True)
        if factor_cache is not None:
            factor_cache.bind(X)
        plan = self._fit_plan(X)
        if check_memory:
            self._check_fit_memory(X, plan)
        device = resolve_device(self.device)  # (here, not deeper: its warning names the caller's line)
        plan = replace(plan, device=device, backend=get_backend(device))
        logger.info("fit: %d users x %d items, nnz(X)=%d, l2=%g, density=%g -> budget %d nnz per factor, device=%s, "
                    "factorizer=%s (%s)", X.shape[0], plan.n, X.nnz, plan.l2, plan.density, plan.budget, plan.device,
                    plan.factorizer, plan.reason)
        stats: dict = {"n_users": int(X.shape[0]), "n_items": int(plan.n), "nnz_X": int(X.nnz),
                       "l2": plan.l2, "density": plan.density, "refine_sweeps": plan.refine_sweeps,
                       "min_cooccurrence": plan.min_cooccurrence, "icf_fill": plan.icf_fill,
                       "icf_intermediate_fill": plan.icf_intermediate_fill,
                       "budget": plan.budget, "factorizer": plan.factorizer,
                       "factorizer_reason": plan.reason, "max_gram_per_item": plan.gram_cap}
        t0 = time.perf_counter()
        X = self._scaled_for_exact_factor(X, plan, factor_cache)  # rebound: the unscaled copy is freed
        factor = self._factorize(X, plan, factor_cache, stats, t0)  # X flows no further: the factor carries on
        del X
        K, history = self._refine(factor, plan, stats)
        Wt, Z = self._assemble_weights(K, factor, plan, stats)
        del K, factor
        stats["fit_seconds"] = time.perf_counter() - t0
        logger.info("weights: nnz(Wt)=%d nnz(Z)=%d (%.2fs); fit total %.2fs", Wt.nnz, Z.nnz, stats["weights_seconds"],
                    stats["fit_seconds"])
        self.weights_ = (Wt, Z)
        self.__dict__.pop("_scoring_cache_obj", None)  # a refit: free what was formed from the old weights now
        self.n_items_ = plan.n
        self.item_ids_ = item_ids
        self.history_ = history
        self.stats_ = stats
        self.device_ = plan.device
        self.factorizer_ = plan.factorizer
        return self

    # The stages of fit, in order. Each takes what the stage before produced and records its
    # seconds, sizes and device in ``stats``.
    def _fit_plan(self, X: sp.csr_matrix) -> "_FitPlan":
        """Every choice a fit on X makes before any work: factoriser (and why), ordering, density,
        nonzero budget per factor, Gram cap, column scaling, l2, sweeps (the device is resolved after the memory
        check)."""
        analysed: dict = {}
        factorizer, reason = self.choose_factorizer(X, counts=analysed)
        n = X.shape[1]
        per_user = interactions_per_user(X)
        density = self.density_for(n, per_user)
        ordering = self._ordering_for(factorizer)
        min_cooccurrence = self.min_cooccurrence_for(X, factorizer, density)
        scaling = self.column_scaling if self.column_scaling is not None else factorizer == "icf"
        icf_fill, icf_intermediate_fill = self.icf_fills_for(n, density, factorizer, min_cooccurrence, scaling)
        return _FitPlan(factorizer=factorizer, reason=reason, ordering=ordering, n=n,
                        density=density, budget=nnz_budget(density, n),
                        gram_cap=self.gram_cap_for(n, factorizer, density), column_scaling=scaling,
                        l2=self.l2_for(X, scaling), refine_sweeps=self.refine_sweeps_for(per_user),
                        min_cooccurrence=min_cooccurrence,
                        icf_fill=icf_fill, icf_intermediate_fill=icf_intermediate_fill,
                        exact_counts=analysed.get((factorizer, ordering)))

    def _check_fit_memory(self, X: sp.csr_matrix, plan: "_FitPlan") -> None:
        """MemoryError naming the numbers when the fit's predicted peak exceeds the available memory
        (a cheap upper bound first; exact structural counts only when the bound does not fit)."""
        from .memory import available_memory_bytes, estimate_memory, memory_upper_bound

        t_est = time.perf_counter()
        have = available_memory_bytes()
        est = memory_upper_bound(X, plan.density, plan.factorizer, plan.gram_cap, plan.icf_fill,
                                 plan.icf_intermediate_fill)
        if est["peak"] > have:  # the worst case does not fit: count exactly
            est = estimate_memory(X, plan.density, plan.factorizer, plan.min_cooccurrence, plan.ordering,
                                  counts=plan.exact_counts, max_per_column=plan.gram_cap,
                                  working_fill=plan.icf_fill, intermediate_fill=plan.icf_intermediate_fill)
        logger.info("fit: estimated peak %.2f GB (%s), available %.2f GB (%.2fs)", est["peak"] / 1e9,
                    ", ".join(f"{k} {est[k] / 1e9:.2f}" for k in ("gram", "factorize", "refine", "weights")),
                    have / 1e9, time.perf_counter() - t_est)
        if est["peak"] > have:
            raise MemoryError(self._memory_advice(est, have, plan))

    def _scaled_for_exact_factor(self, X: sp.csr_matrix, plan: "_FitPlan",
                                 factor_cache: FactorCache | None) -> sp.csr_matrix:
        """CHOLMOD factorises X^T X from X itself: with column scaling, X with its columns divided by the
        scaling (CSR float32, sorted); otherwise X. (ICF scales the Gram instead, in its one pass.)"""
        if plan.factorizer == "icf" or not plan.column_scaling:
            return X
        col_scale = icf_column_scaling(X) if factor_cache is None else factor_cache.column_scaling(X)
        X = sp.csr_matrix(X @ sp.diags((1.0 / col_scale).astype(np.float32)), dtype=np.float32)
        X.sort_indices()  # the product's rows come out unsorted
        return X

    def _factorize(self, X: sp.csr_matrix, plan: "_FitPlan", factor_cache: FactorCache | None, stats: dict,
                   t0: float):
        """Stages 1-2: the item ordering and the LDL^T within the budget. ICF: ordering, then the Gram with
        its column norms in one pass (on the device when there is one; the column scaling applied to the
        Gram), then the incomplete Cholesky. CHOLMOD: X (already scaled when asked) factorised exactly,
        then cut. ``t0``: when the factorisation stage began (the column scaling included). Returns the
        :class:`~sansa_gpu.factorize.LDLFactor`."""
        t_scaled = time.perf_counter() if plan.factorizer == "cholmod" else t0
        if plan.factorizer == "icf":
            factor = ldlt_icf(X, plan.l2, plan.budget, plan.min_cooccurrence, plan.ordering,
                              cache=factor_cache, column_scaling=plan.column_scaling, max_per_column=plan.gram_cap,
                              backend=plan.backend, working_fill=plan.icf_fill,
                              intermediate_fill=plan.icf_intermediate_fill)
            stats["stage_devices"] = {"ordering": "cpu", "gram": factor.devices["gram"], "factorize": "cpu"}
        else:
            factor = ldlt_cholmod(X, plan.l2, plan.budget, plan.ordering,
                                  cache=factor_cache if not plan.column_scaling else None)
            stats["stage_devices"] = {"ordering": "cpu", "factorize": "cpu"}
        stats.update(factorize_seconds=time.perf_counter() - t0, nnz_L=int(factor.L.nnz))
        # seconds of the factorisation's parts (they sum to factorize_seconds, up to bookkeeping)
        stats["factorize_parts"] = {"column_scaling": round(t_scaled - t0, 3),
                                     **{k: round(v, 3) for k, v in factor.seconds.items()}}
        if plan.factorizer == "icf":
            stats.update(icf_shift=float(factor.shift), icf_restarts=len(factor.breakdowns),
                         icf_breakdowns=[{"pivot": int(b["pivot"]), "shift": float(b["shift"])}
                                         for b in factor.breakdowns])
        return factor

    def _refine(self, factor, plan: "_FitPlan", stats: dict) -> tuple:
        """Stage 3: K ~= L^{-1} within the budget (:func:`sansa_gpu.refine.refine_inverse`); (K, history)."""
        t0 = time.perf_counter()
        K, history = refine_inverse(factor.L, plan.budget, plan.refine_sweeps, plan.backend,
                                    float(self.refine_tol))
        stats.update(refine_seconds=time.perf_counter() - t0, nnz_K=int(K.nnz))
        devices = [h["device"] for h in history] + [history[-1]["residual_device"]]
        stats["stage_devices"]["refine"] = devices[0] if len(set(devices)) == 1 else "gpu, then cpu (GPU out of memory)"
        return K, history

    def _assemble_weights(self, K: sp.csc_matrix, factor, plan: "_FitPlan", stats: dict) -> tuple:
        """Stage 4: (Wt, Z) from K, D and the permutation, on the plan's device (the CPU when the GPU
        runs out of memory)."""
        t0 = time.perf_counter()
        try:
            Wt, Z = plan.backend.assemble_weights(K, factor.d, factor.p)
            stats["stage_devices"]["weights"] = plan.device
        except GPUOutOfMemory as exc:
            logger.warning("weights: %s; assembling on the CPU", exc)
            Wt, Z = cpu.assemble_weights(K, factor.d, factor.p)
            stats["stage_devices"]["weights"] = "cpu (GPU out of memory)"
        stats.update(weights_seconds=time.perf_counter() - t0, nnz_Wt=int(Wt.nnz), nnz_Z=int(Z.nnz))
        return Wt, Z

    def _memory_advice(self, est: dict, have: int, plan: "_FitPlan") -> str:
        """The refusal of a fit that does not fit: the numbers, and only settings that would help."""
        factorizer, n = plan.factorizer, plan.n
        stage = max(("gram", "factorize", "refine", "weights"), key=lambda k: est[k])
        msg = (f"fitting needs about {est['peak'] / 1e9:.1f} GB (stage '{stage}'), only {have / 1e9:.1f} GB are "
               f"available")
        if stage == "factorize" and factorizer == "icf" and (plan.icf_fill, plan.icf_intermediate_fill) != (1.0, 0.0):
            return msg + (f"; the incomplete Cholesky keeps {plan.icf_fill:g}x its budget and an intermediate fill of "
                          f"{plan.icf_intermediate_fill:g}x that while it factorises: icf_fill=1, "
                          f"icf_intermediate_fill=0 need less, or lower density (budget {est['budget']:,} nnz)")
        if stage in ("gram", "factorize") and factorizer == "cholmod":
            return msg + (f"; the exact factor has {est.get('nnz_exact_L', 0):,} nonzeros: use factorizer='icf', "
                          f"or lower density (budget {est['budget']:,} nnz)")
        if stage == "gram":
            # the measured default ('auto'), or less when the Gram would still take over a quarter of
            # what is available (12 bytes per entry)
            fits = max(1, int(have / 4 / 12 / max(1, n)) - 1)
            auto = self._auto_gram_cap(n, plan.density) or fits
            cap = min(fits, auto)
            hint = f"max_gram_per_item={cap} (at most {n * (cap + 1) * 12 / 1e9:.1f} GB of Gram)"
            if not plan.min_cooccurrence:
                hint = f"min_cooccurrence=2 (drop pairs seen once), or {hint}"
            return msg + (f"; the Gram X^T X keeps {est['nnz_gram']:,} entries (a few users with many items make "
                          f"it dense): prune it while it is built with {hint}")
        return msg + f"; lower density (budget {est['budget']:,} nnz per factor)"

    # ------------------------------------------------------------ inference
    def _check_fitted(self) -> None:
        if not hasattr(self, "weights_"):
            raise NotFittedError("this SANSA model is not fitted yet: call fit(X) or SANSA.load(path)")

    def _inference_backend(self):
        device = getattr(self, "device_", None) or resolve_device(self.device)
        return get_backend(device)

    @property
    def _scoring_cache(self) -> ScoringCache:
        """This model's scoring state for its current ``weights_`` (see :meth:`_cache_for`)."""
        return self._cache_for(self.weights_)

    def _cache_for(self, weights: tuple) -> ScoringCache:
        """The scoring cache of ``weights`` (the tuple a call read from ``weights_``): this model's
        cache if it was formed from that very tuple, else a new one replacing it (after a refit, a
        load, or ``weights_`` assigned), so what was formed from other weights is never used. Created
        under a lock, so threads racing on the first call share one cache."""
        cache = self.__dict__.get("_scoring_cache_obj")
        if cache is not None and cache.weights is weights:
            return cache
        with _CACHE_CREATION:
            cache = self.__dict__.get("_scoring_cache_obj")
            if cache is None or cache.weights is not weights:
                cache = ScoringCache(weights)
                self.__dict__["_scoring_cache_obj"] = cache
            return cache

    def release_scoring_cache(self) -> None:
        """Free what this model keeps for scoring (the product plans' B, its counted structure, the GPU's
        copies of the weights and scratch); the next call forms what it needs again. Call it after
        modifying ``weights_`` in place. Other models' caches are untouched."""
        cache = self.__dict__.get("_scoring_cache_obj")
        if cache is None:
            return
        had_device = bool(cache.names("device"))
        cache.clear()
        if had_device:
            from .gpu import _device

            _device.current().release_pool()

    def recommend(self, X, k: int = 20, *, items=None, filter_items=None, filter_already_liked_items: bool = True,
                  plan: str = "auto") -> tuple[np.ndarray, np.ndarray]:
        """Top-k items for each row (user) of X.

        X : (users, n_items_) scipy sparse. Returns ids (users, k) int64 and scores (users, k)
        float32, sorted by score descending (ties: lower item id first). Candidates are the items
        with a nonzero-structure score, restricted to ``items`` (an allow-list of item indices) when
        given, never those in ``filter_items`` (a block-list), and not the user's own items unless
        ``filter_already_liked_items=False``; rows with fewer than k candidates are padded with id -1
        and score -inf. ``plan``: the CPU's scoring plan ('auto', 'factored', 'product',
        'sparse_product'; :mod:`sansa_gpu.cpu.inference`). Safe to call from several threads; the
        model is not modified. (Tables of raw IDs: :meth:`recommend_table`.)
        """
        self._check_fitted()
        k = check_positive_int(k, "k")
        X = check_interactions(X, n_items=self.n_items_)
        blocked = blocked_items(self.n_items_, items, filter_items)
        return self._recommend_rows(X, k, blocked, bool(filter_already_liked_items), plan)

    def _recommend_rows(self, X: sp.csr_matrix, k: int, blocked, exclude_seen: bool, plan: str = "auto"):
        """recommend() on checked input: the backend's kernels with this model's cache."""
        weights = self.weights_  # read once: a refit in another thread replaces the tuple, not its arrays
        Wt, Z = weights
        cache = self._cache_for(weights)
        backend = self._inference_backend()
        if backend_device(backend) != "cpu" and plan in ("product", "sparse_product"):
            backend = cpu  # the product plans run on the CPU only
        try:
            ids, scores = backend.recommend_sparse(X, Wt, Z, k, plan, cache=cache, blocked=blocked,
                                                   exclude_seen=exclude_seen)
        except GPUOutOfMemory as exc:
            logger.warning("recommend: %s; scoring on the CPU", exc)
            # the GPU's plan: the same result
            ids, scores = cpu.recommend_sparse(X, Wt, Z, k, "factored", cache=cache, blocked=blocked,
                                               exclude_seen=exclude_seen)
        return ids, scores

    def recommend_batches(self, X, k: int = 20, batch_size: int | None = None, *, items=None, filter_items=None,
                          filter_already_liked_items: bool = True):
        """Yield ``(start, ids, scores)`` for consecutive blocks of rows of X (scipy sparse),
        ``ids``/``scores`` as in :meth:`recommend` (same filters) for rows ``start .. start + len(ids)``.

        Memory beyond X is one block's results (and the backend's scratch), so any number of users
        can be scored; ``batch_size`` defaults to :data:`DEFAULT_BATCH_USERS`.
        """
        self._check_fitted()
        yield from self._blocked_batches(X, k, batch_size, blocked_items(self.n_items_, items, filter_items),
                                         filter_already_liked_items)

    def _blocked_batches(self, X, k: int, batch_size: int | None, blocked, exclude_seen: bool):
        """:meth:`recommend_batches` with the candidates as the kernels take them (``blocked``: uint8
        (n_items_,) or None, see :func:`sansa_gpu.candidates.blocked_items`): the streaming writers,
        which map raw-ID lists to it once, call this."""
        self._check_fitted()
        k = check_positive_int(k, "k")
        batch = DEFAULT_BATCH_USERS if batch_size is None else check_positive_int(batch_size, "batch_size")
        if not sp.issparse(X):
            raise TypeError(f"X must be a scipy.sparse matrix (users x items), got {type(X).__name__}")
        X = sp.csr_matrix(X)
        for start in range(0, X.shape[0], batch):
            block = check_interactions(X[start:start + batch], n_items=self.n_items_)
            ids, scores = self._recommend_rows(block, k, blocked, bool(exclude_seen))
            yield start, ids, scores

    def similar_items(self, items, k: int = 20, *, filter_items=None, candidates=None) -> tuple[np.ndarray, np.ndarray]:
        """The k items most related to each of ``items`` (item indices): the top of row i of the
        item-item matrix B = Wt Z (EASE's B, approximated), the item itself excluded.

        Returns ids (len(items), k) int64 and scores float32, as :meth:`recommend` (ties to the
        lower id, padding -1 / -inf). ``candidates``: an allow-list of item indices;
        ``filter_items``: a block-list. (Raw IDs: :meth:`similar_items_table`.)
        """
        self._check_fitted()
        k = check_positive_int(k, "k")
        rows = item_rows(items, self.n_items_)
        blocked = blocked_items(self.n_items_, candidates, filter_items)
        return self._recommend_rows(rows, k, blocked, True)

    def similar_items_table(self, items, k: int = 20, *, filter_items=None, candidates=None):
        """:meth:`similar_items` in raw item IDs: a pyarrow Table ``item_id, rank, similar_item_id,
        score`` (rank 1 = most similar; items with fewer than k candidates get fewer rows). Unknown
        IDs in ``items`` are a ValueError; in the lists they are ignored with a warning."""
        self._check_fitted()
        item_ids = self._raw_ids("similar_items_table")
        idx = item_ids.lookup(np.asarray(items), "items")
        if (idx < 0).any():
            raise ValueError(f"items: ID {np.asarray(items)[idx < 0][0].item()!r} is unknown to the model")
        blocked = blocked_items(self.n_items_, candidates, filter_items, item_ids=item_ids)
        ids, scores = self._recommend_rows(item_rows(idx, self.n_items_), check_positive_int(k, "k"), blocked, True)
        return similar_format(item_ids.ids[idx], ids, scores, item_ids)

    def _raw_ids(self, what: str) -> IdMap:
        if getattr(self, "item_ids_", None) is None:
            raise ValueError(f"{what}: this model was fitted on a matrix, not a table of raw IDs: use the matrix "
                             f"methods with item indices")
        return self.item_ids_

    def encode(self, table, user_col: str = "user_id", item_col: str = "item_id", value_col: str | None = None,
               users: IdMap | None = None):
        """Encode a scoring request (table of raw user/item IDs) against this model's item IDs:
        returns :class:`~sansa_gpu.ids.Interactions`. Unknown items are dropped and reported with a
        warning; users need not have been seen in training (they are scored from their items)."""
        self._check_fitted()
        item_ids = self._raw_ids("encode")
        enc = encode_interactions(table, user_col, item_col, value_col, items=item_ids, users=users)
        if enc.n_unknown_items:
            shown = ", ".join(map(str, enc.unknown_items[:5]))
            warnings.warn(f"{enc.n_unknown_items} interaction(s) with {enc.unknown_items.size} item ID(s) unknown to the "
                          f"model were ignored (e.g. {shown})", UserWarning, stacklevel=3)
        return enc

    def recommend_table(self, table, k: int = 20, user_col: str = "user_id", item_col: str = "item_id",
                        value_col: str | None = None, *, items=None, filter_items=None,
                        filter_already_liked_items: bool = True):
        """Top-k for every user of an interaction table of raw IDs, as a pyarrow Table with
        columns ``user_id, rank, item_id, score`` (rank 1 = best; users with fewer than k
        candidates get fewer rows). ``items`` / ``filter_items``: allow / block lists of raw item
        IDs (unknown ones ignored with a warning); the rest as :meth:`recommend`. Use
        :func:`sansa_gpu.score_to_parquet` to stream to a file."""
        enc = self.encode(table, user_col, item_col, value_col)
        blocked = blocked_items(self.n_items_, items, filter_items, item_ids=self.item_ids_)
        ids, scores = self._recommend_rows(enc.X, check_positive_int(k, "k"), blocked, bool(filter_already_liked_items))
        return long_format(enc.users.ids, ids, scores, self.item_ids_)

    def score(self, X) -> sp.csr_matrix:
        """Raw scores ``(X Wt) Z``: (users, n_items_) CSR float32, own items not masked."""
        self._check_fitted()
        X = check_interactions(X, n_items=self.n_items_)
        Wt, Z = self.weights_
        return self._inference_backend().score_sparse(X, Wt, Z)

    @property
    def model_nnz(self) -> int:
        self._check_fitted()
        return int(self.weights_[0].nnz + self.weights_[1].nnz)

    @property
    def model_bytes(self) -> int:
        self._check_fitted()
        return int(sum(M.data.nbytes + M.indices.nbytes + M.indptr.nbytes for M in self.weights_))

    # ----------------------------------------------------------- save / load
    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted model to ``path`` atomically (no pickle)."""
        self._check_fitted()
        Wt, Z = self.weights_
        item_ids = getattr(self, "item_ids_", None)
        meta = {"package_version": __version__, "params": self._params_for_file(), "n_items": int(self.n_items_),
                "n_latent": int(Wt.shape[1]), "history": self.history_, "stats": self.stats_,
                "item_ids": None if item_ids is None else item_ids.kind}
        arrays = {**csr_to_arrays("Wt", Wt), **csr_to_arrays("Z", Z)}
        if item_ids is not None:
            arrays["item_ids"] = item_ids.ids
        save_arrays(path, "SANSA", meta, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = None) -> "SANSA":
        """Read a model written by :meth:`save`: weights, ``n_items_``, ``item_ids_``, ``history_``
        and ``stats_`` exactly as saved, and the parameters, except:

        - ``device`` overrides the saved device setting; a model saved with device='gpu' loads with
          'auto' (the GPU when one answers, else the CPU), so ``get_params()['device']`` is 'auto'.
        - ``device_`` is resolved again from that setting on the loading machine (it is where this
          model will score, not where it was fitted: that stays in ``stats_["stage_devices"]`` and
          ``history_``).
        - files written before ``min_cooccurrence`` was refused with factorizer='cholmod' (it was
          ignored there) load with ``min_cooccurrence=0``, what was actually fitted (logged).
        """
        header, arrays = load_arrays(path, "SANSA")
        try:
            params = dict(header["params"])
            n_items = int(header["n_items"])
            n_latent = int(header["n_latent"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{os.fspath(path)!r} has an incomplete header: {exc}") from exc
        if device is not None:
            params["device"] = device
        elif params.get("device") == "gpu":
            # a model trained on a GPU machine must still load where there is none (CI, CPU servers)
            params["device"] = "auto"
        if params.get("factorizer") == "cholmod" and params.get("min_cooccurrence"):
            logger.warning("%s: min_cooccurrence=%r was saved with factorizer=%r, which ignores it; loading with "
                           "min_cooccurrence=0 (what was fitted)", os.fspath(path), params["min_cooccurrence"],
                           params.get("factorizer"))
            params["min_cooccurrence"] = 0.0
        model = cls(**params)
        Wt = csr_from_arrays("Wt", arrays, (n_items, n_latent), os.fspath(path))
        Z = csr_from_arrays("Z", arrays, (n_latent, n_items), os.fspath(path))
        model.weights_ = (Wt, Z)
        model.n_items_ = n_items
        model.item_ids_ = None
        if header.get("item_ids") is not None:
            ids = arrays.get("item_ids")
            if ids is None or ids.ndim != 1 or ids.shape[0] != n_items or ids.dtype.kind not in "iuU" or (
                    n_items > 1 and not np.all(ids[1:] > ids[:-1])):
                raise ValueError(f"{os.fspath(path)!r}: item ID map is missing or inconsistent with {n_items} items "
                                 "(corrupt model file)")
            model.item_ids_ = IdMap(ids.astype(np.int64) if ids.dtype.kind in "iu" else ids)
        model.history_ = header.get("history", [])
        model.stats_ = header.get("stats", {})
        model.factorizer_ = model.stats_.get("factorizer", params.get("factorizer"))
        model.device_ = resolve_device(model.device)
        return model

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"SANSA({args})"


def _dense_data(interactions_per_user: float) -> bool:
    """Training data with at least :data:`DENSE_DATA_ITEMS_PER_USER` interactions per user: the denser
    default density and sweeps apply."""
    return interactions_per_user >= DENSE_DATA_ITEMS_PER_USER
