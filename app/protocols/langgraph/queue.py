"""`multitask_strategy: "enqueue"`: a run asked for on a busy thread waits for the thread's
run to end, then starts, in the order asked.

Design record
- The queued run's id is chosen when it is asked for (`RunRequest.run_id`), so the client gets
  it at once (`200` with status `pending`, or the stream's `Content-Location`), and it is the
  run's id once it starts: one run, one id, in both APIs from then on.
- Order: one `asyncio.Lock` per thread in this process, held from the queued run's wait until
  its run has ended; `asyncio.Lock` wakes its waiters first in, first out. The thread's current
  run may be another worker's: the wait reads that run's log until its end.
- A queued run exists only on the worker that queued it until it starts (it is in no store):
  `GET` and cancel of a pending run work through that worker only; once it has started it is
  an ordinary run, visible everywhere. The lifespan cancels the waits at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from app.engine.errors import Conflict
from app.engine.manager import RunManager
from app.engine.record import _now
from app.engine.run import Run

log = logging.getLogger("app.protocols.langgraph")
KEEP = 10_000  # queued runs remembered (pending, or cancelled before they started)
RETRY_S = 0.05


@dataclass
class Queued:
    run_id: str
    thread_id: str
    tenant: str
    graph: str
    created_at: str = field(default_factory=_now)
    cancelled: bool = False
    started: asyncio.Future[Run | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    @property
    def pending(self) -> bool:
        return not self.started.done()


async def wait_ended(run: Run) -> None:
    reader = run.reader
    while not reader.closed:
        await reader.wait(reader.last_id)


class RunQueue:
    def __init__(self, manager: RunManager) -> None:
        self._manager = manager
        self._queued: OrderedDict[str, Queued] = OrderedDict()
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, run_id: str, tenant: str) -> Queued | None:
        queued = self._queued.get(run_id)
        return queued if queued is not None and queued.tenant == tenant else None

    def on_thread(self, tenant: str, thread_id: str) -> list[Queued]:
        return [
            q
            for q in self._queued.values()
            if q.tenant == tenant and q.thread_id == thread_id and q.pending
        ]

    def add(self, queued: Queued, start: Callable[[], Awaitable[Run]]) -> None:
        """Start `start()` once the thread is free, after the runs queued before it."""
        self._queued[queued.run_id] = queued
        while len(self._queued) > KEEP:
            self._queued.popitem(last=False)
        task = asyncio.create_task(
            self._wait_then_start(queued, start), name=f"queued:{queued.run_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel(self, queued: Queued) -> None:
        queued.cancelled = True
        if not queued.started.done():
            queued.started.set_result(None)

    async def _wait_then_start(self, queued: Queued, start: Callable[[], Awaitable[Run]]) -> None:
        key = (queued.tenant, queued.thread_id)
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                run = await self._start_when_free(queued, start)
                if run is not None:
                    await wait_ended(run)  # the next queued run waits for this one
        except asyncio.CancelledError:  # shutdown: whoever waits on it sees no run
            if not queued.started.done():
                queued.started.set_result(None)
            raise
        except Exception as exc:  # the start was refused: whoever waits on it is told
            log.warning("queued run %s did not start: %s", queued.run_id, exc)
            if not queued.started.done():
                queued.started.set_exception(exc)
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def _start_when_free(
        self, queued: Queued, start: Callable[[], Awaitable[Run]]
    ) -> Run | None:
        manager = self._manager
        while not queued.cancelled:
            busy = await manager.active_run_on(queued.thread_id, tenant=queued.tenant)
            if busy is not None:
                await wait_ended(await manager.get(busy, tenant=queued.tenant))
                continue
            try:
                run = await start()
            except Conflict as exc:
                if exc.code != "thread_busy":
                    raise
                # Another request took the thread first (or its claim is being let go):
                # wait for that run too, without spinning on the store.
                await asyncio.sleep(RETRY_S)
                continue
            if not queued.started.done():
                queued.started.set_result(run)
            return run
        return None

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
