import numpy as np
import pytest
import scipy.sparse as sp

from sansa_gpu.data import (
    load_adjacency_split,
    random_holdout_split,
    read_counts,
    read_pairs,
    strong_generalization_split,
)
from sansa_gpu.synthetic import synthetic_interactions


def test_adjacency_split(tmp_path):
    (tmp_path / "train.txt").write_text("0 1 2 2\r\n1 0\n2\n")
    (tmp_path / "test.txt").write_text("0 3 1\n1 2\n2 4\n")
    s = load_adjacency_split(tmp_path)
    assert s.train.shape == (3, 5)
    assert s.train.toarray().tolist() == [[0, 1, 1, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
    # (0, 1) is in train too: dropped from test
    assert s.test.toarray().tolist() == [[0, 0, 0, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 1]]
    assert s.eval_users.tolist() == [0, 1, 2]


def test_pairs_and_counts(tmp_path):
    (tmp_path / "p.tsv").write_text("userID\tartistID\tweight\n1\t2\t5\n3\t4\t1\n")
    u, i, v = read_pairs(tmp_path / "p.tsv", skip_header=True)
    assert u.tolist() == [1, 3] and i.tolist() == [2, 4] and v.tolist() == [5, 1]
    (tmp_path / "users.dat").write_text("2 5 7\n1 3")
    u, i = read_counts(tmp_path / "users.dat")
    assert u.tolist() == [0, 0, 1] and i.tolist() == [5, 7, 3]
    (tmp_path / "bad.dat").write_text("3 5 7\n")
    with pytest.raises(ValueError, match="does not match"):
        read_counts(tmp_path / "bad.dat")


def test_strong_generalization_split():
    X = synthetic_interactions(n_users=500, n_items=100, seed=1)
    train, fold, target = strong_generalization_split(X, 100, fold_in=0.8, seed=2)
    assert train.shape == (400, 100) and fold.shape == target.shape == (100, 100)
    assert fold.multiply(target).nnz == 0
    assert fold.nnz + target.nnz == X.nnz - train.nnz
    per_user = np.diff(fold.indptr) / (np.diff(fold.indptr) + np.diff(target.indptr))
    assert 0.7 < per_user.mean() < 0.85
    assert np.all(np.diff(fold.indptr) >= 1)


def test_random_holdout_split():
    X = synthetic_interactions(n_users=300, n_items=80, seed=4)
    s = random_holdout_split(X, 0.2, seed=0)
    assert (s.train + s.test != X).nnz == 0
    assert 0.15 < s.test.nnz / X.nnz < 0.25


def test_synthetic_is_seeded_and_realistic():
    a = synthetic_interactions(n_users=2000, n_items=500, seed=7)
    b = synthetic_interactions(n_users=2000, n_items=500, seed=7)
    assert (a != b).nnz == 0
    pop = np.sort(np.asarray(a.sum(0)).ravel())[::-1]
    assert pop[0] > 10 * np.median(pop)  # heavy head
    act = np.diff(a.indptr)
    assert act.max() > 4 * np.median(act)  # heavy-tailed activity
    assert set(np.unique(a.data)) == {1.0}


@pytest.mark.data
def test_gowalla_statistics(shared_data):
    s = load_adjacency_split(shared_data / "gowalla")
    assert s.train.shape == (29858, 40981)
    assert s.train.nnz == 810128 and s.test.nnz == 217242
