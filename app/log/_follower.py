"""A reader of a run another worker runs, fed from the run's Redis Stream by a tail task.

Design record
- The tail reads the stream from its first entry (XREAD BLOCK, a pooled connection of its
  own for as long as it blocks) into a memory list, so `after`/`last_id`/`closed` are sync and
  as cheap as a memory log's; every subscriber of the run in this process shares the one
  follower. Events with ids it already has are skipped, so a stream republished after a Redis
  restart gives each event once.
- Ids may skip (recovery's closing events take ids above the lost worker's ceiling), so
  `after` finds the cursor by bisection once they do, by position while they do not.
- The tail stops for good at `end`. It also stops when nobody is waiting and nobody has read
  for `idle_s` (the follower then leaves the cache), and resumes from where it stopped on the
  next `after`/`wait`.
- Redis down: the tail retries with backoff; past `bound_s` it stops, and `wait` raises
  `SharedLogUnavailable` (a stream ends without a fake `end`); the next call starts it again.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Callable, Sequence
from typing import cast

import redis.asyncio as aredis

from app.engine.codec import LogEvent
from app.engine.ports import SharedLogUnavailable
from app.log._redis_stream import DOWN, Backoff, decode_entry

log = logging.getLogger("app.log.redis")

BLOCK_MS = 1000
"""How long one XREAD waits: also how soon an idle tail notices it is idle."""
READ_ENTRIES = 64

XRead = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]


class Follower:
    def __init__(
        self,
        run_id: str,
        key: str,
        client: aredis.Redis,
        idle_s: float,
        bound_s: float,
        on_stop: Callable[[Follower], None],
        on_resume: Callable[[Follower], None],
    ) -> None:
        self.run_id = run_id
        self._key = key
        self._client = client
        self._idle_s = idle_s
        self._bound_s = bound_s
        self._on_stop = on_stop
        self._on_resume = on_resume
        self._events: list[LogEvent] = []
        self._gaps = False  # some id is not its position
        self._entry = b"0-0"  # the last stream entry read
        self._ended = False
        self._failure: str | None = None
        self._signal: asyncio.Event | None = None
        self._waiting = 0
        self._active = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._shut = False
        self._timer: asyncio.TimerHandle | None = None
        self._start()

    @property
    def closed(self) -> bool:
        return self._ended

    @property
    def last_id(self) -> int:
        return self._events[-1].id if self._events else 0

    @property
    def tailing(self) -> bool:
        """Its tail task runs (it reads the stream)."""
        return self._task is not None

    def after(self, cursor: int, limit: int) -> Sequence[LogEvent]:
        self._touch()
        # Ids skip only after a take-over; until then an id is its position.
        start = bisect.bisect_right(self._events, cursor, key=_id) if self._gaps else max(cursor, 0)
        return self._events[start : start + limit]

    async def wait(self, cursor: int) -> None:
        self._touch()
        self._waiting += 1
        try:
            while self.last_id <= cursor and not self._ended:
                if self._failure is not None:
                    raise SharedLogUnavailable(self._failure)
                if self._signal is None:
                    self._signal = asyncio.Event()
                await self._signal.wait()
        finally:
            self._waiting -= 1
            self._active = time.monotonic()

    async def stop(self) -> None:
        """For good (the shared log is closing): waiters get `SharedLogUnavailable`."""
        self._shut = True
        self._failure = f"the shared log is closed (run {self.run_id})"
        if self._timer is not None:
            self._timer.cancel()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        self._wake()

    def _touch(self) -> None:
        self._active = time.monotonic()
        if self._task is None and not self._ended and not self._shut:
            self._start()
            self._on_resume(self)

    def _start(self) -> None:
        self._failure = None
        self._task = asyncio.create_task(self._tail(), name=f"redis-log-tail-{self.run_id}")

    def _idle(self) -> bool:
        return self._waiting == 0 and time.monotonic() - self._active >= self._idle_s

    async def _tail(self) -> None:
        backoff = Backoff(self._bound_s)
        try:
            while not self._ended and not self._idle():
                try:
                    reply = await self._client.xread(
                        {self._key: self._entry}, count=READ_ENTRIES, block=BLOCK_MS
                    )
                except DOWN as exc:
                    delay = backoff.failed()
                    if backoff.past_bound:
                        self._failure = (
                            f"the shared log of run {self.run_id} cannot be read: Redis does "
                            f"not answer ({type(exc).__name__}: {exc})"
                        )
                        log.warning("redis log: %s", self._failure)
                        return
                    await asyncio.sleep(delay)
                    continue
                backoff.succeeded()
                for _key, stream_entries in cast(XRead, reply or ()):
                    for entry, fields in stream_entries:
                        self._take(entry, fields)
        finally:
            if self._task is asyncio.current_task():
                self._task = None
                self._wake()
                if self._ended:
                    self._linger()
                else:
                    self._on_stop(self)

    def _linger(self) -> None:
        """Ended: stay in the cache until idle, for readers still coming."""
        self._timer = None
        if self._shut:
            return
        left = self._idle_s - (time.monotonic() - self._active)
        if self._waiting == 0 and left <= 0:
            self._on_stop(self)
            return
        self._timer = asyncio.get_running_loop().call_later(max(left, 0.01), self._linger)

    def _take(self, entry: bytes, fields: dict[bytes, bytes]) -> None:
        self._entry = entry
        last = self.last_id
        for event in decode_entry(fields):
            if event.id <= last:
                continue
            if event.id != len(self._events) + 1:
                self._gaps = True
            self._events.append(event)
            last = event.id
            if event.type == "end":
                self._ended = True
        self._wake()

    def _wake(self) -> None:
        signal, self._signal = self._signal, None
        if signal is not None:
            signal.set()


def _id(event: LogEvent) -> int:
    return event.id
