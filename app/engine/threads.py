"""Threads as objects, for an API that has them (LangGraph's): created before any run, with
metadata, searched, deleted; their status read from their runs.

Design record
- A thread is known if it has a record (`RunStore.put_thread`) or a run: a thread the native
  API started by naming it in a run has no record, and is shown with its first run's time and
  empty metadata, so one thread is one thread whichever API made it.
- A thread's status is its newest run's (app/protocols/langgraph/shapes.py maps it), `busy`
  while a run is live on any worker; it is computed when asked, never stored, so it cannot
  go stale when a worker dies.
- Deleting a thread cancels its live run (confirmed), then drops its checkpoints, its record,
  its runs' records and their events: afterwards nothing of it is found.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig

from app.engine.errors import Conflict, NotFound
from app.engine.ports import RunStore
from app.engine.record import RunRecord, ThreadRecord
from app.engine.registry import GraphRegistry
from app.engine.tenancy import check_thread_id, checkpoint_thread

if TYPE_CHECKING:
    from app.engine.manager import RunManager


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Threads:
    """The tenant-scoped thread operations; made by the `RunManager` (`manager.threads`)."""

    def __init__(self, manager: RunManager, store: RunStore, registry: GraphRegistry) -> None:
        self._manager = manager
        self._store = store
        self._registry = registry

    async def create(
        self,
        tenant: str,
        thread_id: str | None,
        metadata: Mapping[str, Any],
        *,
        if_exists: str = "raise",
    ) -> ThreadRecord:
        """A new thread (a random id if none is given). One that exists already is `409
        thread_exists`, or, with `if_exists="do_nothing"`, returned as it is."""
        thread_id = check_thread_id(thread_id or str(uuid.uuid4()))
        existing = await self.find(tenant, thread_id)
        if existing is None:
            wanted = ThreadRecord(thread_id, tenant, metadata=dict(metadata))
            stored = await self._store.put_thread(wanted)
            if stored.created_at == wanted.created_at and stored.metadata == wanted.metadata:
                return stored
            existing = stored  # another request created it meanwhile
        if if_exists == "do_nothing":
            return existing
        raise Conflict(f"thread {thread_id!r} exists already", code="thread_exists")

    async def find(self, tenant: str, thread_id: str) -> ThreadRecord | None:
        check_thread_id(thread_id)
        record = await self._store.get_thread(tenant, thread_id)
        if record is not None:
            return record
        runs = await self._store.thread_runs(tenant, thread_id, 1, 0)
        if not runs and await self._manager.active_run_on(thread_id, tenant=tenant) is None:
            return None
        created = runs[0].created_at if runs else _now()
        return ThreadRecord(thread_id, tenant, created_at=created, updated_at=created)

    async def require(self, tenant: str, thread_id: str) -> ThreadRecord:
        record = await self.find(tenant, thread_id)
        if record is None:
            raise NotFound(f"no thread with id {thread_id!r}", code="thread_not_found")
        return record

    async def ensure(self, tenant: str, thread_id: str) -> ThreadRecord:
        """The thread, created (no metadata) if it does not exist."""
        return await self.create(tenant, thread_id, {}, if_exists="do_nothing")

    async def touch(self, tenant: str, thread_id: str, metadata: Mapping[str, Any] | None) -> None:
        check_thread_id(thread_id)
        await self._store.touch_thread(tenant, thread_id, _now(), metadata)

    async def last_run(self, tenant: str, thread_id: str) -> RunRecord | None:
        check_thread_id(thread_id)
        runs = await self._store.thread_runs(tenant, thread_id, 1, 0)
        return runs[0] if runs else None

    async def runs(self, tenant: str, thread_id: str, limit: int, offset: int) -> list[RunRecord]:
        check_thread_id(thread_id)
        return await self._store.thread_runs(tenant, thread_id, limit, offset)

    async def busy(self, tenant: str, thread_id: str) -> str | None:
        return await self._manager.active_run_on(thread_id, tenant=tenant)

    async def search(
        self, tenant: str, metadata: Mapping[str, Any], limit: int, offset: int
    ) -> list[ThreadRecord]:
        return await self._store.search_threads(tenant, metadata, limit, offset)

    def _config(self, tenant: str, thread_id: str) -> RunnableConfig:
        return RunnableConfig(configurable={"thread_id": checkpoint_thread(tenant, thread_id)})

    async def snapshot(self, tenant: str, thread_id: str) -> Any | None:
        """The thread's newest LangGraph `StateSnapshot`, None if it never ran a graph."""
        graph = await self._manager.thread_graph(thread_id, tenant=tenant)
        if graph is None or graph not in self._registry:
            return None
        return await self._registry[graph].compiled.aget_state(self._config(tenant, thread_id))

    async def history(
        self, tenant: str, thread_id: str, limit: int, before: str | None
    ) -> list[Any]:
        """The thread's checkpoints as `StateSnapshot`s, newest first."""
        graph = await self._manager.thread_graph(thread_id, tenant=tenant)
        if graph is None or graph not in self._registry:
            return []
        config = self._config(tenant, thread_id)
        before_config = None
        if before is not None:
            before_config = RunnableConfig(
                configurable={**config["configurable"], "checkpoint_id": before}
            )
        compiled = self._registry[graph].compiled
        return [
            s async for s in compiled.aget_state_history(config, limit=limit, before=before_config)
        ]

    async def delete(self, tenant: str, thread_id: str) -> None:
        """Cancel its live run, then drop everything of it; `NotFound` if it does not exist."""
        await self.require(tenant, thread_id)
        live = await self._manager.active_run_on(thread_id, tenant=tenant)
        if live is not None:
            await self._manager.cancel(live, tenant=tenant)
        for entry in self._registry.values():
            saver = entry.compiled.checkpointer
            if saver is not None and not isinstance(saver, bool):
                await saver.adelete_thread(checkpoint_thread(tenant, thread_id))
                break  # every graph shares the one checkpointer
        await self._store.delete_thread(tenant, thread_id)
        self._manager.forget_thread(tenant, thread_id)
