"""What a fitted model keeps between scoring calls, and the one byte budget all models share.

A :class:`ScoringCache` belongs to one fitted model (``SANSA._scoring_cache``): the product plans'
formed B = Wt Z (dense or CSR), the counted structure of B, and on a GPU the device copies of the
weights and the scoring kernel's scratch. Nothing of it lives in a module where two models or two
threads could share it: two models never evict each other's entries by accident, and a thread
never reads another model's B.

Concurrency: each cache has one lock (:attr:`ScoringCache.lock`). :meth:`ScoringCache.get_or_build`
forms an entry under it, so however many threads ask, an entry is formed once and then shared
read-only (the scoring kernels never write B). The GPU glue also holds the lock while it launches
on the model's scratch (the scratch is written by every launch).

Memory: the process has one budget (:func:`set_scoring_cache_budget`; default
:data:`DEFAULT_BUDGET_FRACTION` of the available memory, at most :data:`DEFAULT_BUDGET_MAX_BYTES`)
across all models' host entries. Before an entry is formed, the least recently used entries of
any model are dropped until it fits; an entry larger than the whole budget is refused
(:class:`CacheBudgetExceeded`) and the caller takes a plan without it. A dropped entry a thread
is still scoring with stays alive until that call returns (Python holds it), so the budget bounds
what the caches hold, not those in-flight references. Device entries are not counted against the
host budget: the GPU glue sizes them from free device memory and, on a device out-of-memory,
frees the other models' device entries (:func:`release_device_entries`) before retrying.

Copies (pickling for Dask, ``copy.deepcopy``) of a cache are empty caches: a formed B is never
shipped with a model.
"""

from __future__ import annotations

import collections
import numbers
import threading
import weakref

#: Default budget: this fraction of the available memory (:func:`sansa_gpu.memory.available_memory_bytes`
#: plus what the caches already hold), at most DEFAULT_BUDGET_MAX_BYTES.
DEFAULT_BUDGET_FRACTION = 0.25
DEFAULT_BUDGET_MAX_BYTES = 4 << 30


class CacheBudgetExceeded(MemoryError):
    """An entry larger than the whole scoring-cache budget was asked for."""


class _Budget:
    """The process-wide accounting of every cache's entries (one lock; least recently used first)."""

    def __init__(self):
        # reentrant: a cache garbage-collected while this lock is held (a collection can run at any
        # allocation) forgets its entries from the finaliser, on the same thread
        self.lock = threading.RLock()
        self.limit: int | None = None  # None: the default, re-derived from available memory
        self.order: collections.OrderedDict = collections.OrderedDict()  # (id(cache), name) -> (weakref, nbytes)
        self.held = 0  # host bytes of every cache's entries
        self.peak = 0

    def limit_bytes(self, allocated: int = 0) -> int:
        """The budget now. The default is re-derived from the memory the caches could use: what is
        available, plus what they hold, plus ``allocated`` (an entry formed but not yet counted,
        already missing from the available memory), so forming an entry does not shrink it."""
        if self.limit is not None:
            return self.limit
        from .memory import available_memory_bytes

        return int(min(DEFAULT_BUDGET_MAX_BYTES,
                       DEFAULT_BUDGET_FRACTION * (available_memory_bytes() + self.held + allocated)))

    def touch(self, cache: "ScoringCache", name: str) -> None:
        key = (id(cache), name)
        if key in self.order:
            self.order.move_to_end(key)

    def make_room(self, nbytes: int, allocated: bool = False) -> None:
        """Drop least recently used entries until ``nbytes`` more fit (``allocated``:
        those bytes are already formed). CacheBudgetExceeded, dropping nothing, when they cannot fit
        at all. Lock held."""
        limit = self.limit_bytes(nbytes if allocated else 0)
        if nbytes > limit:
            raise CacheBudgetExceeded(f"{nbytes / 1e9:.3g} GB is more than the whole scoring-cache budget of "
                                      f"{limit / 1e9:.3g} GB (sansa_gpu.set_scoring_cache_budget)")
        for key in list(self.order):
            if self.held + nbytes <= limit:
                break
            entry = self.order.get(key)
            if entry is None:  # forgotten meanwhile by a finaliser
                continue
            cache = entry[0]()
            if cache is None:
                self.forget(key)
            else:
                cache._drop_locked(key[1])

    def add(self, cache: "ScoringCache", name: str, nbytes: int) -> None:
        key = (id(cache), name)
        self.order[key] = (weakref.ref(cache), nbytes)
        self.held += nbytes
        self.peak = max(self.peak, self.held)

    def forget(self, key: tuple) -> None:
        entry = self.order.pop(key, None)
        if entry is not None:
            self.held -= entry[1]


_budget = _Budget()


def set_scoring_cache_budget(nbytes: int | None) -> None:
    """Bytes that the scoring caches of all models in this process may hold together (None: the
    default, 25% of the available memory, at most 4 GB). Lowering it drops least recently used
    entries now."""
    if nbytes is not None:
        if isinstance(nbytes, bool) or not isinstance(nbytes, numbers.Integral) or nbytes < 0:
            raise ValueError(f"the scoring-cache budget must be None or an integer number of bytes >= 0, got {nbytes!r}")
        nbytes = int(nbytes)
    with _budget.lock:
        _budget.limit = nbytes
        _budget.make_room(0)


def scoring_cache_info() -> dict:
    """{'budget_bytes', 'held_bytes', 'peak_bytes', 'entries'} of all models' scoring caches now
    (host entries; peak since the process started or :func:`reset_peak`)."""
    with _budget.lock:
        return {"budget_bytes": _budget.limit_bytes(), "held_bytes": _budget.held, "peak_bytes": _budget.peak,
                "entries": len(_budget.order)}


def reset_peak() -> None:
    with _budget.lock:
        _budget.peak = _budget.held


class ScoringCache:
    """One model's scoring state: named entries, each formed once, with its byte size.

    ``builds`` counts how many times each entry was formed (a test and a benchmark read it).
    Entries of kind 'host' count against the process budget; 'device' entries do not (see the
    module docstring). ``weights``: the weights tuple the entries are formed from (the model
    replaces a cache whose weights are not its current ones). ``budgeted=False``: a cache for one
    call (no model), whose entries neither count against the budget nor evict others'.
    """

    def __init__(self, weights=None, budgeted: bool = True):
        self.weights = weights
        self.budgeted = budgeted
        self.lock = threading.RLock()
        self._entries: dict = {}  # name -> (value, nbytes, kind); changed only under _budget.lock
        self.builds: collections.Counter = collections.Counter()
        self._host_names: set = set()  # the entries the budget counts (the finaliser's copy of the names)
        weakref.finalize(self, _forget_all, id(self), self._host_names)

    @classmethod
    def or_for_call(cls, cache: "ScoringCache | None") -> "ScoringCache":
        """``cache``, or (a direct call, no model) a cache that lives for this call only and takes no
        share of the process budget (it never evicts a model's entries)."""
        return cls(budgeted=False) if cache is None else cache

    def __reduce__(self):  # copies start empty: a formed B never travels with a pickled model
        return (ScoringCache, ())

    def get(self, name: str):
        """The entry ``name`` (marked recently used), or None."""
        with _budget.lock:
            entry = self._entries.get(name)
            if entry is None:
                return None
            _budget.touch(self, name)
            return entry[0]

    def get_or_build(self, name: str, nbytes: int, build, kind: str = "host", oversize: str = "raise"):
        """The entry ``name``, formed by ``build()`` (under this cache's lock, once) if absent.
        ``nbytes``: its size, predicted before forming it so that room is made first. A 'host' entry
        over the whole budget raises :class:`CacheBudgetExceeded` without forming it
        (``oversize='raise'``) or is formed and returned without being kept (``'build'``)."""
        value = self.get(name)
        if value is not None:
            return value
        with self.lock:
            value = self.get(name)
            if value is not None:
                return value
            if kind == "host" and self.budgeted:
                with _budget.lock:
                    try:
                        _budget.make_room(int(nbytes))
                    except CacheBudgetExceeded:
                        if oversize == "raise":
                            raise
                        self.builds[name] += 1
                        return build()
            value = build()
            self.put(name, value, int(nbytes), kind)
            return value

    def put(self, name: str, value, nbytes: int, kind: str = "host") -> bool:
        """Keep ``value`` (formed by the caller) as entry ``name``, replacing any; counted in
        ``builds``. A 'host' value that no longer fits the budget (the default budget follows the
        available memory) is not kept: returns whether it was."""
        with _budget.lock:
            self.builds[name] += 1
            self._drop_locked(name)
            if kind == "host" and self.budgeted:
                try:
                    _budget.make_room(nbytes, allocated=True)
                except CacheBudgetExceeded:
                    return False
                _budget.add(self, name, nbytes)
                self._host_names.add(name)
            self._entries[name] = (value, nbytes, kind)
            return True

    def drop(self, name: str) -> None:
        with _budget.lock:
            self._drop_locked(name)

    def _drop_locked(self, name: str) -> None:
        entry = self._entries.pop(name, None)
        if entry is not None and entry[2] == "host":
            _budget.forget((id(self), name))
            self._host_names.discard(name)

    def clear(self, kind: str | None = None) -> None:
        """Drop every entry (or every entry of ``kind``)."""
        with _budget.lock:
            for name in [n for n, e in self._entries.items() if kind is None or e[2] == kind]:
                self._drop_locked(name)

    def names(self, kind: str | None = None) -> list[str]:
        """The entries held (of ``kind`` only, when given), sorted."""
        with _budget.lock:
            return sorted(n for n, e in self._entries.items() if kind is None or e[2] == kind)

    @property
    def nbytes(self) -> int:
        with _budget.lock:
            return int(sum(e[1] for e in self._entries.values()))


def _forget_all(cache_id: int, names: set) -> None:
    """A cache was garbage-collected: its host entries leave the budget."""
    with _budget.lock:
        for name in list(names):
            _budget.forget((cache_id, name))


_device_caches: "weakref.WeakSet[ScoringCache]" = weakref.WeakSet()
_device_lock = threading.Lock()


def note_device_entries(cache: ScoringCache) -> None:
    """Remember that ``cache`` holds device entries (for :func:`release_device_entries`)."""
    with _device_lock:
        _device_caches.add(cache)


def release_device_entries(keep: ScoringCache | None = None) -> int:
    """Drop the device entries of every model's cache but ``keep`` (after a device out-of-memory);
    returns how many caches had some. Entries in use by a running call stay alive until it ends."""
    with _device_lock:
        caches = [c for c in _device_caches if c is not keep]
    n = 0
    for cache in caches:
        n += bool(cache.names("device"))
        cache.clear("device")
    return n
