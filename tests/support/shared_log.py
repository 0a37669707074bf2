"""Reading and writing a shared log's runs in tests, every wait bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from app.engine.codec import LogEvent
from app.engine.ports import EventLog, EventLogReader

DEADLINE_S = 10.0


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await condition():
        assert time.monotonic() < deadline, f"not within {DEADLINE_S} s: {what}"
        await asyncio.sleep(0.01)


async def read(reader: EventLogReader, start: int = 0, limit: int = 1000) -> list[LogEvent]:
    """Every event after `start`, paging with a cursor and waiting, until the reader is closed;
    fails on a repeated or misordered one (a skipped one shows against the owner's log)."""

    async def go() -> list[LogEvent]:
        seen: list[LogEvent] = []
        cursor = start
        while True:
            batch = reader.after(cursor, limit)
            if not batch:
                if reader.closed:
                    return seen
                await reader.wait(cursor)
                continue
            assert batch[0].id > cursor, "after() repeated events"
            assert [e.id for e in batch] == sorted({e.id for e in batch}), "out of order"
            seen.extend(batch)
            cursor = batch[-1].id

    return await asyncio.wait_for(go(), DEADLINE_S)


async def caught_up(reader: EventLogReader, last_id: int) -> None:
    """Wait until the reader has every event up to `last_id`."""
    while reader.last_id < last_id:
        await asyncio.wait_for(reader.wait(reader.last_id), DEADLINE_S)


def finish(log: EventLog, status: str = "completed") -> None:
    log.append("end", {"status": status})
    log.close()
    log.sealed()


def tokens(log: EventLog, n: int, start: int = 1) -> list[LogEvent]:
    return [
        log.append("token", {"node": "llm", "ns": [], "message_id": "m", "text": f"w{i} "})
        for i in range(start, start + n)
    ]
