"""Recovery, written once for every store: a run is dead when its owner is gone.

A run's record names its owner (the worker that runs it). At startup, and later whenever a
worker's lease expires, every run still `running` whose owner is not alive is reported `failed`
with code `interrupted_by_restart`, and its stored log is closed with `error` and `end` above
any id a client could have been sent (the run's id ceiling, app/engine/ids.py, or its last
stored event if that is higher), so a client reconnecting with any id it saw gets its ending.
Today there is one worker process: at startup no earlier owner is alive.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from app.engine import events
from app.engine.codec import LogEvent
from app.engine.ports import RunStore
from app.engine.record import RunRecord

log = logging.getLogger("app.engine")

INTERRUPTED_BY_RESTART = "interrupted_by_restart"
INTERRUPTED_MESSAGE = (
    "the server stopped while this run was in progress; the thread keeps its last completed "
    'checkpoint, and a run with "input": null on it continues from there'
)


def closing_events(record: RunRecord, last_stored: int, ceiling: int = 0) -> list[LogEvent]:
    """The `error` and `end` that close the stored log of a run whose owner died, with ids above
    both its last stored event and its id ceiling (and its `metadata` first, as event 1, if
    nothing of it reached the store: the same event a client may have been sent as 1)."""
    out: list[LogEvent] = []
    if last_stored == 0:
        meta = events.metadata(record.run_id, record.thread_id, record.graph)
        out.append(LogEvent.of(1, "metadata", meta))
    last_id = max(last_stored, ceiling, 1)
    error = events.error(INTERRUPTED_BY_RESTART, INTERRUPTED_MESSAGE)
    end = events.end("failed", INTERRUPTED_BY_RESTART, record.usage, record.elapsed_ms)
    out.append(LogEvent.of(last_id + 1, "error", error))
    out.append(LogEvent.of(last_id + 2, "end", end))
    return out


async def recover(store: RunStore, alive: Callable[[str | None], bool]) -> list[str]:
    """Fail every running run whose owner is not `alive`; return their ids."""
    recovered = []
    for record in await store.running():
        if alive(record.owner):
            continue
        record.interrupted(INTERRUPTED_BY_RESTART, INTERRUPTED_MESSAGE)
        last_stored = await store.last_event_id(record.run_id)
        closing = closing_events(record, last_stored, await store.id_ceiling(record.run_id))
        record.events = closing[-1].id
        await store.append_events([(record.run_id, closing)])
        await store.save_record(record)
        recovered.append(record.run_id)
        log.warning("run %s was cut off by a restart: reported failed", record.run_id)
    return recovered
