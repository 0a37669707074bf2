"""The persister: copies runs' records and events from their logs to the `RunStore`, off the hot
path.

One background task does all the writing, so the store sees one writer and the run tasks never
wait on the disk: a run appends to its log, and every `EVENT_FLUSH_S` the persister writes what
each live run appended since the last pass. A run that ends is handed over with `finished()` and
sealed on the next pass (woken at once): its record and all its events in one write, stored
compactly; then its log is told (`sealed()`: a shared log publishes its `end` only now) and
its thread's claim is dropped (a new run on the thread takes over the claim of an ended run at
once anyway, app/engine/manager.py). What a crash can lose is at most the last
`EVENT_FLUSH_S` of a live run's events; recovery (app/engine/recovery.py) closes that run's
stored log with `error`/`end` after the last event that reached the disk.

The persister also reserves event ids ahead of the live runs (app/engine/ids.py): on a pass,
a run that has used half its reserved range gets a new ceiling, all such runs in one write.

Also here: the retention sweep (`purge`) once at start and then hourly.

Store failures: each pass first asks the store whether it can take writes (`probe`: on SQLite,
the disk's free space). A probe or write that fails with a store error (disk full, I/O error,
read-only) is reported to `on_failure` once (a pool out of connections only once it has
been so for `BUSY_BOUND_S`), and the pass is retried every `EVENT_FLUSH_S`
(inserts are idempotent); the first pass whose probe and writes succeed calls `on_recovered`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from app.engine.failures import store_busy, store_error
from app.engine.idempotency import KEY_TTL_S
from app.engine.ids import next_ceiling
from app.engine.ports import RunStore
from app.engine.tenancy import checkpoint_thread

if TYPE_CHECKING:
    from app.engine.run import Run

log = logging.getLogger("app.engine.persist")

PURGE_EVERY_S = 3600.0
BUSY_BOUND_S = 10.0
"""A pool with no free connection (a burst of starts) is busy, not down: passes are retried
for this long before the store counts as unavailable (a server that is down is that too)."""


class Persister:
    def __init__(
        self,
        store: RunStore,
        live_runs: Callable[[], Iterable[Run]],
        flush_s: float,
        retention_s: float,
        on_failure: Callable[[str], None] = lambda problem: None,
        on_recovered: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._on_failure = on_failure
        self._on_recovered = on_recovered
        self.problem: str | None = None  # what is wrong with the store, while it is
        self._live_runs = live_runs
        self._flush_s = flush_s
        self._retention_s = retention_s
        self._ended: dict[str, Run] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._next_purge = 0.0
        self._busy_since: float | None = None  # the first pass the pool had no connection for

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="persister")

    def wake(self) -> None:
        """Make a pass now (a reader found events above its run's ceiling)."""
        self._wake.set()

    def finished(self, run: Run) -> None:
        """`run` has ended: write all of it (record and remaining events) on the next pass."""
        self._ended[run.run_id] = run
        self._wake.set()

    def failed(self, problem: str) -> None:
        """The store cannot be written (seen here or by a run): report it, once, until a pass
        succeeds again."""
        if self.problem is None:
            self.problem = problem
            log.error("store unavailable: %s; retrying every %.1fs", problem, self._flush_s)
            self._on_failure(problem)

    async def stop(self) -> None:
        """Write everything still pending, then end the loop."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _loop(self) -> None:
        while True:
            waiter = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({waiter}, timeout=self._flush_s)
            finally:
                waiter.cancel()
            self._wake.clear()
            try:
                await self._store.probe()
                await self.flush()
                if time.monotonic() >= self._next_purge:
                    await self.purge()
            except Exception as exc:
                # Try again on the next pass (inserts are idempotent) rather than losing the
                # loop; a store that cannot be written is reported once.
                problem = store_error(exc)
                now = time.monotonic()
                if problem is None:
                    log.exception("writing runs failed; retrying in %.1fs", self._flush_s)
                elif store_busy(exc) and now - (self._busy_since or now) < BUSY_BOUND_S:
                    if self._busy_since is None:
                        self._busy_since = now
                        log.warning("store busy (%s); retrying every %.1fs", problem, self._flush_s)
                else:
                    self.failed(problem)
            else:
                self._busy_since = None
                if self.problem is not None:
                    log.warning("store writable again (was: %s)", self.problem)
                    self.problem = None
                    self._on_recovered()
            if self._stopping:
                return

    async def flush(self) -> None:
        """One write for the new events of every live run, one for the id ceilings that need
        raising (if any), then one per ended run."""
        live = [run for run in self._live_runs() if not run.done]
        await self._reserve(live)
        batches = [(run, run.log.after(run.persisted, run.log.last_id)) for run in live]
        batches = [(run, events) for run, events in batches if events]
        await self._store.append_events([(run.run_id, events) for run, events in batches])
        for run, events in batches:
            run.persisted = events[-1].id
            run.ids.raise_to(run.persisted)  # stored: recovery writes above it
        for run in list(self._ended.values()):
            events = run.log.after(0, run.log.last_id)
            await self._store.seal(run.record, events)
            run.persisted = run.log.last_id
            run.ids.raise_to(run.persisted)
            run.log.sealed()  # other workers' readers may get its `end` now
            record = run.record
            await self._store.release_thread(
                checkpoint_thread(record.tenant, record.thread_id), record.run_id
            )
            del self._ended[run.run_id]

    async def _reserve(self, live: list[Run]) -> None:
        now = time.monotonic()
        raises = []
        for run in live:
            last = run.log.last_id
            seen, at = run.seen_by_persister
            rate = (last - seen) / (now - at) if at and now > at else 0.0
            run.seen_by_persister = (last, now)
            ceiling = next_ceiling(last, run.ids.ceiling, rate)
            if ceiling is not None:
                raises.append((run, ceiling))
        if raises:
            await self._store.reserve_ids([(run.run_id, ceiling) for run, ceiling in raises])
            for run, ceiling in raises:
                run.ids.raise_to(ceiling)

    async def purge(self) -> None:
        self._next_purge = time.monotonic() + PURGE_EVERY_S
        cutoff = datetime.now(UTC) - timedelta(seconds=self._retention_s)
        removed = await self._store.purge(cutoff.isoformat(timespec="milliseconds"))
        if removed:
            log.info("retention: forgot %d runs that ended before %s", removed, cutoff)
        keys_cutoff = datetime.now(UTC) - timedelta(seconds=KEY_TTL_S)
        await self._store.purge_keys(keys_cutoff.isoformat(timespec="milliseconds"))
