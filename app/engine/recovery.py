"""Recovery, written once for every store: a run is dead when its owner is gone.

A run's record names its owner (the worker that runs it). A run still `running` whose owner is
not alive is ended `failed` by another worker: at startup, and, when several workers share the
store, whenever a worker's lease expires (app/engine/leases.py). With one worker the code is
`interrupted_by_restart` (the only worker restarted); with several it is `worker_lost`.

- Exactly one worker ends a dead run: it first takes the run over in the store
  (`RunStore.take_over`, a conditional write only one caller wins).
- What the dead worker sent is kept: the events it published to the shared log (Redis) and
  those it stored are sealed together with the ending, so a replay loses nothing that reached
  either.
- The ending, `error` and `end`, takes ids above any id a client could have been sent (the
  run's id ceiling, app/engine/ids.py, or the last event stored or published if that is
  higher), so a client reconnecting with any id it saw gets its ending; it is published too,
  so streams of the run on every worker get it.
- The run's thread is released: a run with `"input": null` on it continues from its last
  checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from app.engine import events
from app.engine.codec import LogEvent
from app.engine.ports import RunStore, SharedLog
from app.engine.record import RunRecord
from app.engine.tenancy import checkpoint_thread

log = logging.getLogger("app.engine")

INTERRUPTED_BY_RESTART = "interrupted_by_restart"
INTERRUPTED_MESSAGE = (
    "the server stopped while this run was in progress; the thread keeps its last completed "
    'checkpoint, and a run with "input": null on it continues from there'
)
WORKER_LOST = "worker_lost"
WORKER_LOST_MESSAGE = (
    "the worker running this run stopped answering; the thread keeps its last completed "
    'checkpoint, and a run with "input": null on it continues from there'
)


def closing_events(
    record: RunRecord, last_stored: int, ceiling: int = 0, code: str = INTERRUPTED_BY_RESTART
) -> list[LogEvent]:
    """The `error` and `end` that close the stored log of a run whose owner died, with ids above
    both its last stored event and its id ceiling (and its `metadata` first, as event 1, if
    nothing of it reached the store: the same event a client may have been sent as 1)."""
    message = WORKER_LOST_MESSAGE if code == WORKER_LOST else INTERRUPTED_MESSAGE
    out: list[LogEvent] = []
    if last_stored == 0:
        meta = events.metadata(record.run_id, record.thread_id, record.graph)
        out.append(LogEvent.of(1, "metadata", meta))
    last_id = max(last_stored, ceiling, 1)
    error = events.error(code, message)
    end = events.end("failed", code, record.usage, record.elapsed_ms)
    out.append(LogEvent.of(last_id + 1, "error", error))
    out.append(LogEvent.of(last_id + 2, "end", end))
    return out


async def recover(
    store: RunStore,
    alive: Callable[[RunRecord], bool],
    me: str,
    shared: SharedLog | None = None,
    code: str = INTERRUPTED_BY_RESTART,
) -> list[str]:
    """End every running run that is not `alive` (`me` takes each one over first); return
    their ids."""
    recovered = []
    for record in await store.running():
        if alive(record):
            continue
        # Read everything before taking the run over: a run taken over is no one else's to
        # end, so a failure after that point would leave it running for good.
        stored = await store.load_events(record.run_id)
        published = await shared.published(record.run_id) if shared is not None else []
        ceiling = await store.id_ceiling(record.run_id)
        if not await store.take_over(record.run_id, record.owner or "", me):
            continue  # another worker is ending it
        kept = {e.id: e for e in stored} | {e.id: e for e in published}
        last_seen = max(kept, default=0)
        message = WORKER_LOST_MESSAGE if code == WORKER_LOST else INTERRUPTED_MESSAGE
        record.owner = me
        record.interrupted(code, message)
        closing = closing_events(record, last_seen, ceiling, code)
        record.events = closing[-1].id
        await store.seal(record, [kept[i] for i in sorted(kept)] + closing)
        if shared is not None:
            await shared.publish(record.run_id, closing)
        await store.release_thread(
            checkpoint_thread(record.tenant, record.thread_id), record.run_id
        )
        recovered.append(record.run_id)
        if code == WORKER_LOST:
            log.warning("run %s: its worker was lost: reported failed", record.run_id)
        else:
            log.warning("run %s was cut off by a restart: reported failed", record.run_id)
    return recovered
