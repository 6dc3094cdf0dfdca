"""Two numba building blocks shared by every per-column / per-user loop on the CPU."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(inline="always")
def touch(mark, touched, n_touched, i, stamp, acc):
    """Sparse accumulator: the first time row ``i`` is seen under ``stamp``, zero ``acc[i]`` and
    list it in ``touched``. Returns the new number of touched rows."""
    if mark[i] != stamp:
        mark[i] = stamp
        acc[i] = 0.0
        touched[n_touched] = i
        return n_touched + 1
    return n_touched


@numba.njit(inline="always")
def magnitude_cut(mags, n_keep):
    """For magnitudes ``mags`` (m > n_keep > 0 entries), the threshold tau = the n_keep-th largest
    and how many entries equal to tau are kept (the others above tau are all kept)."""
    kth = mags.shape[0] - n_keep
    tau = np.partition(mags, kth)[kth]
    n_above = 0
    for b in range(mags.shape[0]):
        if mags[b] > tau:
            n_above += 1
    return tau, n_keep - n_above
