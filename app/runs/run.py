"""One run: the request that starts it, and the `Run` that holds its record, event log, task and
how it ended. `RunManager` (manager.py) owns the collection and the lifecycle."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig

from app.runs import rollback
from app.runs.events import EventMapper
from app.runs.failures import classify
from app.runs.limits import RunGuard
from app.runs.log import Event, MemoryEventLog
from app.runs.record import RunRecord, RunStatus

log = logging.getLogger("app.runs")

_UNSET: Any = object()


@dataclass(frozen=True)
class RunRequest:
    """A validated request to start a run (built by the API layer)."""

    input: dict[str, Any] | None
    thread_id: str | None = None
    resume: Any = _UNSET
    config: dict[str, Any] = field(default_factory=dict)
    max_tokens: int | None = None
    timeout_s: float | None = None
    recursion_limit: int | None = None

    @property
    def resuming(self) -> bool:
        return self.resume is not _UNSET

    def run_config(self, thread_id: str) -> RunnableConfig:
        extra = self.config
        configurable = dict(extra.get("configurable") or {})
        configurable["thread_id"] = thread_id
        config = RunnableConfig(
            configurable=configurable, recursion_limit=self.recursion_limit or 25
        )
        if isinstance(extra.get("tags"), list):
            config["tags"] = [str(t) for t in extra["tags"]]
        if isinstance(extra.get("metadata"), dict):
            config["metadata"] = extra["metadata"]
        return config


class Run:
    """A run in progress or recently finished: its record, event log and task."""

    def __init__(self, record: RunRecord, guard: RunGuard, mark: rollback.Mark | None) -> None:
        self.record = record
        self.log = MemoryEventLog()
        self.guard = guard
        self.mark = mark
        self.mapper = EventMapper()
        self.task: asyncio.Task[None] | None = None
        self.cancel_reason: str | None = None
        self.stopping: asyncio.Task[None] | None = None
        self.hold_end = False
        self.finalized = False
        self.persisted = 0  # the last event id written to the store

    @classmethod
    def stored(cls, record: RunRecord, events: list[Event]) -> Run:
        """A finished run read back from the store: its record and its closed event log."""
        run = cls(record, RunGuard(1), None)
        run.log = MemoryEventLog.of(events)
        run.finalized = True
        run.persisted = run.log.last_id
        return run

    @property
    def run_id(self) -> str:
        return self.record.run_id

    @property
    def done(self) -> bool:
        return self.finalized

    def end(self, task: asyncio.Task[None] | None, forced: bool) -> tuple[RunStatus, str]:
        """Decide how the run ended, write `error` (if any) and `end` to its log, finish the
        record. `forced`: the run is over whatever its task did (abandoned, or rolled back)."""
        self.guard.stop()
        record = self.record
        exc = None if forced or task is None or task.cancelled() else task.exception()
        if forced or task is None or task.cancelled() or (exc and self.cancel_reason):
            # A run that fails *because* it was cancelled (e.g. the stream it was reading was
            # closed under it) is reported as cancelled, not as a failure.
            status, reason = RunStatus.CANCELLED, self.cancel_reason or "cancelled"
        else:
            if exc is None:
                paused = self.mapper.interrupted
                status = RunStatus.PAUSED if paused else RunStatus.COMPLETED
                reason = "interrupt" if paused else "done"
            else:
                code, message = classify(exc)
                log.warning(
                    "run %s failed (%s): %s",
                    record.run_id,
                    code,
                    message,
                    exc_info=exc if code == "node_error" else None,
                )
                record.error = {"code": code, "message": message}
                self.log.append("error", record.error)
                status, reason = RunStatus.FAILED, code
        usage = self.mapper.usage.as_dict()
        if not usage["output_tokens"]:
            usage["output_tokens"] = self.guard.tokens
            usage["total_tokens"] = usage["input_tokens"] + self.guard.tokens
        record.finish(status, reason, usage)
        self.log.append(
            "end",
            {
                "status": status.value,
                "reason": reason,
                "usage": usage,
                "elapsed_ms": record.elapsed_ms,
            },
        )
        return status, reason

    async def cancel_task(self, confirm_s: float) -> None:
        """Cancel the task and wait until it has ended, cancelling again with growing waits;
        give up (logged) after `confirm_s`."""
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
                return
            log.warning(
                "run %s still running after cancel #%d (%.2fs); cancelling again",
                self.run_id,
                attempt,
                elapsed,
            )
            wait = min(wait * 2, 0.5)
