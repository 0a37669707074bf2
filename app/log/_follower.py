"""A reader of a run another worker runs: the run's events as the process's tail has read them
from its stream (app/log/_tail.py).

Design record
- The events are kept in a memory list, so `after`/`last_id`/`closed` are sync and as cheap
  as a memory log's; every subscriber of the run in this process shares the one follower.
  Events with ids it already has are skipped, so a stream republished after a Redis restart
  gives each event once.
- Ids may skip (recovery's closing events take ids above the lost worker's ceiling), so
  `after` finds the cursor by bisection once they do, by position while they do not.
- The tail reads for it while it is registered there: from its creation until its `end`, or
  until nobody waits and nobody has read for `idle_s`; the next `after`/`wait` registers it
  again, and reading resumes where it stopped.
- `wait` raises `SharedLogUnavailable` once the tail has given up on Redis (past its bound): a
  stream ends without a fake `end`. The next call registers it again.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable, Sequence

from app.engine.codec import LogEvent, decode_chunk
from app.engine.ports import SharedLogUnavailable


class Follower:
    def __init__(self, run_id: str, key: str, register: Callable[[Follower], None]) -> None:
        self.run_id = run_id
        self.key = key
        self.entry = 0  # the last stream entry read is `0-<entry>`
        self.registered = False  # the tail reads for it
        self._register = register
        self._events: list[LogEvent] = []
        self._gaps = False  # some id is not its position
        self._ended = False
        self._failure: str | None = None
        self._shut = False
        self._signal: asyncio.Event | None = None
        self._waiting = 0
        self._active = time.monotonic()

    @property
    def closed(self) -> bool:
        return self._ended

    @property
    def last_id(self) -> int:
        return self._events[-1].id if self._events else 0

    @property
    def tailing(self) -> bool:
        """The tail reads its stream for it."""
        return self.registered

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

    def idle(self, idle_s: float) -> bool:
        return self._waiting == 0 and time.monotonic() - self._active >= idle_s

    def take(self, last: int, field: bytes) -> None:
        """The entry `0-<last>` of its stream (it may be older than what it has)."""
        if last <= self.entry:
            return
        self.entry = last
        have = self.last_id
        for event in decode_chunk(field):
            if event.id <= have:
                continue
            if event.id != len(self._events) + 1:
                self._gaps = True
            self._events.append(event)
            have = event.id
            if event.type == "end":
                self._ended = True
        self._wake()

    def fail(self, problem: str) -> None:
        """The tail gave up on Redis: waiters raise."""
        self._failure = f"{problem} (following run {self.run_id})"
        self._wake()

    def shut(self) -> None:
        """For good (the shared log is closing)."""
        self._shut = True
        self.fail("the shared log is closed")

    def _touch(self) -> None:
        self._active = time.monotonic()
        if not self.registered and not self._ended and not self._shut:
            self._failure = None
            self._register(self)

    def _wake(self) -> None:
        signal, self._signal = self._signal, None
        if signal is not None:
            signal.set()


def _id(event: LogEvent) -> int:
    return event.id
