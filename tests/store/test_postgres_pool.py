"""The PostgreSQL pool the checkpointer and the run store share (app/store/postgres_pool.py),
opened by app/backends.py as the service opens it: calls work again once the server has dropped
the pool's connections or restarted, and nothing waits without bound while it is down.

Connections are dropped for real: `pg_terminate_backend` on the machine's server (only the
test's own connections, found by their `application_name`), and a stop, start and restart of
a server of the test's own (`tests.support.postgres.Cluster`)."""

from __future__ import annotations

import asyncio
import operator
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import psycopg
import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from psycopg.conninfo import conninfo_to_dict
from typing_extensions import TypedDict

from app.backends import READY_TIMEOUT_S, Backends, open_backends
from app.engine.failures import store_error
from app.engine.record import RunRecord
from app.settings import Settings
from app.store.postgres import PostgresRunStore
from app.store.postgres_pool import DEFAULTS, POOL_TIMEOUT_S, conninfo
from tests.support import postgres

POOL_SIZE = 4


class State(TypedDict, total=False):
    items: Annotated[list[str], operator.add]


def _graph(saver: BaseCheckpointSaver[Any]) -> CompiledStateGraph[Any, Any, Any, Any]:
    builder = StateGraph(State)
    builder.add_node("step", lambda state: {"items": ["step"]})
    builder.add_edge(START, "step")
    builder.add_edge("step", END)
    return builder.compile(checkpointer=saver)


def _config(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id}}


@asynccontextmanager
async def _backends(url: str) -> AsyncIterator[Backends]:
    async with open_backends(Settings(database_url=url, database_pool_size=POOL_SIZE)) as b:
        yield b


async def _store_and_saver_work(backends: Backends, run_id: str, items: list[str]) -> None:
    """A store write and read, and a graph run continuing thread `t` (which had `items`)."""
    await backends.store.save_record(RunRecord(run_id=run_id, graph="g", thread_id="t"))
    assert (await backends.store.load_record(run_id)) is not None
    result = await _graph(backends.checkpointer).ainvoke({"items": ["in"]}, _config("t"))
    assert result["items"] == [*items, "in", "step"]


def _wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_calls_work_at_once_after_the_server_dropped_every_idle_connection() -> None:
    """The pool full of connections the server has closed (an idle timeout, a proxy, an
    administrator): the next store call and checkpoint write get working connections, without
    an error and without waiting out the pool's timeout (psycopg's own check alone retries a
    borrow with a growing back-off per dead connection)."""

    async def main(url: str) -> None:
        name = postgres.application_name(url)
        async with _backends(url) as backends:
            await _store_and_saver_work(backends, "r1", [])
            # Every connection of the pool in use at once, then idle: the pool at its largest.
            await asyncio.gather(*(_hold(backends) for _ in range(POOL_SIZE)))
            assert len(await asyncio.to_thread(postgres.backends, name)) >= POOL_SIZE
            assert await asyncio.to_thread(postgres.terminate, name) >= POOL_SIZE
            await asyncio.to_thread(_wait_until, lambda: not postgres.backends(name))

            started = time.monotonic()
            await _store_and_saver_work(backends, "r2", ["in", "step"])
            assert time.monotonic() - started < POOL_TIMEOUT_S / 2
            assert await backends.ready() is None

    with postgres.schema() as url:
        asyncio.run(main(url))


async def _hold(backends: Backends) -> None:
    """Keep a connection of the store's pool busy for a moment (a slow statement)."""
    assert isinstance(backends.store, PostgresRunStore)
    async with backends.store.pool.connection() as conn:
        await conn.execute("SELECT pg_sleep(0.2)")


@pytest.fixture(scope="module")
def cluster() -> Iterator[postgres.Cluster]:
    with postgres.Cluster() as server:
        yield server


def test_ready_reports_a_stopped_server_at_once_and_calls_work_once_it_is_back(
    cluster: postgres.Cluster,
) -> None:
    async def main() -> None:
        async with _backends(cluster.url) as backends:
            await _store_and_saver_work(backends, "s1", [])
            await asyncio.to_thread(cluster.stop)

            started = time.monotonic()
            problem = await backends.ready()
            assert problem is not None and problem.startswith("store: ")
            assert time.monotonic() - started < READY_TIMEOUT_S + 1
            # A write fails within the pool's timeout, as a store that cannot be written (the
            # engine refuses new runs meanwhile).
            started = time.monotonic()
            with pytest.raises(psycopg.Error) as failed:
                await backends.store.save_record(RunRecord(run_id="s2", graph="g", thread_id="t"))
            assert time.monotonic() - started < POOL_TIMEOUT_S + 1
            assert store_error(failed.value) is not None

            await asyncio.to_thread(cluster.start)
            await _store_and_saver_work(backends, "s3", ["in", "step"])
            assert await backends.ready() is None

    asyncio.run(main())


def test_calls_work_at_once_after_the_server_restarted(cluster: postgres.Cluster) -> None:
    async def main() -> None:
        async with _backends(cluster.url) as backends:
            await backends.checkpointer.adelete_thread("t")
            await _store_and_saver_work(backends, "u1", [])
            await asyncio.to_thread(cluster.restart)
            await _store_and_saver_work(backends, "u2", ["in", "step"])
            assert await backends.ready() is None

    asyncio.run(main())


def test_a_url_gets_the_pools_connection_defaults_unless_it_sets_its_own() -> None:
    given = conninfo_to_dict(
        conninfo("postgres://svc:pw@db.example:6543/app?connect_timeout=9&application_name=mine")
    )
    assert (given["user"], given["password"], given["host"], given["port"]) == (
        "svc",
        "pw",
        "db.example",
        "6543",
    )
    assert (given["dbname"], given["connect_timeout"], given["application_name"]) == (
        "app",
        "9",
        "mine",
    )
    assert given["keepalives"] == "1" and given["tcp_user_timeout"] == DEFAULTS["tcp_user_timeout"]


def test_the_service_opens_on_a_postgres_scheme_url_too() -> None:
    async def main(url: str) -> None:
        async with _backends(url.replace("postgresql://", "postgres://", 1)) as backends:
            await _store_and_saver_work(backends, "p1", [])
            assert await backends.ready() is None

    with postgres.schema() as url:
        asyncio.run(main(url))
