"""Device-side sparse containers. cupyx.scipy.sparse uses int32 offsets; SANSA's factors can pass
2^31 nonzeros, so the GPU stages use this minimal CSC/CSR with int64 offsets instead."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from . import _device


@dataclass
class DeviceCompressed:
    """Compressed sparse matrix on the GPU: indptr int64, indices int32, data float32.
    ``fmt`` is 'csc' (columns compressed) or 'csr'."""

    indptr: object
    indices: object
    data: object
    shape: tuple[int, int]
    fmt: str = "csc"

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    @classmethod
    def from_host(cls, M) -> "DeviceCompressed":
        xp = _device.current().xp
        fmt = "csc" if sp.isspmatrix_csc(M) or getattr(M, "format", "") == "csc" else "csr"
        return cls(
            xp.asarray(M.indptr.astype(np.int64, copy=False)),
            xp.asarray(M.indices.astype(np.int32, copy=False)),
            xp.asarray(M.data.astype(np.float32, copy=False)),
            tuple(M.shape), fmt,
        )

    def to_host(self):
        cls = sp.csc_matrix if self.fmt == "csc" else sp.csr_matrix
        return cls((self.data.get(), self.indices.get(), self.indptr.get()), shape=self.shape)
