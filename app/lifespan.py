"""Startup and shutdown: open the backends (app/backends.py), build the model, compile the
graphs, enter the engine once, start the SIGTERM drain; on shutdown cancel what still runs,
write it out, close."""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from app.auth.throttle import KeyLimits
from app.auth.tokens import SECRET_NAME, StreamTokens
from app.backends import Backends, open_backends, open_limit_stores, without_password
from app.engine.config import EngineConfig
from app.engine.manager import RunManager
from app.engine.registry import GraphRegistry
from app.gc_tuning import tune_gc
from app.memory_trim import MemoryTrimmer
from app.protocols.langgraph.runs import Runs as LangGraphRuns
from app.settings import Settings
from app.shutdown import GracefulShutdown
from app.streaming.subscriber import FanOut
from graphs.models import ModelContext, build_chat_model, describe_model

log = logging.getLogger("app")


def engine_config(settings: Settings) -> EngineConfig:
    return EngineConfig(
        max_concurrent_runs=settings.max_concurrent_runs,
        max_tokens_per_run=settings.max_tokens_per_run,
        run_timeout_s=settings.run_timeout_s,
        max_run_log_bytes=int(settings.max_run_log_mb * 1024 * 1024),
        cancel_confirm_s=settings.cancel_confirm_s,
        finished_runs_cache_bytes=int(settings.finished_runs_cache_mb * 1024 * 1024),
        finished_runs_cache_s=settings.finished_runs_cache_s,
        event_flush_s=settings.event_flush_s,
        run_retention_s=settings.run_retention_s,
        heartbeat_s=settings.worker_heartbeat_s,
    )


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
        try:
            async with (
                open_backends(settings) as backends,
                open_limit_stores(settings) as limit_stores,
            ):
                llm = build_chat_model(
                    api_key=settings.openai_api_key,
                    base_url=settings.openai_base_url,
                    model=settings.llm_model,
                    max_retries=settings.llm_max_retries,
                    offline_delay_s=settings.offline_token_delay_s,
                )
                registry = GraphRegistry.load(
                    settings.graph_dirs, backends.checkpointer, ModelContext
                )
                manager = RunManager(
                    engine_config(settings),
                    registry,
                    ModelContext(llm=llm),
                    store=backends.store,
                    logs=backends.logs,
                    broker=backends.broker,
                    rewinder=backends.rewinder,
                    observer=app.state.metrics,
                    shared=backends.shared,
                )
                if backends.shared is not None:
                    backends.shared.on_failure = manager.shared_log_failed
                    backends.shared.on_recovered = manager.shared_log_recovered
                async with manager:
                    app.state.registry = registry
                    app.state.manager = manager
                    app.state.fanout = FanOut()
                    app.state.metrics.watch(app.state.fanout)
                    app.state.limits = KeyLimits(
                        rate=settings.run_rate,
                        max_runs=settings.max_runs_per_key,
                        max_streams=settings.max_streams_per_key,
                        storage=limit_stores.rate,
                        slots=limit_stores.slots,
                    )
                    _log_limits(settings)
                    app.state.ready = backends.ready
                    app.state.llm = llm
                    app.state.stream_tokens = await _stream_tokens(settings, backends)
                    app.state.model_info = describe_model(llm)
                    app.state.langgraph_runs = langgraph_runs = LangGraphRuns(manager)
                    _log_startup(settings, registry, manager, app.state.model_info)
                    graceful = GracefulShutdown(
                        settings.shutdown_grace_s, manager.drain, app.state.fanout.stop_pacing
                    )
                    graceful.install()
                    trimmer = MemoryTrimmer(
                        lambda: manager.active_count, manager.sweep, settings.memory_trim_s
                    )
                    app.state.trimmer = trimmer
                    trimming = asyncio.create_task(trimmer.run(), name="memory-trim")
                    try:
                        yield
                        # uvicorn gets here as soon as no connection is open, which may be at
                        # once: the runs still get their grace (app/shutdown.py).
                        await graceful.drained()
                    finally:
                        trimming.cancel()
                        await asyncio.wait({trimming})
                        await langgraph_runs.queue.close()  # runs queued, never started
                        graceful.uninstall()
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            gc.set_threshold(*previous_gc)

    return _lifespan


async def _stream_tokens(settings: Settings, backends: Backends) -> StreamTokens | None:
    """The signer of stream URLs when there are API keys (app/auth/tokens.py)."""
    if settings.key_ring is None:
        return None
    if settings.stream_token_secret is not None:
        secret = settings.stream_token_secret.get_secret_value().encode()
    else:
        secret = await backends.store.secret(SECRET_NAME, secrets.token_bytes(32))
    return StreamTokens(secret, settings.run_timeout_s + settings.stream_token_ttl_s)


def _log_startup(
    settings: Settings, registry: GraphRegistry, manager: RunManager, model: dict[str, object]
) -> None:
    if model["offline"]:
        log.warning("model: OFFLINE built-in deterministic model (no OPENAI_API_KEY set)")
    else:
        log.info(
            "model: %s at %s", settings.llm_model, settings.openai_base_url or "api.openai.com"
        )
    store = settings.database_url
    log.info("graphs: %s; store: %s", ", ".join(registry), without_password(store))
    keys = settings.key_ring
    if keys is None:
        log.warning(
            "auth: OFF (API_KEYS is not set): anyone who can reach this port can start, read"
            " and cancel every run"
        )
    else:
        log.info(
            "auth: %d API keys, tenants: %s", len(keys.entries), ", ".join(sorted(keys.tenants))
        )
    if manager.recovered:
        log.warning(
            "%d runs were cut off by the last stop: reported failed", len(manager.recovered)
        )


def _log_limits(settings: Settings) -> None:
    rate = settings.run_rate
    if rate is None and settings.max_runs_per_key is None and settings.max_streams_per_key is None:
        return
    log.info(
        "limits per key: %s runs created, %s in progress, %s streams open; counted in %s",
        rate or "any",
        settings.max_runs_per_key or "any",
        settings.max_streams_per_key or "any",
        "redis (shared by every worker)" if settings.redis_url else "this process",
    )
