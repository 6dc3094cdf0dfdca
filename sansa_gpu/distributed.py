"""Batch scoring past one machine: every user's top-k on a Dask cluster (CPU or GPU workers).

:func:`score_partitioned` reads a partitioned interaction dataset (a Parquet folder or file, or a
``dask.dataframe``), gathers each user's rows in one partition (a hash shuffle on the user column,
skipped with ``partitioned_by_user=True``), scores every partition on a worker with a SAVED model
and writes one Parquet file per partition: the same long format ``user_id, rank, item_id, score`` and
ordering (by user ID, then rank) as :func:`sansa_gpu.score_to_parquet` / :meth:`SANSA.recommend_table`.

- Tasks carry the model's *path* and its fingerprint (size, mtime), never the weights. Each worker
  process loads the model once and keeps it (per-process cache keyed by path + size + mtime; a file
  changed since the job started is refused, not silently used), with ``device="auto"`` by default:
  the worker's GPU when one answers, else its CPU.
- Nothing lost, nothing doubled: a partition file is written to a temporary name and renamed when
  complete (:func:`sansa_gpu.io.atomic_file`), so a task retried after a worker died replaces its
  file. The files go to a temporary sibling folder of ``output_dir`` renamed over it only when every
  partition is there; a failed job removes it and names the missing partitions.

Dask is imported lazily: the rest of the package works without it (``pip install sansa_gpu[distributed]``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import threading
import time
import uuid
import warnings

import numpy as np


logger = logging.getLogger(__name__)

#: File written last into a result folder: marks it as a complete result of this function (a
#: re-run may replace such a folder; any other existing, non-empty folder is refused).
MANIFEST = "_sansa_gpu.json"
PART_NAME = "part.{:05d}.parquet"

_CACHE: dict[str, tuple[tuple, object]] = {}
_CACHE_LOCK = threading.Lock()


def _dask():
    try:
        import dask
        import dask.dataframe as dd
        import distributed
    except ImportError as exc:
        raise ImportError("distributed scoring needs dask: pip install 'sansa_gpu[distributed]' "
                          "(dask[dataframe,distributed])") from exc
    return dask, dd, distributed


@contextlib.contextmanager
def restored_environ():
    """Put ``os.environ`` back as it was when the block ends: a LocalCluster's nannies set
    MALLOC_TRIM_THRESHOLD_, OMP_NUM_THREADS=1, ... in the *calling* process (for the workers they
    spawn) and leave them there, which changes later subprocesses of the caller."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        for name in [n for n in os.environ if n not in saved]:
            del os.environ[name]
        for name, value in saved.items():
            if os.environ.get(name) != value:
                os.environ[name] = value


# ------------------------------------------------------------------ the model on each worker
def model_fingerprint(path: str | os.PathLike) -> tuple[str, int, int]:
    """``(absolute path, size, mtime_ns)`` of a model file; FileNotFoundError when there is none."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no model file at {path!r}")
    st = os.stat(path)
    return path, int(st.st_size), int(st.st_mtime_ns)


def _model_header(path: str) -> dict:
    """The header of a SANSA model file fitted on raw IDs, read without loading the weights;
    ValueError when the file is not a readable SANSA model or has no item IDs."""
    from .io import read_header

    header = read_header(path, "SANSA")
    if header.get("item_ids") is None:
        raise ValueError(f"{path!r}: this model was fitted on a matrix, not a table of raw IDs, so it cannot "
                         "score a table of raw user / item IDs")
    return header


def worker_model(fingerprint: tuple[str, int, int], device: str | None = "auto"):
    """The model of ``fingerprint`` in this process: loaded on first use, then kept. The file must
    still have the job's size and mtime (checked on every call and around the load): a model file
    replaced during a job is a ValueError, never a mix of two models."""
    from .model import SANSA

    path = fingerprint[0]
    key = f"{path}|{device}"
    with _CACHE_LOCK:
        current = model_fingerprint(path)
        if current != tuple(fingerprint):
            raise ValueError(f"model file {path!r} changed since the job started (size/mtime {current[1:]} "
                             f"!= {tuple(fingerprint[1:])}): re-run the job")
        hit = _CACHE.get(key)
        if hit is not None and hit[0] == current:
            return hit[1]
        model = SANSA.load(path, device=device)
        if model_fingerprint(path) != current:
            raise ValueError(f"model file {path!r} changed while it was being loaded: re-run the job")
        if getattr(model, "item_ids_", None) is None:
            raise ValueError(f"{path!r}: this model was fitted on a matrix, not a table of raw IDs")
        # keep one version per path: a newer file evicts the older model
        for other in [k for k in _CACHE if k.startswith(f"{path}|")]:
            del _CACHE[other]
        _CACHE[key] = (current, model)
        logger.info("loaded model %s on device %s", path, model.device_)
        return model


def cache_info() -> list[dict]:
    """The models held by this process (for tests and diagnostics: run it on workers with
    ``client.run(sansa_gpu.distributed.cache_info)``)."""
    with _CACHE_LOCK:
        return [{"path": fp[0], "size": fp[1], "mtime_ns": fp[2], "device": getattr(m, "device_", None)}
                for fp, m in _CACHE.values()]


# ------------------------------------------------------------------ one partition (runs on a worker)
def _output_schema(user_kind: str, item_kind: str, k: int):
    import pyarrow as pa

    return pa.schema([("user_id", pa.int64() if user_kind == "int" else pa.string()),
                      ("rank", pa.int16() if k < 32768 else pa.int32()),
                      ("item_id", pa.int64() if item_kind == "int" else pa.string()),
                      ("score", pa.float32())])


def score_partition(df, index: int, directory: str, fingerprint, k: int, user_col: str, item_col: str,
                    value_col: str | None, user_kind: str, batch_size: int | None = None,
                    device: str | None = "auto", items=None, filter_items=None,
                    filter_already_liked_items: bool = True) -> dict:
    """Score one partition (a pandas DataFrame holding ALL rows of its users) and write
    ``directory/part.<index>.parquet`` atomically. ``items`` / ``filter_items``: allow / block lists
    of raw item IDs (IDs unknown to the model ignored). Returns ``{'partition', 'users', 'rows',
    'unknown_rows', 'unknown_items'}`` (unknown items: up to 5 examples)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .ids import encode_interactions
    from .io import atomic_file
    from .serving import long_format

    from .candidates import blocked_items

    model = worker_model(fingerprint, device)
    item_ids = model.item_ids_
    # unknown IDs in the lists: ignored, as documented (no warning per partition, and no warning-filter
    # changes, which are process-wide and not thread-safe on a threaded worker)
    blocked = blocked_items(model.n_items_, items, filter_items, item_ids=item_ids, warn=False)
    schema = _output_schema(user_kind, item_ids.kind, k)
    path = os.path.join(directory, PART_NAME.format(index))
    n_users = n_rows = n_unknown = 0
    unknown = []
    with atomic_file(path, ".parquet-part") as f:
        writer = pq.ParquetWriter(f, schema, compression="zstd")
        try:
            if len(df):
                cols = [user_col, item_col] + ([value_col] if value_col else [])
                table = pa.Table.from_pandas(df[cols], preserve_index=False)
                # as SANSA.encode, but the unknown items are reported to the client (one warning per job)
                enc = encode_interactions(table, user_col, item_col, value_col, items=item_ids)
                n_unknown = enc.n_unknown_items
                if n_unknown:
                    unknown = enc.unknown_items[:5].tolist()
                users = enc.users.ids
                n_users = int(users.shape[0])
                for start, ids, scores in model._blocked_batches(enc.X, k, batch_size, blocked,
                                                                 filter_already_liked_items):
                    block = long_format(users[start:start + ids.shape[0]], ids, scores, item_ids)
                    writer.write_table(block.cast(schema))
                    n_rows += block.num_rows
        except BaseException:
            with contextlib.suppress(Exception):
                writer.close()
            raise
        writer.close()  # a partition without users still gets a valid, empty file with the schema
    return {"partition": index, "users": n_users, "rows": n_rows, "unknown_rows": int(n_unknown),
            "unknown_items": unknown}


# ------------------------------------------------------------------ the job (runs on the client)
def _kind_of(dtype) -> str | None:
    """'int' / 'str' for an ID column's pandas dtype, None when neither."""
    import pandas as pd

    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
        return "str"
    return None


def _read_input(input, columns: list[str]):
    """A dask DataFrame of ``columns`` from a Parquet folder / file or a dask DataFrame; ValueError
    naming missing columns, FileNotFoundError for a missing path."""
    _, dd, _ = _dask()
    if isinstance(input, (str, os.PathLike)):
        path = os.fspath(input)
        if "://" not in path and not os.path.exists(path):
            raise FileNotFoundError(f"no input at {path!r}")
        if path.lower().endswith((".csv", ".tsv")):
            raise ValueError(f"{path!r}: distributed scoring reads Parquet (a folder of files or one file), not CSV")
        ddf = dd.read_parquet(path)
    elif type(input).__module__.startswith("dask") and hasattr(input, "to_delayed"):
        ddf = input
    else:
        raise TypeError(f"input must be a Parquet path or a dask.dataframe.DataFrame, got {type(input).__name__}")
    missing = [c for c in columns if c not in ddf.columns]
    if missing:
        raise ValueError(f"column(s) {missing} not in the input; it has {list(ddf.columns)}")
    return ddf[columns]


def _prepare_output(output_dir: str) -> str:
    """Check that ``output_dir`` may be (re)written: its parent exists, and it is absent, empty or a
    complete earlier result (has the manifest). Returns the absolute path."""
    out = os.path.abspath(os.fspath(output_dir))
    parent = os.path.dirname(out)
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"output folder's parent {parent!r} does not exist")
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise FileExistsError(f"output {out!r} exists and is not a folder")
        if os.listdir(out) and not os.path.isfile(os.path.join(out, MANIFEST)):
            raise FileExistsError(f"output folder {out!r} exists and is not an earlier sansa_gpu result "
                                  f"(no {MANIFEST}): choose another name or remove it")
    return out


def _swap_in(tmp: str, out: str) -> None:
    """Rename the complete folder ``tmp`` to ``out``, replacing an earlier result there."""
    if os.path.exists(out):
        old = os.path.join(os.path.dirname(out), f".old-{os.path.basename(out)}-{uuid.uuid4().hex[:8]}")
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except BaseException:
            os.rename(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


def _reraise(exc: BaseException, message: str):
    """Raise ``message`` as the same kind of error as ``exc`` where it is a plain one (ValueError,
    KeyError, OSError, ...), else as RuntimeError."""
    for kind in (FileNotFoundError, PermissionError, OSError, KeyError, TypeError, ValueError, MemoryError):
        if isinstance(exc, kind):
            raise kind(message) from exc
    raise RuntimeError(message) from exc


def preflight(model_path, input, output_dir, k: int = 20, user_col: str = "user_id", item_col: str = "item_id",
              value_col: str | None = None, batch_size: int | None = None):
    """The checks :func:`score_partitioned` makes before any task runs (model file readable and fitted
    on raw IDs, input columns present and of ID types matching the model's, output folder writable):
    call it before starting a cluster to fail fast. Returns (fingerprint, output path, dask
    DataFrame of the columns, user ID kind, k, batch_size)."""
    from .validation import check_positive_int

    k = check_positive_int(k, "k")
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size")
    fingerprint = model_fingerprint(model_path)
    header = _model_header(fingerprint[0])
    out = _prepare_output(output_dir)
    cols = [user_col, item_col] + ([value_col] if value_col else [])
    ddf = _read_input(input, cols)
    user_kind = _kind_of(ddf.dtypes[user_col])
    item_kind = _kind_of(ddf.dtypes[item_col])
    if user_kind is None:
        raise ValueError(f"ID column {user_col!r} must hold integers or strings, got {ddf.dtypes[user_col]}")
    if item_kind is None or item_kind != header["item_ids"]:
        raise ValueError(f"{item_col!r} holds {ddf.dtypes[item_col]} IDs but the model's item IDs are "
                         f"{header['item_ids']}s (model/catalogue mismatch)")
    return fingerprint, out, ddf, user_kind, k, batch_size


def score_partitioned(model_path, input, output_dir, k: int = 20, user_col: str = "user_id",
                      item_col: str = "item_id", value_col: str | None = None, client=None, *,
                      partitioned_by_user: bool = False, npartitions: int | None = None,
                      shuffle_method: str = "tasks", batch_size: int | None = None, device: str | None = "auto",
                      progress: bool = False, items=None, filter_items=None,
                      filter_already_liked_items: bool = True) -> dict:
    """Write every user's top-k to the Parquet folder ``output_dir``, scoring on a Dask cluster.

    model_path : a model saved by :meth:`SANSA.save` from a table of raw IDs, at a path every worker
        can read (it is loaded once per worker process; tasks carry only the path).
    input : a Parquet folder or file, or a ``dask.dataframe.DataFrame``, with raw ``user_col`` /
        ``item_col`` (ints or strings) and optional ``value_col``. Unknown items are dropped with
        one UserWarning, as in :meth:`SANSA.encode`.
    partitioned_by_user : the input already holds all rows of each user in one partition; skips the
        hash shuffle on ``user_col`` (otherwise ``ddf.shuffle(on=user_col)``, ``shuffle_method``
        'tasks' by default: plain tasks, recomputed when a worker dies).
    npartitions : output partitions (default: as many as the input's).
    client : a ``distributed.Client``; default: the current one, else a temporary LocalCluster.
    device : where workers score ('auto': each worker's GPU when one answers, else its CPU).
    items, filter_items, filter_already_liked_items : as in :meth:`SANSA.recommend_table` (raw item
        IDs; IDs the model does not know are ignored).

    Output: ``output_dir/part.NNNNN.parquet`` (``user_id, rank, item_id, score``; users sorted by raw
    ID within a file, a user in exactly one file), plus ``_sansa_gpu.json`` (summary), written to a
    temporary sibling folder renamed into place when complete. Rows = sum over users of
    min(k, candidates). Returns ``{'users', 'rows', 'partitions', 'path', 'seconds'}``.
    """
    t0 = time.perf_counter()
    fingerprint, out, ddf, user_kind, k, batch_size = preflight(model_path, input, output_dir, k, user_col, item_col,
                                                                value_col, batch_size)
    dask, _, distributed = _dask()
    if not partitioned_by_user:
        ddf = ddf.shuffle(on=user_col, npartitions=npartitions, shuffle_method=shuffle_method)
    elif npartitions is not None and npartitions != ddf.npartitions:
        raise ValueError("npartitions cannot change the partitioning of input that is partitioned_by_user")

    own_cluster = None
    if client is None:
        try:
            client = distributed.get_client()
        except ValueError:
            env = restored_environ()
            env.__enter__()
            try:
                own_cluster = distributed.LocalCluster(processes=True)
                client = distributed.Client(own_cluster)
            except BaseException:
                env.__exit__(None, None, None)
                raise
    tmp = os.path.join(os.path.dirname(out), f".tmp-{os.path.basename(out)}-{uuid.uuid4().hex[:12]}")
    os.mkdir(tmp)
    futures = []
    try:
        parts = ddf.to_delayed()
        n = len(parts)
        job = uuid.uuid4().hex[:8]
        task = dask.delayed(score_partition)
        lists = {"items": None if items is None else np.asarray(items),
                 "filter_items": None if filter_items is None else np.asarray(filter_items),
                 "filter_already_liked_items": bool(filter_already_liked_items)}
        tasks = [task(p, i, tmp, fingerprint, k, user_col, item_col, value_col, user_kind, batch_size, device, **lists,
                      dask_key_name=f"sansa-score-{job}-{i}") for i, p in enumerate(parts)]
        futures = client.compute(tasks)
        if progress:
            with contextlib.redirect_stdout(sys.stderr):  # stdout carries the CLI's JSON summary
                distributed.progress(futures)
        distributed.wait(futures)
        results, failed = [], []
        for i, fut in enumerate(futures):
            if fut.status == "finished":
                results.append(fut.result())
            else:
                failed.append((i, fut.exception() if fut.status == "error" else RuntimeError(f"task {fut.status}")))
        missing = sorted({i for i, _ in failed} | {r["partition"] for r in results
                                                    if not os.path.isfile(os.path.join(tmp, PART_NAME.format(r["partition"])))})
        if missing:
            first = failed[0][1] if failed else RuntimeError("partition file not found after its task finished")
            _reraise(first, f"distributed scoring failed; {len(missing)} of {n} partition(s) not written "
                            f"({_ranges(missing)}), nothing written to {out!r}: {type(first).__name__}: {first}")
        n_unknown = sum(r["unknown_rows"] for r in results)
        if n_unknown:
            examples = sorted({x for r in results for x in r["unknown_items"]}, key=str)[:5]
            warnings.warn(f"{n_unknown} interaction(s) with item ID(s) unknown to the model were ignored "
                          f"(e.g. {', '.join(map(str, examples))})", UserWarning, stacklevel=2)
        summary = {"users": sum(r["users"] for r in results), "rows": sum(r["rows"] for r in results),
                   "partitions": n, "path": out}
        manifest = {**summary, "path": None, "model": fingerprint[0], "model_size": fingerprint[1],
                    "model_mtime_ns": fingerprint[2], "k": k, "files": [PART_NAME.format(i) for i in range(n)]}
        from .io import atomic_file

        with atomic_file(os.path.join(tmp, MANIFEST), ".json-part") as f:
            f.write((json.dumps(manifest, sort_keys=True) + "\n").encode("utf-8"))
        _swap_in(tmp, out)
    except BaseException:
        with contextlib.suppress(Exception):
            client.cancel(futures)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if own_cluster is not None:
            with contextlib.suppress(Exception):
                client.close()
                own_cluster.close()
            env.__exit__(None, None, None)
    return {**summary, "seconds": time.perf_counter() - t0}


def _ranges(indices: list[int]) -> str:
    """'0-2, 5, 7-9' for [0, 1, 2, 5, 7, 8, 9]."""
    out, start, prev = [], None, None
    for i in indices:
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            out.append(f"{start}-{prev}" if prev > start else f"{start}")
            start = prev = i
    if start is not None:
        out.append(f"{start}-{prev}" if prev > start else f"{start}")
    return ", ".join(out)
