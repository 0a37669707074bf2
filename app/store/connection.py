"""The SQLite connection the checkpointer and the run store share: aiosqlite, except that its
calls run on the event loop's own thread while callers queue for its lock.

Design record
- aiosqlite runs every call in its worker thread: a queue put, a wake-up of the thread, and a
  `call_soon_threadsafe` back to the loop. The checkpointer and the run store take turns on
  one `asyncio.Lock` and hold it across all the calls of an operation (3-8 for a checkpoint
  read or write). When many runs start at once, their operations queue on that lock, and each
  one holds it for all its hand-offs, each of which waits for the loaded loop to come round
  again: the lock, not SQLite, sets the pace.
- So a call runs inline, on the loop's thread, while at least `INLINE_WHEN_WAITING` callers are
  waiting for the lock: the holder then finishes in one go, and the waiters gain nothing from
  the thread anyway. It shortens the first token when many runs start at once; with fewer
  waiters nothing changes (docs/perf/0012-sqlite-lock.md).
- Why not always inline: SQLite releases the GIL, so in the worker thread its work runs on the
  second core while the loop serves streams. Every call inline, and inline while at most 100
  runs are live, both measured worse than this rule (docs/perf/0012-sqlite-lock.md, "Not kept").
- Order and safety: a call runs inline only when every call handed to the thread has finished
  (counted by the thread itself, so a caller cancelled while its call still runs there does not
  count as finished). The two threads never use the sqlite3 connection at once, and calls run
  in the order they were made. The connection is opened with `check_same_thread=False`.
- Cost of an inline call: it blocks the loop while it runs, for as long as SQLite takes. WAL
  mode and one writing process (app/store/single_writer.py) keep that to the statement itself;
  another process holding the database's write lock would block the loop up to its busy
  timeout, where the thread would only block itself.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import aiosqlite

INLINE_WHEN_WAITING = 4


class CountingLock(asyncio.Lock):
    """An `asyncio.Lock` that counts the callers waiting for it (`waiting`)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = 0

    async def acquire(self) -> Literal[True]:
        if not self.locked():
            return await super().acquire()
        self.waiting += 1
        try:
            return await super().acquire()
        finally:
            self.waiting -= 1


class LoopOrThreadConnection(aiosqlite.Connection):
    """An aiosqlite connection with the lock its users take turns on (`lock`); a call runs
    inline while INLINE_WHEN_WAITING callers wait for that lock and the worker thread has
    nothing queued or running."""

    def __init__(self, connector: Callable[[], sqlite3.Connection]) -> None:
        super().__init__(connector, iter_chunk_size=64)
        self.lock = CountingLock()
        self._queued = 0  # calls handed to the thread; written on the loop's thread only
        self._finished = 0  # of those, finished; written by the worker thread only

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        if self.lock.waiting >= INLINE_WHEN_WAITING and self._queued == self._finished:
            return fn(*args, **kwargs)
        self._queued += 1

        def counted() -> Any:
            try:
                return fn(*args, **kwargs)
            finally:
                self._finished += 1

        return await super()._execute(counted)  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> LoopOrThreadConnection:
        await super().__aenter__()
        return self


def connect(path: Path | str) -> LoopOrThreadConnection:
    """Like `aiosqlite.connect(path)`; await it (or `async with` it) to open."""
    return LoopOrThreadConnection(lambda: sqlite3.connect(str(path), check_same_thread=False))
