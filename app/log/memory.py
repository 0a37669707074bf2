"""The in-process event log: numbered events, replay after any id, wake-ups for live readers.

Design record
- The log is the single source of truth for a run's stream. The run task appends; every
  subscriber (any number) reads from its own cursor, so a slow reader never slows the run or
  another reader: nothing is pushed, each reader pulls what is there when it is ready.
- Ids are the position in the log, from 1, so "events after N" is a slice.
- Each event's payload is encoded once, when it is appended (app/engine/codec.py); all readers
  and the store share the bytes.
- Memory: the log holds the run's events until the run is forgotten (retention). Its size is
  bounded by the run's own limits (MAX_TOKENS_PER_RUN, the timeout), not by how many clients
  watch or how slow they are.
- Waking readers costs nothing when nobody waits: an `asyncio.Event` is created only by a
  waiting reader and set (then dropped) by the next append.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from app.engine.codec import LogEvent, dumps


class MemoryEventLog:
    def __init__(self, run_id: str = "") -> None:
        self.run_id = run_id
        self._events: list[LogEvent] = []
        self._closed = False
        self._signal: asyncio.Event | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def last_id(self) -> int:
        return len(self._events)

    def append(self, event_type: str, data: Any) -> LogEvent:
        if self._closed:
            raise RuntimeError("append to a closed event log")
        event = LogEvent(len(self._events) + 1, event_type, dumps(data))
        self._events.append(event)
        self._wake()
        return event

    def close(self) -> None:
        self._closed = True
        self._wake()

    def sealed(self) -> None:
        return None  # nobody else reads it

    def after(self, cursor: int, limit: int) -> Sequence[LogEvent]:
        start = max(cursor, 0)
        return self._events[start : start + limit]

    async def wait(self, cursor: int) -> None:
        while len(self._events) <= cursor and not self._closed:
            if self._signal is None:
                self._signal = asyncio.Event()
            await self._signal.wait()

    def _wake(self) -> None:
        signal, self._signal = self._signal, None
        if signal is not None:
            signal.set()
