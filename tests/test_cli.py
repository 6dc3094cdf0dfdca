"""The sansa-gpu command line: fit -> recommend -> evaluate on files, and one-line errors."""

import json
import logging
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

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
    # the summary says what the fit used: the density given, the other defaults resolved from the data
    assert fit["density"] == 0.02 and fit["l2"] > 0 and fit["refine_sweeps"] >= 0 and fit["min_cooccurrence"] >= 0
    assert fit["factorizer"] in ("icf", "cholmod")

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


def test_evaluate_split_of_an_unsplit_folder(small_X, tmp_path, capsys, caplog):
    """--split on a count-format folder (citeulike's users.dat): the seeded 80/20 holdout of load_split,
    the same numbers as evaluating that split by hand."""
    from sansa_gpu.data import load_split
    from sansa_gpu.metrics import evaluate

    d = tmp_path / "counts"
    d.mkdir()
    X = sp.csr_matrix(small_X)
    (d / "users.dat").write_text("\n".join(" ".join(map(str, [len(X[u].indices), *X[u].indices]))
                                           for u in range(X.shape[0])))
    split = load_split(d)
    model = SANSA(l2=10.0, density=0.1, device="cpu").fit(split.train)
    model.save(tmp_path / "m.npz")
    with caplog.at_level(logging.WARNING, logger="sansa_gpu.cli"):
        assert main(["evaluate", str(tmp_path / "m.npz"), "--split", str(d), "-q"]) == 0
    assert "no published split" in caplog.text  # a model fitted on the whole file would score leaked pairs
    out = json.loads(capsys.readouterr().out)
    users = split.eval_users
    ids, _ = model.recommend(split.train[users], k=20)
    assert out["eval_users"] == users.size and out["recall@20"] == pytest.approx(
        evaluate(ids, split.test[users], ks=(20,))["recall@20"], abs=1e-6)


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


def error_line(capsys, cmd: str) -> str:
    """The captured stderr, checked to be the one line ``sansa-gpu <cmd>: error: ...``."""
    err = capsys.readouterr().err
    assert err.startswith(f"sansa-gpu {cmd}: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    return err


@pytest.fixture()
def small_files(small_X, tmp_path):
    """A raw-ID interaction file of small_X, a model fitted on it, and a folder ``out`` to write in."""
    items = np.arange(small_X.shape[1]) * 3 + 1000
    write_pairs(tmp_path / "train.csv", small_X, [f"u{i}" for i in range(small_X.shape[0])], items)
    table = pacsv.read_csv(tmp_path / "train.csv")
    SANSA(l2=10.0, density=0.1, device="cpu").fit(table, user_col="uid", item_col="iid").save(tmp_path / "m.npz")
    (tmp_path / "out").mkdir()
    return tmp_path


def command(cmd: str, d, output: str) -> list[str]:
    """argv of ``cmd`` on the small_files folder ``d``, writing ``output``."""
    cols = ["--user-col", "uid", "--item-col", "iid", "-q"]
    if cmd == "fit":
        return ["fit", str(d / "train.csv"), "-o", output, "--density", "0.1", "--device", "cpu", *cols]
    if cmd == "recommend":
        return ["recommend", str(d / "m.npz"), str(d / "train.csv"), "-o", output, "--k", "5", *cols]
    return ["evaluate", str(d / "m.npz"), "--train", str(d / "train.csv"), "--test", str(d / "train.csv"),
            "-o", output, *cols]


@pytest.mark.parametrize("cmd", ["fit", "recommend", "evaluate"])
def test_device_gpu_without_a_gpu_is_a_one_line_error(small_files, capsys, monkeypatch, cmd):
    import sansa_gpu.backend as backend

    monkeypatch.setattr(backend, "gpu_status", lambda: (False, "no CUDA device answers (test)"))
    out = small_files / "out" / ("m.npz" if cmd == "fit" else "x.parquet" if cmd == "recommend" else "x.json")
    assert main([*command(cmd, small_files, str(out)), "--device", "gpu"]) == 2
    err = error_line(capsys, cmd)
    assert "device='gpu'" in err and "no GPU is usable" in err and "no CUDA device answers (test)" in err
    assert list((small_files / "out").iterdir()) == []


UNWRITABLE = {  # how the output is unwritable -> words the error must contain
    "missing folder": "does not exist",
    "folder is a file": "is not a folder",
    "output is a folder": "is a folder",
    "read-only folder": "Permission denied",
    "disk full": "No space left on device",
}


@pytest.mark.parametrize("how", list(UNWRITABLE))
@pytest.mark.parametrize("cmd", ["fit", "recommend", "evaluate"])
def test_unwritable_output_is_a_one_line_error(small_files, capsys, monkeypatch, cmd, how):
    import errno
    import tempfile

    d, out = small_files, small_files / "out"
    name = {"fit": "m.npz", "recommend": "x.parquet", "evaluate": "x.json"}[cmd]
    target = {"missing folder": out / "nope" / name, "folder is a file": d / "train.csv" / name,
              "output is a folder": out}.get(how, out / name)
    if how == "read-only folder":  # what the OS answers a user without write access (root ignores chmod)
        real_mkstemp = tempfile.mkstemp

        def mkstemp(*args, dir=None, **kwargs):
            if os.path.abspath(dir) == str(out):
                raise PermissionError(errno.EACCES, "Permission denied", os.path.join(dir, ".tmp-x"))
            return real_mkstemp(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    if how == "disk full":
        def fsync(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "fsync", fsync)
    before = sorted(p.name for p in d.rglob("*"))
    assert main(command(cmd, d, str(target))) == 2
    err = error_line(capsys, cmd)
    assert UNWRITABLE[how] in err and (str(target) in err or str(target.parent) in err), err
    assert sorted(p.name for p in d.rglob("*")) == before  # nothing written, no temporary file left


@pytest.mark.parametrize("argv", [["fit"], ["recommend", "m.npz", "in.csv", "-o", "x.parquet", "--k", "ten"],
                                  ["evaluate", "m.npz", "--device", "tpu"], ["fit", "a.csv", "-o", "m.npz", "--bogus"]])
def test_usage_errors_are_one_line_with_exit_code_2(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    error_line(capsys, argv[0])


def write_adjacency(path, M, item_names):
    with open(path, "w") as f:
        for u in range(M.shape[0]):
            if M[u].nnz:
                f.write(" ".join(map(str, [u, *item_names[M[u].indices]])) + "\n")


def test_evaluate_split_maps_raw_item_ids_of_a_table_fitted_model(small_X, tmp_path, capsys):
    """A model fitted on raw IDs: the split's item ids are raw IDs, mapped through item_ids_."""
    split = random_holdout_split(small_X, 0.2, seed=0)
    names = np.random.default_rng(1).permutation(5 * small_X.shape[1])[:small_X.shape[1]] + 3  # raw ids, shuffled
    d = tmp_path / "split"
    d.mkdir()
    write_adjacency(d / "train.txt", split.train, names)
    write_adjacency(d / "test.txt", split.test, names)
    coo = split.train.tocoo()
    table = pa.table({"user_id": coo.row.astype(np.int64), "item_id": names[coo.col].astype(np.int64)})
    model = SANSA(l2=10.0, density=0.1, device="cpu").fit(table)
    model.save(tmp_path / "m.npz")
    assert main(["evaluate", str(tmp_path / "m.npz"), "--split", str(d), "--k", "5", "20", "-q"]) == 0
    out = json.loads(capsys.readouterr().out)
    # by hand: raw id -> model column through a (raw ids x model items) 0/1 matrix
    raw = load_adjacency_split(d)
    P = sp.csr_matrix((np.ones(len(names)), (model.item_ids_.ids, np.arange(len(names)))),
                      shape=(raw.train.shape[1], len(names)))
    train, test = (raw.train @ P).tocsr(), (raw.test @ P).tocsr()
    users = (test.getnnz(axis=1) > 0).nonzero()[0]
    ids, _ = model.recommend(train[users], k=20)
    direct = evaluate(ids, test[users], ks=(5, 20))
    assert out["eval_users"] == users.size and direct["recall@20"] > 0.2
    for key, value in direct.items():
        assert out[key] == pytest.approx(value, abs=1e-6)


def test_evaluate_split_refuses_a_model_with_string_item_ids(small_X, tmp_path, capsys):
    coo = small_X.tocoo()
    table = pa.table({"user_id": coo.row.astype(np.int64), "item_id": [f"sku-{j}" for j in coo.col]})
    SANSA(l2=10.0, density=0.1, device="cpu").fit(table).save(tmp_path / "m.npz")
    split = random_holdout_split(small_X, 0.2, seed=0)
    d = tmp_path / "split"
    d.mkdir()
    write_adjacency(d / "train.txt", split.train, np.arange(small_X.shape[1]))
    write_adjacency(d / "test.txt", split.test, np.arange(small_X.shape[1]))
    assert main(["evaluate", str(tmp_path / "m.npz"), "--split", str(d), "-q"]) == 2
    err = error_line(capsys, "evaluate")
    assert "strings" in err and "integer" in err and str(d) in err
