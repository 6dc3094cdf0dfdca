"""Every default and every set of choices that the estimator, the command line and ``tune`` share,
defined once: ``SANSA()``, ``sansa-gpu fit --help`` and ``tune``'s search read them from here (a test
checks that they agree)."""

from __future__ import annotations

DEVICES = ("auto", "cpu", "gpu")
"""Where the GPU-capable stages run: 'auto' (the GPU when one answers and the GPU path is verified,
else the CPU), 'cpu' or 'gpu'."""
FACTORIZERS = ("auto", "cholmod", "icf")
"""The factorisers of ``SANSA(factorizer=...)``; 'auto' is the rule of
:func:`sansa_gpu.factorize.choose_factorizer`."""

DEFAULT_L2 = 20.0
"""Default ridge ``l2`` of ``SANSA`` (``tune`` searches :data:`TUNE_L2_GRID`)."""
DEFAULT_NNZ_PER_ITEM = 16
"""Default density as nonzeros per item column of each factor (``density=None``): 16 per item is
where the validation curves of the shared datasets bend (see ``SANSA``)."""
DEFAULT_REFINE_SWEEPS = 2
"""Default minimal-residual sweeps refining K."""
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
