"""Threads as objects through the SDK (update, search, history, delete), and keys: `X-Api-Key`
on every LangGraph route, each tenant seeing only its own threads and runs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk._sync.client import SyncLangGraphClient
from langgraph_sdk.errors import AuthenticationError, NotFoundError

from tests.conftest import ALICE_KEY, BOB_KEY
from tests.support.fake_openai import token_text
from tests.support.live import LiveServer

PREFIX = "/langgraph"


def _client(server: LiveServer, key: str | None) -> SyncLangGraphClient:
    return get_sync_client(url=server.url + PREFIX, api_key=key, timeout=60)


@pytest.fixture
def lg(server: LiveServer) -> Iterator[SyncLangGraphClient]:
    client = _client(server, None)
    yield client
    client.http.client.close()


def _answer(n: int) -> str:
    return "".join(token_text(i) for i in range(n))


def test_update_search_history_and_delete(lg: SyncLangGraphClient, client: httpx.Client) -> None:
    tag = uuid.uuid4().hex
    thread = lg.threads.create(metadata={"tag": tag, "n": 1})
    t = thread["thread_id"]
    other = lg.threads.create(metadata={"tag": tag, "n": 2})
    updated = lg.threads.update(t, metadata={"n": 3, "extra": True})
    assert updated["metadata"] == {"tag": tag, "n": 3, "extra": True}
    found = [x["thread_id"] for x in lg.threads.search(metadata={"tag": tag})]
    assert found == [other["thread_id"], t]  # newest first
    assert [x["thread_id"] for x in lg.threads.search(metadata={"tag": tag, "n": 3})] == [t]
    run_ids = []
    for n in (2, 3):
        parts = list(lg.runs.stream(t, "chat", input={"query": f"[[tokens={n}]] q{n}"}))
        run_ids.append(parts[0].data["run_id"])
    history: list[Any] = lg.threads.get_history(t, limit=100)
    assert history[0]["values"]["answer"] == _answer(3)  # newest first
    assert any(h["values"].get("answer") == _answer(2) for h in history[1:])
    assert all(h["checkpoint"]["thread_id"] == t for h in history)
    older = lg.threads.get_history(t, limit=100, before=history[0]["checkpoint"])
    assert older == history[1:]
    busy = lg.runs.create(t, "chat", input={"query": "[[tokens=400]] [[delay=0.02]] long"})
    assert [x["thread_id"] for x in lg.threads.search(metadata={"tag": tag}, status="busy")] == [t]
    lg.threads.delete(t)  # cancels its live run first
    with pytest.raises(NotFoundError):
        lg.threads.get(t)
    with pytest.raises(NotFoundError):
        lg.runs.get(t, busy["run_id"])
    for run_id in [*run_ids, busy["run_id"]]:
        assert client.get(f"/runs/{run_id}").status_code == 404  # gone from both APIs
    assert lg.threads.get_state(other["thread_id"])["values"] == {}  # the other is untouched


def test_a_thread_the_native_api_ran_is_a_thread_here(
    lg: SyncLangGraphClient, client: httpx.Client
) -> None:
    t = f"native-{uuid.uuid4()}"
    started = client.post(
        "/graphs/chat/stream", json={"input": {"query": "[[tokens=2]] x"}, "thread_id": t}
    )
    assert started.status_code == 200
    got = lg.threads.get(t)
    assert got["status"] == "idle" and got["values"] == {
        "query": "[[tokens=2]] x",
        "answer": _answer(2),
    }
    parts = list(lg.runs.stream(t, "chat", input={"query": "[[tokens=3]] y"}, stream_mode="values"))
    assert parts[-1].data["answer"] == _answer(3)
    native: Any = client.get(f"/threads/{t}").json()
    assert native["values"]["answer"] == _answer(3)


def test_keys_and_tenants_on_every_route(auth_server: LiveServer) -> None:
    nobody = _client(auth_server, None)
    alice = _client(auth_server, ALICE_KEY)
    bob = _client(auth_server, BOB_KEY)
    try:
        with pytest.raises(AuthenticationError):
            nobody.assistants.search()
        with pytest.raises(AuthenticationError):
            nobody.threads.create()
        assert alice.assistants.search(graph_id="chat")
        tag = uuid.uuid4().hex
        thread = alice.threads.create(metadata={"tag": tag})
        t = thread["thread_id"]
        run = alice.runs.create(t, "chat", input={"query": "[[tokens=400]] [[delay=0.02]] a"})
        # Bob: none of it exists, exactly as for ids nobody has.
        for call in (
            lambda: bob.threads.get(t),
            lambda: bob.threads.get_state(t),
            lambda: bob.threads.get_history(t),
            lambda: bob.threads.update(t, metadata={"x": 1}),
            lambda: bob.threads.delete(t),
            lambda: bob.runs.get(t, run["run_id"]),
            lambda: bob.runs.list(t),
            lambda: bob.runs.cancel(t, run["run_id"]),
            lambda: list(bob.runs.join_stream(t, run["run_id"])),
            lambda: list(bob.runs.stream(t, "chat", input={"query": "x"})),
        ):
            with pytest.raises(NotFoundError):
                call()
        assert bob.threads.search(metadata={"tag": tag}) == []
        # Bob's own thread of the same id is another thread.
        mine = bob.threads.create(thread_id=t)
        assert mine["status"] == "idle"
        assert alice.runs.get(t, run["run_id"])["status"] == "running"
        alice.runs.cancel(t, run["run_id"])
        assert alice.runs.get(t, run["run_id"])["status"] == "interrupted"
        assert bob.threads.get(t)["status"] == "idle"
    finally:
        for c in (nobody, alice, bob):
            c.http.client.close()
