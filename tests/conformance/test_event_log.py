"""One conformance suite for every `EventLog` (app/engine/ports.py): numbering, replay after any
cursor, waiting, closing, payload bytes, and many readers at once.

Each implementation is one entry of `OPENERS`: an async context manager that yields a
`LogFactory` (a new, empty log for a run id) and cleans up after the test: the memory log, and
the owner's log of the Redis shared log (a memory log whose appends are also published; what
other workers read of it is tests/conformance/test_shared_log.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from pydantic import BaseModel

from app.engine.codec import LogEvent, dumps
from app.engine.ports import EventLog, LogFactory
from app.log.memory import MemoryEventLog
from app.log.redis import RedisSharedLog
from tests.support.redis import REDIS_URL, key_prefix

Check = Callable[[LogFactory], Awaitable[None]]
Run = Callable[[Check], None]

# Long enough for any implementation to deliver, short enough to fail fast.
DEADLINE_S = 5.0
# How long a waiter is given to (wrongly) return before an append.
BLOCKED_S = 0.05


@asynccontextmanager
async def _memory() -> AsyncIterator[LogFactory]:
    yield MemoryEventLog


@asynccontextmanager
async def _redis_owner() -> AsyncIterator[LogFactory]:
    """The owner's log of a run when several workers serve (what it appends is published)."""
    with key_prefix() as (_, prefix):
        shared = RedisSharedLog(REDIS_URL, prefix)
        try:
            yield shared.open
        finally:
            await shared.close()


OPENERS: dict[str, Callable[[], AbstractAsyncContextManager[LogFactory]]] = {
    "memory": _memory,
    "redis-owner": _redis_owner,
}


@pytest.fixture(params=list(OPENERS))
def make_log(request: pytest.FixtureRequest) -> Run:
    """`make_log(check)` runs `await check(new_log)` in a fresh event loop, `new_log(run_id)`
    making logs of one implementation."""
    opener = OPENERS[request.param]

    def run(check: Check) -> None:
        async def main() -> None:
            async with opener() as new_log:
                await check(new_log)

        asyncio.run(main())

    return run


def _fill(log: EventLog, n: int) -> list[LogEvent]:
    return [log.append("token", {"i": i, "text": f"w{i} "}) for i in range(1, n + 1)]


async def _blocked(waiter: asyncio.Future[Any]) -> bool:
    """The waiter is still pending after BLOCKED_S (it waits for something that has not
    happened)."""
    done, _ = await asyncio.wait({waiter}, timeout=BLOCKED_S)
    return not done


def test_a_new_log_is_empty_and_open(make_log: Run) -> None:
    async def check(new_log: LogFactory) -> None:
        log = new_log("r1")
        assert log.last_id == 0
        assert not log.closed
        assert list(log.after(0, 100)) == []

    make_log(check)


def test_append_returns_the_event_numbered_from_1_without_gaps(make_log: Run) -> None:
    async def check(new_log: LogFactory) -> None:
        log = new_log("r1")
        for i in range(1, 51):
            event_type = "token" if i % 2 else "update"
            event = log.append(event_type, {"i": i})
            assert isinstance(event, LogEvent)
            assert (event.id, event.type, event.data) == (i, event_type, {"i": i})
            assert log.last_id == i
        assert [e.id for e in log.after(0, 1000)] == list(range(1, 51))

    make_log(check)


def test_logs_of_different_runs_are_independent(make_log: Run) -> None:
    async def check(new_log: LogFactory) -> None:
        a, b = new_log("r-a"), new_log("r-b")
        waiter = asyncio.ensure_future(b.wait(0))
        _fill(a, 3)
        assert await _blocked(waiter)  # an append to another run's log wakes nobody here
        assert b.last_id == 0 and list(b.after(0, 10)) == []
        assert b.append("metadata", {"run": "b"}).id == 1
        await asyncio.wait_for(waiter, DEADLINE_S)
        a.close()
        assert not b.closed
        assert [e.data for e in b.after(0, 10)] == [{"run": "b"}]
        assert a.last_id == 3

    make_log(check)


@pytest.mark.parametrize("limit", [1, 3, 10_000])
def test_after_replays_exactly_the_events_after_any_cursor(make_log: Run, limit: int) -> None:
    async def check(new_log: LogFactory) -> None:
        log = new_log("r1")
        events = _fill(log, 20)
        for cursor in range(len(events) + 1):
            assert list(log.after(cursor, limit)) == events[cursor : cursor + limit], cursor
        assert list(log.after(len(events), limit)) == []  # caught up
        assert list(log.after(len(events) + 5, limit)) == []  # ahead of the log

    make_log(check)


def test_a_reader_paging_with_its_cursor_reads_every_event_once(make_log: Run) -> None:
    async def check(new_log: LogFactory) -> None:
        log = new_log("r1")
        events = _fill(log, 25)
        seen: list[LogEvent] = []
        cursor = 0
        for _ in range(len(events)):  # bounded: a log that ignores the cursor fails, not hangs
            batch = log.after(cursor, 4)
            if not batch:
                break
            seen.extend(batch)
            cursor = batch[-1].id
        assert seen == events

    make_log(check)


def test_wait_returns_at_once_when_an_event_is_after_the_cursor(make_log: Run) -> None:
    async def check(new_log: LogFactory) -> None:
        log = new_log("r1")
        _fill(log, 3)
        for cursor in range(3):
            await asyncio.wait_for(log.wait(cursor), DEADLINE_S)

    make_log(check)


def test_wait_blocks_until_the_next_append(make_log: Run) -> None:
    async def check(new_log: LogFactory) -> None:
        log = new_log("r1")
        _fill(log, 3)
        waiter = asyncio.ensure_future(log.wait(3))
        assert await _blocked(waiter)
        event = log.append("token", {"i": 4})
        await asyncio.wait_for(waiter, DEADLINE_S)
        assert list(log.after(3, 10)) == [event]

        ahead = asyncio.ensure_future(log.wait(5))  # a cursor ahead of the log waits too
        log.append("token", {"i": 5})
        assert await _blocked(ahead)
        log.append("token", {"i": 6})
        await asyncio.wait_for(ahead, DEADLINE_S)

    make_log(check)


def test_a_wait_given_up_on_leaves_the_log_working(make_log: Run) -> None:
    """Subscribers wait with a timeout (to send pings) and disconnect: a cancelled wait must
    not break the next one."""

    async def check(new_log: LogFactory) -> None:
        log = new_log("r1")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(log.wait(0), BLOCKED_S)
        cancelled = asyncio.ensure_future(log.wait(0))
        waiter = asyncio.ensure_future(log.wait(0))
        assert await _blocked(waiter)
        cancelled.cancel()
        log.append("token", {"i": 1})
        await asyncio.wait_for(waiter, DEADLINE_S)
        assert cancelled.cancelled()

    make_log(check)


def test_closing_wakes_waiters_and_ends_the_log(make_log: Run) -> None:
    async def check(new_log: LogFactory) -> None:
        log = new_log("r1")
        events = _fill(log, 2)
        waiters = [asyncio.ensure_future(log.wait(2)) for _ in range(3)]
        assert await _blocked(waiters[0])
        log.close()
        await asyncio.wait_for(asyncio.gather(*waiters), DEADLINE_S)
        assert log.closed
        await asyncio.wait_for(log.wait(2), DEADLINE_S)  # closed: returns at once
        await asyncio.wait_for(log.wait(100), DEADLINE_S)
        assert list(log.after(0, 10)) == events  # what was appended still replays
        assert log.last_id == 2

    make_log(check)


def test_append_after_close_raises_and_changes_nothing(make_log: Run) -> None:
    async def check(new_log: LogFactory) -> None:
        log = new_log("r1")
        events = _fill(log, 2)
        log.close()
        with pytest.raises(RuntimeError):
            log.append("token", {"i": 3})
        assert log.last_id == 2
        assert list(log.after(0, 10)) == events

    make_log(check)


class _Model(BaseModel):
    name: str
    at: datetime


PAYLOADS: list[Any] = [
    {"node": "llm", "ns": [], "message_id": "m1", "text": 'héllo "wörld"\n\t🙂'},
    ["a", 1, 2.5, True, None, {"nested": {"deep": [1, [2, [3]]]}}],
    "a bare string",
    42,
    None,
    {"message": AIMessage(content="hi", id="ai-1")},  # through app.engine.jsonable
    {"model": _Model(name="x", at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))},
    {"when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)},  # orjson's own encoding
]


def test_payload_bytes_are_what_the_codec_encodes(make_log: Run) -> None:
    async def check(new_log: LogFactory) -> None:
        log = new_log("r1")
        appended = [log.append("custom", data) for data in PAYLOADS]
        for data, event, replayed in zip(PAYLOADS, appended, log.after(0, 100), strict=True):
            assert event.payload == dumps(data)
            assert replayed.payload == dumps(data)
            assert replayed == event

    make_log(check)


def test_a_big_payload_round_trips(make_log: Run) -> None:
    async def check(new_log: LogFactory) -> None:
        log = new_log("r1")
        text = ("x" * 97 + 'é"\n') * (5_000_000 // 100)  # 5 MB, with escapes and non-ASCII
        data = {"node": "llm", "ns": [], "values": text}
        log.append("metadata", {"run_id": "r1"})
        log.append("update", data)
        log.append("end", {"status": "completed"})
        (big,) = log.after(1, 1)
        assert big.payload == dumps(data)
        assert big.data == data
        assert [e.type for e in log.after(0, 10)] == ["metadata", "update", "end"]

    make_log(check)


def test_one_append_wakes_every_waiter(make_log: Run) -> None:
    async def check(new_log: LogFactory) -> None:
        log = new_log("r1")
        waiters = [asyncio.ensure_future(log.wait(0)) for _ in range(100)]
        done, _ = await asyncio.wait(waiters, timeout=BLOCKED_S)
        assert not done
        log.append("token", {"i": 1})
        await asyncio.wait_for(asyncio.gather(*waiters), DEADLINE_S)

    make_log(check)


def test_many_readers_each_get_every_event_once_in_order_while_a_writer_appends(
    make_log: Run,
) -> None:
    """100 readers, each from its own cursor (some start ahead of the log) with its own batch
    size, against a writer appending 2,000 events and yielding now and then."""

    async def check(new_log: LogFactory) -> None:
        log = new_log("r1")
        total = 2000

        async def read(start: int, limit: int) -> list[LogEvent]:
            seen: list[LogEvent] = []
            cursor = start
            while True:
                batch = log.after(cursor, limit)
                if not batch:
                    # Checked at once, so that a broken log fails here instead of looping
                    # without ever suspending.
                    assert log.last_id <= cursor, "after() missed events"
                    if log.closed:
                        return seen
                    await log.wait(cursor)
                    assert log.closed or log.last_id > cursor, "wait() returned too early"
                    continue
                assert batch[0].id == cursor + 1, "after() skipped or repeated events"
                seen.extend(batch)
                cursor = batch[-1].id

        async def write() -> list[LogEvent]:
            events = []
            for i in range(1, total + 1):
                events.append(log.append("token", {"i": i}))
                if i % 37 == 0:
                    await asyncio.sleep(0)
            log.close()
            return events

        starts = [(k * 23) % total for k in range(100)]
        readers = [asyncio.ensure_future(read(s, 1 + k % 7 * 50)) for k, s in enumerate(starts)]
        await asyncio.sleep(0)
        events, *seen = await asyncio.wait_for(asyncio.gather(write(), *readers), 30)
        assert [e.id for e in events] == list(range(1, total + 1))
        for start, got in zip(starts, seen, strict=True):
            assert got == events[start:], start

    make_log(check)
