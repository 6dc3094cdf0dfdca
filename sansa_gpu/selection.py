"""Exact-budget magnitude selection, the one rule every sparsification in the package follows."""

from __future__ import annotations

import numpy as np


def array_module(a):
    """numpy for host arrays, cupy for device arrays (without importing cupy for host arrays); the
    CPU executor's stand-in device arrays name their module (``_sansa_array_module``)."""
    xp = getattr(type(a), "_sansa_array_module", None)
    if xp is not None:
        return xp
    if type(a).__module__.split(".")[0] == "cupy":
        import cupy

        return cupy
    return np


def largest_magnitude_mask(values: np.ndarray, n_keep: int, forced: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask selecting exactly ``min(n_keep, len(values))`` entries of largest ``|value|``.

    values : (m,) float array. Magnitudes are compared in float32 (the precision the factors are
        stored in), so CPU and GPU select the same entries.
    n_keep : number of entries to keep.
    forced : optional (m,) bool mask of entries that are always kept (for example diagonals); they
        count towards ``n_keep``. ValueError if there are more forced entries than ``n_keep``.

    Ties at the threshold are broken by position: the earlier entry wins, so the result is
    deterministic (unlike a quantile cut, which keeps every tied entry and overshoots the budget).
    O(m) time, two float32 copies of ``values``. Works on NumPy and CuPy arrays alike.
    """
    xp = array_module(values)
    m = values.shape[0]
    if n_keep >= m:
        return xp.ones(m, dtype=bool)
    mag = xp.abs(values, dtype=xp.float32)
    if forced is not None:
        n_forced = int(xp.count_nonzero(forced))
        if n_forced > n_keep:
            raise ValueError(f"cannot keep {n_keep} entries when {n_forced} are forced")
        mag[forced] = np.inf
    if n_keep <= 0:
        return xp.zeros(m, dtype=bool)
    kth = m - n_keep
    tau = xp.partition(mag, kth)[kth]  # the n_keep-th largest magnitude
    mask = mag > tau
    n_missing = n_keep - int(xp.count_nonzero(mask))
    if n_missing > 0:
        ties = xp.flatnonzero(mag == tau)[:n_missing]
        mask[ties] = True
    return mask
