"""The Redis shared log when Redis goes away (a throwaway `redis-server`, killed and started
again empty): the publisher re-syncs, nothing is lost or repeated, failures are reported past
the bound and probes fail meanwhile; a follower gives up past its bound and resumes after. And
on the machine's Redis: a follower nobody reads stops tailing until it is read again; appends
are published once per window; a long run is read in several calls.

Two `RedisSharedLog` instances are two workers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import redis

from app.engine.codec import LogEvent
from app.engine.ports import SharedLogUnavailable
from app.log._redis_stream import READ_BYTES
from app.log._tail import READ_ENTRIES
from app.log.redis import BATCH_EVENTS, RedisSharedLog
from tests.support.redis import REDIS_URL, key_prefix
from tests.support.redis_server import RedisServer
from tests.support.shared_log import DEADLINE_S, caught_up, finish, read, tokens, until

PREFIX = "t"
BOUND_S = 0.5


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(main())


def test_the_publisher_resyncs_after_a_restart_that_lost_the_stream(tmp_path: Path) -> None:
    """A follower that read the first half before the restart ends with every event exactly
    once, and a worker that starts following after it finds the whole run in the stream."""
    with RedisServer(tmp_path) as server:

        async def main() -> None:
            owner, other, late = (RedisSharedLog(server.url, PREFIX) for _ in range(3))
            try:
                log = owner.open("r1")
                tokens(log, 50)
                follower = other.follow("r1")
                await caught_up(follower, 50)
                await asyncio.to_thread(server.stop)
                await asyncio.to_thread(server.start)  # empty: the stream is gone
                tokens(log, 50, start=51)
                finish(log)
                events = list(log.after(0, 200))
                assert await read(follower) == events
                assert list(follower.after(0, 200)) == events
                assert await read(late.follow("r1")) == events
                assert await late.published("r1") == events
            finally:
                for shared in (owner, other, late):
                    await shared.close()

        run(main)


def test_probe_fails_while_redis_is_down_and_on_failure_comes_once_past_the_bound(
    tmp_path: Path,
) -> None:
    with RedisServer(tmp_path) as server:

        async def main() -> None:
            failures: list[tuple[float, str]] = []
            recoveries: list[float] = []
            owner = RedisSharedLog(
                server.url,
                PREFIX,
                retry_bound_s=BOUND_S,
                on_failure=lambda problem: failures.append((time.monotonic(), problem)),
                on_recovered=lambda: recoveries.append(time.monotonic()),
            )
            reader = RedisSharedLog(server.url, PREFIX)
            try:
                await owner.probe()
                log = owner.open("r1")
                tokens(log, 10)
                await caught_up(reader.follow("r1"), 10)

                await asyncio.to_thread(server.stop)
                with pytest.raises(SharedLogUnavailable):
                    await owner.probe()
                down_at = time.monotonic()
                tokens(log, 10, start=11)  # appends go on, without waiting on Redis

                async def reported() -> bool:
                    return bool(failures)

                await until(reported, "on_failure is called")
                assert failures[0][0] - down_at >= BOUND_S * 0.9
                assert "Redis" in failures[0][1]
                with pytest.raises(SharedLogUnavailable, match="Redis"):
                    await owner.probe()
                tries = owner.failed_writes

                async def kept_trying() -> bool:
                    return owner.failed_writes >= tries + 2

                await until(kept_trying, "the publisher keeps trying")
                assert len(failures) == 1 and not recoveries

                await asyncio.to_thread(server.start)

                async def recovered() -> bool:
                    return bool(recoveries)

                await until(recovered, "on_recovered is called")
                await owner.probe()
                assert len(failures) == 1 and len(recoveries) == 1
                finish(log)
                assert await read(reader.follow("r1")) == list(log.after(0, 100))
            finally:
                await owner.close()
                await reader.close()

        run(main)


def test_a_followers_wait_fails_past_the_bound_and_the_next_read_resumes(
    tmp_path: Path,
) -> None:
    with RedisServer(tmp_path) as server:

        async def main() -> None:
            owner = RedisSharedLog(server.url, PREFIX)
            other = RedisSharedLog(server.url, PREFIX, retry_bound_s=BOUND_S)
            try:
                log = owner.open("r1")
                events = tokens(log, 5)
                follower = other.follow("r1")
                await caught_up(follower, 5)

                await asyncio.to_thread(server.stop)
                down_at = time.monotonic()
                with pytest.raises(SharedLogUnavailable, match="r1"):
                    await asyncio.wait_for(follower.wait(5), DEADLINE_S)
                assert time.monotonic() - down_at >= BOUND_S * 0.9
                assert not follower.closed and list(follower.after(0, 10)) == events

                await asyncio.to_thread(server.start)
                more = tokens(log, 5, start=6)
                finish(log)
                assert await read(follower, 5) == [*more, log.after(10, 1)[0]]
            finally:
                await owner.close()
                await other.close()

        run(main)


def test_a_follower_nobody_reads_stops_tailing_until_it_is_read_again() -> None:
    async def main(prefix: str) -> None:
        owner = RedisSharedLog(REDIS_URL, prefix)
        other = RedisSharedLog(REDIS_URL, prefix, follow_idle_s=0.2)
        try:
            log, quiet = owner.open("r1"), owner.open("r2")
            tokens(log, 3)
            tokens(quiet, 3)
            follower, unread = other.follow("r1"), other.follow("r2")
            await caught_up(follower, 3)
            await caught_up(unread, 3)
            waiter = asyncio.ensure_future(follower.wait(3))  # waits as long as it takes

            async def stopped() -> bool:
                return not unread.tailing

            await until(stopped, "the unread follower stops tailing")
            assert follower.tailing  # a waiter keeps it
            assert other.follow("r2") is not unread  # it left the cache
            event = log.append("token", {"text": "4"})
            await asyncio.wait_for(waiter, DEADLINE_S)
            assert list(follower.after(3, 10)) == [event]

            more = tokens(quiet, 2, start=4)
            finish(quiet)
            assert list(unread.after(3, 10)) == []  # the read registers it again
            assert unread.tailing
            assert await read(unread, 3) == [*more, quiet.after(5, 1)[0]]
            finish(log)
        finally:
            await owner.close()
            await other.close()

    with key_prefix() as (_, prefix):
        run(lambda: main(prefix))


def test_appends_within_the_window_go_out_as_one_entry() -> None:
    """A run that yields after every append (a model streaming tokens): one entry per
    publisher window, not one per append or per loop turn."""
    window_s, total = 0.01, 2000

    async def main(conn: redis.Redis, prefix: str) -> None:
        owner = RedisSharedLog(REDIS_URL, prefix, window_s=window_s)
        other = RedisSharedLog(REDIS_URL, prefix)
        try:
            log = owner.open("r1")
            started = time.monotonic()
            for i in range(1, total + 1):
                log.append("token", {"i": i})
                await asyncio.sleep(0)
            elapsed = time.monotonic() - started
            finish(log)
            assert len(await read(other.follow("r1"))) == total + 1
            windows = elapsed / window_s + 1  # each publisher pass but the last waits a window
            early = total / BATCH_EVENTS  # a pass that BATCH_EVENTS waiting appends start
            assert conn.xlen(f"{prefix}:events:r1") <= windows + 2 * early + 1
        finally:
            await owner.close()
            await other.close()

    with key_prefix() as (conn, prefix):
        run(lambda: main(conn, prefix))


def test_a_follower_catches_up_on_a_run_longer_than_one_read() -> None:
    """More entries than one read returns (`READ_ENTRIES`), and more bytes (`READ_BYTES`)."""

    async def main(prefix: str) -> None:
        writer, other = RedisSharedLog(REDIS_URL, prefix), RedisSharedLog(REDIS_URL, prefix)
        try:
            small = [LogEvent.of(i, "token", {"i": i}) for i in range(1, READ_ENTRIES * 2 + 10)]
            for event in small:  # one entry each
                await writer.publish("many", [event])
            big = [LogEvent.of(i, "update", {"v": "x" * (READ_BYTES // 2)}) for i in (1, 2, 3)]
            for event in big:
                await writer.publish("big", [event])
            end = LogEvent.of(len(small) + 1, "end", {"status": "completed"})
            await writer.publish("many", [end])
            await writer.publish("big", [LogEvent.of(4, "end", {"status": "completed"})])
            assert await read(other.follow("many")) == [*small, end]
            got = await read(other.follow("big"))
            assert [e.id for e in got] == [1, 2, 3, 4] and got[:3] == big
        finally:
            await writer.close()
            await other.close()

    with key_prefix() as (_, prefix):
        run(lambda: main(prefix))


def test_after_a_restart_a_dead_pooled_connection_refuses_no_start(tmp_path: Path) -> None:
    """A restart kills every pooled connection; each fails once when next used. The probe a
    run start asks answers from Redis as it is now, not from the publisher's last failure
    (which one dead connection caused): in the clean-clone run a start was refused long after
    Redis was back, whenever the publisher met the next dead connection."""
    with RedisServer(tmp_path) as server:

        async def main() -> None:
            owner = RedisSharedLog(server.url, PREFIX, retry_bound_s=30)
            reader = RedisSharedLog(server.url, PREFIX)
            try:
                log = owner.open("r1")
                tokens(log, 5)
                await caught_up(reader.follow("r1"), 5)
                await asyncio.to_thread(server.stop)
                await asyncio.to_thread(server.start)
                before = owner.failed_writes
                tokens(log, 5, start=6)  # the publisher's next write meets a dead connection

                async def met_it() -> bool:
                    return owner.failed_writes > before

                await until(met_it, "the publisher meets a connection the restart closed")
                await owner.probe()  # Redis answers: a start may go ahead
                await caught_up(reader.follow("r1"), 10)  # and the publisher has recovered
                assert owner.failed_writes == before + 1  # one dead connection met, not each
                await owner.probe()
            finally:
                await owner.close()
                await reader.close()

        run(main)
