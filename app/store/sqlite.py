"""The embedded store: run records and event logs in the SQLite file that holds the checkpoints.

In the service it shares the checkpointer's connection and lock (`SqliteRunStore.on(saver)`): one
connection, one writer thread, so our writes and LangGraph's are serialized in the process and
never meet as two SQLite writers. (With a connection each, WAL let both write, but a checkpoint
write under load failed with "database is locked": a deferred transaction that must upgrade
from read to write gets SQLITE_BUSY at once, busy timeout or not.)
The schema is ours (tables prefixed `svc_`) and versioned: `MIGRATIONS[n]` takes the database
from version n to n+1, applied in order at startup inside one transaction each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite
import orjson

from app.runs.log import Event
from app.runs.record import RunRecord, RunStatus
from app.store import INTERRUPTED_BY_RESTART, INTERRUPTED_MESSAGE, interrupted_events

MIGRATIONS: list[str] = [
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
    # event. Why: a row per token cost ~30 us of the service's CPU per token (252 vs 222 us
    # against the memory store; make bench's cost case, 5,000-token streams). Old rows become
    # one-event chunks.
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
]


def split_frames(frames: bytes) -> list[Event]:
    """The events of a stored chunk: our frames joined (app/sse/encoder.py's `encode_json`:
    `id: N\nevent: T\ndata: JSON\n\n`, and compact JSON never holds a raw newline)."""
    events = []
    start = 0
    while start < len(frames):
        end = frames.index(b"\n\n", start) + 2
        id_end = frames.index(b"\n", start)
        type_end = frames.index(b"\n", id_end + 1)
        event_id = int(frames[start + 4 : id_end])  # after "id: "
        event_type = frames[id_end + 8 : type_end].decode()  # after "\nevent: "
        events.append(Event.from_frame(event_id, event_type, frames[start:end]))
        start = end
    return events


if TYPE_CHECKING:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver


class SqliteRunStore:
    def __init__(self, conn: aiosqlite.Connection, lock: asyncio.Lock, owns_conn: bool) -> None:
        self._conn = conn
        self._lock = lock
        self._owns_conn = owns_conn

    @classmethod
    async def on(cls, saver: AsyncSqliteSaver) -> SqliteRunStore:
        """The store on the checkpointer's own connection, taking turns with it on its lock."""
        store = cls(saver.conn, saver.lock, owns_conn=False)
        await store.migrate()
        return store

    @classmethod
    async def open(cls, path: Path) -> SqliteRunStore:
        """A store with a connection of its own (tools and tests)."""
        conn = await aiosqlite.connect(path)
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA busy_timeout=5000")
        store = cls(conn, asyncio.Lock(), owns_conn=True)
        await store.migrate()
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
        for target, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await self._conn.executescript(
                f"BEGIN; {script}; UPDATE svc_schema SET version = {target}; COMMIT;"
            )
        await self._conn.commit()
        return len(MIGRATIONS)

    async def save_record(self, record: RunRecord) -> None:
        async with self._lock:
            await self._save_record(record)

    async def _save_record(self, record: RunRecord) -> None:
        await self._conn.execute(
            "INSERT OR REPLACE INTO svc_runs"
            " (run_id, thread_id, graph, status, created_at, ended_at, record)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record.run_id,
                record.thread_id,
                record.graph,
                record.status.value,
                record.created_at,
                record.ended_at,
                orjson.dumps(record.as_dict()),
            ),
        )
        await self._conn.commit()

    async def append_events(self, batches: Sequence[tuple[str, Sequence[Event]]]) -> None:
        # What is stored is the frame bytes clients get, so a replay after a restart sends the
        # same bytes. A retried flush starts at the same id and carries at least as many
        # events, so it replaces its chunk; `load_events` skips any id it has already read.
        rows = [
            (run_id, events[0].id, events[-1].id, b"".join(e.frame for e in events))
            for run_id, events in batches
            if events
        ]
        if not rows:
            return
        async with self._lock:
            await self._insert_events(rows)

    async def _insert_events(self, rows: list[tuple[str, int, int, bytes]]) -> None:
        await self._conn.executemany(
            "INSERT OR REPLACE INTO svc_run_event_chunks (run_id, first_id, last_id, frames)"
            " VALUES (?, ?, ?, ?)",
            rows,
        )
        await self._conn.commit()

    async def load_record(self, run_id: str) -> RunRecord | None:
        async with (
            self._lock,
            self._conn.execute("SELECT record FROM svc_runs WHERE run_id = ?", (run_id,)) as cursor,
        ):
            row = await cursor.fetchone()
        return RunRecord.from_dict(orjson.loads(row[0])) if row else None

    async def load_events(self, run_id: str) -> list[Event]:
        async with (
            self._lock,
            self._conn.execute(
                "SELECT frames FROM svc_run_event_chunks WHERE run_id = ? ORDER BY first_id",
                (run_id,),
            ) as cursor,
        ):
            rows: Any = await cursor.fetchall()
        events: list[Event] = []
        for (frames,) in rows:
            for event in split_frames(bytes(frames)):
                if not events or event.id > events[-1].id:
                    events.append(event)
        return events

    async def thread_graph(self, thread_id: str) -> str | None:
        async with (
            self._lock,
            self._conn.execute(
                "SELECT graph FROM svc_runs WHERE thread_id = ? ORDER BY created_at DESC LIMIT 1",
                (thread_id,),
            ) as cursor,
        ):
            row = await cursor.fetchone()
        return str(row[0]) if row else None

    async def recover(self) -> list[str]:
        async with (
            self._lock,
            self._conn.execute(
                "SELECT r.record,"
                " (SELECT max(last_id) FROM svc_run_event_chunks e WHERE e.run_id = r.run_id)"
                " FROM svc_runs r WHERE r.status = ?",
                (RunStatus.RUNNING.value,),
            ) as cursor,
        ):
            rows: Any = await cursor.fetchall()
        recovered = []
        for raw, last_id in rows:
            record = RunRecord.from_dict(orjson.loads(raw))
            record.interrupted(INTERRUPTED_BY_RESTART, INTERRUPTED_MESSAGE)
            events = interrupted_events(record, last_id or 0)
            record.events = events[-1].id
            await self.append_events([(record.run_id, events)])
            await self.save_record(record)
            recovered.append(record.run_id)
        return recovered

    async def purge(self, ended_before: str) -> int:
        async with self._lock:
            return await self._purge(ended_before)

    async def _purge(self, ended_before: str) -> int:
        await self._conn.execute(
            "DELETE FROM svc_run_event_chunks WHERE run_id IN"
            " (SELECT run_id FROM svc_runs WHERE ended_at IS NOT NULL AND ended_at < ?)",
            (ended_before,),
        )
        cursor = await self._conn.execute(
            "DELETE FROM svc_runs WHERE ended_at IS NOT NULL AND ended_at < ?", (ended_before,)
        )
        await self._conn.commit()
        return cursor.rowcount

    async def close(self) -> None:
        if self._owns_conn:
            await self._conn.close()
