"""Calling numba's parallel kernels from several Python threads at once.

numba runs ``prange`` loops on one of three threading layers. 'tbb' and 'omp' accept parallel
regions launched concurrently from different threads; 'workqueue' (the fallback when neither TBB
nor an OpenMP runtime is found) does not -- it aborts the whole process ("Terminating: Nested
parallel kernel launch detected") when two threads enter parallel code together. A threaded
server or a Dask worker with several threads calling ``recommend`` would then die.

:func:`parallel_call` wraps each launch of a parallel scoring kernel: on a safe layer it costs
nothing; on 'workqueue' the launches take turns (one process-wide lock: the layer, not a model,
is what is shared) and the first time a thread has to wait, a warning says how to get a safe
layer (``pip install tbb``, or ``NUMBA_THREADING_LAYER=omp`` where an OpenMP runtime exists).
"""

from __future__ import annotations

import contextlib
import threading
import warnings

import numba
import numpy as np

#: Layers that accept concurrent parallel regions from different threads (numba's documentation,
#: "Selecting a threading layer": tbb and omp are thread-safe, workqueue is not).
THREAD_SAFE_LAYERS = ("tbb", "omp")

_turns = threading.Lock()  # serialises parallel launches on an unsafe layer
_probe_lock = threading.Lock()
_layer: list = []  # the layer numba chose, once known (a fact of the process, not of a model)
_warned: list = []


@numba.njit(parallel=True, cache=True)
def _probe(a):
    total = 0.0
    for i in numba.prange(a.shape[0]):
        total += a[i]
    return total


def threading_layer() -> str:
    """The threading layer numba uses in this process (running a tiny parallel loop, once, to make
    numba choose it if no parallel code has run yet)."""
    if not _layer:
        with _probe_lock:  # the first parallel launch itself must not be concurrent
            if not _layer:
                try:
                    name = numba.threading_layer()
                except ValueError:  # no parallel code has run yet
                    _probe(np.ones(4))
                    name = numba.threading_layer()
                _layer.append(name)
    return _layer[0]


@contextlib.contextmanager
def parallel_call():
    """Context for one launch of a parallel numba kernel that may run concurrently with others."""
    if threading_layer() in THREAD_SAFE_LAYERS:
        yield
        return
    if not _turns.acquire(blocking=False):
        if not _warned:
            _warned.append(True)
            warnings.warn(f"numba's {threading_layer()!r} threading layer cannot run parallel kernels from several "
                          f"threads at once: sansa_gpu's scoring calls take turns. Install TBB (pip install tbb) or set "
                          f"NUMBA_THREADING_LAYER=omp for concurrent scoring", RuntimeWarning, stacklevel=3)
        _turns.acquire()
    try:
        yield
    finally:
        _turns.release()
