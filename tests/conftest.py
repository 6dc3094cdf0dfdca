import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from sansa_gpu.backend import gpu_status
from sansa_gpu.synthetic import synthetic_interactions

SHARED_DATA = Path(os.environ.get("SANSA_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")).resolve()


def pytest_collection_modifyitems(config, items):
    has_gpu, reason = gpu_status()
    has_data = SHARED_DATA.is_dir()
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason=f"no GPU: {reason}"))
        if "data" in item.keywords and not has_data:
            item.add_marker(pytest.mark.skip(reason=f"{SHARED_DATA} is absent"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return SHARED_DATA


@pytest.fixture(scope="session")
def small_X() -> sp.csr_matrix:
    """400 users x 80 items, binary, every item used."""
    return synthetic_interactions(n_users=400, n_items=80, mean_items_per_user=12, n_communities=4, seed=3)


@pytest.fixture(scope="session")
def medium_X() -> sp.csr_matrix:
    return synthetic_interactions(n_users=3000, n_items=600, mean_items_per_user=20, n_communities=10, seed=5)


def dense_ease_minus_identity(X: sp.csr_matrix, l2: float) -> np.ndarray:
    G = (X.T @ X).toarray().astype(np.float64) + l2 * np.eye(X.shape[1])
    P = np.linalg.inv(G)
    return -P / np.diag(P)[None, :]  # = B - I
