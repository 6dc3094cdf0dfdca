"""Model files: an uncompressed ``.npz`` container with a JSON header, written atomically and read
without pickle. A file that is truncated, of another format version or not a model raises ValueError."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile

import numpy as np
import scipy.sparse as sp

FORMAT = "sansa_gpu.model"
FORMAT_VERSION = 1


def _current_umask() -> int:
    """The process umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, suffix: str = ".part"):
    """Yield a binary file object on a temporary file beside ``path``; when the block ends normally
    it is flushed, fsynced and renamed over ``path``. On any exception it is deleted, so ``path``
    is either left as it was or replaced by a complete file, never half-written.

    The file gets the mode of any newly created file, ``0o666 & ~umask`` (``mkstemp`` alone
    would leave it readable by its owner only)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            os.chmod(tmp, 0o666 & ~_current_umask())
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save_arrays(path: str | os.PathLike, kind: str, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` plus a JSON header to ``path`` atomically (:func:`atomic_file`)."""
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, **meta}
    blob = np.frombuffer(json.dumps(header, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    with atomic_file(path, ".sansa-part") as f:
        np.savez(f, __header__=blob, **arrays)


def _check_header(path: str, blob: np.ndarray, kind: str) -> dict:
    """Parse the ``__header__`` array of a model file and check format, version and kind."""
    try:
        header = json.loads(blob.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path!r} has a corrupt header: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a sansa_gpu model file")
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path!r} has model format version {header.get('format_version')}; this sansa_gpu reads version {FORMAT_VERSION}"
        )
    if header.get("kind") != kind:
        raise ValueError(f"{path!r} holds a {header.get('kind')} model, not a {kind} model")
    return header


def _read(path: str | os.PathLike, kind: str, header_only: bool) -> tuple[dict, dict[str, np.ndarray]]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no model file at {path!r}")
    try:
        with np.load(path, allow_pickle=False) as z:
            names = ["__header__"] if header_only and "__header__" in z.files else z.files
            arrays = {name: z[name] for name in names}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, zipfile.LargeZipFile) as exc:
        raise ValueError(f"{path!r} is not a readable sansa_gpu model file (truncated or corrupt?): {exc}") from exc
    if "__header__" not in arrays:
        raise ValueError(f"{path!r} is not a sansa_gpu model file (no header)")
    return _check_header(path, arrays.pop("__header__"), kind), arrays


def load_arrays(path: str | os.PathLike, kind: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Read a file written by :func:`save_arrays`; returns (header, arrays). ValueError names the
    problem: not a model file, truncated/corrupt, another format version or another model kind."""
    return _read(path, kind, header_only=False)


def read_header(path: str | os.PathLike, kind: str) -> dict:
    """The checked header of a file written by :func:`save_arrays`, without reading its arrays
    (same errors as :func:`load_arrays`)."""
    return _read(path, kind, header_only=True)[0]


def csr_to_arrays(prefix: str, M: sp.csr_matrix) -> dict[str, np.ndarray]:
    return {f"{prefix}_indptr": M.indptr, f"{prefix}_indices": M.indices, f"{prefix}_data": M.data}


def csr_from_arrays(prefix: str, arrays: dict[str, np.ndarray], shape: tuple[int, int], path: str) -> sp.csr_matrix:
    """Rebuild a CSR matrix and check that its arrays are consistent (ValueError otherwise)."""
    try:
        indptr = arrays[f"{prefix}_indptr"]
        indices = arrays[f"{prefix}_indices"]
        data = arrays[f"{prefix}_data"]
    except KeyError as exc:
        raise ValueError(f"{path!r} is missing array {exc.args[0]}") from exc
    n_rows, n_cols = shape
    ok = (
        indptr.ndim == 1 and indptr.shape[0] == n_rows + 1 and np.issubdtype(indptr.dtype, np.integer)
        and indices.ndim == 1 and np.issubdtype(indices.dtype, np.integer)
        and data.ndim == 1 and data.dtype == np.float32 and data.shape == indices.shape
        and indptr[0] == 0 and indptr[-1] == indices.shape[0] and np.all(np.diff(indptr) >= 0)
        and (indices.size == 0 or (indices.min() >= 0 and indices.max() < n_cols))
        and np.all(np.isfinite(data))
    )
    if not ok:
        raise ValueError(f"{path!r}: arrays of {prefix} are inconsistent with shape {shape} (corrupt model file)")
    M = sp.csr_matrix((data, indices, indptr), shape=shape)
    if not M.has_canonical_format:  # the scoring kernels need distinct, ascending indices per row
        summed = M.copy()
        summed.sum_duplicates()
        if summed.nnz != M.nnz:
            raise ValueError(f"{path!r}: {prefix} repeats a column index within a row (corrupt model file)")
        M = summed  # the same entries, sorted
    return M
