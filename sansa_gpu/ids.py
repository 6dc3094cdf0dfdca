"""Raw user / item IDs: interaction tables (pandas or pyarrow) <-> the sparse matrices of the pipeline.

IDs may be integers or strings. Items are numbered by their sorted raw ID, so ties in scores (broken
by the lower item index everywhere) are broken by the lower raw ID, and the same table always gives
the same matrix. pyarrow does the hashing and lookup (``pyarrow.compute.index_in``): vectorised, and
it reads CSV and Parquet as well.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
    except ImportError as exc:  # pragma: no cover - pyarrow is a dependency
        raise ImportError("tables of raw IDs need pyarrow (pip install pyarrow)") from exc
    return pa, pc


def is_table(data) -> bool:
    """True for a pyarrow Table or a pandas DataFrame (anything with named ID columns)."""
    if sp.issparse(data):
        return False
    mod = type(data).__module__
    return (mod.startswith("pyarrow") and type(data).__name__ == "Table") or (
        mod.startswith("pandas") and type(data).__name__ == "DataFrame")


def as_arrow_table(data, columns: list[str]):
    """A pyarrow Table holding ``columns`` of ``data`` (pyarrow Table or pandas DataFrame);
    KeyError naming the missing columns and those present."""
    pa, _ = _pa()
    if not isinstance(data, pa.Table):
        if not is_table(data):
            raise TypeError(f"expected a pandas DataFrame or pyarrow Table, got {type(data).__name__}")
        missing = [c for c in columns if c not in data.columns]
        if missing:
            raise KeyError(f"column(s) {missing} not in the table; it has {list(data.columns)}")
        data = pa.Table.from_pandas(data[columns], preserve_index=False)
    missing = [c for c in columns if c not in data.column_names]
    if missing:
        raise KeyError(f"column(s) {missing} not in the table; it has {data.column_names}")
    return data.select(columns)


def read_table(path: str | os.PathLike, columns: list[str], delimiter: str | None = None):
    """Read ``columns`` of a CSV/TSV (delimiter guessed from the extension unless given) or Parquet
    file into a pyarrow Table."""
    pa, _ = _pa()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    lower = path.lower()
    if lower.endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        missing = [c for c in columns if c not in names]
        if missing:
            raise KeyError(f"column(s) {missing} not in {path!r}; it has {names}")
        return pq.read_table(path, columns=columns)
    import pyarrow.csv as pacsv

    if delimiter is None:
        delimiter = "\t" if lower.endswith((".tsv", ".tsv.gz", ".tab")) else ","
    table = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter))
    return as_arrow_table(table, columns)


def _id_array(column, name: str):
    """Check an ID column: integer or string type, no nulls. Returns a combined pyarrow Array."""
    pa, _ = _pa()
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if isinstance(arr.type, pa.DictionaryType):
        arr = arr.dictionary_decode()
    if pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    if not (pa.types.is_integer(arr.type) or pa.types.is_string(arr.type)):
        raise TypeError(f"ID column {name!r} must hold integers or strings, got {arr.type}")
    if arr.null_count:
        raise ValueError(f"ID column {name!r} has {arr.null_count} missing (null) IDs")
    if pa.types.is_integer(arr.type) and arr.type != pa.int64():
        arr = arr.cast(pa.int64())
    return arr


@dataclass
class IdMap:
    """Raw IDs in index order: ``ids[j]`` is the raw ID of index j. (n,) int64 or unicode array, sorted, unique."""

    ids: np.ndarray

    @classmethod
    def from_values(cls, values, name: str = "ids") -> "IdMap":
        """Sorted unique IDs of a pyarrow array / numpy array / list."""
        pa, pc = _pa()
        arr = _id_array(values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values), name)
        uniq = pc.unique(arr)
        uniq = uniq.take(pc.sort_indices(uniq))
        return cls(_to_numpy(uniq))

    @property
    def kind(self) -> str:
        return "int" if self.ids.dtype.kind in "iu" else "str"

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def lookup(self, values, name: str = "ids") -> np.ndarray:
        """(m,) int64 index of each raw ID in ``values``; -1 where unknown. TypeError when the
        values' kind (int / str) differs from this map's."""
        pa, pc = _pa()
        arr = _id_array(values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values), name)
        if (pa.types.is_integer(arr.type)) != (self.kind == "int"):
            raise TypeError(f"{name} holds {arr.type} IDs but the model's item IDs are {self.kind}s")
        idx = pc.index_in(arr, value_set=pa.array(self.ids))
        return idx.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)

    def to_raw(self, index: np.ndarray) -> np.ndarray:
        """Raw IDs of ``index`` (any shape); -1 (padding) stays -1 for int IDs and '' for strings."""
        index = np.asarray(index)
        out = self.ids[np.where(index >= 0, index, 0)] if len(self) else np.empty(index.shape, self.ids.dtype)
        if self.kind == "int":
            out = np.where(index >= 0, out, -1)
        else:
            out = np.where(index >= 0, out, "")
        return out


def _to_numpy(arr) -> np.ndarray:
    pa, _ = _pa()
    if pa.types.is_integer(arr.type):
        return arr.to_numpy(zero_copy_only=False).astype(np.int64)
    return np.asarray(arr.to_pylist(), dtype=str)


@dataclass
class Interactions:
    """An interaction table encoded for the pipeline.

    X : (n_users, n_items) CSR float32 (duplicates summed). users : IdMap of X's rows. items :
    IdMap of X's columns. n_unknown_items : rows of the table dropped because their item is not
    in a given item map (scoring requests against a trained model).
    """

    X: sp.csr_matrix
    users: IdMap
    items: IdMap
    n_unknown_items: int = 0
    unknown_items: np.ndarray | None = None


def encode_interactions(table, user_col: str = "user_id", item_col: str = "item_id", value_col: str | None = None,
                        items: IdMap | None = None, users: IdMap | None = None) -> Interactions:
    """Encode a pandas / pyarrow table of (user, item[, value]) rows as a sparse matrix.

    Users are numbered by sorted raw ID. Items too, unless ``items`` (a trained model's map) is
    given: then rows whose item is unknown are dropped and counted (``n_unknown_items``, their
    distinct IDs in ``unknown_items``). Values default to 1; they must be finite and >= 0
    (checked by the matrix validation downstream). ``users`` fixes the row numbering (e.g. shared
    by a train and a test table); a user missing from it is a ValueError.
    """
    pa, pc = _pa()
    cols = [user_col, item_col] + ([value_col] if value_col else [])
    t = as_arrow_table(table, cols)
    if t.num_rows == 0:
        raise ValueError("the interaction table has no rows")
    user_arr = _id_array(t.column(user_col), user_col)
    item_arr = _id_array(t.column(item_col), item_col)
    if users is None:
        users = IdMap.from_values(user_arr, user_col)
    rows = users.lookup(user_arr, user_col)
    if rows.size and rows.min() < 0:
        raise ValueError(f"{int((rows < 0).sum())} row(s) of {user_col!r} name users outside the given user map")
    unknown = None
    if items is None:
        items = IdMap.from_values(item_arr, item_col)
        cols_idx = items.lookup(item_arr, item_col)
        keep = None
    else:
        cols_idx = items.lookup(item_arr, item_col)
        keep = cols_idx >= 0
        if keep.all():
            keep = None
        else:
            unknown = _to_numpy(pc.unique(item_arr.filter(pa.array(~keep))))
    if value_col:
        vcol = t.column(value_col)
        if vcol.null_count:
            raise ValueError(f"value column {value_col!r} has {vcol.null_count} missing values")
        if not (pa.types.is_integer(vcol.type) or pa.types.is_floating(vcol.type) or pa.types.is_boolean(vcol.type)):
            raise TypeError(f"value column {value_col!r} must be numeric, got {vcol.type}")
        vals = vcol.to_numpy().astype(np.float32)
    else:
        vals = np.ones(rows.shape[0], dtype=np.float32)
    n_unknown = 0
    if keep is not None:
        n_unknown = int((~keep).sum())
        rows, cols_idx, vals = rows[keep], cols_idx[keep], vals[keep]
    X = sp.csr_matrix((vals, (rows, cols_idx)), shape=(len(users), len(items)), dtype=np.float32)
    X.sum_duplicates()
    return Interactions(X=X, users=users, items=items, n_unknown_items=n_unknown, unknown_items=unknown)
