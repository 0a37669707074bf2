"""The SQLite connection the checkpointer and the run store share (app/store/connection.py): a
call goes to aiosqlite's worker thread unless callers queue on the connection's lock, and
calls never run on two threads at once or out of order."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from app.store.connection import INLINE_WHEN_WAITING, LoopOrThreadConnection, connect

T = TypeVar("T")


class Calls:
    """SQL functions that note where and when they ran: `mark(name)` and `slow(name)` (which
    sleeps SLOW_S inside the statement)."""

    SLOW_S = 0.2

    def __init__(self) -> None:
        self.ran: list[tuple[str, int, float, float]] = []  # name, thread, start, end
        self.started = threading.Event()

    def mark(self, name: str) -> int:
        now = time.monotonic()
        self.ran.append((name, threading.get_ident(), now, now))
        return 1

    def slow(self, name: str) -> int:
        start = time.monotonic()
        self.started.set()
        time.sleep(self.SLOW_S)
        self.ran.append((name, threading.get_ident(), start, time.monotonic()))
        return 1

    def thread_of(self, name: str) -> int:
        return next(thread for n, thread, _, _ in self.ran if n == name)

    def order(self) -> list[str]:
        return [name for name, *_ in sorted(self.ran, key=lambda r: r[2])]


def run(path: Path, body: Callable[[LoopOrThreadConnection, Calls], Awaitable[T]]) -> T:
    async def main() -> T:
        calls = Calls()
        async with connect(path / "db.sqlite") as conn:
            await conn.create_function("mark", 1, calls.mark)
            await conn.create_function("slow", 1, calls.slow)
            return await body(conn, calls)

    return asyncio.run(main())


async def call(conn: LoopOrThreadConnection, fn: str, name: str) -> None:
    async with conn.execute(f"SELECT {fn}(?)", (name,)) as cursor:
        assert await cursor.fetchone() == (1,)


async def queue_on_lock(
    conn: LoopOrThreadConnection, holder: Callable[[], Awaitable[None]]
) -> None:
    """Run `holder()` holding the connection's lock while INLINE_WHEN_WAITING others wait."""
    held = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:
        async with conn.lock:
            held.set()
            await release.wait()
            await holder()

    async def wait_turn() -> None:
        async with conn.lock:
            pass

    holding = asyncio.create_task(hold())
    await held.wait()
    waiters = [asyncio.create_task(wait_turn()) for _ in range(INLINE_WHEN_WAITING)]
    await asyncio.sleep(0)
    assert conn.lock.waiting == INLINE_WHEN_WAITING
    release.set()
    await asyncio.gather(holding, *waiters)
    assert conn.lock.waiting == 0


def test_a_call_runs_in_the_worker_thread_when_nobody_waits(tmp_path: Path) -> None:
    async def body(conn: LoopOrThreadConnection, calls: Calls) -> None:
        await call(conn, "mark", "alone")
        async with conn.lock:
            await call(conn, "mark", "holding the lock, nobody waiting")
        assert calls.thread_of("alone") != threading.get_ident()
        assert calls.thread_of("holding the lock, nobody waiting") != threading.get_ident()

    run(tmp_path, body)


def test_calls_run_on_the_loop_while_callers_queue_on_the_lock(tmp_path: Path) -> None:
    async def body(conn: LoopOrThreadConnection, calls: Calls) -> None:
        async def holder() -> None:
            await call(conn, "mark", "queued behind")
            await conn.execute("CREATE TABLE t (x)")
            await conn.execute("INSERT INTO t VALUES (1)")
            await conn.commit()

        await queue_on_lock(conn, holder)
        assert calls.thread_of("queued behind") == threading.get_ident()
        # What was written inline is there for the worker thread's next call.
        async with conn.execute("SELECT x FROM t") as cursor:
            assert list(await cursor.fetchall()) == [(1,)]

    run(tmp_path, body)


def test_no_call_runs_inline_while_an_abandoned_call_still_runs_in_the_thread(
    tmp_path: Path,
) -> None:
    """A caller cancelled while its call runs in the thread: the call is not finished, so the
    next one waits for the thread, even with callers queued on the lock."""

    async def body(conn: LoopOrThreadConnection, calls: Calls) -> None:
        abandoned = asyncio.create_task(call(conn, "slow", "abandoned"))
        await asyncio.to_thread(calls.started.wait, 5)
        abandoned.cancel()
        await queue_on_lock(conn, lambda: call(conn, "mark", "next"))
        assert calls.thread_of("next") == calls.thread_of("abandoned") != threading.get_ident()
        assert calls.order() == ["abandoned", "next"]

    run(tmp_path, body)


def test_calls_keep_their_order_when_some_are_queued_in_the_thread(tmp_path: Path) -> None:
    async def body(conn: LoopOrThreadConnection, calls: Calls) -> None:
        first = asyncio.create_task(call(conn, "slow", "first"))
        await asyncio.to_thread(calls.started.wait, 5)
        second = asyncio.create_task(call(conn, "mark", "second"))  # queued behind `first`
        await asyncio.sleep(0)
        await queue_on_lock(conn, lambda: call(conn, "mark", "third"))
        await asyncio.gather(first, second)
        assert calls.order() == ["first", "second", "third"]
        # In order because it waited its turn in the thread (inline, it would wait on SQLite's
        # own mutex and race `second` for it).
        assert calls.thread_of("third") == calls.thread_of("first") != threading.get_ident()

    run(tmp_path, body)
