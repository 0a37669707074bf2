"""One conformance suite for every `RunStore` (app/engine/ports.py): the SQLite store (a real
file), the memory store and the PostgreSQL store (the real server, a schema of the test's
own: tests/support/postgres.py). A new store must only pass it."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from app.engine import recovery
from app.engine.codec import LogEvent
from app.engine.idempotency import DEFAULT_TENANT, KeyBinding
from app.engine.ports import RunStore
from app.engine.record import RunRecord, RunStatus, ThreadRecord
from app.store.memory import MemoryRunStore
from app.store.postgres import PostgresRunStore
from app.store.sqlite import MIGRATIONS, SqliteRunStore
from tests.support import postgres

T = TypeVar("T")
Run = Callable[[Callable[[RunStore], Awaitable[T]]], T]


@pytest.fixture(params=["sqlite", "memory", "postgres"])
def with_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Run[Any]]:
    """`with_store(fn)` runs `await fn(store)` on a fresh store of each kind."""
    with ExitStack() as stack:
        url = stack.enter_context(postgres.schema()) if request.param == "postgres" else ""

        def run(fn: Callable[[RunStore], Awaitable[T]]) -> T:
            async def main() -> T:
                store: RunStore
                if request.param == "sqlite":
                    store = await SqliteRunStore.open(tmp_path / "runs.db")
                elif request.param == "postgres":
                    store = await PostgresRunStore.open(url)
                else:
                    store = MemoryRunStore()
                try:
                    return await fn(store)
                finally:
                    await store.close()

            return asyncio.run(main())

        yield run


def _record(run_id: str, thread: str = "t", graph: str = "chat", **kw: Any) -> RunRecord:
    return RunRecord(run_id=run_id, graph=graph, thread_id=thread, **kw)


def _events(run_id: str, n: int) -> list[LogEvent]:
    meta = LogEvent.of(1, "metadata", {"run_id": run_id, "thread_id": "t", "graph": "chat"})
    return [meta] + [
        LogEvent.of(i, "token", {"node": "llm", "ns": [], "message_id": "m", "text": f"w{i} "})
        for i in range(2, n + 1)
    ]


def test_a_saved_record_reads_back_equal(with_store: Run[Any]) -> None:
    async def check(store: RunStore) -> None:
        record = _record("r1", first_token_ms=3.5, usage={"input_tokens": 2}, owner="w1")
        record.finish(RunStatus.COMPLETED, "done", {"input_tokens": 2, "output_tokens": 5})
        await store.save_record(record)
        loaded = await store.load_record("r1")
        assert loaded is not None
        assert loaded.stored() == record.stored()
        assert await store.load_record("nope") is None

    with_store(check)


def test_a_record_saved_again_replaces_the_old_one(with_store: Run[Any]) -> None:
    async def check(store: RunStore) -> None:
        record = _record("r1")
        await store.save_record(record)
        record.finish(RunStatus.CANCELLED, "rollback", {})
        await store.save_record(record)
        loaded = await store.load_record("r1")
        assert loaded is not None and loaded.status is RunStatus.CANCELLED
        assert loaded.reason == "rollback"

    with_store(check)


def test_events_read_back_in_order_and_appending_twice_changes_nothing(
    with_store: Run[Any],
) -> None:
    async def check(store: RunStore) -> None:
        events = _events("r1", 5)
        await store.append_events([("r1", events[:3]), ("other", [])])
        await store.append_events([("r1", events[2:])])  # event 3 again: a retried flush
        loaded = await store.load_events("r1")
        assert loaded == events
        assert await store.load_events("r1", after=3) == events[3:]
        assert await store.last_event_id("r1") == 5
        assert await store.load_events("other") == []
        assert await store.last_event_id("other") == 0

    with_store(check)


def test_a_retried_flush_that_carries_more_events_replaces_the_shorter_one(
    with_store: Run[Any],
) -> None:
    async def check(store: RunStore) -> None:
        events = _events("r1", 6)
        await store.append_events([("r1", events[:3])])
        await store.append_events([("r1", events[:5])])  # the same flush again, grown
        await store.append_events([("r1", events[5:])])
        assert await store.load_events("r1") == events

    with_store(check)


def test_sealing_stores_the_record_and_every_event_in_place_of_the_chunks(
    with_store: Run[Any],
) -> None:
    async def check(store: RunStore) -> None:
        events = _events("r1", 300)
        record = _record("r1")
        await store.save_record(record)
        await store.append_events([("r1", events[:100])])
        await store.append_events([("r1", events[100:200])])
        record.finish(RunStatus.COMPLETED, "done", {})
        await store.seal(record, events)
        assert await store.load_events("r1") == events
        assert await store.load_events("r1", after=250) == events[250:]
        loaded = await store.load_record("r1")
        assert loaded is not None and loaded.status is RunStatus.COMPLETED
        assert await store.running() == []

    with_store(check)


def test_big_payloads_round_trip(with_store: Run[Any]) -> None:
    async def check(store: RunStore) -> None:
        big = LogEvent.of(2, "update", {"node": "llm", "ns": [], "values": "x\n" * 400_000})
        events = [_events("r1", 1)[0], big]
        record = _record("r1")
        record.finish(RunStatus.COMPLETED, "done", {})
        await store.seal(record, events)
        assert await store.load_events("r1") == events

    with_store(check)


def test_a_thread_belongs_to_the_graph_of_its_newest_run(with_store: Run[Any]) -> None:
    async def check(store: RunStore) -> None:
        await store.save_record(_record("r1", thread="t1", graph="chat", created_at="2026-01-01"))
        await store.save_record(_record("r2", thread="t1", graph="agent", created_at="2026-01-02"))
        assert await store.thread_graph("default", "t1") == "agent"
        assert await store.thread_graph("default", "unknown") is None

    with_store(check)


def test_threads_are_per_tenant(with_store: Run[Any]) -> None:
    async def check(store: RunStore) -> None:
        await store.save_record(_record("r1", thread="t1", graph="chat", tenant="alice"))
        await store.save_record(_record("r2", thread="t1", graph="agent", tenant="bob"))
        assert await store.thread_graph("alice", "t1") == "chat"
        assert await store.thread_graph("bob", "t1") == "agent"
        assert await store.thread_graph("default", "t1") is None
        loaded = await store.load_record("r1")
        assert loaded is not None and loaded.tenant == "alice"

    with_store(check)


def test_a_secret_is_created_once_and_then_always_the_same(with_store: Run[Any]) -> None:
    async def check(store: RunStore) -> None:
        first = await store.secret("stream_token", b"a" * 32)
        assert first == b"a" * 32
        assert await store.secret("stream_token", b"b" * 32) == first
        assert await store.secret("other", b"c" * 32) == b"c" * 32

    with_store(check)


def test_sqlite_store_keeps_a_secret_across_reopening(tmp_path: Path) -> None:
    async def main() -> None:
        store = await SqliteRunStore.open(tmp_path / "runs.db")
        created = await store.secret("stream_token", b"s" * 32)
        await store.close()
        reopened = await SqliteRunStore.open(tmp_path / "runs.db")
        try:
            assert await reopened.secret("stream_token", b"other") == created
        finally:
            await reopened.close()

    asyncio.run(main())


def test_recovery_fails_running_runs_of_dead_owners_and_closes_their_logs(
    with_store: Run[Any],
) -> None:
    async def check(store: RunStore) -> None:
        await store.save_record(_record("live", usage={"output_tokens": 3}, owner="dead"))
        await store.append_events([("live", _events("live", 4))])
        await store.save_record(_record("silent", owner="dead"))  # no event reached the disk
        await store.save_record(_record("mine", owner="me"))  # a live worker's run
        done = _record("done")
        done.finish(RunStatus.COMPLETED, "done", {})
        await store.save_record(done)

        recovered = await recovery.recover(store, lambda r: r.owner == "me", "me")
        assert sorted(recovered) == ["live", "silent"]

        live = await store.load_record("live")
        assert live is not None and live.status is RunStatus.FAILED
        assert live.reason == "interrupted_by_restart"
        assert live.error is not None and live.error["code"] == "interrupted_by_restart"
        assert live.ended_at is not None and live.events == 6
        tail = (await store.load_events("live"))[-2:]
        assert [(e.id, e.type) for e in tail] == [(5, "error"), (6, "end")]
        assert tail[1].data["status"] == "failed"
        assert tail[1].data["reason"] == "interrupted_by_restart"

        silent = await store.load_events("silent")
        assert [(e.id, e.type) for e in silent] == [(1, "metadata"), (2, "error"), (3, "end")]
        mine = await store.load_record("mine")
        assert mine is not None and mine.status is RunStatus.RUNNING
        again = await store.load_record("done")
        assert again is not None and again.status is RunStatus.COMPLETED
        assert await recovery.recover(store, lambda r: r.owner == "me", "me") == []

    with_store(check)


def test_an_id_ceiling_is_kept_per_run_and_never_lowered(with_store: Run[Any]) -> None:
    async def check(store: RunStore) -> None:
        assert await store.id_ceiling("r1") == 0
        await store.reserve_ids([("r1", 4096), ("r2", 100)])
        await store.reserve_ids([("r1", 8192)])
        await store.reserve_ids([("r2", 50)])  # lower: ignored
        await store.reserve_ids([])
        assert await store.id_ceiling("r1") == 8192
        assert await store.id_ceiling("r2") == 100
        assert await store.id_ceiling("other") == 0

    with_store(check)


def test_recovery_closes_a_log_above_its_id_ceiling_so_no_sent_id_is_reused(
    with_store: Run[Any],
) -> None:
    """A client may have been sent every id up to the ceiling before any was stored: the
    closing `error`/`end` go above it, whatever reached the disk."""

    async def check(store: RunStore) -> None:
        await store.save_record(_record("ahead", owner="dead"))
        await store.append_events([("ahead", _events("ahead", 10))])
        await store.reserve_ids([("ahead", 4096)])
        await store.save_record(_record("silent", owner="dead"))
        await store.reserve_ids([("silent", 4096)])
        await store.save_record(_record("stored_past", owner="dead"))  # stored above it
        await store.reserve_ids([("stored_past", 5)])
        await store.append_events([("stored_past", _events("stored_past", 8))])

        await recovery.recover(store, lambda r: False, "me")

        ahead = await store.load_events("ahead")
        assert [e.id for e in ahead] == [*range(1, 11), 4097, 4098]
        assert [e.type for e in ahead[-2:]] == ["error", "end"]
        record = await store.load_record("ahead")
        assert record is not None and record.events == 4098
        silent = await store.load_events("silent")
        assert [(e.id, e.type) for e in silent] == [(1, "metadata"), (4097, "error"), (4098, "end")]
        past = await store.load_events("stored_past")
        assert [(e.id, e.type) for e in past[-2:]] == [(9, "error"), (10, "end")]
        assert await store.load_events("ahead", after=4000) == ahead[-2:]

    with_store(check)


def test_purge_forgets_only_runs_that_ended_before_the_cutoff(with_store: Run[Any]) -> None:
    async def check(store: RunStore) -> None:
        old, new, running = _record("old"), _record("new"), _record("running")
        old.finish(RunStatus.COMPLETED, "done", {})
        new.finish(RunStatus.COMPLETED, "done", {})
        old.ended_at = "2020-01-01T00:00:00.000+00:00"
        for record in (old, new, running):
            await store.save_record(record)
            await store.append_events([(record.run_id, _events(record.run_id, 2))])
        assert await store.purge("2021-01-01T00:00:00.000+00:00") == 1
        assert await store.load_record("old") is None
        assert await store.load_events("old") == []
        assert await store.load_record("new") is not None
        assert await store.load_record("running") is not None
        await store.reserve_ids([("old", 10), ("running", 10)])
        old.ended_at = "2020-01-02T00:00:00.000+00:00"
        await store.save_record(old)
        assert await store.purge("2021-01-01T00:00:00.000+00:00") == 1
        assert await store.id_ceiling("old") == 0
        assert await store.id_ceiling("running") == 10

    with_store(check)


def _binding(key: str, run_id: str, at: str, tenant: str = "default") -> KeyBinding:
    return KeyBinding(tenant, key, f"fp-{run_id}", run_id, at)


def test_a_bound_key_is_found_from_its_creation_on(with_store: Run[Any]) -> None:
    async def check(store: RunStore) -> None:
        at = "2030-01-02T00:00:00.000+00:00"
        await store.bind_key(_binding("k1", "r1", at))
        assert await store.find_key("default", "k1", at) == _binding("k1", "r1", at)
        assert await store.find_key("default", "k1", "2030-01-01T00:00:00.000+00:00") is not None
        # created before `since`: expired
        assert await store.find_key("default", "k1", "2030-01-02T00:00:00.001+00:00") is None
        assert await store.find_key("default", "other", at) is None

    with_store(check)


def test_keys_are_per_tenant_and_a_rebinding_replaces_the_old_one(with_store: Run[Any]) -> None:
    async def check(store: RunStore) -> None:
        at, later = "2030-01-02T00:00:00.000+00:00", "2030-01-03T00:00:00.000+00:00"
        await store.bind_key(_binding("k", "r-a", at, tenant="a"))
        await store.bind_key(_binding("k", "r-b", at, tenant="b"))
        found_a = await store.find_key("a", "k", at)
        found_b = await store.find_key("b", "k", at)
        assert found_a is not None and found_a.run_id == "r-a"
        assert found_b is not None and found_b.run_id == "r-b"
        await store.bind_key(_binding("k", "r-a2", later, tenant="a"))
        found = await store.find_key("a", "k", at)
        assert found == _binding("k", "r-a2", later, tenant="a")

    with_store(check)


def test_purge_keys_forgets_only_bindings_created_before_the_cutoff(with_store: Run[Any]) -> None:
    async def check(store: RunStore) -> None:
        since = "2000-01-01T00:00:00.000+00:00"
        await store.bind_key(_binding("old", "r1", "2030-01-01T00:00:00.000+00:00"))
        await store.bind_key(_binding("new", "r2", "2030-01-03T00:00:00.000+00:00"))
        assert await store.purge_keys("2030-01-02T00:00:00.000+00:00") == 1
        assert await store.find_key("default", "old", since) is None
        assert await store.find_key("default", "new", since) is not None

    with_store(check)


def test_sqlite_store_keeps_key_bindings_across_reopening(tmp_path: Path) -> None:
    async def main() -> None:
        at = "2030-01-02T00:00:00.000+00:00"
        store = await SqliteRunStore.open(tmp_path / "runs.db")
        await store.bind_key(_binding("k1", "r1", at))
        await store.close()
        reopened = await SqliteRunStore.open(tmp_path / "runs.db")
        try:
            assert await reopened.find_key("default", "k1", at) == _binding("k1", "r1", at)
        finally:
            await reopened.close()

    asyncio.run(main())


def test_sqlite_store_survives_reopening_and_migrates_once(tmp_path: Path) -> None:
    async def main() -> None:
        store = await SqliteRunStore.open(tmp_path / "runs.db")
        await store.save_record(_record("r1"))
        await store.append_events([("r1", _events("r1", 3))])
        await store.close()
        reopened = await SqliteRunStore.open(tmp_path / "runs.db")
        try:
            assert await reopened.migrate() == len(MIGRATIONS)
            assert (await reopened.load_record("r1")) is not None
            assert len(await reopened.load_events("r1")) == 3
        finally:
            await reopened.close()

    asyncio.run(main())


# -- threads as objects ------------------------------------------------------------------


def _thread(thread_id: str, tenant: str = DEFAULT_TENANT, **kw: Any) -> ThreadRecord:
    return ThreadRecord(thread_id=thread_id, tenant=tenant, **kw)


def _at(second: int) -> str:
    return f"2030-01-01T00:00:{second:02d}.000+00:00"


def test_a_put_thread_reads_back_equal(with_store: Run[Any]) -> None:
    async def check(store: RunStore) -> None:
        thread = _thread(
            "t1", created_at=_at(1), updated_at=_at(2), metadata={"a": [1, {"b": None}]}
        )
        assert await store.put_thread(thread) == thread
        assert await store.get_thread(DEFAULT_TENANT, "t1") == thread
        assert await store.get_thread(DEFAULT_TENANT, "t2") is None

    with_store(check)


def test_putting_a_thread_that_exists_returns_the_stored_one_unchanged(
    with_store: Run[Any],
) -> None:
    async def check(store: RunStore) -> None:
        first = _thread("t1", created_at=_at(1), updated_at=_at(1), metadata={"n": 1})
        await store.put_thread(first)
        again = _thread("t1", created_at=_at(5), updated_at=_at(5), metadata={"n": 2})
        assert await store.put_thread(again) == first
        assert await store.get_thread(DEFAULT_TENANT, "t1") == first

    with_store(check)


def test_of_puts_of_one_thread_at_once_one_wins(with_store: Run[Any]) -> None:
    async def check(store: RunStore) -> None:
        puts = [store.put_thread(_thread("t1", metadata={"n": i})) for i in range(8)]
        results = await asyncio.gather(*puts)
        winner = results[0]
        assert all(r == winner for r in results), results
        assert winner.metadata["n"] in range(8)
        assert await store.get_thread(DEFAULT_TENANT, "t1") == winner

    with_store(check)


def test_threads_of_one_id_are_per_tenant(with_store: Run[Any]) -> None:
    async def check(store: RunStore) -> None:
        alice = await store.put_thread(_thread("t1", "alice", metadata={"who": "alice"}))
        bob = await store.put_thread(_thread("t1", "bob", metadata={"who": "bob"}))
        assert bob.metadata == {"who": "bob"}  # not alice's thread returned as existing
        await store.touch_thread("alice", "t1", _at(9), {"who": "alice2"})
        assert await store.get_thread("bob", "t1") == bob
        assert await store.get_thread(DEFAULT_TENANT, "t1") is None
        found = await store.search_threads("alice", {}, 10, 0)
        assert [(t.tenant, t.metadata) for t in found] == [("alice", {"who": "alice2"})]
        assert alice.tenant == "alice"

    with_store(check)


def test_touching_a_thread_sets_its_time_and_merges_its_metadata_shallowly(
    with_store: Run[Any],
) -> None:
    async def check(store: RunStore) -> None:
        metadata = {"a": 1, "b": {"x": 1}, "c": "keep"}
        await store.put_thread(
            _thread("t1", created_at=_at(1), updated_at=_at(1), metadata=metadata)
        )
        await store.touch_thread(
            DEFAULT_TENANT, "t1", _at(2), {"b": {"y": 2}, "a": None, "d": True}
        )
        touched = await store.get_thread(DEFAULT_TENANT, "t1")
        assert touched == _thread(
            "t1",
            created_at=_at(1),
            updated_at=_at(2),
            metadata={"a": None, "b": {"y": 2}, "c": "keep", "d": True},
        )
        await store.touch_thread(DEFAULT_TENANT, "t1", _at(3))
        again = await store.get_thread(DEFAULT_TENANT, "t1")
        assert again is not None and again.updated_at == _at(3)
        assert again.metadata == touched.metadata
        await store.touch_thread(DEFAULT_TENANT, "nope", _at(4), {"a": 1})  # no record: nothing
        assert await store.get_thread(DEFAULT_TENANT, "nope") is None

    with_store(check)


def test_a_search_finds_threads_with_equal_metadata_newest_first_in_pages(
    with_store: Run[Any],
) -> None:
    async def check(store: RunStore) -> None:
        made = [
            ("t1", 1, {"user": "u1", "tags": ["a", "b"]}),
            ("t2", 2, {"user": "u1", "flag": True}),
            ("t3", 3, {"user": "u2", "flag": 1}),
            ("t5", 4, {"user": "u1", "deep": {"k": 1, "j": 2}}),
            ("t4", 4, {"user": "u1"}),  # the same time as t5: t5 first
        ]
        for thread_id, second, metadata in made:
            await store.put_thread(_thread(thread_id, created_at=_at(second), metadata=metadata))
        await store.put_thread(_thread("t9", "other", created_at=_at(9), metadata={"user": "u1"}))

        async def ids(metadata: dict[str, Any], limit: int = 10, offset: int = 0) -> list[str]:
            found = await store.search_threads(DEFAULT_TENANT, metadata, limit, offset)
            return [t.thread_id for t in found]

        assert await ids({}) == ["t5", "t4", "t3", "t2", "t1"]
        assert await ids({"user": "u1"}) == ["t5", "t4", "t2", "t1"]
        assert await ids({"user": "u1"}, limit=2) == ["t5", "t4"]
        assert await ids({"user": "u1"}, limit=2, offset=2) == ["t2", "t1"]
        assert await ids({"user": "u1"}, limit=2, offset=4) == []
        assert await ids({}, limit=1, offset=1) == ["t4"]
        assert await ids({"user": "u1", "flag": True}) == ["t2"]
        assert await ids({"flag": 1}) == ["t3"]  # JSON's true is not 1
        assert await ids({"flag": 1.0}) == ["t3"]  # and 1 is 1.0
        assert await ids({"user": None}) == []
        assert await ids({"missing": None}) == []  # a key absent is not a null
        assert await ids({"tags": ["a", "b"]}) == ["t1"]
        assert await ids({"tags": ["a"]}) == []  # equal, not contained
        assert await ids({"deep": {"j": 2, "k": 1}}) == ["t5"]
        assert await ids({"deep": {"k": 1}}) == []
        found = await store.search_threads(DEFAULT_TENANT, {"user": "u2"}, 10, 0)
        assert found == [
            _thread(
                "t3",
                created_at=_at(3),
                updated_at=found[0].updated_at,
                metadata={"user": "u2", "flag": 1},
            )
        ]

    with_store(check)


def test_a_threads_runs_are_the_tenants_newest_first_in_pages(with_store: Run[Any]) -> None:
    async def check(store: RunStore) -> None:
        for run_id, second in (("r1", 1), ("r3", 3), ("r2", 2), ("r4", 3)):  # r4 ties r3
            await store.save_record(_record(run_id, thread="t1", created_at=_at(second)))
        await store.save_record(_record("bob", thread="t1", tenant="bob", created_at=_at(5)))
        await store.save_record(_record("other", thread="t2", created_at=_at(5)))

        async def ids(tenant: str = DEFAULT_TENANT, limit: int = 10, offset: int = 0) -> list[str]:
            return [r.run_id for r in await store.thread_runs(tenant, "t1", limit, offset)]

        assert await ids() == ["r4", "r3", "r2", "r1"]
        assert await ids(limit=2, offset=1) == ["r3", "r2"]
        assert await ids("bob") == ["bob"]
        assert await ids("carol") == []
        runs = await store.thread_runs(DEFAULT_TENANT, "t1", 1, 3)

        def kept(record: RunRecord) -> dict[str, Any]:
            # a running record's elapsed_ms is the time since it was made, not stored
            return {k: v for k, v in record.stored().items() if k != "elapsed_ms"}

        assert [kept(r) for r in runs] == [kept(_record("r1", thread="t1", created_at=_at(1)))]

    with_store(check)


def test_deleting_a_thread_forgets_it_and_its_runs_with_their_events(
    with_store: Run[Any],
) -> None:
    async def check(store: RunStore) -> None:
        sealed, live = _record("sealed", thread="t1"), _record("live", thread="t1")
        sealed.finish(RunStatus.COMPLETED, "done", {})
        await store.seal(sealed, _events("sealed", 3))
        await store.save_record(live)
        await store.append_events([("live", _events("live", 2))])
        await store.reserve_ids([("sealed", 4096), ("live", 4096)])
        await store.put_thread(_thread("t1"))
        kept = [
            _record("bob", thread="t1", tenant="bob"),  # another tenant's t1
            _record("t2", thread="t2"),  # another thread of the tenant
        ]
        await store.put_thread(_thread("t1", "bob"))
        for record in kept:
            await store.save_record(record)
            await store.append_events([(record.run_id, _events(record.run_id, 2))])
            await store.reserve_ids([(record.run_id, 10)])

        assert await store.delete_thread(DEFAULT_TENANT, "t1") is True
        assert await store.get_thread(DEFAULT_TENANT, "t1") is None
        assert await store.thread_runs(DEFAULT_TENANT, "t1", 10, 0) == []
        for run_id in ("sealed", "live"):
            assert await store.load_record(run_id) is None
            assert await store.load_events(run_id) == []
            assert await store.last_event_id(run_id) == 0
            assert await store.id_ceiling(run_id) == 0
        assert await store.delete_thread(DEFAULT_TENANT, "t1") is False

        assert await store.get_thread("bob", "t1") is not None
        for record in kept:
            assert await store.load_record(record.run_id) is not None
            assert len(await store.load_events(record.run_id)) == 2
            assert await store.id_ceiling(record.run_id) == 10
        assert await store.delete_thread(DEFAULT_TENANT, "t2") is True  # runs, no record
        assert await store.load_record("t2") is None
        assert await store.delete_thread("bob", "t1") is True
        assert await store.load_record("bob") is None

    with_store(check)


def test_sqlite_store_migrates_version_6_and_finds_the_runs_of_a_thread(tmp_path: Path) -> None:
    """Version 7 adds threads as objects. A version-6 database keeps its runs, which
    `thread_runs` finds, and takes threads."""
    path = tmp_path / "runs.db"

    async def at_version_6() -> None:
        store = await SqliteRunStore.open(path)
        await store.save_record(_record("r1", thread="t1"))
        await store.close()

    asyncio.run(at_version_6())
    with sqlite3.connect(path) as db:  # as version 6 left it
        _undo_version_7(db)

    async def main() -> None:
        store = await SqliteRunStore.open(path)
        try:
            assert [r.run_id for r in await store.thread_runs(DEFAULT_TENANT, "t1", 10, 0)] == [
                "r1"
            ]
            thread = _thread("t1", metadata={"k": "v"})
            assert await store.put_thread(thread) == thread
        finally:
            await store.close()

    asyncio.run(main())
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM svc_schema").fetchone() == (len(MIGRATIONS),)


def _v2_frame(event: LogEvent) -> bytes:
    """How schema version 2 stored an event: the SSE frame clients were sent."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.id, event.type.encode(), event.payload)


def test_sqlite_store_migrates_version_1_and_2_event_logs_without_losing_events(
    tmp_path: Path,
) -> None:
    """Version 1 kept one frame per row, version 2 chunks of frames; version 3 keeps payloads.
    A database written by either must replay the same events after the upgrade: a finished
    run compressed, a running one as it was."""
    path = tmp_path / "runs.db"
    events = _events("r1", 4)
    running = _events("r2", 3)
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE svc_schema (version INTEGER NOT NULL);"
            f"INSERT INTO svc_schema (version) VALUES (1); {MIGRATIONS[0]}"
        )
        db.executemany(
            "INSERT INTO svc_run_events (run_id, id, type, frame) VALUES (?, ?, ?, ?)",
            [("r1", e.id, e.type, _v2_frame(e)) for e in events],
        )
        done = _record("r1")
        done.finish(RunStatus.COMPLETED, "done", {})
        for record in (done, _record("r2")):
            db.execute(
                "INSERT INTO svc_runs (run_id, thread_id, graph, status, created_at, ended_at,"
                " record) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.run_id,
                    record.thread_id,
                    record.graph,
                    record.status.value,
                    record.created_at,
                    record.ended_at,
                    b"{}",
                ),
            )
        assert isinstance(MIGRATIONS[1], str)
        db.executescript(MIGRATIONS[1] + "; UPDATE svc_schema SET version = 2;")
        db.execute(
            "INSERT INTO svc_run_event_chunks (run_id, first_id, last_id, frames)"
            " VALUES (?, ?, ?, ?)",
            ("r2", 1, 3, b"".join(_v2_frame(e) for e in running)),
        )

    async def main() -> None:
        store = await SqliteRunStore.open(path)
        try:
            assert await store.load_events("r1") == events
            assert await store.load_events("r2") == running
        finally:
            await store.close()

    asyncio.run(main())
    with sqlite3.connect(path) as db:
        codecs = dict(db.execute("SELECT run_id, codec FROM svc_event_chunks").fetchall())
        assert codecs == {"r1": 1, "r2": 0}  # the finished run compressed
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "svc_run_event_chunks" not in tables


def test_sqlite_store_migrates_version_4_and_a_cut_off_run_closes_after_its_stored_events(
    tmp_path: Path,
) -> None:
    """Version 5 adds id ceilings. A run cut off under version 4 has none; recovery closes its
    log after its last stored event, as version 4 did, and new ceilings are kept."""
    path = tmp_path / "runs.db"
    running = _events("r1", 3)

    async def at_version_4() -> None:
        store = await SqliteRunStore.open(path)
        await store.save_record(_record("r1", owner="dead"))
        await store.append_events([("r1", running)])
        await store.close()

    asyncio.run(at_version_4())
    with sqlite3.connect(path) as db:  # as version 4 left it
        _undo_version_6(db)
        db.execute("DROP TABLE svc_id_ceilings")
        db.execute("UPDATE svc_schema SET version = 4")

    async def main() -> None:
        store = await SqliteRunStore.open(path)
        try:
            assert await store.id_ceiling("r1") == 0
            await recovery.recover(store, lambda r: False, "me")
            events = await store.load_events("r1")
            assert [(e.id, e.type) for e in events[-2:]] == [(4, "error"), (5, "end")]
            await store.reserve_ids([("r2", 4096)])
            assert await store.id_ceiling("r2") == 4096
        finally:
            await store.close()

    asyncio.run(main())
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM svc_schema").fetchone() == (len(MIGRATIONS),)


def test_sqlite_store_migrates_version_5_runs_to_the_default_tenant(tmp_path: Path) -> None:
    """Version 6 gives runs a tenant and keeps secrets. A version-5 run (no tenant column, a
    record without `tenant`) is the default tenant's: its record and its thread read back as
    before, and no other tenant sees the thread."""
    path = tmp_path / "runs.db"

    async def at_version_5() -> None:
        store = await SqliteRunStore.open(path)
        await store.save_record(_record("r1", thread="t1", graph="approval"))
        await store.close()

    asyncio.run(at_version_5())
    with sqlite3.connect(path) as db:  # as version 5 left it
        _undo_version_6(db)

    async def main() -> None:
        store = await SqliteRunStore.open(path)
        try:
            loaded = await store.load_record("r1")
            assert loaded is not None and loaded.tenant == DEFAULT_TENANT
            assert await store.thread_graph(DEFAULT_TENANT, "t1") == "approval"
            assert await store.thread_graph("alice", "t1") is None
            assert await store.secret("stream_token", b"k" * 32) == b"k" * 32
        finally:
            await store.close()

    asyncio.run(main())
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM svc_schema").fetchone() == (len(MIGRATIONS),)


def _undo_version_7(db: sqlite3.Connection) -> None:
    """Take a database the current version wrote back to version 6: no threads as objects."""
    db.execute("DROP TABLE svc_threads")
    db.execute("UPDATE svc_schema SET version = 6")


def _undo_version_6(db: sqlite3.Connection) -> None:
    """Take a database the current version wrote back to version 5: no tenants, no secrets."""
    _undo_version_7(db)
    for run_id, raw in db.execute("SELECT run_id, record FROM svc_runs").fetchall():
        old = {k: v for k, v in orjson.loads(raw).items() if k != "tenant"}
        db.execute("UPDATE svc_runs SET record = ? WHERE run_id = ?", (orjson.dumps(old), run_id))
    db.execute("DROP INDEX svc_runs_by_thread")
    db.execute("ALTER TABLE svc_runs DROP COLUMN tenant")
    db.execute("CREATE INDEX svc_runs_by_thread ON svc_runs (thread_id, created_at)")
    db.execute("DROP TABLE svc_secrets")
    db.execute("UPDATE svc_schema SET version = 5")


# -- several workers on one store ---------------------------------------------------------


def test_a_thread_has_one_claim_at_a_time(with_store: Run[Any]) -> None:
    async def check(store: RunStore) -> None:
        assert await store.claim_thread("tenant\x00t1", "r1") is None
        assert await store.claim_thread("tenant\x00t1", "r1") is None  # its own claim again
        assert await store.claim_thread("tenant\x00t1", "r2") == "r1"
        assert await store.thread_run("tenant\x00t1") == "r1"
        assert await store.thread_run("tenant\x00t3") is None
        assert await store.claim_thread("tenant\x00t2", "r2") is None  # another thread
        await store.release_thread("tenant\x00t1", "r2")  # not r2's claim: nothing
        assert await store.claim_thread("tenant\x00t1", "r3") == "r1"
        await store.release_thread("tenant\x00t1", "r1")
        assert await store.thread_run("tenant\x00t1") is None
        assert await store.claim_thread("tenant\x00t1", "r3") is None

    with_store(check)


def test_only_claims_made_at_once_see_each_other_one_wins(with_store: Run[Any]) -> None:
    async def check(store: RunStore) -> None:
        results = await asyncio.gather(*(store.claim_thread("t", f"r{i}") for i in range(8)))
        winners = [i for i, holder in enumerate(results) if holder is None]
        assert len(winners) == 1
        assert all(holder == f"r{winners[0]}" for holder in results if holder is not None)

    with_store(check)


def test_a_lease_is_live_from_its_last_heartbeat(with_store: Run[Any]) -> None:
    async def check(store: RunStore) -> None:
        await store.heartbeat("w1", "2026-01-01T00:00:10.000+00:00")
        await store.heartbeat("w2", "2026-01-01T00:00:01.000+00:00")
        await store.heartbeat("w2", "2026-01-01T00:00:12.000+00:00")  # renewed
        await store.heartbeat("w3", "2026-01-01T00:00:02.000+00:00")
        assert await store.live_workers("2026-01-01T00:00:05.000+00:00") == {"w1", "w2"}
        assert await store.live_workers("2026-01-01T00:00:10.000+00:00") == {"w1", "w2"}
        assert await store.live_workers("2026-01-01T00:00:11.000+00:00") == {"w2"}

    with_store(check)


def test_one_worker_takes_over_a_lost_workers_run(with_store: Run[Any]) -> None:
    async def check(store: RunStore) -> None:
        await store.save_record(_record("r1", owner="lost"))
        done = _record("r2", owner="lost")
        done.finish(RunStatus.COMPLETED, "done", {})
        await store.save_record(done)
        results = await asyncio.gather(*(store.take_over("r1", "lost", f"w{i}") for i in range(4)))
        assert sorted(results) == [False, False, False, True]
        winner = f"w{results.index(True)}"
        loaded = await store.load_record("r1")
        assert loaded is not None and loaded.owner == winner
        assert not await store.take_over("r1", "lost", "w9")  # no longer the lost one's
        assert not await store.take_over("r2", "lost", "w9")  # ended: nothing to take over
        assert not await store.take_over("nope", "lost", "w9")

    with_store(check)


def test_cancel_requests_reach_the_owner_of_a_running_run(with_store: Run[Any]) -> None:
    async def check(store: RunStore) -> None:
        await store.save_record(_record("r1", owner="w1"))
        await store.save_record(_record("r2", thread="t2", owner="w2"))
        await store.request_cancel("r1", "rollback")
        await store.request_cancel("r1", "interrupt")  # the first request is kept
        await store.request_cancel("r2", "interrupt")
        await store.request_cancel("nope", "interrupt")
        assert await store.cancel_requests("w1") == [("r1", "rollback")]
        assert await store.cancel_requests("w2") == [("r2", "interrupt")]
        assert await store.cancel_requests("w3") == []
        ended = await store.load_record("r1")
        assert ended is not None
        ended.finish(RunStatus.CANCELLED, "rollback", {})
        await store.save_record(ended)
        assert await store.cancel_requests("w1") == []  # an ended run has nothing to do

    with_store(check)
