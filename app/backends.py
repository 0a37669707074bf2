"""The one place that picks the ports' implementations by URL and opens them.

    DATABASE_URL=sqlite:///PATH   checkpoints (LangGraph's AsyncSqliteSaver), run records and
                                  finished runs' events in one file, one worker process
    DATABASE_URL=memory://        the same in memory (tests, throwaway servers)
    DATABASE_URL=postgresql://... checkpoints (LangGraph's AsyncPostgresSaver), run records and
    (or postgres://)              finished runs' events in one PostgreSQL database, on one
                                  connection pool per process (app/store/postgres_pool.py);
                                  any number of worker processes

    REDIS_URL=redis://...         with a PostgreSQL DATABASE_URL: live runs' events in Redis
                                  Streams (app/log/redis.py), read by every worker; cancel
                                  requests over Redis pub/sub (app/broker/redis.py)

Otherwise the event log of a live run and the cancel broker are in the process (one worker).

    RATE_LIMIT_RUNS               the per-key run-rate windows (`limits`) and the slots of
    MAX_RUNS_PER_KEY,             runs in progress and streams open (app/auth/slots.py): in
    MAX_STREAMS_PER_KEY           memory, or with REDIS_URL=redis://... in Redis through one
                                  redis-py pool, shared by every worker
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from limits.aio.storage import MemoryStorage, RedisStorage, Storage

from app.auth.slots import LocalSlots, Slots
from app.broker.local import LocalCancelBroker
from app.engine.ports import CancelBroker, LogFactory, Rewinder, RunStore
from app.log.memory import MemoryEventLog
from app.settings import Settings, SettingsError
from app.store.memory import MemoryRunStore
from app.store.rewind import MemoryRewinder, SqliteRewinder
from app.store.single_writer import SingleWriterError, SingleWriterLock

if TYPE_CHECKING:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    from app.log.redis import RedisSharedLog
    from app.store.postgres_pool import Pool

log = logging.getLogger("app")

READY_TIMEOUT_S = 3.0  # /readyz answers within this even when PostgreSQL does not
SAVER_SETUP_LOCK = 0x6C67_7376_6373_6302  # advisory lock key: one worker sets the saver up


@dataclass(frozen=True)
class Backends:
    checkpointer: BaseCheckpointSaver[Any]
    store: RunStore
    rewinder: Rewinder | None
    logs: LogFactory
    broker: CancelBroker
    ready: Callable[[], Awaitable[str | None]]
    """None when the stores answer, else what is wrong (for /readyz)."""
    shared: RedisSharedLog | None = None
    """The live runs' events for every worker (several workers: PostgreSQL and Redis)."""


@asynccontextmanager
async def open_backends(settings: Settings) -> AsyncIterator[Backends]:
    async with AsyncExitStack() as stack:
        path = settings.sqlite_path
        checkpointer: BaseCheckpointSaver[Any]
        store: RunStore
        rewinder: Rewinder
        ready_within: float | None = None
        if settings.postgres_url is not None:
            from app.store.postgres import PostgresRunStore
            from app.store.postgres_pool import open_pool
            from app.store.postgres_rewind import PostgresRewinder

            pool = await stack.enter_async_context(
                open_pool(settings.postgres_url, settings.database_pool_size)
            )
            shared = await postgres_saver(pool)
            checkpointer, store, rewinder = (
                shared,
                await PostgresRunStore.on(pool),
                PostgresRewinder(shared),
            )
            ready_within = READY_TIMEOUT_S
        elif path is None:
            memory = InMemorySaver()
            checkpointer, store, rewinder = memory, MemoryRunStore(), MemoryRewinder(memory)
        else:
            stack.enter_context(_single_writer(path))
            saver = await stack.enter_async_context(_sqlite_saver(path))
            from app.store.sqlite import SqliteRunStore

            checkpointer, store, rewinder = (
                saver,
                await SqliteRunStore.on(saver, path),
                SqliteRewinder(saver),
            )
        stack.push_async_callback(store.close)
        shared_log: RedisSharedLog | None = None
        broker: CancelBroker = LocalCancelBroker()
        if settings.postgres_url is not None and settings.redis_url is not None:
            from app.broker.redis import RedisCancelBroker
            from app.log.redis import RedisSharedLog

            shared_log = RedisSharedLog(
                settings.redis_url,
                settings.redis_key_prefix,
                events_ttl_s=settings.redis_events_ttl_s,
            )
            stack.push_async_callback(shared_log.close)
            broker = RedisCancelBroker(settings.redis_url, settings.redis_key_prefix)
        elif settings.postgres_url is not None:
            log.warning(
                "DATABASE_URL is PostgreSQL but REDIS_URL is not set: runs are streamed only"
                " through the worker that runs them; set REDIS_URL to serve from several"
            )

        async def ready() -> str | None:
            timer = asyncio.timeout(ready_within)
            try:
                async with timer:
                    await checkpointer.aget_tuple(
                        {"configurable": {"thread_id": "__readyz__", "checkpoint_ns": ""}}
                    )
                    await store.last_event_id("__readyz__")
                    await store.probe()
                    if shared_log is not None:
                        await shared_log.probe()
            except Exception as exc:
                if timer.expired():
                    return f"store: no answer within {ready_within}s"
                return f"store: {type(exc).__name__}: {exc}"
            return None

        yield Backends(
            checkpointer=checkpointer,
            store=store,
            rewinder=rewinder,
            logs=shared_log.open if shared_log is not None else MemoryEventLog,
            broker=broker,
            ready=ready,
            shared=shared_log,
        )


@asynccontextmanager
async def _sqlite_saver(path: Any) -> AsyncIterator[Any]:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from app.store.connection import connect

    path.parent.mkdir(parents=True, exist_ok=True)
    async with connect(path) as conn:
        saver = AsyncSqliteSaver(conn)
        saver.lock = conn.lock  # the store takes turns on it too; waiters make calls inline
        await saver.conn.execute("PRAGMA journal_mode=WAL")
        await saver.conn.execute("PRAGMA busy_timeout=5000")
        # WAL + NORMAL: a commit is not fsynced; a process crash loses nothing, a power cut may
        # lose the last commits (never corrupts). FULL would fsync every checkpoint and run
        # record, which under load is most of a run's start-up time.
        await saver.conn.execute("PRAGMA synchronous=NORMAL")
        await saver.setup()
        yield saver


async def postgres_saver(pool: Pool) -> AsyncPostgresSaver:
    """LangGraph's saver on the pool, its tables created or migrated by one worker at a time
    (its migrations are not safe to run twice at once; one creates an index CONCURRENTLY, so
    the lock is a session lock on a connection of its own, outside any transaction)."""
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    from app.store.postgres_pool import advisory_lock

    saver = AsyncPostgresSaver(pool)
    async with advisory_lock(pool, SAVER_SETUP_LOCK):
        await saver.setup()
    return saver


def check_postgres(settings: Settings) -> None:
    """Startup: a PostgreSQL DATABASE_URL that does not answer stops the service with one line
    naming it (and not its password)."""
    if settings.postgres_url is None:
        return
    import psycopg

    from app.store.postgres_pool import conninfo

    try:
        psycopg.connect(conninfo(settings.postgres_url), connect_timeout=3).close()
    except psycopg.Error as exc:
        where = without_password(settings.postgres_url)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SettingsError(f"DATABASE_URL: no answer from {where} ({reason})") from None


class _single_writer:
    def __init__(self, path: Any) -> None:
        self._lock = SingleWriterLock(path)

    def __enter__(self) -> None:
        try:
            self._lock.acquire()
        except SingleWriterError as exc:
            log.error("cannot start: %s", exc)
            raise

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


@dataclass(frozen=True)
class LimitStores:
    """Where the per-key limits are kept: the run-rate windows (None without RATE_LIMIT_RUNS)
    and the slots of runs in progress and streams open."""

    rate: Storage | None
    slots: Slots


@asynccontextmanager
async def open_limit_stores(settings: Settings) -> AsyncIterator[LimitStores]:
    """In memory, or with REDIS_URL in Redis through one connection pool of ours (closed on
    the way out), the slots renewed every WORKER_HEARTBEAT_S while open."""
    slotted = settings.max_runs_per_key is not None or settings.max_streams_per_key is not None
    if settings.redis_url is None or (settings.run_rate is None and not slotted):
        yield LimitStores(MemoryStorage() if settings.run_rate else None, LocalSlots())
        return
    from redis.asyncio import ConnectionPool, Redis

    from app.auth.redis_slots import RedisSlots

    pool = ConnectionPool.from_url(
        settings.redis_url, socket_connect_timeout=2.0, socket_timeout=2.0
    )
    try:
        rate = None
        if settings.run_rate is not None:
            rate = RedisStorage(
                f"async+{settings.redis_url}",
                implementation="redispy",
                wrap_exceptions=True,
                key_prefix=f"{settings.redis_key_prefix}:limits",
                # Documented by `limits` ("the redis client is initialized with the connection
                # pool"); its stubs type the extra options as scalars only.
                connection_pool=pool,  # type: ignore[arg-type]
            )
        if not slotted:
            yield LimitStores(rate, LocalSlots())
            return
        client = Redis(connection_pool=pool)
        async with RedisSlots(
            client, settings.redis_key_prefix, settings.worker_heartbeat_s
        ) as slots:
            yield LimitStores(rate, slots)
    finally:
        await pool.aclose()


def check_redis(settings: Settings) -> None:
    """Startup: a REDIS_URL that does not answer stops the service with one line naming it."""
    if settings.redis_url is None:
        return
    import redis

    client = redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=2.0, socket_timeout=2.0
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        where = without_password(settings.redis_url)
        raise SettingsError(f"REDIS_URL: no answer from {where} ({exc})") from None
    finally:
        client.close()


def without_password(url: str) -> str:
    """The URL as it may be logged: scheme, host, port and path, no user or password."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
