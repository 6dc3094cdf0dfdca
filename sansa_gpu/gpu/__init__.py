"""GPU implementations (CuPy + raw kernels from ``kernels/``), same signatures as ``sansa_gpu.cpu``.

Refinement (kernels/refine.cu), weight assembly (CuPy) and scoring + top-k
(kernels/score_topk.cu). The factorisation stays on the CPU (docs/gpu_training.md).
"""

from .gram import gram_lower_and_norms
from .inference import SCORE_SPARSE_DEVICE, recommend_sparse, score_sparse
from .refine import column_residual_norms, refine_sweep, release_scratch, to_device, to_host
from .weights import assemble_weights

__all__ = ["SCORE_SPARSE_DEVICE", "assemble_weights", "column_residual_norms", "gram_lower_and_norms", "recommend_sparse", "refine_sweep",
           "release_scratch", "score_sparse",
           "to_device", "to_host"]
