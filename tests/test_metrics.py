import numpy as np
import pytest
import scipy.sparse as sp

from sansa_gpu.metrics import evaluate, ndcg_at_k, recall_at_k, recall_at_k_bars, recall_per_user


def test_hand_computed_values():
    targets = sp.csr_matrix(np.array([[1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0]], dtype=np.float32))
    ids = np.array([[0, 3, 2], [4, 5, -1], [1, 2, 3]])
    # user 0: hits at ranks 0 and 2 of 3 targets; user 1: hit at rank 1 of 1; user 2: no targets (ignored)
    assert recall_at_k(ids, targets, 2) == pytest.approx((1 / 2 + 1 / 1) / 2)
    assert recall_at_k_bars(ids, targets, 2) == pytest.approx((1 / 3 + 1 / 1) / 2)
    assert recall_at_k(ids, targets, 3) == pytest.approx((2 / 3 + 1) / 2)
    # per user: the users with targets only, in row order; their mean is recall_at_k
    np.testing.assert_allclose(recall_per_user(ids, targets, 2), [1 / 2, 1 / 1])
    np.testing.assert_allclose(recall_per_user(ids, targets, 3), [2 / 3, 1])
    with pytest.raises(ValueError, match="no user has any target"):
        recall_per_user(ids[2:], targets[2:], 2)  # only the user without targets
    d = 1 / np.log2(np.arange(2, 5))
    ndcg_u0 = (d[0] + d[2]) / d[:3].sum()
    ndcg_u1 = d[1] / d[0]
    assert ndcg_at_k(ids, targets, 3) == pytest.approx((ndcg_u0 + ndcg_u1) / 2)
    out = evaluate(ids, targets, ks=(1, 3))
    assert set(out) == {"recall@1", "recall_bars@1", "ndcg@1", "recall@3", "recall_bars@3", "ndcg@3"}


def test_bad_shapes():
    targets = sp.csr_matrix(np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError):
        recall_at_k(np.zeros((2, 3), dtype=np.int64), targets, 2)
    with pytest.raises(ValueError, match="exceeds"):
        recall_at_k(np.zeros((3, 2), dtype=np.int64), targets, 5)
