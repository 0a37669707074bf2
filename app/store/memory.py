"""The in-process store (`DATABASE_URL=memory://`): same contract, gone with the process."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from app.engine.codec import LogEvent
from app.engine.idempotency import KeyBinding
from app.engine.record import RunRecord, RunStatus, ThreadRecord
from app.store._threads import matches
from app.store.one_process import OneProcessCoordination


class MemoryRunStore(OneProcessCoordination):
    def __init__(self) -> None:
        super().__init__()
        self._records: dict[str, dict[str, object]] = {}
        self._events: dict[str, dict[int, LogEvent]] = {}
        self._keys: dict[tuple[str, str], KeyBinding] = {}
        self._ceilings: dict[str, int] = {}
        self._secrets: dict[str, bytes] = {}
        self._threads: dict[tuple[str, str], ThreadRecord] = {}

    async def save_record(self, record: RunRecord) -> None:
        # A copy, as a database would hold: later changes to the live record are not stored.
        self._records[record.run_id] = record.stored()

    async def append_events(self, batches: Sequence[tuple[str, Sequence[LogEvent]]]) -> None:
        for run_id, events in batches:
            stored = self._events.setdefault(run_id, {})
            for event in events:
                stored.setdefault(event.id, event)

    async def seal(self, record: RunRecord, events: Sequence[LogEvent]) -> None:
        self._events[record.run_id] = {e.id: e for e in events}
        await self.save_record(record)

    async def load_record(self, run_id: str) -> RunRecord | None:
        data = self._records.get(run_id)
        return RunRecord.from_dict(dict(data)) if data else None

    async def load_events(self, run_id: str, after: int = 0) -> list[LogEvent]:
        stored = self._events.get(run_id, {})
        return [stored[i] for i in sorted(stored) if i > after]

    async def last_event_id(self, run_id: str) -> int:
        return max(self._events.get(run_id, {}), default=0)

    async def reserve_ids(self, ceilings: Sequence[tuple[str, int]]) -> None:
        for run_id, ceiling in ceilings:
            self._ceilings[run_id] = max(ceiling, self._ceilings.get(run_id, 0))

    async def id_ceiling(self, run_id: str) -> int:
        return self._ceilings.get(run_id, 0)

    async def thread_graph(self, tenant: str, thread_id: str) -> str | None:
        runs = self._thread_runs(tenant, thread_id)
        if not runs:
            return None
        return str(max(runs, key=lambda r: str(r["created_at"]))["graph"])

    async def running(self) -> list[RunRecord]:
        return [
            RunRecord.from_dict(dict(data))
            for data in self._records.values()
            if data["status"] == RunStatus.RUNNING.value
        ]

    async def put_thread(self, thread: ThreadRecord) -> ThreadRecord:
        # Copies in and out, as a database would hold: the caller's record is not the stored one.
        key = (thread.tenant, thread.thread_id)
        return copy.deepcopy(self._threads.setdefault(key, copy.deepcopy(thread)))

    async def get_thread(self, tenant: str, thread_id: str) -> ThreadRecord | None:
        return copy.deepcopy(self._threads.get((tenant, thread_id)))

    async def touch_thread(
        self,
        tenant: str,
        thread_id: str,
        updated_at: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        thread = self._threads.get((tenant, thread_id))
        if thread is not None:
            thread.updated_at = updated_at
            thread.metadata.update(copy.deepcopy(dict(metadata or {})))

    async def search_threads(
        self, tenant: str, metadata: Mapping[str, Any], limit: int, offset: int
    ) -> list[ThreadRecord]:
        found = [
            t
            for t in self._threads.values()
            if t.tenant == tenant and matches(t.metadata, metadata)
        ]
        found.sort(key=lambda t: (t.created_at, t.thread_id), reverse=True)
        return copy.deepcopy(found[offset : offset + limit])

    async def thread_runs(
        self, tenant: str, thread_id: str, limit: int, offset: int
    ) -> list[RunRecord]:
        runs = self._thread_runs(tenant, thread_id)
        runs.sort(key=lambda r: (str(r["created_at"]), str(r["run_id"])), reverse=True)
        return [RunRecord.from_dict(dict(r)) for r in runs[offset : offset + limit]]

    async def delete_thread(self, tenant: str, thread_id: str) -> bool:
        thread = self._threads.pop((tenant, thread_id), None)
        runs = self._thread_runs(tenant, thread_id)
        for run in runs:
            run_id = str(run["run_id"])
            del self._records[run_id]
            self._events.pop(run_id, None)
            self._ceilings.pop(run_id, None)
        return thread is not None or bool(runs)

    def _thread_runs(self, tenant: str, thread_id: str) -> list[dict[str, object]]:
        return [
            r
            for r in self._records.values()
            if r["tenant"] == tenant and r["thread_id"] == thread_id
        ]

    async def purge(self, ended_before: str) -> int:
        old = [
            run_id
            for run_id, data in self._records.items()
            if data["ended_at"] is not None and str(data["ended_at"]) < ended_before
        ]
        for run_id in old:
            del self._records[run_id]
            self._events.pop(run_id, None)
            self._ceilings.pop(run_id, None)
        return len(old)

    async def bind_key(self, binding: KeyBinding) -> None:
        self._keys[(binding.tenant, binding.key)] = binding

    async def find_key(self, tenant: str, key: str, since: str) -> KeyBinding | None:
        binding = self._keys.get((tenant, key))
        return binding if binding is not None and binding.created_at >= since else None

    async def purge_keys(self, created_before: str) -> int:
        old = [k for k, b in self._keys.items() if b.created_at < created_before]
        for k in old:
            del self._keys[k]
        return len(old)

    async def secret(self, name: str, candidate: bytes) -> bytes:
        return self._secrets.setdefault(name, candidate)

    async def probe(self) -> None:
        return None

    async def close(self) -> None:
        self._records.clear()
        self._events.clear()
        self._keys.clear()
        self._ceilings.clear()
        self._threads.clear()
