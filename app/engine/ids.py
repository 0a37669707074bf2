"""Event ids never repeat, not even across a crash: the store holds a ceiling per run, and no
reader is sent an id above it.

Design record
- Why: live events reach clients before they are written (the persister writes every
  `EVENT_FLUSH_S`), so a client is usually ahead of the database. If recovery appended `error`
  and `end` after the last *stored* id, they would take ids the client had already been sent,
  and a client reconnecting with its `Last-Event-ID` would get `204` and never its ending.
- How (a sequence cache, as databases hand out sequence values): the store keeps a ceiling per
  run (`RunStore.reserve_ids`), the highest id the run may have sent. Readers of a live run see
  its log only up to that ceiling (`ReservedLog`); recovery gives the closing events ids above
  it (app/engine/recovery.py). Ids may then skip after a crash; they never repeat.
- Cost: one write per range, never one per token. The first range (`ID_RANGE`) is reserved with
  the run's record when it starts; the persister raises the ceiling ahead of need on its
  regular pass (`next_ceiling`), by at least `ID_RANGE` and by `AHEAD_S` of a fast run's
  events, in one write for all runs. So a run's task never waits, and in the common case its
  readers never reach the ceiling. A reader that does (a burst faster than the reservation,
  or the first range of a very fast run) wakes the persister and waits for that one write.
  Events already stored count as reserved too: recovery writes above them anyway.
- If the database cannot be written, a live run's readers stop at its ceiling until it can: an
  id is not sent unless a crash could not give it to another event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from app.engine.codec import LogEvent
from app.engine.ports import EventLogReader

ID_RANGE = 4096
"""Ids reserved at a time: the ceiling is raised when fewer than half are left."""

AHEAD_S = 2.0
"""A fast run reserves at least this many seconds of its events ahead."""


def next_ceiling(last_id: int, ceiling: int, rate: float) -> int | None:
    """The ceiling to reserve for a run whose log is at `last_id` and grows by `rate` events a
    second, or None while the current one is still ahead by half a range."""
    ahead = max(ID_RANGE, int(rate * AHEAD_S))
    if ceiling - last_id >= ahead // 2:
        return None
    return last_id + ahead


class ReservedLog:
    """A live run's log as its readers see it: the events up to the reserved ceiling.

    `blocked` counts the times a reader found events waiting above the ceiling (the uncommon
    case: each costs that reader one store write's wait)."""

    def __init__(self, log: EventLogReader, on_blocked: Callable[[], None]) -> None:
        self._log = log
        self._on_blocked = on_blocked
        self.ceiling = 0
        self.blocked = 0
        self._raised: asyncio.Event | None = None

    def raise_to(self, ceiling: int) -> None:
        """Ids up to `ceiling` are reserved in the store (or stored): readers may be sent them."""
        if ceiling <= self.ceiling:
            return
        self.ceiling = ceiling
        signal, self._raised = self._raised, None
        if signal is not None:
            signal.set()

    @property
    def closed(self) -> bool:
        return self._log.closed and self._log.last_id <= self.ceiling

    @property
    def last_id(self) -> int:
        last = self._log.last_id
        return last if last <= self.ceiling else self.ceiling

    def after(self, cursor: int, limit: int) -> Sequence[LogEvent]:
        room = self.ceiling - cursor
        if room <= 0:
            return ()
        return self._log.after(cursor, limit if limit <= room else room)

    async def wait(self, cursor: int) -> None:
        while cursor >= self.ceiling:
            if self._log.last_id <= cursor:
                if self._log.closed:
                    return
                await self._log.wait(cursor)  # nothing yet: wait for it, then look again
                continue
            self.blocked += 1
            if self._raised is None:
                self._raised = asyncio.Event()
            raised = self._raised
            self._on_blocked()
            await raised.wait()
        await self._log.wait(cursor)
