"""sansa_gpu: SANSA recommenders (sparse, factorised approximate EASE) on the CPU and GPU."""

__version__ = "0.1.0"

import logging as _logging

_logging.getLogger(__name__).addHandler(_logging.NullHandler())

from .ease import EASE  # noqa: E402
from .model import SANSA  # noqa: E402
from .scoring_cache import scoring_cache_info, set_scoring_cache_budget  # noqa: E402
from .serving import score_to_parquet  # noqa: E402
from .tuning import TuneResult, tune  # noqa: E402
from .warmup import warm_up  # noqa: E402

__all__ = ["EASE", "SANSA", "TuneResult", "score_to_parquet", "scoring_cache_info", "set_scoring_cache_budget", "tune",
           "warm_up", "__version__"]
