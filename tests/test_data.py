import numpy as np
import pytest
import scipy.sparse as sp

from sansa_gpu.data import (
    load_adjacency_split,
    load_split,
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


def test_load_split_reads_each_layout(tmp_path):
    """Each folder layout of ../shared/data: the published split as is, the unsplit files as a seeded
    per-user holdout; a folder with none of them is a clear error."""
    adj = tmp_path / "adj"
    adj.mkdir()
    (adj / "train.txt").write_text("0 1 2\n1 0\n")
    (adj / "test.txt").write_text("0 3\n1 2 0\n")
    s = load_split(adj)
    assert s.train.shape == (2, 4) and s.train.nnz == 3 and s.test.nnz == 2  # (1, 0) is in train: dropped
    rating = tmp_path / "yelp"
    rating.mkdir()
    (rating / "x.train.rating").write_text("0\t1\t1\r\n0\t2\t1\r\n")
    (rating / "x.val.rating").write_text("1\t2\t1\r\n")
    (rating / "x.test.rating").write_text("1\t3\t1\r\n0\t1\t1\r\n")
    s = load_split(rating)
    assert s.train.shape == (2, 4) and s.train.nnz == 3 and s.test.nnz == 1 and s.test[1, 3] == 1
    counts = tmp_path / "cite"
    counts.mkdir()
    (counts / "users.dat").write_text("\n".join(f"5 {u} {u + 1} {u + 2} {u + 3} {u + 4}" for u in range(30)))
    a, b = load_split(counts, seed=3), load_split(counts, seed=3)
    assert (a.train != b.train).nnz == 0 and a.train.nnz == 30 * 4 and a.test.nnz == 30
    assert (a.train + a.test).nnz == 150 and a.train.multiply(a.test).nnz == 0
    lastfm = tmp_path / "lastfm"
    lastfm.mkdir()
    (lastfm / "user_artists.dat").write_text("userID\tartistID\tweight\r\n2\t5\t130\r\n2\t6\t7\r\n")
    s = load_split(lastfm)
    assert s.train.shape == (3, 7) and set(np.unique((s.train + s.test).data)) == {1.0}
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("nothing")
    with pytest.raises(FileNotFoundError, match="no dataset layout"):
        load_split(empty)
    (empty / "train.txt").write_text("0 1\n")
    with pytest.raises(FileNotFoundError, match="both train.txt and test.txt"):
        load_split(empty)
    assert load_split(adj).kind == load_split(rating).kind == "given" and load_split(counts).kind == "holdout"
    with pytest.raises(ValueError, match="test_fraction"):
        load_split(counts, test_fraction=1.0)


@pytest.mark.data
def test_load_split_on_the_shared_folders(shared_data):
    """Counts from ../shared/data/README.md: yelp's published test split, citeulike-a whole."""
    s = load_split(shared_data / "yelp-diffnet")
    assert s.test.nnz == 18579 and s.train.nnz == 185869 + 3497
    s = load_split(shared_data / "citeulike-a")
    assert s.train.shape == (5551, 16980) and s.train.nnz + s.test.nnz == 204986
    s = load_split(shared_data / "gowalla")
    assert s.train.nnz == 810128 and s.test.nnz == 217242


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
