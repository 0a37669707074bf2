"""One run: the request that starts it, and the `Run` that holds its record, event log, task,
and its phase. `RunManager` (manager.py) owns the collection and the lifecycle.

Design record: a run's state is one phase machine, written only by the manager:

    RUNNING --cancel--> STOPPING --task ended, writes fenced (and rollback done)--> ENDING -> ENDED
       \\_________________task ended on its own__________________________________/

`ENDING` is where the terminal events are decided (`decide_end`, a pure function) and written,
once: `error` (if the run failed) then `end`, then the log is closed (`ENDED`). Whatever ends a
run (its task, a cancel, a rollback, a task abandoned because it ignores cancel) goes through
`Run.end`, so there is one writer of the terminal events. A stopped run leaves STOPPING only
once its checkpoint writes are fenced (app/engine/fence.py): after `end`, it changes its thread
no more.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command

from app.engine import events, logctx
from app.engine.codec import LogEvent
from app.engine.failures import classify
from app.engine.fence import Fence
from app.engine.idempotency import IdempotencyKey
from app.engine.ids import ReservedLog
from app.engine.limits import RunGuard
from app.engine.mapping import EventMapper
from app.engine.ports import EventLog, EventLogReader, Mark
from app.engine.record import RunRecord, RunStatus
from app.engine.tenancy import DEFAULT_TENANT

log = logging.getLogger("app.engine")

_UNSET: Any = object()


@dataclass(frozen=True)
class RunRequest:
    """A validated request to start a run (built by a protocol)."""

    input: dict[str, Any] | None
    thread_id: str | None = None
    resume: Any = _UNSET
    config: dict[str, Any] = field(default_factory=dict)
    max_tokens: int | None = None
    timeout_s: float | None = None
    recursion_limit: int | None = None
    idempotency: IdempotencyKey | None = None
    tenant: str = DEFAULT_TENANT
    run_id: str | None = None  # chosen by the protocol (a queued run's id is known before it runs)
    update: Any = _UNSET  # LangGraph `Command(update=...)`, with or without `resume`
    goto: Any = _UNSET  # LangGraph `Command(goto=...)`
    interrupt_before: list[str] | None = None  # pause before these nodes (`["*"]`: every one)
    interrupt_after: list[str] | None = None

    @property
    def resuming(self) -> bool:
        return self.resume is not _UNSET

    @property
    def commanding(self) -> bool:
        """The run's input is a LangGraph `Command` (resume, update or goto), not state."""
        return self.resuming or self.update is not _UNSET or self.goto is not _UNSET

    def command(self) -> Command[Any]:
        parts: dict[str, Any] = {}
        if self.resuming:
            parts["resume"] = self.resume
        if self.update is not _UNSET:
            parts["update"] = self.update
        if self.goto is not _UNSET:
            parts["goto"] = self.goto
        return Command(**parts)

    def stream_kwargs(self) -> dict[str, Any]:
        """What `astream_events` takes besides the input and config."""
        kwargs: dict[str, Any] = {}
        if self.interrupt_before:
            kwargs["interrupt_before"] = _nodes(self.interrupt_before)
        if self.interrupt_after:
            kwargs["interrupt_after"] = _nodes(self.interrupt_after)
        return kwargs

    def run_config(self, thread_id: str) -> RunnableConfig:
        """LangGraph's config for the run. `config` holds only what a protocol let a client set
        (tags, metadata, run_name, the graph's own configurable keys); the thread is the
        server's (tenant-qualified, as the checkpointer keys it) and always wins."""
        extra = self.config
        configurable = dict(extra.get("configurable") or {})
        configurable["thread_id"] = thread_id
        config = RunnableConfig(
            configurable=configurable, recursion_limit=self.recursion_limit or 25
        )
        if extra.get("tags"):
            config["tags"] = [str(t) for t in extra["tags"]]
        if extra.get("metadata"):
            config["metadata"] = dict(extra["metadata"])
        if extra.get("run_name"):
            config["run_name"] = str(extra["run_name"])
        return config


def _nodes(names: list[str]) -> Any:
    return "*" if names == ["*"] else list(names)


class Phase(StrEnum):
    RUNNING = "running"
    STOPPING = "stopping"  # a cancel was asked; waiting for the task (and a rollback)
    ENDING = "ending"  # the terminal events are being written
    ENDED = "ended"  # the log is closed


@dataclass(frozen=True)
class Ending:
    status: RunStatus
    reason: str
    error: events.Error | None = None


def decide_end(
    *,
    cancelled: bool,
    exc: BaseException | None,
    cancel_reason: str | None,
    paused: bool,
    forced: bool = False,
    failure: tuple[str, str] | None = None,
) -> Ending:
    """How a run ended, from what its task did.

    `forced`: the run is over whatever its task did (abandoned because it ignored cancel, or
    rolled back). A run that fails *because* it was cancelled (the stream it was reading was
    closed under it) is reported as cancelled, not as a failure. `failure`: the engine stopped
    the run because of this `(code, message)` (the store failed under it): it ends failed."""
    if failure is not None:
        return Ending(RunStatus.FAILED, failure[0], events.error(*failure))
    if forced or cancelled or (exc is not None and cancel_reason):
        return Ending(RunStatus.CANCELLED, cancel_reason or "cancelled")
    if exc is None:
        if paused:
            return Ending(RunStatus.PAUSED, "interrupt")
        return Ending(RunStatus.COMPLETED, "done")
    code, message = classify(exc)
    return Ending(RunStatus.FAILED, code, events.error(code, message))


class StoredLog:
    """The closed log of a finished run read back from the store."""

    def __init__(self, items: Sequence[LogEvent]) -> None:
        self._events = list(items)

    @property
    def closed(self) -> bool:
        return True

    @property
    def last_id(self) -> int:
        return self._events[-1].id if self._events else 0

    def after(self, cursor: int, limit: int) -> Sequence[LogEvent]:
        # Stored ids are contiguous from 1, except after a crash (ids may skip, never repeat).
        start = max(cursor, 0)
        if start < len(self._events) and self._events[start].id == start + 1:
            return self._events[start : start + limit]
        return [e for e in self._events if e.id > cursor][:limit]

    async def wait(self, cursor: int) -> None:
        return None


EVENT_OVERHEAD = 56 + 33 + 8  # a LogEvent, an empty bytes object, a list slot (CPython 3.11)


class Run:
    """A run in progress or recently finished: its record, event log, task and phase."""

    def __init__(
        self,
        record: RunRecord,
        event_log: EventLog | None,
        guard: RunGuard,
        mark: Mark | None,
        mapper: EventMapper | None = None,
        on_blocked: Callable[[], None] = lambda: None,
    ) -> None:
        self.record = record
        self._log = event_log
        # Readers see a live log up to the ids reserved in the store (app/engine/ids.py).
        self.ids = ReservedLog(event_log if event_log is not None else StoredLog(()), on_blocked)
        self.reader: EventLogReader = self.ids if event_log is not None else StoredLog(())
        self.guard = guard
        self.mark = mark
        self.mapper = mapper or EventMapper()
        self.task: asyncio.Task[None] | None = None
        self.phase = Phase.RUNNING
        self.cancel_reason: str | None = None
        self.cancel_asked_at: float | None = None  # monotonic time of the first cancel asked
        self.rolling_back = False  # the cancel that stops it asked for a rollback
        self.fence: Fence | None = None  # its checkpoint writes (None: the graph has no saver)
        self.stopping: asyncio.Task[None] | None = None
        self.failure: tuple[str, str] | None = None  # why the engine stopped it, if it did
        self.persisted = 0  # the last event id written to the store
        self._size: int | None = None
        self.seen_by_persister = (0, 0.0)  # the log's last id at the persister's last pass, when
        self.remote = False  # run by another worker (`following`)

    @classmethod
    def stored(cls, record: RunRecord, items: Sequence[LogEvent]) -> Run:
        """A finished run read back from the store: its record and its closed event log."""
        run = cls(record, None, RunGuard(1), None)
        run.reader = StoredLog(items)
        run.phase = Phase.ENDED
        run.persisted = run.reader.last_id
        return run

    @classmethod
    def following(cls, record: RunRecord, reader: EventLogReader) -> Run:
        """A run another worker runs, read from the shared log (`SharedLog.follow`): done once
        the reader has read its `end`."""
        run = cls(record, None, RunGuard(1), None)
        run.reader = reader
        run.remote = True
        return run

    @property
    def run_id(self) -> str:
        return self.record.run_id

    @property
    def done(self) -> bool:
        return self.phase is Phase.ENDED or (self.remote and self.reader.closed)

    @property
    def log(self) -> EventLog:
        assert self._log is not None, "a stored run has no writable log"
        return self._log

    def size(self) -> int:
        """The bytes its events hold in memory: payloads plus each event's own objects (the
        event, its bytes object, its slot in the log). Computed once, when it has ended."""
        if self._size is None:
            items = self.reader.after(0, self.reader.last_id)
            self._size = sum(len(e.payload) for e in items) + EVENT_OVERHEAD * len(items)
        return self._size

    def append(self, event_type: str, data: Any) -> LogEvent:
        return self.log.append(event_type, data)

    def end(self, task: asyncio.Task[None] | None, forced: bool) -> Ending:
        """Decide how the run ended, write `error` (if any) and `end`, close the log, finish the
        record. Called once (the manager checks the phase)."""
        self.phase = Phase.ENDING
        self.guard.stop()
        record = self.record
        cancelled = task is None or task.cancelled()
        exc = None if forced or cancelled or task is None else task.exception()
        ending = decide_end(
            cancelled=cancelled,
            exc=exc,
            cancel_reason=self.cancel_reason,
            paused=self.mapper.interrupted,
            forced=forced,
            failure=self.failure,
        )
        if ending.error is not None:
            # The whole detail for the operator; the client's message is scrubbed (failures.py).
            log.warning(
                "run %s failed (%s): %s",
                record.run_id,
                ending.error["code"],
                f"{type(exc).__name__}: {exc}" if exc is not None else ending.error["message"],
                exc_info=exc if ending.error["code"] in ("node_error", "tool_error") else None,
                extra=logctx.of(record),
            )
            record.error = {"code": ending.error["code"], "message": ending.error["message"]}
            self.append("error", ending.error)
        usage = self.mapper.usage.as_dict()
        if not usage["output_tokens"]:
            usage["output_tokens"] = self.guard.tokens
            usage["total_tokens"] = usage["input_tokens"] + self.guard.tokens
        record.finish(ending.status, ending.reason, usage)
        self.append("end", events.end(ending.status.value, ending.reason, usage, record.elapsed_ms))
        record.events = self.log.last_id
        self.log.close()
        self.phase = Phase.ENDED
        return ending

    async def cancel_task(self, confirm_s: float) -> bool:
        """Cancel the task and wait until it has ended, cancelling again with growing waits;
        give up (logged) after `confirm_s`. True if the task ended."""
        self.guard.stop()
        task = self.task
        assert task is not None
        started = time.monotonic()
        wait = 0.05
        attempt = 0
        while not task.done():
            attempt += 1
            task.cancel()
            await asyncio.wait({task}, timeout=wait)
            if task.done():
                break
            elapsed = time.monotonic() - started
            if elapsed >= confirm_s:
                log.error(
                    "run %s did not end %.1fs after %d cancels; abandoning its task and "
                    "reporting it cancelled",
                    self.run_id,
                    elapsed,
                    attempt,
                )
                return False
            log.warning(
                "run %s still running after cancel #%d (%.2fs); cancelling again",
                self.run_id,
                attempt,
                elapsed,
            )
            wait = min(wait * 2, 0.5)
        return True
