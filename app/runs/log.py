"""The run's event log: numbered events, replay after any id, wake-ups for live readers.

Design record
- The log is the single source of truth for a run's stream. The run task appends; every
  subscriber (any number) reads from its own cursor, so a slow reader never slows the run or
  another reader: nothing is pushed, each reader pulls what is there when it is ready.
- Ids are the position in the log, from 1, so "events after N" is a slice.
- Each event's frame is encoded once, when it is appended, and the same bytes are shared by
  all readers and written to the store; only the bytes are kept (see `Event`).
- Memory: the log holds the run's events until the run is forgotten (retention). Its size is
  bounded by the run's own limits (MAX_TOKENS_PER_RUN, the timeout), not by how many clients
  watch or how slow they are.
- Waking readers costs nothing when nobody waits: an `asyncio.Event` is created only by a
  waiting reader and set (then dropped) by the next append.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

import orjson

from app.sse.encoder import encode_json


class Event:
    """One event of a run: its id, type and SSE bytes (`frame`), encoded once when it is made.

    Only the frame is kept: all readers share it and the store writes it. `data` is decoded
    from the frame when asked (a lagging reader merging tokens, tests). Why: a live token event
    that kept its dict beside its frame cost ~480 bytes; the frame alone ~250 (measured with
    tracemalloc), and a run's log lives as long as the run (make bench, scale case)."""

    __slots__ = ("frame", "id", "type")

    def __init__(self, event_id: int, event_type: str, data: dict[str, Any]) -> None:
        self.id = event_id
        self.type = event_type
        self.frame = encode_json(event_id, event_type, data)

    @classmethod
    def from_frame(cls, event_id: int, event_type: str, frame: bytes) -> Event:
        """An event read back from the store, which keeps the frame bytes clients were sent."""
        event = cls.__new__(cls)
        event.id = event_id
        event.type = event_type
        event.frame = frame
        return event

    @property
    def data(self) -> dict[str, Any]:
        start = self.frame.index(b"\ndata: ") + 7
        data: dict[str, Any] = orjson.loads(self.frame[start:].rstrip(b"\n"))
        return data

    def __repr__(self) -> str:
        return f"Event({self.id}, {self.type!r}, {self.data!r})"


class EventLog(Protocol):
    """What the run writes to and subscribers read from (memory now; Redis Streams later).

    `shared` and `boundary` are the readers' own (app/sse/stream.py): the ranges of events
    they merged since the last coalescing window boundary, as `{(cursor, last id): sends}`,
    and the log's last id at that boundary, as `((window, tick), last id)`."""

    shared: dict[tuple[int, int], list[bytes]]
    boundary: tuple[tuple[float, int], int] | None

    @property
    def closed(self) -> bool: ...

    @property
    def last_id(self) -> int: ...

    def append(self, event_type: str, data: dict[str, Any]) -> Event: ...

    def close(self) -> None: ...

    def after(self, cursor: int, limit: int) -> Sequence[Event]: ...

    async def wait(self, cursor: int) -> None: ...


class MemoryEventLog:
    """The in-process event log."""

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._closed = False
        self._signal: asyncio.Event | None = None
        self.shared: dict[tuple[int, int], list[bytes]] = {}
        self.boundary: tuple[tuple[float, int], int] | None = None

    @classmethod
    def of(cls, events: list[Event]) -> MemoryEventLog:
        """A closed log holding `events` (a finished run read back from the store)."""
        log = cls()
        log._events = events
        log._closed = True
        return log

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def last_id(self) -> int:
        return len(self._events)

    def append(self, event_type: str, data: dict[str, Any]) -> Event:
        if self._closed:
            raise RuntimeError("append to a closed event log")
        event = Event(len(self._events) + 1, event_type, data)
        self._events.append(event)
        self._wake()
        return event

    def close(self) -> None:
        self._closed = True
        self._wake()

    def after(self, cursor: int, limit: int) -> Sequence[Event]:
        """Up to `limit` events with id > cursor (empty if none yet)."""
        start = max(cursor, 0)
        return self._events[start : start + limit]

    async def wait(self, cursor: int) -> None:
        """Return once there is an event after `cursor`, or the log is closed."""
        while len(self._events) <= cursor and not self._closed:
            if self._signal is None:
                self._signal = asyncio.Event()
            await self._signal.wait()

    def _wake(self) -> None:
        signal, self._signal = self._signal, None
        if signal is not None:
            signal.set()
