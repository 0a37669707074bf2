"""The embedded SQLite store is for one server process; refuse to start a second one on it.

Why: restart recovery marks every run the store says is `running` as interrupted. With two
processes on one file, each would "recover" the other's live runs, and cancel and thread locks
would not cross processes. So the first process holds an exclusive `flock` on the database file
itself for its lifetime, and a second one (another `--workers` process, or another server on the
same file) stops at startup with a message saying what to do instead.

- The lock is on the file, not on a name: `flock` locks the inode, so a symlink, a hard link or
  any other path to the same database meets the same lock, and there is no side file whose
  deletion would let a second server in. The kernel releases it when the holder dies, even by
  SIGKILL.
- SQLite's own locks are POSIX record locks (`fcntl`), which on Linux are independent of
  `flock`, so ours never blocks SQLite. Our descriptor stays open until the SQLite connection has
  closed: closing any descriptor of a file drops the process's POSIX locks on it.
- The holder's pid is read from /proc/locks (Linux) for the message; elsewhere it says
  "another process".
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

ADVICE = (
    "the embedded SQLite store serves one worker process: start one server per database file, "
    "without --workers (or with --workers 1) and without WEB_CONCURRENCY; to use more cores, "
    "run more servers, each with its own DATABASE_URL"
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


def _holder(fd: int) -> str:
    """The pid holding a `flock` on the file open as `fd`, from /proc/locks, if it can tell."""
    info = os.fstat(fd)
    inode = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return "another process"
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == inode:
            return fields[4]
    return "another process"


class SingleWriterLock:
    def __init__(self, database: Path) -> None:
        self.path = database.resolve()
        self._fd: int | None = None

    def acquire(self) -> None:
        workers = requested_workers()
        if workers > 1:
            raise SingleWriterError(f"{workers} workers requested: {ADVICE}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_CREAT: an empty file is an empty SQLite database, which SQLite then sets up.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise SingleWriterError(
                f"{self.path} is already served by process {holder}: {ADVICE}"
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
