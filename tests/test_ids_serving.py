"""Raw IDs (pandas / pyarrow tables), streaming recommendations and the Parquet / CSV writer."""

import gc
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv  # noqa: F401  (pa.csv)
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from sansa_gpu import SANSA, score_to_parquet
from sansa_gpu.ids import IdMap, encode_interactions

from conftest import require


def table_of(X: sp.csr_matrix, user_names, item_names, kind="pandas"):
    coo = X.tocoo()
    cols = {"user": np.asarray(user_names)[coo.row], "item": np.asarray(item_names)[coo.col]}
    return require("pandas").DataFrame(cols) if kind == "pandas" else pa.table(cols)


@pytest.fixture(scope="module")
def named(small_X):
    """small_X with string item IDs whose sorted order is a shuffle of the columns, int user IDs."""
    rng = np.random.default_rng(0)
    n_users, n_items = small_X.shape
    item_names = np.array([f"sku-{v:05d}" for v in rng.permutation(10 * n_items)[:n_items]])
    user_names = rng.permutation(10 * n_users)[:n_users] + 7
    return small_X, user_names, item_names


def test_encode_numbers_ids_by_sorted_raw_id_and_sums_duplicates(named):
    X, users, items = named
    t = table_of(X, users, items, "arrow")
    t = pa.concat_tables([t, t.slice(0, 5)])  # 5 duplicate rows -> summed weights
    enc = encode_interactions(t, "user", "item")
    assert np.array_equal(enc.items.ids, np.sort(items)) and np.array_equal(enc.users.ids, np.sort(users))
    # same matrix up to the row / column relabelling
    rows = np.searchsorted(enc.users.ids, users)
    cols = np.searchsorted(enc.items.ids, items)
    expect = sp.csr_matrix(X)[np.argsort(rows)][:, np.argsort(cols)]
    diff = enc.X - expect
    assert diff.nnz == 5 and np.all(diff.data == 1.0)


def test_encode_errors_name_the_problem(pd):
    with pytest.raises(KeyError, match="itm"):
        encode_interactions(pd.DataFrame({"user": [1], "item": [2]}), "user", "itm")
    with pytest.raises(ValueError, match="missing"):
        encode_interactions(pa.table({"user": [1, None], "item": [2, 3]}), "user", "item")
    with pytest.raises(TypeError, match="integers or strings"):
        encode_interactions(pa.table({"user": [1.5, 2.0], "item": [2, 3]}), "user", "item")
    with pytest.raises(ValueError, match="no rows"):
        encode_interactions(pa.table({"user": pa.array([], pa.int64()), "item": pa.array([], pa.int64())}), "user", "item")
    with pytest.raises(TypeError, match="numeric"):
        encode_interactions(pa.table({"user": [1], "item": [2], "w": ["x"]}), "user", "item", "w")


def test_fit_from_table_equals_fit_from_matrix_and_returns_raw_ids(named, tmp_path):
    X, users, items = named
    df = table_of(X, users, items)
    m_tab = SANSA(l2=10.0, density=0.1, device="cpu").fit(df, user_col="user", item_col="item")
    enc = encode_interactions(df, "user", "item")
    m_mat = SANSA(l2=10.0, density=0.1, device="cpu").fit(enc.X)
    for A, B in zip(m_tab.weights_, m_mat.weights_):
        assert (A != B).nnz == 0
    out = m_tab.recommend_table(df, k=5, user_col="user", item_col="item").to_pandas()
    ids, scores = m_mat.recommend(enc.X, k=5)
    assert list(out.columns) == ["user_id", "rank", "item_id", "score"]
    first = out[out.user_id == enc.users.ids[0]].sort_values("rank")
    assert list(first.item_id) == list(enc.items.ids[ids[0][ids[0] >= 0]])
    np.testing.assert_array_equal(first.score.to_numpy(), scores[0][ids[0] >= 0])
    # seen items are never recommended, in raw-ID terms
    seen = set(zip(df.user, df.item))
    assert not any((u, i) in seen for u, i in zip(out.user_id, out.item_id))
    # the ID map survives save / load
    m_tab.save(tmp_path / "m.npz")
    back = SANSA.load(tmp_path / "m.npz")
    assert np.array_equal(back.item_ids_.ids, m_tab.item_ids_.ids) and back.item_ids_.kind == "str"
    assert back.recommend_table(df, k=5, user_col="user", item_col="item").equals(
        m_tab.recommend_table(df, k=5, user_col="user", item_col="item"))


def test_unknown_items_are_reported_and_ignored_unknown_users_folded_in(named, pd):
    X, users, items = named
    model = SANSA(l2=10.0, density=0.1, device="cpu").fit(table_of(X, users, items), user_col="user", item_col="item")
    req = pd.DataFrame({"user": ["new-a", "new-a", "new-a", "new-b"],
                        "item": [items[3], "never-seen", items[10], "also-unknown"]})
    with pytest.warns(UserWarning, match="2 interaction.*2 item ID.*unknown"):
        out = model.recommend_table(req, k=4, user_col="user", item_col="item").to_pandas()
    # new-a is scored from its two known items; new-b has no known item and gets no rows
    assert set(out.user_id) == {"new-a"}
    x = sp.csr_matrix(([1.0, 1.0], ([0, 0], np.searchsorted(model.item_ids_.ids, [items[3], items[10]]))), shape=(1, X.shape[1]))
    ids, _ = model.recommend(x, k=4)
    assert list(out.item_id) == list(model.item_ids_.ids[ids[0][ids[0] >= 0]])
    with pytest.raises(TypeError, match="strs"):
        model.recommend_table(pd.DataFrame({"user": [1], "item": [5]}), user_col="user", item_col="item")


def test_matrix_fitted_model_rejects_tables(small_X, pd):
    m = SANSA(l2=10.0, density=0.1, device="cpu").fit(small_X)
    with pytest.raises(ValueError, match="fitted on a matrix"):
        m.recommend_table(pd.DataFrame({"user_id": [1], "item_id": [2]}))


def test_recommend_batches_equal_one_shot(medium_X):
    m = SANSA(l2=20.0, density=0.02, device="cpu").fit(medium_X)
    ids, scores = m.recommend(medium_X, k=7)
    starts = []
    got_ids, got_scores = [], []
    for start, i, s in m.recommend_batches(medium_X, k=7, batch_size=700):
        starts.append(start)
        got_ids.append(i)
        got_scores.append(s)
    assert starts == list(range(0, medium_X.shape[0], 700))
    np.testing.assert_array_equal(np.vstack(got_ids), ids)
    np.testing.assert_array_equal(np.vstack(got_scores), scores)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_score_to_parquet_writes_long_format_atomically(medium_X, tmp_path, fmt):
    m = SANSA(l2=20.0, density=0.02, device="cpu").fit(medium_X)
    X = medium_X[:1000]
    path = tmp_path / f"top.{fmt}"
    summary = score_to_parquet(m, X, path, k=5, batch_size=300, user_ids=np.arange(1000) + 10_000, progress=False)
    t = pq.read_table(path) if fmt == "parquet" else pa.csv.read_csv(path)
    ids, scores = m.recommend(X, k=5)
    valid = ids >= 0
    assert summary["rows"] == t.num_rows == int(valid.sum()) and summary["users"] == 1000
    assert t.column_names == ["user_id", "rank", "item_id", "score"]
    np.testing.assert_array_equal(t.column("user_id").to_numpy(), np.repeat(np.arange(1000) + 10_000, 5)[valid.ravel()])
    np.testing.assert_array_equal(t.column("item_id").to_numpy(), ids[valid])
    np.testing.assert_allclose(t.column("score").to_numpy(), scores[valid], rtol=1e-6)
    assert t.column("rank").to_numpy().max() == 5
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


def test_score_to_parquet_leaves_nothing_on_failure(medium_X, tmp_path):
    m = SANSA(l2=20.0, density=0.02, device="cpu").fit(medium_X)
    path = tmp_path / "top.parquet"
    path.write_bytes(b"previous")
    bad = sp.csr_matrix(np.full((3, medium_X.shape[1] + 1), 1.0, dtype=np.float32))  # wrong width
    with pytest.raises(ValueError, match="item columns"):
        score_to_parquet(m, bad, path, k=5, progress=False)
    assert path.read_bytes() == b"previous" and sorted(os.listdir(tmp_path)) == ["top.parquet"]
    with pytest.raises(ValueError, match="output format"):
        score_to_parquet(m, medium_X[:3], tmp_path / "top.txt", progress=False)


def test_idmap_lookup_and_padding():
    m = IdMap.from_values([30, 10, 20, 10])
    assert m.ids.tolist() == [10, 20, 30] and m.kind == "int"
    assert m.lookup([20, 99, 10]).tolist() == [1, -1, 0]
    assert m.to_raw(np.array([[2, -1]])).tolist() == [[30, -1]]


@pytest.mark.parametrize("name", ["top.parquet", "top.csv"])
def test_score_to_parquet_failure_after_two_blocks_keeps_previous_file(medium_X, tmp_path, monkeypatch, name):
    """recommend raising on the third block: the old output stays byte-identical, no temporary file remains,
    and the half-used writer is closed then, not later by the garbage collector on a closed file."""
    m = SANSA(l2=20.0, density=0.02, device="cpu").fit(medium_X)
    path = tmp_path / name
    score_to_parquet(m, medium_X[:50], path, k=3, progress=False)  # a previous, complete output
    previous = path.read_bytes()
    calls = []
    recommend = m._recommend_rows  # what recommend_batches scores each block with

    def failing_recommend(X, *args, **kwargs):
        calls.append(X.shape[0])
        if len(calls) == 3:
            raise RuntimeError("scoring failed on block 3")
        return recommend(X, *args, **kwargs)

    m._recommend_rows = failing_recommend
    unraisable = []  # "Exception ignored in ...__del__" (stderr noise, e.g. under the CLI's one-line errors)
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with pytest.raises(RuntimeError, match="block 3"):
        score_to_parquet(m, medium_X[:1000], path, k=5, batch_size=300, progress=False)
    gc.collect()
    assert [f"{u.exc_type.__name__}: {u.exc_value} in {u.object!r}" for u in unraisable] == []
    assert calls == [300, 300, 300]  # two blocks were written before the failure
    assert path.read_bytes() == previous
    assert sorted(os.listdir(tmp_path)) == [name]
