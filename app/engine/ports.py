"""The engine's seams: what it needs from a log, a store, a cancel broker and a rewinder.

Each port has one conformance suite (tests/conformance/) run against every implementation:
memory and SQLite for one process; Redis Streams, Redis pub/sub and PostgreSQL when several
workers serve. `app/backends.py` is the one place that picks them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.engine.codec import LogEvent
from app.engine.idempotency import KeyBinding
from app.engine.record import RunRecord, ThreadRecord


class EventLogReader(Protocol):
    """What a subscriber reads: events after a cursor, and a wait for the next one."""

    @property
    def closed(self) -> bool:
        """No event will be appended any more (the run has ended)."""

    @property
    def last_id(self) -> int:
        """The id of the newest event (0: none yet)."""

    def after(self, cursor: int, limit: int) -> Sequence[LogEvent]:
        """Up to `limit` events with id > `cursor`, in order (empty if none yet)."""

    async def wait(self, cursor: int) -> None:
        """Return once there is an event after `cursor`, or the log is closed."""


class EventLog(EventLogReader, Protocol):
    """A run's log: the run task appends, every subscriber reads from its own cursor. Ids are
    the position in the log, from 1, with no gaps."""

    def append(self, event_type: str, data: Any) -> LogEvent:
        """Encode `data` once and append it as the next event; raise if the log is closed."""

    def close(self) -> None: ...

    def sealed(self) -> None:
        """The run's final record and all its events are in the `RunStore`. A log that other
        workers read lets its last events (`error`, `end`) go to them only now, so a reader
        that sees `end` anywhere finds the run's final record."""


LogFactory = Callable[[str], EventLog]
"""A new, empty log for the run with this id."""


class RunStore(Protocol):
    """Run records and finished runs' events, so they outlive the process."""

    async def save_record(self, record: RunRecord) -> None:
        """Insert or replace the run's record."""

    async def append_events(self, batches: Sequence[tuple[str, Sequence[LogEvent]]]) -> None:
        """Store events of runs, `(run_id, events)` pairs in one write. Each batch follows the
        run's last stored event, or repeats a stored range (a retried write): nothing is
        stored twice."""

    async def seal(self, record: RunRecord, events: Sequence[LogEvent]) -> None:
        """The run has ended: store its final record and all its events (compactly, replacing
        what `append_events` wrote for it) in one write, so a crash leaves either the running
        run or the finished one, never a mix."""

    async def load_record(self, run_id: str) -> RunRecord | None: ...

    async def load_events(self, run_id: str, after: int = 0) -> list[LogEvent]:
        """The run's stored events with id > `after`, in order."""

    async def last_event_id(self, run_id: str) -> int:
        """The id of the run's newest stored event (0: none)."""

    async def reserve_ids(self, ceilings: Sequence[tuple[str, int]]) -> None:
        """Raise runs' id ceilings, `(run_id, ceiling)` pairs in one write; a ceiling is never
        lowered. Once this returns, the run's events up to its ceiling may be sent before they
        are stored: after a crash, the events that close its log take ids above it
        (app/engine/ids.py)."""

    async def id_ceiling(self, run_id: str) -> int:
        """The run's id ceiling (0: none reserved); kept until the run is purged."""

    async def thread_graph(self, tenant: str, thread_id: str) -> str | None:
        """The graph of the tenant's thread's most recent run, or None for a thread the tenant
        never ran (another tenant's `thread_id` is another thread)."""

    async def running(self) -> list[RunRecord]:
        """Every run whose record says it is running (for recovery)."""

    # -- threads as objects (LangGraph's API) ----------------------------------------------
    # A thread is the tenant's: `(tenant, thread_id)` is its key, another tenant's thread of
    # the same id is another thread. Metadata values are JSON; "equal" is JSON's equality
    # (`true` is not `1`, `1` is `1.0`, objects equal key by key, in any order).

    async def put_thread(self, thread: ThreadRecord) -> ThreadRecord:
        """Store the thread unless the tenant has one of that id; return what is stored
        afterwards (the existing record, unchanged, if there was one). Of racing puts of one
        id exactly one is stored, and each returns it."""

    async def get_thread(self, tenant: str, thread_id: str) -> ThreadRecord | None: ...

    async def touch_thread(
        self,
        tenant: str,
        thread_id: str,
        updated_at: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Set the thread's `updated_at` and merge `metadata` into its metadata (shallow: a
        given key replaces the stored value); nothing if the thread has no record."""

    async def search_threads(
        self, tenant: str, metadata: Mapping[str, Any], limit: int, offset: int
    ) -> list[ThreadRecord]:
        """The tenant's threads whose metadata has every key of `metadata` with an equal
        value, newest `created_at` first (ties: greater `thread_id` first), `limit` of them
        after skipping `offset`."""

    async def thread_runs(
        self, tenant: str, thread_id: str, limit: int, offset: int
    ) -> list[RunRecord]:
        """The records of the tenant's runs on the thread, newest `created_at` first (ties:
        greater `run_id` first), `limit` of them after skipping `offset`."""

    async def delete_thread(self, tenant: str, thread_id: str) -> bool:
        """Forget the tenant's thread: its record, and its runs with their events and id
        ceilings, in one write; True if there was any of these. The caller makes sure no run
        is live on it, and deletes its checkpoints."""

    async def purge(self, ended_before: str) -> int:
        """Forget runs that ended before this ISO time; return how many."""

    async def bind_key(self, binding: KeyBinding) -> None:
        """Bind `(binding.tenant, binding.key)` to its run, replacing an older binding."""

    async def find_key(self, tenant: str, key: str, since: str) -> KeyBinding | None:
        """The binding of `(tenant, key)` if it was created at or after this ISO time."""

    async def purge_keys(self, created_before: str) -> int:
        """Forget key bindings created before this ISO time; return how many."""

    async def secret(self, name: str, candidate: bytes) -> bytes:
        """The secret stored under `name`; if there is none yet, store `candidate` and return
        it. Every caller (every restart, every worker on the store) gets the same bytes."""

    async def probe(self) -> None:
        """Raise if the store cannot take writes now (its disk is full, say). Cheap: the
        persister calls it on every pass."""

    # -- several workers on one store ------------------------------------------------------

    async def claim_thread(self, thread_key: str, run_id: str) -> str | None:
        """Make `run_id` the run in progress on the thread (`thread_key`: its
        tenant-qualified checkpointer id) unless a run already is: return that run's id
        (None: claimed). One claim per thread across every worker on the store."""

    async def release_thread(self, thread_key: str, run_id: str) -> None:
        """Drop the thread's claim if `run_id` holds it (else nothing)."""

    async def thread_run(self, thread_key: str) -> str | None:
        """The run that holds the thread's claim (None: no claim)."""

    async def heartbeat(self, worker_id: str, now: str) -> None:
        """Renew the worker's lease: its last heartbeat was at `now` (ISO time)."""

    async def live_workers(self, since: str) -> set[str]:
        """The workers whose lease was renewed at or after this ISO time."""

    async def take_over(self, run_id: str, owner: str, by: str) -> bool:
        """Make `by` the owner of the run if it is still running and `owner` still owns it;
        True if this call did. Of several workers recovering one lost worker's run at once,
        exactly one gets True (and writes its ending)."""

    async def request_cancel(self, run_id: str, action: str) -> None:
        """Note on a running run that a cancel (`interrupt` or `rollback`) was asked: the
        owner's fallback for a broker message it missed. The first request is kept."""

    async def cancel_requests(self, owner: str) -> list[tuple[str, str]]:
        """`(run_id, action)` for the owner's running runs that have a cancel request."""

    async def close(self) -> None: ...


class SharedLogUnavailable(Exception):
    """The shared log cannot be read or written (Redis is unreachable past its retry bound): a
    follower's `wait` raises it, so a stream ends without an `end` it never read."""


class SharedLog(Protocol):
    """The live runs' events where every worker reads them (Redis Streams). None when one
    process serves: its runs' logs are memory logs that only it reads.

    Ids and contents are the owner's log's: a follower reads each event once, in order, from
    id 1. Appends are published in batches, off the run's task; the terminal events only once
    the owner's log is `sealed()`. A run's published events stay while it is live and for a
    set time after its end (then the `RunStore` has them)."""

    def open(self, run_id: str) -> EventLog:
        """A new log for a run this worker runs: what it appends is also published."""

    def follow(self, run_id: str) -> EventLogReader:
        """A reader of a run another worker runs, fed with what is published (from its first
        event), `closed` once it has read the run's `end`. One per run in a process."""

    async def published(self, run_id: str) -> list[LogEvent]:
        """Every event published for the run (recovery copies what a lost worker sent)."""

    async def publish(self, run_id: str, events: Sequence[LogEvent]) -> None:
        """Publish these events now, after what was published (recovery's closing events),
        and let the run's published events expire as an ended run's do."""

    async def probe(self) -> None:
        """Raise if the shared log cannot be written now."""

    async def close(self) -> None: ...


CancelHandler = Callable[[str, str], Awaitable[None]]
"""Called with `(run_id, action)` where the run's task lives."""


class CancelBroker(Protocol):
    """Carries a cancel request to whichever process owns the run."""

    async def start(self, handler: CancelHandler) -> None:
        """Deliver every request published from now on to `handler`."""

    async def publish(self, run_id: str, action: str) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class SavedWrite:
    """A pending write as the checkpointer stored it: its key `(task_id, idx)` within its
    checkpoint, and its value still serialized (the saver's `serde.dumps_typed` pair), so a
    rewind puts back the very bytes that were there."""

    task_id: str
    idx: int
    channel: str
    value: tuple[str, bytes]
    task_path: str = ""


@dataclass(frozen=True)
class Head:
    """The newest checkpoint of one namespace and the pending writes attached to it."""

    checkpoint_id: str
    writes: tuple[SavedWrite, ...] = ()


@dataclass(frozen=True)
class Mark:
    """A thread as it was before a run: for each checkpoint namespace (`""` the root graph,
    `"node:<task id>"` a subgraph, `"a:<id>|b:<id>"` deeper), its `Head`.

    Every namespace counts, not just the root's: a thread paused inside a subgraph has its
    newest checkpoints in the subgraph's namespace (the root writes none when a subgraph
    pauses), and a resume writes more there."""

    thread_id: str
    heads: Mapping[str, Head] = field(default_factory=dict)

    @property
    def checkpoint_id(self) -> str | None:
        """The root graph's newest checkpoint (None: the thread had none)."""
        root = self.heads.get("")
        return None if root is None else root.checkpoint_id

    def since(self, checkpoint_ns: str) -> str:
        """Checkpoints of this namespace with a greater id were written after the mark (`""`:
        a namespace the mark does not know, all of whose checkpoints are newer). Checkpoint
        ids are UUIDv6, ordered by time as strings."""
        head = self.heads.get(checkpoint_ns)
        return "" if head is None else head.checkpoint_id


class Rewinder(Protocol):
    """Puts a thread back as it was at a `Mark` (a rollback cancel). The contract, the same for
    every checkpointer (tests/conformance/test_rewinder.py):

    - `mark` records, for every namespace of the thread, its newest checkpoint id and that
      checkpoint's pending writes with their values.
    - `rewind` deletes, in every namespace, the checkpoints and writes newer than
      `mark.since(ns)` (all of a namespace the mark does not know), and gives each marked
      checkpoint exactly its marked writes again: a resume adds writes there (the resume
      value, the writes of steps it finished) and may replace one under the same key (a
      second `interrupt()` in the same node replaces the first's interrupt write).
    - Afterwards the thread reads back (state, checkpoints, pending writes) as it did when
      marked; other threads are untouched; a rewind is one transaction where the store has
      them.
    """

    async def mark(self, thread_id: str) -> Mark: ...

    async def rewind(self, mark: Mark) -> None:
        """Delete every checkpoint and write of the thread made after `mark`, and restore the
        marked checkpoints' writes."""


class RunObserver(Protocol):
    """Told when a run starts and ends (app/metrics.py counts them). Called on the event loop,
    once per run each: nothing per token or per event, so it costs the hot path nothing."""

    def run_started(self, record: RunRecord) -> None:
        """The run was created and its task started."""

    def run_ended(self, record: RunRecord, tokens: int, cancel_latency_s: float | None) -> None:
        """The run's `end` was written (`record.status`, `.elapsed_ms`, `.first_token_ms` are
        set); `tokens`: the model tokens it streamed; `cancel_latency_s`: from the first cancel
        asked to its end, if one was."""


class NoObserver:
    """The observer of a manager nobody watches."""

    def run_started(self, record: RunRecord) -> None:
        return None

    def run_ended(self, record: RunRecord, tokens: int, cancel_latency_s: float | None) -> None:
        return None
