"""The embedded SQLite store is for one server process; refuse to start a second one on it.

Why: restart recovery marks every run the store says is `running` as interrupted. With two
processes on one file, each would "recover" the other's live runs, and cancel and thread locks
would not cross processes. So the first process holds an exclusive lock on `<db>.lock` for its
lifetime, and a second one (another `--workers` process, or another server on the same file)
stops at startup with a message saying what to do instead. The lock is an `flock`, so the
kernel releases it when the holder dies, even by SIGKILL.
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path
from typing import IO

ADVICE = (
    "the embedded SQLite store serves one worker process; run a single worker, or use "
    "DATABASE_URL=postgresql://... and REDIS_URL for several"
)


class SingleWriterError(RuntimeError):
    """Another process serves this SQLite database, or several workers were asked for."""


def requested_workers(argv: list[str] | None = None, env: dict[str, str] | None = None) -> int:
    """How many worker processes the server command line (or WEB_CONCURRENCY) asked for.

    uvicorn's worker processes are spawned with the parent's `sys.argv`, so this sees
    `--workers N` from inside a worker too.
    """
    argv = sys.argv if argv is None else argv
    env = dict(os.environ) if env is None else env
    for i, arg in enumerate(argv):
        value = None
        if arg in ("--workers", "-w") and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--workers="):
            value = arg.split("=", 1)[1]
        if value is not None and value.isdigit():
            return int(value)
    concurrency = env.get("WEB_CONCURRENCY", "")
    return int(concurrency) if concurrency.isdigit() else 1


class SingleWriterLock:
    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + ".lock")
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        workers = requested_workers()
        if workers > 1:
            raise SingleWriterError(f"{workers} workers requested: {ADVICE}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise SingleWriterError(
                f"{self.path.with_suffix('')} is already served by process {holder}: {ADVICE}"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
