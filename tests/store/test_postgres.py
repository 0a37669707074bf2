"""What the PostgreSQL store adds to the RunStore contract (tests/conformance/test_run_store.py
runs that on it too): several workers, each with a pool of its own, start together on one
database and race for the same thread and the same lost run; its data outlives the process; a
server that cannot take writes fails its probe. The machine's real server, a schema per test."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from app.backends import postgres_saver
from app.engine.codec import LogEvent
from app.engine.failures import store_error
from app.engine.idempotency import KeyBinding
from app.engine.record import RunRecord, RunStatus, ThreadRecord
from app.store.postgres import MIGRATIONS, PostgresRunStore
from app.store.postgres_pool import open_pool
from tests.support import postgres

T = TypeVar("T")
WORKERS = 4


def _on_schema(fn: Callable[[str], Coroutine[Any, Any, T]]) -> T:
    with postgres.schema() as url:
        return asyncio.run(fn(url))


async def _workers(url: str) -> list[PostgresRunStore]:
    """`WORKERS` stores opened at once, each on a pool of its own (as worker processes)."""
    return list(await asyncio.gather(*(PostgresRunStore.open(url) for _ in range(WORKERS))))


async def _close(stores: list[PostgresRunStore]) -> None:
    for store in stores:
        await store.close()


def test_workers_starting_together_migrate_the_schema_once() -> None:
    async def main(url: str) -> None:
        stores = await _workers(url)
        try:
            async with stores[0].pool.connection() as conn:
                cur = await conn.execute("SELECT version FROM svc_schema")
                assert await cur.fetchall() == [{"version": len(MIGRATIONS)}]
            assert await stores[1].migrate() == len(MIGRATIONS)
        finally:
            await _close(stores)

    _on_schema(main)


def test_workers_starting_together_set_the_checkpointer_up_once() -> None:
    """LangGraph's saver migrations fail when two run at once (a version row inserted twice,
    a table created twice); the service runs them under an advisory lock."""

    async def one(url: str) -> None:
        async with open_pool(url, 2) as pool:
            await postgres_saver(pool)

    async def main(url: str) -> None:
        await asyncio.gather(*(one(url) for _ in range(WORKERS)))

    _on_schema(main)


def test_of_workers_claiming_one_thread_at_once_one_wins() -> None:
    async def main(url: str) -> None:
        stores = await _workers(url)
        try:
            for round_ in range(5):
                thread = f"tenant\x1ft{round_}"
                claims = [
                    store.claim_thread(thread, f"r{round_}-{i}-{j}")
                    for i, store in enumerate(stores)
                    for j in range(3)
                ]
                results = await asyncio.gather(*claims)
                winners = [r for r in results if r is None]
                assert len(winners) == 1, results
                holder = {r for r in results if r is not None}
                assert len(holder) == 1
                assert await stores[0].claim_thread(thread, "late") == holder.pop()
        finally:
            await _close(stores)

    _on_schema(main)


def test_of_workers_taking_over_one_lost_run_at_once_one_wins() -> None:
    async def main(url: str) -> None:
        stores = await _workers(url)
        try:
            for n in range(5):
                await stores[0].save_record(RunRecord(f"run{n}", "chat", "t", owner="lost"))
                takes = [
                    store.take_over(f"run{n}", "lost", f"w{i}") for i, store in enumerate(stores)
                ]
                results = await asyncio.gather(*takes)
                assert sorted(results) == [False] * (WORKERS - 1) + [True]
                record = await stores[1].load_record(f"run{n}")
                assert record is not None and record.owner == f"w{results.index(True)}"
        finally:
            await _close(stores)

    _on_schema(main)


def _stored(record: RunRecord) -> dict[str, object]:
    """What is stored of a running run, less its time since start (a clock of the process)."""
    return {k: v for k, v in record.stored().items() if k != "elapsed_ms"}


def test_what_the_store_holds_outlives_its_process() -> None:
    async def main(url: str) -> None:
        events = [LogEvent.of(i, "token", {"text": f"w{i}"}) for i in range(1, 4)]
        binding = KeyBinding("default", "k", "fp", "r1", "2030-01-01T00:00:00.000+00:00")
        record = RunRecord("r1", "chat", "t1", owner="w1")
        store = await PostgresRunStore.open(url)
        await store.save_record(record)
        await store.append_events([("r1", events[:2])])
        await store.reserve_ids([("r1", 4096)])
        await store.bind_key(binding)
        secret = await store.secret("stream_token", b"s" * 32)
        await store.close()

        reopened = await PostgresRunStore.open(url)
        try:
            loaded = await reopened.load_record("r1")
            assert loaded is not None and _stored(loaded) == _stored(record)
            assert await reopened.load_events("r1") == events[:2]
            assert await reopened.id_ceiling("r1") == 4096
            assert await reopened.find_key("default", "k", binding.created_at) == binding
            assert await reopened.secret("stream_token", b"other") == secret
            assert [r.run_id for r in await reopened.running()] == ["r1"]
            record.finish(RunStatus.COMPLETED, "done", {})
            await reopened.seal(record, events)
            assert await reopened.load_events("r1", after=1) == events[1:]
        finally:
            await reopened.close()

    _on_schema(main)


def test_a_version_1_schema_migrates_and_finds_the_runs_of_a_thread() -> None:
    """Version 2 adds threads as objects. A version-1 schema keeps its runs, which
    `thread_runs` finds, and takes threads."""

    async def main(url: str) -> None:
        store = await PostgresRunStore.open(url)
        await store.save_record(RunRecord("r1", "chat", "t1"))
        async with store.pool.connection() as conn:  # as version 1 left it
            await conn.execute("DROP TABLE svc_threads")
            await conn.execute("UPDATE svc_schema SET version = 1")
        await store.close()

        reopened = await PostgresRunStore.open(url)
        try:
            runs = await reopened.thread_runs("default", "t1", 10, 0)
            assert [r.run_id for r in runs] == ["r1"]
            thread = ThreadRecord("t1", metadata={"k": "v"})
            assert await reopened.put_thread(thread) == thread
            async with reopened.pool.connection() as conn:
                cur = await conn.execute("SELECT version FROM svc_schema")
                assert await cur.fetchall() == [{"version": len(MIGRATIONS)}]
        finally:
            await reopened.close()

    _on_schema(main)


def test_a_server_that_cannot_take_writes_fails_the_probe_as_a_store_error() -> None:
    async def main(url: str) -> None:
        store = await PostgresRunStore.open(url)
        await store.probe()
        await store.close()
        read_only = url.replace("options=", "options=-cdefault_transaction_read_only%3Don%20")
        async with open_pool(read_only, 2) as pool:
            with pytest.raises(OSError, match="read-only") as failed:
                await PostgresRunStore(pool).probe()
        assert failed.value.errno == errno.EROFS
        assert store_error(failed.value) is not None

    _on_schema(main)
