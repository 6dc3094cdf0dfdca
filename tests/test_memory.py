"""The memory estimate: exact structural counts, and peaks within 30% of measured RSS."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sansa_gpu import SANSA
from sansa_gpu.factorize import item_ordering
from sansa_gpu.gram import gram_lower
from sansa_gpu.memory import cholesky_fill

MEASURE = r"""
import ctypes, gc, json, sys, threading, time
from sansa_gpu import SANSA
from sansa_gpu.synthetic import synthetic_interactions
fz, n_items, density = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
X = synthetic_interactions(n_users=4 * n_items, n_items=n_items, mean_items_per_user=25, seed=1)
m = SANSA(l2=10.0, density=density, factorizer=fz, refine_sweeps=2, device="cpu")
m.fit(X, check_memory=False)  # warm-up: every numba specialisation compiled, caches loaded
est = m.estimate_memory(X)
del m
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096
gc.collect()
ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap back to the OS, so the fit's peak is its own
base, peak, done = rss(), [0], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.002)
t = threading.Thread(target=sample)
t.start()
SANSA(l2=10.0, density=density, factorizer=fz, refine_sweeps=2, device="cpu").fit(X, check_memory=False)
done.set()
t.join()
print(json.dumps({"estimate": est["peak"], "measured": peak[0] - base}))
"""


def test_cholesky_fill_matches_cholmod(medium_X):
    import scipy.sparse as sp
    from sksparse import cholmod

    p = item_ordering(medium_X)
    A = gram_lower(medium_X, 1.0, p)
    Xt = sp.csc_matrix(medium_X.T, dtype=np.float64)
    f = cholmod.analyze_AAt(Xt, mode="simplicial", ordering_method="colamd")
    f.cholesky_AAt_inplace(Xt, beta=1.0)
    assert np.array_equal(f.P(), p)
    assert cholesky_fill(A) == f.L().nnz


@pytest.mark.parametrize("factorizer,n_items,density", [("icf", 4000, 0.02), ("icf", 20000, 0.005), ("cholmod", 4000, 0.02)])
def test_estimate_within_30_percent_of_measured_peak(factorizer, n_items, density):
    out = subprocess.run([sys.executable, "-c", MEASURE, factorizer, str(n_items), str(density)],
                         capture_output=True, text=True, check=True, timeout=600)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert 0.7 < r["estimate"] / r["measured"] < 1.3, r


def test_fit_refuses_when_estimate_exceeds_available_memory(small_X, monkeypatch):
    import sansa_gpu.memory as memory

    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 1000)
    with pytest.raises(MemoryError, match=r"needs about .* GB .* only .* GB are available"):
        SANSA(l2=10.0, density=0.1, device="cpu").fit(small_X)
    # the check can be skipped
    SANSA(l2=10.0, density=0.1, device="cpu").fit(small_X, check_memory=False)
