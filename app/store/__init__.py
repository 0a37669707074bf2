"""Where run records and finished runs' event logs live, so they outlive the process.

`RunStore` is the seam: `SqliteRunStore` (the embedded default, same file as the checkpoints)
and `MemoryRunStore` (`DATABASE_URL=memory://`, for tests and throwaway servers) pass the same
contract tests (tests/store/test_contract.py).

What is stored
- A run's record (`GET /runs/{id}`) as soon as the run starts, again whenever it changes status.
- Its events, flushed in batches while it runs and completely once it ends, so replay with
  `Last-Event-ID` works after a restart.
- Recovery: a run still `running` in the store when the process starts was cut off by a crash or
  SIGKILL. `recover()` reports it `failed` with code `interrupted_by_restart` and closes its
  event log with `error` and `end`, ids following the last stored event.
- Retention: `purge()` removes runs that ended longer ago than `RUN_RETENTION_S`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from app.runs.log import Event
from app.runs.record import RunRecord

INTERRUPTED_BY_RESTART = "interrupted_by_restart"
INTERRUPTED_MESSAGE = (
    "the server stopped while this run was in progress; the thread keeps its last completed "
    'checkpoint, and a run with "input": null on it continues from there'
)


class RunStore(Protocol):
    async def save_record(self, record: RunRecord) -> None:
        """Insert or replace the run's record."""

    async def append_events(self, batches: Sequence[tuple[str, Sequence[Event]]]) -> None:
        """Store events of runs, `(run_id, events)` pairs in one write (an event already stored
        is left as it is, so a retried write is harmless)."""

    async def load_record(self, run_id: str) -> RunRecord | None: ...

    async def load_events(self, run_id: str) -> list[Event]: ...

    async def thread_graph(self, thread_id: str) -> str | None:
        """The graph of the thread's most recent run, or None for an unknown thread."""

    async def recover(self) -> list[str]:
        """Mark runs left `running` by a dead process as failed; return their ids."""

    async def purge(self, ended_before: str) -> int:
        """Forget runs that ended before this ISO time; return how many."""

    async def close(self) -> None: ...


def interrupted_events(record: RunRecord, last_id: int) -> list[Event]:
    """The `error` and `end` that close the log of a run the process died under."""
    error = {"code": INTERRUPTED_BY_RESTART, "message": INTERRUPTED_MESSAGE}
    events: list[Event] = []
    if last_id == 0:
        meta = {"run_id": record.run_id, "thread_id": record.thread_id, "graph": record.graph}
        events.append(Event(1, "metadata", meta))
        last_id = 1
    end = {
        "status": "failed",
        "reason": INTERRUPTED_BY_RESTART,
        "usage": record.usage,
        "elapsed_ms": record.elapsed_ms,
    }
    events.append(Event(last_id + 1, "error", error))
    events.append(Event(last_id + 2, "end", end))
    return events
