"""Rewinders (the `Rewinder` port): put a thread back exactly as it was before a run.

Before each run the manager takes a `Mark` of the thread: in every checkpoint namespace (the
root graph's and each subgraph's), the newest checkpoint id and that checkpoint's pending writes
with their stored values. Rewinding deletes, namespace by namespace, every checkpoint and write
newer than the mark (all of a namespace the run created), then gives each marked checkpoint
exactly the writes it had: a resume adds writes there (the resume value, the writes of the
steps it finished) and may overwrite one (a second `interrupt()` in the same node replaces the
first's interrupt write under the same key). Checkpoint ids are UUIDv6, ordered by time, so
"newer" is a string comparison (`Mark.since`).

Why per namespace: a thread paused inside a subgraph has its newest checkpoints in the
subgraph's namespace, newer than the root's newest (the root writes none when a subgraph
pauses); comparing them with the root's id would delete the paused subgraph. The cost: a mark
holds one id per namespace the thread ever had (one per subgraph call), and the writes of each
namespace's newest checkpoint only (a completed subgraph's newest has none), read in one query.

LangGraph's savers have no "delete a run's checkpoints" here (`delete_for_runs` is not
implemented by the SQLite or memory saver), so each rewinder knows its saver's storage: the
SQLite saver's tables, the memory saver's dicts (pyproject.toml caps those libraries for it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langgraph.checkpoint.memory import InMemorySaver

from app.engine.ports import Head, Mark, SavedWrite

if TYPE_CHECKING:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver


class MemoryRewinder:
    """Over `InMemorySaver`: `storage[thread][ns][checkpoint_id]` and
    `writes[(thread, ns, checkpoint_id)][(task_id, idx)] = (task_id, channel, value, path)`."""

    def __init__(self, saver: InMemorySaver) -> None:
        self._saver = saver

    async def mark(self, thread_id: str) -> Mark:
        heads: dict[str, Head] = {}
        for ns, checkpoints in self._saver.storage.get(thread_id, {}).items():
            if checkpoints:
                checkpoint_id = max(checkpoints)
                stored = self._saver.writes.get((thread_id, ns, checkpoint_id), {})
                writes = tuple(
                    SavedWrite(task_id, idx, channel, value, path)
                    for (task_id, idx), (_, channel, value, path) in stored.items()
                )
                heads[ns] = Head(checkpoint_id, writes)
        return Mark(thread_id, heads)

    async def rewind(self, mark: Mark) -> None:
        saver, thread = self._saver, mark.thread_id
        namespaces = saver.storage.get(thread)
        if namespaces is not None:
            for ns in list(namespaces):
                checkpoints, since = namespaces[ns], mark.since(ns)
                for checkpoint_id in [c for c in checkpoints if c > since]:
                    del checkpoints[checkpoint_id]
                if not checkpoints:
                    del namespaces[ns]
            if not namespaces:
                del saver.storage[thread]
        for key in [k for k in saver.writes if k[0] == thread and k[2] > mark.since(k[1])]:
            del saver.writes[key]
        for ns, head in mark.heads.items():
            key = (thread, ns, head.checkpoint_id)
            if head.writes:
                saver.writes[key] = {
                    (w.task_id, w.idx): (w.task_id, w.channel, w.value, w.task_path)
                    for w in head.writes
                }
            else:
                saver.writes.pop(key, None)


# Each namespace's newest checkpoint, with its writes (none: one row of NULLs).
_HEADS = """
SELECT c.checkpoint_ns, c.checkpoint_id, w.task_id, w.idx, w.channel, w.type, w.value, w.task_path
FROM (SELECT checkpoint_ns, MAX(checkpoint_id) AS checkpoint_id FROM checkpoints
      WHERE thread_id = ? GROUP BY checkpoint_ns) AS c
LEFT JOIN writes AS w ON w.thread_id = ? AND w.checkpoint_ns = c.checkpoint_ns
                     AND w.checkpoint_id = c.checkpoint_id
ORDER BY c.checkpoint_ns, w.task_id, w.idx
"""

# Each namespace's newest id in either table (a write is never newer than its checkpoint, but a
# rewind should not depend on it).
_NEWEST = """
SELECT checkpoint_ns, MAX(checkpoint_id) FROM checkpoints WHERE thread_id = ? GROUP BY 1
UNION ALL
SELECT checkpoint_ns, MAX(checkpoint_id) FROM writes WHERE thread_id = ? GROUP BY 1
"""

_INSERT_WRITE = (
    "INSERT INTO writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx,"
    " channel, type, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class SqliteRewinder:
    """Over `AsyncSqliteSaver`: its `checkpoints` and `writes` tables, keyed by
    `(thread_id, checkpoint_ns, checkpoint_id[, task_id, idx])`; a rewind is one transaction."""

    def __init__(self, saver: AsyncSqliteSaver) -> None:
        self._saver = saver

    async def _heads(self, thread_id: str) -> dict[str, Head]:
        async with self._saver.conn.execute(_HEADS, (thread_id, thread_id)) as cursor:
            rows = await cursor.fetchall()
        heads: dict[str, list[Any]] = {}
        for ns, checkpoint_id, task_id, idx, channel, type_, value, path in rows:
            writes = heads.setdefault(ns, [checkpoint_id])
            if task_id is not None:
                writes.append(SavedWrite(task_id, idx, channel, (type_, value), path))
        return {ns: Head(cid, tuple(writes)) for ns, (cid, *writes) in heads.items()}

    async def mark(self, thread_id: str) -> Mark:
        await self._saver.setup()
        async with self._saver.lock:
            return Mark(thread_id, await self._heads(thread_id))

    async def rewind(self, mark: Mark) -> None:
        await self._saver.setup()
        async with self._saver.lock:
            try:
                await self._delete_newer(mark)
                await self._restore_writes(mark)
                await self._saver.conn.commit()
            except BaseException:
                await self._saver.conn.rollback()  # nothing half-done for the next commit
                raise

    async def _delete_newer(self, mark: Mark) -> None:
        conn, thread = self._saver.conn, mark.thread_id
        async with conn.execute(_NEWEST, (thread, thread)) as cursor:
            newest = await cursor.fetchall()
        stale = sorted({(thread, ns, mark.since(ns)) for ns, cid in newest if cid > mark.since(ns)})
        for table in ("checkpoints", "writes"):
            await conn.executemany(
                f"DELETE FROM {table}"
                " WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id > ?",
                stale,
            )

    async def _restore_writes(self, mark: Mark) -> None:
        """Each marked checkpoint whose writes differ from the mark's gets the mark's back."""
        conn, thread, now = self._saver.conn, mark.thread_id, await self._heads(mark.thread_id)
        changed = [
            (ns, head)
            for ns, head in mark.heads.items()
            if ns in now and now[ns].checkpoint_id == head.checkpoint_id and now[ns] != head
        ]
        await conn.executemany(
            "DELETE FROM writes WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?",
            [(thread, ns, head.checkpoint_id) for ns, head in changed],
        )
        await conn.executemany(
            _INSERT_WRITE,
            [
                (thread, ns, head.checkpoint_id, w.task_id, w.task_path, w.idx, w.channel, *w.value)
                for ns, head in changed
                for w in head.writes
            ],
        )
