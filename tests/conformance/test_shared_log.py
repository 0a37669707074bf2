"""One conformance suite for every `SharedLog` (app/engine/ports.py): what the owner's log holds
reaches a follower on another worker with the same ids and bytes, each event once and in order
from any cursor; appends go out in batches; the terminal events wait for `sealed()`, and only
then may the run's events expire; `published`/`publish` for recovery; one follower per run in
a process.

Each implementation is one entry of `OPENERS`: an async context manager yielding `Workers`
(`new()`: the shared log of one more worker on the same backend; how many stored batches a run
has; the expiry left on a run's events) and closing them after the test. Two workers are two
instances in this process.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from app.engine.codec import LogEvent
from app.engine.ports import SharedLog
from app.log.redis import RedisSharedLog
from tests.support.redis import REDIS_URL, key_prefix
from tests.support.shared_log import DEADLINE_S, caught_up, finish, read, tokens, until

# How long a waiter is given to (wrongly) return.
BLOCKED_S = 0.1
TTL_S = 120.0


@dataclass(frozen=True)
class Workers:
    new: Callable[[], SharedLog]
    entries: Callable[[str], Awaitable[int]]
    """How many stored batches (stream entries) hold the run's events."""
    ttl_s: Callable[[str], Awaitable[float | None]]
    """The time left before the run's events expire (None: they do not)."""


@asynccontextmanager
async def _redis() -> AsyncIterator[Workers]:
    with key_prefix() as (conn, prefix):
        made: list[RedisSharedLog] = []

        def new() -> SharedLog:
            made.append(RedisSharedLog(REDIS_URL, prefix, events_ttl_s=TTL_S))
            return made[-1]

        async def entries(run_id: str) -> int:
            return int(conn.xlen(f"{prefix}:events:{run_id}"))

        async def ttl_s(run_id: str) -> float | None:
            left = int(conn.pttl(f"{prefix}:events:{run_id}"))
            return None if left < 0 else left / 1000

        try:
            yield Workers(new, entries, ttl_s)
        finally:
            for shared in made:
                await shared.close()


OPENERS: dict[str, Callable[[], AbstractAsyncContextManager[Workers]]] = {
    "redis": _redis,
}

Check = Callable[[Workers], Awaitable[None]]
Run = Callable[[Check], None]


@pytest.fixture(params=list(OPENERS))
def make_workers(request: pytest.FixtureRequest) -> Run:
    """`make_workers(check)` runs `await check(workers)` in a fresh event loop."""
    opener = OPENERS[request.param]

    def run(check: Check) -> None:
        async def main() -> None:
            async with opener() as workers:
                await check(workers)

        asyncio.run(main())

    return run


async def _blocked(waiter: asyncio.Future[Any]) -> bool:
    done, _ = await asyncio.wait({waiter}, timeout=BLOCKED_S)
    return not done


def test_a_follower_on_another_worker_reads_the_owners_events_byte_for_byte(
    make_workers: Run,
) -> None:
    async def check(workers: Workers) -> None:
        owner, other = workers.new(), workers.new()
        log = owner.open("r1")
        log.append("metadata", {"run_id": "r1", "thread_id": "t", "graph": "chat"})
        tokens(log, 30)
        log.append("custom", {"text": 'héllo "wörld"\n\t🙂 \u2028', "n": [1, 2.5, None]})
        await asyncio.sleep(0)
        log.append("update", {"node": "llm", "ns": [], "values": ("x" * 97 + 'é"\n') * 20_000})
        log.append("error", {"code": "node_error", "message": "boom"})
        finish(log, "failed")
        got = await read(other.follow("r1"))
        assert got == list(log.after(0, 10_000))
        assert [e.id for e in got] == list(range(1, 36))
        assert [e.type for e in got][-3:] == ["update", "error", "end"]

    make_workers(check)


def test_every_reader_gets_each_event_once_in_order_from_any_cursor(make_workers: Run) -> None:
    """20 readers of one follower, each from its own cursor with its own page size, while the
    owner appends 1,500 events yielding now and then; then every cursor once it has ended."""

    async def check(workers: Workers) -> None:
        owner, other = workers.new(), workers.new()
        log = owner.open("r1")
        follower = other.follow("r1")
        total = 1500

        async def write() -> list[LogEvent]:
            events = []
            for i in range(1, total + 1):
                events.append(log.append("token", {"i": i}))
                if i % 7 == 0:
                    await asyncio.sleep(0)
            finish(log)
            return events

        starts = [(k * 97) % total for k in range(20)]
        readers = [read(follower, s, 1 + k * 13) for k, s in enumerate(starts)]
        events, *seen = await asyncio.gather(write(), *readers)
        events.append(log.after(total, 1)[0])
        for start, got in zip(starts, seen, strict=True):
            assert got == events[start:], start
        for cursor in range(0, total + 2, 37):
            assert list(follower.after(cursor, 50)) == events[cursor : cursor + 50], cursor
        assert follower.last_id == total + 1 and follower.closed

    make_workers(check)


def test_appends_a_few_ms_apart_are_published_in_few_batches(make_workers: Run) -> None:
    async def check(workers: Workers) -> None:
        owner, other = workers.new(), workers.new()
        log = owner.open("r1")
        total = 2000
        for i in range(1, total + 1):
            log.append("token", {"i": i})
            if i % 10 == 0:
                await asyncio.sleep(0)  # a run's task yields between model chunks
        finish(log)
        assert len(await read(other.follow("r1"))) == total + 1
        assert await workers.entries("r1") <= total // 20

    make_workers(check)


def test_a_burst_of_appends_is_published_in_a_handful_of_batches(make_workers: Run) -> None:
    async def check(workers: Workers) -> None:
        owner, other = workers.new(), workers.new()
        log = owner.open("r1")
        tokens(log, 1000)
        finish(log)
        assert len(await read(other.follow("r1"))) == 1001
        assert await workers.entries("r1") <= 3

    make_workers(check)


def test_the_terminal_events_wait_until_the_log_is_sealed(make_workers: Run) -> None:
    async def check(workers: Workers) -> None:
        owner, other = workers.new(), workers.new()
        log = owner.open("r1")
        events = tokens(log, 5)
        log.append("error", {"code": "node_error", "message": "boom"})
        log.append("end", {"status": "failed"})
        log.close()
        follower = other.follow("r1")
        await caught_up(follower, 5)
        assert await _blocked(asyncio.ensure_future(follower.wait(5)))
        assert follower.last_id == 5 and not follower.closed
        assert await other.published("r1") == events
        assert await workers.ttl_s("r1") is None

        log.sealed()
        got = await read(follower)
        assert got == list(log.after(0, 100))
        assert [e.type for e in got[-2:]] == ["error", "end"]

    make_workers(check)


def test_the_events_expire_only_after_the_end(make_workers: Run) -> None:
    async def check(workers: Workers) -> None:
        owner, other = workers.new(), workers.new()
        log = owner.open("r1")
        tokens(log, 50)
        follower = other.follow("r1")
        await caught_up(follower, 50)
        assert await workers.ttl_s("r1") is None  # a live run's events stay
        finish(log)
        await read(follower)

        async def expiring() -> bool:
            return await workers.ttl_s("r1") is not None

        await until(expiring, "the ended run's events get an expiry")
        left = await workers.ttl_s("r1")
        assert left is not None and 0 < left <= TTL_S

    make_workers(check)


def test_publish_closes_a_lost_workers_run_after_what_it_published(make_workers: Run) -> None:
    """Recovery: the run's owner is gone; another worker reads what it published and publishes
    the closing events (ids above its ceiling, so they skip); a third reads the whole run."""

    async def check(workers: Workers) -> None:
        lost, recovering, reading = workers.new(), workers.new(), workers.new()
        assert await recovering.published("r1") == []
        log = lost.open("r1")
        sent = [log.append("metadata", {"run_id": "r1"}), *tokens(log, 40)]

        async def all_published() -> bool:
            return len(await recovering.published("r1")) == len(sent)

        await until(all_published, "the owner's events are published")
        assert await recovering.published("r1") == sent
        closing = [
            LogEvent.of(4097, "error", {"code": "interrupted_by_restart"}),
            LogEvent.of(4098, "end", {"status": "failed"}),
        ]
        await recovering.publish("r1", closing)
        await recovering.publish("r1", closing)  # a retried publish adds nothing
        assert await recovering.published("r1") == sent + closing
        follower = reading.follow("r1")
        assert await read(follower) == sent + closing
        assert follower.closed
        assert list(follower.after(41, 10)) == closing
        assert list(follower.after(4097, 10)) == closing[1:]
        assert list(follower.after(100, 10)) == closing
        left = await workers.ttl_s("r1")
        assert left is not None and 0 < left <= TTL_S

    make_workers(check)


def test_a_follower_made_before_the_first_append_reads_the_run(make_workers: Run) -> None:
    async def check(workers: Workers) -> None:
        owner, other = workers.new(), workers.new()
        follower = other.follow("r1")
        waiter = asyncio.ensure_future(follower.wait(0))
        assert await _blocked(waiter)
        assert follower.last_id == 0 and not follower.closed
        log = owner.open("r1")
        first = log.append("metadata", {"run_id": "r1"})
        await asyncio.wait_for(waiter, DEADLINE_S)
        assert list(follower.after(0, 10)) == [first]
        tokens(log, 3)
        finish(log)
        assert await read(follower) == list(log.after(0, 10))

    make_workers(check)


def test_a_follower_of_an_ended_run_reads_it_whole(make_workers: Run) -> None:
    async def check(workers: Workers) -> None:
        owner, other = workers.new(), workers.new()
        log = owner.open("r1")
        tokens(log, 20)
        finish(log)
        events = list(log.after(0, 100))

        async def ended() -> bool:
            return await other.published("r1") == events

        await until(ended, "the ended run is published")
        follower = other.follow("r1")
        assert await read(follower) == events
        assert follower.closed and follower.last_id == 21

    make_workers(check)


def test_the_followers_of_a_run_in_one_process_are_one(make_workers: Run) -> None:
    async def check(workers: Workers) -> None:
        owner, one, another = workers.new(), workers.new(), workers.new()
        first = one.follow("r1")
        assert one.follow("r1") is first
        assert one.follow("r2") is not first
        assert another.follow("r1") is not first  # another process
        log = owner.open("r1")
        tokens(log, 10)
        finish(log)
        assert await read(first) == await read(one.follow("r1")) == list(log.after(0, 20))

    make_workers(check)
