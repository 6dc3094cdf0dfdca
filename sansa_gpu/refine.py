"""Stage 3: K ~= L^{-1} from K0 = 2I - L and column-parallel minimal-residual sweeps.

The sweep itself lives in the backends (``cpu.refine_sweep`` is the reference, ``gpu.refine_sweep``
its twin); this module runs the loop and records the loss history.
"""

from __future__ import annotations

import logging
import time
from types import ModuleType

import numpy as np
import scipy.sparse as sp

from . import cpu
from .backend import backend_device
from .errors import GPUOutOfMemory
from .cpu.refine import DEFAULT_TOL, initial_inverse

logger = logging.getLogger(__name__)


def _record(history: list, sweep: int, res: np.ndarray, K: sp.csc_matrix, seconds: float, device: str) -> None:
    n = res.shape[0]
    entry = {
        "sweep": sweep,
        "loss": float(np.dot(res, res) / n),  # ||I - L K||_F^2 / n
        "max_residual": float(res.max()),
        "nnz": int(K.nnz),
        "seconds": seconds,
        "device": device,  # where the sweep producing this K ran (for sweep 0: where K0 was formed)
    }
    history.append(entry)
    logger.info(
        "refine: sweep %d  loss ||I-LK||_F^2/n = %.6g  max column residual = %.4g  nnz(K) = %d  (%.2fs)",
        sweep, entry["loss"], entry["max_residual"], entry["nnz"], seconds,
    )


def refine_inverse(L: sp.csc_matrix, budget: int, sweeps: int, backend: ModuleType, tol: float = DEFAULT_TOL):
    """Approximate inverse of a unit lower triangular L.

    L : (n, n) CSC float32. budget : max nnz(K). sweeps : number of refinement sweeps (0 = K0).
    The backend moves L and K to its device once (``to_device``) and K back at the end.
    Returns (K host CSC float32, history) where history[s] describes K after s sweeps:
    {'sweep', 'loss', 'max_residual', 'nnz', 'seconds', 'device'} ('device': where the sweep that
    produced it ran; after a GPU out-of-memory the loop continues on the CPU with a warning); the
    last entry also has 'residual_device'.
    Device scratch is released when the loop ends.
    """
    def to_cpu(exc, what):
        nonlocal L, K, backend
        logger.warning("refine: %s; %s on the CPU", exc, what)
        L, K = backend.to_host(L), backend.to_host(K)
        backend.release_scratch()
        backend = cpu

    history: list[dict] = []
    seconds, made_on = 0.0, backend_device(backend)
    K = initial_inverse(L)
    try:
        try:
            K, L = backend.to_device(K), backend.to_device(L)
        except GPUOutOfMemory as exc:
            to_cpu(exc, "refining")
            made_on = "cpu"
        for s in range(sweeps):
            t0 = time.perf_counter()
            try:
                K_new, res = backend.refine_sweep(L, K, budget, tol)
            except GPUOutOfMemory as exc:
                to_cpu(exc, "continuing")
                K_new, res = backend.refine_sweep(L, K, budget, tol)
            dt = time.perf_counter() - t0
            _record(history, s, res, K, seconds, made_on)
            K, seconds, made_on = K_new, dt, backend_device(backend)
        try:
            res = backend.column_residual_norms(L, K)
        except GPUOutOfMemory as exc:
            to_cpu(exc, "computing the final residuals")
            res = backend.column_residual_norms(L, K)
        _record(history, sweeps, res, K, seconds, made_on)
        history[-1]["residual_device"] = backend_device(backend)  # where the final residuals were computed
        return backend.to_host(K), history
    finally:
        backend.release_scratch()
