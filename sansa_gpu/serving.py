"""Stage 5 at scale: stream top-k recommendations for any number of users to Parquet or CSV.

Rows are written in long format ``user_id, rank, item_id, score`` one block of users at a time
(:meth:`SANSA.recommend_batches`), to a temporary file in the target's folder that is renamed over
the target only when every block has been written: a crash or an interrupt never leaves a
half-written file behind.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import scipy.sparse as sp

from .candidates import _item_indices, blocked_items
from .ids import IdMap, is_table
from .io import atomic_file

OUTPUT_FORMATS = ("parquet", "csv")


def long_format(user_ids: np.ndarray, ids: np.ndarray, scores: np.ndarray, item_ids: IdMap | None = None):
    """pyarrow Table ``user_id, rank, item_id, score`` from a block of top-k results.

    user_ids : (m,) raw user IDs (or row numbers) of the block. ids, scores : (m, k) from
    :meth:`SANSA.recommend`; padding (-1) is dropped, so users with fewer candidates get fewer
    rows. rank is 1-based (int16 when k < 32768). item_id is raw when ``item_ids`` is given.
    """
    import pyarrow as pa

    m, k = ids.shape
    valid = ids >= 0
    user_col = np.repeat(np.asarray(user_ids), k).reshape(m, k)[valid]
    rank_dtype = np.int16 if k < 32768 else np.int32
    rank = np.broadcast_to(np.arange(1, k + 1, dtype=rank_dtype), (m, k))[valid]
    item_col = ids[valid]
    if item_ids is not None:
        item_col = item_ids.ids[item_col]
    return pa.table({"user_id": user_col, "rank": rank, "item_id": item_col, "score": scores[valid].astype(np.float32)})


def similar_format(query_ids: np.ndarray, ids: np.ndarray, scores: np.ndarray, item_ids: IdMap | None = None):
    """pyarrow Table ``item_id, rank, similar_item_id, score`` from :meth:`SANSA.similar_items`
    results (``query_ids``: the raw IDs of the queried items, one per row)."""
    table = long_format(query_ids, ids, scores, item_ids)
    return table.rename_columns(["item_id", "rank", "similar_item_id", "score"])


def item_rows(items, n_items: int) -> sp.csr_matrix:
    """(len(items), n_items) CSR float32 with a single 1 per row, at column items[r]: scoring these
    rows gives rows items[r] of B = Wt Z (``similar_items``)."""
    idx = _item_indices(items, n_items, "items")
    return sp.csr_matrix((np.ones(idx.size, dtype=np.float32), idx, np.arange(idx.size + 1, dtype=np.int64)),
                         shape=(idx.size, n_items))


def _format_of(path: str, fmt: str | None) -> str:
    if fmt is None:
        lower = path.lower()
        fmt = "csv" if lower.endswith((".csv", ".tsv")) else "parquet" if lower.endswith((".parquet", ".pq")) else None
        if fmt is None:
            raise ValueError(f"cannot tell the output format from {path!r}: name it .parquet or .csv, or pass format=")
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"format must be one of {OUTPUT_FORMATS}, got {fmt!r}")
    return fmt


class _Writer:
    """A pyarrow Parquet / CSV writer on a file object, opened on the first block (schema)."""

    def __init__(self, f, fmt: str, delimiter: str):
        self.f, self.fmt, self.delimiter, self.w = f, fmt, delimiter, None

    def write(self, table) -> None:
        if self.w is None:
            if self.fmt == "parquet":
                import pyarrow.parquet as pq

                self.w = pq.ParquetWriter(self.f, table.schema, compression="zstd")
            else:
                import pyarrow.csv as pacsv

                self.w = pacsv.CSVWriter(self.f, table.schema, write_options=pacsv.WriteOptions(delimiter=self.delimiter))
        self.w.write_table(table)

    def close(self) -> None:
        if self.w is not None:
            self.w.close()

    def abort(self) -> None:
        """Close after a failure, while the file object is still open (the file is discarded): a
        writer left open would write its footer to the closed file when garbage-collected."""
        with contextlib.suppress(Exception):  # the original error is the one to report
            self.close()


def score_to_parquet(model, data, path: str | os.PathLike, k: int = 20, *, batch_size: int | None = None,
                     user_col: str = "user_id", item_col: str = "item_id", value_col: str | None = None,
                     user_ids=None, format: str | None = None, progress: bool = True, items=None,
                     filter_items=None, filter_already_liked_items: bool = True) -> dict:
    """Write every user's top-k to ``path`` (Parquet, or CSV when the name ends in .csv / .tsv).

    data : an interaction table of raw IDs (pandas / pyarrow; encoded with the model's item IDs,
    unknown items ignored with a warning) or a (users, n_items) scipy sparse matrix, whose rows are
    written as user_id 0.. unless ``user_ids`` (one per row) is given. ``items`` / ``filter_items`` /
    ``filter_already_liked_items``: as in :meth:`SANSA.recommend` (raw item IDs when the model has
    them, else item indices). Returns a summary
    ``{'users', 'rows', 'path', 'seconds'}``. The file appears only when complete.
    """
    import time

    from tqdm.auto import tqdm

    path = os.fspath(path)
    fmt = _format_of(path, format)
    if is_table(data):
        enc = model.encode(data, user_col, item_col, value_col)
        X, users = enc.X, enc.users.ids
    else:
        if not sp.issparse(data):
            raise TypeError(f"data must be a table of raw IDs or a scipy.sparse matrix, got {type(data).__name__}")
        X = sp.csr_matrix(data)
        users = np.arange(X.shape[0], dtype=np.int64) if user_ids is None else np.asarray(user_ids)
        if users.shape != (X.shape[0],):
            raise ValueError(f"user_ids has shape {users.shape}, expected ({X.shape[0]},) (one per row of data)")
    item_ids = getattr(model, "item_ids_", None)
    blocked = blocked_items(model.n_items_, items, filter_items, item_ids=item_ids)  # raw IDs mapped once
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"output folder {directory!r} does not exist")
    t0 = time.perf_counter()
    n_rows = 0
    with atomic_file(path, f".{fmt}-part") as f:
        writer = _Writer(f, fmt, "\t" if path.lower().endswith(".tsv") else ",")
        try:
            with tqdm(total=X.shape[0], unit="user", disable=not progress, desc="recommend") as bar:
                for start, ids, scores in model._blocked_batches(X, k, batch_size, blocked,
                                                                 filter_already_liked_items):
                    table = long_format(users[start:start + ids.shape[0]], ids, scores, item_ids)
                    writer.write(table)
                    n_rows += table.num_rows
                    bar.update(ids.shape[0])
            if writer.w is None:  # no users: still write a valid, empty file with the schema
                writer.write(long_format(users[:0], np.empty((0, k), np.int64), np.empty((0, k), np.float32), item_ids))
        except BaseException:
            writer.abort()
            raise
        writer.close()
    return {"users": int(X.shape[0]), "rows": int(n_rows), "path": path, "seconds": time.perf_counter() - t0}
