"""Distributed batch scoring (sansa_gpu.distributed) on a 2-process LocalCluster: the same top-k as
single-process score_to_parquet, nothing lost or doubled when a worker dies, clean failures."""

import json
import os

import numpy as np
import pytest

from conftest import require

# skipped without dask / pandas, failed under CI=true (the dev extra installs them)
require("dask.dataframe")
distributed = require("distributed")
pd = require("pandas")
import pyarrow.parquet as pq  # noqa: E402

from sansa_gpu import SANSA, score_to_parquet  # noqa: E402
from sansa_gpu import distributed as sd  # noqa: E402
from sansa_gpu.cli import main  # noqa: E402
from sansa_gpu.synthetic import synthetic_interactions  # noqa: E402
from sansa_gpu._testing.dask_faults import KillOnce  # noqa: E402

K = 10
N_FILES = 4


@pytest.fixture(scope="module")
def client():
    # restored_environ: the nannies leave MALLOC_TRIM_THRESHOLD_, OMP_NUM_THREADS=1, ... in this process,
    # which would change the memory measurements of tests/test_memory.py's subprocesses
    with sd.restored_environ(), distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A raw-ID table (users and items renumbered), a model fitted on it, the table as a Parquet
    folder of N_FILES files that each hold rows of (almost) every user, and the single-process result."""
    root = tmp_path_factory.mktemp("dist")
    X = synthetic_interactions(n_users=600, n_items=300, mean_items_per_user=12, seed=3).tocoo()
    df = pd.DataFrame({"user": X.row.astype(np.int64) * 7 + 1000, "item": X.col.astype(np.int64) * 13 + 5})
    df = df.sample(frac=1.0, random_state=0).reset_index(drop=True)
    model = SANSA(l2=20.0, density=0.05, factorizer="icf", device="cpu").fit(df, user_col="user", item_col="item")
    model_path = str(root / "model.npz")
    model.save(model_path)
    folder = root / "input"
    folder.mkdir()
    for j in range(N_FILES):
        df.iloc[j::N_FILES].to_parquet(folder / f"part{j}.parquet", index=False)
    ref_path = str(root / "ref.parquet")
    score_to_parquet(model, df, ref_path, k=K, user_col="user", item_col="item", progress=False)
    return {"root": root, "df": df, "model": model, "model_path": model_path, "input": str(folder),
            "ref": _sorted(pq.read_table(ref_path).to_pandas())}


def _sorted(frame):
    return frame.sort_values(["user_id", "rank"]).reset_index(drop=True)


def _read_result(folder):
    files = sorted(f for f in os.listdir(folder) if f.endswith(".parquet"))
    frames = [pq.read_table(os.path.join(folder, f)).to_pandas() for f in files]
    users = [set(f["user_id"]) for f in frames]
    assert sum(len(u) for u in users) == len(set().union(*users)), "a user appears in more than one partition"
    for f in frames:  # within a partition: sorted by user, then rank
        assert f.equals(f.sort_values(["user_id", "rank"], kind="stable").reset_index(drop=True))
    return _sorted(pd.concat(frames, ignore_index=True))


def _leftovers(parent):
    return [n for n in os.listdir(parent) if n.startswith((".tmp-", ".old-"))]


def test_matches_single_process(client, data, tmp_path):
    # users are spread over every input file
    spread = pd.read_parquet(os.path.join(data["input"], "part0.parquet"))["user"].nunique()
    assert spread > 300
    out = tmp_path / "top"
    summary = sd.score_partitioned(data["model_path"], data["input"], out, k=K, user_col="user", item_col="item",
                                   client=client)
    got = _read_result(out)
    pd.testing.assert_frame_equal(got, data["ref"])
    assert summary["rows"] == len(data["ref"]) and summary["users"] == data["df"]["user"].nunique()
    assert summary["partitions"] == N_FILES
    manifest = json.loads((out / sd.MANIFEST).read_text())
    assert manifest["rows"] == summary["rows"] and len(manifest["files"]) == N_FILES
    assert pq.read_table(str(out)).schema == pq.read_schema(next(iter(sorted(out.glob("*.parquet")))))
    assert _leftovers(tmp_path) == []
    # each worker process loaded the model once and kept it
    infos = client.run(sd.cache_info)
    assert all(len(v) <= 1 for v in infos.values()) and any(len(v) == 1 for v in infos.values())

    # re-running replaces the earlier result with the same rows
    again = sd.score_partitioned(data["model_path"], data["input"], out, k=K, user_col="user", item_col="item",
                                 client=client, npartitions=3)
    assert again["partitions"] == 3 and len(list(out.glob("*.parquet"))) == 3
    pd.testing.assert_frame_equal(_read_result(out), data["ref"])
    assert _leftovers(tmp_path) == []


def test_dask_dataframe_string_ids_and_values(client, data, tmp_path):
    import dask.dataframe as dd

    df = data["df"].assign(user=lambda d: "u" + d["user"].astype(str), item=lambda d: "i" + d["item"].astype(str))
    df["w"] = (np.arange(len(df)) % 3 + 1).astype(np.float32)
    model = SANSA(l2=20.0, density=0.05, factorizer="icf", device="cpu").fit(df, user_col="user", item_col="item")
    model_path = str(tmp_path / "model_str.npz")
    model.save(model_path)
    score_to_parquet(model, df, str(tmp_path / "ref.parquet"), k=K, user_col="user", item_col="item",
                     value_col="w", progress=False)
    ref = _sorted(pq.read_table(str(tmp_path / "ref.parquet")).to_pandas())
    ddf = dd.from_pandas(df, npartitions=3, sort=False)
    sd.score_partitioned(model_path, ddf, tmp_path / "out", k=K, user_col="user", item_col="item", value_col="w",
                         client=client)
    pd.testing.assert_frame_equal(_read_result(tmp_path / "out"), ref)

    # already partitioned by user: no shuffle, same result
    by_user = dd.from_pandas(df.set_index("user"), npartitions=3, sort=True).reset_index()  # splits between users
    assert by_user.npartitions == 3
    sd.score_partitioned(model_path, by_user, tmp_path / "out2", k=K, user_col="user", item_col="item",
                         value_col="w", client=client, partitioned_by_user=True)
    pd.testing.assert_frame_equal(_read_result(tmp_path / "out2"), ref)


def test_worker_killed_mid_job(client, data, tmp_path):
    marker = str(tmp_path / "killed")
    client.register_plugin(KillOnce(marker, nth=3), name="kill-once")
    try:
        out = tmp_path / "top"
        sd.score_partitioned(data["model_path"], data["input"], out, k=K, user_col="user", item_col="item",
                             client=client)
    finally:
        client.unregister_worker_plugin("kill-once")
    assert os.path.exists(marker), "no worker was killed: the test proved nothing"
    got = _read_result(out)  # no user in two partitions
    pd.testing.assert_frame_equal(got, data["ref"])  # none missing, none doubled
    assert _leftovers(tmp_path) == []
    client.wait_for_workers(2, timeout=60)


def test_retried_partition_replaces_its_file(data, tmp_path):
    fp = sd.model_fingerprint(data["model_path"])
    part = data["df"][data["df"]["user"] < 2000]
    args = (str(tmp_path), fp, K, "user", "item", None, "int")
    first = sd.score_partition(part, 0, *args)
    second = sd.score_partition(part, 0, *args)
    assert first == second and first["rows"] > 0
    assert sorted(os.listdir(tmp_path)) == ["part.00000.parquet"]
    assert pq.read_table(str(tmp_path / "part.00000.parquet")).num_rows == first["rows"]
    empty = sd.score_partition(part.iloc[:0], 1, *args)  # an empty partition: a valid empty file
    assert empty["rows"] == 0
    assert pq.read_table(str(tmp_path / "part.00001.parquet")).schema == pq.read_schema(
        str(tmp_path / "part.00000.parquet"))


def test_changed_model_file_is_refused(data, tmp_path):
    path = tmp_path / "m.npz"
    data["model"].save(path)
    fp = sd.model_fingerprint(path)
    assert sd.worker_model(fp, "cpu") is sd.worker_model(fp, "cpu")  # cached
    data["model"].save(path)
    os.utime(path, ns=(fp[2] + 10**9, fp[2] + 10**9))
    with pytest.raises(ValueError, match="changed since the job started"):
        sd.worker_model(fp, "cpu")


def test_bad_input(client, data, tmp_path):
    kw = dict(k=K, user_col="user", item_col="item", client=client)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"column\(s\) \['itm'\] not in the input"):
        sd.score_partitioned(data["model_path"], data["input"], out, **{**kw, "item_col": "itm"})
    with pytest.raises(FileNotFoundError, match="no model file"):
        sd.score_partitioned(str(tmp_path / "nope.npz"), data["input"], out, **kw)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a readable sansa_gpu model"):
        sd.score_partitioned(str(bad), data["input"], out, **kw)
    with pytest.raises(FileNotFoundError, match="no input"):
        sd.score_partitioned(data["model_path"], str(tmp_path / "missing"), out, **kw)
    # a model fitted on a matrix has no item IDs to map raw IDs with
    mat = SANSA(l2=20.0, density=0.05, factorizer="icf", device="cpu").fit(synthetic_interactions(200, 100, seed=1))
    mat.save(tmp_path / "matrix.npz")
    with pytest.raises(ValueError, match="fitted on a matrix"):
        sd.score_partitioned(str(tmp_path / "matrix.npz"), data["input"], out, **kw)
    # string items against a model of integer items
    import dask.dataframe as dd

    strs = dd.from_pandas(data["df"].astype({"item": str}), npartitions=2)
    with pytest.raises(ValueError, match="model/catalogue mismatch"):
        sd.score_partitioned(data["model_path"], strs, out, **kw)
    assert not out.exists() and _leftovers(tmp_path) == []


def test_unknown_items_are_dropped_with_one_warning(client, data, tmp_path):
    import dask.dataframe as dd

    df = data["df"].copy()
    df.loc[df.index[:50], "item"] = 10**9 + np.arange(50)  # items the model does not know
    with pytest.warns(UserWarning, match="unknown to the model") as single:
        score_to_parquet(data["model"], df, str(tmp_path / "ref.parquet"), k=K, user_col="user", item_col="item",
                         progress=False)
    with pytest.warns(UserWarning, match="50 interaction\\(s\\) with item ID\\(s\\) unknown to the model"):
        sd.score_partitioned(data["model_path"], dd.from_pandas(df, npartitions=3), tmp_path / "out", k=K,
                             user_col="user", item_col="item", client=client)
    assert len(single) >= 1
    ref = _sorted(pq.read_table(str(tmp_path / "ref.parquet")).to_pandas())
    pd.testing.assert_frame_equal(_read_result(tmp_path / "out"), ref)


def test_failed_partition_leaves_nothing_and_names_it(client, data, tmp_path):
    import dask.dataframe as dd

    df = data["df"].sort_values("user").assign(w=1.0)
    df.loc[df.index[-1], "w"] = -1.0  # a negative weight in the last partition only
    ddf = dd.from_pandas(df.set_index("user"), npartitions=3, sort=True).reset_index()
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"1 of 3 partition\(s\) not written \(2\)"):
        sd.score_partitioned(data["model_path"], ddf, out, k=K, user_col="user", item_col="item", value_col="w",
                             client=client, partitioned_by_user=True)
    assert not out.exists() and _leftovers(tmp_path) == []
    # a folder that is not an earlier result is never replaced
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not an earlier sansa_gpu result"):
        sd.score_partitioned(data["model_path"], data["input"], out, k=K, user_col="user", item_col="item",
                             client=client)
    assert os.listdir(out) == ["keep.txt"]


def test_cli_scheduler_and_workers(client, data, tmp_path, capsys):
    base = ["recommend", data["model_path"], data["input"], "--k", str(K), "--user-col", "user", "--item-col", "item"]
    out = tmp_path / "top"
    assert main(base + ["-o", str(out), "--scheduler", client.scheduler.address]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip())  # stdout: the JSON line only (progress goes to stderr)
    assert summary["rows"] == len(data["ref"]) and summary["path"] == str(out)
    pd.testing.assert_frame_equal(_read_result(out), data["ref"])

    assert main(base + ["-o", str(tmp_path / "top1"), "--workers", "1", "-q"]) == 0
    capsys.readouterr()
    pd.testing.assert_frame_equal(_read_result(tmp_path / "top1"), data["ref"])

    assert main(base + ["-o", str(tmp_path / "x"), "--scheduler", client.scheduler.address, "--item-col", "itm",
                        "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sansa-gpu recommend: error: column(s) ['itm'] not in the input")
    # checked before a local cluster is started
    missing = ["recommend", str(tmp_path / "none.npz"), data["input"], "-o", str(tmp_path / "x"), "--workers", "2"]
    assert main(missing) == 2
    assert capsys.readouterr().err.strip() == f"sansa-gpu recommend: error: no model file at '{tmp_path / 'none.npz'}'"
    with pytest.raises(SystemExit) as exc:
        main(base + ["-o", str(tmp_path / "x"), "--scheduler", "tcp://h:1", "--workers", "2"])
    assert exc.value.code == 2
    assert "exclude each other" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and _leftovers(tmp_path) == []
