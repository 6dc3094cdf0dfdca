"""Loaders for the interaction formats in ../shared/data/README.md, and evaluation splits."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


def _to_csr(users: np.ndarray, items: np.ndarray, shape: tuple[int, int], values: np.ndarray | None = None) -> sp.csr_matrix:
    """Binary (or weighted) CSR; duplicate (user, item) pairs collapse to one interaction."""
    vals = np.ones(users.shape[0], dtype=np.float32) if values is None else values.astype(np.float32)
    X = sp.csr_matrix((vals, (users, items)), shape=shape)
    X.sum_duplicates()
    if values is None:
        X.data[:] = 1.0
    return X


def read_adjacency_list(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read ``user item item ...`` lines (LightGCN/NGCF/KGAT style). A line with only a user id
    means no items. Returns (users, items) int64 pair arrays."""
    users: list[np.ndarray] = []
    items: list[np.ndarray] = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            tok = line.split()
            if not tok:
                continue
            try:
                ids = np.array(tok, dtype=np.int64)
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: non-integer id in {line.strip()[:80]!r}") from exc
            if ids.size > 1:
                users.append(np.full(ids.size - 1, ids[0], dtype=np.int64))
                items.append(ids[1:])
    if not users:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(users), np.concatenate(items)


def read_pairs(path: str | os.PathLike, skip_header: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read ``user item [value]`` lines separated by whitespace or tabs. Returns (users, items,
    values or None)."""
    arr = np.loadtxt(path, dtype=np.float64, skiprows=1 if skip_header else 0, ndmin=2)
    if arr.shape[1] < 2:
        raise ValueError(f"{path}: expected at least two columns (user item), got {arr.shape[1]}")
    values = arr[:, 2] if arr.shape[1] > 2 else None
    return arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), values


def read_counts(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """CiteULike ``users.dat``: line k is user k, ``n item_1 ... item_n``."""
    users, items = [], []
    with open(path) as f:
        for u, line in enumerate(f):
            tok = np.array(line.split(), dtype=np.int64)
            if tok.size == 0:
                continue
            if tok[0] != tok.size - 1:
                raise ValueError(f"{path}:{u + 1}: count {tok[0]} does not match {tok.size - 1} items")
            users.append(np.full(tok.size - 1, u, dtype=np.int64))
            items.append(tok[1:])
    return np.concatenate(users), np.concatenate(items)


@dataclass
class Split:
    """A train/test split on one id space. train, test: (users, items) CSR float32."""

    train: sp.csr_matrix
    test: sp.csr_matrix
    kind: str = "given"
    """How the test part was made: "given" (the files' own split) or "holdout" (a seeded random holdout)."""

    @property
    def eval_users(self) -> np.ndarray:
        """Users with at least one test item."""
        return np.flatnonzero(np.diff(self.test.indptr) > 0)


def load_adjacency_split(directory: str | os.PathLike, train: str = "train.txt", test: str = "test.txt") -> Split:
    """A fixed split in adjacency-list format (gowalla, ml-1m-implicit, amazon-book-kgat, pinterest,
    epinions). Matrices are sized max_id + 1 on both sides; duplicates are removed; pairs present
    in both train and test are dropped from test (they would be masked anyway)."""
    u_tr, i_tr = read_adjacency_list(os.path.join(directory, train))
    u_te, i_te = read_adjacency_list(os.path.join(directory, test))
    return _given_split(u_tr, i_tr, u_te, i_te)


def _given_split(u_tr: np.ndarray, i_tr: np.ndarray, u_te: np.ndarray, i_te: np.ndarray) -> Split:
    """Split of given train / test (user, item) pairs on one id space sized max_id + 1; duplicates
    removed; pairs present in both are dropped from test (they would be masked anyway)."""
    shape = (int(max(u_tr.max(initial=-1), u_te.max(initial=-1)) + 1), int(max(i_tr.max(initial=-1), i_te.max(initial=-1)) + 1))
    X_train = _to_csr(u_tr, i_tr, shape)
    X_test = _to_csr(u_te, i_te, shape)
    X_test = X_test - X_test.multiply(X_train)
    X_test.eliminate_zeros()
    return Split(X_train, sp.csr_matrix(X_test, dtype=np.float32))


def load_split(directory: str | os.PathLike, test_fraction: float = 0.2, seed: int = 0) -> Split:
    """The train/test split of one dataset folder of ``../shared/data``, by the files it holds.

    - ``train.txt`` + ``test.txt`` (adjacency lists: gowalla, ml-1m-implicit, amazon-book-kgat,
      pinterest, epinions): the published split, :func:`load_adjacency_split`.
    - ``*.train.rating`` + ``*.test.rating`` (+ ``*.val.rating``) pair files (yelp-diffnet): the
      published test split; the validation file joins the training data (:func:`sansa_gpu.tune`
      carves its own validation split out of train).
    - one unsplit file — ``users.dat`` (count format: citeulike-a / -t), ``user_artists.dat``
      (TSV with header: lastfm-2k; listening counts are dropped, each pair is one interaction) or a
      single ``*.txt`` of pairs (amazon-videogames-sasrec): :func:`random_holdout_split` of every
      user's items with ``test_fraction`` and ``seed``.

    Matrices are (max user id + 1, max item id + 1), binary, float32 CSR; ids with no interactions
    stay as empty rows / columns; ``kind`` says "given" or "holdout". Raises FileNotFoundError naming
    the folder when none of these layouts is there.
    """
    d = os.fspath(directory)
    names = set(os.listdir(d)) if os.path.isdir(d) else set()
    if {"train.txt", "test.txt"} <= names:
        return load_adjacency_split(d)
    if names & {"train.txt", "test.txt"}:
        raise FileNotFoundError(f"{d}: an adjacency-list split needs both train.txt and test.txt; it holds {sorted(names)}")
    rating = {part: [n for n in names if n.endswith(f".{part}.rating")] for part in ("train", "val", "test")}
    if len(rating["train"]) == 1 and len(rating["test"]) == 1 and len(rating["val"]) <= 1:
        tr = [read_pairs(os.path.join(d, n))[:2] for n in rating["train"] + rating["val"]]
        u_te, i_te = read_pairs(os.path.join(d, rating["test"][0]))[:2]
        return _given_split(np.concatenate([u for u, _ in tr]), np.concatenate([i for _, i in tr]), u_te, i_te)
    if "users.dat" in names:
        users, items = read_counts(os.path.join(d, "users.dat"))
    elif "user_artists.dat" in names:
        users, items, _ = read_pairs(os.path.join(d, "user_artists.dat"), skip_header=True)
    else:
        pair_files = sorted(n for n in names if n.endswith(".txt") and n.lower() != "readme.txt")
        if len(pair_files) != 1:
            raise FileNotFoundError(
                f"{d}: no dataset layout found (want train.txt + test.txt, *.train.rating + *.test.rating, "
                f"users.dat, user_artists.dat or one pairs .txt file); it holds {sorted(names)}")
        users, items, _ = read_pairs(os.path.join(d, pair_files[0]))
    X = _to_csr(users, items, (int(users.max(initial=-1)) + 1, int(items.max(initial=-1)) + 1))
    split = random_holdout_split(X, test_fraction, seed)
    split.kind = "holdout"
    return split


def strong_generalization_split(
    X: sp.csr_matrix, n_heldout_users: int, fold_in: float = 0.8, seed: int = 0, min_items: int = 2,
    return_held: bool = False,
):
    """Hold out users: returns (train, fold_in_part, target_part), and with ``return_held`` also the
    held-out users' row numbers in X (ascending, the order of the two held-out matrices).

    ``n_heldout_users`` users with at least ``min_items`` interactions are drawn at random; the
    others form ``train``. For each held-out user, ``fold_in`` of their items (at least one) are
    given to the model and the rest are targets. All three are CSR; the two held-out matrices have
    one row per held-out user, in the same order.
    """
    X = sp.csr_matrix(X)
    rng = np.random.default_rng(seed)
    counts = np.diff(X.indptr)
    eligible = np.flatnonzero(counts >= min_items)
    if n_heldout_users > eligible.size:
        raise ValueError(f"asked for {n_heldout_users} held-out users but only {eligible.size} have >= {min_items} items")
    held = np.sort(rng.choice(eligible, size=n_heldout_users, replace=False))
    keep = np.ones(X.shape[0], dtype=bool)
    keep[held] = False
    H = X[held]
    # per row: a random key per entry; the fold-in part is the ceil(fold_in * n) smallest keys
    key = rng.random(H.nnz)
    row = np.repeat(np.arange(H.shape[0]), np.diff(H.indptr))
    order = np.lexsort((key, row))
    rank = np.empty(H.nnz, dtype=np.int64)
    rank[order] = np.arange(H.nnz) - np.repeat(H.indptr[:-1], np.diff(H.indptr))
    n_in = np.maximum(1, np.floor(fold_in * np.diff(H.indptr)).astype(np.int64))
    in_mask = rank < n_in[row]
    fold = sp.csr_matrix((H.data * in_mask, H.indices.copy(), H.indptr.copy()), shape=H.shape)
    target = sp.csr_matrix((H.data * ~in_mask, H.indices.copy(), H.indptr.copy()), shape=H.shape)
    fold.eliminate_zeros()
    target.eliminate_zeros()
    if return_held:
        return X[keep], fold, target, held
    return X[keep], fold, target


def random_holdout_split(X: sp.csr_matrix, test_fraction: float = 0.2, seed: int = 0) -> Split:
    """Per-user random holdout of ``test_fraction`` of each user's items (users with >= 2 items)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    X = sp.csr_matrix(X)
    rng = np.random.default_rng(seed)
    counts = np.diff(X.indptr)
    row = np.repeat(np.arange(X.shape[0]), counts)
    key = rng.random(X.nnz)
    order = np.lexsort((key, row))
    rank = np.empty(X.nnz, dtype=np.int64)
    rank[order] = np.arange(X.nnz) - np.repeat(X.indptr[:-1], counts)
    n_test = np.where(counts >= 2, np.maximum(1, np.round(test_fraction * counts)).astype(np.int64), 0)
    test_mask = rank < n_test[row]
    train = sp.csr_matrix((X.data * ~test_mask, X.indices.copy(), X.indptr.copy()), shape=X.shape)
    test = sp.csr_matrix((X.data * test_mask, X.indices.copy(), X.indptr.copy()), shape=X.shape)
    train.eliminate_zeros()
    test.eliminate_zeros()
    return Split(train.astype(np.float32), test.astype(np.float32))
