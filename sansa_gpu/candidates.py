"""Which items a scoring call may return: the allow-list (``items=``) and the block-list
(``filter_items=``) of ``recommend``, ``similar_items`` and the streaming / distributed / CLI entry
points, as the one ``blocked`` array every scoring kernel takes.

The conventions are those of ``implicit`` and RecTools: ``items`` ranks only these items,
``filter_items`` never returns these, and both may be given (an item in both is blocked).
Matrix calls take item indices (columns of X); table calls take the model's raw item IDs.
"""

from __future__ import annotations

import warnings

import numpy as np


def _item_indices(values, n_items: int, name: str) -> np.ndarray:
    """(m,) int64 indices from a 1-D array-like of integers in [0, n_items)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D list of item indices, got an array of shape {arr.shape}")
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer item indices (columns of X), got dtype {arr.dtype}; raw item IDs "
                        f"go to the table methods (recommend_table, similar_items_table)")
    bad = (arr < 0) | (arr >= n_items)
    if bad.any():
        raise ValueError(f"{name} holds item index {arr[bad][0].item()!r}, outside the model's 0..{n_items - 1}")
    return arr.astype(np.int64, copy=False)


def raw_to_indices(values, item_ids, name: str, warn: bool = True) -> np.ndarray:
    """Indices of the raw item IDs ``values`` known to the model (``item_ids``: its IdMap); unknown
    IDs are dropped, with a warning that names a few when ``warn``."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D list of item IDs, got an array of shape {arr.shape}")
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    idx = item_ids.lookup(arr, name)
    if warn and (idx < 0).any():
        unknown = arr[idx < 0]
        shown = ", ".join(map(str, unknown[:5]))
        warnings.warn(f"{name}: {unknown.size} item ID(s) unknown to the model were ignored (e.g. {shown})",
                      UserWarning, stacklevel=4)
    return idx[idx >= 0]


def check_blocked(blocked, n_items: int) -> np.ndarray | None:
    """The ``blocked`` argument of the scoring kernels' glue (CPU and GPU twins): None, or uint8 of
    shape (n_items,); ValueError otherwise."""
    if blocked is not None and (blocked.shape != (n_items,) or blocked.dtype != np.uint8):
        raise ValueError(f"blocked must be uint8 of shape ({n_items},), got {blocked.dtype} {blocked.shape}")
    return blocked


def blocked_items(n_items: int, items=None, filter_items=None, item_ids=None, warn: bool = True) -> np.ndarray | None:
    """uint8 (n_items,): 1 for every item a call must not return, or None when none is blocked.

    items : None (every item may be returned) or the allow-list. filter_items : None or the
    block-list. With ``item_ids`` (the model's IdMap) both hold raw item IDs (unknown ones dropped,
    with a warning when ``warn``), else item indices (ValueError outside the catalogue, TypeError when not
    integers).
    """
    if items is None and filter_items is None:
        return None

    def indices(values, name):
        if item_ids is not None:
            return raw_to_indices(values, item_ids, name, warn)
        return _item_indices(values, n_items, name)

    if items is None:
        blocked = np.zeros(n_items, dtype=np.uint8)
    else:
        blocked = np.ones(n_items, dtype=np.uint8)
        blocked[indices(items, "items")] = 0
    if filter_items is not None:
        blocked[indices(filter_items, "filter_items")] = 1
    return blocked
