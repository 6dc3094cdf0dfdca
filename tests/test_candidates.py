"""Candidate control: similar_items, allow-lists (items=), block-lists (filter_items=) and
filter_already_liked_items, on every plan and entry point, with raw IDs where the model has them."""


import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sansa_gpu import EASE, SANSA, score_to_parquet
from sansa_gpu.cpu.inference import recommend_sparse

PLANS = ("factored", "product", "sparse_product")


@pytest.fixture(scope="module")
def model(small_X):
    return SANSA(l2=5.0, density=0.2, refine_sweeps=1, factorizer="icf", device="cpu").fit(small_X)


def _ranking(m, X, plan, exclude_seen=True):
    """The full ranking of every row (k = catalogue): the reference the filtered calls must cut."""
    return recommend_sparse(X, *m.weights_, X.shape[1], plan, exclude_seen=exclude_seen)


def _cut(ids, scores, keep, k):
    """Row-wise: the entries of a full ranking whose item ``keep`` allows, first k, padded."""
    out_i = np.full((ids.shape[0], k), -1, dtype=np.int64)
    out_s = np.full((ids.shape[0], k), -np.inf, dtype=np.float32)
    for u in range(ids.shape[0]):
        sel = [(i, s) for i, s in zip(ids[u], scores[u]) if i >= 0 and keep(u, i)][:k]
        for a, (i, s) in enumerate(sel):
            out_i[u, a], out_s[u, a] = i, s
    return out_i, out_s


def test_similar_items_are_the_top_of_the_rows_of_B(model, small_X):
    Wt, Z = model.weights_
    B = (Wt.astype(np.float64) @ Z.astype(np.float64)).toarray()
    reach = (abs(Wt).astype(bool).astype(np.float64) @ abs(Z).astype(bool).astype(np.float64)).toarray() > 0
    items = np.array([0, 7, 42, 79, 7])
    k = 10
    for plan in PLANS:
        ids, scores = model.similar_items(items, k) if plan == "factored" else model._recommend_rows(
            sp.csr_matrix((np.ones(5, np.float32), items, np.arange(6)), shape=(5, 80)), k, None, True, plan)
        for r, i in enumerate(items):
            row = np.where(reach[i], B[i], -np.inf)
            row[i] = -np.inf  # the item itself is excluded
            order = np.lexsort((np.arange(80), -row))[:k]
            valid = np.isfinite(row[order])
            np.testing.assert_array_equal(ids[r][valid], order[valid])
            np.testing.assert_allclose(scores[r][valid], row[order][valid], rtol=1e-5, atol=1e-7)
            assert i not in ids[r]
    np.testing.assert_array_equal(ids[1], ids[4])  # repeated queries: the same row


def test_similar_items_table_uses_raw_ids_and_ease_agrees_with_its_B(small_X):
    rows, cols = small_X.nonzero()
    table = pd.DataFrame({"user_id": rows * 3 + 1, "item_id": [f"i{c:03d}" for c in cols]})
    m = SANSA(l2=5.0, density=0.2, refine_sweeps=1, factorizer="icf", device="cpu").fit(table)
    t = m.similar_items_table(["i005", "i010"], k=4, filter_items=["i000"])
    assert t.column_names == ["item_id", "rank", "similar_item_id", "score"]
    idx = m.item_ids_.lookup(np.array(["i005", "i010"]))
    ids, scores = m.similar_items(idx, 4, filter_items=m.item_ids_.lookup(np.array(["i000"])))
    assert t.column("similar_item_id").to_pylist() == m.item_ids_.ids[ids[ids >= 0]].tolist()
    assert t.column("item_id").to_pylist() == np.repeat(["i005", "i010"], (ids >= 0).sum(axis=1)).tolist()
    with pytest.raises(ValueError, match="'nope' is unknown"):
        m.similar_items_table(["nope"], k=3)
    e = EASE(l2=50.0).fit(small_X)
    ids, scores = e.similar_items([3, 9], k=6)
    for r, i in enumerate([3, 9]):
        row = e.B_[i].astype(np.float64).copy()
        row[i] = -np.inf
        order = np.lexsort((np.arange(80), -row))[:6]
        np.testing.assert_array_equal(ids[r], order)
        np.testing.assert_array_equal(scores[r], e.B_[i][order])


@pytest.mark.parametrize("plan", PLANS)
def test_allow_and_block_lists_cut_the_ranking_at_the_k_boundary(model, small_X, plan):
    X = small_X[:60]
    full_i, full_s = _ranking(model, X, plan)
    k = 8
    # block exactly the k-th item of every row that has one: the (k+1)-th moves up
    kth = {int(full_i[u, k - 1]) for u in range(X.shape[0]) if full_i[u, k - 1] >= 0}
    block = np.array(sorted(kth))
    ids, scores = model.recommend(X, k, filter_items=block, plan=plan)
    want = _cut(full_i, full_s, lambda u, i: i not in kth, k)
    np.testing.assert_array_equal(ids, want[0])
    np.testing.assert_array_equal(scores, want[1])
    # allow exactly the first k of user 0: that user gets exactly them, in the same order
    allow = full_i[0, :k]
    ids, scores = model.recommend(X, k, items=allow, plan=plan)
    np.testing.assert_array_equal(ids[0], full_i[0, :k])
    want = _cut(full_i, full_s, lambda u, i: i in set(allow.tolist()), k)
    np.testing.assert_array_equal(ids, want[0])
    np.testing.assert_array_equal(scores, want[1])
    # an allow-list shorter than k, with a blocked item inside: padding
    allow = np.array([1, 2, 3, 50])
    ids, scores = model.recommend(X, k, items=allow, filter_items=[2], plan=plan)
    assert np.all(ids[:, 3:] == -1) and np.all(np.isneginf(scores[:, 3:]))
    want = _cut(full_i, full_s, lambda u, i: i in (1, 3, 50), k)
    np.testing.assert_array_equal(ids, want[0])
    # everything blocked: all padding
    ids, scores = model.recommend(X, k, filter_items=np.arange(80), plan=plan)
    assert np.all(ids == -1) and np.all(np.isneginf(scores))


@pytest.mark.parametrize("plan", PLANS)
def test_own_items_are_candidates_with_the_scores_of_b_plus_identity(model, small_X, plan):
    X = small_X[:40].copy()
    X.data = X.data * np.linspace(0.5, 2.0, X.nnz, dtype=np.float32)
    Wt, Z = model.weights_
    S = (X.astype(np.float64) @ (Wt.astype(np.float64) @ Z.astype(np.float64))).toarray() + X.toarray()
    ids, scores = model.recommend(X, 80, filter_already_liked_items=False, plan=plan)
    own = 0
    for u in range(X.shape[0]):
        valid = ids[u] >= 0
        np.testing.assert_allclose(scores[u][valid], S[u, ids[u][valid]], rtol=1e-4, atol=1e-5)
        own += np.isin(ids[u][valid], X[u].indices).sum()
    assert own > 0.5 * X.nnz  # own items are returned (the diagonal of Wt Z reaches them)
    seen_i, _ = model.recommend(X, 80, plan=plan)
    for u in range(X.shape[0]):  # without own items: the same ranking, own items removed
        rest = [i for i in ids[u] if i >= 0 and i not in set(X[u].indices.tolist())]
        assert seen_i[u][seen_i[u] >= 0].tolist() == rest


def test_ease_filters_match_the_dense_ranking(small_X):
    e = EASE(l2=50.0).fit(small_X)
    X = small_X[:30]
    full_i, full_s = e.recommend(X, 80, filter_already_liked_items=False)
    S = X @ e.B_
    np.testing.assert_allclose(full_s, np.take_along_axis(np.asarray(S), full_i, axis=1), rtol=1e-5)
    ids, scores = e.recommend(X, 5, items=np.arange(0, 80, 2), filter_items=[4, 6])
    for u in range(X.shape[0]):
        seen = set(X[u].indices.tolist())
        want = [i for i in full_i[u] if i % 2 == 0 and i not in (4, 6) and i not in seen][:5]
        assert ids[u].tolist() == want


def test_bad_lists_are_refused_with_the_reason(model, small_X):
    with pytest.raises(ValueError, match="item index 80, outside the model's 0..79"):
        model.recommend(small_X[:2], 3, items=[1, 80])
    with pytest.raises(ValueError, match="item index -1"):
        model.recommend(small_X[:2], 3, filter_items=[-1])
    with pytest.raises(TypeError, match="integer item indices"):
        model.recommend(small_X[:2], 3, filter_items=np.array([1.5]))
    with pytest.raises(ValueError, match="1-D"):
        model.similar_items([[1, 2]], 3)
    with pytest.raises(ValueError, match="fitted on a matrix"):
        model.similar_items_table([1], 3)


def test_table_entry_points_take_raw_ids(small_X, tmp_path):
    rows, cols = small_X.nonzero()
    table = pd.DataFrame({"user_id": rows, "item_id": cols * 10 + 7})
    m = SANSA(l2=5.0, density=0.2, refine_sweeps=1, factorizer="icf", device="cpu").fit(table)
    allow = np.arange(0, 80, 3) * 10 + 7
    with pytest.warns(UserWarning, match="1 item ID\\(s\\) unknown"):
        t = m.recommend_table(table, k=5, items=np.append(allow, 99999), filter_items=[7])
    got = set(t.column("item_id").to_pylist())
    assert got <= set(allow.tolist()) - {7} and got
    # the same through score_to_parquet, and a matrix request with item indices
    out = score_to_parquet(m, table, tmp_path / "r.parquet", k=5, items=allow, filter_items=[7], progress=False)
    import pyarrow.parquet as pq

    written = pq.read_table(out["path"])
    assert written.column("item_id").to_pylist() == t.column("item_id").to_pylist()
    ids, _ = m.recommend(small_X, 5, items=np.arange(0, 80, 3), filter_items=[0])
    assert m.item_ids_.ids[ids[ids >= 0]].tolist() == t.column("item_id").to_pylist()


def test_distributed_partition_applies_the_lists(small_X, tmp_path):
    from sansa_gpu.distributed import model_fingerprint, score_partition

    rows, cols = small_X.nonzero()
    table = pd.DataFrame({"user_id": rows, "item_id": cols + 1000})
    m = SANSA(l2=5.0, density=0.2, refine_sweeps=1, factorizer="icf", device="cpu").fit(table)
    m.save(tmp_path / "m.npz")
    fp = model_fingerprint(tmp_path / "m.npz")
    res = score_partition(table, 0, str(tmp_path), fp, 4, "user_id", "item_id", None, "int", device="cpu",
                          items=np.arange(1000, 1080, 2), filter_items=np.array([1000, 5]))
    import pyarrow.parquet as pq

    got = pq.read_table(tmp_path / "part.00000.parquet")
    want = m.recommend_table(table, k=4, items=np.arange(1000, 1080, 2), filter_items=[1000])
    assert res["rows"] == want.num_rows
    assert got.column("item_id").to_pylist() == want.column("item_id").to_pylist()


def test_cli_recommend_with_item_files(small_X, tmp_path):
    from sansa_gpu.cli import main

    rows, cols = small_X.nonzero()
    pd.DataFrame({"user_id": rows, "item_id": cols}).to_csv(tmp_path / "in.csv", index=False)
    assert main(["fit", str(tmp_path / "in.csv"), "-o", str(tmp_path / "m.npz"), "--density", "0.2",
                 "--device", "cpu", "-q"]) == 0
    (tmp_path / "allow.txt").write_text("# allowed\n" + "\n".join(str(i) for i in range(0, 80, 4)) + "\n\n")
    (tmp_path / "block.txt").write_text("0\n4\n")
    assert main(["recommend", str(tmp_path / "m.npz"), str(tmp_path / "in.csv"), "-o", str(tmp_path / "r.csv"),
                 "--k", "3", "--items", str(tmp_path / "allow.txt"), "--exclude-items", str(tmp_path / "block.txt"),
                 "-q"]) == 0
    r = pd.read_csv(tmp_path / "r.csv")
    assert len(r) and set(r["item_id"]) <= set(range(8, 80, 4))
    (tmp_path / "bad.txt").write_text("3\nabc\n")
    code = main(["recommend", str(tmp_path / "m.npz"), str(tmp_path / "in.csv"), "-o", str(tmp_path / "r2.csv"),
                 "--items", str(tmp_path / "bad.txt"), "-q"])
    assert code != 0 and not (tmp_path / "r2.csv").exists()


@pytest.mark.parametrize("content, message", [("", "holds no item IDs"), ("# none\n\n", "holds no item IDs"),
                                              ("99999999999999999999\n", "not an integer item ID of 64 bits")])
def test_cli_refuses_empty_or_unreadable_item_files(small_X, tmp_path, capsys, content, message):
    from sansa_gpu.cli import main

    rows, cols = small_X.nonzero()
    pd.DataFrame({"user_id": rows, "item_id": cols}).to_csv(tmp_path / "in.csv", index=False)
    SANSA(l2=5.0, density=0.2, refine_sweeps=1, factorizer="icf", device="cpu").fit(
        pd.DataFrame({"user_id": rows, "item_id": cols})).save(tmp_path / "m.npz")
    (tmp_path / "list.txt").write_text(content)
    code = main(["recommend", str(tmp_path / "m.npz"), str(tmp_path / "in.csv"), "-o", str(tmp_path / "r.csv"),
                 "--exclude-items", str(tmp_path / "list.txt"), "-q"])
    assert code == 2 and message in capsys.readouterr().err and not (tmp_path / "r.csv").exists()
