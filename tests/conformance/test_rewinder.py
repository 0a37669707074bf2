"""One conformance suite for every `Rewinder` (app/engine/ports.py), each over the real saver it
is built for: `MemoryRewinder` over LangGraph's `InMemorySaver`, `SqliteRewinder` over
`AsyncSqliteSaver` on a file, `PostgresRewinder` over `AsyncPostgresSaver` on the real server
(a schema of the test's own), each opened as the service opens it.

Small real graphs (no model) write the checkpoints: nodes append to a list channel. A rewind
must leave the thread as it was at the mark: the same state (`aget_state`) and the same
checkpoints and pending writes in the saver, in every namespace (`_saved`). Each
implementation is one entry of `OPENERS`; a PostgreSQL rewinder must only pass this suite.
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, ExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, interrupt
from typing_extensions import TypedDict

from app.backends import _sqlite_saver, postgres_saver
from app.engine.ports import Mark, Rewinder
from app.store.postgres_pool import open_pool
from app.store.postgres_rewind import PostgresRewinder
from app.store.rewind import MemoryRewinder, SqliteRewinder
from tests.support import postgres

Graph = CompiledStateGraph[Any, Any, Any, Any]


@dataclass(frozen=True)
class Backend:
    saver: BaseCheckpointSaver[Any]
    rewinder: Rewinder


@dataclass
class Place:
    """Where a test's savers keep their data: a temp dir, and a PostgreSQL schema made the
    first time one is asked for (dropped after the test)."""

    tmp: Path
    stack: ExitStack
    _postgres_url: str = field(default="", init=False)

    @property
    def postgres_url(self) -> str:
        if not self._postgres_url:
            self._postgres_url = self.stack.enter_context(postgres.schema())
        return self._postgres_url


@pytest.fixture
def place(tmp_path: Path) -> Iterator[Place]:
    with ExitStack() as stack:
        yield Place(tmp_path, stack)


@asynccontextmanager
async def _memory(place: Place) -> AsyncIterator[Backend]:
    saver = InMemorySaver()
    yield Backend(saver, MemoryRewinder(saver))


@asynccontextmanager
async def _sqlite(place: Place) -> AsyncIterator[Backend]:
    async with _sqlite_saver(place.tmp / "checkpoints.db") as saver:
        yield Backend(saver, SqliteRewinder(saver))


@asynccontextmanager
async def _postgres(place: Place) -> AsyncIterator[Backend]:
    async with open_pool(place.postgres_url, 4) as pool:
        saver = await postgres_saver(pool)
        yield Backend(saver, PostgresRewinder(saver))


OPENERS: dict[str, Callable[[Place], AbstractAsyncContextManager[Backend]]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "postgres": _postgres,
}
# Those whose saver, opened again on the same place, finds what was written before.
PERSISTENT = ["sqlite", "postgres"]

Check = Callable[[Backend], Awaitable[None]]
Run = Callable[[Check], None]


@pytest.fixture(params=list(OPENERS))
def with_backend(request: pytest.FixtureRequest, place: Place) -> Run:
    """`with_backend(check)` runs `await check(backend)` on a fresh saver and its rewinder."""
    opener = OPENERS[request.param]

    def run(check: Check) -> None:
        async def main() -> None:
            async with opener(place) as backend:
                await check(backend)

        asyncio.run(main())

    return run


# -- graphs ----------------------------------------------------------------------------------


class State(TypedDict, total=False):
    items: Annotated[list[str], operator.add]


def _appends(text: str) -> Callable[[State], State]:
    def node(state: State) -> State:
        return {"items": [text]}

    return node


def _ask(question: str) -> Callable[[State], State]:
    def node(state: State) -> State:
        return {"items": [f"answer:{interrupt(question)}"]}

    return node


def _chain(*nodes: tuple[str, Any]) -> StateGraph[State, None, State, State]:
    builder = StateGraph(State)
    previous = START
    for name, node in nodes:
        builder.add_node(name, node)
        builder.add_edge(previous, name)
        previous = name
    builder.add_edge(previous, END)
    return builder


def _plain(saver: BaseCheckpointSaver[Any]) -> Graph:
    return _chain(("first", _appends("first")), ("second", _appends("second"))).compile(
        checkpointer=saver
    )


def _paused(saver: BaseCheckpointSaver[Any]) -> Graph:
    """Pauses in `ask` until resumed."""
    return _chain(
        ("first", _appends("first")), ("ask", _ask("which?")), ("second", _appends("second"))
    ).compile(checkpointer=saver)


def _nested(saver: BaseCheckpointSaver[Any]) -> Graph:
    """`sub` is a compiled subgraph: its checkpoints have the namespace `sub:<task id>`."""
    sub = _chain(("inner1", _appends("inner1")), ("inner2", _appends("inner2"))).compile()
    return _chain(
        ("first", _appends("first")), ("sub", sub), ("second", _appends("second"))
    ).compile(checkpointer=saver)


def _paused_in_subgraph(saver: BaseCheckpointSaver[Any], ran: list[str]) -> Graph:
    """Pauses in `ask` inside the subgraph `sub`, after its `inner` ran (noted in `ran`)."""

    def inner(state: State) -> State:
        ran.append("inner")
        return {"items": ["inner"]}

    sub = _chain(("inner", inner), ("ask", _ask("which?"))).compile()
    return _chain(("sub", sub), ("last", _appends("last"))).compile(checkpointer=saver)


def _config(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id}}


# -- what a thread is ------------------------------------------------------------------------


async def _state(graph: Graph, thread_id: str) -> tuple[Any, ...]:
    """The thread as a client sees it: values, next nodes, checkpoint, interrupts."""
    snapshot = await graph.aget_state(_config(thread_id))
    checkpoint_id = snapshot.config["configurable"].get("checkpoint_id")
    return snapshot.values, snapshot.next, checkpoint_id, snapshot.interrupts


Saved = list[tuple[str, str, list[tuple[str, str, Any]]]]


async def _saved(saver: BaseCheckpointSaver[Any], thread_id: str) -> Saved:
    """Every checkpoint of the thread, any namespace, with its pending writes."""
    out = []
    async for saved in saver.alist(_config(thread_id)):
        conf = saved.config["configurable"]
        out.append((conf["checkpoint_ns"], conf["checkpoint_id"], list(saved.pending_writes or [])))
    return sorted(out, key=lambda row: (row[0], row[1]))


async def _latest(saver: BaseCheckpointSaver[Any], thread_id: str) -> str | None:
    latest = await saver.aget_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})
    return None if latest is None else str(latest.config["configurable"]["checkpoint_id"])


def _newer(saved: Saved, mark: Mark) -> list[tuple[str, str]]:
    """The checkpoints written after the mark, namespace by namespace (LangGraph's checkpoint
    ids are UUIDv6: ordered by time as strings, whatever the saver)."""
    return [(ns, cid) for ns, cid, _ in saved if cid > mark.since(ns)]


# -- the suite -------------------------------------------------------------------------------


def test_a_mark_names_the_newest_checkpoint_and_its_writes(with_backend: Run) -> None:
    async def check(backend: Backend) -> None:
        saver, rewinder = backend.saver, backend.rewinder
        assert await rewinder.mark("new") == Mark("new")
        assert Mark("new").checkpoint_id is None
        graph = _paused(saver)
        await graph.ainvoke({"items": ["in"]}, _config("t"))
        mark = await rewinder.mark("t")
        latest = await saver.aget_tuple({"configurable": {"thread_id": "t", "checkpoint_ns": ""}})
        assert latest is not None and mark.thread_id == "t" and list(mark.heads) == [""]
        assert mark.checkpoint_id == latest.config["configurable"]["checkpoint_id"]
        pending = latest.pending_writes or []
        assert len(pending) == 1  # the interrupt
        head = mark.heads[""]
        assert [(w.task_id, w.channel) for w in head.writes] == [(t, c) for t, c, _ in pending]
        assert [saver.serde.loads_typed(w.value) for w in head.writes] == [v for _, _, v in pending]

    with_backend(check)


def test_a_mark_names_the_newest_checkpoint_of_every_namespace(with_backend: Run) -> None:
    async def check(backend: Backend) -> None:
        saver, rewinder = backend.saver, backend.rewinder
        graph = _paused_in_subgraph(saver, [])
        await graph.ainvoke({"items": ["in"]}, _config("t"))
        newest: dict[str, str] = {}
        for ns, cid, _ in await _saved(saver, "t"):
            newest[ns] = max(cid, newest.get(ns, ""))
        mark = await rewinder.mark("t")
        assert {ns.split(":")[0] for ns in mark.heads} == {"", "sub"}
        assert {ns: head.checkpoint_id for ns, head in mark.heads.items()} == newest
        assert mark.since("sub:unknown") == ""

    with_backend(check)


def test_rewind_puts_a_thread_back_at_its_mark(with_backend: Run) -> None:
    async def check(backend: Backend) -> None:
        saver, rewinder = backend.saver, backend.rewinder
        graph = _plain(saver)
        await graph.ainvoke({"items": ["in"]}, _config("t"))
        before, saved = await _state(graph, "t"), await _saved(saver, "t")
        assert before[0] == {"items": ["in", "first", "second"]} and before[1] == ()
        mark = await rewinder.mark("t")

        await graph.ainvoke({"items": ["more"]}, _config("t"))
        assert _newer(await _saved(saver, "t"), mark)  # the run wrote checkpoints
        await rewinder.rewind(mark)

        assert await _state(graph, "t") == before
        assert await _latest(saver, "t") == mark.checkpoint_id
        assert _newer(await _saved(saver, "t"), mark) == []
        assert await _saved(saver, "t") == saved
        # The thread goes on from the mark.
        result = await graph.ainvoke({"items": ["again"]}, _config("t"))
        assert result["items"] == ["in", "first", "second", "again", "first", "second"]

    with_backend(check)


def test_rewind_to_a_mark_taken_before_any_checkpoint_empties_the_thread(
    with_backend: Run,
) -> None:
    async def check(backend: Backend) -> None:
        saver, rewinder = backend.saver, backend.rewinder
        graph = _plain(saver)
        mark = await rewinder.mark("t")
        await graph.ainvoke({"items": ["in"]}, _config("t"))
        assert await _latest(saver, "t") is not None
        await rewinder.rewind(mark)

        assert await _latest(saver, "t") is None
        assert await _saved(saver, "t") == []
        values, next_nodes, checkpoint_id, _ = await _state(graph, "t")
        assert (values, next_nodes, checkpoint_id) == ({}, (), None)
        result = await graph.ainvoke({"items": ["fresh"]}, _config("t"))
        assert result["items"] == ["fresh", "first", "second"]

    with_backend(check)


def test_rewind_after_a_resume_leaves_the_thread_paused_with_the_same_interrupt(
    with_backend: Run,
) -> None:
    """Resuming adds writes to the marked checkpoint itself (the resume value, the writes of
    the resumed task): those go, the interrupt that was there stays."""

    async def check(backend: Backend) -> None:
        saver, rewinder = backend.saver, backend.rewinder
        graph = _paused(saver)
        await graph.ainvoke({"items": ["in"]}, _config("t"))
        before, saved = await _state(graph, "t"), await _saved(saver, "t")
        values, next_nodes, _, interrupts = before
        assert values == {"items": ["in", "first"]} and next_nodes == ("ask",)
        assert [i.value for i in interrupts] == ["which?"]
        mark = await rewinder.mark("t")

        done = await graph.ainvoke(Command(resume="yes"), _config("t"))
        assert done["items"] == ["in", "first", "answer:yes", "second"]
        marked = [w for ns, cid, w in await _saved(saver, "t") if cid == mark.checkpoint_id]
        assert len(marked[0]) > len(mark.heads[""].writes)  # the resume wrote on the mark
        await rewinder.rewind(mark)

        assert await _state(graph, "t") == before
        assert await _saved(saver, "t") == saved
        again = await graph.ainvoke(Command(resume="other"), _config("t"))
        assert again["items"] == ["in", "first", "answer:other", "second"]

    with_backend(check)


def test_rewind_after_a_run_cancelled_midway_restores_the_paused_thread(
    with_backend: Run,
) -> None:
    """What a rollback cancel does: the resumed run is cancelled inside a node, after a step
    completed, then the thread is rewound."""

    async def check(backend: Backend) -> None:
        saver, rewinder = backend.saver, backend.rewinder
        started, never = asyncio.Event(), asyncio.Event()

        async def hang(state: State) -> State:
            started.set()
            await never.wait()
            return {"items": ["never"]}

        graph = _chain(
            ("first", _appends("first")), ("ask", _ask("which?")), ("hang", hang)
        ).compile(checkpointer=saver)
        await graph.ainvoke({"items": ["in"]}, _config("t"))
        before, saved = await _state(graph, "t"), await _saved(saver, "t")
        mark = await rewinder.mark("t")

        run = asyncio.ensure_future(graph.ainvoke(Command(resume="yes"), _config("t")))
        await asyncio.wait_for(started.wait(), 5)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        assert _newer(await _saved(saver, "t"), mark)  # `ask` completed: a new checkpoint
        await rewinder.rewind(mark)

        assert await _state(graph, "t") == before
        assert await _saved(saver, "t") == saved

    with_backend(check)


def test_rewinding_a_thread_leaves_other_threads_untouched(with_backend: Run) -> None:
    async def check(backend: Backend) -> None:
        saver, rewinder = backend.saver, backend.rewinder
        graph, paused = _plain(saver), _paused(saver)
        await graph.ainvoke({"items": ["in"]}, _config("t"))
        await paused.ainvoke({"items": ["in"]}, _config("paused"))
        mark = await rewinder.mark("t")
        # Other threads write after the mark: their checkpoints are newer than it.
        await graph.ainvoke({"items": ["in"]}, _config("other"))
        await graph.ainvoke({"items": ["in"]}, _config("t"))
        await paused.ainvoke(Command(resume="yes"), _config("paused"))
        others = {t: (await _saved(saver, t), await _state(graph, t)) for t in ("other", "paused")}
        assert _newer(others["other"][0], mark) and _newer(others["paused"][0], mark)

        await rewinder.rewind(mark)
        assert {t: (await _saved(saver, t), await _state(graph, t)) for t in others} == others

    with_backend(check)


def test_rewind_removes_subgraph_checkpoints_written_after_the_mark(with_backend: Run) -> None:
    async def check(backend: Backend) -> None:
        saver, rewinder = backend.saver, backend.rewinder
        graph = _nested(saver)
        await graph.ainvoke({"items": ["in"]}, _config("t"))
        before, saved = await _state(graph, "t"), await _saved(saver, "t")
        assert {ns.split(":")[0] for ns, _, _ in saved} == {"", "sub"}
        mark = await rewinder.mark("t")

        await graph.ainvoke({"items": ["more"]}, _config("t"))
        newer = _newer(await _saved(saver, "t"), mark)
        assert {ns.split(":")[0] for ns, _ in newer} == {"", "sub"}
        await rewinder.rewind(mark)

        assert _newer(await _saved(saver, "t"), mark) == []
        assert await _saved(saver, "t") == saved  # the subgraph's older checkpoints stay
        assert await _state(graph, "t") == before

    with_backend(check)


@pytest.mark.parametrize("kind", PERSISTENT)
def test_a_rewind_is_durable(kind: str, place: Place) -> None:
    """A saver opened again (a restarted process) finds the thread at the mark."""
    opener = OPENERS[kind]

    async def main() -> None:
        async with opener(place) as backend:
            graph = _paused(backend.saver)
            await graph.ainvoke({"items": ["in"]}, _config("t"))
            saved = await _saved(backend.saver, "t")
            mark = await backend.rewinder.mark("t")
            await graph.ainvoke(Command(resume="yes"), _config("t"))
            await backend.rewinder.rewind(mark)
        async with opener(place) as backend:
            assert await _saved(backend.saver, "t") == saved
            again = await _paused(backend.saver).ainvoke(Command(resume="no"), _config("t"))
            assert again["items"] == ["in", "first", "answer:no", "second"]

    asyncio.run(main())


# -- a subgraph's pause, a node's second interrupt ------------------------------------------
# Both need more in a `Mark` than the root's newest checkpoint id and the keys of its writes:
# the newest checkpoint of every namespace, and the values of the marked writes.


def test_rewind_keeps_the_checkpoints_of_a_subgraph_paused_before_the_mark(
    with_backend: Run,
) -> None:
    """Regression: the subgraph's checkpoints are newer than the root checkpoint the mark used
    to name (the root writes none when a subgraph pauses), so a rewind deleted them, and
    resuming ran the subgraph again from its start."""

    async def check(backend: Backend) -> None:
        saver, rewinder = backend.saver, backend.rewinder
        ran: list[str] = []
        graph = _paused_in_subgraph(saver, ran)
        await graph.ainvoke({"items": ["in"]}, _config("t"))
        saved = await _saved(saver, "t")
        mark = await rewinder.mark("t")
        await rewinder.rewind(mark)  # nothing ran since the mark: nothing to undo

        assert await _saved(saver, "t") == saved
        await graph.ainvoke(Command(resume="yes"), _config("t"))
        assert ran == ["inner"]  # `inner` had completed before the pause

    with_backend(check)


def test_rewind_after_resuming_a_subgraph_leaves_it_paused_where_it_was(
    with_backend: Run,
) -> None:
    async def check(backend: Backend) -> None:
        saver, rewinder = backend.saver, backend.rewinder
        ran: list[str] = []
        graph = _paused_in_subgraph(saver, ran)
        await graph.ainvoke({"items": ["in"]}, _config("t"))
        before, saved = await _state(graph, "t"), await _saved(saver, "t")
        mark = await rewinder.mark("t")

        done = await graph.ainvoke(Command(resume="yes"), _config("t"))
        # The subgraph returns its whole state, "in" included, which the reducer appends.
        assert done["items"] == ["in", "in", "inner", "answer:yes", "last"]
        newer = _newer(await _saved(saver, "t"), mark)
        assert {ns.split(":")[0] for ns, _ in newer} == {"", "sub"}  # both namespaces wrote
        await rewinder.rewind(mark)

        assert await _state(graph, "t") == before
        assert await _saved(saver, "t") == saved
        again = await graph.ainvoke(Command(resume="other"), _config("t"))
        assert again["items"] == ["in", "in", "inner", "answer:other", "last"]
        assert ran == ["inner"]

    with_backend(check)


def test_rewind_restores_the_first_interrupt_of_a_node_that_asks_twice(
    with_backend: Run,
) -> None:
    """Regression: a mark kept the keys of the marked checkpoint's writes, not their values: a
    resume that reaches a second interrupt() in the same node replaces the first's interrupt
    write under the same key, so after the rewind the thread showed the second question."""

    async def check(backend: Backend) -> None:
        saver, rewinder = backend.saver, backend.rewinder

        def ask_twice(state: State) -> State:
            return {"items": [interrupt("first?"), interrupt("second?")]}

        graph = _chain(("ask", ask_twice)).compile(checkpointer=saver)
        await graph.ainvoke({"items": ["in"]}, _config("t"))
        before, saved = await _state(graph, "t"), await _saved(saver, "t")
        mark = await rewinder.mark("t")
        paused = await graph.ainvoke(Command(resume="a"), _config("t"))
        assert [i.value for i in paused["__interrupt__"]] == ["second?"]
        await rewinder.rewind(mark)

        assert [i.value for i in (await _state(graph, "t"))[3]] == ["first?"]
        assert await _state(graph, "t") == before
        assert await _saved(saver, "t") == saved
        paused = await graph.ainvoke(Command(resume="b"), _config("t"))
        assert [i.value for i in paused["__interrupt__"]] == ["second?"]
        done = await graph.ainvoke(Command(resume="c"), _config("t"))
        assert done["items"] == ["in", "b", "c"]

    with_backend(check)
