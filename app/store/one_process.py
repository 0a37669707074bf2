"""What the one-process stores (memory, SQLite) keep for coordinating workers: there is one
worker, so thread claims, leases and cancel requests live in its memory and end with it (a
restart starts with no claim and no lease, which is what recovery needs)."""

from __future__ import annotations

import asyncio

from app.engine.record import RunRecord, RunStatus


class OneProcessCoordination:
    """Mixed into a store that has `load_record` and `save_record`."""

    def __init__(self) -> None:
        self._claims: dict[str, str] = {}
        self._leases: dict[str, str] = {}
        self._cancels: dict[str, tuple[str, str]] = {}  # run id -> (owner, action)
        self._taking_over = asyncio.Lock()  # a take-over reads, then writes, the record

    async def load_record(self, run_id: str) -> RunRecord | None:
        raise NotImplementedError

    async def save_record(self, record: RunRecord) -> None:
        raise NotImplementedError

    async def claim_thread(self, thread_key: str, run_id: str) -> str | None:
        holder = self._claims.setdefault(thread_key, run_id)
        return None if holder == run_id else holder

    async def release_thread(self, thread_key: str, run_id: str) -> None:
        if self._claims.get(thread_key) == run_id:
            del self._claims[thread_key]

    async def thread_run(self, thread_key: str) -> str | None:
        return self._claims.get(thread_key)

    async def heartbeat(self, worker_id: str, now: str) -> None:
        self._leases[worker_id] = now

    async def live_workers(self, since: str) -> set[str]:
        return {worker for worker, at in self._leases.items() if at >= since}

    async def take_over(self, run_id: str, owner: str, by: str) -> bool:
        async with self._taking_over:
            record = await self.load_record(run_id)
            if (
                record is None
                or record.status is not RunStatus.RUNNING
                or (record.owner or "") != owner
            ):
                return False
            record.owner = by
            await self.save_record(record)
            return True

    async def request_cancel(self, run_id: str, action: str) -> None:
        record = await self.load_record(run_id)
        if record is not None and record.status is RunStatus.RUNNING and record.owner:
            self._cancels.setdefault(run_id, (record.owner, action))

    async def cancel_requests(self, owner: str) -> list[tuple[str, str]]:
        out = []
        for run_id, (holder, action) in list(self._cancels.items()):
            record = await self.load_record(run_id)
            if record is None or record.status is not RunStatus.RUNNING:
                del self._cancels[run_id]
            elif holder == owner:
                out.append((run_id, action))
        return out
