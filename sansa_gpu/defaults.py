"""Every default and every set of choices that the estimator, the command line and ``tune`` share,
defined once: ``SANSA()``, ``sansa-gpu fit --help`` and ``tune``'s search read them from here (a test
checks that they agree)."""

from __future__ import annotations

from types import MappingProxyType

DEVICES = ("auto", "cpu", "gpu")
"""Where the GPU-capable stages run: 'auto' (the GPU when one answers and the GPU path is verified,
else the CPU), 'cpu' or 'gpu'."""
FACTORIZERS = ("auto", "cholmod", "icf")
"""The factorisers of ``SANSA(factorizer=...)``; 'auto' is the rule of
:func:`sansa_gpu.factorize.choose_factorizer`."""

DEFAULT_L2 = 20.0
"""Ridge ``l2`` of ``SANSA(l2=None)`` on the column-scaled Gram (ICF's problem; ``tune`` searches
:data:`TUNE_L2_GRID`)."""
L2_PER_MEAN_DIAGONAL = 4.0
"""``SANSA(l2=None)`` on the unscaled Gram (the exact factor's problem, EASE's own): l2 is this many times the
mean of the Gram's diagonal over the items with an interaction (for 0/1 data: the mean item popularity).
The unscaled Gram's diagonal grows with the data, so a fixed l2 does not carry over: dense EASE's best l2 is
3-5 mean diagonals on ml-1m, pinterest and citeulike-a; on ml-1m (CHOLMOD, 64 per item, 4 sweeps) 2 / 4 / 8
mean diagonals give test Recall@20 0.386 / 0.400 / 0.399 against 0.335 at l2 = 20
(benchmarks/results/default_rule.jsonl)."""
DEFAULT_MIN_COOCCURRENCE = 2.0
"""``SANSA(min_cooccurrence=None)`` for ICF below density 1 on 0/1 or count data (whole numbers >= 1): Gram
entries of item pairs seen together by one user only are dropped while the Gram is built. Against 0 at the
other defaults, test Recall@20 on the nine shared datasets ICF fits by default
(benchmarks/results/default_rule.jsonl): better on six (yelp-diffnet +50%, epinions +32%,
amazon-videogames-sasrec +13%, lastfm-2k +1.5%, gowalla and pinterest +0.1-0.2%), worse on three (citeulike-t
-15%, citeulike-a -2.2%, amazon-book-kgat -0.2%); and the Gram is smaller. Weighted data keeps 0:
its Gram entries are not counts; density 1 keeps 0 and stays EASE."""
DEFAULT_NNZ_PER_ITEM = 16
"""Default density as nonzeros per item column of each factor (``density=None``): 16 per item is
where the validation curves of the shared datasets bend (see ``SANSA``)."""
DEFAULT_REFINE_SWEEPS = 2
"""Default minimal-residual sweeps refining K (``refine_sweeps=None``)."""
DENSE_DATA_ITEMS_PER_USER = 50.0
"""Interactions per user from which training data counts as dense: the ``auto`` factoriser rule then
allows the exact factor, and ``SANSA()`` keeps :data:`DENSE_NNZ_PER_ITEM` nonzeros per item and refines
:data:`DENSE_REFINE_SWEEPS` sweeps."""
DENSE_NNZ_PER_ITEM = 64
"""Default nonzeros per item column on dense data. On ml-1m (133 interactions per user) no 16-per-item
model reaches 95% of dense EASE at any l2 or sweep count (at most 0.359 against EASE's 0.413); 64 per item
with 4 sweeps reaches 0.400 (97%) in 1.7x the old default's fit time (benchmarks/results/default_rule.jsonl)."""
DENSE_REFINE_SWEEPS = 4
"""Default refinement sweeps on dense data: at 64 per item on ml-1m, 2 sweeps reach 0.375 and 4 reach 0.400."""
ICF_FILL_FROM_NNZ_PER_ITEM = 64
"""Nonzeros per item column of the factor from which ``SANSA(icf_fill=None, icf_intermediate_fill=None)`` resolve
to :data:`DENSE_ICF_FILL` and :data:`DENSE_ICF_INTERMEDIATE_FILL` (below it: 1 and 0, the plain incomplete
Cholesky). On the column-scaled Gram of eight shared datasets at 64 per item and l2 10 and 100
(benchmarks/results/icf_vs_exact.jsonl), the plain ICF is more than 2% below CHOLMOD's exact factor cut to the
same density in 2 of 16 cases (ml-1m 96.5%, yelp-diffnet 88.6%), the pair in none (98.4-108.4%); at 16 per item
the plain ICF is the better of the two in 15 of 16 cases (101.8-225% of the exact factor against 99.2-187.8%).
Only on the exact Gram (``min_cooccurrence`` 0, where those were measured): with the default pruning (2) at 64 per
item the pair changed test Recall@20 by -0.0038 to +0.0009 on eight datasets at 1.1-3.9x the fit time
(benchmarks/results/default_rule.jsonl, cases ``d64`` and ``d64_plain`` of commit e251bec)."""
DENSE_ICF_FILL = 2.0
"""``icf_fill`` resolved from :data:`ICF_FILL_FROM_NNZ_PER_ITEM` nonzeros per item: a working budget of twice the
factor's, cut afterwards by magnitude as the exact factor is."""
DENSE_ICF_INTERMEDIATE_FILL = 1.0
"""``icf_intermediate_fill`` resolved from :data:`ICF_FILL_FROM_NNZ_PER_ITEM` nonzeros per item: one working
budget of intermediate entries (Tismenetsky-Kaporin), which feed the later columns and are then discarded."""
REFINE_TOL = 1e-2
"""Default ``refine_tol``: columns of K within 1% of their target (``||e_j - L k_j|| <= 0.01``) are
not refined. Against 1e-7: the same recall@20 within 0.0004 on ml-1m (CHOLMOD), gowalla and
epinions (ICF), and 11x less refinement time on epinions (34 s vs 386 s;
benchmarks/results/refine_tol.jsonl); it is also the official package's first-scan threshold."""
CONVERGED_REFINE_TOL = 1e-7
"""``refine_tol`` that converges K (the EASE limit at density 1); the default of the low-level
refinement functions (``sansa_gpu.refine.refine_inverse``)."""
GRAM_PER_FACTOR_ENTRY = 16
"""``max_gram_per_item='auto'``: Gram entries kept per item column, per nonzero the factor keeps there."""
DEFAULT_BATCH_USERS = 65_536
"""Users per block of ``SANSA.recommend_batches`` and the streaming writers (about 10 MB of results at k=20)."""

TUNE_L2_GRID = (1.0, 10.0, 100.0, 1000.0)
"""``tune``'s coarse log grid of ``l2`` (EASE's best λ spans 10-1000 on the shared datasets: 20 on
gowalla, 500 on ml-1m); refined around the best by 10^±0.25 and 10^±0.125."""
TUNE_NNZ_PER_ITEM = (4, 16, 64, 256)
"""``tune``'s density ladder as nonzeros per item column (δ = c / n_items), capped by
``max_model_bytes`` and at density 1; it holds :data:`DEFAULT_NNZ_PER_ITEM`."""
TUNE_MIN_COOCCURRENCE = (0.0, 2.0, 3.0)
"""``tune``'s ICF Gram pruning levels."""
TUNE_SWEEPS_GRID = (4, 8)
"""Refinement sweeps ``tune`` tries last, for the best trial only, while they improve it: on ml-1m
(CHOLMOD, 64 nonzeros per item, λ = 1778) 5 sweeps instead of 2 raised test Recall@20 from 0.380 to 0.399."""
TUNE_ICF_FILLS = MappingProxyType({"icf_fill": 1.0, "icf_intermediate_fill": 0.0})  # read-only: shared by every tune
"""The incomplete Cholesky ``tune`` searches at every density: the plain one, not the doubled working budget with an
intermediate fill that ``SANSA()`` resolves to on the exact Gram from :data:`ICF_FILL_FROM_NNZ_PER_ITEM` per item.
At the ICF models ``tune`` chose (benchmarks/results/default_rule.jsonl, cases ``tuned_icf*``) the pair took 1.4-3.2x the
fit time for the same test Recall@20 (pinterest, 256 per item: 0.1569 both), +0.0009 (lastfm-2k, 64 per item) or
+0.0017 (citeulike-a, 256 per item); a slower trial is fewer trials within ``max_seconds``, the searches measured
so far (docs/benchmarks.md) ran the plain ICF, and where the exact factor fits, ``tune`` searches it as well."""
