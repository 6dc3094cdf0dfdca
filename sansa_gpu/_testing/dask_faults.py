"""Fault injection for the distributed-scoring tests: a Dask worker plugin that kills its worker
process (``os._exit(1)``, as a crash or an OOM kill would) once per job."""

from __future__ import annotations

import os

try:
    from distributed import WorkerPlugin
except ImportError:  # pragma: no cover - only used where dask is installed
    WorkerPlugin = object


class KillOnce(WorkerPlugin):
    """Kill the worker process when the ``nth`` task run in that process (a key containing
    ``key_contains``, when given) finishes, but only once across the cluster: the first process to
    get there creates ``marker`` (exclusively) and dies; the others, and the restarted worker, see it
    and carry on. The finished task's result dies with the process, so the scheduler runs it again."""

    name = "sansa-kill-once"

    def __init__(self, marker: str, nth: int = 3, key_contains: str | None = None):
        self.marker, self.nth, self.key_contains = marker, nth, key_contains
        self.count = 0

    def setup(self, worker):
        self.count = 0

    def transition(self, key, start, finish, **kwargs):
        if start != "executing" or finish != "memory":
            return
        if self.key_contains is not None and self.key_contains not in str(key):
            return
        self.count += 1
        if self.count != self.nth:
            return
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, f"{os.getpid()} {key}\n".encode())
        os.close(fd)
        os._exit(1)
