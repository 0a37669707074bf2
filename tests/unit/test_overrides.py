"""Where the code overrides or leans on a library's private surface, a test that the override is
really in effect: each fails if our line is removed or the library stops calling the hook.

- graphs/models.py: the app's `ChatOpenAI` reads streamed chunks as dicts (`DictChunkCompletions`
  in place of its `async_client`).
- app/streaming/sse.py: sse-starlette sends through `StreamResponse._send_with_timeout`.
- app/shutdown.py: sse-starlette's automatic drain is off once the handler is installed.
- app/engine/fence.py: a run checkpoints through its own fenced saver, handed to LangGraph in
  the config under its private `CONFIG_KEY_CHECKPOINTER`, nested graphs included.

The CPU saving of the first is bounded in tests/bench/test_hot_path_budget.py; aiosqlite's
`_execute` override in tests/store/test_connection.py; the savers' internals that rollback edits
in tests/api/test_rollback.py; uvicorn's connections on SIGTERM in tests/api/test_restart.py.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import uvicorn
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from sse_starlette.sse import AppStatus
from starlette.types import Message, Receive, Scope, Send
from typing_extensions import TypedDict

from app.engine.fence import Fence, fence_run
from app.main import create_app
from app.settings import Settings
from app.shutdown import GracefulShutdown
from app.streaming.sse import StreamResponse as RunEventStream
from graphs.models import DictChunkCompletions
from tests.support.fake_openai import FakeOpenAI, token_text

TOKENS = 5


async def _no_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("never served")


class _Recorded:
    """One streamed response as `ChatOpenAI._astream` gets it from its `async_client`, noting
    each chunk it yields; otherwise the stream itself."""

    def __init__(self, stream: Any, chunks: list[object]) -> None:
        self.stream = stream
        self._chunks = chunks

    async def __aenter__(self) -> _Recorded:
        await self.stream.__aenter__()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stream.__aexit__(kind, exc, tb)

    async def __aiter__(self) -> AsyncIterator[object]:
        async for chunk in self.stream:
            self._chunks.append(chunk)
            yield chunk


class _Recorder:
    """Stands between `ChatOpenAI` and the `async_client` it was built with (ours untouched
    behind it) and records what a streamed `create` returns."""

    def __init__(self, completions: Any) -> None:
        self._completions = completions
        self.streams: list[_Recorded] = []
        self.chunks: list[object] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._completions, name)

    async def create(self, **params: Any) -> Any:
        result = await self._completions.create(**params)
        if not params.get("stream"):
            return result
        self.streams.append(_Recorded(result, self.chunks))
        return self.streams[-1]


def test_the_apps_model_reads_streamed_chunks_as_dicts(
    fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model the app's lifespan builds with a key (the one every shipped graph gets in its
    context) has `DictChunkCompletions` as its client, and a real `astream` through it to the
    fake upstream hands `ChatOpenAI` dicts, not the SDK's `ChatCompletionChunk` models."""
    # The lifespan installs the graceful shutdown, which turns this off; put it back after.
    monkeypatch.setattr(AppStatus, "enable_automatic_graceful_drain", True)
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # graphs_dir is relative to it
    settings = Settings(
        openai_api_key="k",
        openai_base_url=fake.base_url,
        llm_max_retries=0,
        database_url="memory://",
    )
    app = create_app(settings)

    async def main() -> tuple[Any, _Recorder, str]:
        async with app.router.lifespan_context(app):
            llm = app.state.llm
            client = llm.async_client
            recorder = _Recorder(client)
            llm.async_client = recorder
            try:
                text = "".join([c.text async for c in llm.astream(f"[[tokens={TOKENS}]]")])
            finally:
                llm.async_client = client
                await llm.root_async_client.close()
            return client, recorder, text

    client, recorder, text = asyncio.run(main())
    assert text == "".join(token_text(i) for i in range(TOKENS))
    assert len(recorder.streams) == 1
    # role chunk, the tokens, the finish chunk, the usage chunk
    assert len(recorder.chunks) == TOKENS + 3, recorder.chunks
    assert all(type(chunk) is dict for chunk in recorder.chunks), {
        type(chunk).__name__ for chunk in recorder.chunks
    }
    assert isinstance(client, DictChunkCompletions), type(client)


def test_sse_starlette_sends_every_frame_through_our_send_with_timeout() -> None:
    """sse-starlette sends each frame with `_send_with_timeout`, so the override in
    `RunEventStream` is the one that runs (a rename would silently bring back the slower one);
    and `ping=0` sends no pings (before sse-starlette 3.4.9 it sent them in a busy loop)."""
    assert "_send_with_timeout" in vars(RunEventStream)  # ours
    frames = [b"event: token\ndata: {}\n\n", b"event: end\ndata: {}\n\n"]
    hooked: list[bytes] = []

    class Counted(RunEventStream):
        async def _send_with_timeout(self, send: Send, message: Message) -> None:
            hooked.append(message["body"])
            await super()._send_with_timeout(send, message)

    async def content() -> AsyncIterator[bytes]:
        for frame in frames:
            yield frame

    sent: list[bytes] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and message.get("more_body"):
            sent.append(message["body"])

    async def receive() -> Message:
        await asyncio.Event().wait()  # the client never leaves
        raise AssertionError("unreachable")

    scope: Scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    asyncio.run(Counted(content(), send_timeout_s=5)(scope, receive, send))
    assert sent == frames
    assert hooked == frames


def test_installing_graceful_shutdown_turns_sse_starlettes_own_drain_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After `install()`, uvicorn's exit handler (which sse-starlette patches) no longer cuts
    every stream: `AppStatus.should_exit` stays False until our own timeline sets it."""
    monkeypatch.setattr(AppStatus, "enable_automatic_graceful_drain", True)
    monkeypatch.setattr(AppStatus, "should_exit", False)

    async def drain(_: float, __: asyncio.Event) -> None:
        return None

    async def main() -> bool:
        shutdown = GracefulShutdown(1.0, drain)
        shutdown.install()
        try:
            enabled = AppStatus.enable_automatic_graceful_drain
            server = uvicorn.Server(uvicorn.Config(_no_app))
            server.handle_exit(signal.SIGTERM, None)
            assert server.should_exit  # uvicorn's own part still runs
            return enabled
        finally:
            shutdown.uninstall()

    assert asyncio.run(main()) is False
    assert AppStatus.should_exit is False


class _Steps(TypedDict, total=False):
    steps: list[str]


def _nested_graph(saver: InMemorySaver) -> Any:
    """A root graph with a subgraph added as node `embedded` and one that node `caller` runs
    with its own `ainvoke`: every kind of graph whose checkpoints a run writes."""

    def step(name: str) -> Any:
        return lambda state: {"steps": [*state.get("steps", []), name]}

    child = StateGraph(_Steps)
    child.add_node("inner", step("inner"))
    child.add_edge(START, "inner")
    child.add_edge("inner", END)
    embedded, called = child.compile(), child.compile()

    async def caller(state: _Steps) -> _Steps:
        return {"steps": (await called.ainvoke(state))["steps"]}

    root = StateGraph(_Steps)
    root.add_node("embedded", embedded)
    root.add_node("caller", caller)
    root.add_edge(START, "embedded")
    root.add_edge("embedded", "caller")
    root.add_edge("caller", END)
    return root.compile(checkpointer=saver)


def test_a_run_checkpoints_only_through_its_fenced_saver_nested_graphs_included() -> None:
    """LangGraph takes the run's checkpointer from the config key `fence_run` sets, for the
    root graph and for both kinds of subgraph: with the fence open, the graph's own saver gets
    checkpoints in all three namespaces; with it closed, it gets none at all (if LangGraph
    ignored the key, it would write to the compiled graph's saver directly)."""
    saver = InMemorySaver()
    graph = _nested_graph(saver)

    async def run(thread_id: str, closed: bool) -> Fence:
        config = RunnableConfig(configurable={"thread_id": thread_id})
        fence = fence_run(config, graph.checkpointer, f"run-{thread_id}")
        assert fence is not None
        if closed:
            assert await fence.close(1.0)
        async for _ in graph.astream_events({"steps": []}, config, version="v2"):
            pass
        return fence

    opened = asyncio.run(run("open", closed=False))
    assert opened.dropped == 0
    namespaces = {ns.split(":")[0] for ns, saved in saver.storage["open"].items() if saved}
    assert namespaces == {"", "embedded", "caller"}, namespaces
    assert any(thread == "open" for thread, _, _ in saver.writes)

    fenced = asyncio.run(run("closed", closed=True))
    assert fenced.dropped > 0
    assert not any(saver.storage["closed"].values())  # reading it made its empty entries
    assert not any(thread == "closed" for thread, _, _ in saver.writes)


def test_the_http_guard_wraps_uvicorns_protocols() -> None:
    """app/http_guard.py wraps uvicorn's httptools and h11 protocol classes in place (uvicorn
    resolves the class before it imports the app); each wrapper must be in effect."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from app.http_guard import install, installed

    install(64 * 1024, 30.0)
    assert installed()
    for name in ("on_headers_complete", "on_message_complete", "data_received"):
        assert hasattr(HttpToolsProtocol, name)
