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
- Every run is stored (app/store, written by app/runs/persist.py): its record when it starts and
  ends, its events in batches. Finished runs stay in memory only in a small cache
  (FINISHED_RUNS_CACHED); older ones are read back from the store on demand.
- Rollback: a `Mark` of the thread is taken before the run starts. A rollback cancel holds the
  `end` back until the thread is restored, so a client that sees `end` sees the old state.
- Shutdown (`drain`): new runs are refused at once, running ones get the grace period to end on
  their own, then are cancelled with reason `shutdown`; each one's `end` reaches its streams.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.types import Command

from app.errors import Conflict, InvalidInput, NotFound, ShuttingDown, TooManyRuns
from app.registry import GraphEntry, GraphRegistry
from app.runs import rollback
from app.runs.events import INCLUDE_TYPES
from app.runs.limits import RunGuard
from app.runs.persist import Persister
from app.runs.record import RunRecord
from app.runs.run import Run, RunRequest
from app.settings import Settings
from app.store import RunStore

log = logging.getLogger("app.runs")


class RunManager:
    def __init__(
        self,
        settings: Settings,
        registry: GraphRegistry,
        context: Any,
        store: RunStore,
        checkpointer: BaseCheckpointSaver[Any],
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._context = context
        self._store = store
        self._checkpointer = checkpointer
        self._active: dict[str, Run] = {}
        self._threads: dict[str, str] = {}
        self._finished: OrderedDict[str, Run] = OrderedDict()
        self._background: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._persister = Persister(
            store, self._active.values, settings.event_flush_s, settings.run_retention_s
        )

    async def open(self) -> list[str]:
        """Recover runs a dead process left `running`, start the persister; return their ids."""
        recovered = await self._store.recover()
        for run_id in recovered:
            log.warning("run %s was cut off by a restart: reported failed", run_id)
        self._persister.start()
        return recovered

    # -- lookup ----------------------------------------------------------------------------

    async def record(self, run_id: str) -> RunRecord:
        """The run's record; a run no longer in memory is read from the store (not its events)."""
        run = self._active.get(run_id) or self._finished.get(run_id)
        if run is not None:
            return run.record
        record = await self._store.load_record(run_id)
        if record is None:
            raise NotFound(f"no run with id {run_id!r}", code="run_not_found")
        return record

    async def get(self, run_id: str) -> Run:
        """The run with its event log (read back from the store if it is no longer in memory)."""
        run = self._active.get(run_id) or self._finished.get(run_id)
        if run is not None:
            return run
        record = await self._store.load_record(run_id)
        if record is None:
            raise NotFound(f"no run with id {run_id!r}", code="run_not_found")
        run = self._active.get(run_id) or self._finished.get(run_id)
        if run is None:  # still not loaded by someone else while we awaited
            run = Run.stored(record, await self._store.load_events(run_id))
            self._remember(run)
        return run

    def active_run_on(self, thread_id: str) -> str | None:
        return self._threads.get(thread_id)

    async def thread_graph(self, thread_id: str) -> str | None:
        run_id = self._threads.get(thread_id)
        if run_id is not None:
            return self._active[run_id].record.graph
        return await self._store.thread_graph(thread_id)

    @property
    def active_count(self) -> int:
        return len(self._active)

    # -- start -----------------------------------------------------------------------------

    async def start(self, graph: GraphEntry, request: RunRequest) -> Run:
        self._check_capacity()
        thread_id = request.thread_id or str(uuid.uuid4())
        self._check_thread_free(thread_id)
        config = request.run_config(thread_id)
        payload: Any = request.input
        mark: rollback.Mark | None = rollback.Mark(thread_id, None, frozenset())
        if request.thread_id is not None:
            # An existing thread: same graph, in a state this request can continue from.
            owner = await self.thread_graph(thread_id)
            if owner is not None and owner != graph.name:
                raise Conflict(
                    f"thread {thread_id!r} belongs to graph {owner!r}, not {graph.name!r}",
                    code="thread_graph_mismatch",
                )
            state = await graph.compiled.aget_state(config)
            if request.resuming:
                if not state.interrupts:
                    raise Conflict(
                        f"thread {thread_id!r} is not paused; there is nothing to resume",
                        code="thread_not_paused",
                    )
            elif payload is None and not state.values and not state.next:
                raise InvalidInput("input: required (thread has no checkpoint to continue)")
            mark = await self._mark(thread_id)
        elif payload is None:
            raise InvalidInput("input: required (a new thread has nothing to continue)")
        if request.resuming:
            payload = Command(resume=request.resume)
        self._check_capacity()  # re-check: the lookups above awaited
        self._check_thread_free(thread_id)

        record = RunRecord(run_id=str(uuid.uuid4()), graph=graph.name, thread_id=thread_id)
        guard = RunGuard(request.max_tokens or self._settings.max_tokens_per_run)
        run = Run(record, guard, mark)
        config["callbacks"] = [run.guard]
        run.log.append(
            "metadata", {"run_id": record.run_id, "thread_id": thread_id, "graph": graph.name}
        )
        self._active[record.run_id] = run
        self._threads[thread_id] = record.run_id
        try:
            await self._store.save_record(record)
        except BaseException:
            del self._active[record.run_id]
            del self._threads[thread_id]
            raise
        timeout = request.timeout_s or self._settings.run_timeout_s
        run.task = asyncio.create_task(
            self._execute(run, graph, payload, config, timeout), name=f"run:{record.run_id}"
        )
        run.task.add_done_callback(lambda task: self._finalize(run, task))
        log.info("run %s started: graph=%s thread=%s", record.run_id, graph.name, thread_id)
        return run

    def _check_capacity(self) -> None:
        if self._closing:
            raise ShuttingDown("the server is shutting down and takes no new runs")
        if len(self._active) >= self._settings.max_concurrent_runs:
            raise TooManyRuns(
                f"{self._settings.max_concurrent_runs} runs are already in progress; retry shortly"
            )

    def _check_thread_free(self, thread_id: str) -> None:
        if thread_id in self._threads:
            raise Conflict(
                f"thread {thread_id!r} already has a run in progress ({self._threads[thread_id]});"
                " wait for its end or cancel it"
            )

    async def _mark(self, thread_id: str) -> rollback.Mark | None:
        try:
            return await rollback.mark(self._checkpointer, thread_id)
        except rollback.RollbackUnsupported:
            return None

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
        if run.finalized or (run.hold_end and not forced):
            return
        run.finalized = True
        record = run.record
        status, reason = run.end(task, forced)
        record.events = run.log.last_id
        run.log.close()
        self._active.pop(record.run_id, None)
        if self._threads.get(record.thread_id) == record.run_id:
            del self._threads[record.thread_id]
        self._remember(run)
        self._persister.finished(run)
        log.info(
            "run %s ended: %s (%s) in %.0f ms",
            record.run_id,
            status.value,
            reason,
            record.elapsed_ms or 0,
        )

    def _remember(self, run: Run) -> None:
        self._finished[run.run_id] = run
        self._finished.move_to_end(run.run_id)
        while len(self._finished) > self._settings.finished_runs_cached:
            self._finished.popitem(last=False)

    # -- cancel ----------------------------------------------------------------------------

    async def cancel(
        self, run_id: str, reason: str = "cancelled", roll_back: bool = False
    ) -> RunRecord:
        """Stop a run and return its record once it has really ended (idempotent).

        `roll_back`: also restore the thread to what it was before the run. Only the first
        cancel of a run decides how it ends; repeating it changes nothing.
        """
        run = self._active.get(run_id)
        if run is None or run.done:
            return await self.record(run_id)
        if run.stopping is None:
            if roll_back and run.mark is None:
                raise InvalidInput(
                    "action: 'rollback' is not supported with this checkpointer",
                    code="unsupported_action",
                )
            run.cancel_reason = run.cancel_reason or ("rollback" if roll_back else reason)
            run.hold_end = roll_back
            run.stopping = asyncio.create_task(self._stop(run), name=f"stop:{run_id}")
        await asyncio.shield(run.stopping)
        return run.record

    async def _stop(self, run: Run) -> None:
        await run.cancel_task(self._settings.cancel_confirm_s)
        rolled_back = False
        if run.hold_end and run.mark is not None:
            try:
                await rollback.rollback(self._checkpointer, run.mark)
                rolled_back = True
                log.info("run %s rolled back thread %s", run.run_id, run.mark.thread_id)
            except Exception:
                log.exception(
                    "run %s: rollback failed; the thread keeps its checkpoints", run.run_id
                )
                run.cancel_reason = "rollback_failed"
        run.hold_end = False
        # The done callback has run already (or held the end back for the rollback), unless the
        # task would not end at all; either way, make the end visible now.
        task = run.task
        done = task is not None and task.done()
        self._finalize(run, task if done else None, forced=rolled_back or not done)

    def cancel_soon(self, run: Run, reason: str) -> None:
        """Cancel without waiting (from a disconnect handler, which must not await)."""
        if run.done:
            return
        task = asyncio.create_task(self.cancel(run.run_id, reason))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self, grace_s: float) -> None:
        """SIGTERM: refuse new runs; let running ones end within `grace_s`, then cancel them."""
        self._closing = True
        runs = [run.task for run in self._active.values() if run.task is not None]
        if runs:
            log.info("shutdown: %d runs in progress get %.1fs to end", len(runs), grace_s)
            await asyncio.wait(runs, timeout=grace_s)
        await self._cancel_all()

    async def close(self) -> None:
        """Lifespan end: refuse new runs, cancel the running ones, write everything out."""
        self._closing = True
        await self._cancel_all()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._persister.stop()

    async def _cancel_all(self) -> None:
        runs = list(self._active)
        if runs:
            log.warning("shutdown: cancelling %d runs", len(runs))
        await asyncio.gather(
            *(self.cancel(run_id, "shutdown") for run_id in runs), return_exceptions=True
        )
