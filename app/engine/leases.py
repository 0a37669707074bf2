"""Worker leases: every worker says it is alive, and the others end the runs of one that is not.

Design record
- Every `heartbeat_s` (WORKER_HEARTBEAT_S) a worker renews its lease in the `RunStore`. A worker
  whose lease is `LOST_AFTER` heartbeats old is lost: the next worker to notice takes over each
  of its running runs and ends it `failed` with `worker_lost` (app/engine/recovery.py). Why
  leases in the store: every worker already reaches it, and a dead process cannot say it died.
- A worker judges others only once its own lease has been renewed without a miss for a whole
  lease period. Why: after the store was unreachable, every lease is old (no worker could renew
  it), and nobody is lost for that.
- On the same beat the owner reads the cancel requests noted on its runs' records: the
  fallback for a cancel message the broker did not deliver (a pub/sub message is lost if the
  subscriber was reconnecting when it was sent).
- A failing beat (the store is down) is logged and tried again on the next one: no retry loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from app.engine.failures import store_error
from app.engine.ports import RunStore

log = logging.getLogger("app.engine.leases")

LOST_AFTER = 3
"""Heartbeats a lease may miss before its worker is lost."""


def iso_now(ago_s: float = 0.0) -> str:
    return (datetime.now(UTC) - timedelta(seconds=ago_s)).isoformat(timespec="milliseconds")


class Leases:
    def __init__(
        self,
        store: RunStore,
        worker_id: str,
        heartbeat_s: float,
        on_cancel: Callable[[str, str], Awaitable[None]],
        recover: Callable[[set[str]], Awaitable[list[str]]],
    ) -> None:
        self._store = store
        self._worker_id = worker_id
        self.heartbeat_s = heartbeat_s
        self._on_cancel = on_cancel
        self._recover = recover
        self._renewed_since: float | None = None  # monotonic time of the first beat of a run
        self._task: asyncio.Task[None] | None = None
        self.beats = 0

    @property
    def lost_after_s(self) -> float:
        return LOST_AFTER * self.heartbeat_s

    async def beat(self) -> None:
        """Renew the lease now (startup: before recovery judges anyone)."""
        await self._store.heartbeat(self._worker_id, iso_now())
        if self._renewed_since is None:
            self._renewed_since = time.monotonic()
        self.beats += 1

    async def live_workers(self) -> set[str]:
        return await self._store.live_workers(iso_now(self.lost_after_s))

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="leases")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self.beat()
            except Exception as exc:
                self._renewed_since = None
                log.warning("heartbeat failed (%s); next try in %.1fs", _why(exc), self.heartbeat_s)
                continue
            try:
                for run_id, action in await self._store.cancel_requests(self._worker_id):
                    await self._on_cancel(run_id, action)
                since = self._renewed_since
                if since is not None and time.monotonic() - since >= self.lost_after_s:
                    await self._recover(await self.live_workers())
            except Exception as exc:
                log.warning(
                    "lease pass failed (%s); next try in %.1fs", _why(exc), self.heartbeat_s
                )


def _why(exc: BaseException) -> str:
    return store_error(exc) or f"{type(exc).__name__}: {exc}"
