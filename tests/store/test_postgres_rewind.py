"""What the PostgreSQL rewinder does beyond the Rewinder contract (tests/conformance/
test_rewinder.py runs that on it too): the saver's `checkpoint_blobs` have no checkpoint id, and
no checkpoint names the values a rewound run stored, so nothing would ever read or delete them;
the rewind deletes them, and keeps every value a kept checkpoint names."""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from typing_extensions import TypedDict

from app.backends import postgres_saver
from app.store.postgres_pool import Pool, open_pool
from app.store.postgres_rewind import PostgresRewinder
from tests.support import postgres


class State(TypedDict, total=False):
    items: Annotated[list[str], operator.add]
    last: dict[str, str]  # a value that is not a string or a number: stored as a blob


def _graph(saver: BaseCheckpointSaver[Any]) -> CompiledStateGraph[Any, Any, Any, Any]:
    builder = StateGraph(State)
    builder.add_node("first", lambda state: {"items": ["first"], "last": {"node": "first"}})
    builder.add_node("second", lambda state: {"items": ["second"], "last": {"node": "second"}})
    builder.add_edge(START, "first")
    builder.add_edge("first", "second")
    builder.add_edge("second", END)
    return builder.compile(checkpointer=saver)


def _config(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id}}


async def _blobs(pool: Pool, thread_id: str) -> list[tuple[str, str, str]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT checkpoint_ns, channel, version FROM checkpoint_blobs WHERE thread_id = %s"
            " ORDER BY 1, 2, 3",
            (thread_id,),
        )
        return [(r["checkpoint_ns"], r["channel"], r["version"]) for r in await cur.fetchall()]


def test_a_rewind_deletes_the_values_the_run_stored_and_keeps_the_marked_ones() -> None:
    async def main(url: str) -> None:
        async with open_pool(url, 2) as pool:
            saver = await postgres_saver(pool)
            rewinder, graph = PostgresRewinder(saver), _graph(saver)
            empty = await rewinder.mark("t")
            await graph.ainvoke({"items": ["in"]}, _config("t"))
            await graph.ainvoke({"items": ["in"]}, _config("other"))
            before, others = await _blobs(pool, "t"), await _blobs(pool, "other")
            assert before
            mark = await rewinder.mark("t")

            await graph.ainvoke({"items": ["more"]}, _config("t"))
            assert len(await _blobs(pool, "t")) > len(before)
            await rewinder.rewind(mark)
            assert await _blobs(pool, "t") == before
            state = await graph.aget_state(_config("t"))
            assert state.values == {"items": ["in", "first", "second"], "last": {"node": "second"}}

            await rewinder.rewind(empty)
            assert await _blobs(pool, "t") == []
            assert await _blobs(pool, "other") == others

    with postgres.schema() as url:
        asyncio.run(main(url))
