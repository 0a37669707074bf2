"""RunManager: the facade every protocol calls. Starts runs, looks them up, cancels them, waits
for them, drains them on shutdown, and owns their tasks.

Design record
- Lifecycle: `async with manager:` once, before any run starts (recovery, the persister and the
  cancel broker start there); `start()` before it, or after it closed, raises `NotOpen`.
- One asyncio task per run runs `graph.astream_events(version="v2")` (app/engine/executor.py)
  and appends the mapped events to the run's log. The *terminal* events (`error`, `end`) are
  written by `_finalize` only once the task has really finished, whatever finished it; the run's
  phase (app/engine/run.py) makes that happen once.
- Cancel is confirmed, not assumed. A single `task.cancel()` can be swallowed inside the
  LangGraph / `astream_events` consumer (seen with these libraries): the manager cancels, waits,
  and cancels again with growing waits, logging each escalation; if the task still has not ended
  after CANCEL_CONFIRM_S it is abandoned with an error log and the run is reported cancelled so
  no client waits forever (if it ends at last, how is logged; it writes nothing more).
- A synchronous node runs in a worker thread that a task cancel cannot stop. The run's `RunGuard`
  callback makes the model's next token raise inside that thread, which closes the model's HTTP
  stream (app/engine/limits.py).
- `CancelledError` is never swallowed: the run task lets it propagate; the done callback reads
  `task.cancelled()`.
- A cancel reaches the run's owner through the `CancelBroker`; a run this process owns is
  stopped here directly.
- Every run is stored (the `RunStore`, written by app/engine/persist.py): its record when it
  starts and ends, its events in batches. Finished runs stay in memory only in a cache bounded
  by the bytes of their events (FINISHED_RUNS_CACHE_MB; a count would let a few long runs take
  any amount) and by time (FINISHED_RUNS_CACHE_S: what a burst left behind is let go, so its
  memory can be given back); others are read back from the store on demand.
- A stopped run writes nothing after its `end`. Each run checkpoints through its own fenced
  saver (app/engine/fence.py); a cancel holds the `end` back (the run stays STOPPING) until the
  task has ended (or was abandoned), then closes the fence: the writes already inside the saver
  finish, any later one (a checkpoint LangGraph's loop had not written when a repeated cancel cut
  its wait short, a step of a node that ignored cancel) is dropped.
- Rollback: a `Mark` of the thread is taken before the run starts. A rollback cancel rewinds the
  thread to it once the fence is closed and then writes `end`, so a client that sees `end` sees
  the old state, for good. If the writes inside the saver do not finish within
  `write_fence_s`, or the rewind fails, the run ends `rollback_failed` and keeps what it wrote.
- Tenants (app/engine/tenancy.py): every lookup takes the caller's tenant, and another
  tenant's run or thread is `NotFound` as if it did not exist. The checkpointer, the rewinder
  and `_threads` see the tenant-qualified thread id; records, events and clients the client's.
- Idempotency keys (app/engine/idempotency.py): `start_or_attach` looks the key up first, so a
  retry finds its run even while that run holds its thread; starts with one key take turns on
  a lock of that key, so two at once make one run.
- Admission (app/engine/admission.py): a start may carry an `admit` hook (per-key limits, decided
  by the protocol). It runs after the engine's checks, right before the run is created, so a
  refused request starts nothing and an idempotent retry that attaches is never admitted; the
  engine's checks are repeated after it (it may await), and its release is called once, when
  the run is retired or its start failed.
- Shutdown (`drain`): new runs are refused at once, running ones get the grace period to end on
  their own, then are cancelled with reason `shutdown`; each one's `end` reaches its streams.
- A store that cannot be written (the persister's probe or a write failed, or a run's
  checkpoint write did): new runs are refused (`StoreUnavailable`) and every live run ends
  `failed` with `store_unavailable`, until a persister pass succeeds again. With several
  workers a start also asks the shared log (`probe`): Redis down refuses new runs at once,
  while the runs in flight go on for the shared log's retry bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from langchain_core.runnables import RunnableConfig

from app.engine import events, logctx, recovery
from app.engine.admission import Admit, Release
from app.engine.config import EngineConfig
from app.engine.errors import (
    Conflict,
    EngineError,
    InvalidInput,
    NotFound,
    NotOpen,
    ShuttingDown,
    StoreUnavailable,
    TooManyRuns,
    Unsupported,
)
from app.engine.executor import execute
from app.engine.failures import store_busy, store_error
from app.engine.fence import fence_run
from app.engine.idempotency import KEY_TTL_S, IdempotencyKey, KeyBinding
from app.engine.ids import ID_RANGE
from app.engine.leases import LOST_AFTER, Leases
from app.engine.limits import RunGuard
from app.engine.mapping import EventMapper
from app.engine.persist import Persister
from app.engine.ports import (
    CancelBroker,
    LogFactory,
    Mark,
    NoObserver,
    Rewinder,
    RunObserver,
    RunStore,
    SharedLog,
    SharedLogUnavailable,
)
from app.engine.record import RunRecord
from app.engine.registry import GraphEntry, GraphRegistry
from app.engine.run import Phase, Run, RunRequest
from app.engine.tenancy import DEFAULT_TENANT, check_thread_id, checkpoint_thread
from app.engine.threads import Threads

log = logging.getLogger("app.engine")


class RunManager:
    def __init__(
        self,
        config: EngineConfig,
        registry: GraphRegistry,
        context: Any,
        *,
        store: RunStore,
        logs: LogFactory,
        broker: CancelBroker,
        rewinder: Rewinder | None,
        observer: RunObserver | None = None,
        shared: SharedLog | None = None,
    ) -> None:
        self._config = config
        self._observer: RunObserver = observer or NoObserver()
        self._registry = registry
        self._context = context
        self._store = store
        self._logs = logs
        self._broker = broker
        self._rewinder = rewinder
        self._shared = shared
        self.worker_id = uuid.uuid4().hex
        self._active: dict[str, Run] = {}
        # Runs of other workers read here (the shared log), and when each was looked up first:
        # a lookup holds it no longer than the finished-runs cache holds an ended run.
        self._remote: dict[str, Run] = {}
        self._remote_at: dict[str, float] = {}
        self._threads: dict[str, str] = {}  # checkpointer thread id -> its run in progress
        self._releases: dict[str, Release] = {}  # run id -> its admission's release
        self._finished: OrderedDict[str, tuple[Run, float]] = OrderedDict()
        self._finished_bytes = 0
        self.released = 0  # runs that have left memory (ended, then out of the cache)
        self._key_locks: dict[tuple[str, str], _KeyLock] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._open = False
        self._closing = False
        self._shared_problem: str | None = None  # the shared log cannot be written
        self.recovered: list[str] = []
        self._persister = Persister(
            store,
            self._active.values,
            config.event_flush_s,
            config.run_retention_s,
            on_failure=self._fail_live_runs,
        )
        self._leases = Leases(
            store, self.worker_id, config.heartbeat_s, self._on_cancel_request, self._recover
        )
        self.threads = Threads(self, store, registry)

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> RunManager:
        if self._open or self._closing:
            raise NotOpen("the run manager can be entered once")
        await self._leases.beat()  # before judging others: a live worker has a fresh lease
        self.recovered = await self._recover(await self._leases.live_workers())
        await self._broker.start(self._on_cancel_request)
        self._persister.start()
        self._leases.start()
        self._open = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _alive(self, record: RunRecord, live: set[str]) -> bool:
        """Whether a stored running run is being run: by this worker if it says so (and it is
        here), else by a worker whose lease is live."""
        if record.owner == self.worker_id:
            return record.run_id in self._active
        return record.owner in live

    async def _recover(self, live: set[str]) -> list[str]:
        """End the running runs of workers that are not `live` (app/engine/recovery.py). One
        worker on its store: its earlier self restarted. Several: a worker was lost."""
        code = recovery.WORKER_LOST if self._shared is not None else recovery.INTERRUPTED_BY_RESTART
        return await recovery.recover(
            self._store, lambda r: self._alive(r, live), self.worker_id, self._shared, code
        )

    # -- lookup ----------------------------------------------------------------------------

    async def record(self, run_id: str, *, tenant: str = DEFAULT_TENANT) -> RunRecord:
        """The tenant's run's record; a run no longer in memory is read from the store (not
        its events)."""
        return _owned(await self._find_record(run_id), run_id, tenant)

    async def _find_record(self, run_id: str) -> RunRecord | None:
        run = self._active.get(run_id) or self._cached(run_id)
        return run.record if run is not None else await self._store.load_record(run_id)

    async def get(self, run_id: str, *, tenant: str = DEFAULT_TENANT) -> Run:
        """The tenant's run with its event log: this worker's, another worker's read from the
        shared log while it runs, or read back from the store."""
        run = self._active.get(run_id) or self._cached(run_id) or await self._followed(run_id)
        if run is not None:
            _owned(run.record, run_id, tenant)
            return run
        record = _owned(await self._store.load_record(run_id), run_id, tenant)
        run = self._active.get(run_id) or self._cached(run_id) or self._remote.get(run_id)
        if run is not None:  # loaded by someone else while we awaited
            return run
        if self._shared is not None and record.ended_at is None and record.owner != self.worker_id:
            run = self._remote[run_id] = Run.following(record, self._shared.follow(run_id))
            self._remote_at[run_id] = time.monotonic()
            return run
        run = Run.stored(record, await self._store.load_events(run_id))
        self._remember(run)
        return run

    async def _followed(self, run_id: str) -> Run | None:
        """Another worker's run read here; once it has ended, the finished run (its final
        record, which is stored before its `end` is published, and the events read)."""
        run = self._remote.get(run_id)
        if run is None or not run.reader.closed:
            return run
        record = await self._store.load_record(run_id)
        self._remote_at.pop(run_id, None)
        if self._remote.pop(run_id, None) is None:
            return self._cached(run_id)
        if record is None:
            return None
        ended = Run.stored(record, run.reader.after(0, run.reader.last_id))
        self._remember(ended)
        return ended

    def _cached(self, run_id: str) -> Run | None:
        entry = self._finished.get(run_id)
        return entry[0] if entry is not None else None

    async def active_run_on(self, thread_id: str, *, tenant: str = DEFAULT_TENANT) -> str | None:
        """The run in progress on the tenant's thread, on any worker (None: the thread is
        free)."""
        thread_key = checkpoint_thread(tenant, thread_id)
        local = self._threads.get(thread_key)
        if local is not None or self._shared is None:
            return local
        holder = await self._store.thread_run(thread_key)
        if holder is None:
            return None
        record = await self._store.load_record(holder)
        return holder if record is not None and record.ended_at is None else None

    async def thread_graph(self, thread_id: str, *, tenant: str = DEFAULT_TENANT) -> str | None:
        """The graph of the tenant's thread (its newest run's), None for an unknown thread."""
        run_id = self._threads.get(checkpoint_thread(tenant, thread_id))
        if run_id is not None:
            return self._active[run_id].record.graph
        return await self._store.thread_graph(tenant, thread_id)

    async def thread_state(
        self, thread_id: str, *, tenant: str = DEFAULT_TENANT
    ) -> tuple[str, Any]:
        """The tenant's thread's graph and its LangGraph `StateSnapshot`; `NotFound`
        (`thread_not_found`) for a thread the tenant never ran (or whose graph is gone)."""
        graph = await self.thread_graph(thread_id, tenant=tenant)
        if graph is None or graph not in self._registry:
            raise NotFound(f"no thread with id {thread_id!r}", code="thread_not_found")
        config = RunnableConfig(configurable={"thread_id": checkpoint_thread(tenant, thread_id)})
        return graph, await self._registry[graph].compiled.aget_state(config)

    @property
    def active_count(self) -> int:
        return len(self._active)

    @property
    def store_problem(self) -> str | None:
        """What is wrong with the store or the shared log while it cannot take writes (then no
        run starts)."""
        return self._persister.problem or self._shared_problem

    def shared_log_failed(self, problem: str) -> None:
        """The shared log has not taken writes for its retry bound: no run starts, and every
        live run ends `failed` with `store_unavailable` (what it does would reach no reader on
        another worker); its events stay in memory and are published once it answers."""
        self._shared_problem = problem
        self._fail_live_runs(problem)

    def shared_log_recovered(self) -> None:
        self._shared_problem = None

    # -- start -----------------------------------------------------------------------------

    async def start_or_attach(
        self, graph: GraphEntry, request: RunRequest, admit: Admit | None = None
    ) -> tuple[Run, bool]:
        """Start a run, or (same idempotency key) return the run that key created: `(run,
        True)` if this call started it. The same key with another fingerprint is `409
        idempotency_mismatch`. `admit` is asked only if a new run is started."""
        key = request.idempotency
        if key is None:
            return await self.start(graph, request, admit), True
        slot = (key.tenant, key.key)
        turn = self._key_locks.setdefault(slot, _KeyLock())
        turn.users += 1
        try:
            async with turn.lock:
                existing = await self._keyed_run(key)
                if existing is not None:
                    return existing, False
                return await self.start(graph, request, admit), True
        finally:
            turn.users -= 1
            if turn.users == 0:
                del self._key_locks[slot]

    async def _keyed_run(self, key: IdempotencyKey) -> Run | None:
        since = _iso(datetime.now(UTC) - timedelta(seconds=KEY_TTL_S))
        binding = await self._store.find_key(key.tenant, key.key, since)
        if binding is None:
            return None
        if binding.fingerprint != key.fingerprint:
            raise Conflict(
                f"Idempotency-Key {key.key!r} was used for a different request"
                f" (run {binding.run_id}); use a new key for a new request",
                code="idempotency_mismatch",
            )
        try:
            return await self.get(binding.run_id, tenant=key.tenant)
        except NotFound:
            return None  # its run is gone (retention): the key starts a new one

    async def start(
        self, graph: GraphEntry, request: RunRequest, admit: Admit | None = None
    ) -> Run:
        """Start a run. A store that fails a lookup or a write on the way is `StoreUnavailable`
        (503, retry) for this request, never an internal error."""
        try:
            return await self._start(graph, request, admit)
        except EngineError:
            raise
        except Exception as exc:
            problem = store_error(exc)
            if problem is None:
                raise
            raise StoreUnavailable(f"no new run: {problem}") from exc

    async def _start(
        self, graph: GraphEntry, request: RunRequest, admit: Admit | None = None
    ) -> Run:
        self._check_capacity()
        await self._check_shared_log()
        tenant = request.tenant
        thread_id = check_thread_id(request.thread_id or str(uuid.uuid4()))
        thread_key = checkpoint_thread(tenant, thread_id)
        self._check_thread_free(thread_id, thread_key)
        config = request.run_config(thread_key)
        payload: Any = request.input
        mark: Mark | None = Mark(thread_key)
        if request.thread_id is not None:
            # An existing thread: same graph, in a state this request can continue from.
            owner = await self.thread_graph(thread_id, tenant=tenant)
            if owner is not None and owner != graph.name:
                raise Conflict(
                    f"thread {thread_id!r} belongs to graph {owner!r}, not {graph.name!r}",
                    code="thread_graph_mismatch",
                )
            state = await graph.compiled.aget_state(config)
            if request.resuming:
                if owner is None and not (state.values or state.next or state.interrupts):
                    # Nothing of it anywhere: as `GET /threads/{id}` says (and what another
                    # tenant's thread looks like).
                    raise NotFound(f"no thread with id {thread_id!r}", code="thread_not_found")
                if not state.interrupts:
                    raise Conflict(
                        f"thread {thread_id!r} is not paused; there is nothing to resume",
                        code="thread_not_paused",
                    )
            elif payload is None and not request.commanding and not state.values and not state.next:
                raise InvalidInput("input: required (thread has no checkpoint to continue)")
            mark = await self._rewinder.mark(thread_key) if self._rewinder else None
        elif payload is None and not request.commanding:
            raise InvalidInput("input: required (a new thread has nothing to continue)")
        if request.commanding:
            payload = request.command()
        release = await admit() if admit is not None else None
        run_id = request.run_id or str(uuid.uuid4())
        try:
            self._check_capacity()  # re-check: the lookups above (and the admission) awaited
            self._check_thread_free(thread_id, thread_key)
            await self._claim_thread(thread_id, thread_key, run_id)
        except BaseException:
            if release is not None:
                release()
            raise

        record = RunRecord(
            run_id=run_id,
            graph=graph.name,
            thread_id=thread_id,
            owner=self.worker_id,
            tenant=tenant,
        )
        guard = RunGuard(request.max_tokens or self._config.max_tokens_per_run)
        run = Run(
            record,
            self._logs(run_id),
            guard,
            mark,
            EventMapper(graph.output_keys),
            on_blocked=self._persister.wake,
        )
        config["callbacks"] = [run.guard]
        run.fence = fence_run(config, graph.compiled.checkpointer, run_id)
        run.append("metadata", events.metadata(run_id, thread_id, graph.name))
        self._active[run_id] = run
        self._threads[thread_key] = run_id
        if release is not None:
            self._releases[run_id] = release
        try:
            if request.idempotency is not None:
                key = request.idempotency
                await self._store.bind_key(
                    KeyBinding(key.tenant, key.key, key.fingerprint, run_id, record.created_at)
                )
            await self._store.save_record(record)
            await self._store.reserve_ids([(run_id, ID_RANGE)])
            run.ids.raise_to(ID_RANGE)
        except BaseException as exc:
            del self._active[run_id]
            del self._threads[thread_key]
            self._release(run_id)
            with contextlib.suppress(Exception):
                await self._store.release_thread(thread_key, run_id)
            problem = store_error(exc)
            if problem is None:
                raise
            if not store_busy(exc):  # a pool out of connections is busy, not down
                self._persister.failed(problem)
            raise StoreUnavailable(problem) from exc
        timeout = request.timeout_s or self._config.run_timeout_s
        context = self._context if graph.takes_model_context else None
        # The task's own context names the run, so every line logged inside it does.
        run_context = contextvars.copy_context()
        run_context.run(logctx.enter, record)
        run.task = asyncio.create_task(
            execute(
                run,
                graph,
                payload,
                config,
                context,
                timeout,
                self._config.max_run_log_bytes,
                request.stream_kwargs(),
            ),
            name=f"run:{run_id}",
            context=run_context,
        )
        run.task.add_done_callback(lambda task: self._finalize(run, task))
        self._observer.run_started(record)
        log.info(
            "run %s started: graph=%s thread=%s tenant=%s",
            run_id,
            graph.name,
            thread_id,
            tenant,
            extra=logctx.of(record),
        )
        return run

    def _check_capacity(self) -> None:
        if not self._open:  # not entered yet, or closed
            raise NotOpen("the run manager is not open (`async with manager:`)")
        if self._closing:
            raise ShuttingDown("the server is shutting down and takes no new runs")
        if self.store_problem is not None:
            raise StoreUnavailable(f"no new runs: {self.store_problem}")
        if len(self._active) >= self._config.max_concurrent_runs:
            raise TooManyRuns(
                f"{self._config.max_concurrent_runs} runs are already in progress; retry shortly"
            )

    async def _check_shared_log(self) -> None:
        """Several workers: a run starts only if the shared log answers now (its events would
        reach no reader on another worker; the publisher alone notices only once it writes)."""
        if self._shared is None:
            return
        try:
            await self._shared.probe()
        except SharedLogUnavailable as exc:
            raise StoreUnavailable(f"no new runs: {exc}") from exc

    async def _claim_thread(self, thread_id: str, thread_key: str, run_id: str) -> None:
        """Hold the thread in the store, so it is busy on every worker. A claim still held by
        a run that has ended (its claim is dropped after its record is stored) is taken over."""
        for _ in range(2):
            holder = await self._store.claim_thread(thread_key, run_id)
            if holder is None:
                return
            ended = self._cached(holder)
            record = ended.record if ended is not None else await self._store.load_record(holder)
            if record is not None and record.ended_at is None:
                break
            await self._store.release_thread(thread_key, holder)
        raise Conflict(
            f"thread {thread_id!r} already has a run in progress ({holder}); wait for its end"
            " or cancel it"
        )

    def _check_thread_free(self, thread_id: str, thread_key: str) -> None:
        if thread_key in self._threads:
            raise Conflict(
                f"thread {thread_id!r} already has a run in progress ({self._threads[thread_key]});"
                " wait for its end or cancel it"
            )

    # -- the end ---------------------------------------------------------------------------

    def _finalize(
        self,
        run: Run,
        task: asyncio.Task[None] | None,
        forced: bool = False,
        stopped: bool = False,
    ) -> None:
        """Write `error`/`end` and retire the run, once: when its task has ended on its own, or
        (`stopped`) when the cancel that stopped it has fenced its writes; `forced`: reported
        cancelled whatever the task did."""
        if run.phase in (Phase.ENDING, Phase.ENDED):
            return
        if run.phase is Phase.STOPPING and not stopped:
            return  # the stop writes the end once the run's writes are fenced
        record = run.record
        ending = run.end(task, forced)
        self._active.pop(record.run_id, None)
        thread_key = checkpoint_thread(record.tenant, record.thread_id)
        if self._threads.get(thread_key) == record.run_id:
            del self._threads[thread_key]
        self._release(record.run_id)
        self._remember(run)
        self._persister.finished(run)
        if ending.error is not None and ending.reason == "store_unavailable":
            failed = None if task is None or task.cancelled() else task.exception()
            if failed is None or not store_busy(failed):  # a busy pool fails this run only
                self._persister.failed(ending.error["message"])  # a checkpoint write failed
        asked = run.cancel_asked_at
        latency = None if asked is None else time.monotonic() - asked
        self._observer.run_ended(record, run.guard.tokens, latency)
        log.info(
            "run %s ended: %s (%s) in %.0f ms",
            record.run_id,
            ending.status.value,
            ending.reason,
            record.elapsed_ms or 0,
            extra=logctx.of(record),
        )

    def _release(self, run_id: str) -> None:
        release = self._releases.pop(run_id, None)
        if release is not None:
            release()

    def _remember(self, run: Run) -> None:
        run.mark = None  # an ended run is never rewound; a mark can hold whole state values
        if run.run_id in self._finished:
            return
        self._finished[run.run_id] = (run, time.monotonic())
        self._finished_bytes += run.size()
        while self._finished_bytes > self._config.finished_runs_cache_bytes and self._finished:
            self._forget_oldest()

    def forget_thread(self, tenant: str, thread_id: str) -> None:
        """Drop the tenant's thread's finished runs from memory (the thread was deleted; the
        store has dropped them too). Another worker's cache lets them go within its time."""
        for run_id, (run, _) in list(self._finished.items()):
            record = run.record
            if record.tenant == tenant and record.thread_id == thread_id:
                del self._finished[run_id]
                self._finished_bytes -= run.size()
                self.released += 1

    def _forget_oldest(self) -> None:
        _, (oldest, _) = self._finished.popitem(last=False)
        self._finished_bytes -= oldest.size()
        self.released += 1

    def sweep(self) -> int:
        """Let go of the finished runs cached for longer than FINISHED_RUNS_CACHE_S; return how
        many runs have left memory so far (`released`)."""
        horizon = time.monotonic() - self._config.finished_runs_cache_s
        while self._finished and next(iter(self._finished.values()))[1] <= horizon:
            self._forget_oldest()
        # A stream still reading another worker's run holds its own reference; a later lookup
        # makes a new one on the same follower (the shared log keeps one per run).
        for run_id in [r for r, at in self._remote_at.items() if at <= horizon]:
            del self._remote_at[run_id]
            self._remote.pop(run_id, None)
        return self.released

    @property
    def finished_cache_bytes(self) -> int:
        """The bytes of events held by the finished runs kept in memory."""
        return self._finished_bytes

    async def wait(self, run_id: str, *, tenant: str = DEFAULT_TENANT) -> RunRecord:
        """The run's record once it has ended."""
        run = await self.get(run_id, tenant=tenant)
        while not run.done:
            await run.reader.wait(run.reader.last_id)
        if run.remote:  # its final record was stored before its `end` was published
            return await self.record(run_id, tenant=tenant)
        return run.record

    # -- cancel ----------------------------------------------------------------------------

    async def cancel(
        self,
        run_id: str,
        reason: str = "cancelled",
        roll_back: bool = False,
        *,
        tenant: str = DEFAULT_TENANT,
    ) -> RunRecord:
        """Stop the tenant's run and return its record once it has really ended (idempotent).

        `roll_back`: also restore the thread to what it was before the run. Only the first
        cancel of a run decides how it ends; repeating it changes nothing.
        """
        await self.record(run_id, tenant=tenant)  # another tenant's run: NotFound, untouched
        return await self._cancel(run_id, reason, roll_back)

    async def _cancel(self, run_id: str, reason: str, roll_back: bool = False) -> RunRecord:
        """`cancel` for the engine's own callers, whoever's the run is."""
        run = self._active.get(run_id)
        if run is None or run.done:
            record = await self._find_record(run_id)
            if record is None:
                raise NotFound(f"no run with id {run_id!r}", code="run_not_found")
            if run is None and record.ended_at is None:
                return await self._cancel_elsewhere(record, roll_back)
            return record
        if run.stopping is None:
            if roll_back and run.mark is None:
                raise Unsupported("action: 'rollback' is not supported with this checkpointer")
            run.cancel_asked_at = time.monotonic()
            run.cancel_reason = run.cancel_reason or ("rollback" if roll_back else reason)
            run.rolling_back = roll_back
            run.phase = Phase.STOPPING
            run.stopping = asyncio.create_task(self._stop(run), name=f"stop:{run_id}")
        await asyncio.shield(run.stopping)
        return run.record

    async def _cancel_elsewhere(self, record: RunRecord, roll_back: bool) -> RunRecord:
        """Cancel a run another worker owns: publish the request (the owner acts at once), note
        it on the run's record (the owner's fallback, read on its next heartbeat), then wait
        for its `end` on the shared log and return its final record. A lost owner's run is
        ended by recovery within a few heartbeats: the wait covers that too."""
        action = "rollback" if roll_back else "interrupt"
        run_id = record.run_id
        if self._shared is None:  # one worker: a running record not ours is being recovered
            await self._broker.publish(run_id, action)
            return record
        await self._broker.publish(run_id, action)  # first: the owner acts on it at once
        await self._store.request_cancel(run_id, action)  # a note on an ended run is ignored
        run = await self.get(run_id, tenant=record.tenant)
        bound = self._config.cancel_confirm_s + (LOST_AFTER + 2) * self._config.heartbeat_s
        try:
            async with asyncio.timeout(bound):
                while not run.done:
                    await run.reader.wait(run.reader.last_id)
        except TimeoutError:
            log.error("run %s: no end %.0fs after its cancel was published", run_id, bound)
        return await self.record(run_id, tenant=record.tenant)

    async def _on_cancel_request(self, run_id: str, action: str) -> None:
        """A cancel published through the broker, for a run this process may own."""
        if run_id in self._active:
            await self._cancel(run_id, "cancelled", roll_back=action == "rollback")

    async def _stop(self, run: Run) -> None:
        ended = await run.cancel_task(self._config.cancel_confirm_s)
        fence_s = self._config.write_fence_s
        quiet = run.fence is None or await run.fence.close(fence_s)
        if not quiet:
            log.error(
                "run %s: a checkpoint write was still going %.1fs after the run stopped; it may"
                " land after the end",
                run.run_id,
                fence_s,
            )
        rolled_back = False
        if run.rolling_back and not quiet:
            run.cancel_reason = "rollback_failed"  # the write would land on the rewound thread
        elif run.rolling_back and run.mark is not None and self._rewinder is not None:
            try:
                await self._rewinder.rewind(run.mark)
                rolled_back = True
                log.info(
                    "run %s rolled back thread %s",
                    run.run_id,
                    run.record.thread_id,
                    extra=logctx.of(run.record),
                )
            except Exception:
                log.exception(
                    "run %s: rollback failed; the thread keeps its checkpoints", run.run_id
                )
                run.cancel_reason = "rollback_failed"
        run.rolling_back = False
        # The done callback has run already and held the end back, unless the task would not
        # end at all; either way, make the end visible now.
        task = run.task
        if not ended and task is not None:
            task.add_done_callback(lambda task: _abandoned_task_ended(run.run_id, task))
        self._finalize(run, task if ended else None, forced=rolled_back or not ended, stopped=True)

    def _fail_live_runs(self, problem: str) -> None:
        """The store cannot be written: end every live run `failed` with `store_unavailable`
        (what it does from now on would not survive a restart, and its next checkpoint write
        fails on the same disk); each one's streams get `error` and `end`."""
        for run in list(self._active.values()):
            if run.stopping is not None or run.done:
                continue
            run.failure = ("store_unavailable", problem)
            run.cancel_reason = "store_unavailable"
            run.phase = Phase.STOPPING
            run.stopping = asyncio.create_task(self._stop(run), name=f"stop:{run.run_id}")
            self._background.add(run.stopping)
            run.stopping.add_done_callback(self._background.discard)

    def cancel_soon(self, run: Run, reason: str) -> None:
        """Cancel without waiting (from a disconnect handler, which must not await)."""
        if run.done:
            return
        task = asyncio.create_task(self._cancel(run.run_id, reason))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self, grace_s: float, hurry: asyncio.Event | None = None) -> None:
        """SIGTERM: refuse new runs; let running ones end within `grace_s` (or until `hurry` is
        set), then cancel the rest; return once every run has its `end`."""
        self._closing = True
        runs = [run.task for run in self._active.values() if run.task is not None]
        if runs:
            log.info("shutdown: %d runs in progress get %.1fs to end", len(runs), grace_s)
            all_ended = asyncio.ensure_future(asyncio.wait(runs))
            hurried = asyncio.ensure_future((hurry or asyncio.Event()).wait())
            try:
                await asyncio.wait(
                    {all_ended, hurried}, timeout=grace_s, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                all_ended.cancel()
                hurried.cancel()
        await self._cancel_all()

    async def close(self) -> None:
        """Refuse new runs, cancel the running ones, write everything out."""
        self._closing = True
        await self._cancel_all()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._open:
            await self._leases.stop()
            await self._persister.stop()
            await self._broker.close()
        self._open = False

    async def _cancel_all(self) -> None:
        runs = list(self._active)
        if runs:
            log.warning("shutdown: cancelling %d runs", len(runs))
        await asyncio.gather(
            *(self._cancel(run_id, "shutdown") for run_id in runs), return_exceptions=True
        )


class _KeyLock:
    """The turn of starts with one key, dropped when no start holds or awaits it."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


def _owned(record: RunRecord | None, run_id: str, tenant: str) -> RunRecord:
    """The record if it is the tenant's; else `NotFound`, the same as for no run at all."""
    if record is None or record.tenant != tenant:
        raise NotFound(f"no run with id {run_id!r}", code="run_not_found")
    return record


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def _abandoned_task_ended(run_id: str, task: asyncio.Task[None]) -> None:
    """The task of a run given up on (and reported cancelled) has ended at last. Read how: an
    exception nobody reads is reported by asyncio as "never retrieved" when the task is dropped
    (it typically is one: the late task appends to the run's closed log)."""
    exc = None if task.cancelled() else task.exception()
    outcome = "cancelled" if task.cancelled() else repr(exc) if exc else "returned"
    log.warning("run %s: its abandoned task has ended (%s)", run_id, outcome)
