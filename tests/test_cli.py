"""The sansa-gpu command line: fit -> recommend -> evaluate on files, and one-line errors."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from sansa_gpu import SANSA
from sansa_gpu.cli import main
from sansa_gpu.data import load_adjacency_split, random_holdout_split
from sansa_gpu.metrics import evaluate


def write_pairs(path, X, user_names, item_names):
    coo = X.tocoo()
    t = pa.table({"uid": np.asarray(user_names)[coo.row], "iid": np.asarray(item_names)[coo.col],
                  "w": np.ones(coo.nnz, dtype=np.float32)})
    if str(path).endswith(".parquet"):
        pq.write_table(t, path)
    else:
        pacsv.write_csv(t, path)


@pytest.fixture()
def files(medium_X, tmp_path):
    split = random_holdout_split(medium_X, 0.2, seed=2)
    users = np.array([f"u{i}" for i in range(medium_X.shape[0])])
    items = np.arange(medium_X.shape[1]) * 3 + 1000
    write_pairs(tmp_path / "train.csv", split.train, users, items)
    write_pairs(tmp_path / "test.parquet", split.test, users, items)
    return tmp_path, split


def test_fit_recommend_evaluate_round_trip(files, capsys):
    d, split = files
    cols = ["--user-col", "uid", "--item-col", "iid"]
    assert main(["fit", str(d / "train.csv"), "-o", str(d / "m.npz"), "--density", "0.02", "--device", "cpu", "-q", *cols]) == 0
    fit = json.loads(capsys.readouterr().out)
    assert fit["n_items"] == split.train.shape[1] and fit["nnz_X"] == split.train.nnz

    assert main(["recommend", str(d / "m.npz"), str(d / "train.csv"), "-o", str(d / "top.parquet"), "--k", "10",
                 "--batch-size", "500", "-q", *cols]) == 0
    rec = json.loads(capsys.readouterr().out)
    top = pq.read_table(d / "top.parquet").to_pandas()
    assert rec["rows"] == len(top) and rec["users"] == split.train.getnnz(axis=1).astype(bool).sum()
    assert top["rank"].max() == 10 and set(top["item_id"]) <= set(np.arange(split.train.shape[1]) * 3 + 1000)

    assert main(["evaluate", str(d / "m.npz"), "--train", str(d / "train.csv"), "--test", str(d / "test.parquet"),
                 "--k", "10", "20", "-o", str(d / "metrics.json"), "-q", *cols]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert json.loads((d / "metrics.json").read_text()) == metrics
    # the same numbers through the Python API on the matrices (item IDs are increasing in column order)
    model = SANSA.load(d / "m.npz")
    eval_users = (split.test.getnnz(axis=1) > 0).nonzero()[0]
    ids, _ = model.recommend(split.train[eval_users], k=20)
    direct = evaluate(ids, split.test[eval_users], ks=(10, 20))
    assert metrics["eval_users"] == eval_users.size
    for key, value in direct.items():
        assert metrics[key] == pytest.approx(value, abs=1e-6)


def test_evaluate_adjacency_split(small_X, tmp_path, capsys):
    split = random_holdout_split(small_X, 0.2, seed=0)
    d = tmp_path / "split"
    d.mkdir()
    for name, M in (("train.txt", split.train), ("test.txt", split.test)):
        with open(d / name, "w") as f:
            for u in range(M.shape[0]):
                row = M[u].indices
                if row.size:
                    f.write(" ".join(map(str, [u, *row])) + "\n")
    loaded = load_adjacency_split(d)
    SANSA(l2=10.0, density=0.1, device="cpu").fit(loaded.train).save(tmp_path / "m.npz")
    assert main(["evaluate", str(tmp_path / "m.npz"), "--split", str(d), "-q"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert 0.0 < out["recall@20"] <= 1.0 and out["eval_users"] == (loaded.test.getnnz(axis=1) > 0).sum()


def test_errors_are_one_line_with_exit_code_2(files, capsys):
    d, _ = files
    assert main(["fit", str(d / "train.csv"), "-o", str(d / "m.npz"), "-q", "--user-col", "nope"]) == 2
    err = capsys.readouterr().err
    assert "error" in err and "nope" in err and "uid" in err and err.count("\n") == 1
    assert main(["fit", str(d / "missing.csv"), "-o", str(d / "m.npz"), "-q"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["recommend", str(d / "train.csv"), str(d / "train.csv"), "-o", str(d / "x.parquet"), "-q"]) == 2
    assert "not a readable sansa_gpu model file" in capsys.readouterr().err
    assert not (d / "m.npz").exists() and not (d / "x.parquet").exists()
