"""Startup and shutdown: open the checkpointer, build the model, compile the graphs, start the
RunManager; on shutdown cancel what still runs and close the store."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver

from app.registry import GraphRegistry
from app.runs.manager import RunManager
from app.settings import Settings
from graphs.models import ModelContext, build_chat_model, describe_model

log = logging.getLogger("app")


@asynccontextmanager
async def open_checkpointer(settings: Settings) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    path = settings.sqlite_path
    if path is None:
        yield InMemorySaver()
        return
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    path.parent.mkdir(parents=True, exist_ok=True)
    async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
        await saver.conn.execute("PRAGMA journal_mode=WAL")
        await saver.conn.execute("PRAGMA busy_timeout=5000")
        await saver.setup()
        yield saver


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
        async with AsyncExitStack() as stack:
            checkpointer = await stack.enter_async_context(open_checkpointer(settings))
            llm = build_chat_model(
                api_key=settings.openai_api_key,
                base_url=settings.openai_base_url,
                model=settings.llm_model,
                max_retries=settings.llm_max_retries,
                offline_delay_s=settings.offline_token_delay_s,
            )
            registry = GraphRegistry.load(settings.graph_dirs, checkpointer, ModelContext)
            manager = RunManager(settings, registry, ModelContext(llm=llm))
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
            try:
                yield
            finally:
                await manager.close()
        executor.shutdown(wait=False, cancel_futures=True)

    return _lifespan
