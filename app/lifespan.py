"""Startup and shutdown: take the database (one process), open the checkpointer and the run
store, recover runs a dead process left behind, build the model, compile the graphs, start the
RunManager and the SIGTERM drain; on shutdown cancel what still runs, write it out, close."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver

from app.gc_tuning import tune_gc
from app.registry import GraphRegistry
from app.runs.manager import RunManager
from app.settings import Settings
from app.shutdown import GracefulShutdown
from app.store import RunStore
from app.store.memory import MemoryRunStore
from app.store.single_writer import SingleWriterError, SingleWriterLock
from graphs.models import ModelContext, build_chat_model, describe_model

log = logging.getLogger("app")


@asynccontextmanager
async def open_checkpointer(settings: Settings) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    path = settings.sqlite_path
    if path is None:
        yield InMemorySaver()
        return
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


@asynccontextmanager
async def open_store(checkpointer: BaseCheckpointSaver[Any]) -> AsyncIterator[RunStore]:
    """Run records and event logs: in the checkpointer's SQLite database, or in memory."""
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from app.store.sqlite import SqliteRunStore

    store: RunStore
    if isinstance(checkpointer, AsyncSqliteSaver):
        store = await SqliteRunStore.on(checkpointer)
    else:
        store = MemoryRunStore()
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def single_writer(settings: Settings) -> AsyncIterator[None]:
    if settings.sqlite_path is None:
        yield
        return
    lock = SingleWriterLock(settings.sqlite_path)
    try:
        lock.acquire()
    except SingleWriterError as exc:
        log.error("cannot start: %s", exc)
        raise
    try:
        yield
    finally:
        lock.release()


def lifespan(settings: Settings) -> Any:
    @asynccontextmanager
    async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Synchronous nodes (`llm.invoke`) run in the loop's default executor; the stock one
        # has min(32, cores + 4) threads, which would cap concurrent sync runs at 6 here.
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(
            max_workers=settings.sync_node_threads, thread_name_prefix="sync-node"
        )
        loop.set_default_executor(executor)
        previous_gc = tune_gc()  # see app/gc_tuning.py: full collections stalled every stream
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(single_writer(settings))
            checkpointer = await stack.enter_async_context(open_checkpointer(settings))
            store = await stack.enter_async_context(open_store(checkpointer))
            llm = build_chat_model(
                api_key=settings.openai_api_key,
                base_url=settings.openai_base_url,
                model=settings.llm_model,
                max_retries=settings.llm_max_retries,
                offline_delay_s=settings.offline_token_delay_s,
            )
            registry = GraphRegistry.load(settings.graph_dirs, checkpointer, ModelContext)
            manager = RunManager(settings, registry, ModelContext(llm=llm), store, checkpointer)
            recovered = await manager.open()
            app.state.checkpointer = checkpointer
            app.state.llm = llm
            app.state.registry = registry
            app.state.manager = manager
            model = describe_model(llm)
            if model["offline"]:
                log.warning("model: OFFLINE built-in deterministic model (no OPENAI_API_KEY set)")
            else:
                log.info(
                    "model: %s at %s",
                    settings.llm_model,
                    settings.openai_base_url or "api.openai.com",
                )
            log.info("graphs: %s; store: %s", ", ".join(registry), settings.database_url)
            if recovered:
                log.warning(
                    "%d runs were cut off by the last stop: reported failed", len(recovered)
                )
            graceful = GracefulShutdown(settings.shutdown_grace_s, manager.drain)
            graceful.install()
            try:
                yield
            finally:
                graceful.uninstall()
                await manager.close()
        executor.shutdown(wait=False, cancel_futures=True)
        gc.set_threshold(*previous_gc)

    return _lifespan
