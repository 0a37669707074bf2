"""Rewinders (the `Rewinder` port): put a thread back exactly as it was before a run.

Before each run the manager takes a `Mark` of the thread: its newest checkpoint id and the
pending writes already attached to it. Rewinding deletes every checkpoint of the thread (any
namespace, so subgraphs too) newer than the mark, and every write the run attached to the marked
checkpoint (a `resume` value, the writes of steps that finished before the cancel). Checkpoint
ids are UUIDv6, ordered by time, so "newer" is a string comparison.

LangGraph's savers have no "delete a run's checkpoints" here (`delete_for_runs` is not
implemented by the SQLite or memory saver), so each rewinder knows its saver's storage: the
SQLite saver's tables, the memory saver's dicts (pyproject.toml caps those libraries for it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langgraph.checkpoint.memory import InMemorySaver

from app.engine.ports import Mark

if TYPE_CHECKING:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

_ROOT: Any = {"checkpoint_ns": ""}


async def _latest(saver: Any, thread_id: str) -> str | None:
    latest = await saver.aget_tuple({"configurable": {"thread_id": thread_id, **_ROOT}})
    return None if latest is None else str(latest.config["configurable"]["checkpoint_id"])


class MemoryRewinder:
    def __init__(self, saver: InMemorySaver) -> None:
        self._saver = saver

    async def mark(self, thread_id: str) -> Mark:
        checkpoint_id = await _latest(self._saver, thread_id)
        if checkpoint_id is None:
            return Mark(thread_id, None, frozenset())
        keys = self._saver.writes.get((thread_id, "", checkpoint_id), {}).keys()
        return Mark(thread_id, checkpoint_id, frozenset(keys))

    async def rewind(self, mark: Mark) -> None:
        saver, since = self._saver, mark.checkpoint_id or ""
        for checkpoints in saver.storage.get(mark.thread_id, {}).values():
            for checkpoint_id in [c for c in checkpoints if c > since]:
                del checkpoints[checkpoint_id]
        for key in [k for k in saver.writes if k[0] == mark.thread_id]:
            if key[2] > since:
                del saver.writes[key]
            elif key[1] == "" and key[2] == mark.checkpoint_id:
                writes = saver.writes[key]
                for write in [w for w in writes if w not in mark.writes]:
                    del writes[write]


class SqliteRewinder:
    def __init__(self, saver: AsyncSqliteSaver) -> None:
        self._saver = saver

    async def _writes(self, thread_id: str, checkpoint_id: str) -> list[tuple[str, int]]:
        async with self._saver.conn.execute(
            "SELECT task_id, idx FROM writes"
            " WHERE thread_id = ? AND checkpoint_ns = '' AND checkpoint_id = ?",
            (thread_id, checkpoint_id),
        ) as cursor:
            rows = await cursor.fetchall()
        return [(str(t), int(i)) for t, i in rows]

    async def mark(self, thread_id: str) -> Mark:
        checkpoint_id = await _latest(self._saver, thread_id)
        if checkpoint_id is None:
            return Mark(thread_id, None, frozenset())
        async with self._saver.lock:
            writes = await self._writes(thread_id, checkpoint_id)
        return Mark(thread_id, checkpoint_id, frozenset(writes))

    async def rewind(self, mark: Mark) -> None:
        conn, thread, since = self._saver.conn, mark.thread_id, mark.checkpoint_id or ""
        async with self._saver.lock:
            await conn.execute(
                "DELETE FROM checkpoints WHERE thread_id = ? AND checkpoint_id > ?", (thread, since)
            )
            await conn.execute(
                "DELETE FROM writes WHERE thread_id = ? AND checkpoint_id > ?", (thread, since)
            )
            if mark.checkpoint_id is not None:
                added = [w for w in await self._writes(thread, since) if w not in mark.writes]
                await conn.executemany(
                    "DELETE FROM writes WHERE thread_id = ? AND checkpoint_ns = ''"
                    " AND checkpoint_id = ? AND task_id = ? AND idx = ?",
                    [(thread, since, t, i) for t, i in added],
                )
            await conn.commit()
