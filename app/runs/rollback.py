"""Rollback: put a thread back exactly as it was before a run (`{"action": "rollback"}`).

Before each run the manager takes a `Mark` of the thread: its newest checkpoint id and the
pending writes already attached to it. Rolling back deletes every checkpoint of the thread
(any namespace, so subgraphs too) newer than the mark, and every write the run attached to the
marked checkpoint (a `resume` value, the writes of steps that finished before the cancel).
Checkpoint ids are UUIDv6, ordered by time, so "newer" is a string comparison.

LangGraph's savers have no "delete a run's checkpoints" here (`delete_for_runs` is not
implemented by the SQLite or memory saver), so this knows the two savers the service ships
with and refuses any other with `RollbackUnsupported` rather than pretending.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver


class RollbackUnsupported(RuntimeError):
    """The configured checkpointer has no rollback here."""


@dataclass(frozen=True)
class Mark:
    thread_id: str
    checkpoint_id: str | None
    writes: frozenset[tuple[str, int]]


def _sqlite_saver(saver: BaseCheckpointSaver[Any]) -> Any:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    return saver if isinstance(saver, AsyncSqliteSaver) else None


async def mark(saver: BaseCheckpointSaver[Any], thread_id: str) -> Mark:
    config: Any = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    latest = await saver.aget_tuple(config)
    if latest is None:
        return Mark(thread_id, None, frozenset())
    checkpoint_id = latest.config["configurable"]["checkpoint_id"]
    if isinstance(saver, InMemorySaver):
        keys = saver.writes.get((thread_id, "", checkpoint_id), {}).keys()
        return Mark(thread_id, checkpoint_id, frozenset(keys))
    sqlite = _sqlite_saver(saver)
    if sqlite is None:
        raise RollbackUnsupported(f"rollback is not supported with {type(saver).__name__}")
    async with (
        sqlite.lock,
        sqlite.conn.execute(
            "SELECT task_id, idx FROM writes"
            " WHERE thread_id = ? AND checkpoint_ns = '' AND checkpoint_id = ?",
            (thread_id, checkpoint_id),
        ) as cursor,
    ):
        rows = await cursor.fetchall()
    return Mark(thread_id, checkpoint_id, frozenset((str(t), int(i)) for t, i in rows))


async def rollback(saver: BaseCheckpointSaver[Any], to: Mark) -> None:
    """Delete what was written to the thread after `to` was taken."""
    if isinstance(saver, InMemorySaver):
        _rollback_memory(saver, to)
        return
    sqlite = _sqlite_saver(saver)
    if sqlite is None:
        raise RollbackUnsupported(f"rollback is not supported with {type(saver).__name__}")
    thread, since = to.thread_id, to.checkpoint_id or ""
    async with sqlite.lock:
        await sqlite.conn.execute(
            "DELETE FROM checkpoints WHERE thread_id = ? AND checkpoint_id > ?", (thread, since)
        )
        await sqlite.conn.execute(
            "DELETE FROM writes WHERE thread_id = ? AND checkpoint_id > ?", (thread, since)
        )
        if to.checkpoint_id is not None:
            async with sqlite.conn.execute(
                "SELECT task_id, idx FROM writes"
                " WHERE thread_id = ? AND checkpoint_ns = '' AND checkpoint_id = ?",
                (thread, since),
            ) as cursor:
                rows = await cursor.fetchall()
            added = [(t, i) for t, i in rows if (str(t), int(i)) not in to.writes]
            await sqlite.conn.executemany(
                "DELETE FROM writes WHERE thread_id = ? AND checkpoint_ns = ''"
                " AND checkpoint_id = ? AND task_id = ? AND idx = ?",
                [(thread, since, t, i) for t, i in added],
            )
        await sqlite.conn.commit()


def _rollback_memory(saver: InMemorySaver, to: Mark) -> None:
    since = to.checkpoint_id or ""
    for checkpoints in saver.storage.get(to.thread_id, {}).values():
        for checkpoint_id in [c for c in checkpoints if c > since]:
            del checkpoints[checkpoint_id]
    for key in [k for k in saver.writes if k[0] == to.thread_id]:
        if key[2] > since:
            del saver.writes[key]
        elif key[1] == "" and key[2] == to.checkpoint_id:
            writes = saver.writes[key]
            for write in [w for w in writes if w not in to.writes]:
                del writes[write]
