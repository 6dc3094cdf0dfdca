"""Peak resident memory of this process while a block of code runs (:class:`PeakRss`), sampled by a
thread: what ``tune`` records per trial and the benchmarks per run."""

from __future__ import annotations

import os
import threading


class PeakRss:
    """Peak resident set (bytes) of this process while the block runs, sampled every 20 ms from
    /proc/self/statm (Linux); None elsewhere."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peak = None
        self._stop = threading.Event()

    @staticmethod
    def _rss():
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None

    def _run(self):
        while not self._stop.wait(self.interval):
            r = self._rss()
            if r is not None:
                self.peak = max(self.peak or 0, r)

    def __enter__(self):
        self.peak = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        r = self._rss()
        if r is not None and self.peak is not None:
            self.peak = max(self.peak, r)
        return False
