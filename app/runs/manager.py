"""RunManager: starts runs, looks them up, cancels them, and owns their tasks.

Design record
- One asyncio task per run runs `graph.astream_events(version="v2")` and appends the mapped
  events to the run's log. The *terminal* events (`error`, `end`) are written by the task's done
  callback, i.e. only once the task has really finished, whatever finished it.
- Cancel is confirmed, not assumed. A single `task.cancel()` can be swallowed inside the
  LangGraph / `astream_events` consumer (seen with these libraries): the manager cancels, waits,
  and cancels again with growing waits, logging each escalation; if the task still has not ended
  after CANCEL_CONFIRM_S it is abandoned with an error log and the run is reported cancelled so
  no client waits forever.
- A synchronous node runs in a worker thread that a task cancel cannot stop. The run's `RunGuard`
  callback makes the model's next token raise inside that thread, which closes the model's HTTP
  stream (see app/runs/limits.py).
- `CancelledError` is never swallowed: the run task lets it propagate; the done callback reads
  `task.cancelled()`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command

from app.errors import InvalidInput, NotFound, ThreadBusy, TooManyRuns
from app.registry import GraphEntry, GraphRegistry
from app.runs.events import INCLUDE_TYPES, EventMapper
from app.runs.failures import classify
from app.runs.limits import RunGuard
from app.runs.log import MemoryEventLog
from app.runs.record import RunRecord, RunStatus
from app.settings import Settings

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


class Run:
    """A run in progress or recently finished: its record, event log and task."""

    def __init__(self, record: RunRecord, guard: RunGuard) -> None:
        self.record = record
        self.log = MemoryEventLog()
        self.guard = guard
        self.mapper = EventMapper()
        self.task: asyncio.Task[None] | None = None
        self.cancel_reason: str | None = None
        self.finalized = False

    @property
    def run_id(self) -> str:
        return self.record.run_id

    @property
    def done(self) -> bool:
        return self.finalized


class RunManager:
    def __init__(self, settings: Settings, registry: GraphRegistry, context: Any) -> None:
        self._settings = settings
        self._registry = registry
        self._context = context
        self._active: dict[str, Run] = {}
        self._threads: dict[str, str] = {}
        self._finished: OrderedDict[str, Run] = OrderedDict()
        self._background: set[asyncio.Task[Any]] = set()
        self._closing = False

    # -- lookup ----------------------------------------------------------------------------

    def get(self, run_id: str) -> Run:
        run = self._active.get(run_id) or self._finished.get(run_id)
        if run is None:
            raise NotFound(f"no run with id {run_id!r}", code="run_not_found")
        return run

    @property
    def active_count(self) -> int:
        return len(self._active)

    # -- start -----------------------------------------------------------------------------

    async def start(self, graph: GraphEntry, request: RunRequest) -> Run:
        if self._closing:
            raise TooManyRuns("the server is shutting down", code="shutting_down")
        if len(self._active) >= self._settings.max_concurrent_runs:
            raise TooManyRuns(
                f"{self._settings.max_concurrent_runs} runs are already in progress; retry shortly"
            )
        thread_id = request.thread_id or str(uuid.uuid4())
        if thread_id in self._threads:
            raise ThreadBusy(
                f"thread {thread_id!r} already has a run in progress ({self._threads[thread_id]})"
            )
        config = self._config(request, thread_id)
        payload: Any = request.input
        if request.resuming:
            payload = Command(resume=request.resume)
        elif payload is None:
            state = await graph.compiled.aget_state(config)
            if not state.values and not state.next:
                raise InvalidInput("input: required (thread has no checkpoint to continue)")
        if thread_id in self._threads:  # re-check: aget_state awaited
            raise ThreadBusy(f"thread {thread_id!r} already has a run in progress")

        record = RunRecord(run_id=str(uuid.uuid4()), graph=graph.name, thread_id=thread_id)
        run = Run(record, RunGuard(request.max_tokens or self._settings.max_tokens_per_run))
        config["callbacks"] = [run.guard]
        run.log.append(
            "metadata", {"run_id": record.run_id, "thread_id": thread_id, "graph": graph.name}
        )
        self._active[record.run_id] = run
        self._threads[thread_id] = record.run_id
        timeout = request.timeout_s or self._settings.run_timeout_s
        run.task = asyncio.create_task(
            self._execute(run, graph, payload, config, timeout), name=f"run:{record.run_id}"
        )
        run.task.add_done_callback(lambda task: self._finalize(run, task))
        log.info("run %s started: graph=%s thread=%s", record.run_id, graph.name, thread_id)
        return run

    def _config(self, request: RunRequest, thread_id: str) -> RunnableConfig:
        extra = request.config
        configurable = dict(extra.get("configurable") or {})
        configurable["thread_id"] = thread_id
        config = RunnableConfig(
            configurable=configurable, recursion_limit=request.recursion_limit or 25
        )
        if isinstance(extra.get("tags"), list):
            config["tags"] = [str(t) for t in extra["tags"]]
        if isinstance(extra.get("metadata"), dict):
            config["metadata"] = extra["metadata"]
        return config

    async def _execute(
        self, run: Run, graph: GraphEntry, payload: Any, config: RunnableConfig, timeout_s: float
    ) -> None:
        mapper, append, record = run.mapper, run.log.append, run.record
        # It is an async generator (it has aclose); the declared type is the looser AsyncIterator.
        stream: AsyncGenerator[dict[str, Any], None] = graph.compiled.astream_events(  # type: ignore[assignment]
            payload,
            config,
            version="v2",
            include_types=INCLUDE_TYPES,
            context=self._context if graph.takes_model_context else None,
        )
        async with asyncio.timeout(timeout_s), aclosing(stream):
            async for raw in stream:
                for event_type, data in mapper.map(raw):
                    if event_type == "token" and record.first_token_ms is None:
                        record.first_token_ms = record.since_start_ms()
                    append(event_type, data)

    # -- the end ---------------------------------------------------------------------------

    def _finalize(self, run: Run, task: asyncio.Task[None] | None, forced: bool = False) -> None:
        """Write `error`/`end` and retire the run. Called once, when its task has ended."""
        if run.finalized:
            return
        run.finalized = True
        run.guard.stop()
        record = run.record
        exc = None if forced or task is None or task.cancelled() else task.exception()
        if forced or task is None or task.cancelled() or (exc and run.cancel_reason):
            # A run that fails *because* it was cancelled (e.g. the stream it was reading was
            # closed under it) is reported as cancelled, not as a failure.
            status, reason = RunStatus.CANCELLED, run.cancel_reason or "cancelled"
        else:
            if exc is None:
                paused = run.mapper.interrupted
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
                run.log.append("error", record.error)
                status, reason = RunStatus.FAILED, code
        usage = run.mapper.usage.as_dict()
        if not usage["output_tokens"]:
            usage["output_tokens"] = run.guard.tokens
            usage["total_tokens"] = usage["input_tokens"] + run.guard.tokens
        record.finish(status, reason, usage)
        run.log.append(
            "end",
            {
                "status": status.value,
                "reason": reason,
                "usage": usage,
                "elapsed_ms": record.elapsed_ms,
            },
        )
        record.events = run.log.last_id
        run.log.close()
        self._active.pop(record.run_id, None)
        if self._threads.get(record.thread_id) == record.run_id:
            del self._threads[record.thread_id]
        self._finished[record.run_id] = run
        while len(self._finished) > self._settings.finished_runs_kept:
            self._finished.popitem(last=False)
        log.info(
            "run %s ended: %s (%s) in %.0f ms",
            record.run_id,
            status.value,
            reason,
            record.elapsed_ms or 0,
        )

    # -- cancel ----------------------------------------------------------------------------

    async def cancel(self, run_id: str, reason: str = "cancelled") -> Run:
        """Stop a run and return once it has really ended (idempotent)."""
        run = self.get(run_id)
        if run.done:
            return run
        if run.cancel_reason is None:
            run.cancel_reason = reason
        await self._stop(run)
        return run

    async def _stop(self, run: Run) -> None:
        run.guard.stop()
        task = run.task
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
            if elapsed >= self._settings.cancel_confirm_s:
                log.error(
                    "run %s did not end %.1fs after %d cancels; abandoning its task and "
                    "reporting it cancelled",
                    run.run_id,
                    elapsed,
                    attempt,
                )
                self._finalize(run, None, forced=True)
                return
            log.warning(
                "run %s still running after cancel #%d (%.2fs); cancelling again",
                run.run_id,
                attempt,
                elapsed,
            )
            wait = min(wait * 2, 0.5)
        # The done callback runs on the next loop iteration; make the end visible now.
        self._finalize(run, task)

    def cancel_soon(self, run: Run, reason: str) -> None:
        """Cancel without waiting (from a disconnect handler, which must not await)."""
        if run.done:
            return
        task = asyncio.create_task(self.cancel(run.run_id, reason))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Shutdown: refuse new runs, cancel the running ones, wait until they have ended."""
        self._closing = True
        runs = list(self._active.values())
        for run in runs:
            if run.cancel_reason is None:
                run.cancel_reason = "shutdown"
        await asyncio.gather(*(self._stop(run) for run in runs), return_exceptions=True)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
