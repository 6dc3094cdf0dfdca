"""GPU implementations (CuPy + raw kernels from ``kernels/``), same signatures as ``sansa_gpu.cpu``.

Status: scoring + top-k runs as a raw kernel. The refinement kernel and GPU weight assembly are
the next issues; until they land, those stages run the CPU reference (logged once) so that a
GPU-resolved fit still completes with identical results.
"""

from __future__ import annotations

import logging

from .. import cpu as _cpu
from .inference import recommend_sparse, score_sparse

logger = logging.getLogger(__name__)
_warned: set[str] = set()


def _cpu_fallback(stage: str):
    if stage not in _warned:
        _warned.add(stage)
        logger.warning("gpu: no GPU kernel for %s yet; running the CPU reference", stage)


def refine_sweep(L, K, budget, tol):
    _cpu_fallback("the refinement sweep")
    return _cpu.refine_sweep(L, K, budget, tol)


def column_residual_norms(L, K):
    _cpu_fallback("the refinement sweep")
    return _cpu.column_residual_norms(L, K)


def assemble_weights(K, d, p):
    _cpu_fallback("weight assembly")
    return _cpu.assemble_weights(K, d, p)


__all__ = ["assemble_weights", "column_residual_norms", "recommend_sparse", "refine_sweep", "score_sparse"]
