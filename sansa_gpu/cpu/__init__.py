"""CPU implementations of the GPU-capable stages (the reference; always available)."""

from .gram import gram_lower_and_norms
from .inference import SCORE_SPARSE_DEVICE, recommend_sparse, score_sparse
from .topk import topk_dense
from .refine import column_residual_norms, refine_sweep, release_scratch, to_device, to_host
from .weights import assemble_weights

__all__ = ["SCORE_SPARSE_DEVICE", "assemble_weights", "column_residual_norms", "gram_lower_and_norms", "recommend_sparse", "refine_sweep",
           "release_scratch", "score_sparse", "to_device", "to_host", "topk_dense"]
