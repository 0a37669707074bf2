"""The shared store (`DATABASE_URL=postgresql://...`): run records, finished runs' events, id
ceilings, threads, idempotency keys, secrets, and what several workers coordinate through (thread
claims, worker leases, take-overs, cancel requests), in the PostgreSQL database that holds
LangGraph's checkpoints, on the pool the checkpointer uses (app/store/postgres_pool.py).

Design record
- The rule of every method: one statement, or one transaction, so that what several workers
  do at once is decided by the database. A thread claim is an upsert that returns the holder
  (`ON CONFLICT ... DO UPDATE ... RETURNING`: the row of whoever inserted first, even when
  the claims race); a take-over an `UPDATE ... WHERE owner = <lost one>` (of racing workers
  the first updates the row, the others then find another owner and update nothing); a
  secret an upsert that returns the stored bytes.
- The schema is ours (tables prefixed `svc_`) and versioned as SQLite's is: `MIGRATIONS[n]`
  takes the database from version n to n+1, applied at startup in one transaction holding an
  advisory lock, so workers that start together migrate once and the others wait for it.
- Events are stored as SQLite stores them (app/store/_chunks.py): a raw chunk per flush, one
  compressed chunk per sealed run. Chunk bytes are stored uncompressed by PostgreSQL
  (`STORAGE EXTERNAL`): raw chunks live only until the seal, and a sealed one is zlib already.
- Times are the ISO strings of run records, compared as strings (`COLLATE "C"`, byte order,
  whatever the database's collation), as the port says.
- A record is JSONB (the stored dict) beside the columns that are queried, so a take-over
  changes the owner in both in one statement. A thread key is BYTEA: a tenant-qualified id
  holds a control character, and PostgreSQL text holds no NUL.
- A thread (`svc_threads`) is put as a claim is: an upsert returning the stored row, so of
  racing puts the first insert wins and every put returns it. Its metadata is JSONB; a search
  asks jsonb equality key by key, not containment (`@>`), which also matches `{"a": [1, 2]}`
  for `{"a": [1]}` where the port says equal. (A GIN index would want `@>` added as a
  prefilter; without one a search reads the tenant's threads in svc_threads_by_age order.)
- A cancel request is served to whoever owns the run now (a take-over's new owner too), and
  only while it runs; it goes with the run when the run is purged.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

import orjson
from psycopg.rows import TupleRow, tuple_row

from app.engine import codec
from app.engine.codec import LogEvent
from app.engine.idempotency import KeyBinding
from app.engine.record import RunRecord, ThreadRecord
from app.store._chunks import events_after, raw_rows, sealed_data
from app.store.postgres_pool import Pool, open_pool

Migration = tuple[str, ...]
"""The statements of one migration (psycopg prepares each, so one statement per string)."""

MIGRATIONS: list[Migration] = [
    # 0 -> 1: everything the RunStore port holds, as of the port with several workers.
    (
        """CREATE TABLE svc_runs (
            run_id     TEXT PRIMARY KEY,
            tenant     TEXT NOT NULL,
            thread_id  TEXT NOT NULL,
            graph      TEXT NOT NULL,
            status     TEXT NOT NULL,
            created_at TEXT COLLATE "C" NOT NULL,
            ended_at   TEXT COLLATE "C",
            owner      TEXT,
            record     JSONB NOT NULL
        )""",
        "CREATE INDEX svc_runs_by_thread ON svc_runs (tenant, thread_id, created_at)",
        "CREATE INDEX svc_runs_running ON svc_runs (owner) WHERE status = 'running'",
        "CREATE INDEX svc_runs_by_end ON svc_runs (ended_at) WHERE ended_at IS NOT NULL",
        """CREATE TABLE svc_event_chunks (
            run_id   TEXT NOT NULL,
            first_id BIGINT NOT NULL,
            last_id  BIGINT NOT NULL,
            codec    SMALLINT NOT NULL,
            data     BYTEA NOT NULL,
            PRIMARY KEY (run_id, first_id)
        )""",
        "ALTER TABLE svc_event_chunks ALTER COLUMN data SET STORAGE EXTERNAL",
        """CREATE TABLE svc_id_ceilings (
            run_id  TEXT PRIMARY KEY,
            ceiling BIGINT NOT NULL
        )""",
        """CREATE TABLE svc_idempotency_keys (
            tenant      TEXT NOT NULL,
            key         TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            run_id      TEXT NOT NULL,
            created_at  TEXT COLLATE "C" NOT NULL,
            PRIMARY KEY (tenant, key)
        )""",
        "CREATE INDEX svc_idempotency_keys_by_age ON svc_idempotency_keys (created_at)",
        "CREATE TABLE svc_secrets (name TEXT PRIMARY KEY, value BYTEA NOT NULL)",
        "CREATE TABLE svc_thread_claims (thread_key BYTEA PRIMARY KEY, run_id TEXT NOT NULL)",
        """CREATE TABLE svc_worker_leases (
            worker_id    TEXT PRIMARY KEY,
            heartbeat_at TEXT COLLATE "C" NOT NULL
        )""",
        "CREATE TABLE svc_cancel_requests (run_id TEXT PRIMARY KEY, action TEXT NOT NULL)",
    ),
    # 1 -> 2: threads created as objects (LangGraph's `POST /threads`), per tenant, with their
    # metadata. A thread's runs are found by svc_runs_by_thread (version 1).
    (
        """CREATE TABLE svc_threads (
            tenant     TEXT NOT NULL,
            thread_id  TEXT COLLATE "C" NOT NULL,
            created_at TEXT COLLATE "C" NOT NULL,
            updated_at TEXT COLLATE "C" NOT NULL,
            metadata   JSONB NOT NULL,
            PRIMARY KEY (tenant, thread_id)
        )""",
        "CREATE INDEX svc_threads_by_age ON svc_threads (tenant, created_at, thread_id)",
    ),
]

MIGRATION_LOCK = 0x6C67_7376_6373_6301  # pg_advisory_xact_lock key: "lgsvcsc" + 1

_PUT_RECORD = """
INSERT INTO svc_runs
    (run_id, tenant, thread_id, graph, status, created_at, ended_at, owner, record)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)
ON CONFLICT (run_id) DO UPDATE SET
    tenant = excluded.tenant, thread_id = excluded.thread_id, graph = excluded.graph,
    status = excluded.status, created_at = excluded.created_at,
    ended_at = excluded.ended_at, owner = excluded.owner, record = excluded.record
"""

_PUT_CHUNK = """
INSERT INTO svc_event_chunks (run_id, first_id, last_id, codec, data) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (run_id, first_id) DO UPDATE SET
    last_id = excluded.last_id, codec = excluded.codec, data = excluded.data
"""

_PURGE = """
WITH gone AS (
    DELETE FROM svc_runs WHERE ended_at IS NOT NULL AND ended_at < %(before)s RETURNING run_id
), chunks AS (
    DELETE FROM svc_event_chunks WHERE run_id IN (SELECT run_id FROM gone)
), ceilings AS (
    DELETE FROM svc_id_ceilings WHERE run_id IN (SELECT run_id FROM gone)
), cancels AS (
    DELETE FROM svc_cancel_requests WHERE run_id IN (SELECT run_id FROM gone)
)
SELECT count(*) FROM gone
"""

_CLAIM = """
INSERT INTO svc_thread_claims (thread_key, run_id) VALUES (%s, %s)
ON CONFLICT (thread_key) DO UPDATE SET run_id = svc_thread_claims.run_id
RETURNING run_id
"""

_TAKE_OVER = """
UPDATE svc_runs SET owner = %(by)s, record = jsonb_set(record, '{owner}', to_jsonb(%(by)s::text))
WHERE run_id = %(run_id)s AND status = 'running' AND coalesce(owner, '') = %(owner)s
"""

_REQUEST_CANCEL = """
INSERT INTO svc_cancel_requests (run_id, action)
SELECT run_id, %s FROM svc_runs WHERE run_id = %s AND status = 'running' AND owner IS NOT NULL
ON CONFLICT (run_id) DO NOTHING
"""

_CANCEL_REQUESTS = """
SELECT c.run_id, c.action FROM svc_cancel_requests c JOIN svc_runs r ON r.run_id = c.run_id
WHERE r.status = 'running' AND r.owner = %s ORDER BY c.run_id
"""

_THREAD_COLUMNS = "thread_id, created_at, updated_at, metadata::text"

_PUT_THREAD = f"""
INSERT INTO svc_threads (tenant, thread_id, created_at, updated_at, metadata)
VALUES (%s, %s, %s, %s, %s::jsonb)
ON CONFLICT (tenant, thread_id) DO UPDATE SET tenant = svc_threads.tenant
RETURNING {_THREAD_COLUMNS}
"""

_SEARCH_THREADS = f"""
SELECT {_THREAD_COLUMNS} FROM svc_threads
WHERE tenant = %(tenant)s AND NOT EXISTS (
    SELECT 1 FROM jsonb_each(%(wanted)s::jsonb) AS w (key, value)
    WHERE svc_threads.metadata -> w.key IS DISTINCT FROM w.value
)
ORDER BY created_at DESC, thread_id DESC LIMIT %(limit)s OFFSET %(offset)s
"""

_DELETE_THREAD = """
WITH thread AS (
    DELETE FROM svc_threads WHERE tenant = %(tenant)s AND thread_id = %(thread)s RETURNING 1
), runs AS (
    DELETE FROM svc_runs WHERE tenant = %(tenant)s AND thread_id = %(thread)s RETURNING run_id
), chunks AS (
    DELETE FROM svc_event_chunks WHERE run_id IN (SELECT run_id FROM runs)
), ceilings AS (
    DELETE FROM svc_id_ceilings WHERE run_id IN (SELECT run_id FROM runs)
), cancels AS (
    DELETE FROM svc_cancel_requests WHERE run_id IN (SELECT run_id FROM runs)
)
SELECT (SELECT count(*) FROM thread) + (SELECT count(*) FROM runs)
"""

_READ_ONLY = "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'"


def _record_row(record: RunRecord) -> tuple[Any, ...]:
    return (
        record.run_id,
        record.tenant,
        record.thread_id,
        record.graph,
        record.status.value,
        record.created_at,
        record.ended_at,
        record.owner,
        orjson.dumps(record.stored()).decode(),
    )


def _thread_record(tenant: str, row: TupleRow) -> ThreadRecord:
    thread_id, created_at, updated_at, metadata = row
    return ThreadRecord(thread_id, tenant, created_at, updated_at, orjson.loads(metadata))


def _json(value: Mapping[str, Any]) -> str:
    return orjson.dumps(value).decode()


def _thread_key(thread_key: str) -> bytes:
    return thread_key.encode()


class PostgresRunStore:
    def __init__(self, pool: Pool, stack: AsyncExitStack | None = None) -> None:
        self._pool = pool
        self._stack = stack  # what `open` opened for this store alone

    @property
    def pool(self) -> Pool:
        """The pool the store runs on (the checkpointer's too, in the service)."""
        return self._pool

    @classmethod
    async def on(cls, pool: Pool) -> PostgresRunStore:
        """The store on the checkpointer's pool (closed by whoever opened it)."""
        store = cls(pool)
        await store.migrate()
        return store

    @classmethod
    async def open(cls, url: str, pool_size: int = 4) -> PostgresRunStore:
        """A store with a pool of its own (tools and tests), closed with the store."""
        stack = AsyncExitStack()
        try:
            pool = await stack.enter_async_context(open_pool(url, pool_size))
            store = cls(pool, stack)
            await store.migrate()
        except BaseException:
            await stack.aclose()
            raise
        return store

    async def migrate(self) -> int:
        """Bring the schema to the newest version; return that version."""
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute("CREATE TABLE IF NOT EXISTS svc_schema (version INTEGER NOT NULL)")
            cur = await conn.execute("SELECT version FROM svc_schema")
            row = await cur.fetchone()
            version = 0 if row is None else int(row["version"])
            if row is None:
                await conn.execute("INSERT INTO svc_schema (version) VALUES (0)")
            for step in MIGRATIONS[version:]:
                for statement in step:
                    await conn.execute(statement)
            await conn.execute("UPDATE svc_schema SET version = %s", (len(MIGRATIONS),))
        return len(MIGRATIONS)

    async def _fetchone(self, sql: str, params: Any = None) -> TupleRow | None:
        async with self._pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(sql, params)
            return await cur.fetchone()

    async def _fetchall(self, sql: str, params: Any = None) -> list[TupleRow]:
        async with self._pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(sql, params)
            return await cur.fetchall()

    async def _execute(self, sql: str, params: Any = None) -> int:
        async with self._pool.connection() as conn, conn.cursor() as cur:
            await cur.execute(sql, params)
            return cur.rowcount

    async def save_record(self, record: RunRecord) -> None:
        await self._execute(_PUT_RECORD, _record_row(record))

    async def append_events(self, batches: Sequence[tuple[str, Sequence[LogEvent]]]) -> None:
        rows = raw_rows(batches)
        if not rows:
            return
        async with self._pool.connection() as conn, conn.cursor() as cur:
            await cur.executemany(_PUT_CHUNK, rows)

    async def seal(self, record: RunRecord, events: Sequence[LogEvent]) -> None:
        data = await sealed_data(events)
        async with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            await cur.execute("DELETE FROM svc_event_chunks WHERE run_id = %s", (record.run_id,))
            if events:
                first, last = events[0].id, events[-1].id
                await cur.execute(_PUT_CHUNK, (record.run_id, first, last, codec.ZLIB, data))
            await cur.execute(_PUT_RECORD, _record_row(record))

    async def load_record(self, run_id: str) -> RunRecord | None:
        row = await self._fetchone("SELECT record::text FROM svc_runs WHERE run_id = %s", (run_id,))
        return None if row is None else RunRecord.from_dict(orjson.loads(row[0]))

    async def load_events(self, run_id: str, after: int = 0) -> list[LogEvent]:
        async with (
            self._pool.connection() as conn,
            conn.cursor(binary=True, row_factory=tuple_row) as cur,
        ):
            await cur.execute(
                "SELECT codec, data FROM svc_event_chunks WHERE run_id = %s AND last_id > %s"
                " ORDER BY first_id",
                (run_id, after),
            )
            rows = await cur.fetchall()
        return events_after(rows, after)

    async def last_event_id(self, run_id: str) -> int:
        row = await self._fetchone(
            "SELECT max(last_id) FROM svc_event_chunks WHERE run_id = %s", (run_id,)
        )
        return 0 if row is None or row[0] is None else int(row[0])

    async def reserve_ids(self, ceilings: Sequence[tuple[str, int]]) -> None:
        if not ceilings:
            return
        async with self._pool.connection() as conn, conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO svc_id_ceilings (run_id, ceiling) VALUES (%s, %s)"
                " ON CONFLICT (run_id) DO UPDATE"
                " SET ceiling = greatest(svc_id_ceilings.ceiling, excluded.ceiling)",
                list(ceilings),
            )

    async def id_ceiling(self, run_id: str) -> int:
        row = await self._fetchone(
            "SELECT ceiling FROM svc_id_ceilings WHERE run_id = %s", (run_id,)
        )
        return 0 if row is None else int(row[0])

    async def thread_graph(self, tenant: str, thread_id: str) -> str | None:
        row = await self._fetchone(
            "SELECT graph FROM svc_runs WHERE tenant = %s AND thread_id = %s"
            " ORDER BY created_at DESC LIMIT 1",
            (tenant, thread_id),
        )
        return None if row is None else str(row[0])

    async def running(self) -> list[RunRecord]:
        rows = await self._fetchall(
            "SELECT record::text FROM svc_runs WHERE status = 'running' ORDER BY created_at"
        )
        return [RunRecord.from_dict(orjson.loads(raw)) for (raw,) in rows]

    async def put_thread(self, thread: ThreadRecord) -> ThreadRecord:
        row = await self._fetchone(
            _PUT_THREAD,
            (
                thread.tenant,
                thread.thread_id,
                thread.created_at,
                thread.updated_at,
                _json(thread.metadata),
            ),
        )
        assert row is not None
        return _thread_record(thread.tenant, row)

    async def get_thread(self, tenant: str, thread_id: str) -> ThreadRecord | None:
        row = await self._fetchone(
            f"SELECT {_THREAD_COLUMNS} FROM svc_threads WHERE tenant = %s AND thread_id = %s",
            (tenant, thread_id),
        )
        return None if row is None else _thread_record(tenant, row)

    async def touch_thread(
        self,
        tenant: str,
        thread_id: str,
        updated_at: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        await self._execute(
            "UPDATE svc_threads SET updated_at = %s, metadata = metadata || %s::jsonb"
            " WHERE tenant = %s AND thread_id = %s",
            (updated_at, _json(metadata or {}), tenant, thread_id),
        )

    async def search_threads(
        self, tenant: str, metadata: Mapping[str, Any], limit: int, offset: int
    ) -> list[ThreadRecord]:
        rows = await self._fetchall(
            _SEARCH_THREADS,
            {"tenant": tenant, "wanted": _json(metadata), "limit": limit, "offset": offset},
        )
        return [_thread_record(tenant, row) for row in rows]

    async def thread_runs(
        self, tenant: str, thread_id: str, limit: int, offset: int
    ) -> list[RunRecord]:
        rows = await self._fetchall(
            "SELECT record::text FROM svc_runs WHERE tenant = %s AND thread_id = %s"
            ' ORDER BY created_at DESC, run_id COLLATE "C" DESC LIMIT %s OFFSET %s',
            (tenant, thread_id, limit, offset),
        )
        return [RunRecord.from_dict(orjson.loads(raw)) for (raw,) in rows]

    async def delete_thread(self, tenant: str, thread_id: str) -> bool:
        row = await self._fetchone(_DELETE_THREAD, {"tenant": tenant, "thread": thread_id})
        return row is not None and int(row[0]) > 0

    async def purge(self, ended_before: str) -> int:
        row = await self._fetchone(_PURGE, {"before": ended_before})
        return 0 if row is None else int(row[0])

    async def bind_key(self, binding: KeyBinding) -> None:
        await self._execute(
            "INSERT INTO svc_idempotency_keys (tenant, key, fingerprint, run_id, created_at)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (tenant, key) DO UPDATE SET"
            " fingerprint = excluded.fingerprint, run_id = excluded.run_id,"
            " created_at = excluded.created_at",
            (binding.tenant, binding.key, binding.fingerprint, binding.run_id, binding.created_at),
        )

    async def find_key(self, tenant: str, key: str, since: str) -> KeyBinding | None:
        row = await self._fetchone(
            "SELECT fingerprint, run_id, created_at FROM svc_idempotency_keys"
            " WHERE tenant = %s AND key = %s AND created_at >= %s",
            (tenant, key, since),
        )
        if row is None:
            return None
        return KeyBinding(tenant, key, str(row[0]), str(row[1]), str(row[2]))

    async def purge_keys(self, created_before: str) -> int:
        return await self._execute(
            "DELETE FROM svc_idempotency_keys WHERE created_at < %s", (created_before,)
        )

    async def secret(self, name: str, candidate: bytes) -> bytes:
        row = await self._fetchone(
            "INSERT INTO svc_secrets (name, value) VALUES (%s, %s)"
            " ON CONFLICT (name) DO UPDATE SET value = svc_secrets.value RETURNING value",
            (name, candidate),
        )
        assert row is not None
        return bytes(row[0])

    async def probe(self) -> None:
        row = await self._fetchone(_READ_ONLY)
        if row is None or row[0]:
            raise OSError(
                errno.EROFS, "the PostgreSQL server is read-only (a standby, or read-only mode)"
            )

    # -- several workers on one store ------------------------------------------------------

    async def claim_thread(self, thread_key: str, run_id: str) -> str | None:
        row = await self._fetchone(_CLAIM, (_thread_key(thread_key), run_id))
        assert row is not None
        holder = str(row[0])
        return None if holder == run_id else holder

    async def release_thread(self, thread_key: str, run_id: str) -> None:
        await self._execute(
            "DELETE FROM svc_thread_claims WHERE thread_key = %s AND run_id = %s",
            (_thread_key(thread_key), run_id),
        )

    async def thread_run(self, thread_key: str) -> str | None:
        row = await self._fetchone(
            "SELECT run_id FROM svc_thread_claims WHERE thread_key = %s", (_thread_key(thread_key),)
        )
        return None if row is None else str(row[0])

    async def heartbeat(self, worker_id: str, now: str) -> None:
        await self._execute(
            "INSERT INTO svc_worker_leases (worker_id, heartbeat_at) VALUES (%s, %s)"
            " ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
            (worker_id, now),
        )

    async def live_workers(self, since: str) -> set[str]:
        rows = await self._fetchall(
            "SELECT worker_id FROM svc_worker_leases WHERE heartbeat_at >= %s", (since,)
        )
        return {str(worker) for (worker,) in rows}

    async def take_over(self, run_id: str, owner: str, by: str) -> bool:
        updated = await self._execute(_TAKE_OVER, {"run_id": run_id, "owner": owner, "by": by})
        return updated == 1

    async def request_cancel(self, run_id: str, action: str) -> None:
        await self._execute(_REQUEST_CANCEL, (action, run_id))

    async def cancel_requests(self, owner: str) -> list[tuple[str, str]]:
        rows = await self._fetchall(_CANCEL_REQUESTS, (owner,))
        return [(str(run_id), str(action)) for run_id, action in rows]

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
