"""The embedded store: run records and event logs in the SQLite file that holds the checkpoints.

In the service it shares the checkpointer's connection and lock (`SqliteRunStore.on(saver)`): one
connection, one writer thread, so our writes and LangGraph's are serialized in the process and
never meet as two SQLite writers. (With a connection each, WAL let both write, but a checkpoint
write under load failed with "database is locked": a deferred transaction that must upgrade
from read to write gets SQLITE_BUSY at once, busy timeout or not.)

The schema is ours (tables prefixed `svc_`) and versioned: `MIGRATIONS[n]` takes the database
from version n to n+1 (SQL, or a Python step), applied in order at startup, each in one
transaction.

Events are stored as chunks of `(id, type, payload)` (app/engine/codec.py), never as a wire
format: one raw chunk per flush while a run is live, and one compressed chunk for the whole run
once it has ended (`seal`). Why chunks: a row per token made each token measurably dearer than
with the memory store (docs/perf/0005-event-storage.md). Why compressed: finished runs are kept
for RUN_RETENTION_S, and token payloads repeat their head.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite
import orjson

from app.engine import codec
from app.engine.codec import LogEvent
from app.engine.idempotency import KeyBinding
from app.engine.record import RunRecord, RunStatus, ThreadRecord
from app.store._chunks import events_after, raw_rows, sealed_data
from app.store._threads import matches
from app.store.one_process import OneProcessCoordination

if TYPE_CHECKING:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

# Below this much free space on the database's file system the store says it cannot be written.
# Why not wait for a write to fail: SQLite reuses the pages of its WAL file, so small writes
# can still succeed on a full disk while the next checkpoint (or one that grows the file)
# fails; a run would then go on writing nothing durable.
MIN_FREE_BYTES = 4 * 1024 * 1024

Migration = str | Callable[[aiosqlite.Connection], Awaitable[None]]


async def _payload_chunks(conn: aiosqlite.Connection) -> None:
    """2 -> 3: chunks of SSE frames become chunks of `(id, type, payload)`: the log and the
    store hold no wire format. A finished run's chunks become one compressed chunk."""
    await conn.execute(
        """CREATE TABLE svc_event_chunks (
            run_id   TEXT NOT NULL,
            first_id INTEGER NOT NULL,
            last_id  INTEGER NOT NULL,
            codec    INTEGER NOT NULL,
            data     BLOB NOT NULL,
            PRIMARY KEY (run_id, first_id)
        ) WITHOUT ROWID"""
    )
    async with conn.execute(
        "SELECT c.run_id, c.frames, r.ended_at FROM svc_run_event_chunks c"
        " LEFT JOIN svc_runs r ON r.run_id = c.run_id ORDER BY c.run_id, c.first_id"
    ) as cursor:
        rows: Any = await cursor.fetchall()
    runs: dict[str, tuple[bool, list[LogEvent]]] = {}
    for run_id, frames, ended_at in rows:
        _, events = runs.setdefault(run_id, (ended_at is not None, []))
        for event in split_frames(bytes(frames)):
            if not events or event.id > events[-1].id:
                events.append(event)
    for run_id, (ended, events) in runs.items():
        data = codec.encode_chunk(events)
        kind = codec.RAW
        if ended:
            data, kind = codec.compress_chunk(data), codec.ZLIB
        await conn.execute(
            "INSERT INTO svc_event_chunks (run_id, first_id, last_id, codec, data)"
            " VALUES (?, ?, ?, ?, ?)",
            (run_id, events[0].id, events[-1].id, kind, data),
        )
    await conn.execute("DROP TABLE svc_run_event_chunks")


MIGRATIONS: list[Migration] = [
    # 0 -> 1: run records and event logs.
    """
    CREATE TABLE svc_runs (
        run_id     TEXT PRIMARY KEY,
        thread_id  TEXT NOT NULL,
        graph      TEXT NOT NULL,
        status     TEXT NOT NULL,
        created_at TEXT NOT NULL,
        ended_at   TEXT,
        record     BLOB NOT NULL
    );
    CREATE INDEX svc_runs_by_thread ON svc_runs (thread_id, created_at);
    CREATE INDEX svc_runs_by_status ON svc_runs (status);
    CREATE INDEX svc_runs_by_end ON svc_runs (ended_at);
    CREATE TABLE svc_run_events (
        run_id TEXT NOT NULL,
        id     INTEGER NOT NULL,
        type   TEXT NOT NULL,
        frame  BLOB NOT NULL,
        PRIMARY KEY (run_id, id)
    ) WITHOUT ROWID;
    """,
    # 1 -> 2: a run's events as chunks, one row per flush (the frames joined), not one per
    # event. Old rows become one-event chunks.
    """
    CREATE TABLE svc_run_event_chunks (
        run_id   TEXT NOT NULL,
        first_id INTEGER NOT NULL,
        last_id  INTEGER NOT NULL,
        frames   BLOB NOT NULL,
        PRIMARY KEY (run_id, first_id)
    ) WITHOUT ROWID;
    INSERT INTO svc_run_event_chunks (run_id, first_id, last_id, frames)
        SELECT run_id, id, id, frame FROM svc_run_events;
    DROP TABLE svc_run_events;
    """,
    # 2 -> 3
    _payload_chunks,
    # 3 -> 4: idempotency keys, per tenant, each bound to the run it created.
    """
    CREATE TABLE svc_idempotency_keys (
        tenant      TEXT NOT NULL,
        key         TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        run_id      TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        PRIMARY KEY (tenant, key)
    ) WITHOUT ROWID;
    CREATE INDEX svc_idempotency_keys_by_age ON svc_idempotency_keys (created_at);
    """,
    # 4 -> 5: each run's id ceiling (app/engine/ids.py). A run cut off under an older version
    # has none: its log is closed after its last stored event, as those versions did.
    """
    CREATE TABLE svc_id_ceilings (
        run_id  TEXT PRIMARY KEY,
        ceiling INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    # 5 -> 6: runs belong to a tenant (app/engine/tenancy.py; older runs are the default
    # tenant's, "default"), threads are looked up per tenant; secrets the service keeps (the
    # stream token key when STREAM_TOKEN_SECRET is unset).
    """
    ALTER TABLE svc_runs ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
    DROP INDEX svc_runs_by_thread;
    CREATE INDEX svc_runs_by_thread ON svc_runs (tenant, thread_id, created_at);
    CREATE TABLE svc_secrets (
        name  TEXT PRIMARY KEY,
        value BLOB NOT NULL
    ) WITHOUT ROWID;
    """,
    # 6 -> 7: threads created as objects (LangGraph's `POST /threads`), per tenant, with their
    # metadata (JSON text). A thread's runs are found by svc_runs_by_thread (version 6).
    """
    CREATE TABLE svc_threads (
        tenant     TEXT NOT NULL,
        thread_id  TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        metadata   TEXT NOT NULL,
        PRIMARY KEY (tenant, thread_id)
    ) WITHOUT ROWID;
    CREATE INDEX svc_threads_by_age ON svc_threads (tenant, created_at, thread_id);
    """,
]


_THREAD_COLUMNS = "thread_id, created_at, updated_at, metadata"


def _thread_record(tenant: str, row: Any) -> ThreadRecord:
    thread_id, created_at, updated_at, metadata = row
    return ThreadRecord(thread_id, tenant, created_at, updated_at, orjson.loads(metadata))


def split_frames(frames: bytes) -> list[LogEvent]:
    """The events of a version-2 chunk: SSE frames joined (`id: N\\nevent: T\\ndata: JSON\\n\\n`;
    compact JSON never holds a raw newline). Only the 2 -> 3 migration reads them."""
    events = []
    start = 0
    while start < len(frames):
        end = frames.index(b"\n\n", start) + 2
        id_end = frames.index(b"\n", start)
        type_end = frames.index(b"\n", id_end + 1)
        event_id = int(frames[start + 4 : id_end])  # after "id: "
        event_type = frames[id_end + 8 : type_end].decode()  # after "\nevent: "
        payload = frames[type_end + 7 : end - 2]  # after "\ndata: ", before "\n\n"
        events.append(LogEvent(event_id, event_type, payload))
        start = end
    return events


class SqliteRunStore(OneProcessCoordination):
    def __init__(
        self, conn: aiosqlite.Connection, lock: asyncio.Lock, owns_conn: bool, path: Path
    ) -> None:
        super().__init__()
        self._conn = conn
        self._lock = lock
        self._owns_conn = owns_conn
        self._path = path

    @classmethod
    async def on(cls, saver: AsyncSqliteSaver, path: Path) -> SqliteRunStore:
        """The store on the checkpointer's own connection (to the database at `path`), taking
        turns with it on its lock."""
        store = cls(saver.conn, saver.lock, owns_conn=False, path=path)
        await store.migrate()
        return store

    @classmethod
    async def open(cls, path: Path) -> SqliteRunStore:
        """A store with a connection of its own (tools and tests)."""
        conn = await aiosqlite.connect(path)
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA busy_timeout=5000")
            store = cls(conn, asyncio.Lock(), owns_conn=True, path=path)
            await store.migrate()
        except BaseException:
            await conn.close()  # else its worker thread keeps the process from exiting
            raise
        return store

    async def migrate(self) -> int:
        """Bring the schema to the newest version; return that version."""
        async with self._lock:
            return await self._migrate()

    async def _migrate(self) -> int:
        await self._conn.execute("CREATE TABLE IF NOT EXISTS svc_schema (version INTEGER NOT NULL)")
        async with self._conn.execute("SELECT version FROM svc_schema") as cursor:
            row = await cursor.fetchone()
        version = row[0] if row else 0
        if row is None:
            await self._conn.execute("INSERT INTO svc_schema (version) VALUES (0)")
            await self._conn.commit()
        for target, step in enumerate(MIGRATIONS[version:], start=version + 1):
            if isinstance(step, str):
                await self._conn.executescript(
                    f"BEGIN; {step}; UPDATE svc_schema SET version = {target}; COMMIT;"
                )
                continue
            await self._conn.execute("BEGIN")
            try:
                await step(self._conn)
                await self._conn.execute("UPDATE svc_schema SET version = ?", (target,))
            except BaseException:
                await self._conn.rollback()
                raise
            await self._conn.commit()
        return len(MIGRATIONS)

    async def save_record(self, record: RunRecord) -> None:
        async with self._lock:
            await self._put_record(record)
            await self._conn.commit()

    async def _put_record(self, record: RunRecord) -> None:
        await self._conn.execute(
            "INSERT OR REPLACE INTO svc_runs"
            " (run_id, tenant, thread_id, graph, status, created_at, ended_at, record)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.run_id,
                record.tenant,
                record.thread_id,
                record.graph,
                record.status.value,
                record.created_at,
                record.ended_at,
                orjson.dumps(record.stored()),
            ),
        )

    async def append_events(self, batches: Sequence[tuple[str, Sequence[LogEvent]]]) -> None:
        rows = raw_rows(batches)  # a retried flush replaces its chunk (app/store/_chunks.py)
        if not rows:
            return
        async with self._lock:
            await self._conn.executemany(
                "INSERT OR REPLACE INTO svc_event_chunks (run_id, first_id, last_id, codec, data)"
                " VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            await self._conn.commit()

    async def seal(self, record: RunRecord, events: Sequence[LogEvent]) -> None:
        data = await sealed_data(events)
        async with self._lock:
            await self._conn.execute(
                "DELETE FROM svc_event_chunks WHERE run_id = ?", (record.run_id,)
            )
            if events:
                await self._conn.execute(
                    "INSERT INTO svc_event_chunks (run_id, first_id, last_id, codec, data)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (record.run_id, events[0].id, events[-1].id, codec.ZLIB, data),
                )
            await self._put_record(record)
            await self._conn.commit()

    async def load_record(self, run_id: str) -> RunRecord | None:
        async with (
            self._lock,
            self._conn.execute("SELECT record FROM svc_runs WHERE run_id = ?", (run_id,)) as cursor,
        ):
            row = await cursor.fetchone()
        return RunRecord.from_dict(orjson.loads(row[0])) if row else None

    async def load_events(self, run_id: str, after: int = 0) -> list[LogEvent]:
        async with (
            self._lock,
            self._conn.execute(
                "SELECT codec, data FROM svc_event_chunks WHERE run_id = ? AND last_id > ?"
                " ORDER BY first_id",
                (run_id, after),
            ) as cursor,
        ):
            rows: Any = await cursor.fetchall()
        return events_after(rows, after)

    async def last_event_id(self, run_id: str) -> int:
        async with (
            self._lock,
            self._conn.execute(
                "SELECT max(last_id) FROM svc_event_chunks WHERE run_id = ?", (run_id,)
            ) as cursor,
        ):
            row = await cursor.fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    async def reserve_ids(self, ceilings: Sequence[tuple[str, int]]) -> None:
        if not ceilings:
            return
        async with self._lock:
            await self._conn.executemany(
                "INSERT INTO svc_id_ceilings (run_id, ceiling) VALUES (?, ?)"
                " ON CONFLICT (run_id) DO UPDATE SET ceiling = max(ceiling, excluded.ceiling)",
                ceilings,
            )
            await self._conn.commit()

    async def id_ceiling(self, run_id: str) -> int:
        async with (
            self._lock,
            self._conn.execute(
                "SELECT ceiling FROM svc_id_ceilings WHERE run_id = ?", (run_id,)
            ) as cursor,
        ):
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def thread_graph(self, tenant: str, thread_id: str) -> str | None:
        async with (
            self._lock,
            self._conn.execute(
                "SELECT graph FROM svc_runs WHERE tenant = ? AND thread_id = ?"
                " ORDER BY created_at DESC LIMIT 1",
                (tenant, thread_id),
            ) as cursor,
        ):
            row = await cursor.fetchone()
        return str(row[0]) if row else None

    async def running(self) -> list[RunRecord]:
        async with (
            self._lock,
            self._conn.execute(
                "SELECT record FROM svc_runs WHERE status = ?", (RunStatus.RUNNING.value,)
            ) as cursor,
        ):
            rows: Any = await cursor.fetchall()
        return [RunRecord.from_dict(orjson.loads(raw)) for (raw,) in rows]

    async def put_thread(self, thread: ThreadRecord) -> ThreadRecord:
        async with self._lock:
            await self._conn.execute(
                "INSERT OR IGNORE INTO svc_threads"
                " (tenant, thread_id, created_at, updated_at, metadata) VALUES (?, ?, ?, ?, ?)",
                (
                    thread.tenant,
                    thread.thread_id,
                    thread.created_at,
                    thread.updated_at,
                    orjson.dumps(thread.metadata).decode(),
                ),
            )
            await self._conn.commit()
            stored = await self._thread(thread.tenant, thread.thread_id)
        assert stored is not None
        return stored

    async def get_thread(self, tenant: str, thread_id: str) -> ThreadRecord | None:
        async with self._lock:
            return await self._thread(tenant, thread_id)

    async def _thread(self, tenant: str, thread_id: str) -> ThreadRecord | None:
        async with self._conn.execute(
            f"SELECT {_THREAD_COLUMNS} FROM svc_threads WHERE tenant = ? AND thread_id = ?",
            (tenant, thread_id),
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else _thread_record(tenant, row)

    async def touch_thread(
        self,
        tenant: str,
        thread_id: str,
        updated_at: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        # Read, merge, write under the lock: the one writer in the process (SQLite's
        # json_patch is no shallow merge: it merges nested objects and drops null values).
        async with self._lock:
            thread = await self._thread(tenant, thread_id)
            if thread is None:
                return
            merged = {**thread.metadata, **(metadata or {})}
            await self._conn.execute(
                "UPDATE svc_threads SET updated_at = ?, metadata = ?"
                " WHERE tenant = ? AND thread_id = ?",
                (updated_at, orjson.dumps(merged).decode(), tenant, thread_id),
            )
            await self._conn.commit()

    async def search_threads(
        self, tenant: str, metadata: Mapping[str, Any], limit: int, offset: int
    ) -> list[ThreadRecord]:
        # The metadata filter runs in Python (app/store/_threads.py: JSON equality, which
        # json_extract's SQL values do not keep: `true` reads back as 1); only an unfiltered
        # search pages in SQL.
        sql = (
            f"SELECT {_THREAD_COLUMNS} FROM svc_threads WHERE tenant = ?"
            " ORDER BY created_at DESC, thread_id DESC"
        )
        params: tuple[Any, ...] = (tenant,)
        if not metadata:
            sql, params = f"{sql} LIMIT ? OFFSET ?", (tenant, limit, offset)
        async with self._lock, self._conn.execute(sql, params) as cursor:
            rows: Any = await cursor.fetchall()
        threads = [_thread_record(tenant, row) for row in rows]
        if not metadata:
            return threads
        return [t for t in threads if matches(t.metadata, metadata)][offset : offset + limit]

    async def thread_runs(
        self, tenant: str, thread_id: str, limit: int, offset: int
    ) -> list[RunRecord]:
        async with (
            self._lock,
            self._conn.execute(
                "SELECT record FROM svc_runs WHERE tenant = ? AND thread_id = ?"
                " ORDER BY created_at DESC, run_id DESC LIMIT ? OFFSET ?",
                (tenant, thread_id, limit, offset),
            ) as cursor,
        ):
            rows: Any = await cursor.fetchall()
        return [RunRecord.from_dict(orjson.loads(raw)) for (raw,) in rows]

    async def delete_thread(self, tenant: str, thread_id: str) -> bool:
        key = (tenant, thread_id)
        async with self._lock:
            for table in ("svc_event_chunks", "svc_id_ceilings"):
                await self._conn.execute(
                    f"DELETE FROM {table} WHERE run_id IN"
                    " (SELECT run_id FROM svc_runs WHERE tenant = ? AND thread_id = ?)",
                    key,
                )
            runs = await self._conn.execute(
                "DELETE FROM svc_runs WHERE tenant = ? AND thread_id = ?", key
            )
            thread = await self._conn.execute(
                "DELETE FROM svc_threads WHERE tenant = ? AND thread_id = ?", key
            )
            await self._conn.commit()
            return runs.rowcount + thread.rowcount > 0

    async def purge(self, ended_before: str) -> int:
        async with self._lock:
            for table in ("svc_event_chunks", "svc_id_ceilings"):
                await self._conn.execute(
                    f"DELETE FROM {table} WHERE run_id IN"
                    " (SELECT run_id FROM svc_runs WHERE ended_at IS NOT NULL AND ended_at < ?)",
                    (ended_before,),
                )
            cursor = await self._conn.execute(
                "DELETE FROM svc_runs WHERE ended_at IS NOT NULL AND ended_at < ?", (ended_before,)
            )
            await self._conn.commit()
            return cursor.rowcount

    async def bind_key(self, binding: KeyBinding) -> None:
        async with self._lock:
            await self._conn.execute(
                "INSERT OR REPLACE INTO svc_idempotency_keys"
                " (tenant, key, fingerprint, run_id, created_at) VALUES (?, ?, ?, ?, ?)",
                (
                    binding.tenant,
                    binding.key,
                    binding.fingerprint,
                    binding.run_id,
                    binding.created_at,
                ),
            )
            await self._conn.commit()

    async def find_key(self, tenant: str, key: str, since: str) -> KeyBinding | None:
        async with (
            self._lock,
            self._conn.execute(
                "SELECT fingerprint, run_id, created_at FROM svc_idempotency_keys"
                " WHERE tenant = ? AND key = ? AND created_at >= ?",
                (tenant, key, since),
            ) as cursor,
        ):
            row = await cursor.fetchone()
        if row is None:
            return None
        return KeyBinding(tenant, key, str(row[0]), str(row[1]), str(row[2]))

    async def purge_keys(self, created_before: str) -> int:
        async with self._lock:
            cursor = await self._conn.execute(
                "DELETE FROM svc_idempotency_keys WHERE created_at < ?", (created_before,)
            )
            await self._conn.commit()
            return cursor.rowcount

    async def secret(self, name: str, candidate: bytes) -> bytes:
        async with self._lock:
            await self._conn.execute(
                "INSERT OR IGNORE INTO svc_secrets (name, value) VALUES (?, ?)", (name, candidate)
            )
            await self._conn.commit()
            async with self._conn.execute(
                "SELECT value FROM svc_secrets WHERE name = ?", (name,)
            ) as cursor:
                row = await cursor.fetchone()
        assert row is not None
        return bytes(row[0])

    async def probe(self) -> None:
        stat = os.statvfs(self._path.parent)
        free = stat.f_bavail * stat.f_frsize
        if free < MIN_FREE_BYTES:
            raise OSError(
                errno.ENOSPC,
                f"{free} bytes free on the database's disk (below {MIN_FREE_BYTES})",
                str(self._path.parent),
            )

    async def stored_bytes(self) -> int:
        """Bytes of event data stored (for the bench's bytes-per-token figure)."""
        async with (
            self._lock,
            self._conn.execute("SELECT coalesce(sum(length(data)), 0) FROM svc_event_chunks") as c,
        ):
            row = await c.fetchone()
        return int(row[0]) if row else 0

    async def close(self) -> None:
        if self._owns_conn:
            await self._conn.close()
