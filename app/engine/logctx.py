"""What the engine's log lines are about: the run, thread, graph and tenant, as `extra=` fields
for the log call and in a context variable that a run's task (and everything it calls) inherits,
so a line logged from inside a graph names its run too. The formatter (app/logformat.py) reads
both; a key or token is never among them."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from app.engine.record import RunRecord

FIELDS = ("run_id", "thread_id", "graph", "tenant")

current: ContextVar[dict[str, str] | None] = ContextVar("lgstream_run", default=None)


def of(record: RunRecord) -> dict[str, Any]:
    """The `extra=` of a log line about this run."""
    return {
        "run_id": record.run_id,
        "thread_id": record.thread_id,
        "graph": record.graph,
        "tenant": record.tenant,
    }


def enter(record: RunRecord) -> None:
    """From here on (and in tasks created from here) log lines are about this run."""
    current.set(of(record))
