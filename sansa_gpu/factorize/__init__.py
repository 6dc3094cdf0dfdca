"""Stages 1-2: fill-reducing ordering and sparse LDL^T of A = X^T X + l2*I, cut to an nnz budget. CPU only.

One module per thing it holds:

- :mod:`~sansa_gpu.factorize.factor`: :class:`LDLFactor`, :func:`nnz_budget`, the magnitude cut;
- :mod:`~sansa_gpu.factorize.ordering`: :func:`item_ordering` (stage 1);
- :mod:`~sansa_gpu.factorize.exact`: the exact CHOLMOD factor (:func:`ldlt_cholmod`) and its time model;
- :mod:`~sansa_gpu.factorize.incomplete`: the incomplete Cholesky (:func:`ldlt_icf`, :func:`incomplete_cholesky`);
- :mod:`~sansa_gpu.factorize.rule`: the ``auto`` rule (:func:`choose_factorizer`);
- :mod:`~sansa_gpu.factorize.cache`: :class:`FactorCache`, the work a search's fits share.

The names below are the package's interface; import them from here.
"""

from .cache import FactorCache
from .exact import (CHOLMOD_INSTALL_HINT, CHOLMOD_ORDERINGS, EXACT_PROFILE_MAX_ITEMS, EXACT_SECONDS_PER_GFLOP,
                    EXACT_SECONDS_PER_MNNZ, cholmod_available, import_cholmod, ldlt_cholmod, predict_exact_seconds)
from .factor import LDLFactor, nnz_budget, sparsify_cholesky_factor, working_budget
from .incomplete import (ICF_BREAKDOWN_RULES, ICF_MAX_RESTARTS, ICFResult, icf, icf_column_scaling,
                         incomplete_cholesky, ldlt_icf)
from .ordering import ORDERINGS, item_ordering
from .rule import (AUTO_CHOLMOD_MAX_SECONDS, AUTO_CHOLMOD_MIN_ITEMS_PER_USER, AUTO_CHOLMOD_MIN_NNZ_PER_ITEM,
                   choose_factorizer)

__all__ = ["AUTO_CHOLMOD_MAX_SECONDS", "AUTO_CHOLMOD_MIN_ITEMS_PER_USER", "AUTO_CHOLMOD_MIN_NNZ_PER_ITEM",
           "CHOLMOD_INSTALL_HINT", "CHOLMOD_ORDERINGS", "EXACT_PROFILE_MAX_ITEMS", "EXACT_SECONDS_PER_GFLOP",
           "EXACT_SECONDS_PER_MNNZ", "FactorCache", "ICFResult", "ICF_BREAKDOWN_RULES", "ICF_MAX_RESTARTS", "LDLFactor",
           "ORDERINGS", "choose_factorizer", "cholmod_available", "icf", "icf_column_scaling", "import_cholmod",
           "incomplete_cholesky", "item_ordering", "ldlt_cholmod", "ldlt_icf", "nnz_budget", "predict_exact_seconds",
           "sparsify_cholesky_factor", "working_budget"]
