"""Choosing the model: search ``l2``, ``density``, ``min_cooccurrence`` and the factoriser on a
validation split carved out of the training data, under budgets on model size, fit memory and time.

    from sansa_gpu import tune
    result = tune(X, max_model_bytes=200e6, max_seconds=600)     # X: users x items sparse, or a table
    result.model                 # the best parameters, refitted on all of X
    result.best                  # its trial: parameters, validation Recall@k / nDCG@k, bytes, seconds
    result.trials                # every trial, in the order run (also result.to_jsonl(path))
    result.plot("tune.png")      # validation Recall@k against weights size

The search never sees anything but ``X``: a per-user random holdout (default) or held-out users
(``validation="users"``) is taken from it with ``seed``; each trial fits on the rest and is scored
on the held-out interactions. Order (cheapest first, so a tight ``max_seconds`` still returns a
good model):

1. The grid, as blocks run cheapest-predicted first:
   - ICF *rungs*: one per density of the ladder, in ascending order (a rung is ready once the one
     below has run); per rung every pruning level, with every ``l2`` of the coarse grid at the
     lowest density and, above it, the :data:`KEEP_L2` best of the density below plus the grid
     step below the smallest of them (ICF's best ``l2`` falls as the density rises). One Gram per
     pruning level is built and reused (``l2`` only shifts its diagonal; the density only limits
     the factor): :class:`~sansa_gpu.factorize.FactorCache`.
     Every ICF trial (and the refit of an ICF winner) is the plain incomplete Cholesky
     (:data:`~sansa_gpu.defaults.TUNE_ICF_FILLS`: ``icf_fill=1, icf_intermediate_fill=0``, in the
     returned model's parameters), not the slower pair ``SANSA()`` resolves to on the exact Gram from 64 per
     item.
   - CHOLMOD blocks (when installed, ``"cholmod"`` in ``factorizers``): per ``l2`` one exact
     factor, cut to every density (ascending); ``l2`` a line search over the grid from the value
     nearest ``SANSA(l2=None)``'s for the exact factor (4 mean Gram diagonals: the exact factor's
     best ``l2`` is EASE's, which scales with the diagonal), then the steps above and below it,
     going on in a direction while a block's best beats the block before it.
   A block's cost is predicted from the trials run so far (:func:`predict_trial_seconds`: the
   median seconds, fit plus validation scoring, of trials of the same factoriser and density; a
   higher ICF density scaled by density^1.5 from the highest one measured; an exact factor not
   yet computed priced by its structure, :func:`sansa_gpu.factorize.predict_exact_seconds`), so on
   a small catalogue the cheap CHOLMOD blocks run before ICF's top rung, and on a large one the
   other way round. By default CHOLMOD enters only when one exact factor's predicted time fits
   half of ``max_seconds`` and its fit's predicted peak fits ``max_memory``.
2. ``l2`` refined around the best trial (log-steps of 10^±0.25, then 10^±0.125).
3. More refinement sweeps (4, then 8), while they improve it, for the best trial of each of the
   :data:`SWEEP_CANDIDATES` best (factoriser, density) pairs (the exact factor is reused, only the
   refinement runs again): a denser model under-refined at two sweeps can overtake a sparser one.
4. The top ICF rung's step-down ``l2`` (speculative and the slowest ICF trials).

Budgets: ``max_model_bytes`` caps the density ladder (weights ≈ 16 B per nonzero of each factor);
``max_memory`` (default: the available memory) skips a trial whose predicted fit peak
(:func:`sansa_gpu.memory.estimate_memory`, bound first, exact counts when the bound does not fit)
exceeds it, with a log line; ``max_seconds`` does not start a trial predicted to end past it (a
cheaper one later may still run) and starts none once spent (the first trial always runs; the
refit on all data comes after and is not counted). Progress goes to stderr (``progress=False``
silences it).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from ._rss import PeakRss
from .data import random_holdout_split, strong_generalization_split
from .defaults import TUNE_ICF_FILLS, TUNE_L2_GRID, TUNE_MIN_COOCCURRENCE, TUNE_NNZ_PER_ITEM, TUNE_SWEEPS_GRID
from .factorize import FactorCache, cholmod_available, nnz_budget
from .ids import encode_interactions, is_table
from .metrics import evaluate
from .validation import check_interactions, check_positive_float

logger = logging.getLogger(__name__)

# the search's defaults live with the estimator's (sansa_gpu/defaults.py); the old names stay
DEFAULT_L2_GRID = TUNE_L2_GRID
DEFAULT_NNZ_PER_ITEM = TUNE_NNZ_PER_ITEM
DEFAULT_MIN_COOCCURRENCE = TUNE_MIN_COOCCURRENCE
DEFAULT_SWEEPS_GRID = TUNE_SWEEPS_GRID
KEEP_L2 = 2
"""ICF trials at each density after the lowest try only the ``KEEP_L2`` best ``l2`` of the density below
(same pruning level) and the grid step below the smallest of them: the best ICF λ moved by at most
one grid step between densities on the shared datasets, downwards as the density rose (pinterest:
1000 at 4 nonzeros per item, 10 at 256; keeping only the two best lost 0.004 test recall there),
and a bad λ at a high density is the most expensive trial of all."""
ICF_COST_EXPONENT = 1.5
"""Predicted ICF trial seconds grow as density^1.5 above the highest density measured (measured
4x density steps on gowalla / pinterest: 2.3 -> 11 -> 66 s and 1.5 -> 10.5 s, i.e. 1.1-1.4)."""
SWEEP_CANDIDATES = 3
"""Phase 3 raises the refinement sweeps of the best trial of this many (factoriser, density) pairs."""
WEIGHT_BYTES_PER_NNZ = 16
"""Bytes of the saved weights per nonzero of one factor: Wᵀ and Z each hold it as float32 + int32."""


# --------------------------------------------------------------------------- validation split
@dataclass
class ValidationSplit:
    """``train``: what each trial fits on (rows ``train_rows`` of X); ``inputs``/``targets``: the
    rows scored and their held-out items, row r of both for user ``users[r]`` of X. All CSR float32
    on the item columns of X."""

    train: sp.csr_matrix
    inputs: sp.csr_matrix
    targets: sp.csr_matrix
    users: np.ndarray
    train_rows: np.ndarray
    kind: str
    seed: int


def validation_split(X: sp.csr_matrix, kind: str = "holdout", fraction: float = 0.2, seed: int = 0,
                     n_users: int | None = None) -> ValidationSplit:
    """Carve a validation split out of X.

    kind='holdout': ``fraction`` of each user's items (users with >= 2 items) are held out; trials
    fit on the rest and score every user with a held-out item from their remaining items.
    kind='users' (strong generalisation): ``n_users`` users (default ``fraction`` of the users with
    >= 2 items) are removed from training; ``1 - fraction`` of each one's items are the input, the
    rest the targets.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must lie in (0, 1), got {fraction!r}")
    if kind == "holdout":
        split = random_holdout_split(X, fraction, seed)
        users = split.eval_users
        if users.size == 0:
            raise ValueError("no user has 2 or more interactions: nothing can be held out for validation")
        return ValidationSplit(split.train, split.train[users], split.test[users], users,
                               np.arange(X.shape[0]), kind, seed)
    if kind == "users":
        eligible = int(np.count_nonzero(np.diff(X.indptr) >= 2))
        if n_users is None:
            n_users = max(1, int(round(fraction * eligible)))
        if eligible == 0:
            raise ValueError("no user has 2 or more interactions: nothing can be held out for validation")
        train, fold, target, held = strong_generalization_split(X, min(n_users, eligible), fold_in=1.0 - fraction,
                                                                 seed=seed, return_held=True)
        keep = np.flatnonzero(np.diff(target.indptr) > 0)
        rows = np.setdiff1d(np.arange(X.shape[0]), held)
        return ValidationSplit(sp.csr_matrix(train, dtype=np.float32), fold[keep], target[keep], held[keep], rows,
                               kind, seed)
    raise ValueError(f"validation must be 'holdout' or 'users', got {kind!r}")


# --------------------------------------------------------------------------- result
@dataclass
class TuneResult:
    """What :func:`tune` found. ``trials``: one dict per trial in the order run (``status`` 'ok',
    'skipped: ...' or 'failed: ...'); ``best``: the chosen trial; ``model``: its parameters refitted
    on all the data (None with ``refit=False``); ``metric``: the key ranked on."""

    trials: list
    best: dict
    model: object
    metric: str
    k: int
    validation: dict
    seconds: float
    dense_ease: dict | None = None
    extra: dict = field(default_factory=dict)

    @property
    def best_params(self) -> dict:
        return {key: self.best[key] for key in ("factorizer", "l2", "density", "min_cooccurrence", "refine_sweeps")}

    def to_jsonl(self, path: str | os.PathLike) -> None:
        """Every trial as one JSON line (the chosen one has ``"chosen": true``), written atomically."""
        from .io import atomic_file

        text = "".join(json.dumps({**t, "chosen": t is self.best}) + "\n" for t in self.trials)
        with atomic_file(path, ".jsonl-part") as f:
            f.write(text.encode("utf-8"))

    def table(self) -> str:
        """The completed trials as a fixed-width text table, best first."""
        ok = sorted((t for t in self.trials if t["status"] == "ok"), key=lambda t: -t[self.metric])
        head = f"{'factorizer':<10} {'prune':>5} {'density':>9} {'l2':>8} {self.metric:>11} {'ndcg@' + str(self.k):>9} " \
               f"{'weights MB':>10} {'fit s':>7}"
        rows = [head] + [f"{t['factorizer']:<10} {t['min_cooccurrence']:>5g} {t['density']:>9.3g} {t['l2']:>8.4g} "
                         f"{t[self.metric]:>11.4f} {t[f'ndcg@{self.k}']:>9.4f} {t['model_bytes'] / 1e6:>10.2f} "
                         f"{t['fit_seconds']:>7.2f}" for t in ok]
        return "\n".join(rows)

    def plot(self, path: str | os.PathLike, title: str | None = None) -> None:
        """Validation ``metric`` against weights size (log axis), written atomically to ``path``: see
        :func:`sansa_gpu.tune_plot.plot_trials`. Needs matplotlib (the ``[plot]`` extra)."""
        from .tune_plot import plot_trials

        plot_trials(self, path, title)


# --------------------------------------------------------------------------- the search
def density_ladder(n_items: int, max_model_bytes: float | None = None, nnz_per_item=DEFAULT_NNZ_PER_ITEM) -> list:
    """Densities to try, ascending: c / n_items for c in ``nnz_per_item``, and, with
    ``max_model_bytes``, the ladder moved so its top is the largest density whose weights fit
    (each rung 4x the one below). ValueError when even a diagonal-only model does not fit."""
    n = int(n_items)
    full = n * (n + 1) // 2
    if max_model_bytes is None:
        ladder = sorted({min(1.0, c / n) for c in nnz_per_item})
        return [d for d in ladder if nnz_budget(d, n) <= full]
    max_model_bytes = float(max_model_bytes)
    fixed = 2 * 8 * (n + 1)  # the two indptr arrays (int64)
    per_factor = (max_model_bytes - fixed) / WEIGHT_BYTES_PER_NNZ
    if per_factor < n:
        raise ValueError(f"max_model_bytes={max_model_bytes:.4g} is below the smallest model on {n} items "
                         f"(diagonal only: {fixed + WEIGHT_BYTES_PER_NNZ * n} bytes)")
    top = min(1.0, per_factor / float(n) ** 2, full / float(n) ** 2)
    rungs = len(nnz_per_item)
    ladder = sorted({top / 4.0 ** i for i in range(rungs) if top / 4.0 ** i * n >= 1.0})
    return ladder or [top]


def _check_grid(values, name: str, positive: bool = True) -> list:
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError(f"{name} is empty: give at least one value")
    for v in vals:
        if not math.isfinite(v) or (v <= 0 if positive else v < 0):
            raise ValueError(f"{name} must hold finite numbers {'> 0' if positive else '>= 0'}, got {v!r}")
    return sorted(set(vals))


def _median(values) -> float:
    return float(np.median(values))


def predict_trial_seconds(trials: list, factorizer: str, density: float, *, factor_cached: bool = True,
                          densities=(), exact_seconds: float | None = None) -> float:
    """Predicted seconds (fit plus validation scoring) of a trial, from ``trials`` already run
    (their ``seconds``; CHOLMOD ones also ``factor_reused``).

    ICF at a measured density: the median of those trials; above it: the highest measured density's
    median x (density ratio)^:data:`ICF_COST_EXPONENT` (below it, the same scaling down); nothing
    measured: 0 (the first trial always runs). CHOLMOD: the median of trials at that density that
    reused the exact factor (else the ICF prediction there), plus, when ``factor_cached`` is False,
    the exact factor: the median of what first trials per ``l2`` took beyond that, or, before any
    CHOLMOD trial, ``exact_seconds`` (the structural prediction,
    :func:`sansa_gpu.factorize.predict_exact_seconds`) when given, else the ICF prediction at the
    largest of ``densities``.
    """
    timed = [t for t in trials if t.get("seconds") is not None]

    def icf(d):
        by_density = {}
        for t in timed:
            if t["factorizer"] == "icf":
                by_density.setdefault(t["density"], []).append(t["seconds"])
        if not by_density:
            return 0.0
        if d in by_density:
            return _median(by_density[d])
        lower = [x for x in by_density if x < d]
        ref = max(lower) if lower else min(by_density)
        return _median(by_density[ref]) * (d / ref) ** ICF_COST_EXPONENT

    if factorizer == "icf":
        return icf(density)

    def cut(d):
        reused = [t["seconds"] for t in timed if t["factorizer"] == "cholmod" and t["density"] == d and t.get("factor_reused")]
        return _median(reused) if reused else icf(d)

    cost = cut(density)
    if not factor_cached:
        firsts = [t["seconds"] - cut(t["density"]) for t in timed
                  if t["factorizer"] == "cholmod" and t.get("factor_reused") is False]
        if firsts:
            cost += max(0.0, _median(firsts))
        elif exact_seconds is not None:
            cost += exact_seconds
        else:
            cost += icf(max(densities) if len(densities) else density)
    return cost


#: Share of ``max_seconds`` one predicted exact CHOLMOD factor may take for CHOLMOD to enter the search
#: (the rest is left to the ICF trials, which run first when cheaper, and the refinement phases).
EXACT_FACTOR_SHARE = 0.5


def _exact_factor_fits(X: sp.csr_matrix, density: float, memory_cap: float, max_seconds: float | None,
                       counts: dict) -> tuple[bool, str, float | None]:
    """Whether CHOLMOD blocks enter the search, by budget: (yes / no, why, predicted seconds of one
    exact factor). From the exact factor's structure (:func:`sansa_gpu.memory.exact_factor_profile`,
    recorded in ``counts`` for the memory estimates), its predicted time
    (:func:`sansa_gpu.factorize.predict_exact_seconds`) must fit :data:`EXACT_FACTOR_SHARE` of
    ``max_seconds`` (no limit without one) and the predicted peak of a fit at the lowest ``density``
    must fit ``memory_cap``. Not analysed (:func:`sansa_gpu.factorize.rule.exact_factor_cost`, the analysis the
    ``auto`` rule uses too): catalogues above :data:`~sansa_gpu.factorize.EXACT_PROFILE_MAX_ITEMS`, and a Gram
    that may not fit ``memory_cap``."""
    from .factorize.rule import exact_factor_cost

    cost = exact_factor_cost(X, density, memory_cap, "colamd", f"max_memory {memory_cap / 1e9:.2f} GB")
    if not cost["analysed"]:
        return False, cost["why"], None
    counts[("cholmod", 0.0)] = (cost["nnz_gram"], cost["fill"])
    seconds, peak = cost["predicted_seconds"], cost["peak"]
    facts = (f"exact factor of {cost['fill']:,} nonzeros, {cost['flops'] / 1e9:.3g} GFlop: predicted {seconds:.0f} s "
             f"and a {peak / 1e9:.2f} GB fit peak (analysed in {cost['seconds']:.1f} s)")
    if peak > memory_cap:
        return False, f"{facts} > max_memory {memory_cap / 1e9:.2f} GB", seconds
    if max_seconds is not None and seconds > EXACT_FACTOR_SHARE * max_seconds:
        return False, f"{facts}: more than {EXACT_FACTOR_SHARE:g} of max_seconds={max_seconds:g}", seconds
    return True, facts, seconds


def _check_search(k, metric, l2_grid, min_cooccurrence, factorizers) -> tuple:
    """(metric key, l2 grid, pruning grid, factorizers, whether they were the default) of tune's
    arguments, each checked (ValueError naming the bad one)."""
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if metric not in ("recall", "ndcg"):
        raise ValueError(f"metric must be 'recall' or 'ndcg', got {metric!r}")
    l2_grid = _check_grid(l2_grid, "l2_grid")
    mc_grid = _check_grid(min_cooccurrence, "min_cooccurrence", positive=False)
    default_factorizers = factorizers is None
    factorizers = ["icf", "cholmod"] if default_factorizers else list(dict.fromkeys(factorizers))
    if not factorizers:
        raise ValueError("factorizers is empty: give 'icf' and/or 'cholmod'")
    for f in factorizers:
        if f not in ("icf", "cholmod"):
            raise ValueError(f"factorizers may hold 'icf' and 'cholmod', got {f!r}")
    return f"{metric}@{k}", l2_grid, mc_grid, factorizers, default_factorizers


def _search_densities(n: int, densities, max_model_bytes: float | None) -> list:
    """The densities searched: the ladder (:func:`density_ladder`) by default, else the given ones
    checked and cut to those whose weights fit ``max_model_bytes``."""
    if densities is None:
        return density_ladder(n, max_model_bytes)
    densities = _check_grid(densities, "densities")
    if any(d > 1 for d in densities):
        raise ValueError(f"densities must lie in (0, 1], got {densities}")
    if max_model_bytes is not None:
        top = density_ladder(n, max_model_bytes)[-1]
        dropped = [d for d in densities if d > top * (1 + 1e-9)]
        if dropped:
            logger.info("tune: densities %s exceed max_model_bytes (largest allowed %.3g): not tried", dropped, top)
        densities = [d for d in densities if d <= top * (1 + 1e-9)]
        if not densities:
            raise ValueError(f"every density given exceeds max_model_bytes={max_model_bytes:.4g} "
                             f"(the largest that fits is {top:.3g})")
    return densities


def _installed_factorizers(factorizers: list) -> list:
    """The factorisers that can run here: CHOLMOD only with scikit-sparse installed."""
    if "cholmod" in factorizers and not cholmod_available():
        logger.info("tune: CHOLMOD (scikit-sparse) is not installed: ICF trials only")
        factorizers = [f for f in factorizers if f != "cholmod"]
        if not factorizers:
            raise ValueError("factorizers=('cholmod',) but scikit-sparse is not installed (pip install 'sansa_gpu[cholmod]')")
    return factorizers


def _refit(best: dict, X: sp.csr_matrix, table, device: str, user_col: str, item_col: str, value_col):
    """The best trial's parameters fitted on all the data (the raw-ID table when one was given)."""
    from .model import SANSA

    model = SANSA(l2=best["l2"], density=best["density"], factorizer=best["factorizer"],
                  min_cooccurrence=best["min_cooccurrence"] if best["factorizer"] == "icf" else 0.0,
                  refine_sweeps=best["refine_sweeps"], device=device, max_gram_per_item=None, **TUNE_ICF_FILLS)
    if table is not None:
        return model.fit(table, user_col=user_col, item_col=item_col, value_col=value_col)
    return model.fit(X)


def tune(data, *, k: int = 20, metric: str = "recall", validation: str = "holdout", validation_fraction: float = 0.2,
         validation_users: int | None = None, seed: int = 0, l2_grid=DEFAULT_L2_GRID, densities=None,
         min_cooccurrence=DEFAULT_MIN_COOCCURRENCE, factorizers=None, refine_l2: bool = True,
         narrow_l2: bool = True, sweeps_grid=DEFAULT_SWEEPS_GRID,
         max_model_bytes: float | None = None, max_memory: float | None = None, max_seconds: float | None = None,
         refine_sweeps: int = 2, device: str = "auto", dense_ease: bool = False, refit: bool = True,
         progress: bool = True, user_col: str = "user_id", item_col: str = "item_id",
         value_col: str | None = None) -> TuneResult:
    """Search SANSA's parameters on a validation split of ``data`` and refit the best on all of it.

    data : (users, items) scipy sparse matrix, or a pandas / pyarrow table of raw IDs (then the
        refitted model maps raw item IDs, as :meth:`SANSA.fit` on a table does).
    metric : 'recall' (hits / min(k, |targets|)) or 'ndcg', at ``k``, ranked on validation.
    validation : 'holdout' (per-user random holdout of ``validation_fraction``) or 'users' (held-out
        users: ``validation_users``, default that fraction of users; strong generalisation).
    l2_grid, densities, min_cooccurrence : the grids (densities default to :func:`density_ladder`);
        ``min_cooccurrence`` applies to ICF only; ``factorizers`` any of 'icf', 'cholmod' ('cholmod'
        is dropped with a log line when scikit-sparse is not installed); default: 'icf', and
        'cholmod' too when one exact factor's predicted time and memory fit the budgets
        (:func:`_exact_factor_fits`: by the factor's structure, not the catalogue size). ``narrow_l2``: ICF tries the
        whole ``l2_grid`` at the lowest density only, then the :data:`KEEP_L2` best of the density below.
    refine_sweeps, sweeps_grid : sweeps of every trial, then more sweeps (each value of ``sweeps_grid``
        above it, ascending, while validation improves) for the best trial.
    max_model_bytes, max_memory, max_seconds : budgets (see the module docstring).
    dense_ease : also fit dense EASE at the best l2 when its n² matrix fits ``max_memory`` and its
        predicted time (:func:`~sansa_gpu.ease.ease_fit_seconds`) what is left of ``max_seconds`` (for the plot).

    Returns a :class:`TuneResult`. Deterministic for a given ``seed`` (trials' fit times aside).
    """
    t_start = time.perf_counter()
    metric_key, l2_grid, mc_grid, factorizers, default_factorizers = _check_search(k, metric, l2_grid,
                                                                                  min_cooccurrence, factorizers)
    max_model_bytes, max_memory, max_seconds = (None if v is None else check_positive_float(v, name) for v, name in (
        (max_model_bytes, "max_model_bytes"), (max_memory, "max_memory"), (max_seconds, "max_seconds")))
    table = data if is_table(data) else None
    X = encode_interactions(table, user_col, item_col, value_col).X if table is not None else data
    X = check_interactions(X, require_nonempty=True)
    n = X.shape[1]
    densities = _search_densities(n, densities, max_model_bytes)
    factorizers = _installed_factorizers(factorizers)
    split = validation_split(X, validation, validation_fraction, seed, validation_users)
    from .memory import available_memory_bytes

    memory_cap = max_memory if max_memory is not None else float(available_memory_bytes())
    counts: dict = {}  # (factorizer, min_cooccurrence) -> structural_counts
    exact_seconds = None  # predicted seconds of one exact CHOLMOD factor (before one is measured)
    if "cholmod" in factorizers and default_factorizers:
        keep, why, exact_seconds = _exact_factor_fits(split.train, min(densities), memory_cap, max_seconds, counts)
        logger.info("tune: CHOLMOD %s: %s", "tried" if keep else "not tried", why)
        if not keep:
            factorizers = [f for f in factorizers if f != "cholmod"]
    say = (lambda msg: print(f"tune: {msg}", file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    say(f"{split.train.shape[0]} users x {n} items ({split.train.nnz} interactions) for training, "
        f"{split.inputs.shape[0]} validation users ({validation}); densities {[f'{d:.3g}' for d in densities]}, "
        f"l2 {l2_grid}, factorizers {factorizers}")

    search = _Search(split, k=k, metric_key=metric_key, densities=densities, l2_grid=l2_grid, mc_grid=mc_grid,
                     factorizers=factorizers, narrow_l2=narrow_l2, refine_sweeps=refine_sweeps, device=device,
                     max_seconds=max_seconds, memory_cap=memory_cap, exact_seconds=exact_seconds, counts=counts,
                     t_start=t_start, say=say)
    search.grid()
    if refine_l2:
        search.refine_l2()
    search.more_sweeps(sweeps_grid)
    search.speculative_trials()
    best = search.best()
    search_s = time.perf_counter() - t_start
    if search.not_started:
        say(f"max_seconds={max_seconds:g} spent: {search.not_started} trial(s) not started")
    say(f"best: {best['factorizer']} mc={best['min_cooccurrence']:g} density={best['density']:.3g} l2={best['l2']:g} "
        f"({metric_key} {best[metric_key]:.4f}) after {len(search.trials)} trials in {search_s:.1f}s")
    search.release_caches()
    trials = search.trials

    ease_point = None
    if dense_ease:
        left = None if max_seconds is None else max_seconds - (time.perf_counter() - t_start)
        ease_point = _dense_ease_point(split, best["l2"], k, memory_cap, left, say)
    model = None
    if refit:
        model = _refit(best, X, table, device, user_col, item_col, value_col)
        say(f"refitted on all {X.shape[0]} users ({model.model_bytes / 1e6:.2f} MB of weights)")
    return TuneResult(trials=trials, best=best, model=model, metric=metric_key, k=k,
                      validation={"kind": validation, "fraction": validation_fraction, "seed": seed,
                                  "train_users": int(split.train.shape[0]), "validation_users": int(split.inputs.shape[0]),
                                  "train_nnz": int(split.train.nnz), "target_nnz": int(split.targets.nnz)},
                      seconds=round(search_s, 3), dense_ease=ease_point, extra={"not_started": search.not_started})


class _Search:
    """The state of one :func:`tune` search and its phases, in the order ``tune`` calls them:
    :meth:`grid` (ICF rungs and CHOLMOD blocks, cheapest predicted first), :meth:`refine_l2`,
    :meth:`more_sweeps`, :meth:`speculative_trials`; then :meth:`best`. Every trial goes through
    :meth:`run`, which applies the budgets, fits on ``split.train`` and scores ``split.inputs``.

    trials : one dict per trial in the order run (what :class:`TuneResult` reports).
    not_started : trials ``max_seconds`` left unstarted.
    """

    def __init__(self, split: ValidationSplit, *, k: int, metric_key: str, densities: list, l2_grid: list,
                 mc_grid: list, factorizers: list, narrow_l2: bool, refine_sweeps: int, device: str,
                 max_seconds: float | None, memory_cap: float, exact_seconds: float | None, counts: dict,
                 t_start: float, say):
        self.split, self.k, self.metric_key = split, k, metric_key
        self.densities, self.l2_grid, self.mc_grid, self.factorizers = densities, l2_grid, mc_grid, factorizers
        self.narrow_l2, self.refine_sweeps, self.device = narrow_l2, refine_sweeps, device
        self.max_seconds, self.memory_cap, self.exact_seconds = max_seconds, memory_cap, exact_seconds
        self.counts = counts  # (factorizer, min_cooccurrence) -> structural_counts
        self.t_start, self.say = t_start, say
        self.trials: list = []
        self.not_started = 0
        self.estimates: dict = {}  # (factorizer, min_cooccurrence, density) -> predicted peak bytes
        self.caches = {f: FactorCache(max_grams=len(mc_grid) if f == "icf" else 1) for f in factorizers}
        self.speculative: list = []  # the top rung's step-down l2: run after the refinement phases

    # ------------------------------------------------------------------ facts of the trials so far
    def ok(self) -> list:
        return [t for t in self.trials if t["status"] == "ok"]

    def best(self) -> dict:
        """The best completed trial (ties: the smaller model); ValueError when none completed."""
        ok = self.ok()
        if not ok:
            why = sorted({t["status"] for t in self.trials}) or ["max_seconds was spent before the first trial"]
            raise ValueError(f"tune: no trial completed ({'; '.join(why)}): loosen max_memory or lower the densities")
        return max(ok, key=lambda t: (t[self.metric_key], -t["model_bytes"]))

    def held_factor_l2(self):
        """The l2 whose exact factor the CHOLMOD cache holds: that of the last CHOLMOD fit."""
        return next((t["l2"] for t in reversed(self.trials) if t["factorizer"] == "cholmod" and t["status"] == "ok"),
                    None)

    def out_of_time(self) -> bool:
        """max_seconds spent (the first, cheapest trial always runs, so a model always comes back)."""
        spent = self.max_seconds is not None and time.perf_counter() - self.t_start > self.max_seconds
        return spent and bool(self.ok())

    def predicted_peak(self, factorizer: str, mc: float, density: float) -> int:
        """Predicted fit peak bytes of one trial: the bound first, exact counts when it does not fit."""
        from .memory import estimate_memory, memory_upper_bound, structural_counts

        key = (factorizer, mc, density)
        if key not in self.estimates:
            train = self.split.train
            fills = {"working_fill": TUNE_ICF_FILLS["icf_fill"],
                     "intermediate_fill": TUNE_ICF_FILLS["icf_intermediate_fill"]}
            est = memory_upper_bound(train, density, factorizer, **fills)
            if est["peak"] > self.memory_cap:  # count exactly; the counts do not depend on the density
                ordering = "colamd" if factorizer == "cholmod" else "popularity"
                if (factorizer, mc) not in self.counts:
                    self.counts[(factorizer, mc)] = structural_counts(train, factorizer, mc, ordering)
                est = estimate_memory(train, density, factorizer, mc, ordering, self.counts[(factorizer, mc)],
                                      **fills)
            self.estimates[key] = int(est["peak"])
        return self.estimates[key]

    # ------------------------------------------------------------------ one trial
    def run(self, factorizer: str, mc: float, density: float, l2: float, phase: str,
            sweeps: int | None = None) -> dict | None:
        """Run one trial unless it ran before or a budget leaves it out; its record, or None."""
        sweeps = self.refine_sweeps if sweeps is None else sweeps
        key = (factorizer, mc, density, l2, sweeps)
        for t in self.trials:  # never the same trial twice (the l2 refinement may revisit a grid point)
            if (t["factorizer"], t["min_cooccurrence"], t["density"], t["l2"], t["refine_sweeps"]) == key:
                return t if t["status"] == "ok" else None
        rec = {"trial": len(self.trials), "phase": phase, "factorizer": factorizer, "min_cooccurrence": mc,
               "density": density, "l2": l2, "refine_sweeps": sweeps}
        label = f"{factorizer} mc={mc:g} density={density:.3g} l2={l2:g}"
        if not self._fits_time(factorizer, density, l2, label):
            self.not_started += 1
            return None
        # the fit's own predicted peak, plus what the caches hold between fits
        peak = self.predicted_peak(factorizer, mc, density) + sum(c.held_bytes() for c in self.caches.values())
        rec["estimated_peak_bytes"] = peak
        if peak > self.memory_cap:
            rec["status"] = (f"skipped: predicted fit peak {peak / 1e9:.2f} GB > max_memory "
                             f"{self.memory_cap / 1e9:.2f} GB")
            logger.info("tune: trial %s %s", {k_: rec[k_] for k_ in ("factorizer", "min_cooccurrence", "density", "l2")},
                        rec["status"])
            return self._record(rec, label, rec["status"])
        return self._fit_and_score(rec, label)

    def _fits_time(self, factorizer: str, density: float, l2: float, label: str) -> bool:
        """Whether a trial may start: time is left and it is not predicted to end past max_seconds (a
        cheaper trial later may still fit)."""
        if self.out_of_time():
            return False
        if self.max_seconds is None or not self.ok():
            return True
        left = self.max_seconds - (time.perf_counter() - self.t_start)
        cached = factorizer != "cholmod" or self.held_factor_l2() == l2
        predicted = predict_trial_seconds(self.trials, factorizer, density, factor_cached=cached,
                                          densities=self.densities, exact_seconds=self.exact_seconds)
        if predicted > left:
            self.say(f"{label}: not started (predicted {predicted:.0f}s > {left:.0f}s left)")
            return False
        return True

    def _fit_and_score(self, rec: dict, label: str) -> dict | None:
        """Fit the trial's model on the training split (the caches shared), score the validation users."""
        from .model import SANSA

        factorizer, mc = rec["factorizer"], rec["min_cooccurrence"]
        cache = self.caches[factorizer]
        # the exact Gram (max_gram_per_item=None): one Gram serves every density of the search
        model = SANSA(l2=rec["l2"], density=rec["density"], factorizer=factorizer,
                      min_cooccurrence=mc if factorizer == "icf" else 0.0, refine_sweeps=rec["refine_sweeps"],
                      device=self.device, max_gram_per_item=None, **TUNE_ICF_FILLS)
        reused_before = cache.hits["exact_factor"]
        try:
            t0 = time.perf_counter()
            with PeakRss() as rss:
                model.fit(self.split.train, check_memory=False, factor_cache=cache)
            fit_s = time.perf_counter() - t0
            ids, _ = model.recommend(self.split.inputs, k=self.k)
            score_s = time.perf_counter() - t0 - fit_s
        except (ArithmeticError, MemoryError, RuntimeError, ValueError) as exc:  # e.g. ICF breakdown past its restarts
            rec["status"] = f"failed: {type(exc).__name__}: {exc}"
            return self._record(rec, label, rec["status"])
        scores = evaluate(ids, self.split.targets, ks=(self.k,))
        rec.update(status="ok", **{key: round(float(v), 6) for key, v in scores.items()},
                   model_bytes=model.model_bytes, model_nnz=model.model_nnz, fit_seconds=round(fit_s, 3),
                   score_seconds=round(score_s, 3), seconds=round(fit_s + score_s, 3), peak_rss_bytes=rss.peak)
        if factorizer == "cholmod":
            rec["factor_reused"] = cache.hits["exact_factor"] > reused_before
        self._record(rec, label, f"{self.metric_key} {rec[self.metric_key]:.4f}, {rec['model_bytes'] / 1e6:.2f} MB, "
                                 f"{fit_s:.1f}s")
        return rec

    def _record(self, rec: dict, label: str, outcome: str) -> dict | None:
        self.trials.append(rec)
        self.say(f"#{rec['trial']} {label}: {outcome}")
        return rec if rec.get("status") == "ok" else None

    # ------------------------------------------------------------------ phase 1: the grid
    def icf_rung(self, i: int) -> tuple[list, list]:
        """((min_cooccurrence, l2) to run, speculative ones) of ICF rung i: the whole grid at the lowest
        density; above it, per pruning level the KEEP_L2 best l2 of the density below (best first), and
        as speculative the grid step below the smallest of them (a small l2 is the slowest ICF trial:
        its breakdowns restart the factorisation; gowalla, 68 per item: 76 s at l2 = 1 against 15 s)."""
        if i == 0 or not self.narrow_l2:
            return [(mc, l2) for mc in self.mc_grid for l2 in self.l2_grid], []
        kept_pairs, step_pairs = [], []
        for mc in self.mc_grid:
            below = [t for t in self.ok() if t["factorizer"] == "icf" and t["min_cooccurrence"] == mc
                     and t["density"] == self.densities[i - 1]]
            if not below:
                kept_pairs += [(mc, l2) for l2 in self.l2_grid]
                continue
            kept = [t["l2"] for t in sorted(below, key=lambda t: -t[self.metric_key])[:KEEP_L2]]
            kept_pairs += [(mc, l2) for l2 in kept]
            step_pairs += [(mc, l2) for l2 in self.l2_grid if l2 < min(kept)][-1:]
        return kept_pairs, step_pairs

    def block_cost(self, block: tuple) -> float:
        """Predicted seconds of a block: an ICF rung ('icf', i) or a CHOLMOD line point ('cholmod', l2)."""
        kind, key = block
        if kind == "icf":
            kept, step = self.icf_rung(key)
            n_trials = len(kept) + (len(step) if key + 1 < len(self.densities) else 0)
            return n_trials * predict_trial_seconds(self.trials, "icf", self.densities[key])
        return sum(predict_trial_seconds(self.trials, "cholmod", d, factor_cached=j > 0 or self.held_factor_l2() == key,
                                         densities=self.densities, exact_seconds=self.exact_seconds)
                   for j, d in enumerate(self.densities))

    def cholmod_start_l2(self) -> float:
        """The grid l2 the CHOLMOD line starts from: the one nearest (in log) to ``SANSA(l2=None)``'s l2 for
        the exact factor on the training split (:data:`~sansa_gpu.defaults.L2_PER_MEAN_DIAGONAL` mean Gram
        diagonals: EASE's best l2 scales with the diagonal, so where it falls on a fixed grid moves with
        the data); ties: the larger."""
        from .model import SANSA

        # the one resolution of the default l2 (it falls back to DEFAULT_L2 when X has no interactions)
        target = math.log(SANSA(factorizer="cholmod").l2_for(self.split.train, column_scaling=False))
        return min(self.l2_grid[::-1], key=lambda l2: abs(math.log(l2) - target))

    def grid(self) -> None:
        """ICF rungs (ascending density, each ready once the one below has run) and CHOLMOD blocks (one
        exact factor per l2, cut to every density), cheapest predicted block first. CHOLMOD's l2 is a
        line search over the grid from :meth:`cholmod_start_l2`: the grid steps above and below it
        (above first), and on from each while a block's best beats the block it stepped from. The
        line used to start at the top of the grid and go down: on amazon-book-kgat (mean diagonal 26)
        the 480 s budget ran out after l2 = 1000, whose 64 per item model it never reached, and tune
        chose an ICF model at 95.5% of dense EASE while the exact factor cut to 64 per item at l2 = 105
        reaches 100.1%."""
        line = sorted(self.l2_grid) if "cholmod" in self.factorizers else []
        blocks = [("icf", 0)] if "icf" in self.factorizers else []
        if line:
            blocks.append(("cholmod", self.cholmod_start_l2()))
        cholmod_best: dict = {}  # l2 -> best metric of its CHOLMOD block
        stepped_from: dict = {}  # l2 -> the l2 of the block whose result queued it
        while blocks:
            block = min(blocks, key=self.block_cost)  # ties: the earlier block (ICF rungs; CHOLMOD above, then below)
            blocks.remove(block)
            kind, key = block
            if kind == "icf":
                kept, step = self.icf_rung(key)
                if key + 1 < len(self.densities):
                    kept = kept + step
                    blocks.insert(0, ("icf", key + 1))
                else:
                    self.speculative = [(mc, self.densities[key], l2) for mc, l2 in step]
                for mc, l2 in kept:
                    self.run("icf", mc, self.densities[key], l2, "grid")
                continue
            recs = [self.run("cholmod", 0.0, density, key, "grid") for density in self.densities]
            done = [r[self.metric_key] for r in recs if r is not None]
            if not done:
                continue
            cholmod_best[key] = max(done)
            i = line.index(key)
            came = stepped_from.get(key)
            if came is not None and cholmod_best[key] <= cholmod_best[came]:
                self.say(f"cholmod l2={key:g}: no better than l2={came:g}; the line ends on this side")
                continue
            steps = [i + 1, i - 1] if came is None else [i + (1 if key > came else -1)]
            for j in steps:
                if 0 <= j < len(line) and line[j] not in cholmod_best and ("cholmod", line[j]) not in blocks:
                    stepped_from[line[j]] = key
                    blocks.append(("cholmod", line[j]))
        self.best()  # no trial completed: ValueError naming why

    # ------------------------------------------------------------------ phases 2-4
    def refine_l2(self) -> None:
        """l2 refined around the best trial: log-steps of 10^±0.25, then 10^±0.125."""
        for step in (0.25, 0.125):
            best = self.best()
            for l2 in (best["l2"] * 10 ** -step, best["l2"] * 10 ** step):
                self.run(best["factorizer"], best["min_cooccurrence"], best["density"], float(f"{l2:.6g}"), "refine")

    def more_sweeps(self, sweeps_grid) -> None:
        """More refinement sweeps, while they improve it, for the best trial of each of the
        :data:`SWEEP_CANDIDATES` best (factoriser, density) pairs (the exact factor is reused: only the
        refinement runs again). Not only the best trial: a denser model can rank below a sparser one at
        two sweeps and above it once its ``K`` is refined further (ml-1m, CHOLMOD, λ = 1000, test
        Recall@20: 64 per item 0.376 -> 0.403 at 8 sweeps, 256 per item 0.361 -> 0.412)."""
        leaders: dict = {}  # (factorizer, density) -> its best trial
        for t in self.ok():
            key = (t["factorizer"], t["density"])
            if key not in leaders or (t[self.metric_key], -t["model_bytes"]) > (leaders[key][self.metric_key],
                                                                                -leaders[key]["model_bytes"]):
                leaders[key] = t
        ranked = sorted(leaders.values(), key=lambda t: (-t[self.metric_key], t["model_bytes"]))
        for best in ranked[:SWEEP_CANDIDATES]:
            for sweeps in sorted(s_ for s_ in sweeps_grid if s_ > best["refine_sweeps"]):
                rec = self.run(best["factorizer"], best["min_cooccurrence"], best["density"], best["l2"], "sweeps",
                               sweeps)
                if rec is None or rec[self.metric_key] <= best[self.metric_key]:
                    break
                best = rec

    def speculative_trials(self) -> None:
        """The top ICF rung's step-down l2, last: they are slow and rarely best."""
        for mc, density, l2 in self.speculative:
            self.run("icf", mc, density, l2, "grid")

    def release_caches(self) -> None:
        """Free the Grams and exact factors held between trials (before the refit)."""
        self.caches.clear()


def _dense_ease_point(split: ValidationSplit, l2: float, k: int, memory_cap: float, seconds_left: float | None = None,
                      say=lambda msg: None) -> dict | None:
    """Dense EASE at ``l2`` on the same split, when its predicted time (:func:`~sansa_gpu.ease.ease_fit_seconds`)
    fits ``seconds_left`` (None: no limit) and its n x n float64 matrices fit (3 n² x 8 B)."""
    from .ease import ease_fit_seconds

    n = split.train.shape[1]
    predicted = ease_fit_seconds(n)
    if seconds_left is not None and predicted > seconds_left:
        why = f"dense EASE: not fitted (predicted {predicted:.0f}s for {n} items > {max(0.0, seconds_left):.0f}s left)"
        logger.info("tune: %s", why)
        say(why)
        return None
    from .ease import EASE

    need = 3 * 8 * n * n
    if need > memory_cap:
        logger.info("tune: dense EASE needs about %.1f GB > %.1f GB: not fitted", need / 1e9, memory_cap / 1e9)
        return None
    model = EASE(l2=l2).fit(split.train)
    ids, _ = model.recommend(split.inputs, k=k)
    scores = evaluate(ids, split.targets, ks=(k,))
    return {"l2": l2, "model_bytes": int(n * n * 4), **{key: round(float(v), 6) for key, v in scores.items()}}
