"""CPU implementations of the GPU-capable stages (the reference; always available)."""

from .inference import recommend_sparse, score_sparse, topk_dense
from .refine import column_residual_norms, refine_sweep, to_device, to_host
from .weights import assemble_weights

__all__ = ["assemble_weights", "column_residual_norms", "recommend_sparse", "refine_sweep", "score_sparse", "to_device", "to_host", "topk_dense"]
