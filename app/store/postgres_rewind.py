"""The rewinder over LangGraph's `AsyncPostgresSaver` (the `Rewinder` port; the rule is in
app/store/rewind.py): in one transaction, delete what the run wrote after the mark and give the
marked checkpoints their writes back.

The saver's tables (pyproject.toml caps langgraph-checkpoint-postgres for this file):
`checkpoints` and `checkpoint_writes`, keyed by `(thread_id, checkpoint_ns, checkpoint_id[,
task_id, idx])`, and `checkpoint_blobs`, the channel values too big to inline, keyed by
`(thread_id, checkpoint_ns, channel, version)` with no checkpoint id: a checkpoint names the
versions it reads in `checkpoint -> 'channel_versions'`, and several checkpoints share a blob.
So a rewind deletes the blobs of the namespaces it touched that no checkpoint left names (the
values the run wrote), never by age; a blob of a kept checkpoint stays.

Checkpoint ids are compared as the port says, as strings in byte order (`COLLATE "C"`, whatever
the database's collation). The rewind takes a connection of its own from the pool, not the
saver's lock: the run that wrote the thread has ended, and the thread is still claimed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import TupleRow, tuple_row
from psycopg_pool import AsyncConnectionPool

from app.engine.ports import Head, Mark, SavedWrite

if TYPE_CHECKING:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

# Each namespace's newest checkpoint, with its writes (none: one row of NULLs).
_HEADS = """
SELECT c.checkpoint_ns, c.checkpoint_id, w.task_id, w.idx, w.channel, w.type, w.blob, w.task_path
FROM (SELECT checkpoint_ns, max(checkpoint_id COLLATE "C") AS checkpoint_id FROM checkpoints
      WHERE thread_id = %(thread)s GROUP BY checkpoint_ns) AS c
LEFT JOIN checkpoint_writes AS w ON w.thread_id = %(thread)s
    AND w.checkpoint_ns = c.checkpoint_ns AND w.checkpoint_id = c.checkpoint_id
ORDER BY c.checkpoint_ns COLLATE "C", w.task_id COLLATE "C", w.idx
"""

# Each namespace's newest id in either table (a write is never newer than its checkpoint, but a
# rewind should not depend on it).
_NEWEST = """
SELECT checkpoint_ns, max(checkpoint_id COLLATE "C") FROM checkpoints
WHERE thread_id = %(thread)s GROUP BY 1
UNION ALL
SELECT checkpoint_ns, max(checkpoint_id COLLATE "C") FROM checkpoint_writes
WHERE thread_id = %(thread)s GROUP BY 1
"""

# The blobs of these namespaces that no checkpoint of the thread names any more.
_DELETE_UNNAMED_BLOBS = """
DELETE FROM checkpoint_blobs AS b
WHERE b.thread_id = %(thread)s AND b.checkpoint_ns = ANY(%(namespaces)s)
AND NOT EXISTS (
    SELECT 1 FROM checkpoints AS c, jsonb_each_text(c.checkpoint -> 'channel_versions') AS v
    WHERE c.thread_id = %(thread)s AND c.checkpoint_ns = b.checkpoint_ns
    AND v.key = b.channel AND v.value = b.version
)
"""

_INSERT_WRITE = (
    "INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path,"
    " idx, channel, type, blob) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


class PostgresRewinder:
    """Over `AsyncPostgresSaver` on a pool (or on one connection, then taking its lock)."""

    def __init__(self, saver: AsyncPostgresSaver) -> None:
        self._saver = saver

    @asynccontextmanager
    async def _cursor(self, transaction: bool) -> AsyncIterator[AsyncCursor[TupleRow]]:
        conn: Any = self._saver.conn
        if isinstance(conn, AsyncConnectionPool):
            async with conn.connection() as own, _cursor(own, transaction) as cur:
                yield cur
        else:
            async with self._saver.lock, _cursor(conn, transaction) as cur:
                yield cur

    async def mark(self, thread_id: str) -> Mark:
        async with self._cursor(transaction=False) as cur:
            return Mark(thread_id, await _heads(cur, thread_id))

    async def rewind(self, mark: Mark) -> None:
        async with self._cursor(transaction=True) as cur:
            await _delete_newer(cur, mark)
            await _restore_writes(cur, mark)


@asynccontextmanager
async def _cursor(
    conn: AsyncConnection[Any], transaction: bool
) -> AsyncIterator[AsyncCursor[TupleRow]]:
    # Binary: blobs come back as their bytes, not as hex to decode.
    if transaction:
        async with conn.transaction(), conn.cursor(binary=True, row_factory=tuple_row) as cur:
            yield cur
    else:
        async with conn.cursor(binary=True, row_factory=tuple_row) as cur:
            yield cur


async def _heads(cur: AsyncCursor[TupleRow], thread_id: str) -> dict[str, Head]:
    await cur.execute(_HEADS, {"thread": thread_id})
    heads: dict[str, list[Any]] = {}
    for ns, checkpoint_id, task_id, idx, channel, type_, blob, path in await cur.fetchall():
        writes = heads.setdefault(ns, [checkpoint_id])
        if task_id is not None:
            writes.append(SavedWrite(task_id, idx, channel, (type_, bytes(blob)), path))
    return {ns: Head(cid, tuple(writes)) for ns, (cid, *writes) in heads.items()}


async def _delete_newer(cur: AsyncCursor[TupleRow], mark: Mark) -> None:
    thread = mark.thread_id
    await cur.execute(_NEWEST, {"thread": thread})
    newest = await cur.fetchall()
    stale = sorted({(ns, mark.since(ns)) for ns, cid in newest if cid > mark.since(ns)})
    if not stale:
        return
    for table in ("checkpoints", "checkpoint_writes"):
        await cur.executemany(
            f"DELETE FROM {table} WHERE thread_id = %s AND checkpoint_ns = %s"
            ' AND checkpoint_id COLLATE "C" > %s',
            [(thread, ns, since) for ns, since in stale],
        )
    await cur.execute(
        _DELETE_UNNAMED_BLOBS, {"thread": thread, "namespaces": [ns for ns, _ in stale]}
    )


async def _restore_writes(cur: AsyncCursor[TupleRow], mark: Mark) -> None:
    """Each marked checkpoint whose writes differ from the mark's gets the mark's back."""
    thread, now = mark.thread_id, await _heads(cur, mark.thread_id)
    changed = [
        (ns, head)
        for ns, head in mark.heads.items()
        if ns in now and now[ns].checkpoint_id == head.checkpoint_id and now[ns] != head
    ]
    if not changed:
        return
    await cur.executemany(
        "DELETE FROM checkpoint_writes"
        " WHERE thread_id = %s AND checkpoint_ns = %s AND checkpoint_id = %s",
        [(thread, ns, head.checkpoint_id) for ns, head in changed],
    )
    rows = [
        (thread, ns, head.checkpoint_id, w.task_id, w.task_path, w.idx, w.channel, *w.value)
        for ns, head in changed
        for w in head.writes
    ]
    if rows:
        await cur.executemany(_INSERT_WRITE, rows)
