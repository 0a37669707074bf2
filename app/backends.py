"""The one place that picks the ports' implementations by URL and opens them.

    DATABASE_URL=sqlite:///PATH   checkpoints (LangGraph's AsyncSqliteSaver), run records and
                                  finished runs' events in one file, one worker process
    DATABASE_URL=memory://        the same in memory (tests, throwaway servers)

The event log of a live run and the cancel broker are in-process for both (Redis Streams and
Redis pub/sub when several workers serve: not built yet).

    RATE_LIMIT_RUNS               the per-key run-rate windows (`limits`): in memory, or with
    REDIS_URL=redis://...         in Redis through redis-py, shared by every worker
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from limits.aio.storage import MemoryStorage, RedisStorage, Storage

from app.broker.local import LocalCancelBroker
from app.engine.ports import CancelBroker, LogFactory, Rewinder, RunStore
from app.log.memory import MemoryEventLog
from app.settings import Settings, SettingsError
from app.store.memory import MemoryRunStore
from app.store.rewind import MemoryRewinder, SqliteRewinder
from app.store.single_writer import SingleWriterError, SingleWriterLock

log = logging.getLogger("app")


@dataclass(frozen=True)
class Backends:
    checkpointer: BaseCheckpointSaver[Any]
    store: RunStore
    rewinder: Rewinder | None
    logs: LogFactory
    broker: CancelBroker
    ready: Callable[[], Awaitable[str | None]]
    """None when the stores answer, else what is wrong (for /readyz)."""


@asynccontextmanager
async def open_backends(settings: Settings) -> AsyncIterator[Backends]:
    async with AsyncExitStack() as stack:
        path = settings.sqlite_path
        checkpointer: BaseCheckpointSaver[Any]
        store: RunStore
        rewinder: Rewinder
        if path is None:
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

        async def ready() -> str | None:
            try:
                await checkpointer.aget_tuple(
                    {"configurable": {"thread_id": "__readyz__", "checkpoint_ns": ""}}
                )
                await store.last_event_id("__readyz__")
                await store.probe()
            except Exception as exc:
                return f"store: {type(exc).__name__}: {exc}"
            return None

        yield Backends(
            checkpointer=checkpointer,
            store=store,
            rewinder=rewinder,
            logs=MemoryEventLog,
            broker=LocalCancelBroker(),
            ready=ready,
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


@asynccontextmanager
async def open_rate_storage(settings: Settings) -> AsyncIterator[Storage | None]:
    """Where the run-rate windows live; None without RATE_LIMIT_RUNS. The Redis connections
    are ours (a pool passed in), so they are closed on the way out."""
    if settings.run_rate is None:
        yield None
        return
    if settings.redis_url is None:
        yield MemoryStorage()
        return
    from redis.asyncio import ConnectionPool

    pool = ConnectionPool.from_url(
        settings.redis_url, socket_connect_timeout=2.0, socket_timeout=2.0
    )
    try:
        yield RedisStorage(
            f"async+{settings.redis_url}",
            implementation="redispy",
            wrap_exceptions=True,
            key_prefix=f"{settings.redis_key_prefix}:limits",
            # Documented by `limits` ("the redis client is initialized with the connection
            # pool"); its stubs type the extra options as scalars only.
            connection_pool=pool,  # type: ignore[arg-type]
        )
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
        where = _without_password(settings.redis_url)
        raise SettingsError(f"REDIS_URL: no answer from {where} ({exc})") from None
    finally:
        client.close()


def _without_password(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
